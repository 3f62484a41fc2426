"""The one Config every process receives: embedded defaults, then a TOML file, then --home.

    [tickerplant]          # any section may be omitted; unknown keys are an error
    mode = "batched"
    [eod]
    time = "00:00"
    tz = "UTC"
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from pydantic import ValidationError

from feedhandlers.config import FeedSettings
from hdb.config import HdbSettings
from schemas.settings import Settings
from rdb.config import RdbSettings
from tickerplant.config import EodSettings, TickerplantSettings


class ConfigError(ValueError):
    """The config is invalid; the message names the file and the key."""


class Config(Settings):
    home: Path = Path("~/.tickstack")
    schema_files: tuple[Path, ...] = ()
    tickerplant: TickerplantSettings = TickerplantSettings()
    eod: EodSettings = EodSettings()
    rdb: RdbSettings = RdbSettings()
    hdb: HdbSettings = HdbSettings()
    feed: FeedSettings = FeedSettings()

    # Everything a running stack writes lives under home.
    @property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def tplog_dir(self) -> Path:
        return self.root / "tplog"

    @property
    def hdb_dir(self) -> Path:
        return self.root / "hdb"

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def registry(self):
        from schemas.registry import load_registry
        extra = [p for p in [self.root / "schemas"] if p.is_dir()]
        return load_registry(*self.schema_files, *extra)


def load(path: str | Path | None = None, home: str | Path | None = None) -> Config:
    """Defaults, overlaid by the TOML file at `path` (or $TICKSTACK_CONFIG), with `home`
    (or $TICKSTACK_HOME) taking precedence over the file's."""
    path = path or os.environ.get("TICKSTACK_CONFIG")
    data: dict = {}
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found; pass --config PATH or unset TICKSTACK_CONFIG") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
    home = home or os.environ.get("TICKSTACK_HOME")
    if home:
        data["home"] = str(home)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid config{' ' + str(path) if path else ''}:\n" + "\n".join(lines)) from None


def dump(cfg: Config) -> str:
    """The config as TOML-ish JSON a process can be started with (see ops/procs.py)."""
    return cfg.model_dump_json()
