"""End of day: a day's tables into the Parquet history, atomically.

Layout: `<hdb>/<table>/date=YYYY-MM-DD/part-0.parquet` (hive partitioning; any Parquet reader
can read it). A big day (>= 2M rows per core) is split into part-0..part-3, each a contiguous
range of syms, so the files in name order are still one sorted sequence and every sym lives in
exactly one file. Each file is sorted by sym then time, with statistics on every column and row
groups of about rows/(2*nsyms) rows (bounded to 128k..1M), so a filter on one sym reads only the
few row groups that hold it; the sort order is recorded in the file's `sorting_columns`.
Encodings (see writer_options): `time` as timestamp[ns], delta encoded and not compressed (zstd
gains nothing on it); every other column dictionary encoded (the sym column always) and zstd
compressed.

Speed (what the RDB's end of day costs, `tickstack bench eod`): the day is never combined or
copied whole. The RDB hands over `Store.snapshot()` - 262,144-row chunks sharing one sym
dictionary - and the sort is planned on it in place: the dictionary is ranked once, each row's
rank looked up chunk by chunk, one counting sort on the ranks (time is already in order). Each
row group is then gathered straight from the chunks into buffers that every row group of a file
reuses (`SortedRows`), because touching fresh memory is what a first end of day in a process
pays most for. The files of all tables are written side by side on a thread pool (Arrow's take,
encoders and file writes release the GIL).

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

from schemas.durable import fsync_path

log = logging.getLogger(__name__)

WRITERS = 4                  # at most this many files (and threads) per partition
PARALLEL_MIN_ROWS = 2_000_000  # a file per this many rows, up to WRITERS and the core count
MIN_ROW_GROUP = 131_072      # below this, per-group write and scan overhead outweighs pruning
MAX_ROW_GROUP = 1 << 20
RUN_ROWS = 256               # shorter runs on average: gather by chunk, then scatter
MIN_CHUNK_ROWS = 65_536       # fewer rows a chunk on average: combine first (per-chunk calls)
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1          # Arrow's default for zstd; see writer_options
WRITE_BATCH_ROWS = 65_536


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
    encoded with one dictionary per column, time as timestamp[ns]. Chunks are kept as they are
    (the RDB's snapshot is 262,144-row chunks that all share one sym dictionary, so this is
    zero-copy for it): rows are gathered from the chunks when the file is written. Many small
    chunks are combined."""
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
        out = out.unify_dictionaries()   # zero-copy when the chunks share one dictionary
    if max((c.num_chunks for c in out.columns), default=0) > 1 + out.num_rows // MIN_CHUNK_ROWS:
        # many small chunks (a log's messages, one row each at worst): per-chunk steps would
        # cost more than one copy
        out = out.combine_chunks()
    return out


def _codes(arr: pa.DictionaryArray) -> np.ndarray:
    """A dictionary array's indices as numpy (zero-copy: conform leaves no nulls in symbols)."""
    return arr.indices.to_numpy(zero_copy_only=False)


def _sym_rank(col: pa.ChunkedArray | pa.DictionaryArray) -> tuple[np.ndarray, np.ndarray]:
    """(per row, the rank of its sym in sorted order, so sorting by rank sorts by sym; per
    rank, its index in the column's dictionary). The dictionary is ranked once (conform gives
    every chunk the same one) and ranks are looked up chunk by chunk: the day's sym column is
    never combined."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    n = sum(len(c) for c in chunks)
    if n == 0:
        return np.zeros(0, np.uint16), np.zeros(0, np.int32)
    d = chunks[0].dictionary
    if any(not (c.dictionary is d or c.dictionary.equals(d)) for c in chunks[1:]):
        return _sym_rank(pa.table({"sym": chunks}).unify_dictionaries().column(0))
    code = np.asarray(pc.array_sort_indices(d)).astype(np.int32)
    # 16-bit keys get a counting sort (see _stable_argsort): up to 65536 syms
    rank = np.empty(len(d), np.uint16 if len(d) <= 1 << 16 else np.int32)
    rank[code] = np.arange(len(d), dtype=rank.dtype)
    out = np.empty(n, rank.dtype)
    at = 0
    for c in chunks:
        np.take(rank, _codes(c), out=out[at: at + len(c)])
        at += len(c)
    return out, code


def _time_chunks(col: pa.ChunkedArray) -> list[np.ndarray]:
    """A timestamp column's chunks as int64 numpy views (no copy: conform leaves no nulls)."""
    return [c.cast(pa.int64()).to_numpy(zero_copy_only=False) for c in col.chunks if len(c)]


def _ascending(chunks: list[np.ndarray]) -> bool:
    """Whether the chunks, one after another, never go down."""
    prev = None
    for t in chunks:
        if not (t[1:] >= t[:-1]).all() or (prev is not None and t[0] < prev):
            return False
        prev = t[-1]
    return True


class SortPlan(NamedTuple):
    order: np.ndarray | None    # rows in (sym, time) order, stable; None: already in order
    counts: np.ndarray          # rows per sym rank (rank = position in sorted sym order)
    codes: np.ndarray | None = None   # per rank, its index in the sym column's dictionary


def _stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort via Arrow: a counting sort for 16-bit keys (~7x numpy's stable sort)."""
    return pc.array_sort_indices(pa.array(keys)).to_numpy()


def plan_sort(table: pa.Table) -> SortPlan:
    """How to put `table` in (sym, time) order: one O(rows) counting sort on the sym rank when
    time is already in order (the usual case: ticks arrive in time order), a stable time sort
    first otherwise; nothing when the table is already sorted (e.g. re-saving history).
    Works on the chunks as they are: only the sym ranks (2 bytes a row) are made whole."""
    rank, codes = _sym_rank(table.column("sym"))
    counts = np.bincount(rank) if len(rank) else np.zeros(0, np.int64)
    if len(rank) < 2:
        return SortPlan(None, counts, codes)
    tchunks = _time_chunks(table.column("time"))
    time_sorted = _ascending(tchunks)
    if (rank[1:] >= rank[:-1]).all():
        if time_sorted:
            return SortPlan(None, counts, codes)
        t = np.concatenate(tchunks)
        same = rank[1:] == rank[:-1]
        if (t[1:][same] >= t[:-1][same]).all():
            return SortPlan(None, counts, codes)
    if time_sorted:
        return SortPlan(_stable_argsort(rank), counts, codes)
    by_time = _stable_argsort(np.concatenate(tchunks))
    return SortPlan(by_time[_stable_argsort(rank[by_time])], counts, codes)


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
    fsync_path(final.parent)


# -- writing -------------------------------------------------------------------------------------
def writer_options(schema) -> dict:
    """Parquet options. Timestamps: delta encoding (sorted within each sym, so deltas are
    small), not compressed (zstd shrinks delta-packed times by ~0.01% and would be a third of
    their write time). Every other column: dictionary encoded (symbols; prices and sizes
    repeat, and a dictionary's small indices compress far better and faster than raw values;
    Arrow falls back to plain by itself when a dictionary outgrows its page limit), then zstd
    (level COMPRESSION_LEVEL). Statistics on every column, the sort order in the footer, and
    values handed to the encoders WRITE_BATCH_ROWS at a time (Arrow's default of 1024 spends
    more on per-batch dictionary statistics than on encoding the sym column)."""
    idx = {n: i for i, n in enumerate(schema.names)}
    times = {c.name for c in schema.columns if c.type == "timestamp"}
    dict_cols = [c.name for c in schema.columns if c.type not in ("timestamp", "bool")]
    return dict(compression={n: "none" if n in times else COMPRESSION for n in schema.names},
                compression_level={n: COMPRESSION_LEVEL for n in schema.names if n not in times},
                use_dictionary=dict_cols,
                column_encoding={n: "DELTA_BINARY_PACKED" for n in times} or None,
                write_statistics=True, write_batch_size=WRITE_BATCH_ROWS,
                sorting_columns=[pq.SortingColumn(idx["sym"]), pq.SortingColumn(idx["time"])])


class SortedRows:
    """A conformed table's rows in plan order, a row group at a time, gathered straight from its
    chunks with numpy takes (see _runs) into buffers the caller reuses for every row group: so
    neither the day combined nor its sorted copy ever exists, and no fresh memory is touched
    after the first row group. (Arrow's take over a chunked column combines the chunks on every
    call, ~5x slower per row group.) The sym column needs no gather at all: sorted by sym, it is
    each sym's dictionary index repeated by its count. Columns numpy cannot view (strings,
    bools, nulls) are combined once and gathered by Arrow."""

    def __init__(self, table: pa.Table, plan: SortPlan):
        self.plan = plan
        n = table.num_rows
        if table.column(0).num_chunks > 1 + n // MIN_CHUNK_ROWS:
            table = table.combine_chunks()   # many small chunks (e.g. a log's messages)
        else:
            table = pa.Table.from_batches(table.to_batches(), table.schema)  # one chunking
        self.table = table
        self.schema = table.schema
        self.lengths = np.array([len(c) for c in table.column(0).chunks] or [0], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)])
        # equal chunks (the RDB's): chunk = row // size, no search
        self.size = int(self.lengths[0]) if len(set(self.lengths[:-1].tolist())) <= 1 else 0
        self.cum = np.concatenate([[0], np.cumsum(plan.counts)])
        self.views: list[list[np.ndarray] | None] = []   # per column: numpy view per chunk
        self.whole: list[pa.Array | None] = []           # per column: combined, for Arrow take
        sym = self.schema.get_field_index("sym")
        for i, f in enumerate(self.schema):
            col = table.column(i)
            views = None
            if i == sym and plan.codes is not None:
                views = []                      # made from the plan, not gathered
            elif not col.null_count and (pa.types.is_dictionary(f.type) or (
                    pa.types.is_primitive(f.type) and not pa.types.is_boolean(f.type))):
                views = [(_codes(c) if pa.types.is_dictionary(f.type) else
                          c.view(_UINT[c.type.bit_width]).to_numpy(zero_copy_only=False))
                         for c in col.chunks]
            self.views.append(views)
            self.whole.append(None if views is not None or plan.order is None else
                              (col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)))
        self.sym = sym if plan.codes is not None else -1

    def buffers(self, rows: int) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per column, (gather, output) buffers of `rows` rows for one writer to reuse."""
        out = []
        for i, views in enumerate(self.views):
            if views is None:
                out.append(None)
            else:
                dt_ = np.dtype(np.int32) if i == self.sym else (views[0].dtype if views else np.int64)
                out.append((np.empty(rows, dt_), np.empty(rows, dt_)))
        return out

    def _sym_codes(self, a: int, b: int, out: np.ndarray) -> None:
        """The sym column's sorted rows a..b into `out`: each rank's code repeated by its count."""
        r0 = int(np.searchsorted(self.cum, a, "right")) - 1
        r1 = int(np.searchsorted(self.cum, b, "left"))
        lens = np.minimum(self.cum[r0 + 1: r1 + 1], b) - np.maximum(self.cum[r0: r1], a)
        out[:] = np.repeat(self.plan.codes[r0: r1], lens)

    def _runs(self, src: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """How to gather source rows `src` chunk by chunk: (bounds of runs, chunk of each run,
        grouping). Sorted by sym then time, a row group is a few syms, each a time-ordered
        stretch of rows that crosses the chunks in order: so the rows fall into runs that read
        one chunk each, and each run is one numpy take into the output (grouping None). When
        runs are short (many syms of few rows each) the per-call cost would dominate: the rows
        are then grouped by chunk with one counting sort (`grouping`: the output position of
        each grouped row), gathered chunk by chunk and put in place with one scatter."""
        k = len(src)
        if len(self.lengths) == 1:
            return np.array([0, k]), np.zeros(1, np.int64), None
        cid = (src // self.size) if self.size else (np.searchsorted(self.starts, src, "right") - 1)
        cuts = np.flatnonzero(cid[1:] != cid[:-1]) + 1
        if len(cuts) < k // RUN_ROWS:
            bounds = np.concatenate([[0], cuts, [k]])
            return bounds, cid[bounds[:-1]], None
        order = _stable_argsort(cid.astype(np.uint16 if len(self.lengths) <= 1 << 16 else np.int64))
        per = np.bincount(cid, minlength=len(self.lengths))
        bounds = np.concatenate([[0], np.cumsum(per)])
        keep = np.flatnonzero(per)
        return np.concatenate([bounds[keep], [k]]), keep, order

    def rows(self, a: int, b: int, bufs) -> pa.Table:
        """Sorted rows a..b as a table of single-chunk columns (in `bufs`: valid until the next
        call with the same buffers)."""
        k = b - a
        order = self.plan.order
        src = np.arange(a, b, dtype=np.int64) if order is None else order[a:b].astype(np.int64)
        bounds, chunk, perm = self._runs(src)
        offs = src if perm is None else src[perm]     # rows, run after run
        offs = offs - self.starts[:-1][chunk].repeat(np.diff(bounds))   # ... within their chunk
        spans = [(offs[lo:hi], lo, hi, j) for lo, hi, j in
                 zip(bounds[:-1].tolist(), bounds[1:].tolist(), chunk.tolist())]
        idx = None
        cols = []
        for i, f in enumerate(self.schema):
            views = self.views[i]
            if views is None:
                if self.whole[i] is None:
                    cols.append(self.table.column(i).slice(a, k).combine_chunks())
                else:
                    idx = pa.array(src) if idx is None else idx
                    cols.append(self.whole[i].take(idx))
                continue
            tmp, out = bufs[i]
            out = out[:k]
            if i == self.sym:
                self._sym_codes(a, b, out)
            else:
                into = out if perm is None else tmp
                for o, lo, hi, j in spans:
                    views[j].take(o, None, into[lo:hi], "clip")
                if perm is not None:
                    out[perm] = tmp[:k]
            cols.append(_wrap(f.type, out, self.table.column(i)))
        return pa.Table.from_arrays(cols, schema=self.schema)


_UINT = {8: pa.uint8(), 16: pa.uint16(), 32: pa.uint32(), 64: pa.uint64()}


def _wrap(typ: pa.DataType, vals: np.ndarray, col: pa.ChunkedArray) -> pa.Array:
    """numpy values (or dictionary indices) as an Arrow array of `typ`, zero-copy."""
    if pa.types.is_dictionary(typ):
        d = col.chunk(0).dictionary if col.num_chunks else pa.array([], typ.value_type)
        idx = pa.Array.from_buffers(typ.index_type, len(vals), [None, pa.py_buffer(vals)])
        return pa.DictionaryArray.from_arrays(idx, d, safe=False)
    return pa.Array.from_buffers(typ, len(vals), [None, pa.py_buffer(vals)])


def write_file(path: Path, rows: SortedRows, a: int, b: int, opts: dict, rg: int,
               bar=None) -> None:
    """Sorted rows a..b as one Parquet file, fsynced, gathered one row group at a time into
    buffers reused for every row group (see SortedRows)."""
    bufs = rows.buffers(min(rg, b - a))
    # a path, not a Python file: Arrow's own file writes without taking the GIL
    with pq.ParquetWriter(str(path), rows.schema, **opts) as w:
        for start in range(a, b, rg):
            stop = min(start + rg, b)
            w.write_table(rows.rows(start, stop, bufs), row_group_size=rg)
            if bar is not None:
                bar.update(stop - start)
    fsync_path(path)


class _Day(NamedTuple):
    """One table's day, conformed and planned, and where its files go."""
    name: str
    rows: SortedRows
    nrows: int
    schema: object
    final: Path
    tmp: Path
    files: list[tuple[Path, int, int]]    # (file, first sorted row, end sorted row)
    rg: int


def _prepare(hdb_dir: Path, day: dt.date, name: str, table: pa.Table, schema) -> _Day | None:
    """Conform and plan one table (None when it has no rows): parts cut at sym boundaries,
    about PARALLEL_MIN_ROWS rows each, at most WRITERS and the core count."""
    table = conform(table, schema)
    n = table.num_rows
    if n == 0:
        return None
    plan = plan_sort(table)
    nsyms = int(np.count_nonzero(plan.counts))
    parts = max(1, min(WRITERS, os.cpu_count() or 1, n // PARALLEL_MIN_ROWS))
    table_dir = Path(hdb_dir) / name
    final = table_dir / f"date={day}"
    tmp = table_dir / f".tmp-date={day}-{uuid.uuid4().hex[:8]}"
    files = [(tmp / f"part-{i}.parquet", a, b)
             for i, (_, _, a, b) in enumerate(split_ranks(plan.counts, parts))]
    return _Day(name, SortedRows(table, plan), n, schema, final, tmp, files,
                row_group_rows(n, nsyms))


def _write_days(days: list[_Day], progress: bool, desc: str) -> list[BaseException | None]:
    """Write every file of every day, the biggest first, on the pool (each file is gathered and
    encoded by one thread; Arrow releases the GIL for both, so files use every core and the
    tables of a day are written side by side). Per day: None, or the first error its files hit."""
    from tqdm import tqdm

    jobs = sorted(((i, f, a, b) for i, d in enumerate(days) for f, a, b in d.files),
                  key=lambda j: j[2] - j[3])
    errors: list[BaseException | None] = [None] * len(days)
    with tqdm(total=sum(d.nrows for d in days), unit="rows", unit_scale=True, desc=desc,
              leave=False, disable=None if progress else True) as bar:
        def write(job):
            i, path, a, b = job
            d = days[i]
            write_file(path, d.rows, a, b, writer_options(d.schema), d.rg, bar)

        if len(jobs) == 1:
            futures = []
            try:
                write(jobs[0])
            except Exception as e:  # noqa: BLE001 - reported per day by the caller
                errors[jobs[0][0]] = e
        else:
            futures = [(j[0], _pool().submit(write, j)) for j in jobs]
        try:
            for i, fut in futures:
                e = fut.exception()
                if e is not None and errors[i] is None:
                    errors[i] = e
        except BaseException:
            for _, fut in futures:   # interrupted: stop what has not started, wait for the rest
                fut.cancel()
            for _, fut in futures:
                if not fut.cancelled():
                    fut.exception()
            raise
    return errors


def save_day(hdb_dir: Path, day: dt.date, tables: dict[str, pa.Table], registry,
             progress: bool = True) -> dict[str, int]:
    """Write each non-empty table as `<hdb_dir>/<table>/date=<day>/part-0.parquet` (part-1...
    for big days), replacing that day's partition of each table atomically. The tables are
    written side by side; each table's partition is placed once all of its files are written
    and synced. Returns rows written per table (empty tables: 0, and nothing on disk changes
    for them). If a table fails, the others are still saved, then its error is raised."""
    for name in tables:
        if name not in registry:
            raise EodError(f"unknown table {name!r}; known tables: {registry.tables}")
    return _save(Path(hdb_dir), day, [(name, t, registry[name]) for name, t in tables.items()],
                 progress)


def save_table(hdb_dir: Path, day: dt.date, name: str, table: pa.Table, schema,
               progress: bool = True) -> int:
    """Conform, sort and write one table's day; returns the rows written (0: nothing written)."""
    return _save(Path(hdb_dir), day, [(name, table, schema)], progress)[name]


def _save(hdb_dir: Path, day: dt.date, tables: list[tuple[str, pa.Table, object]],
          progress: bool) -> dict[str, int]:
    out = {name: 0 for name, _, _ in tables}
    # conform and sort-plan the tables side by side too (numpy and Arrow release the GIL)
    prepared = (_pool().map(lambda x: _prepare(hdb_dir, day, *x), tables) if len(tables) > 1
                else [_prepare(hdb_dir, day, *x) for x in tables])
    days = [d for d in prepared if d is not None]
    try:
        for d in days:
            d.tmp.parent.mkdir(parents=True, exist_ok=True)
            _recover(d.tmp.parent, day)
            d.tmp.mkdir()
        errors = _write_days(days, progress, f"end of day {day}")
        for d, e in zip(days, errors):
            if e is None:
                fsync_path(d.tmp)
                place(d.tmp, d.final)
                out[d.name] = d.nrows
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    finally:
        for d in days:   # whatever was not placed (failed, or interrupted) goes
            shutil.rmtree(d.tmp, ignore_errors=True)
    return out


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
