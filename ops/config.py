"""The stack's config: every section, composed. The CLI validates a whole file with it before
it starts anything; each process reads only its own sections (see schemas/settings.py).

    [tickerplant]          # any section may be omitted; unknown keys are an error
    mode = "batched"
    [eod]
    time = "00:00"
    tz = "UTC"
    [jobs.log_retention]   # scheduled jobs (ops/jobs.py); time and tz default to [eod]'s zone
    keep_days = 30
    [supervisor]           # restarts with backoff (ops/supervisor.py)
    backoff_initial_s = 0.5

`Config` carries every section, so it serves wherever a process's own config is expected
(`Rdb.from_config(cfg)` reads the same fields from either).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from feedhandlers.config import FeedSettings
from gateway.config import GatewaySettings, Venues
from hdb.config import HdbSettings
from rdb.config import RdbSettings
from schemas.settings import ConfigError, Settings, StackSettings
from schemas.settings import load as _load
from strategy.config import BacktestSettings, StrategySettings
from strategy.risk.config import RiskProcessSettings
from tickerplant.clock import known_zone
from tickerplant.config import CurveSettings, EodSettings, HealthSettings, TickerplantSettings

__all__ = ["Config", "ConfigError", "JobsConfig", "JobsSettings", "SupervisorSettings", "load"]

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class JobSettings(Settings):
    """A job runs daily at `time` (HH:MM, 24-hour, local) in `tz` (IANA); either left unset
    is taken from [eod]. A disabled job still runs by hand (`tickstack jobs run NAME`)."""
    enabled: bool = True
    time: str | None = Field(None, pattern=HHMM)
    tz: str | None = None

    _zone = field_validator("tz")(known_zone)

    def when(self, eod: EodSettings) -> tuple[str, str]:
        """(time, tz) with [eod]'s filling what is unset."""
        return self.time or eod.time, self.tz or eod.tz


class EodJob(JobSettings):
    """Ask the TP to end its day when its own clock has not (e.g. a TP with another [eod]);
    where no TP answers (a box running only the HDB), only a log line. Off by default: the TP's
    own clock rolls the day at [eod]."""
    enabled: bool = False
    tp_timeout_s: float = Field(5.0, gt=0)   # no answer from the TP's ctl this long: no TP here


class HdbRetentionJob(JobSettings):
    """Delete history partitions older than `keep_days` trading days (never today's)."""
    enabled: bool = False                   # deleting history is opt-in
    time: str | None = Field("18:30", pattern=HHMM)
    keep_days: int = Field(365, ge=1)


class HdbCompactionJob(JobSettings):
    """Rewrite a partition of `min_files` or more Parquet files (e.g. a backfill's) as EOD
    writes one: sorted by sym then time, at most 4 files."""
    time: str | None = Field("18:00", pattern=HHMM)
    min_files: int = Field(16, ge=2)


class LogRetentionJob(JobSettings):
    """Compress closed days' TP logs to `.log.zst` and delete old ones. A log is closed when its
    day is over and it is not the newest log (the TP may continue that one)."""
    time: str | None = Field("17:30", pattern=HHMM)
    keep_days: int | None = Field(None, ge=1)           # None: never delete logs
    compress_after_days: int | None = Field(1, ge=1)    # None: never compress
    # a log without its end-of-day record (a TP that died and never came back that day) is
    # compressed only when older than this
    compress_unended_after_days: int = Field(7, ge=1)


class JobsSettings(Settings):
    eod: EodJob = EodJob()
    hdb_retention: HdbRetentionJob = HdbRetentionJob()
    hdb_compaction: HdbCompactionJob = HdbCompactionJob()
    log_retention: LogRetentionJob = LogRetentionJob()
    # a run this late (host asleep, scheduler down at that minute) still runs; later, skipped
    misfire_grace_s: int = Field(3600, ge=1)


class SupervisorSettings(Settings):
    """`tickstack start`'s supervisor (ops/supervisor.py): how it restarts a process that exits
    without being asked to."""
    # its control socket (ROUTER, JSON requests); port * = any free one, written to
    # <home>/run/supervisor.json where the CLI finds it
    ctl: str = "tcp://127.0.0.1:*"
    backoff_initial_s: float = Field(0.5, gt=0)   # wait before the first restart...
    backoff_max_s: float = Field(30.0, gt=0)      # ...doubling up to this
    healthy_after_s: float = Field(30.0, gt=0)    # up this long: the next crash waits backoff_initial_s again
    max_crashes: int = Field(5, ge=1)             # this many exits within crash_window_s: "failed",
    crash_window_s: float = Field(60.0, gt=0)     # no more restarts until `tickstack start NAME`
    start_timeout_s: float = Field(30.0, gt=0)    # not ready this long after launch: killed, a crash
    stop_timeout_s: float = Field(15.0, gt=0)     # SIGTERM, then SIGKILL after this long


class JobsConfig(StackSettings):
    """What `python -m ops.jobs` reads: the jobs, the day rule, the TP's endpoints (EOD)."""
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    jobs: JobsSettings = JobsSettings()
    curve: CurveSettings = CurveSettings()


class Config(StackSettings):
    tickerplant: TickerplantSettings = TickerplantSettings()
    health: HealthSettings = HealthSettings()
    eod: EodSettings = EodSettings()
    rdb: RdbSettings = RdbSettings()
    hdb: HdbSettings = HdbSettings()
    feed: FeedSettings = FeedSettings()
    gateway: GatewaySettings = GatewaySettings()
    venues: Venues
    backtest: BacktestSettings = BacktestSettings()
    strategy: StrategySettings = StrategySettings()
    risk: RiskProcessSettings = RiskProcessSettings()
    jobs: JobsSettings = JobsSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    curve: CurveSettings = CurveSettings()


def load(path: str | Path | None = None, home: str | Path | None = None) -> Config:
    """Defaults, overlaid by the TOML file at `path` (or $TICKSTACK_CONFIG), with `home`
    (or $TICKSTACK_HOME) taking precedence over the file's."""
    return _load(Config, path, home)
