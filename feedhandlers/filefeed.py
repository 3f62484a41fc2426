"""The file feed: replay a CSV or Parquet file of one table's columns, or an HDB date
(`<home>/hdb/<table>/date=YYYY-MM-DD/*.parquet`), into the tickerplant at the recorded pace, at
x speed, or as fast as the TP takes it. Rows go through a `feedhandlers.base.Feed` (batches,
acks, resend).

Input policy (stated, tested)
-----------------------------
Files are read by `schemas.tickfile` (which states the forms accepted) with the file feed's
policy, LENIENT, because a replay should deliver every good row of a messy capture:
* bad_rows="skip": a bad row (a CSV line with the wrong number of fields, or a value not of
  its column's type, an empty `time`/`sym`) is skipped and counted; the report keeps a clear
  message naming its line number (1 = the header; Parquet: its row number, 1-based) for the
  first `MAX_ERRORS` of them. Good rows are all kept. Blank lines are ignored.
* extra_columns="ignore": the file must have every column of the table (else `ReplayError`
  naming the missing ones, nothing is sent); extra columns are ignored and listed in the report.
* empty_values="bad": the wire carries no nulls, so an empty field or a Parquet null in a
  numeric, bool or timestamp column makes its row bad; in text columns it reads "".
* Time order. The whole file is read, then by default ("sort") its rows are stably sorted by
  time (equal times keep file order) and the number of rows that were out of order is reported.
  With order="keep" rows are published in file order as they are, counted the same way; pacing
  never goes backwards (a row earlier than one before it goes out at once). An HDB date is
  always sorted: partitions are stored sym-major.
* Times are published as recorded (not re-stamped); the TP files messages by its own clock.
* Pace. speed=None: as fast as the TP acks; speed=x: recorded gaps / x, rows due in the same
  5 ms go out as one batch; `max_gap_s` (CLI `--max-gap`, default 10 s) cuts longer pauses.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas import tickfile
from schemas.registry import Schema
from schemas.tickfile import MAX_ERRORS, ReadReport

log = logging.getLogger(__name__)

PACE_WINDOW_S = 0.005     # paced replay publishes the rows due in each 5 ms of wall time at once
POLICY = dict(bad_rows="skip", extra_columns="ignore", empty_values="bad")   # see the docstring

ReplayError = tickfile.TickFileError     # the input cannot be replayed at all

__all__ = ["MAX_ERRORS", "ReplayError", "ReplayReport", "ReplayResult", "read_csv", "read_parquet",
           "read_file", "hdb_partition", "order_rows", "publish_table", "replay", "replay_file",
           "replay_hdb"]


@dataclass
class ReplayReport(ReadReport):
    """What reading found (rows, bad_rows, errors, ignored_columns) and the time-order policy did."""
    out_of_order: int = 0           # rows whose time is before an earlier row's
    sorted: bool = False            # rows were reordered by time


@dataclass
class ReplayResult:
    report: ReplayReport
    published: int                  # rows handed to the feed
    seconds: float
    acked: bool                     # every message confirmed logged by the TP
    stats: object = None            # the feed's FeedStats


# --------------------------------------------------------------------------- reading

def _for_feed(read) -> tuple[pa.Table, ReplayReport]:
    """A tickfile read as the feed publishes it: time as int64 ns (what pacing computes on)."""
    table, report = read
    if report.bad_rows:
        log.warning("%s: skipped %d bad rows; first: %s", report.source, report.bad_rows,
                    report.errors[0] if report.errors else "")
    i = table.schema.get_field_index("time")
    table = table.set_column(i, "time", table.column("time").cast(pa.int64()))
    return table, ReplayReport(**vars(report))


def read_csv(path: str | Path, schema: Schema) -> tuple[pa.Table, ReplayReport]:
    """The good rows of a CSV file (file order) and the report of what was skipped and why."""
    return _for_feed(tickfile.read_csv(path, schema, **POLICY))


def read_parquet(path: str | Path, schema: Schema) -> tuple[pa.Table, ReplayReport]:
    """The good rows of a Parquet file (or a directory of them) and the report."""
    return _for_feed(tickfile.read_parquet(path, schema, **POLICY))


def read_file(path: str | Path, schema: Schema) -> tuple[pa.Table, ReplayReport]:
    """CSV or Parquet (or a directory of Parquet files), by suffix or content."""
    return _for_feed(tickfile.read_file(path, schema, **POLICY))


def hdb_partition(cfg, table: str, date: str) -> Path:
    return cfg.hdb_dir / table / f"date={date}"


def order_rows(table: pa.Table, report: ReplayReport, order: str = "sort") -> pa.Table:
    """Count rows out of time order; with order="sort", stably sort by time (see the policy)."""
    if order not in ("sort", "keep"):
        raise ValueError(f"order must be 'sort' or 'keep', not {order!r}")
    t = table.column("time").to_numpy()
    if len(t) > 1:
        report.out_of_order = int((t[1:] < np.maximum.accumulate(t)[:-1]).sum())
    if report.out_of_order:
        log.warning("%s: %d rows out of time order (%s)", report.source, report.out_of_order,
                    "sorted" if order == "sort" else "published as is")
        if order == "sort":
            table = table.take(pa.array(np.argsort(t, kind="stable")))
            report.sorted = True
    return table


# --------------------------------------------------------------------------- publishing

def publish_table(feed, table_name: str, table: pa.Table, speed: float | None = None,
                  progress: bool = False, chunk_rows: int = 65_536,
                  max_gap_s: float | None = None) -> int:
    """Send `table` through `feed`: with speed None as fast as possible, else at the recorded
    pace times `speed` (the rows due in each PACE_WINDOW_S of wall time go out together); a
    pause longer than `max_gap_s` of wall time (overnight, a feed outage) is cut to it.
    Returns the rows published."""
    n = table.num_rows
    if n == 0:
        return 0
    t = table.column("time").to_numpy()
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 (or None for as fast as possible)")
    if speed is None or math.isinf(speed):
        bounds = np.arange(0, n, chunk_rows)
    else:
        # Wall-clock offset (ns) of each row: never backwards, gaps capped at max_gap_s.
        step = np.diff(np.maximum.accumulate(t), prepend=t[0]).astype(np.float64) / speed
        if max_gap_s is not None:
            step = np.minimum(step, max_gap_s * 1e9)
        clock = np.cumsum(step)
        slot = (clock // (PACE_WINDOW_S * 1e9)).astype(np.int64)
        bounds = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]])
        # keep chunks to a sane size within a busy window too
        if len(bounds) and (np.diff(np.r_[bounds, n]) > chunk_rows).any():
            extra = [np.arange(b, e, chunk_rows) for b, e in zip(bounds, np.r_[bounds[1:], n])]
            bounds = np.unique(np.concatenate(extra))
    ends = np.r_[bounds[1:], n]
    cols = {c: table.column(c).combine_chunks() for c in table.column_names}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, unit="rows", unit_scale=True, desc=f"replay {table_name}")
    wall0 = time.monotonic()
    try:
        for lo, hi in zip(bounds.tolist(), ends.tolist()):
            if speed is not None and not math.isinf(speed):
                due = wall0 + clock[lo] / 1e9
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            feed.publish(table_name, {c: a.slice(lo, hi - lo) for c, a in cols.items()})
            if speed is not None:
                feed.flush()                              # due now: do not wait for batch_ms
            if bar is not None:
                bar.update(hi - lo)
    finally:
        if bar is not None:
            bar.close()
    return n


def replay(cfg, table_name: str, data: pa.Table, report: ReplayReport, *, speed: float | None = None,
           feed=None, feed_id: int | None = None, progress: bool = False,
           timeout: float | None = None, max_gap_s: float | None = None) -> ReplayResult:
    """Publish `data` through `feed` (or a new Feed closed at the end, waiting for acks)."""
    from feedhandlers.base import Feed
    own = feed is None
    feed = feed or Feed.from_config(cfg, feed_id)
    t0 = time.monotonic()
    try:
        n = publish_table(feed, table_name, data, speed=speed, progress=progress, max_gap_s=max_gap_s)
        acked = feed.close(timeout) if own else feed.wait_acked(timeout if timeout is not None else 30)
    except BaseException:
        if own:
            feed.close(0)
        raise
    return ReplayResult(report, n, time.monotonic() - t0, acked, feed.stats())


def replay_file(cfg, path: str | Path, table: str, *, speed: float | None = None,
                order: str = "sort", feed=None, feed_id: int | None = None,
                progress: bool = False, timeout: float | None = None,
                max_gap_s: float | None = None) -> ReplayResult:
    """Read `path` (CSV or Parquet), apply the bad-row and time-order policies, replay it."""
    schema = (feed.registry if feed is not None else cfg.registry())[table]
    data, report = read_file(path, schema)
    data = order_rows(data, report, order)
    return replay(cfg, table, data, report, speed=speed, feed=feed, feed_id=feed_id,
                  progress=progress, timeout=timeout, max_gap_s=max_gap_s)


def replay_hdb(cfg, date: str, table: str, *, speed: float | None = None, feed=None,
               feed_id: int | None = None, progress: bool = False,
               timeout: float | None = None, max_gap_s: float | None = None) -> ReplayResult:
    """Replay one HDB date of `table`, always sorted by time."""
    part = hdb_partition(cfg, table, date)
    if not part.is_dir():
        raise ReplayError(f"no HDB partition {part} (is {date!r} a saved date, as YYYY-MM-DD?)")
    schema = (feed.registry if feed is not None else cfg.registry())[table]
    data, report = read_parquet(part, schema)
    data = order_rows(data, report, "sort")
    return replay(cfg, table, data, report, speed=speed, feed=feed, feed_id=feed_id,
                  progress=progress, timeout=timeout, max_gap_s=max_gap_s)
