"""Read a tick file: a CSV or Parquet file of one table's columns, as that table.

The one reader behind the HDB backfill (`hdb load`) and the file feed (`feed replay`,
`publish`). It returns an Arrow table in the schema's shape (`Schema.arrow`: time as
timestamp[ns] UTC, symbols dictionary-encoded) and a `ReadReport`. Each caller states its policy
with three keyword arguments, none of which has a default:

* `bad_rows`: "skip" leaves a bad row out and counts it; the report words the first
  `max_errors` of them, each naming its line (CSV) or row (Parquet). "fail" raises
  `TickFileError` naming the first bad row and counting all of them; nothing is returned.
* `extra_columns`: "error" makes a column the table does not have an error; "ignore" does not
  read it and lists it in the report.
* `empty_values`: "null" reads an empty CSV field, or a Parquet null, in a value column as a
  null. "bad" makes it a bad row, except in text columns (symbol, string), where it reads "".
  `time` and `sym` are never empty: an empty one always makes its row bad.

Files
-----
* CSV (.csv, .txt; .tsv is tab-separated): the first line names the columns (any order;
  surrounding spaces and a UTF-8 BOM are ignored). Every column of the table must be there
  (else `TickFileError` naming the missing ones with their types, nothing read); a name twice
  is an error. Blank lines (and lines of only empty fields) are ignored. A line with the wrong
  number of fields is a bad row. Lines are numbered from 1 = the header; when a quoted value
  holds a newline, rows are named by their data row instead.
* Values: surrounding whitespace is trimmed, except in text columns other than `sym`, which
  are kept as written. A value is valid exactly when Arrow's cast to its column's type takes
  it: a timestamp is integer nanoseconds since the epoch (UTC) or ISO 8601
  `YYYY-MM-DD[( |T)HH[:MM[:SS[.fffffffff]]]]`, naive = UTC, or with `Z` / `+hh[[:]mm]`;
  integers are decimal or 0x hex (overflow is a bad value); floats include inf, infinity and
  nan; bools are true/false, t/f, yes/no, y/n, 1/0 (any case). Only an empty field is empty:
  "NA", "NULL" and "nan" are values (tickers, or a float nan).
* Parquet (.parquet, .pq, any file starting with the Parquet magic, or a directory of
  *.parquet files read in name order): a column must have a type that holds its schema type
  (timestamp: any timestamp unit/zone, or integer ns; text: string or dictionary of string;
  numbers and bools: any type Arrow casts to it safely), else `TickFileError`. A null is an
  empty value (see `empty_values`); rows are numbered from 1 in each file.

`TickFileError` (a ValueError) means the file does not fit the table: no such file, unknown
type, unreadable, missing/unknown/duplicate columns, a column of the wrong type, or with
bad_rows="fail" a bad row. Its message names the file and what to fix.

Parsing is whole-column Arrow compute, never a Python loop per row: a clean column is one
cast; a column with bad values is sorted out by regexes (a superset of what the cast takes)
and casts, with bisection for the few that pass the regex but not the cast (overflow, 2024-02-30).
Only rows already known bad cost Python, to word their error.
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.registry import Column, Schema

BadRows = Literal["skip", "fail"]
ExtraColumns = Literal["error", "ignore"]
EmptyValues = Literal["null", "bad"]

MAX_ERRORS = 20                 # error messages kept in a report; every bad row is counted
REQUIRED = ("time", "sym")      # never empty, whatever the policy
CSV_SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
TIME_FORMS = ("integer nanoseconds since the epoch (UTC) or ISO 8601 text such as "
              "2024-01-02T09:30:00.123456789 (naive = UTC) or with Z / +hh:mm")

_TEXT = ("symbol", "string")
# The forms Arrow's casts accept, or a superset: a value is valid exactly when Arrow casts it, so
# the whole-column cast (fast path) and regex + cast (the path for columns with bad values)
# agree. Overflow and impossible dates pass the regex and are caught by the cast.
_INT = r"^[+-]?(\d+|0x[0-9a-f]+)$"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^[+-]?(inf|infinity|nan(\(\w*\))?)$"
_BOOL_TRUE = ["true", "t", "1", "yes", "y"]
_BOOL_FALSE = ["false", "f", "0", "no", "n"]
_ISO = r"^\d{4}-\d{2}-\d{2}([t ]\d{2}(:\d{2}(:\d{2}(\.\d{1,9})?)?)?)?"
_ISO_NAIVE = _ISO + "$"
_ISO_ZONED = _ISO + r"(z|[+-]\d{2}(:?\d{2})?)$"
_TIME_CASTS = ((_INT, pa.int64()), (_ISO_NAIVE, pa.timestamp("ns")), (_ISO_ZONED, pa.timestamp("ns", "UTC")))
_TS = pa.timestamp("ns")


class TickFileError(ValueError):
    """The file does not fit the table; the message names the file, what is wrong and what to fix."""


@dataclass
class ReadReport:
    source: str
    rows: int = 0                   # good rows returned
    bad_rows: int = 0               # rows left out (bad_rows="skip")
    errors: list[str] = field(default_factory=list)   # the first max_errors bad rows, in file order
    ignored_columns: list[str] = field(default_factory=list)   # extra_columns="ignore"


def read_file(path: str | Path, schema: Schema, *, bad_rows: BadRows, extra_columns: ExtraColumns,
              empty_values: EmptyValues, max_errors: int = MAX_ERRORS) -> tuple[pa.Table, ReadReport]:
    """A CSV or Parquet file (or a directory of Parquet files) as `schema`'s table; see the
    module docstring for the policies and the forms accepted."""
    p = Path(path)
    policy = dict(bad_rows=bad_rows, extra_columns=extra_columns, empty_values=empty_values,
                  max_errors=max_errors)
    if p.is_dir() or p.suffix.lower() in PARQUET_SUFFIXES or _parquet_magic(p):
        return read_parquet(p, schema, **policy)
    if p.suffix.lower() in CSV_SUFFIXES:
        return read_csv(p, schema, **policy)
    raise TickFileError(f"{p}: unknown file type {p.suffix!r}; a tick file is CSV "
                        f"({', '.join(CSV_SUFFIXES)}) or Parquet ({', '.join(PARQUET_SUFFIXES)}, "
                        f"or a directory of them)")


def _parquet_magic(p: Path) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


def _check_policy(bad_rows: str, extra_columns: str, empty_values: str) -> None:
    for name, value, allowed in (("bad_rows", bad_rows, BadRows), ("extra_columns", extra_columns, ExtraColumns),
                                 ("empty_values", empty_values, EmptyValues)):
        if value not in get_args(allowed):
            raise ValueError(f"{name} must be one of {list(get_args(allowed))}, not {value!r}")


def check_columns(names: list[str], schema: Schema, source, extra_columns: ExtraColumns) -> list[str]:
    """The file's columns against the table's: missing ones, duplicates and (extra_columns=
    "error") unknown ones raise; returns the unknown ones (to be ignored)."""
    missing = [f"{c.name} ({c.type})" for c in schema.columns if c.name not in names]
    extra = [n for n in names if n not in schema.names]
    twice = sorted({n for n in names if names.count(n) > 1})
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if extra and extra_columns == "error":
        parts.append(f"unknown columns {extra}")
    if twice:
        parts.append(f"duplicate column names {twice}")
    if parts:
        raise TickFileError(f"{source}: {'; '.join(parts)}; table {schema.name!r} has columns "
                            + ", ".join(f"{c.name} ({c.type})" for c in schema.columns)
                            + f" and the file has {names}")
    return extra


# --------------------------------------------------------------------------- bad rows

class _Damage:
    """The bad rows of one read: counted by kind for the summary, worded (first max_errors, in
    file order) for the report, and raised as one error under bad_rows="fail"."""

    def __init__(self, max_errors: int):
        self.max_errors = max_errors
        self.rows = 0
        self.kinds: Counter[str] = Counter()
        self.hints: dict[str, None] = {}
        self.worded: list[tuple[tuple, str]] = []     # (file-order key, message)

    def add_rows(self, kind: str, worded: list[tuple[tuple, str]]) -> None:
        """Whole bad rows (not values): `kind` is their summary item, {n} their count."""
        self.rows += len(worded)
        self.kinds[kind] += len(worded)
        self.worded.extend(worded)

    def add_values(self, masks: list[tuple[str, str, np.ndarray]], schema: Schema,
                   word: Callable[[int, str, str], tuple[tuple, str]]) -> np.ndarray:
        """`masks` is (column, kind, its bad rows) in schema order; each bad row is worded
        once, by its first bad column. Returns every bad row."""
        bad = np.zeros(len(masks[0][2]), bool)
        for name, kind, mask in masks:
            bad |= mask
            self.kinds[_kind_text(schema.column(name), kind)] += int(mask.sum())
            self.hints.update(dict.fromkeys(_hints(schema.column(name), kind)))
        rows = np.flatnonzero(bad)
        self.rows += len(rows)
        for i in rows[: self.max_errors].tolist():
            name, kind = next((c, k) for c, k, m in masks if m[i])
            self.worded.append(word(i, name, kind))
        return bad

    def errors(self) -> list[str]:
        return [text for _, text in sorted(self.worded, key=lambda x: x[0])[: self.max_errors]]

    def fail(self) -> TickFileError:
        """The first bad row, what all of them are, and what to do."""
        rows = f"{self.rows} bad row{'s' if self.rows != 1 else ''} in all"
        kinds = ", ".join(k.format(n=n) for k, n in self.kinds.items())
        hints = "".join(f" {h}." for h in self.hints)
        return TickFileError(f"{self.errors()[0]}. {rows}: {kinds}. Nothing was read.{hints} "
                             "Fix the file and retry.")


def _kind_text(col: Column, kind: str) -> str:
    """A summary item; {n} is the count."""
    what = {"empty": "empty values", "null": "nulls", "invalid": f"invalid {col.type} values"}[kind]
    return f"column {col.name!r}: {{n}} {what}"


def _hints(col: Column, kind: str) -> list[str]:
    if col.name in REQUIRED and kind in ("empty", "null"):
        return ["Every row needs a time and a sym"]
    if kind == "invalid" and col.type == "timestamp":
        return [f"A timestamp is {TIME_FORMS}"]
    if kind == "invalid" and col.type == "bool":
        return [f"A bool is one of {_BOOL_TRUE + _BOOL_FALSE}"]
    return []


def _finish(tables: list[pa.Table], schema: Schema, report: ReadReport, damage: _Damage,
            bad_rows: BadRows) -> tuple[pa.Table, ReadReport]:
    """The good rows of every part as one table in the schema's shape, and the report."""
    report.errors = damage.errors()
    report.bad_rows = damage.rows
    if damage.rows and bad_rows == "fail":
        raise damage.fail()
    t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    cols = []
    for c in schema.columns:
        a = t.column(c.name).combine_chunks()
        cols.append(pc.dictionary_encode(a).cast(c.arrow) if c.type == "symbol" else a)
    out = pa.Table.from_arrays(cols, schema=schema.arrow)
    report.rows = out.num_rows
    return out, report


# --------------------------------------------------------------------------- CSV

def _header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as f:
        line = f.readline()
    try:
        first = line.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TickFileError(f"{path}: the header line is not UTF-8 text ({e}); is this a CSV file?") from None
    if not first.strip():
        raise TickFileError(f"{path}: empty file or no header line; the first line must name the columns")
    return [c.strip() for c in next(csv.reader(io.StringIO(first), delimiter=delimiter))]


def _np(a: pa.Array) -> np.ndarray:
    return a.to_numpy(zero_copy_only=False)


def _match(s: pa.Array, pattern: str) -> np.ndarray:
    return _np(pc.fill_null(pc.match_substring_regex(s, pattern, ignore_case=True), False))


def _cast_all(s: pa.Array, typ: pa.DataType) -> pa.Array | None:
    """The whole column cast at once (the fast path), or None if any value does not cast."""
    try:
        return pc.cast(s, typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


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
        ok = ok.copy()
        ok[_cast_failures(s, typ)] = False
        return pc.cast(pc.if_else(pa.array(ok), s, pa.scalar(filler)), typ), ok


def _parse(raw: pa.Array, col: Column, nullable: bool) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """A column of CSV text as its schema type: (values, which are valid, which are empty).
    Text columns are kept as written, except `sym`, which is trimmed; everything else is
    trimmed. With `nullable`, empty fields are nulls (and valid); otherwise they are invalid,
    except in text columns other than `sym`, where "" is a value."""
    n = len(raw)
    s = raw if col.type in _TEXT and col.name != "sym" else pc.utf8_trim_whitespace(raw)
    is_empty = pc.equal(pc.utf8_length(s), 0)
    any_empty = bool(pc.any(is_empty).as_py())
    empty = _np(is_empty) if any_empty else np.zeros(n, bool)
    if nullable and any_empty:
        s = pc.if_else(is_empty, pa.scalar(None, pa.string()), s)
    if col.type in _TEXT:
        return s, (~empty if col.name == "sym" else np.ones(n, bool)), empty
    if col.type == "bool":
        low = pc.utf8_lower(s)
        t = _np(pc.fill_null(pc.is_in(low, pa.array(_BOOL_TRUE)), False))
        ok = t | _np(pc.fill_null(pc.is_in(low, pa.array(_BOOL_FALSE)), False))
        values = pa.array(t)
    elif col.type == "timestamp":
        values, ok = _parse_time(s)
    else:
        values, ok = _parse_number(s, col.arrow)
    if nullable and any_empty:
        values = pc.if_else(is_empty, pa.scalar(None, values.type), values)
        ok = ok | empty
    return values, ok, empty


def _parse_number(s: pa.Array, typ: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    fast = _cast_all(s, typ)
    if fast is not None:
        return fast, np.ones(len(s), bool)
    return _cast_checked(s, _match(s, _INT if pa.types.is_integer(typ) else _FLOAT), typ, "0")


def _parse_time(s: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Each value in any of the three forms. A column all in the form of its first value is
    one cast (a failed Arrow cast costs as much as ten good ones, so the form is not guessed
    by trial); otherwise each form's rows are found by regex and cast apart."""
    first = (s.drop_null() if s.null_count else s)[:1].to_pylist()
    if first:
        form = next((typ for pattern, typ in _TIME_CASTS if re.match(pattern, first[0], re.IGNORECASE)), None)
        fast = _cast_all(s, form) if form is not None else None
        if fast is not None:
            return fast.cast(_TS), np.ones(len(s), bool)     # zoned to naive keeps the UTC instant
    iv, is_int = _cast_checked(s, _match(s, _INT), pa.int64(), "0")
    nv, naive = _cast_checked(s, _match(s, _ISO_NAIVE), _TS, "1970-01-01")
    zv, zoned = _cast_checked(s, _match(s, _ISO_ZONED), pa.timestamp("ns", "UTC"), "1970-01-01T00:00:00Z")
    ns = np.where(is_int, _np(iv), np.where(naive, _np(nv.cast(pa.int64())), _np(zv.cast(pa.int64()))))
    return pa.array(ns.view("datetime64[ns]"), _TS), is_int | naive | zoned


class _Lines:
    """Maps rows of a CSV parse back to file line numbers (1 = the header), computed only when
    there is an error to word. Rows with the wrong field count never reach the table, so the
    kept rows' lines are every line after the header minus those (found by exact whole-line
    search: identical texts are all bad, so which copy is which does not matter)."""

    def __init__(self, path: Path, invalid_texts: list[str], nrows: int):
        self.path = path
        self._invalid_texts = invalid_texts
        self._nrows = nrows
        self._built = False

    def _build(self) -> None:
        data = self.path.read_bytes()
        nl = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
        nlines = len(nl) + (0 if data.endswith(b"\n") else 1)
        self._found: dict[str, list[int]] = {}
        for text, want in Counter(self._invalid_texts).items():
            needle, pos, lines = text.encode(), 0, []
            while len(lines) < want:
                i = data.find(needle, pos)
                if i < 0:
                    break
                end = i + len(needle)
                if (i == 0 or data[i - 1] == 10) and (end == len(data) or data[end] in (10, 13)):
                    lines.append(int(np.searchsorted(nl, i)) + 1)
                pos = i + 1
            self._found[text] = lines
        bad = np.array(sorted(x for v in self._found.values() for x in v), dtype=np.int64)
        kept = np.setdiff1d(np.arange(2, nlines + 1), bad)
        # Quoted values with newlines break the one-line-per-row picture: fall back to row numbers.
        self.kept = kept if len(kept) == self._nrows else None
        self._built = True

    def row(self, i: int) -> tuple[int, str]:
        """(sort key, wording) of kept row i: its line and data row, or only its data row."""
        if not self._built:
            self._build()
        if self.kept is not None:
            return int(self.kept[i]), f"line {self.kept[i]}"
        return i + 2, f"data row {i + 1}"

    def invalid(self) -> list[int | None]:
        """The line of each invalid text, in the order given (None: not found as a whole line)."""
        if not self._built:
            self._build()
        left = {t: list(v) for t, v in self._found.items()}
        return [left[t].pop(0) if left[t] else None for t in self._invalid_texts]


def read_csv(path: str | Path, schema: Schema, *, bad_rows: BadRows, extra_columns: ExtraColumns,
             empty_values: EmptyValues, max_errors: int = MAX_ERRORS) -> tuple[pa.Table, ReadReport]:
    """A CSV file as `schema`'s table (good rows, in file order) and its report."""
    _check_policy(bad_rows, extra_columns, empty_values)
    path = Path(path)
    if not path.is_file():
        raise TickFileError(f"{path}: no such file")
    delimiter = CSV_SUFFIXES.get(path.suffix.lower(), ",")
    names = _header(path, delimiter)
    report = ReadReport(str(path), ignored_columns=check_columns(names, schema, path, extra_columns))
    invalid: list[tuple[int, int, str]] = []

    def on_invalid(row):
        invalid.append((row.expected_columns, row.actual_columns, row.text))
        return "skip"

    try:
        raw = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid,
                                             ignore_empty_lines=False),
            # every field as text, none null: emptiness is decided below, by the policy
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in names},
                                                 include_columns=schema.names, strings_can_be_null=False))
    except pa.ArrowInvalid as e:
        raise TickFileError(f"{path}: not readable as CSV: {e}") from None
    n = raw.num_rows
    lines = _Lines(path, [t for *_, t in invalid], n)
    damage = _Damage(max_errors)
    if invalid:
        worded = []
        for (exp, act, text), line in zip(invalid, lines.invalid()):
            where = f"line {line}: " if line is not None else ""
            worded.append(((line or 1 << 62,), f"{path}: {where}expected {exp} fields, got {act}: {text[:80]!r}"))
        damage.add_rows("{n} lines with the wrong number of fields", worded)
    raws = {c: raw.column(c).combine_chunks() for c in schema.names}
    # Blank lines parse as rows of empty fields: ignored, not errors.
    blank = pa.array(np.ones(n, bool))
    for a in raws.values():
        blank = pc.and_(blank, pc.equal(pc.utf8_length(a), 0))
    blank = _np(blank)
    cols: dict[str, pa.Array] = {}
    masks: list[tuple[str, str, np.ndarray]] = []
    for col in schema.columns:
        values, ok, empty = _parse(raws[col.name], col, empty_values == "null" and col.name not in REQUIRED)
        cols[col.name] = values
        bad = ~ok & ~blank
        for kind, mask in (("invalid", bad & ~empty), ("empty", bad & empty)):
            if mask.any():
                masks.append((col.name, kind, mask))

    def word(i: int, name: str, kind: str) -> tuple[tuple, str]:
        value = raws[name][i].as_py()
        why = "is empty" if kind == "empty" else f"is not a valid {schema.column(name).type}"
        line, where = lines.row(i)
        row = f" (data row {i + 1})" if where.startswith("line") else ""
        return (line,), f"{path}: {where}: column {name!r}: {value[:40]!r} {why}{row}"

    bad = damage.add_values(masks, schema, word) if masks else np.zeros(n, bool)
    keep = ~bad & ~blank
    table = pa.table({c: cols[c] if keep.all() else cols[c].filter(pa.array(keep)) for c in schema.names})
    return _finish([table], schema, report, damage, bad_rows)


# --------------------------------------------------------------------------- Parquet

def _parquet_column(arr: pa.ChunkedArray, col: Column, source) -> pa.Array:
    """One Parquet column as its schema type (text as plain strings), or TickFileError."""
    arr = arr.combine_chunks()
    have = arr.type
    if pa.types.is_dictionary(have) and col.type in _TEXT:
        arr, have = arr.dictionary_decode(), have.value_type
    text = pa.types.is_string(have) or pa.types.is_large_string(have)
    if col.type in _TEXT and not text:
        fits = "a string column"
    elif col.type == "timestamp" and not (pa.types.is_timestamp(have) or pa.types.is_integer(have)):
        fits = "a timestamp or integer ns column"
    else:
        try:
            if col.type in _TEXT:
                return arr.cast(pa.string())
            if col.type == "timestamp" and pa.types.is_timestamp(have):
                return arr.cast(pa.timestamp(have.unit)).cast(_TS)   # tz-aware to naive keeps the UTC instant
            if col.type == "timestamp":
                return arr.cast(pa.int64()).cast(_TS)
            return arr.cast(col.arrow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise TickFileError(f"{source}: column {col.name!r}: expected {col.type}, the file has "
                                f"{arr.type} that does not fit: {e}") from None
    raise TickFileError(f"{source}: column {col.name!r}: expected {col.type} ({fits}), "
                        f"the file has {arr.type}")


def read_parquet(path: str | Path, schema: Schema, *, bad_rows: BadRows, extra_columns: ExtraColumns,
                 empty_values: EmptyValues, max_errors: int = MAX_ERRORS) -> tuple[pa.Table, ReadReport]:
    """A Parquet file, or a directory of *.parquet files, as `schema`'s table and its report."""
    _check_policy(bad_rows, extra_columns, empty_values)
    path = Path(path)
    if not path.exists():
        raise TickFileError(f"{path}: no such file")
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise TickFileError(f"{path}: no *.parquet files")
    report = ReadReport(str(path))
    damage = _Damage(max_errors)
    tables = []
    for k, f in enumerate(files):
        try:
            names = pq.read_schema(f).names
            extra = check_columns(names, schema, f, extra_columns)
            t = pq.read_table(f, columns=schema.names)
        except (pa.ArrowInvalid, OSError) as e:
            raise TickFileError(f"{f}: not a readable Parquet file: {e}") from None
        report.ignored_columns = sorted(set(report.ignored_columns) | set(extra))
        cols, masks = {}, []
        for col in schema.columns:
            a = _parquet_column(t.column(col.name), col, f)
            if a.null_count:
                if col.name not in REQUIRED and empty_values == "null":
                    pass
                elif col.name not in REQUIRED and col.type in _TEXT:
                    a = pc.fill_null(a, "")
                else:
                    masks.append((col.name, "null", _np(a.is_null())))
            cols[col.name] = a

        def word(i: int, name: str, kind: str, f=f, k=k) -> tuple[tuple, str]:
            return (k, i), f"{f}: row {i + 1}: column {name!r} is null"

        t = pa.table(cols)
        if masks:
            bad = damage.add_values(masks, schema, word)
            t = t.filter(pa.array(~bad))
        tables.append(t)
    return _finish(tables, schema, report, damage, bad_rows)
