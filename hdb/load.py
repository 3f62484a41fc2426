"""Backfill: load a CSV or Parquet file of historical ticks into the HDB's date partitions.

The file is read by `schemas.tickfile` with the backfill's policy, STRICT, because history is
written once and a silently dropped row would be a hole in it:
  bad_rows="fail"        the first bad row raises LoadError naming its line, column and value
                         (and counting all bad rows); nothing is written from a bad file;
  extra_columns="error"  the file's columns must be exactly the table's (any order);
  empty_values="null"    an empty CSV field (or a Parquet null) is a null, allowed in value
                         columns but never in `time` or `sym`. "NA", "NULL", "nan" are values.
`time` may be integer nanoseconds since the epoch (UTC) or ISO 8601 text (naive = UTC, or with
Z / +hh:mm); see schemas/tickfile.py for every form accepted.

Rows are split into trading days by `day_of(ns) -> dates` (default: the UTC date; pass the
tickerplant clock's rule, `trading_day(roll, tz)`, when the trading day rolls at, say, 17:00
New York), and each day is merged with any partition already there (re-sorted by sym, time)
and written with the EOD writer, so every day is replaced atomically. Merging does not
de-duplicate (identical ticks can be real): loading the same file twice doubles its rows; use
mode="replace" to overwrite the days the file covers instead.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hdb.eod import conform, save_table
from schemas.tickfile import TickFileError, read_file
from tickerplant.clock import Clock

LoadError = TickFileError       # the name callers catch: the file does not fit the table


def trading_day(roll: str = "00:00", tz: str = "UTC") -> Callable[[np.ndarray], np.ndarray]:
    """The tickerplant's day rule, vectorised (`Clock(roll, tz).days`): with a roll at 17:00
    New York, day D runs from D-1 17:00 to D 17:00 local time; "00:00" is the local date."""
    return Clock(roll, tz).days


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
    data, _ = read_file(Path(path), schema, bad_rows="fail", extra_columns="error",
                        empty_values="null")
    if data.num_rows == 0:
        return {}
    ns = np.asarray(data.column("time").cast(pa.int64()))
    days = np.asarray((day_of or trading_day())(ns)).astype("datetime64[D]")
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
