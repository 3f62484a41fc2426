"""End of day: a day's tables into the Parquet history, atomically.

Layout: `<hdb>/<table>/date=YYYY-MM-DD/part-0.parquet` (hive partitioning; any Parquet reader
can read it). A big day (>= 2M rows per core) is split into part-0..part-3, each a contiguous
range of syms written by its own thread, so the files in name order are still one sorted
sequence and every sym lives in exactly one file. Each file is sorted by sym then time,
zstd-compressed, with the sym column dictionary-encoded (prices too: they repeat), `time` as
timestamp[ns] with delta encoding, statistics on every column and row groups of about
rows/(2*nsyms) rows (bounded to 128k..1M), so a filter on one sym reads only the few row groups
that hold it; the sort order is recorded in the file's `sorting_columns`.

Atomicity: the partition is written into `<hdb>/<table>/.tmp-date=...-<id>/` (invisible to the
`date=*` glob readers use), fsynced, then renamed into place. An existing partition is swapped
with the new one in a single `renameat2(RENAME_EXCHANGE)` call, so readers see the old day or
the new day, never a mix or nothing. A crash (kill -9) at any point leaves either the old
partition or the new one, plus at most a hidden temporary directory that the next write of that
day removes. Re-running EOD for a day with the same rows gives the same files: idempotent.

`rebuild_from_log` is the recovery path when the RDB was lost: the day's tickerplant log is
decoded and saved the same way. `list_partitions` backs `tickstack hdb ls`.
"""
from __future__ import annotations

import ctypes
import datetime as dt
import errno
import logging
import os
import shutil
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

WRITERS = 4                  # at most this many files (and threads) per partition
PARALLEL_MIN_ROWS = 2_000_000  # a file per this many rows, up to WRITERS and the core count
MIN_ROW_GROUP = 131_072      # below this, per-group write and scan overhead outweighs pruning
MAX_ROW_GROUP = 1 << 20
COMPRESSION = "zstd"


class EodError(ValueError):
    """A table cannot be saved as given; the message names the table and column."""


class Partition(NamedTuple):
    table: str
    date: dt.date
    rows: int
    bytes: int


# -- shaping -------------------------------------------------------------------------------------
def conform(table: pa.Table, schema) -> pa.Table:
    """`table` with exactly `schema`'s columns, in order, with its types: symbols dictionary
    encoded with one dictionary per column, time as timestamp[ns]."""
    names = set(table.column_names)
    missing = [n for n in schema.names if n not in names]
    if missing:
        raise EodError(f"table {schema.name!r}: missing columns {missing}; expected {schema.names}")
    extra = sorted(names - set(schema.names))
    if extra:
        raise EodError(f"table {schema.name!r}: unknown columns {extra}; expected {schema.names}")
    cols = []
    for c in schema.columns:
        col = table.column(c.name)
        try:
            if c.type == "symbol":
                if not pa.types.is_dictionary(col.type):
                    col = pc.dictionary_encode(col.cast(pa.string()))
                elif col.type != c.arrow:
                    col = col.cast(c.arrow)
                if col.null_count:
                    col = pc.dictionary_encode(pc.fill_null(col.cast(pa.string()), ""))
            elif c.type == "timestamp":
                if pa.types.is_timestamp(col.type) and col.type.tz is not None:
                    col = col.cast(pa.timestamp(col.type.unit))   # keeps the UTC instant
                col = col.cast(c.arrow)
            elif col.type != c.arrow:
                col = col.cast(c.arrow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise EodError(f"table {schema.name!r} column {c.name!r}: cannot make {col.type} "
                           f"into {c.type} ({e})") from None
        cols.append(col)
    out = pa.Table.from_arrays(cols, schema=schema.arrow)
    if any(c.type == "symbol" for c in schema.columns):
        out = out.unify_dictionaries()
    return out.combine_chunks()


def _sym_rank(col: pa.ChunkedArray | pa.DictionaryArray) -> np.ndarray:
    """Per row, the rank of its sym in sorted order (so sorting by rank sorts by sym)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if len(col) == 0:
        return np.zeros(0, np.uint16)
    d = col.dictionary
    order = np.asarray(pc.array_sort_indices(d))
    rank = np.empty(len(d), np.int32)
    rank[order] = np.arange(len(d), dtype=np.int32)
    r = rank[np.asarray(col.indices.cast(pa.int32()))]
    # 16-bit keys get a counting sort (see _stable_argsort): up to 65536 syms
    return r.astype(np.uint16) if len(d) <= 1 << 16 else r


def _int64_view(col: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 numpy, zero-copy when it is one chunk without nulls."""
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return arr.cast(pa.int64()).to_numpy(zero_copy_only=arr.null_count == 0)


class SortPlan(NamedTuple):
    order: np.ndarray | None    # rows in (sym, time) order, stable; None: already in order
    counts: np.ndarray          # rows per sym rank (rank = position in sorted sym order)


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort via Arrow: a counting sort for 16-bit keys (~7x numpy's stable sort)."""
    return pc.array_sort_indices(pa.array(keys)).to_numpy()


def plan_sort(table: pa.Table) -> SortPlan:
    """How to put `table` in (sym, time) order: one O(rows) counting sort on the sym rank when
    time is already in order (the usual case: ticks arrive in time order), a stable time sort
    first otherwise; nothing when the table is already sorted (e.g. re-saving history)."""
    rank = _sym_rank(table.column("sym"))
    t = _int64_view(table.column("time"))
    counts = np.bincount(rank) if len(rank) else np.zeros(0, np.int64)
    if len(t) < 2:
        return SortPlan(None, counts)
    time_sorted = bool((t[1:] >= t[:-1]).all())
    if (rank[1:] >= rank[:-1]).all():
        same = rank[1:] == rank[:-1]
        if time_sorted or (t[1:][same] >= t[:-1][same]).all():
            return SortPlan(None, counts)
    if time_sorted:
        return SortPlan(_stable_argsort(rank), counts)
    by_time = _stable_argsort(t)
    return SortPlan(by_time[_stable_argsort(rank[by_time])], counts)


def sort_order(table: pa.Table) -> tuple[np.ndarray | None, np.ndarray]:
    """(row order by sym then time, stable, or None when already in that order; the sym ranks
    in the sorted order)."""
    plan = plan_sort(table)
    # the sorted ranks are each rank repeated by its count: cheaper than rank[order]
    return plan.order, np.repeat(np.arange(len(plan.counts), dtype=np.int32), plan.counts)


def reorder(table: pa.Table, order: np.ndarray) -> pa.Table:
    """`table`'s rows in `order` (one Arrow take over every column)."""
    return table.take(pa.array(order))


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(2, min(WRITERS, os.cpu_count() or 1)), "hdb-eod")
    return _POOL


def split_ranks(counts: np.ndarray, parts: int) -> list[tuple[int, int, int, int]]:
    """(first rank, end rank, first row, end row) of about `parts` equal slices of the sorted
    rows, each cut at a sym boundary so every sym lives in exactly one file."""
    cum = np.concatenate([[0], np.cumsum(counts)])
    n = int(cum[-1])
    bounds = {0, len(counts)}
    for i in range(1, parts):
        bounds.add(int(np.searchsorted(cum, i * n // parts, side="left")))
    bounds = sorted(b for b in bounds if 0 <= b <= len(counts))
    out = [(a, b, int(cum[a]), int(cum[b])) for a, b in zip(bounds[:-1], bounds[1:])]
    return [o for o in out if o[3] > o[2]]


def row_group_rows(nrows: int, nsyms: int) -> int:
    """About two row groups per sym, bounded: a sym filter then skips all but ~2-3 groups."""
    return int(min(MAX_ROW_GROUP, max(MIN_ROW_GROUP, nrows // max(1, 2 * nsyms))))


# -- atomic placement ----------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
try:
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
except (AttributeError, OSError):
    _renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories; False when the OS or file system cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(e, os.strerror(e), str(b))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _recover(table_dir: Path, day: dt.date) -> None:
    """Undo what a crash left for `day`: temporaries go; an old partition set aside by the
    non-atomic fallback comes back if the new one never landed."""
    final = table_dir / f"date={day}"
    for p in table_dir.glob(f".old-date={day}-*"):
        if not final.exists():
            os.rename(p, final)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in table_dir.glob(f".tmp-date={day}-*"):
        shutil.rmtree(p, ignore_errors=True)


def place(tmp: Path, final: Path) -> None:
    """Move the finished directory `tmp` to `final`, replacing any existing one atomically."""
    try:
        os.rename(tmp, final)           # no partition yet: a plain rename is atomic
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if _exchange(tmp, final):
            shutil.rmtree(tmp)           # tmp now holds the old partition
        else:
            # no RENAME_EXCHANGE: the old partition is set aside first and _recover()
            # restores it if we die between these two renames
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old)
    _fsync_dir(final.parent)


# -- writing -------------------------------------------------------------------------------------
def writer_options(schema) -> dict:
    """Parquet options: dictionaries for symbols (and prices, which repeat), delta encoding for
    timestamps (sorted within each sym, so deltas are small), zstd, statistics, sort order."""
    idx = {n: i for i, n in enumerate(schema.names)}
    dict_cols = [c.name for c in schema.columns if c.type in ("symbol", "float64", "float32")]
    delta = {c.name: "DELTA_BINARY_PACKED" for c in schema.columns if c.type == "timestamp"}
    return dict(compression=COMPRESSION, use_dictionary=dict_cols, column_encoding=delta or None,
                write_statistics=True,
                sorting_columns=[pq.SortingColumn(idx["sym"]), pq.SortingColumn(idx["time"])])


def write_file(path: Path, table: pa.Table, order: np.ndarray | None, a: int, b: int,
               opts: dict, rg: int, bar=None) -> None:
    """Sorted rows a..b (positions in `order`; None = the table's own order) as one Parquet
    file, fsynced. Rows are gathered one row group at a time, so the sorted copy never exists
    whole. (The table itself is one chunk per column by then: Arrow's take over many chunks is
    ~25x slower, so `conform` combines a chunked day once, which is EOD's one extra copy.)"""
    with open(path, "wb") as f:
        with pq.ParquetWriter(f, table.schema, **opts) as w:
            for start in range(a, b, rg):
                stop = min(start + rg, b)
                rows = (table.slice(start, stop - start) if order is None
                        else table.take(pa.array(order[start:stop])))
                w.write_table(rows, row_group_size=rg)
                if bar is not None:
                    bar.update(rows.num_rows)
        f.flush()
        os.fsync(f.fileno())


def write_partition(directory: Path, table: pa.Table, plan: SortPlan, schema,
                    progress: bool = True, desc: str = "") -> list[Path]:
    """The table in (sym, time) order as part-0.parquet and, for big tables, part-1...
    cut at sym boundaries. Each part is gathered (take) and encoded by its own thread: both
    are single-threaded per call in Arrow and release the GIL, so parts use every core."""
    from tqdm import tqdm

    n = table.num_rows
    nsyms = int(np.count_nonzero(plan.counts))
    rg = row_group_rows(n, nsyms)
    parts = max(1, min(WRITERS, os.cpu_count() or 1, n // PARALLEL_MIN_ROWS))
    jobs = [(directory / f"part-{i}.parquet", a, b)
            for i, (_, _, a, b) in enumerate(split_ranks(plan.counts, parts))]
    opts = writer_options(schema)
    with tqdm(total=n, unit="rows", unit_scale=True, desc=desc, leave=False,
              disable=None if progress else True) as bar:
        def write(job):
            write_file(job[0], table, plan.order, job[1], job[2], opts, rg, bar)
        if len(jobs) == 1:
            write(jobs[0])
        else:
            list(_pool().map(write, jobs))
    return [j[0] for j in jobs]


def save_table(hdb_dir: Path, day: dt.date, name: str, table: pa.Table, schema,
               progress: bool = True) -> int:
    """Conform, sort and write one table's day; returns the rows written (0: nothing written)."""
    table = conform(table, schema)
    if table.num_rows == 0:
        return 0
    plan = plan_sort(table)
    table_dir = Path(hdb_dir) / name
    table_dir.mkdir(parents=True, exist_ok=True)
    _recover(table_dir, day)
    tmp = table_dir / f".tmp-date={day}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_partition(tmp, table, plan, schema, progress, desc=f"{name} {day}")
        _fsync_dir(tmp)
        place(tmp, table_dir / f"date={day}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table.num_rows


def save_day(hdb_dir: Path, day: dt.date, tables: dict[str, pa.Table], registry,
             progress: bool = True) -> dict[str, int]:
    """Write each non-empty table as `<hdb_dir>/<table>/date=<day>/part-0.parquet`, replacing
    that day's partition atomically. Returns rows written per table (empty tables: 0, and
    nothing on disk changes for them)."""
    for name in tables:
        if name not in registry:
            raise EodError(f"unknown table {name!r}; known tables: {registry.tables}")
    return {name: save_table(Path(hdb_dir), day, name, t, registry[name], progress)
            for name, t in tables.items()}


def rebuild_from_log(hdb_dir: Path, log_file: Path, registry, day: dt.date | None = None,
                     progress: bool = True) -> dict[str, int]:
    """Rebuild a day's partitions from its tickerplant log (when the RDB was lost). Reads the
    valid records (a corrupt tail is reported in the log and left out: run `tickstack log
    repair` first to salvage records after it), decodes them and saves them with save_day."""
    from schemas.codec import decode
    from tickerplant.log import LogReader, scan

    day = day or LogReader(log_file).date
    batches: dict[str, list[pa.RecordBatch]] = defaultdict(list)
    for _, head, payload in scan(log_file, progress=progress, strict=False):
        if head.nrows:
            batches[head.table].append(decode(payload, registry)[1])
    tables = {t: pa.Table.from_batches(bs) for t, bs in batches.items()}
    return save_day(hdb_dir, day, tables, registry, progress)


def list_partitions(hdb_dir: Path) -> list[Partition]:
    """Every (table, date, rows, bytes) on disk, read from the Parquet footers only."""
    out = []
    root = Path(hdb_dir)
    if not root.is_dir():
        return out
    for tdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ddir in sorted(tdir.glob("date=*")):
            try:
                day = dt.date.fromisoformat(ddir.name[5:])
            except ValueError:
                continue
            rows = size = 0
            for f in sorted(ddir.glob("*.parquet")):
                rows += pq.ParquetFile(f).metadata.num_rows
                size += f.stat().st_size
            out.append(Partition(tdir.name, day, rows, size))
    return out
