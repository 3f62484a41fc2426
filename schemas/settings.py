"""Config at the bottom: the base every section subclasses, and the one loader.

A *section* (`Settings` subclass, e.g. `TickerplantSettings`) is typed, frozen and rejects
unknown keys; its defaults live in that class and nowhere else. Each package declares its own
sections and the *config* of its process (`StackSettings` subclass: the stack-wide paths plus the
sections that process reads). `ops.config.Config` composes every section for the CLI, which
validates a whole file before it starts anything; a process run alone validates the sections it
reads strictly and names the sections it ignores.

Precedence: embedded defaults < TOML file (`--config` or $TICKSTACK_CONFIG) < `--home` (or
$TICKSTACK_HOME).
"""
from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class ConfigError(ValueError):
    """The config is invalid; the message names the file and each key path."""


class StackSettings(Settings):
    """What every process shares: where the stack writes, and the table definitions."""
    home: Path = Path("~/.tickstack")
    schema_files: tuple[Path, ...] = ()

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
        """The built-in tables, the `schema_files`, and every *.toml under <home>/schemas/."""
        from schemas.registry import load_registry
        extra = [p for p in [self.root / "schemas"] if p.is_dir()]
        return load_registry(*self.schema_files, *extra)


def read_toml(path: str | Path | None = None) -> tuple[dict, Path | None]:
    """The TOML at `path` (or $TICKSTACK_CONFIG) as a dict, and the path read (None: defaults)."""
    path = path or os.environ.get("TICKSTACK_CONFIG")
    if not path:
        return {}, None
    p = Path(path)
    try:
        return tomllib.loads(p.read_text()), p
    except FileNotFoundError:
        raise ConfigError(f"config file {p} not found; pass --config PATH or unset TICKSTACK_CONFIG") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: dict, where: Path | str | None = None) -> M:
    """`data` as `model`, or ConfigError listing every bad key by its path."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [f"  {'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid config{' ' + str(where) if where else ''}:\n" + "\n".join(lines)) from None


def load(model: type[M], path: str | Path | None = None, home: str | Path | None = None,
         only_own: bool = False) -> M:
    """Defaults, overlaid by the TOML file, with `home` taking precedence. With `only_own`,
    top-level sections the model does not declare are dropped (and named in the log): a
    process reads its own sections of a file that configures the whole stack."""
    data, where = read_toml(path)
    if only_own:
        other = sorted(k for k in data if k not in model.model_fields)
        if other:
            log.info("config %s: sections %s are for other processes", where, other)
            data = {k: v for k, v in data.items() if k in model.model_fields}
    home = home or os.environ.get("TICKSTACK_HOME")
    if home:
        data["home"] = str(home)
    return validate(model, data, where)


def section(model: type[M], name: str, path: str | Path | None = None) -> M:
    """One section of the config file (or its defaults), e.g. the TP's endpoints for a client:
    `section(TickerplantSettings, "tickerplant")`."""
    data, where = read_toml(path)
    return validate(model, data.get(name, {}), f"{where or 'defaults'} [{name}]")
