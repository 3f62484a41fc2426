"""The tick-file reader: for any mix of good, damaged and blank rows, bad_rows="skip" returns
exactly the good rows and counts and names the bad ones, bad_rows="fail" raises naming the first
bad one, and both agree on every good file; each of the other policy options does what it says."""
from __future__ import annotations

import csv
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from schemas.registry import Column, Schema
from schemas.tickfile import TickFileError, read_csv, read_file, read_parquet

# Every column type a table can have, in an order that is not the file's.
TICK = Schema("tick", (Column("time", "timestamp"), Column("sym", "symbol"), Column("price", "float64"),
                       Column("size", "int64"), Column("flag", "bool"), Column("note", "string"),
                       Column("venue", "symbol"), Column("small", "int8")))
MAX = 5
NS_2200 = int(np.datetime64("2200-01-01", "ns").astype(np.int64))
SKIP = dict(bad_rows="skip", max_errors=MAX)
FAIL = dict(bad_rows="fail", max_errors=MAX)


def fmt_time(ns: int, form: str, offset_min: int) -> str:
    if form == "int":
        return str(ns)
    text = str(np.datetime64(ns + (offset_min * 60 * 10**9 if form == "offset" else 0), "ns"))
    if form == "z":
        return text + "Z"
    if form == "offset":
        h, m = divmod(abs(offset_min), 60)
        return f"{text}{'+' if offset_min >= 0 else '-'}{h:02d}:{m:02d}"
    return text.replace("T", " ") if form == "space" else text


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=6)
good_row = st.fixed_dictionaries({
    "time": st.tuples(st.integers(0, NS_2200), st.sampled_from(["int", "naive", "space", "z", "offset"]),
                      st.integers(-12 * 60, 14 * 60)),
    "sym": st.one_of(st.sampled_from(["NA", "NULL", "nan", "A"]), _text.filter(lambda s: s.strip() == s != "")),
    "price": st.floats(allow_nan=False, width=64),
    "size": st.integers(-2**63, 2**63 - 1),
    "flag": st.sampled_from(["true", "False", "T", "f", "1", "0", "YES", "no", "y", "N"]),
    "note": _text,                       # kept as written, spaces and all; "" is a value
    "venue": _text.filter(lambda s: s.strip() == s),
    "small": st.integers(-128, 127),
})
# What damage does to a row: (field, replacement) or a change of the field count.
DAMAGE = {
    "few": None, "many": None, "blank": None,
    "float": ("price", st.sampled_from(["1.2.3", "abc", "--", "1e", "0x10"])),
    "int": ("size", st.sampled_from(["7.5", "99999999999999999999", "9223372036854775808", "1e3", "x"])),
    "int8": ("small", st.sampled_from(["128", "-129", "1000"])),
    "bool": ("flag", st.sampled_from(["maybe", "2", "truee"])),
    "time": ("time", st.sampled_from(["yesterday", "2024-13-45", "2024-02-30T00:00", "12:00", "1.5"])),
    "no_time": ("time", st.sampled_from(["", "  "])),
    "no_sym": ("sym", st.sampled_from(["", "  "])),
    "empty_value": ("price", st.sampled_from(["", " "])),   # a null, or a bad row, by policy
}


@st.composite
def tick_file(draw):
    """(CSV text, the header, per written line: (kind, row dict, its cells))."""
    header = draw(st.permutations(TICK.names))
    extra = draw(st.booleans())
    if extra:
        header.insert(draw(st.integers(0, len(header))), "extra")
    entries = []
    for _ in range(draw(st.integers(0, 25))):
        row = draw(good_row)
        kind = draw(st.sampled_from([None] * 4 + list(DAMAGE)))
        fields = dict(row)
        fields["time"] = fmt_time(*row["time"])
        fields["price"] = repr(row["price"])
        fields["extra"] = "x"
        pad = draw(st.sampled_from(["", " ", "\t "]))     # trimmed, except in note and venue
        fields = {k: v if k in ("note", "venue") else f"{pad}{v}{pad}" for k, v in fields.items()}
        if kind in DAMAGE and DAMAGE[kind] is not None:
            name, values = DAMAGE[kind]
            fields[name] = draw(values)
        cells = [str(fields[h]) for h in header]
        if kind == "few":
            cells = cells[:-1]
        elif kind == "many":
            cells.append("x")
        entries.append((kind, row, cells))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for kind, _, cells in entries:
        if kind == "blank":
            buf.write("\n")
        else:
            w.writerow(cells)
    return buf.getvalue(), header, entries


def expected(entries, empty_values: str):
    """(the good rows as the reader returns them, the line numbers of the bad ones)."""
    rows, bad_lines = [], []
    for line, (kind, row, _) in enumerate(entries, start=2):
        if kind == "blank":
            continue
        if kind is None or (kind == "empty_value" and empty_values == "null"):
            out = dict(row, time=row["time"][0], flag=row["flag"].lower() in ("true", "t", "1", "yes", "y"))
            if kind == "empty_value":
                out["price"] = None
            if out["note"] == "" and empty_values == "null":
                out["note"] = None
            if out["venue"] == "" and empty_values == "null":
                out["venue"] = None
            rows.append(out)
        else:
            bad_lines.append(line)
    return rows, bad_lines


def as_rows(t: pa.Table) -> list[dict]:
    cols = {n: t.column(n).to_pylist() for n in t.column_names}
    cols["time"] = t.column("time").cast(pa.int64()).to_pylist()
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())]


def line_of(message: str) -> int:
    return int(re.search(r"line (\d+):", message).group(1))


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(f=tick_file(), empty_values=st.sampled_from(["null", "bad"]))
def test_skip_returns_exactly_the_good_rows_and_fail_names_the_first_bad(tmp_path_factory, f, empty_values):
    text, header, entries = f
    path = tmp_path_factory.mktemp("csv") / "ticks.csv"
    path.write_text(text, encoding="utf-8")
    good, bad_lines = expected(entries, empty_values)
    policy = dict(extra_columns="ignore", empty_values=empty_values)

    table, report = read_csv(path, TICK, **SKIP, **policy)
    assert table.schema == TICK.arrow
    assert as_rows(table) == good
    assert (report.rows, report.bad_rows) == (len(good), len(bad_lines))
    assert [line_of(e) for e in report.errors] == bad_lines[:MAX]
    assert report.ignored_columns == (["extra"] if "extra" in header else [])

    if bad_lines:
        with pytest.raises(TickFileError) as e:
            read_csv(path, TICK, **FAIL, **policy)
        msg = str(e.value)
        assert msg.startswith(report.errors[0]) and line_of(msg) == bad_lines[0], msg
        assert f"{len(bad_lines)} bad row" in msg, msg
    else:
        strict, strict_report = read_csv(path, TICK, **FAIL, **policy)
        assert strict.equals(table) and strict_report == report

    if "extra" in header:
        with pytest.raises(TickFileError, match=r"unknown columns \['extra'\]"):
            read_csv(path, TICK, **SKIP, extra_columns="error", empty_values=empty_values)



@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(nulls=st.lists(st.lists(st.booleans(), min_size=8, max_size=8), max_size=20),
       empty_values=st.sampled_from(["null", "bad"]))
def test_parquet_nulls_follow_the_policy(tmp_path_factory, nulls, empty_values):
    """A null in time/sym always makes its row bad; elsewhere it is a null ("null"), a bad row
    ("bad", numbers/bools/timestamps) or "" ("bad", text)."""
    n = len(nulls)
    values = {"time": list(range(n)), "sym": [f"S{i}" for i in range(n)], "price": [i / 2 for i in range(n)],
              "size": list(range(n)), "flag": [i % 2 == 0 for i in range(n)], "note": [f"n{i}" for i in range(n)],
              "venue": ["X"] * n, "small": [i % 100 for i in range(n)]}
    cols = {c: [None if nulls[i][k] else v for i, v in enumerate(values[c])] for k, c in enumerate(TICK.names)}
    types = {"time": pa.int64(), "sym": pa.string(), "price": pa.float64(), "size": pa.int64(),
             "flag": pa.bool_(), "note": pa.string(), "venue": pa.dictionary(pa.int8(), pa.string()),
             "small": pa.int16()}
    path = tmp_path_factory.mktemp("pq") / "ticks.parquet"
    pq.write_table(pa.table({c: pa.array(cols[c], types[c]) for c in TICK.names}), path)
    text = ("note", "venue")
    bad = [i for i in range(n) if nulls[i][0] or nulls[i][1]
           or (empty_values == "bad" and any(nulls[i][k] for k, c in enumerate(TICK.names) if c not in text))]
    want = [{c: (cols[c][i] if cols[c][i] is not None or empty_values == "null" or c not in text else "")
             for c in TICK.names} for i in range(n) if i not in bad]

    table, report = read_parquet(path, TICK, **SKIP, extra_columns="error", empty_values=empty_values)
    assert table.schema == TICK.arrow and as_rows(table) == want
    assert report.bad_rows == len(bad)
    assert [int(re.search(r"row (\d+):", e).group(1)) for e in report.errors] == [i + 1 for i in bad][:MAX]
    if bad:
        with pytest.raises(TickFileError, match=rf"row {bad[0] + 1}: column '\w+' is null\. "):
            read_parquet(path, TICK, **FAIL, extra_columns="error", empty_values=empty_values)
    else:
        assert read_parquet(path, TICK, **FAIL, extra_columns="error", empty_values=empty_values)[0].equals(table)


TRADE = Schema("trade", (Column("time", "timestamp"), Column("sym", "symbol"), Column("price", "float64"),
                         Column("size", "int64")))
LENIENT = dict(bad_rows="skip", extra_columns="ignore", empty_values="bad")


def test_file_types_by_suffix_or_content(tmp_path):
    t = pa.table({"time": [1, 2], "sym": ["A", "B"], "price": [1.0, 2.0], "size": [1, 2]})
    pq.write_table(t, tmp_path / "ticks.dat")                       # Parquet by its magic bytes
    assert read_file(tmp_path / "ticks.dat", TRADE, **LENIENT)[1].rows == 2
    (tmp_path / "d").mkdir()                                        # a directory of Parquet files
    pq.write_table(t, tmp_path / "d" / "b.parquet")
    pq.write_table(t.slice(0, 1), tmp_path / "d" / "a.parquet")
    got, _ = read_file(tmp_path / "d", TRADE, **LENIENT)
    assert got.column("sym").to_pylist() == ["A", "A", "B"]
    (tmp_path / "t.tsv").write_text("time\tsym\tprice\tsize\n1\tA,B\t1.5\t2\n")   # tab-separated
    got, _ = read_file(tmp_path / "t.tsv", TRADE, **LENIENT)
    assert got.column("sym").to_pylist() == ["A,B"]
    (tmp_path / "t.dat").write_text("time,sym,price,size\n1,A,1,1\n")
    with pytest.raises(TickFileError, match="unknown file type '.dat'"):
        read_file(tmp_path / "t.dat", TRADE, **LENIENT)
    with pytest.raises(TickFileError, match="no such file"):
        read_file(tmp_path / "nope.parquet", TRADE, **LENIENT)


def test_column_errors_name_what_is_wrong(tmp_path):
    (tmp_path / "a.csv").write_text("\ufeff time , sym ,price,size\n1,A,1,1\n")    # BOM, padded names
    assert read_csv(tmp_path / "a.csv", TRADE, **LENIENT)[1].rows == 1
    (tmp_path / "b.csv").write_text("time,sym,price,size,sym\n1,A,1,1,B\n")
    with pytest.raises(TickFileError, match=r"duplicate column names \['sym'\]"):
        read_csv(tmp_path / "b.csv", TRADE, **LENIENT)
    (tmp_path / "c.csv").write_text("")
    with pytest.raises(TickFileError, match="no header line"):
        read_csv(tmp_path / "c.csv", TRADE, **LENIENT)
    pq.write_table(pa.table({"time": [1], "sym": [5], "price": [1.0], "size": [1]}), tmp_path / "d.parquet")
    with pytest.raises(TickFileError, match=r"column 'sym': expected symbol .*the file has int64"):
        read_parquet(tmp_path / "d.parquet", TRADE, **LENIENT)
    pq.write_table(pa.table({"time": [1], "sym": ["A"], "price": ["x"], "size": [1]}), tmp_path / "e.parquet")
    with pytest.raises(TickFileError, match=r"column 'price': expected float64, the file has string"):
        read_parquet(tmp_path / "e.parquet", TRADE, **LENIENT)
    with pytest.raises(ValueError, match="bad_rows must be one of"):
        read_csv(tmp_path / "a.csv", TRADE, bad_rows="drop", extra_columns="ignore", empty_values="bad")


def test_a_quoted_newline_names_rows_by_data_row(tmp_path):
    (tmp_path / "a.csv").write_text('time,sym,price,size\n1,"A\nB",1,1\n2,C,x,1\n')
    _, r = read_csv(tmp_path / "a.csv", TRADE, **LENIENT)
    assert r.bad_rows == 1 and "data row 2: column 'price': 'x' is not a valid float64" in r.errors[0]


def _joined(*parts):
    return st.tuples(*[st.sampled_from(p) if isinstance(p, list) else p for p in parts]).map("".join)


_sign = ["", "+", "-"]
# Near-misses of every form a value may take, built from parts, so each side of each rule is hit.
_tokens = {
    "time": _joined(["2024-01-02", "2024-13-02", "2024-02-30", "2024-1-2", "1700000000000000000", "17",
                     "0x1f", "-5", ""],
                    ["", "T", "t", " "],
                    ["", "13", "13:30", "13:30:00", "24:00", "13:30:00.5", "13:30:00.123456789",
                     "13:30:00.1234567890", "13:30:00.", "1330"],
                    ["", "Z", "z", "+05", "+0530", "+05:30", "-08:00", "+5", "UTC"]),
    "price": _joined(_sign, ["1", "1.", ".5", "1.5e3", "1e", "1E+5", ".", "e5", "inf", "Infinity", "nan",
                             "NaN", "nan(1)", "nan()", "nan(x_1)", "0x1p3", "1_0", "1,5", ""]),
    "size": _joined(_sign, ["", "0x", "0X"], st.text("0123456789abcdefxg.", max_size=6)),
    "small": _joined(_sign, ["1", "127", "128", "255", "0x7f", "0x80", "0", "1.0", ""]),
}


@settings(max_examples=300)
@given(case=st.sampled_from(sorted(_tokens)).flatmap(lambda c: _tokens[c].map(lambda t: (c, t))))
# forms Arrow's casts accept that a stricter grammar would miss
@example(case=("time", "2024-01-02T13")).via("Arrow: hour-only time")
@example(case=("time", "2024-01-02 13:30+05")).via("Arrow: hour-only offset")
@example(case=("size", "0x1f")).via("Arrow: hex int")
@example(case=("small", "-0x7f")).via("Arrow: hex int")
@example(case=("price", "nan(1)")).via("Arrow: nan payload")
def test_a_value_reads_the_same_whatever_else_is_in_the_file(tmp_path_factory, case):
    """Whether a value is valid, and what it reads as, never depends on the rest of its column:
    a clean column is cast whole, a column with bad values goes value by value, and the two
    agree on every value (after a first value in each form a timestamp column may take)."""
    column, token = case
    good = {"time": "1", "sym": "A", "price": "1.5", "size": "2", "small": "3"}
    schema = Schema("t", tuple(Column(c, t) for c, t in [("time", "timestamp"), ("sym", "symbol"),
                                                           ("price", "float64"), ("size", "int64"),
                                                           ("small", "int8")]))
    d = tmp_path_factory.mktemp("one")
    firsts = ["1", "2024-01-02", "2024-01-02T00:00Z"] if column == "time" else [good[column]]
    for first in firsts:
        lines = [",".join(good), *(",".join(v if c == column else good[c] for c in good)
                                   for v in (first, token))]
        damaged = ",".join("bad!" if c == column else good[c] for c in good)
        (d / "clean.csv").write_text("\n".join(lines) + "\n")
        (d / "mixed.csv").write_text("\n".join(lines + [damaged]) + "\n")
        clean, rc = read_csv(d / "clean.csv", schema, **LENIENT)
        mixed, rm = read_csv(d / "mixed.csv", schema, **LENIENT)
        assert rm.bad_rows == rc.bad_rows + 1
        assert repr(clean.to_pylist()) == repr(mixed.to_pylist()), (first, token)   # repr: nan is nan
