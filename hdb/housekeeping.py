"""HDB housekeeping: retention by age and compaction of many-file partitions.

    drop_old(hdb_dir, today, keep_days)        delete partitions more than keep_days old
    compact(hdb_dir, registry, min_files)      rewrite partitions of >= min_files files

Retention works per partition (`<hdb>/<table>/date=D/`) and never touches day `today` or later
(the caller passes the trading day now, by the TP's clock). Each partition leaves the `date=*`
glob readers use in one rename (to a hidden `.del-date=D-<id>` beside it), so a query sees the
whole day or none of it; the hidden directory is then removed, and one a crash left behind is
removed by the next run. A query already reading files of a deleted day may fail on them
(DuckDB lists files, then opens them): run retention outside query hours.

Compaction reads every file of a partition, and writes the rows again with the EOD writer
(`hdb.eod.save_table`: sorted by sym then time, zstd, at most 4 files cut at sym boundaries)
swapped in atomically with `hdb.eod.place`: every row is kept, readers see the old files or
the new ones. A partition that does not fit its table's schema, or one that another writer is
writing right now (a fresh `.tmp-date=D-*` beside it), is skipped and reported. Today's
partition is left to the end of day. A compacted partition has at most 4 files, so with
`min_files` > 4 a partition is compacted once.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from hdb.eod import EodError, conform, save_table
from schemas.durable import fsync_path

log = logging.getLogger(__name__)

BUSY_S = 3600   # a `.tmp-date=D-*` younger than this is a write in progress, not a crash's leftover


class Dropped(NamedTuple):
    table: str
    date: dt.date
    files: int
    bytes: int


class Compacted(NamedTuple):
    table: str
    date: dt.date
    files_before: int
    files_after: int
    rows: int


@dataclass
class CompactionResult:
    compacted: list[Compacted] = field(default_factory=list)
    skipped: list[tuple[str, dt.date, str]] = field(default_factory=list)   # table, date, why


def partitions(hdb_dir: str | Path) -> Iterator[tuple[str, dt.date, Path]]:
    """(table, date, directory) of every partition on disk, in table and date order."""
    root = Path(hdb_dir)
    if not root.is_dir():
        return
    for tdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ddir in sorted(tdir.glob("date=*")):
            try:
                day = dt.date.fromisoformat(ddir.name[5:])
            except ValueError:
                continue
            if ddir.is_dir():
                yield tdir.name, day, ddir


def _remove_leftovers(root: Path) -> None:
    """Hidden `.del-*` directories a crashed retention run left."""
    if root.is_dir():
        for tdir in root.iterdir():
            if tdir.is_dir() and not tdir.name.startswith("."):
                for p in tdir.glob(".del-date=*"):
                    shutil.rmtree(p, ignore_errors=True)


def drop_old(hdb_dir: str | Path, today: dt.date, keep_days: int,
             dry_run: bool = False) -> list[Dropped]:
    """Delete every partition whose date is more than `keep_days` days before `today`
    (`today - date > keep_days`); return what was (with `dry_run`: would be) deleted."""
    if keep_days < 1:
        raise ValueError("keep_days is at least 1: today's partition is never deleted")
    root = Path(hdb_dir)
    if not dry_run:
        _remove_leftovers(root)
    out = []
    for table, day, ddir in list(partitions(root)):
        if day >= today or (today - day).days <= keep_days:
            continue
        files = [f for f in ddir.rglob("*") if f.is_file()]
        out.append(Dropped(table, day, len(files), sum(f.stat().st_size for f in files)))
        if dry_run:
            continue
        gone = ddir.with_name(f".del-{ddir.name}-{uuid.uuid4().hex[:8]}")
        os.rename(ddir, gone)            # one atomic step out of the readers' `date=*` glob
        fsync_path(ddir.parent)
        shutil.rmtree(gone)
        log.info("hdb retention: deleted %s %s (%d files)", table, day, len(files))
    return out


def _busy(ddir: Path, day: dt.date) -> bool:
    now = time.time()
    for p in ddir.parent.glob(f".tmp-date={day}-*"):
        try:
            if now - p.stat().st_mtime < BUSY_S:
                return True
        except FileNotFoundError:
            pass
    return False


def compact(hdb_dir: str | Path, registry, min_files: int, today: dt.date | None = None,
            dry_run: bool = False, progress: bool = False) -> CompactionResult:
    """Rewrite each partition holding `min_files` or more Parquet files (dates before `today`
    when given) as the EOD writer writes a day. Returns what was (would be) compacted and what
    was skipped and why."""
    from tqdm import tqdm

    if min_files < 2:
        raise ValueError("min_files is at least 2")
    root = Path(hdb_dir)
    res = CompactionResult()
    todo = []
    for table, day, ddir in partitions(root):
        files = sorted(ddir.glob("*.parquet"))
        if len(files) < min_files or (today is not None and day >= today):
            continue
        if table not in registry:
            res.skipped.append((table, day, f"table {table!r} is not defined; add it to a schema "
                                            "file (schema_files or <home>/schemas/) to compact it"))
        elif _busy(ddir, day):
            res.skipped.append((table, day, "another writer is writing this day now; "
                                            "it is compacted on a later run"))
        else:
            todo.append((table, day, ddir, files))
    if dry_run:
        res.compacted = [Compacted(t, d, len(fs), 0, _rows(fs)) for t, d, _, fs in todo]
        return res
    for table, day, ddir, files in tqdm(todo, unit="partition", desc="compacting",
                                        disable=None if progress else True):
        schema = registry[table]
        try:
            parts = [_read(f, schema) for f in files]
            rows = sum(p.num_rows for p in parts)
            if rows == 0:
                res.skipped.append((table, day, "no rows in its files; left as is"))
                continue
            written = save_table(root, day, table, pa.concat_tables(parts), schema, progress)
        except (EodError, pa.ArrowException, OSError) as e:
            res.skipped.append((table, day, f"not compacted: {e}"))
            log.error("hdb compaction: %s %s: %s", table, day, e)
            continue
        if written != rows:   # save_table wrote what it was given; anything else is a bug
            raise RuntimeError(f"compaction of {table} {day} wrote {written} rows of {rows}")
        after = len(list(ddir.glob("*.parquet")))
        res.compacted.append(Compacted(table, day, len(files), after, rows))
        log.info("hdb compaction: %s %s: %d files -> %d, %d rows", table, day, len(files), after, rows)
    return res


def _read(f: Path, schema) -> pa.Table:
    """One file's rows in the table's schema; EodError naming the file if they do not fit."""
    try:
        return conform(pq.read_table(f), schema)
    except (EodError, pa.ArrowException) as e:
        raise EodError(f"{f.name}: {e}; move the file out of the partition or fix it") from None


def _rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
