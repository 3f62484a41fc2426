"""Backfill: load a CSV or Parquet file of historical ticks into the HDB's date partitions.

The file's columns must be exactly the table's (any order; a CSV needs a header row). Values
are checked column by column against the schema and a mismatch names the column, what was
expected and the first value that does not fit. `time` in a CSV may be integer nanoseconds
since the epoch (UTC) or ISO 8601 text (naive = UTC, or with Z / +hh:mm). Empty CSV fields are
nulls, allowed in value columns but not in `time` or `sym`.

Rows are split into trading days by `day_of(ns) -> dates` (default: the UTC date; pass the
tickerplant clock's rule when the trading day rolls at, say, 17:00 New York), and each day is
merged with any partition already there (re-sorted by sym, time) and written with the EOD
writer, so every day is replaced atomically. Merging does not de-duplicate (identical ticks
can be real): loading the same file twice doubles its rows; use mode="replace" to overwrite
the days the file covers instead.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from hdb.eod import conform, save_table

TIME_FORMS = ("integer nanoseconds since the epoch (UTC) or ISO 8601 text such as "
              "2024-01-02T09:30:00.123456789 (naive = UTC) or with Z / +hh:mm")


class LoadError(ValueError):
    """The file does not fit the table; the message names the column and what was expected."""


def utc_day(ns: np.ndarray) -> np.ndarray:
    """The UTC calendar date of each ns timestamp, as datetime64[D]."""
    return np.asarray(ns, dtype="int64").astype("datetime64[ns]").astype("datetime64[D]")


def trading_day(roll: str = "00:00", tz: str = "UTC") -> Callable[[np.ndarray], np.ndarray]:
    """The tickerplant's day rule, vectorised: with a roll at 17:00 New York, day D runs from
    D-1 17:00 to D 17:00 local time (as tickerplant/clock.py); "00:00" is the local date."""
    h, m = map(int, roll.split(":"))
    roll_ns = (h * 3600 + m * 60) * 1_000_000_000

    def day_of(ns: np.ndarray) -> np.ndarray:
        utc = pa.array(np.asarray(ns, dtype="int64"), pa.timestamp("ns", "UTC"))
        local = np.asarray(pc.local_timestamp(pc.cast(utc, pa.timestamp("ns", tz)))
                           .cast(pa.int64()))
        day = local.astype("datetime64[ns]").astype("datetime64[D]")
        if roll_ns:
            tod = local - day.astype("datetime64[ns]").astype(np.int64)
            day = day + (tod >= roll_ns).astype("timedelta64[D]")
        return day
    return day_of


def _first_bad(col: pa.Array, typ: pa.DataType) -> str:
    """The first value of a string column that does not cast to `typ` (for the error text);
    found by bisection, so O(log n) casts instead of one per row."""
    lo, hi = 0, len(col)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            col.slice(lo, mid - lo).cast(typ)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return f"row {lo + 1}: {col[lo].as_py()!r}"


def parse_time(col: pa.Array, where: str) -> pa.Array:
    """CSV text of `time` -> timestamp[ns] (naive UTC). Each value may take any of the forms
    (integer ns, naive ISO, ISO with an offset): the three are told apart by regex over the
    whole column and each is parsed by one Arrow cast."""
    if col.null_count:
        raise LoadError(f"{where} column 'time': {col.null_count} empty values; every row needs a time")
    ts = pa.timestamp("ns")
    s = pc.utf8_trim_whitespace(col)
    none = pa.scalar(None, pa.string())
    digits = pc.match_substring_regex(s, r"^-?\d+$")
    zoned = pc.and_not(pc.match_substring_regex(s, r"(Z|z|[+-]\d\d:?\d\d)$"), digits)
    naive = pc.invert(pc.or_(digits, zoned))
    out = []
    for mask, typ in ((digits, pa.int64()), (zoned, pa.timestamp("ns", "UTC")), (naive, ts)):
        part = pc.if_else(mask, s, none)
        try:
            out.append(part.cast(typ).cast(ts))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise LoadError(f"{where} column 'time': expected {TIME_FORMS}; "
                            f"{_first_bad(part, typ)}") from None
    return pc.coalesce(*out)


def read_csv(path: Path, schema) -> pa.Table:
    """A CSV as the table's Arrow schema. Everything is read as text first so that each
    column's conversion error can name the column and the offending value."""
    try:
        raw = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            column_types={n: pa.string() for n in schema.names}, strings_can_be_null=True,
            # only an empty field is null: "NA", "NULL", "nan" are real tickers / values
            null_values=[""], quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        raise LoadError(f"{path}: not a readable CSV: {e}") from None
    check_columns(raw.column_names, schema, path)
    raw = raw.combine_chunks()
    cols = []
    for c in schema.columns:
        col = raw.column(c.name).chunk(0) if raw.num_rows else pa.array([], pa.string())
        if col.type != pa.string():
            col = col.cast(pa.string())
        where = str(path)
        if c.type == "timestamp":
            cols.append(parse_time(col, where) if c.name == "time" else _cast(col, c, where))
        elif c.type == "symbol":
            if c.name == "sym" and col.null_count:
                raise LoadError(f"{where} column 'sym': {col.null_count} empty values; "
                                f"every row needs a sym")
            cols.append(pc.dictionary_encode(col))
        elif c.type == "string":
            cols.append(col)
        else:
            cols.append(_cast(col, c, where))
    return pa.Table.from_arrays(cols, schema=schema.arrow)


def _cast(col: pa.Array, c, where: str) -> pa.Array:
    typ = c.arrow
    src = pc.utf8_trim_whitespace(col)
    if c.type == "bool":
        src = pc.utf8_lower(src)
    try:
        return src.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise LoadError(f"{where} column {c.name!r}: expected {c.type}; "
                        f"{_first_bad(src, typ)}") from None


def check_columns(names: list[str], schema, path) -> None:
    missing = [f"{c.name} ({c.type})" for c in schema.columns if c.name not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra or len(set(names)) != len(names):
        parts = []
        if missing:
            parts.append(f"missing columns {missing}")
        if extra:
            parts.append(f"unknown columns {extra}")
        if len(set(names)) != len(names):
            parts.append("duplicate column names")
        raise LoadError(f"{path}: {'; '.join(parts)}; table {schema.name!r} has columns "
                        + ", ".join(f"{c.name} ({c.type})" for c in schema.columns))


def read_parquet(path: Path, schema) -> pa.Table:
    try:
        t = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise LoadError(f"{path}: not a readable Parquet file: {e}") from None
    check_columns(t.column_names, schema, path)
    for c in schema.columns:
        col = t.column(c.name)
        ok = (pa.types.is_timestamp(col.type) or pa.types.is_integer(col.type)) \
            if c.type == "timestamp" else \
            (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
             or (pa.types.is_dictionary(col.type) and pa.types.is_string(col.type.value_type))) \
            if c.type in ("symbol", "string") else True
        if not ok:
            raise LoadError(f"{path} column {c.name!r}: expected {c.type}, the file has {col.type}")
        if c.name in ("time", "sym") and col.null_count:
            raise LoadError(f"{path} column {c.name!r}: {col.null_count} nulls; every row needs one")
    try:
        return conform(t, schema)
    except ValueError as e:
        raise LoadError(f"{path}: {e}") from None


def read_file(path: Path, schema) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise LoadError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return read_parquet(path, schema)
    return read_csv(path, schema)


def load_file(hdb_dir: Path, path: Path, table: str, registry,
              day_of: Callable[[np.ndarray], np.ndarray] | None = None,
              mode: str = "merge", progress: bool = True) -> dict[dt.date, int]:
    """Load `path` (CSV or Parquet) into `table`'s date partitions. Returns the rows loaded per
    day (not counting rows already in the partition it was merged into)."""
    from tqdm import tqdm

    if mode not in ("merge", "replace"):
        raise ValueError("mode is 'merge' or 'replace'")
    if table not in registry:
        raise LoadError(f"unknown table {table!r}; known tables: {registry.tables}")
    schema = registry[table]
    data = read_file(Path(path), schema)
    if data.num_rows == 0:
        return {}
    ns = np.asarray(data.column("time").cast(pa.int64()))
    days = np.asarray(day_of(ns) if day_of else utc_day(ns)).astype("datetime64[D]")
    order = np.argsort(days, kind="stable")
    sorted_days = days[order]
    cuts = np.flatnonzero(sorted_days[1:] != sorted_days[:-1]) + 1
    bounds = np.concatenate([[0], cuts, [len(order)]])
    out: dict[dt.date, int] = {}
    hdb_dir = Path(hdb_dir)
    for a, b in tqdm(list(zip(bounds[:-1], bounds[1:])), unit="day", desc=f"load {table}",
                     disable=None if progress else True):
        day = sorted_days[a].astype(dt.date)
        rows = data.take(pa.array(order[a:b]))
        part = hdb_dir / table / f"date={day}"
        merged = rows
        if mode == "merge" and part.is_dir() and any(part.glob("*.parquet")):
            old = pq.read_table(part, schema=schema.arrow)
            merged = pa.concat_tables([conform(old, schema), rows], promote_options="permissive")
        save_table(hdb_dir, day, table, merged, schema, progress=False)
        out[day] = rows.num_rows
    return out
