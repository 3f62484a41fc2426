"""Backfill loader: CSV parsing (property-tested), schema errors that name the column and the
value, day splitting by the tickerplant's rule, merge and replace of existing partitions."""
from __future__ import annotations

import csv
import datetime as dt
import io
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hdb_testdata import DAY, make_trades, sorted_by_sym_time

from hdb.eod import list_partitions, save_day
from hdb.load import LoadError, load_file, trading_day
from tickerplant.clock import Clock

T0 = int(np.datetime64("2024-01-01T00:00:00", "ns").astype(np.int64))
NS_DAY = 86_400 * 10**9


def fmt_time(ns: int, form: str, offset_min: int) -> str:
    if form == "int":
        return str(ns)
    if form == "naive":
        return str(np.datetime64(ns, "ns"))
    if form == "z":
        return str(np.datetime64(ns, "ns")) + "Z"
    local = np.datetime64(ns + offset_min * 60 * 10**9, "ns")
    sign = "+" if offset_min >= 0 else "-"
    h, m = divmod(abs(offset_min), 60)
    return f"{local}{sign}{h:02d}:{m:02d}"


row = st.tuples(
    st.integers(T0, T0 + 3 * NS_DAY - 1),
    st.sampled_from(["int", "naive", "z", "offset"]),
    st.integers(-12 * 60, 14 * 60),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=6)
      .filter(lambda s: s.strip() == s and s != ""),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-2**63, 2**63 - 1),
)


def write_csv(path: Path, rows, header=("time", "sym", "price", "size")) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for ns, form, off, sym, price, size in rows:
        vals = {"time": fmt_time(ns, form, off), "sym": sym, "price": repr(price), "size": str(size)}
        w.writerow([vals[h] for h in header])
    path.write_text(buf.getvalue(), encoding="utf-8")


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=40), order=st.permutations(["time", "sym", "price", "size"]))
def test_csv_round_trip(registry, rows, order):
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_csv(d / "in.csv", rows, header=tuple(order))
        out = load_file(d / "hdb", d / "in.csv", "trade", registry, progress=False)
        days = [np.datetime64(ns, "ns").astype("datetime64[D]").astype(dt.date) for ns, *_ in rows]
        assert out == {day: days.count(day) for day in set(days)}
        got = pq.read_table(d / "hdb" / "trade", schema=registry["trade"].arrow)
        want = pa.table({
            "time": pa.array([r[0] for r in rows], pa.timestamp("ns")),
            "sym": pa.array([r[3] for r in rows]),
            "price": pa.array([r[4] for r in rows], pa.float64()),
            "size": pa.array([r[5] for r in rows], pa.int64()),
        })
        assert sorted_by_sym_time(got).equals(sorted_by_sym_time(want))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 30), data=st.data())
def test_a_bad_value_is_named(registry, n, data):
    rows = [(T0 + i, "int", 0, "A", 1.5, 7) for i in range(n)]
    bad_row = data.draw(st.integers(0, n - 1))
    col = data.draw(st.sampled_from(["time", "price", "size"]))
    token = data.draw(st.sampled_from(["x", "1.2.3", "--", "12abc", "2024-13-45"]))
    if col == "size":
        token = data.draw(st.sampled_from(["x", "1.5", "9223372036854775808", "1e3"]))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_csv(d / "in.csv", rows)
        lines = (d / "in.csv").read_text().splitlines()
        cells = lines[bad_row + 1].split(",")
        cells[["time", "sym", "price", "size"].index(col)] = token
        lines[bad_row + 1] = ",".join(cells)
        (d / "in.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(LoadError) as e:
            load_file(d / "hdb", d / "in.csv", "trade", registry, progress=False)
        msg = str(e.value)
        assert f"column {col!r}" in msg and repr(token) in msg and f"row {bad_row + 1}" in msg, msg
        assert not (d / "hdb" / "trade").exists()   # nothing written from a bad file


def test_schema_errors(tmp_path, registry):
    (tmp_path / "a.csv").write_text("time,sym,price\n1,A,2\n")
    with pytest.raises(LoadError, match=r"missing columns \['size \(int64\)'\]"):
        load_file(tmp_path / "hdb", tmp_path / "a.csv", "trade", registry, progress=False)
    (tmp_path / "b.csv").write_text("time,sym,price,size,venue\n1,A,2,3,X\n")
    with pytest.raises(LoadError, match=r"unknown columns \['venue'\]"):
        load_file(tmp_path / "hdb", tmp_path / "b.csv", "trade", registry, progress=False)
    (tmp_path / "c.csv").write_text("time,sym,price,size\n1,,2,3\n")
    with pytest.raises(LoadError, match="column 'sym': 1 empty values"):
        load_file(tmp_path / "hdb", tmp_path / "c.csv", "trade", registry, progress=False)
    (tmp_path / "d.csv").write_text("time,sym,price,size\n1,NA,,3\n")   # NA is a ticker; empty price is null
    assert load_file(tmp_path / "hdb", tmp_path / "d.csv", "trade", registry, progress=False)
    pq.write_table(pa.table({"time": ["x"], "sym": ["A"], "price": [1.0], "size": [1]}), tmp_path / "e.parquet")
    with pytest.raises(LoadError, match="column 'time': expected timestamp"):
        load_file(tmp_path / "hdb", tmp_path / "e.parquet", "trade", registry, progress=False)
    with pytest.raises(LoadError, match="unknown table"):
        load_file(tmp_path / "hdb", tmp_path / "d.csv", "nosuch", registry, progress=False)


def test_parquet_merge_and_replace(tmp_path, registry):
    hdb = tmp_path / "hdb"
    a = make_trades(3000, seed=1)
    save_day(hdb, DAY, {"trade": a}, registry, progress=False)
    # a foreign file: microsecond times, plain string syms, int32 sizes
    b = make_trades(2000, seed=2).cast(pa.schema([("time", pa.timestamp("us")), ("sym", pa.string()),
                                                   ("price", pa.float64()), ("size", pa.int32())]),
                                       safe=False)
    pq.write_table(b, tmp_path / "b.parquet")
    assert load_file(hdb, tmp_path / "b.parquet", "trade", registry, progress=False) == {DAY: 2000}
    got = pq.read_table(hdb / "trade" / f"date={DAY}")
    b_ns = b.cast(pa.schema([("time", pa.timestamp("ns")), ("sym", pa.string()),
                             ("price", pa.float64()), ("size", pa.int64())]))
    both = pa.concat_tables([sorted_by_sym_time(a), b_ns])
    assert sorted_by_sym_time(got).equals(sorted_by_sym_time(both))
    assert load_file(hdb, tmp_path / "b.parquet", "trade", registry, mode="replace", progress=False) == {DAY: 2000}
    assert [p.rows for p in list_partitions(hdb)] == [2000]


def test_trading_day_matches_the_tickerplant_clock():
    rng = np.random.default_rng(5)
    ns = rng.integers(1_600_000_000, 1_800_000_000, 5000) * 10**9 + rng.integers(0, 10**9, 5000)
    for roll, tz in [("17:00", "America/New_York"), ("00:00", "UTC"), ("08:30", "Europe/London")]:
        clock = Clock(roll, tz)
        want = np.array([clock.day(int(x)) for x in ns], dtype="datetime64[D]")
        np.testing.assert_array_equal(trading_day(roll, tz)(ns), want)


def test_load_splits_days_by_the_given_rule(tmp_path, registry):
    # 2024-01-02 22:30 UTC = 17:30 New York: the next trading day with a 17:00 roll
    (tmp_path / "a.csv").write_text("time,sym,price,size\n2024-01-02T21:59:00Z,A,1,1\n2024-01-02T22:30:00Z,A,2,2\n")
    out = load_file(tmp_path / "hdb", tmp_path / "a.csv", "trade", registry,
                    day_of=trading_day("17:00", "America/New_York"), progress=False)
    assert out == {dt.date(2024, 1, 2): 1, dt.date(2024, 1, 3): 1}
