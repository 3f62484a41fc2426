"""Replay a file into the tickerplant: a CSV or Parquet file of one table's columns, or an HDB
date (`<home>/hdb/<table>/date=YYYY-MM-DD/*.parquet`), at the recorded pace, at x speed, or as
fast as the TP takes it. Rows go through a `feedhandlers.base.Feed` (batches, acks, resend).

Input policy (stated, tested)
-----------------------------
* Columns. The file must have every column of the table (else `ReplayError` naming the missing
  ones, nothing is sent); extra columns are ignored and listed in the report.
* Bad rows. A CSV row with the wrong number of fields, or a value that is not of its column's
  type (`time`: integer ns since the epoch, or ISO-8601 `YYYY-MM-DD[ HH:MM[:SS[.fffffffff]]]`,
  naive = UTC, or with `Z`/`+hh:mm`; ints; floats incl. inf/nan; bools true/false/1/0; `sym`
  non-empty), is skipped and counted; the report keeps a clear message naming its line number
  (1 = the header) for the first `MAX_ERRORS` of them. Good rows are all kept. Blank lines are
  ignored. A null in a Parquet file is a bad row likewise (named by its row number, 1-based).
* Time order. The whole file is read, then by default ("sort") its rows are stably sorted by
  time (equal times keep file order) and the number of rows that were out of order is reported.
  With order="keep" rows are published in file order as they are, counted the same way; pacing
  never goes backwards (a row earlier than one before it goes out at once). An HDB date is
  always sorted: partitions are stored sym-major.
* Times are published as recorded (not re-stamped); the TP files messages by its own clock.
* Pace. speed=None: as fast as the TP acks; speed=x: recorded gaps / x, rows due in the same
  5 ms go out as one batch; `max_gap_s` (CLI `--max-gap`, default 10 s) cuts longer pauses.

Parsing is whole-column Arrow compute (regex checks and casts), never a Python loop per row;
only rows already known bad cost Python (to word their error).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.registry import Schema

log = logging.getLogger(__name__)

MAX_ERRORS = 20           # error messages kept in a report; every bad row is counted
PACE_WINDOW_S = 0.005     # paced replay publishes the rows due in each 5 ms of wall time at once

_INT = r"^[+-]?\d{1,19}$"       # overflow is caught by the cast (bisection)
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(inf|infinity|nan)$"
_BOOL_TRUE = ["true", "t", "1", "yes", "y"]
_BOOL_FALSE = ["false", "f", "0", "no", "n"]
_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?"
_ISO_NAIVE = _ISO + "$"
_ISO_ZONED = _ISO + r"(Z|[+-]\d{2}:?\d{2})$"
_NUMERIC = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
            "int32": pa.int32(), "int16": pa.int16(), "int8": pa.int8()}


class ReplayError(ValueError):
    """The input cannot be replayed at all (missing file, columns, partition)."""


@dataclass
class ReadReport:
    source: str
    rows: int = 0                   # good rows kept
    bad_rows: int = 0               # rows skipped
    errors: list[str] = field(default_factory=list)   # the first MAX_ERRORS, each naming its row
    out_of_order: int = 0           # rows whose time is before an earlier row's
    sorted: bool = False            # rows were reordered by time
    ignored_columns: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(text)


@dataclass
class ReplayResult:
    report: ReadReport
    published: int                  # rows handed to the feed
    seconds: float
    acked: bool                     # every message confirmed logged by the TP
    stats: object = None            # the feed's FeedStats


# --------------------------------------------------------------------------- reading

def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
    if not first.strip():
        raise ReplayError(f"{path}: empty file or no header line; the first line must name the columns")
    return [c.strip() for c in next(csv.reader(io.StringIO(first)))]


def _check_columns(names: list[str], schema: Schema, source) -> list[str]:
    missing = [c for c in schema.names if c not in names]
    if missing:
        raise ReplayError(f"{source}: missing columns {missing} for table {schema.name!r} "
                          f"(has {names}; needs {schema.names})")
    return [c for c in names if c not in schema.names]


def _cast_failures(arr: pa.Array, typ: pa.DataType, base: int = 0) -> list[int]:
    """Indices whose cast fails, found by bisection: O(bad * log n) vector casts, no row loop."""
    try:
        pc.cast(arr, typ)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(arr) == 1:
            return [base]
        h = len(arr) // 2
        return _cast_failures(arr[:h], typ, base) + _cast_failures(arr[h:], typ, base + h)


def _cast_checked(s: pa.Array, ok: np.ndarray, typ: pa.DataType, filler: str) -> tuple[pa.Array, np.ndarray]:
    """Cast the strings where `ok`, with a harmless filler elsewhere; rows that pass the regex
    but still fail the cast (overflow, 2024-13-45) are found by bisection and marked bad."""
    s = pc.if_else(pa.array(ok), s, pa.scalar(filler))
    try:
        return pc.cast(s, typ), ok
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = _cast_failures(s, typ)
        ok = ok.copy()
        ok[bad] = False
        return pc.cast(pc.if_else(pa.array(ok), s, pa.scalar(filler)), typ), ok


def _match(s: pa.Array, pattern: str) -> np.ndarray:
    return pc.match_substring_regex(s, pattern, ignore_case=True).to_numpy(zero_copy_only=False)


def _convert(raw: pa.Array, col) -> tuple[pa.Array, np.ndarray]:
    """A string column as its schema type, and which rows were valid."""
    s = pc.utf8_trim_whitespace(raw)
    if col.type in ("symbol", "string"):
        ok = np.ones(len(s), bool)
        if col.name == "sym":
            ok = pc.not_equal(pc.utf8_length(s), 0).to_numpy(zero_copy_only=False)
        return (s if col.name == "sym" else raw), ok
    if col.type in _NUMERIC:
        typ = _NUMERIC[col.type]
        pattern = _INT if pa.types.is_integer(typ) else _FLOAT
        return _cast_checked(s, _match(s, pattern), typ, "0")
    if col.type == "bool":
        low = pc.utf8_lower(s)
        t = pc.is_in(low, pa.array(_BOOL_TRUE)).to_numpy(zero_copy_only=False)
        f = pc.is_in(low, pa.array(_BOOL_FALSE)).to_numpy(zero_copy_only=False)
        return pa.array(t), t | f
    if col.type == "timestamp":
        is_int = _match(s, r"^[+-]?\d{1,19}$")
        naive = _match(s, _ISO_NAIVE)
        zoned = _match(s, _ISO_ZONED)
        iv, is_int = _cast_checked(s, is_int, pa.int64(), "0")
        nv, naive = _cast_checked(s, naive, pa.timestamp("ns"), "1970-01-01")
        zv, zoned = _cast_checked(s, zoned, pa.timestamp("ns", "UTC"), "1970-01-01T00:00:00Z")
        out = np.where(is_int, iv.to_numpy(), np.where(
            naive, nv.cast(pa.int64()).to_numpy(), zv.cast(pa.int64()).to_numpy()))
        return pa.array(out, pa.int64()), is_int | naive | zoned
    raise ReplayError(f"column {col.name!r}: type {col.type} not supported in CSV")


class _Lines:
    """Maps rows of a CSV parse back to file line numbers (1 = the header), computed only when
    there is an error to word. Rows with the wrong field count never reach the table, so the
    kept rows' lines are every line after the header minus those (found by exact whole-line
    search: identical texts are all bad, so which copy is which does not matter)."""

    def __init__(self, path: Path, invalid_texts: list[str], nrows: int):
        self.path = path
        self._invalid_texts = invalid_texts
        self._nrows = nrows
        self._done = False

    def _build(self) -> None:
        data = self.path.read_bytes()
        nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        nlines = len(nl) + (0 if data.endswith(b"\n") else 1)
        bad_lines: list[int] = []
        for text in sorted(set(self._invalid_texts)):
            needle = text.encode()
            want = self._invalid_texts.count(text)
            pos = 0
            while want:
                i = data.find(needle, pos)
                if i < 0:
                    break
                end = i + len(needle)
                if (i == 0 or data[i - 1] == 10) and (end == len(data) or data[end] in (10, 13)):
                    bad_lines.append(int(np.searchsorted(nl, i)) + 1)
                    want -= 1
                pos = i + 1
        self.invalid_lines = sorted(bad_lines)
        kept = np.setdiff1d(np.arange(2, nlines + 1), np.array(bad_lines, dtype=np.int64))
        # Quoted values with newlines break the one-line-per-row picture: fall back to row numbers.
        self.kept = kept if len(kept) == self._nrows else None
        self._done = True

    def row(self, i: int) -> tuple[int, str]:
        """(line number or data row, its wording) of kept row i."""
        if not self._done:
            self._build()
        if self.kept is not None:
            return int(self.kept[i]), f"line {self.kept[i]}"
        return i + 2, f"data row {i + 1}"

    def invalid(self) -> list[int]:
        if not self._done:
            self._build()
        return self.invalid_lines


def read_csv(path: str | Path, schema: Schema) -> tuple[pa.Table, ReadReport]:
    """The good rows of a CSV file as a table of the schema's columns (time int64 ns, text as
    strings), in file order, and the report of what was skipped and why."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    names = _header(path)
    report = ReadReport(str(path))
    report.ignored_columns = _check_columns(names, schema, path)
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row):
        invalid.append((row.expected_columns, row.actual_columns, row.text))
        return "skip"

    try:
        raw = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding="utf-8"),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in names},
                include_columns=schema.names, strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        raise ReplayError(f"{path}: not readable as CSV: {e}") from None
    n = raw.num_rows
    lines = _Lines(path, [t for *_, t in invalid], n)
    # Blank lines parse as rows of empty fields: ignored, not errors.
    blank = np.ones(n, bool)
    for c in schema.names:
        blank &= pc.equal(pc.utf8_length(raw.column(c)), 0).to_numpy(zero_copy_only=False)
    good = ~blank
    typed = {}
    bad_cols: dict[str, np.ndarray] = {}
    for col in schema.columns:
        arr = raw.column(col.name).combine_chunks()
        typed[col.name], ok = _convert(arr, col)
        if not ok[good].all():
            bad_cols[col.name] = ~ok & good
            good &= ok
    report.bad_rows = len(invalid) + int((~good & ~blank).sum())
    found: list[tuple[int, str]] = []          # (sort key, message), worded in line order
    if invalid:
        for (exp, act, text), line in zip(invalid, lines.invalid()):
            found.append((line, f"{path}: line {line}: expected {exp} fields, got {act}: {text[:80]!r}"))
    if bad_cols:
        for i in np.flatnonzero(~good & ~blank)[: MAX_ERRORS].tolist():
            name = next(c for c, m in bad_cols.items() if m[i])
            col = schema.column(name)
            value = raw.column(name)[i].as_py()
            why = "is empty" if col.name == "sym" and not value.strip() else f"is not a valid {col.type}"
            key, where = lines.row(i)
            found.append((key, f"{path}: {where}: column {name!r}: {value[:40]!r} {why}"))
    for _, text in sorted(found, key=lambda x: x[0]):
        report.error(text)
    if report.bad_rows:
        log.warning("%s: skipped %d bad rows; first: %s", path, report.bad_rows,
                    report.errors[0] if report.errors else "")
    mask = pa.array(good)
    table = pa.table({c: typed[c].filter(mask) for c in schema.names})
    report.rows = table.num_rows
    return table, report


def _arrow_column(arr: pa.ChunkedArray, col, source) -> pa.Array:
    arr = arr.combine_chunks()
    if col.type in ("symbol", "string"):
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        return arr.cast(pa.string())
    if col.type == "timestamp":
        if pa.types.is_timestamp(arr.type):
            return arr.cast(pa.timestamp("ns", arr.type.tz)).cast(pa.int64())
        if pa.types.is_integer(arr.type):
            return arr.cast(pa.int64())
        raise ReplayError(f"{source}: column 'time' is {arr.type}; need a timestamp or int64 ns")
    target = pa.bool_() if col.type == "bool" else _NUMERIC[col.type]
    try:
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ReplayError(f"{source}: column {col.name!r} ({arr.type}) does not fit {col.type}: {e}") from None


def read_parquet(path: str | Path, schema: Schema) -> tuple[pa.Table, ReadReport]:
    """The rows of a Parquet file (or a directory of them) as the schema's columns; rows with a
    null value are bad rows (text columns other than `sym` read nulls as "")."""
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path}: no such file")
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise ReplayError(f"{path}: no *.parquet files")
    report = ReadReport(str(path))
    tables = []
    for f in files:
        try:
            names = pq.read_schema(f).names
        except (pa.ArrowInvalid, OSError) as e:
            raise ReplayError(f"{f}: not a Parquet file: {e}") from None
        report.ignored_columns = sorted(set(report.ignored_columns) | set(_check_columns(names, schema, f)))
        t = pq.read_table(f, columns=schema.names)
        cols = {}
        good = np.ones(t.num_rows, bool)
        for col in schema.columns:
            a = _arrow_column(t.column(col.name), col, f)
            if a.null_count:
                if col.type in ("symbol", "string") and col.name != "sym":
                    a = pc.fill_null(a, "")
                else:
                    nulls = a.is_null().to_numpy(zero_copy_only=False)
                    for i in np.flatnonzero(nulls & good)[: MAX_ERRORS]:
                        report.error(f"{f}: row {i + 1}: column {col.name!r} is null")
                    good &= ~nulls
            cols[col.name] = a
        report.bad_rows += int((~good).sum())
        t = pa.table(cols)
        tables.append(t.filter(pa.array(good)) if not good.all() else t)
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    report.rows = table.num_rows
    return table, report


def read_file(path: str | Path, schema: Schema) -> tuple[pa.Table, ReadReport]:
    """CSV (.csv, .txt, .csv.gz not supported) or Parquet (.parquet or a directory), by suffix."""
    p = Path(path)
    if p.is_dir() or p.suffix.lower() in (".parquet", ".pq"):
        return read_parquet(p, schema)
    if p.suffix.lower() in (".csv", ".txt", ".tsv"):
        return read_csv(p, schema)
    raise ReplayError(f"{p}: unknown file type {p.suffix!r}; use .csv or .parquet")


def hdb_partition(cfg, table: str, date: str) -> Path:
    return cfg.hdb_dir / table / f"date={date}"


def order_rows(table: pa.Table, report: ReadReport, order: str = "sort") -> pa.Table:
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


def replay(cfg, table_name: str, data: pa.Table, report: ReadReport, *, speed: float | None = None,
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
