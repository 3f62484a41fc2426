"""Scheduled jobs: the EOD trigger, HDB retention and compaction, TP log compression and
retention, each daily at a local time in a time zone from `[jobs.*]` (ops.config.JobsSettings).

    runner = JobRunner.from_config(cfg); runner.start(); ...; runner.stop()
    python -m ops.jobs [--config FILE] [--home DIR]       # the same, as a process of the stack
    run_job(cfg, "log_retention")                          # one job now (`tickstack jobs run`)
    schedule(cfg)                                          # each job's next run, no scheduler

The runner is APScheduler 3's BackgroundScheduler with one CronTrigger(hour, minute, timezone)
per enabled job, so a job keeps its local time across DST changes (17:00 New York is 22:00 UTC
in winter, 21:00 in summer). Jobs run one at a time on a single worker thread, so retention
never deletes a partition compaction is rewriting; a run missed by less than
`jobs.misfire_grace_s` (the host was asleep, another job ran long) still runs, once.

What each job does:
  eod             asks the TP (its ctl socket) for its day; if the TP is on a day before the one
                  the job's clock says it is now, the TP's own clock did not roll it, so the job
                  sends `eod`. Where no TP answers (a box running only the HDB) it does nothing
                  but log a line. Off by default: the TP's clock rolls at [eod] by itself.
  log_retention   tickerplant.logzip.tidy on <home>/tplog: compress closed days, delete old ones.
  hdb_compaction  hdb.housekeeping.compact on <home>/hdb.
  hdb_retention   hdb.housekeeping.drop_old on <home>/hdb (off by default: it deletes history).
"Today" for retention is the trading day by [eod] (the TP's day rule), never a job's own zone.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from zoneinfo import ZoneInfo

from ops.config import JobsConfig, JobSettings
from tickerplant.clock import Clock

log = logging.getLogger(__name__)

JOBS = ["eod", "log_retention", "hdb_compaction", "hdb_retention"]   # in their default time order


@dataclass
class JobResult:
    name: str
    ok: bool
    summary: str
    details: list[str] = field(default_factory=list)
    ran_at: dt.datetime | None = None       # UTC

    def text(self) -> str:
        return "\n".join([f"{self.name}: {self.summary}", *(f"  {d}" for d in self.details)])


def job_settings(cfg, name: str) -> JobSettings:
    if name not in JOBS:
        raise KeyError(f"unknown job {name!r}; jobs: {', '.join(JOBS)}")
    return getattr(cfg.jobs, name)


def trigger(cfg, name: str):
    """The job's daily CronTrigger at its local time in its zone."""
    from apscheduler.triggers.cron import CronTrigger
    at, tz = job_settings(cfg, name).when(cfg.eod)
    h, m = map(int, at.split(":"))
    return CronTrigger(hour=h, minute=m, timezone=ZoneInfo(tz))


def _utc(now_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(now_ns / 1e9, dt.timezone.utc)


def _days(n: int) -> str:
    return f"{n} day{'s' if n != 1 else ''}"


def describe(cfg, name: str) -> str:
    """What the job does with its settings, in a few words."""
    j = job_settings(cfg, name)
    if name == "eod":
        return f"end the TP's day at {cfg.tickerplant.ctl} if its own clock has not (no TP: a log line)"
    if name == "hdb_retention":
        return f"delete partitions more than {_days(j.keep_days)} old"
    if name == "hdb_compaction":
        return f"rewrite partitions of >= {j.min_files} files as EOD writes a day"
    parts = []
    if j.compress_after_days is not None:
        parts.append(f"compress closed logs more than {_days(j.compress_after_days)} old "
                     f"(without end-of-day record: {_days(j.compress_unended_after_days)})")
    parts.append(f"delete logs more than {_days(j.keep_days)} old" if j.keep_days else "never delete logs")
    return "; ".join(parts)


def schedule(cfg, now: dt.datetime | None = None) -> list[dict]:
    """Each job: name, enabled, time, tz, its next run (aware, in its zone; None when
    disabled) and what it does. No scheduler needed."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out = []
    for name in JOBS:
        j = job_settings(cfg, name)
        at, tz = j.when(cfg.eod)
        nxt = trigger(cfg, name).get_next_fire_time(None, now) if j.enabled else None
        out.append({"name": name, "enabled": j.enabled, "time": at, "tz": tz, "next_run": nxt,
                    "does": describe(cfg, name)})
    return out


# -- the jobs ------------------------------------------------------------------------------------
def _today(cfg, now_ns: int) -> dt.date:
    return Clock(cfg.eod.time, cfg.eod.tz).day(now_ns)


def eod_job(cfg, now_ns: int, dry_run: bool = False, progress: bool = False) -> JobResult:
    from tickerplant.protocol import ControlError, Unreachable, control
    at, tz = cfg.jobs.eod.when(cfg.eod)
    due = Clock(at, tz).day(now_ns)
    ctl = cfg.tickerplant.ctl
    try:
        tp_day = dt.date.fromisoformat(control(ctl, "status", timeout=cfg.jobs.eod.tp_timeout_s, curve=cfg.curve)["date"])
    except Unreachable:
        msg = f"no tickerplant answers at {ctl}: no day to end here"
        log.info("eod job: %s", msg)
        return JobResult("eod", True, msg)
    except ControlError as e:
        return JobResult("eod", False, f"the tickerplant refused status: {e}")
    if tp_day >= due:
        return JobResult("eod", True, f"the tickerplant is on {tp_day}: its own clock rolled the "
                                      "day, nothing to do (to end the day now regardless: "
                                      "`tickstack eod`)")
    if dry_run:
        return JobResult("eod", True, f"would end the tickerplant's day {tp_day} (now {due} by "
                                      f"{at} {tz})")
    try:
        r = control(ctl, "eod", timeout=30, curve=cfg.curve)
    except (Unreachable, ControlError) as e:
        return JobResult("eod", False, f"the tickerplant did not end {tp_day}: {e}")
    return JobResult("eod", True, f"ended {r['ended']}; the tickerplant is now on {r['date']}")


def log_retention_job(cfg, now_ns: int, dry_run: bool = False, progress: bool = False) -> JobResult:
    from tickerplant.logzip import tidy
    j = cfg.jobs.log_retention
    res = tidy(cfg.tplog_dir, _today(cfg, now_ns), j.keep_days, j.compress_after_days,
               j.compress_unended_after_days, dry_run=dry_run, progress=progress)
    verb = "would " if dry_run else ""
    details = ([f"{verb}compress -> {p.name}" for p in res.compressed]
               + [f"{verb}delete {p.name}" for p in res.deleted]
               + [f"error: {e}" for e in res.errors])
    return JobResult("log_retention", not res.errors, f"{cfg.tplog_dir}: {verb}{res.summary()}", details)


def hdb_compaction_job(cfg, now_ns: int, dry_run: bool = False, progress: bool = False) -> JobResult:
    from hdb.housekeeping import compact
    res = compact(cfg.hdb_dir, cfg.registry(), cfg.jobs.hdb_compaction.min_files,
                  today=_today(cfg, now_ns), dry_run=dry_run, progress=progress)
    verb = "would compact" if dry_run else "compacted"
    details = ([f"{c.table} {c.date}: {c.files_before} files"
                + ("" if dry_run else f" -> {c.files_after}") + f", {c.rows:,} rows"
                for c in res.compacted]
               + [f"skipped {t} {d}: {why}" for t, d, why in res.skipped])
    return JobResult("hdb_compaction", True,
                     f"{cfg.hdb_dir}: {verb} {len(res.compacted)} partitions"
                     + (f", skipped {len(res.skipped)}" if res.skipped else ""), details)


def hdb_retention_job(cfg, now_ns: int, dry_run: bool = False, progress: bool = False) -> JobResult:
    from hdb.housekeeping import drop_old
    keep = cfg.jobs.hdb_retention.keep_days
    gone = drop_old(cfg.hdb_dir, _today(cfg, now_ns), keep, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    return JobResult("hdb_retention", True,
                     f"{cfg.hdb_dir}: {verb} {len(gone)} partitions more than {_days(keep)} old",
                     [f"{d.table} {d.date}: {d.files} files, {d.bytes:,} bytes" for d in gone])


RUN: dict[str, Callable[..., JobResult]] = {
    "eod": eod_job, "log_retention": log_retention_job,
    "hdb_compaction": hdb_compaction_job, "hdb_retention": hdb_retention_job,
}


def run_job(cfg, name: str, now_ns: int | None = None, dry_run: bool = False,
            progress: bool = False) -> JobResult:
    """Run one job now (enabled or not), as the scheduler would at `now_ns`."""
    job_settings(cfg, name)
    now_ns = time.time_ns() if now_ns is None else now_ns
    res = RUN[name](cfg, now_ns, dry_run=dry_run, progress=progress)
    res.ran_at = _utc(now_ns)
    return res


# -- the runner ----------------------------------------------------------------------------------
class JobRunner:
    """The enabled jobs on an APScheduler BackgroundScheduler. `now` (ns since the epoch) is
    the time the jobs see; the scheduler's own time comes from APScheduler."""

    def __init__(self, cfg: JobsConfig, now: Callable[[], int] = time.time_ns, keep: int = 100):
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler

        self.cfg = cfg
        self.now = now
        self.results: deque[JobResult] = deque(maxlen=keep)
        self._done = threading.Event()
        self.scheduler = BackgroundScheduler(
            timezone=dt.timezone.utc, executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": cfg.jobs.misfire_grace_s})
        for name in JOBS:
            if job_settings(cfg, name).enabled:
                self.scheduler.add_job(self._run, trigger(cfg, name), args=[name], id=name, name=name)

    @classmethod
    def from_config(cls, cfg: JobsConfig) -> "JobRunner":
        return cls(cfg)

    def _run(self, name: str) -> JobResult:
        try:
            res = run_job(self.cfg, name, self.now())
        except Exception as e:  # noqa: BLE001 - a failed job is reported; the scheduler goes on
            log.exception("job %s failed", name)
            res = JobResult(name, False, f"failed: {type(e).__name__}: {e}", ran_at=_utc(self.now()))
        (log.info if res.ok else log.error)("%s", res.text())
        self.results.append(res)
        return res

    def next_runs(self) -> dict[str, dt.datetime | None]:
        return {j.id: j.next_run_time for j in self.scheduler.get_jobs()}

    def start(self) -> None:
        self.scheduler.start()
        names = ", ".join(f"{k} at {v:%Y-%m-%d %H:%M %Z}" for k, v in self.next_runs().items())
        log.info("jobs scheduled: %s", names or "none enabled (see [jobs] in the config)")

    def stop(self, wait: bool = True) -> None:
        """Stop scheduling; with `wait`, let a running job finish first."""
        self._done.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=wait)

    def request_stop(self) -> None:
        """Make run() return (safe in a signal handler: it only sets a flag)."""
        self._done.set()

    def run(self) -> None:
        """start(), block until request_stop() or stop(), then stop (the process's main)."""
        self.start()
        self._done.wait()
        self.stop()


if __name__ == "__main__":
    from schemas.process import boot, on_term

    cfg, _ = boot("ops.jobs", JobsConfig)
    runner = JobRunner.from_config(cfg)
    on_term(runner.request_stop)
    runner.run()
