"""The stack's config: every section, composed. The CLI validates a whole file with it before
it starts anything; each process reads only its own sections (see schemas/settings.py).

    [tickerplant]          # any section may be omitted; unknown keys are an error
    mode = "batched"
    [eod]
    time = "00:00"
    tz = "UTC"

`Config` carries every section, so it serves wherever a process's own config is expected
(`Rdb.from_config(cfg)` reads the same fields from either).
"""
from __future__ import annotations

from pathlib import Path

from feedhandlers.config import FeedSettings
from gateway.config import GatewaySettings, Venues
from hdb.config import HdbSettings
from rdb.config import RdbSettings
from schemas.settings import ConfigError, StackSettings
from schemas.settings import load as _load
from tickerplant.config import EodSettings, TickerplantSettings

__all__ = ["Config", "ConfigError", "load"]


class Config(StackSettings):
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    rdb: RdbSettings = RdbSettings()
    hdb: HdbSettings = HdbSettings()
    feed: FeedSettings = FeedSettings()
    gateway: GatewaySettings = GatewaySettings()
    venues: Venues


def load(path: str | Path | None = None, home: str | Path | None = None) -> Config:
    """Defaults, overlaid by the TOML file at `path` (or $TICKSTACK_CONFIG), with `home`
    (or $TICKSTACK_HOME) taking precedence over the file's."""
    return _load(Config, path, home)
