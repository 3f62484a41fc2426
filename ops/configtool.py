"""Config tools: where each effective value came from, and a checker that lists every problem.

    effective(path, home, home_source) -> (Config, [Entry(key, value, source)])
    check_file(path) / check_text(text) / check_data(dict) -> [Problem(key, message)]

`effective` walks the composed `ops.config.Config` (every section, nested tables such as
`hdb.questdb` or `venues.A` included) and names each value's source: "default", "file PATH",
"env TICKSTACK_HOME" or "--home". A job's `time`/`tz` left unset shows the [eod] value it uses.

The checker never raises on any input and never stops at the first problem. It reports:
bad TOML (line and column, and the line itself); unknown sections and keys (with the closest
known name); bad types and values (pydantic's reason and the value given); then, on the config
with the bad keys left out, problems between fields: two endpoints on one address and port (a
venue's FIX port listens on every interface, so it collides with any endpoint on that port), an
endpoint that is not a ZeroMQ address, a time zone zoneinfo does not know, schema files that
are missing or do not load. Each message says what to do. An empty list means the file is good.
"""
from __future__ import annotations

import difflib
import re
import reprlib
import tomllib
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ops.config import Config, known_zone

_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 60
_brief.maxlist = _brief.maxdict = 6
HOME_ENV = "TICKSTACK_HOME"


@dataclass(frozen=True)
class Problem:
    key: str        # the key path, e.g. "venues.A.port"; "(file)" for the file as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass(frozen=True)
class Entry:
    key: str
    value: Any
    source: str


# -- the model's shape --------------------------------------------------------------------------
def _unwrap(tp):
    """The type inside Annotated[...] and Optional[...]."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The settings class a key path points into (None if it does not point at one)."""
    model: Any = Config
    i = 0
    while i < len(loc):
        if not _is_model(model) or loc[i] not in model.model_fields:
            return None
        tp = _unwrap(model.model_fields[loc[i]].annotation)
        i += 1
        if typing.get_origin(tp) is dict:   # a table of models keyed by name, e.g. venues
            tp = _unwrap(typing.get_args(tp)[1])
            i += 1
        model = tp
    return model if _is_model(model) else None


def _dict_of_models(name: str) -> type[BaseModel] | None:
    """The model of a top-level field that is a table of named models (`venues`)."""
    f = Config.model_fields.get(name)
    if f is None:
        return None
    tp = _unwrap(f.annotation)
    if typing.get_origin(tp) is dict:
        inner = _unwrap(typing.get_args(tp)[1])
        return inner if _is_model(inner) else None
    return None


def _path(loc) -> str:
    return ".".join(str(x) for x in loc) or "(top)"


def _closest(word: str, options) -> str | None:
    m = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return m[0] if m else None


@lru_cache(maxsize=1)
def _zones() -> tuple[str, ...]:
    from zoneinfo import available_timezones
    return tuple(sorted(available_timezones()))


def _zone_problem(key: str, tz: Any) -> Problem | None:
    if not isinstance(tz, str):
        return None
    try:
        known_zone(tz)
        return None
    except ValueError:
        near = _closest(tz, _zones())
        return Problem(key, f"unknown time zone {_brief.repr(tz)}; "
                            + (f"did you mean {near!r}? " if near else "")
                            + "Use an IANA name such as \"America/New_York\" or \"UTC\"")


# -- messages for pydantic's errors -------------------------------------------------------------
def _message(err: dict) -> Problem:
    loc = tuple(err.get("loc", ()))
    key, kind, given = _path(loc), err.get("type", ""), err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        known = sorted(parent.model_fields) if parent else []
        near = _closest(loc[-1], known) if loc else None
        what = "section" if len(loc) == 1 and isinstance(given, dict) else "key"
        where = f"[{_path(loc[:-1])}]" if len(loc) > 1 else "the top level"
        return Problem(key, f"unknown {what}" + (f"; did you mean {near!r}?" if near else "")
                            + f" Remove it, or use one of {where}'s keys: {', '.join(known)}")
    if kind == "string_pattern_mismatch" and loc and loc[-1] == "time":
        return Problem(key, f"{_brief.repr(given)} is not a time of day as HH:MM (24-hour), "
                            "e.g. \"17:00\"")
    if loc and loc[-1] == "tz" and isinstance(given, str):
        zone = _zone_problem(key, given)
        if zone:
            return zone
    msg = err.get("msg", "invalid")
    return Problem(key, f"{msg} (got {_brief.repr(given)})")


def _validation_problems(data: dict) -> tuple[list[Problem], list[tuple]]:
    """Each top-level key validated on its own (one key's failure cannot hide another's):
    the problems, and the key paths whose values must be left out to get a valid config."""
    problems: list[Problem] = []
    drop: list[tuple] = []
    for name, value in data.items():
        inner = _dict_of_models(name)
        if inner is not None and isinstance(value, dict):
            p, d = _table_of_models(name, value, inner)
            problems += p
            drop += d
            continue
        try:
            Config.model_validate({name: value})
        except ValidationError as e:
            for err in e.errors():
                problems.append(_message(err))
                drop.append(tuple(err.get("loc", ())) or (name,))
        except Exception as e:  # noqa: BLE001 - a validator that raised something else
            problems.append(Problem(name, f"cannot be read ({type(e).__name__}: {e}); "
                                          "check its type against the README's Config"))
            drop.append((name,))
    return problems, drop


def _table_of_models(name: str, value: dict, model: type[BaseModel]) -> tuple[list[Problem], list[tuple]]:
    """`[venues.X]` tables: each one checked alone; a `name` inside must be its key."""
    problems, drop = [], []
    for k, v in value.items():
        key = f"{name}.{k}"
        if not isinstance(v, dict):
            problems.append(Problem(key, f"must be a table ([{key}] with keys such as "
                                         f"{', '.join(list(model.model_fields)[:3])}), "
                                         f"not {_brief.repr(v)}"))
            drop.append((name, k))
            continue
        entry = dict(v)
        if "name" in model.model_fields:
            given = entry.setdefault("name", k)
            if given != k:
                problems.append(Problem(f"{key}.name", f"is {_brief.repr(given)}, but a "
                                        f"{name[:-1] if name.endswith('s') else name} is named by "
                                        f"its table: remove `name` or call the table [{name}.{given}]"))
                drop.append((name, k, "name"))
                entry["name"] = k
        try:
            model.model_validate(entry)
        except ValidationError as e:
            for err in e.errors():
                loc = (name, k, *err.get("loc", ()))
                problems.append(_message({**err, "loc": loc}))
                drop.append(loc)
        except Exception as e:  # noqa: BLE001
            problems.append(Problem(key, f"cannot be read ({type(e).__name__}: {e})"))
            drop.append((name, k))
    return problems, drop


def _without(data: Any, loc: tuple) -> None:
    """Remove the value at `loc` (or its nearest existing parent's entry) from nested dicts."""
    node = data
    for i, part in enumerate(loc):
        if not isinstance(node, dict) or part not in node:
            return
        if i == len(loc) - 1 or not isinstance(node[part], dict):
            del node[part]
            return
        node = node[part]


def _copy(data: Any) -> Any:
    return {k: _copy(v) for k, v in data.items()} if isinstance(data, dict) else data


def _valid_part(data: dict, drop: list[tuple]) -> Config:
    """The config with the bad values left out (their defaults instead)."""
    kept = _copy(data)
    for loc in drop:
        _without(kept, loc)
    for _ in range(8):   # leaving a value out can expose another problem; a few rounds settle it
        try:
            return Config.model_validate(kept)
        except ValidationError as e:
            for err in e.errors():
                _without(kept, tuple(err.get("loc", ())) or ("",))
        except Exception:  # noqa: BLE001
            break
    good = {}
    for k, v in kept.items():
        try:
            Config.model_validate({k: v})
            good[k] = v
        except Exception:  # noqa: BLE001
            pass
    return Config.model_validate(good)


# -- problems between fields -------------------------------------------------------------------
_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]+):(?P<port>\d+|\*)$")
_ANY = {"*", "0.0.0.0", "::", "[::]"}
_LOOP = {"localhost": "127.0.0.1", "[::1]": "::1"}


def _leaves(value: Any, prefix: tuple = ()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*prefix, str(k)))
    else:
        yield prefix, value


# sections whose endpoints and ports describe something modelled, never bound (a backtest's
# venues live in process)
NOT_BOUND = {"backtest"}


def endpoints(cfg: Config) -> tuple[list[tuple[str, str, str | int]], list[Problem]]:
    """(key, host, port) of every socket the stack binds: each `tcp://`/`ipc://` endpoint
    and each `port` (a venue's FIX acceptor, which listens on every interface: host "*").
    Also the endpoint strings that are not ZeroMQ addresses."""
    found, bad = [], []
    for loc, v in _leaves(cfg.model_dump(mode="python")):
        if loc and loc[0] in NOT_BOUND:
            continue
        key = ".".join(loc)
        if loc and loc[-1] == "port" and isinstance(v, int) and not isinstance(v, bool):
            found.append((key, "*", v))
        elif isinstance(v, str) and v.startswith("ipc://"):
            found.append((key, "ipc", v[6:]))
        elif isinstance(v, str) and v.startswith("tcp://"):
            m = _TCP.match(v)
            port = m and m["port"]
            if not m or (port != "*" and not 0 < int(port) < 65536):
                bad.append(Problem(key, f"{_brief.repr(v)} is not a ZeroMQ TCP endpoint; write "
                                        "it as tcp://ADDRESS:PORT, e.g. \"tcp://127.0.0.1:5011\""))
                continue
            if port == "*":
                continue   # an ephemeral port cannot collide
            host = m["host"]
            found.append((key, "*" if host in _ANY else _LOOP.get(host, host), int(port)))
    return found, bad


def _collisions(found) -> list[Problem]:
    used = {p for _, h, p in found if h != "ipc"}
    out = []
    for i, (ka, ha, pa_) in enumerate(found):
        for kb, hb, pb in found[:i]:
            if (ha == "ipc") != (hb == "ipc") or pa_ != pb:
                continue
            if ha == "ipc" or ha == hb or "*" in (ha, hb):
                if ha == "ipc":
                    out.append(Problem(ka, f"uses the same ipc path as {kb} ({pa_}); give one of "
                                           "them another path"))
                    break
                free = pa_ + 1
                while free in used:
                    free += 1
                used.add(free)
                where = "every interface" if "*" in (ha, hb) else ha
                out.append(Problem(ka, f"port {pa_} is also used by {kb} (on {where}); both cannot "
                                       f"bind it: give {ka} another port, e.g. {free}"))
                break
    return out


def _schema_problems(cfg: Config) -> list[Problem]:
    out = []
    missing = [str(p) for p in cfg.schema_files if not Path(p).expanduser().is_file()]
    if missing:
        out.append(Problem("schema_files", f"not found: {', '.join(missing)}; fix the paths "
                                           "(relative paths are from the current directory)"))
        return out
    try:
        from schemas.registry import load_registry
        load_registry(*cfg.schema_files)
    except Exception as e:  # noqa: BLE001 - SchemaError, TOML errors, unreadable files
        out.append(Problem("schema_files", f"do not load: {e}"))
    return out


def _curve_problems(cfg: Config) -> list[Problem]:
    """With [curve] on: each key file named exists and is a key of the right kind, secret files
    are private, and the host has what a server or a client needs."""
    c = cfg.curve
    if not c.enabled:
        return []
    import zmq.auth
    out = []
    for name in ("server_secret_file", "server_public_file", "client_secret_file", "client_public_file"):
        f = getattr(c, name)
        if f is None:
            continue
        try:
            public, secret = zmq.auth.load_certificate(f)
        except (OSError, ValueError) as e:
            out.append(Problem(f"curve.{name}", f"cannot read a key from {f} ({e}); run `tickstack "
                                                "keys` or fix the path"))
            continue
        if name.endswith("secret_file"):
            if secret is None:
                out.append(Problem(f"curve.{name}", f"{f} holds no secret key: name the .key_secret file"))
            elif Path(f).stat().st_mode & 0o077:
                out.append(Problem(f"curve.{name}", f"{f} is readable by others: chmod 600 {f}"))
    d = c.authorized_clients_dir
    if d is not None and not Path(d).is_dir():
        out.append(Problem("curve.authorized_clients_dir", f"{d} is not a directory of client .key files"))
    server = c.server_secret_file is not None
    client = c.client_secret_file is not None and (c.server_public_file or c.server_secret_file)
    if not (server or client):
        out.append(Problem("curve", "enabled, but neither a server keypair (server_secret_file) nor a "
                                    "client's keys (client_secret_file and server_public_file) are set; "
                                    "`tickstack keys` prints the lines"))
    return out


def cross_problems(cfg: Config, left_out: list[tuple] = ()) -> list[Problem]:
    """Problems between fields of a valid config. Keys under `left_out` (bad values replaced
    by their defaults) are not compared: their defaults are not what the user wrote."""
    found, bad = endpoints(cfg)
    out_keys = [".".join(map(str, loc)) for loc in left_out]
    found = [f for f in found if not any(f[0] == k or f[0].startswith(k + ".") for k in out_keys)]
    out = bad + _collisions(found)
    zone = _zone_problem("eod.tz", cfg.eod.tz)
    if zone:
        out.append(zone)
    return out + _schema_problems(cfg) + _curve_problems(cfg)


# -- the checker --------------------------------------------------------------------------------
def check_data(data: Any) -> list[Problem]:
    """Every problem of a parsed config (a dict as TOML gives it)."""
    if not isinstance(data, dict):
        return [Problem("(top)", f"a config is a table of sections, not {_brief.repr(data)}")]
    problems, drop = _validation_problems(data)
    try:
        cfg = _valid_part(data, drop)
    except Exception as e:  # noqa: BLE001 - never: the defaults alone are valid
        return problems + [Problem("(top)", f"cannot be read ({type(e).__name__}: {e})")]
    if not problems:
        try:   # checks that span sections (model validators), if the lead ever adds some
            Config.model_validate(data)
        except ValidationError as e:
            problems += [_message(err) for err in e.errors()]
        except Exception as e:  # noqa: BLE001
            problems.append(Problem("(top)", f"cannot be read ({type(e).__name__}: {e})"))
    seen = {(p.key, p.message) for p in problems}
    found = problems + [p for p in cross_problems(cfg, drop) if (p.key, p.message) not in seen]
    return sorted(found, key=_file_order(data))


def _file_order(data: dict):
    """Sort key listing problems in the order their keys appear in the file (a problem with no
    key of the file, e.g. a missing one, after those of its section)."""
    order: dict[str, int] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            order.setdefault(key, len(order))
            if isinstance(v, dict):
                walk(v, key + ".")
    walk(data, "")

    def position(p: Problem) -> int:
        parts = p.key.split(".")
        for i in range(len(parts), 0, -1):
            pos = order.get(".".join(parts[:i]))
            if pos is not None:
                return pos
        return len(order)
    return position


def check_text(text: str) -> list[Problem]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = f"not valid TOML: {e}"
        m = re.search(r"line (\d+)", str(e))
        if m:
            lines = text.splitlines()
            n = int(m.group(1))
            if 0 < n <= len(lines):
                msg += f": {lines[n - 1].strip()[:120]!r}"
        return [Problem("(file)", msg + "; fix the syntax (key = value, strings in quotes, "
                                        "[section] headers)")]
    return check_data(data)


def check_file(path: str | Path) -> list[Problem]:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        return [Problem("(file)", f"{p} not found")]
    except OSError as e:
        return [Problem("(file)", f"{p} cannot be read: {e.strerror}")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return [Problem("(file)", f"not UTF-8 text (byte {e.start}); save it as UTF-8")]
    return check_text(text)


# -- the effective config -----------------------------------------------------------------------
def _in(data: dict, loc: tuple) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def effective(path: str | Path | None = None, home: str | Path | None = None,
              home_source: str | None = None) -> tuple[Config, list[Entry], Path | None]:
    """The config the stack would run with, every key with its source, and the file read
    (None: defaults only). `home_source` says where `home` came from ("--home" or
    "env TICKSTACK_HOME"). ConfigError for a bad file (`check_file` lists its problems)."""
    from ops.config import load
    from schemas.settings import read_toml

    data, where = read_toml(path)
    cfg = load(path, home)
    in_file = f"file {where}"
    entries: dict[str, Entry] = {}
    for loc, value in _leaves(cfg.model_dump(mode="python")):
        key = ".".join(loc)
        if loc == ("home",) and home:
            source = home_source or "--home"
        else:
            source = in_file if where and _in(data, loc) else "default"
        entries[key] = Entry(key, value, source)
    for name in type(cfg.jobs).model_fields:   # a job's unset time/tz is [eod]'s
        for part in ("time", "tz"):
            e = entries.get(f"jobs.{name}.{part}")
            if e is not None and e.value is None:
                ref = entries[f"eod.{part}"]
                entries[e.key] = Entry(e.key, ref.value, f"{ref.source}, via eod.{part}")
    return cfg, list(entries.values()), where


def render(value: Any) -> str:
    """A value as TOML would write it (None, which TOML cannot write: "(unset)")."""
    import json
    if value is None:
        return "(unset)"
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, (tuple, list, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return "[" + ", ".join(render(v) for v in items) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    return json.dumps(str(value))


def jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=str)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value
