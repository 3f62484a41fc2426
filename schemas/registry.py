"""Tables are defined once, in TOML, and looked up here by name.

The built-in `tables.toml` is always loaded; user files add tables (and may not silently
redefine a built-in one with a different shape).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa

# type name -> (numpy dtype or None for variable width, arrow type)
TYPES: dict[str, tuple[np.dtype | None, pa.DataType]] = {
    "timestamp": (np.dtype("<i8"), pa.timestamp("ns")),  # UTC, naive like kdb+
    "symbol": (None, pa.dictionary(pa.int32(), pa.string())),
    "string": (None, pa.string()),
    "float64": (np.dtype("<f8"), pa.float64()),
    "float32": (np.dtype("<f4"), pa.float32()),
    "int64": (np.dtype("<i8"), pa.int64()),
    "int32": (np.dtype("<i4"), pa.int32()),
    "int16": (np.dtype("<i2"), pa.int16()),
    "int8": (np.dtype("i1"), pa.int8()),
    "bool": (np.dtype("u1"), pa.bool_()),
}

BUILTIN = Path(__file__).with_name("tables.toml")


class SchemaError(ValueError):
    """A table definition is invalid; the message names the file and the table."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str

    @property
    def dtype(self) -> np.dtype | None:
        return TYPES[self.type][0]

    @property
    def arrow(self) -> pa.DataType:
        return TYPES[self.type][1]


@dataclass(frozen=True)
class Schema:
    name: str
    columns: tuple[Column, ...]

    @cached_property
    def plan(self) -> tuple[tuple[str, str, int], ...]:
        """(name, type, item size or 0 for variable width) per column: the codec's hot loop."""
        return tuple((c.name, c.type, c.dtype.itemsize if c.dtype is not None else 0) for c in self.columns)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def arrow(self) -> pa.Schema:
        """The table as Arrow: `time` as timestamp[ns] and symbols dictionary-encoded
        (dictionary<int32, string>), as the RDB holds them and EOD writes them to Parquet
        (readers see dictionary-encoded strings)."""
        return pa.schema([pa.field(c.name, c.arrow) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; columns: {self.names}")


def _parse(name: str, spec: object, origin: str) -> Schema:
    where = f"{origin}: table {name!r}"
    if not name.isidentifier() or name.startswith("_"):
        raise SchemaError(f"{where}: a table name must be an identifier not starting with '_'")
    if not isinstance(spec, dict) or not spec:
        raise SchemaError(f"{where}: expected a [{name}] section of `column = \"type\"` lines")
    cols = []
    for col, typ in spec.items():
        if typ not in TYPES:
            raise SchemaError(f"{where}: column {col!r} has unknown type {typ!r}; "
                              f"use one of {sorted(TYPES)}")
        if not col.isidentifier():
            raise SchemaError(f"{where}: column name {col!r} is not an identifier")
        cols.append(Column(col, typ))
    if len(cols) < 2 or cols[0] != Column("time", "timestamp") or cols[1] != Column("sym", "symbol"):
        raise SchemaError(f"{where}: the first two columns must be time = \"timestamp\" "
                          f"and sym = \"symbol\"")
    if len(cols) > 255:
        raise SchemaError(f"{where}: at most 255 columns")
    return Schema(name, tuple(cols))


class Registry:
    """Name -> Schema. Immutable once built."""

    def __init__(self, schemas: dict[str, Schema]):
        self._schemas = dict(schemas)
        self._by_bytes = {k.encode(): v for k, v in self._schemas.items()}

    def __getitem__(self, name: str) -> Schema:
        try:
            return self._schemas[name]
        except KeyError:
            raise KeyError(f"unknown table {name!r}; known tables: {sorted(self._schemas)}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._schemas

    def __iter__(self):
        return iter(self._schemas)

    def get_bytes(self, name: bytes) -> Schema | None:
        return self._by_bytes.get(name)

    @property
    def tables(self) -> list[str]:
        return list(self._schemas)

    def spec(self, tables=None) -> dict[str, dict[str, str]]:
        """{table: {column: type}}: what the TP tells a subscriber in the handshake."""
        return {n: {c.name: c.type for c in self._schemas[n].columns} for n in (tables or self._schemas)}

    @classmethod
    def from_spec(cls, spec: dict, origin: str = "the tickerplant") -> "Registry":
        return cls({name: _parse(name, cols, origin) for name, cols in spec.items()})


def load_registry(*files: str | Path) -> Registry:
    """The built-in tables plus every table in `files` (files that do not exist are an error;
    a directory means every *.toml in it)."""
    schemas: dict[str, Schema] = {}
    paths: list[Path] = [BUILTIN]
    for f in files:
        p = Path(f)
        if p.is_dir():
            paths.extend(sorted(p.glob("*.toml")))
        elif p.exists():
            paths.append(p)
        else:
            raise SchemaError(f"schema file {p} does not exist; fix `schema_files` in the config")
    for p in paths:
        try:
            doc = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise SchemaError(f"{p}: not valid TOML: {e}") from None
        for name, spec in doc.items():
            s = _parse(name, spec, str(p))
            if name in schemas and schemas[name] != s:
                raise SchemaError(f"{p}: table {name!r} is already defined with other columns")
            schemas[name] = s
    return Registry(schemas)
