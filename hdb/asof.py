"""As-of join (kdb `aj`) over the sorted history partitions, in numpy.

Contract: `asof_join(left, right, columns)` gives every left row, in left order, with the
`columns` of the right row of the same sym whose time is the latest at or before the left row's
time; among right rows at that same nanosecond, the LAST one in right order (the one that
arrived last: EOD's sort is stable). Left rows with no such right row get nulls. Both tables
must be sorted by sym then time, as every history partition is (`hdb.eod`); an unsorted input
is an `AsofError` saying so. This is the row-for-row answer of DuckDB's
`left ASOF LEFT JOIN right ON l.sym = r.sym AND l.time >= r.time`, except that DuckDB picks any
one of several right rows at the same nanosecond (its sort is not stable), where this picks
the last.

Why: both sides are already in (sym, time) order on disk, so each sym is a run of rows on both
sides and the join is binary search: per sym, of its left times in its right times, or, when
syms are small, once over composite (sym rank, time) keys. No sort, no hash table; syms are
ranked on the files' dictionaries, never per row. DuckDB's ASOF operator sorts both sides again.

`join_day` reads a day's two partitions and joins them; `hdb.sql.Engine` runs the SQL macros
`aj_trades(day)` and `aj(left, right, day)` through it for a history engine, so
`tickstack query "FROM aj_trades(DATE '2024-01-02')"` gets this path.
"""
from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SYM_SEARCH_ROWS = 1_000   # rows per sym from which a search per sym beats one over keys


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(1, "hdb-asof")   # the second searcher; the caller is the first
    return _POOL


class AsofError(ValueError):
    """The tables cannot be as-of joined as given; the message says why and what to do."""


class Runs(NamedTuple):
    """A (sym, time)-sorted table's syms as runs of rows: run i holds rows start[i]..end[i]
    and its sym has rank rank[i] in the sorted union of both tables' syms."""
    rank: np.ndarray
    start: np.ndarray
    end: np.ndarray


def _chunk_runs(col: pa.ChunkedArray) -> tuple[list[pa.Array], np.ndarray, np.ndarray, np.ndarray]:
    """(dictionary per run source chunk, chunk of each run, row of each run start, dictionary
    index of each run) of a sym column: a run ends where the dictionary index changes, and
    at every chunk boundary (chunks may have their own dictionaries)."""
    dicts, chunk, start, code = [], [], [], []
    at = 0
    for c in col.chunks:
        if len(c) == 0:
            continue
        if not pa.types.is_dictionary(c.type):
            c = pc.dictionary_encode(c)
        if c.null_count:
            raise AsofError("sym has nulls: an as-of join needs a sym on every row")
        idx = c.indices.to_numpy(zero_copy_only=False)
        cut = np.concatenate([[0], np.flatnonzero(idx[1:] != idx[:-1]) + 1])
        dicts.append(c.dictionary.cast(pa.string()))
        chunk.append(np.full(len(cut), len(dicts) - 1))
        start.append(cut + at)
        code.append(idx[cut])
        at += len(c)
    if not dicts:
        return [], np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return dicts, np.concatenate(chunk), np.concatenate(start), np.concatenate(code)


def sym_runs(cols: list[pa.ChunkedArray], sides=("left", "right")) -> list[Runs]:
    """Each sym column's runs, with ranks in the sorted union of all their syms; AsofError
    if a column's syms are not in sorted order. Works on the dictionaries and the run starts
    only: no per-row string or rank is ever made."""
    found = [_chunk_runs(c) for c in cols]
    words = [d for dicts, *_ in found for d in dicts]
    syms = pc.unique(pa.concat_arrays(words)) if words else pa.array([], pa.string())
    syms = syms.take(pc.array_sort_indices(syms))
    out = []
    for col, (dicts, chunk, start, code), side in zip(cols, found, sides):
        rank = np.empty(len(start), np.int64)
        for i, d in enumerate(dicts):
            mine = chunk == i
            to_rank = pc.index_in(d, value_set=syms).to_numpy(zero_copy_only=False)
            rank[mine] = to_rank[code[mine]]
        if len(rank) > 1:
            if (np.diff(rank) < 0).any():
                raise _not_sorted(side)
            first = np.concatenate([[True], rank[1:] != rank[:-1]])   # merge runs across chunks
            rank, start = rank[first], start[first]
        out.append(Runs(rank, start, np.append(start[1:], len(col)).astype(np.int64)))
    return out


def _times(col: pa.ChunkedArray, side: str) -> np.ndarray:
    if col.null_count:
        raise AsofError(f"{side} time has nulls: an as-of join needs a time on every row")
    col = col.cast(pa.timestamp("ns")) if col.type != pa.timestamp("ns") else col
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return arr.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _not_sorted(side: str) -> AsofError:
    return AsofError(f"{side} table is not sorted by sym then time (history partitions are); "
                     f"sort it first, e.g. table.sort_by([('sym', 'ascending'), ('time', "
                     f"'ascending')])")


def match(left: Runs, lt: np.ndarray, right: Runs, rt: np.ndarray) -> np.ndarray:
    """Per left row, the index of its right row (-1: none); AsofError if time goes down within
    a sym on either side. Of several right rows at the same nanosecond the last is taken
    (searches land after the last equal key). Syms of many rows each: one binary search per
    sym of its left times in its right times (they fit in cache). Many syms of few rows each
    (a Python step per sym would dominate): one search over composite (rank, time) keys."""
    nl, nr = len(lt), len(rt)
    if not len(right.rank) or not len(left.rank):
        return np.full(nl, -1, np.int64)
    if (nl + nr) < SYM_SEARCH_ROWS * (len(left.rank) + len(right.rank)):
        idx = _match_keys(left, lt, right, rt)
        if idx is not None:
            return idx
    return _match_by_sym(left, lt, right, rt)


def _match_keys(left: Runs, lt, right: Runs, rt) -> np.ndarray | None:
    """match() by one search over rank * span + (time - t0); None if those keys overflow."""
    t0 = min(int(lt.min()), int(rt.min()))
    span = max(int(lt.max()), int(rt.max())) - t0 + 1
    nranks = int(max(left.rank[-1], right.rank[-1])) + 1
    if nranks * span >= 1 << 62:
        return None
    keys = []
    for runs, t, side in ((left, lt, "left"), (right, rt, "right")):
        key = np.repeat(runs.rank * span - t0, runs.end - runs.start)
        key += t
        if len(key) > 1 and not (key[1:] >= key[:-1]).all():
            raise _not_sorted(side)
        keys.append(key)
    idx = np.searchsorted(keys[1], keys[0], "right") - 1
    ok = idx >= 0
    # the latest earlier key may be another (lower-ranked) sym's: key // span is the rank
    ok[ok] = keys[1][idx[ok]] // span == keys[0][ok] // span
    idx[~ok] = -1
    return idx


def _match_by_sym(left: Runs, lt, right: Runs, rt) -> np.ndarray:
    """match() one sym at a time; the syms split between two threads (numpy's search releases
    the GIL, and only small per-sym arrays are made, so the threads touch little new memory)."""
    idx = np.full(len(lt), -1, np.int64)
    pos = np.minimum(np.searchsorted(right.rank, left.rank), len(right.rank) - 1)
    spans = list(zip(left.start.tolist(), left.end.tolist(), right.start[pos].tolist(),
                     right.end[pos].tolist(), (right.rank[pos] == left.rank).tolist()))

    def search(part: list) -> None:
        for a, b, c, d, ok in part:
            times = lt[a:b]
            if b - a > 1 and not (times[1:] >= times[:-1]).all():
                raise _not_sorted("left")
            if not ok:
                continue
            rts = rt[c:d]
            if d - c > 1 and not (rts[1:] >= rts[:-1]).all():
                raise _not_sorted("right")
            found = np.searchsorted(rts, times, "right")
            found += c - 1
            found[found < c] = -1
            idx[a:b] = found

    half = int(np.searchsorted(left.start, len(lt) // 2))
    if 0 < half < len(spans):
        other = _pool().submit(search, spans[half:])
        try:
            search(spans[:half])
        finally:
            other.result()
    else:
        search(spans)
    return idx


def asof_join(left: pa.Table, right: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`left` with `columns` of `right` (default: all but time, sym and date) as of each left
    row's time, per sym. Both sorted by sym then time. See the module docstring."""
    if columns is None:
        columns = [c for c in right.column_names if c not in ("time", "sym", "date")]
    for name, t in (("left", left), ("right", right)):
        for c in ("time", "sym"):
            if c not in t.column_names:
                raise AsofError(f"{name} table has no {c!r} column; it has {t.column_names}")
    missing = [c for c in columns if c not in right.column_names]
    if missing:
        raise AsofError(f"right table has no columns {missing}; it has {right.column_names}")
    clash = [c for c in columns if c in left.column_names]
    if clash:
        raise AsofError(f"columns {clash} are in both tables; select or rename them first")
    lt, rt = _times(left.column("time"), "left"), _times(right.column("time"), "right")
    lruns, rruns = sym_runs([left.column("sym"), right.column("sym")])
    idx = match(lruns, lt, rruns, rt)
    take = pa.array(idx, mask=idx < 0)
    out = left
    for c in columns:
        out = out.append_column(right.schema.field(c), right.column(c).take(take))
    return out


def partition_files(hdb_dir: Path, table: str, day: dt.date) -> list[Path]:
    """A day's files of a table, in name order (one sorted sequence: see hdb.eod)."""
    return sorted((Path(hdb_dir) / table / f"date={day}").glob("*.parquet"))


def read_partition(files: list[Path], columns: list[str] | None = None) -> pa.Table:
    # file by file, no dataset discovery (a few ms a query); the date comes from the directory
    # name, added by join_day
    tables = [pq.ParquetFile(f).read(columns=columns) for f in files]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def join_day(hdb_dir: Path, day: dt.date, left: str = "trade", right: str = "quote",
             columns: list[str] | None = None) -> pa.Table | None:
    """The as-of join of `left` and `right` for `day` read from the history, with a `date`
    column after the left columns (as the SQL views have it); None when either table has no
    partition for that day."""
    lf, rf = partition_files(hdb_dir, left, day), partition_files(hdb_dir, right, day)
    if not lf or not rf:
        return None
    rcols = None if columns is None else ["time", "sym", *columns]
    ltab, rtab = read_partition(lf), read_partition(rf, rcols)
    # a date column stored in a file gives way to the directory's, as in the SQL views
    ltab = ltab.drop_columns([c for c in ["date"] if c in ltab.column_names])
    rtab = rtab.drop_columns([c for c in ["date"] if c in rtab.column_names])
    dates = pa.array(np.full(ltab.num_rows, (day - dt.date(1970, 1, 1)).days, np.int32)).view(pa.date32())
    return asof_join(ltab.append_column("date", dates), rtab, columns)
