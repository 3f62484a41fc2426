"""Scheduled jobs: each fires at its local time in its zone across DST changes (APScheduler run
on a controlled clock, never by waiting for the hour); each job does its work when run; the EOD
trigger ends a real tickerplant's day only when its own clock has not; the CLI lists and runs
jobs; `python -m ops.jobs` runs as a process and stops on SIGTERM."""
from __future__ import annotations

import datetime as dt
import json
import os
import queue
import signal
import subprocess
import sys
import time
import types
from zoneinfo import ZoneInfo

import apscheduler.executors.base
import apscheduler.schedulers.base
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED

from helpers import Procs, free_port, wait_for, write_config
from ops.config import JobsConfig
from ops.jobs import JobRunner, run_job, trigger
from schemas.settings import load as load_model
from tickerplant.clock import Clock
from tickerplant.log import LogWriter, check, log_path
from tickerplant.protocol import Unreachable, control

NY = ZoneInfo("America/New_York")
UTC = dt.timezone.utc


def utc(*a) -> dt.datetime:
    return dt.datetime(*a, tzinfo=UTC)


def cfg_of(tmp_path, **jobs) -> JobsConfig:
    """A jobs config: every job off unless given, the TP's ctl on a port nothing listens on."""
    base = {name: {"enabled": False} for name in ("eod", "log_retention", "hdb_compaction", "hdb_retention")}
    for name, values in jobs.items():
        base[name] = {**base[name], **values}
    return JobsConfig.model_validate({"home": str(tmp_path), "jobs": base,
                                      "tickerplant": {"ctl": f"tcp://127.0.0.1:{free_port()}"}})


def test_the_eod_trigger_is_17_new_york_through_a_year_of_dst_changes(tmp_path):
    cfg = cfg_of(tmp_path, eod={"enabled": True})
    trig = trigger(cfg, "eod")
    t, fires = utc(2026, 1, 1, 5), []            # midnight in New York
    while (t := trig.get_next_fire_time(None, t + dt.timedelta(seconds=1))) < utc(2027, 1, 1, 5):
        fires.append(t)
    assert [f.astimezone(NY).date() for f in fires] == [dt.date(2026, 1, 1) + dt.timedelta(days=i)
                                                        for i in range(365)]
    assert all(f.astimezone(NY).time() == dt.time(17, 0) for f in fires)
    summer = [f for f in fires if f.astimezone(UTC).hour == 21]       # EDT, UTC-4
    assert min(summer).date() == dt.date(2026, 3, 8) and max(summer).date() == dt.date(2026, 10, 31)
    assert all(f.astimezone(UTC).hour == 22 for f in fires if f not in summer)   # EST, UTC-5


class FakeClock:
    """The wall clock APScheduler and the jobs read, moved by the test (a fake: we cannot wait
    until 17:00 New York). APScheduler 3 reads `datetime.now` in these two modules only."""

    def __init__(self, t: dt.datetime):
        self.t = t

    def now(self, tz=None):
        return self.t.astimezone(tz) if tz else self.t.replace(tzinfo=None)

    def ns(self) -> int:
        return int(self.t.timestamp()) * 1_000_000_000


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock(utc(2026, 3, 6, 21, 0))
    fake = types.SimpleNamespace(now=c.now)
    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", fake)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", fake)
    return c


def test_the_scheduler_fires_the_eod_job_at_17_new_york_across_dst(tmp_path, clock):
    cfg = cfg_of(tmp_path, eod={"enabled": True, "tp_timeout_s": 0.2})
    runner = JobRunner(cfg, now=clock.ns)
    events: queue.Queue = queue.Queue()
    runner.scheduler.add_listener(events.put, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    runner.start()
    try:
        assert runner.next_runs() == {"eod": utc(2026, 3, 6, 22, 0)}

        def step_to(t: dt.datetime):
            clock.t = t
            runner.scheduler.wakeup()

        def fires_at(due: dt.datetime):
            step_to(due - dt.timedelta(minutes=1))
            with pytest.raises(queue.Empty):          # not a minute early
                events.get(timeout=0.3)
            step_to(due + dt.timedelta(seconds=1))
            ev = events.get(timeout=20)
            assert (ev.code, ev.scheduled_run_time) == (EVENT_JOB_EXECUTED, due)
            assert ev.retval.ok and "no tickerplant answers" in ev.retval.summary
            assert due.astimezone(NY).time() == dt.time(17, 0)

        fires_at(utc(2026, 3, 6, 22, 0))     # Friday, EST
        fires_at(utc(2026, 3, 7, 22, 0))
        fires_at(utc(2026, 3, 8, 21, 0))     # DST began at 02:00 that morning: EDT
        fires_at(utc(2026, 3, 9, 21, 0))
        # the scheduler was "down" for months: the missed runs are one missed run, then on time
        step_to(utc(2026, 10, 31, 20, 0))
        ev = events.get(timeout=20)
        assert ev.code == EVENT_JOB_MISSED and ev.scheduled_run_time == utc(2026, 10, 30, 21, 0)
        fires_at(utc(2026, 10, 31, 21, 0))   # the last EDT day
        fires_at(utc(2026, 11, 1, 22, 0))    # DST ended at 02:00: EST again
        assert [r.ran_at for r in runner.results][-1] == utc(2026, 11, 1, 22, 0, 1)
    finally:
        runner.stop()
    assert not runner.scheduler.running


def write_log(d, day, ended=True):
    w = LogWriter(log_path(d, day), day)
    w.append([b"TSC1{}"])
    w.end() if ended else w.close()


def test_log_retention_job_uses_the_trading_day_of_eod(tmp_path):
    """At 18:00 New York on Mar 10 the trading day (roll 17:00) is already Mar 11."""
    cfg = cfg_of(tmp_path, log_retention={"keep_days": 3})
    now = int(dt.datetime(2026, 3, 10, 18, 0, tzinfo=NY).timestamp()) * 10**9
    assert Clock("17:00", "America/New_York").day(now) == dt.date(2026, 3, 11)
    for n in (1, 2, 3, 4):
        write_log(cfg.tplog_dir, dt.date(2026, 3, 11) - dt.timedelta(days=n))
    write_log(cfg.tplog_dir, dt.date(2026, 3, 11), ended=False)
    dry = run_job(cfg, "log_retention", now, dry_run=True)
    assert len(list(cfg.tplog_dir.iterdir())) == 5 and "would compress" in dry.text()
    res = run_job(cfg, "log_retention", now)
    assert res.ok and "compressed 2, deleted 1" in res.summary
    assert sorted(p.name for p in cfg.tplog_dir.iterdir()) == [
        "tp_20260308.log.zst", "tp_20260309.log.zst", "tp_20260310.log", "tp_20260311.log"]


def day_of_trades(day: dt.date, n: int = 20) -> pa.Table:
    t0 = int(dt.datetime.combine(day, dt.time(14), UTC).timestamp()) * 10**9
    return pa.table({"time": pa.array([t0 + i for i in range(n)], pa.timestamp("ns")),
                     "sym": [f"S{i % 3}" for i in range(n)], "price": [1.0 + i for i in range(n)],
                     "size": list(range(n))})


def test_hdb_jobs_run_on_the_home(tmp_path):
    from hdb.eod import list_partitions, save_day
    cfg = cfg_of(tmp_path, hdb_retention={"keep_days": 2}, hdb_compaction={"min_files": 3})
    reg = cfg.registry()
    today = dt.date(2026, 3, 11)
    now = int(dt.datetime(2026, 3, 10, 18, 0, tzinfo=NY).timestamp()) * 10**9
    for n in (0, 1, 5):
        save_day(cfg.hdb_dir, today - dt.timedelta(days=n), {"trade": day_of_trades(today)},
                 reg, progress=False)
    split = cfg.hdb_dir / "trade" / f"date={today - dt.timedelta(days=1)}"
    table = pq.read_table(split / "part-0.parquet")
    (split / "part-0.parquet").unlink()
    for i in range(4):
        pq.write_table(table.slice(i * 5, 5), split / f"x{i}.parquet")
    res = run_job(cfg, "hdb_compaction", now)
    assert "compacted 1 partitions" in res.summary and "4 files -> 1" in res.text()
    res = run_job(cfg, "hdb_retention", now)
    assert "deleted 1 partitions" in res.summary
    assert sorted(p.date for p in list_partitions(cfg.hdb_dir)) == [today - dt.timedelta(days=1), today]
    assert sum(p.rows for p in list_partitions(cfg.hdb_dir)) == 40


@pytest.mark.process
def test_the_eod_job_ends_a_tickerplants_day_only_when_its_clock_did_not(tmp_path):
    home = tmp_path / "home"
    path = write_config(home)
    path.write_text(path.read_text() + "[jobs.eod]\nenabled = true\n")
    cfg = load_model(JobsConfig, path, home, only_own=True)
    procs = Procs(path, home)
    procs.start("tickerplant")
    try:
        def tp_day():
            try:
                return dt.date.fromisoformat(control(cfg.tickerplant.ctl, "status", timeout=0.5)["date"])
            except Unreachable:
                return None
        day = wait_for(tp_day, 60, what="the tickerplant to start")
        res = run_job(cfg, "eod")                     # the TP's clock and the job's agree: nothing
        assert res.ok and "its own clock rolled" in res.summary
        assert control(cfg.tickerplant.ctl, "status")["counters"].get("eod", 0) == 0
        later = time.time_ns() + 2 * 86_400 * 10**9   # the job's clock says two days on
        res = run_job(cfg, "eod", later)
        assert res.ok and res.summary.startswith(f"ended {day}")
        st = control(cfg.tickerplant.ctl, "status")
        assert st["counters"]["eod"] == 1 and st["date"] == str(day + dt.timedelta(days=1))
        assert check(log_path(cfg.tplog_dir, day)).ended
    finally:
        procs.stop_all()


def tickstack(home, cfg_path, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTACK_")}
    return subprocess.run([sys.executable, "-m", "ops", "--home", str(home), "--config", str(cfg_path),
                           *map(str, args)], capture_output=True, text=True, timeout=120, env=env)


def test_cli_lists_and_runs_jobs(tmp_path):
    home = tmp_path / "home"
    path = write_config(home)
    path.write_text(path.read_text() + '[jobs.hdb_retention]\nenabled = true\ntz = "Asia/Tokyo"\n'
                    'time = "06:15"\n[jobs.log_retention]\nkeep_days = 10\n')
    r = tickstack(home, path, "jobs", "--json")
    assert r.returncode == 0, r.stderr
    rows = {j["name"]: j for j in json.loads(r.stdout)}
    assert list(rows) == ["eod", "log_retention", "hdb_compaction", "hdb_retention"]
    assert rows["eod"]["enabled"] is False and rows["eod"]["next_run"] is None
    nxt = dt.datetime.fromisoformat(rows["hdb_retention"]["next_run"])
    assert nxt.utcoffset() == dt.timedelta(hours=9) and (nxt.hour, nxt.minute) == (6, 15)
    assert dt.timedelta(0) < nxt - dt.datetime.now(UTC) <= dt.timedelta(days=1)
    assert (rows["log_retention"]["time"], rows["log_retention"]["tz"]) == ("17:30", "America/New_York")
    assert "delete logs more than 10 days old" in rows["log_retention"]["does"]
    r = tickstack(home, path, "jobs")
    assert r.returncode == 0 and "hdb_retention   on  06:15 Asia/Tokyo" in r.stdout

    tplog = home / "tplog"
    old = dt.date.today() - dt.timedelta(days=20)
    write_log(tplog, old)
    write_log(tplog, dt.date.today() + dt.timedelta(days=1), ended=False)
    r = tickstack(home, path, "jobs", "run", "log_retention", "--dry-run")
    assert r.returncode == 0 and f"would delete tp_{old:%Y%m%d}.log" in r.stdout
    assert log_path(tplog, old).exists()
    r = tickstack(home, path, "jobs", "run", "log_retention")
    assert r.returncode == 0 and "deleted 1" in r.stdout and not log_path(tplog, old).exists()
    r = tickstack(home, path, "jobs", "run", "nope")
    assert r.returncode == 2 and "eod" in r.stderr


@pytest.mark.process
def test_the_scheduler_process_starts_and_stops_on_sigterm(tmp_path):
    home = tmp_path / "home"
    path = write_config(home)
    p = subprocess.Popen([sys.executable, "-m", "ops.jobs", "--config", str(path), "--home", str(home)],
                         stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "jobs scheduled" not in line and time.monotonic() < deadline:
            line = p.stderr.readline()
            assert line or p.poll() is None, "the scheduler process ended"
        assert "log_retention at" in line and "hdb_compaction at" in line and "eod at" not in line
        os.kill(p.pid, signal.SIGTERM)
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
