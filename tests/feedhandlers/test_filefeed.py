"""File replay: the bad-row and time-order policies, and files reproduced exactly in the real
tickerplant's log (CSV, Parquet, an HDB date), as fast as possible and paced."""
from __future__ import annotations

import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedhandlers.filefeed import (MAX_ERRORS, ReplayError, order_rows, read_csv, read_file,
                                   replay_file, replay_hdb)
from helpers import start_tp
from schemas.codec import decode
from schemas.registry import load_registry
from tickerplant.log import LogReader, is_control

TRADE = load_registry()["trade"]
QUOTE = load_registry()["quote"]
T0 = 1_700_000_000_000_000_000




def logged_table(cfg, table: str, feed: int) -> pa.Table:
    reg = cfg.registry()
    batches = []
    for path in sorted(cfg.tplog_dir.glob("tp_*.log")):
        for rec in LogReader(path).records():
            if is_control(rec.payload):
                continue
            head, b = decode(bytes(rec.payload), reg)
            if head.table == table and head.feed == feed:
                batches.append(b)
    t = pa.Table.from_batches(batches)
    return pa.table({n: (t.column(n).cast(pa.string()) if pa.types.is_dictionary(t.column(n).type)
                         else t.column(n)) for n in t.column_names})


def as_expected(t: pa.Table) -> pa.Table:
    """The shape the log decodes to: time as timestamp[ns], text as strings."""
    cols = {}
    for n in t.column_names:
        c = t.column(n)
        cols[n] = c.cast(pa.timestamp("ns")) if n == "time" else c
    return pa.table(cols)


def assert_same(a: pa.Table, b: pa.Table):
    assert a.num_rows == b.num_rows, (a.num_rows, b.num_rows)
    for n in a.column_names:
        x, y = a.column(n).to_pylist(), b.column(n).to_pylist()
        assert x == y, f"column {n} differs"


# ------------------------------------------------------------------------------- the policies

def test_bad_rows_are_named_counted_and_skipped(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(
        "time,sym,price,size,venue\n"          # line 1; venue is extra: ignored
        "5,A,1.0,1,X\n"                        # 2 good
        "2,B,2.0\n"                            # 3 too few fields
        "\n"                                   # 4 blank: ignored, not an error
        "3,C,abc,3,X\n"                        # 5 bad float
        "4,D,4.0,4,5,X\n"                      # 6 too many fields
        "2024-01-02T14:30:00Z,E,5,5,X\n"       # 7 good, ISO with zone
        "2024-01-02 14:30:00.5,,5,5,X\n"       # 8 empty sym
        "2024-13-02 14:30:00,F,5,5,X\n"        # 9 impossible date
        "1,G,inf,99999999999999999999,X\n"     # 10 int overflow
        " 7 ,H, 2.5 , 7 ,X\n")                 # 11 good, padded
    t, r = read_csv(p, TRADE)
    assert t.column("sym").to_pylist() == ["A", "E", "H"]
    assert t.column("time").to_pylist() == [5, 1704205800 * 10**9, 7]
    assert t.column("price").to_pylist() == [1.0, 5.0, 2.5]
    assert (r.rows, r.bad_rows, r.ignored_columns) == (3, 6, ["venue"])
    lines = [int(re.search(r"line (\d+):", e).group(1)) for e in r.errors]
    assert lines == [3, 5, 6, 8, 9, 10]
    assert "column 'price': 'abc' is not a valid float64" in r.errors[1]
    assert "expected 5 fields, got 3" in r.errors[0]
    assert "column 'sym': '' is empty" in r.errors[3]


def test_missing_column_is_an_error_and_nothing_is_read(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time,sym,price\n1,A,1.0\n")
    with pytest.raises(ReplayError, match=r"missing columns \['size \(int64\)'\]"):
        read_csv(p, TRADE)
    with pytest.raises(ReplayError, match="no such file"):
        read_file(tmp_path / "nope.csv", TRADE)
    with pytest.raises(ReplayError, match="unknown file type"):
        read_file(p.with_suffix(".xlsx"), TRADE)


def test_out_of_order_policy(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("time,sym,price,size\n1,A,1,0\n3,A,1,1\n2,A,1,2\n3,A,1,3\n0,A,1,4\n5,A,1,5\n")
    t, r = read_csv(p, TRADE)
    kept = order_rows(t, r, "keep")
    assert r.out_of_order == 2 and not r.sorted
    assert kept.column("size").to_pylist() == [0, 1, 2, 3, 4, 5]
    t, r = read_csv(p, TRADE)
    s = order_rows(t, r, "sort")
    assert r.out_of_order == 2 and r.sorted
    assert s.column("size").to_pylist() == [4, 0, 2, 1, 3, 5]      # stable: ties keep file order


_sym = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=5)
_row = st.tuples(st.integers(0, 2**62), _sym,
                 st.floats(allow_nan=False, allow_infinity=False, width=64),
                 st.integers(-(2**62), 2**62))
_damage = st.sampled_from(["few", "many", "float", "int", "sym", "time", "blank", None])


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(_row, _damage), min_size=0, max_size=40))
def test_csv_parsing_property(tmp_path_factory, rows):
    """Any mix of good, damaged and blank lines: exactly the good rows come back, in order and
    exact; each damaged one is counted and named by its line."""
    lines = ["time,sym,price,size"]
    good, bad_lines = [], []
    for (t, s, p, z), dmg in rows:
        fields = [str(t), s, repr(p), str(z)]
        if dmg == "few":
            fields = fields[:3]
        elif dmg == "many":
            fields = fields + ["x"]
        elif dmg == "float":
            fields[2] = "1.2.3"
        elif dmg == "int":
            fields[3] = "7.5"
        elif dmg == "sym":
            fields[1] = ""
        elif dmg == "time":
            fields[0] = "yesterday"
        if dmg == "blank":
            lines.append("")
            continue
        lines.append(",".join(fields))
        if dmg is None:
            good.append((t, s, p, z))
        else:
            bad_lines.append(len(lines))
    p = tmp_path_factory.mktemp("csv") / "t.csv"
    p.write_text("\n".join(lines) + "\n")
    t, r = read_csv(p, TRADE)
    assert r.rows == len(good) and r.bad_rows == len(bad_lines)
    assert list(zip(*[t.column(c).to_pylist() for c in TRADE.names])) == good
    named = [int(re.search(r"line (\d+):", e).group(1)) for e in r.errors]
    assert named == bad_lines[:MAX_ERRORS]


# ------------------------------------------------------------------------------- into the TP

def quotes(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    bid = np.round(rng.uniform(10, 20, n), 2)
    return pa.table({"time": T0 + np.sort(rng.integers(0, 10**9, n)),
                     "sym": rng.choice(["AAA", "BBB", "CCC", "DDD"], n),
                     "bid": bid, "ask": bid + 0.01,
                     "bsize": rng.integers(1, 10, n) * 100, "asize": rng.integers(1, 10, n) * 100})


def test_csv_replayed_exactly_into_the_log(stack, tmp_path):
    cfg, procs = stack
    start_tp(cfg, procs)
    q = quotes(5000)
    import pyarrow.csv as pacsv
    p = tmp_path / "q.csv"
    pacsv.write_csv(q, p)
    # Damage two lines and swap two rows' order: the policies apply, the rest is exact.
    lines = p.read_text().splitlines()
    lines[10] = lines[10].replace(",", ";", 1)
    lines[20] = ",".join(lines[20].split(",")[:-1] + ["big"])
    lines[30], lines[31] = lines[31], lines[30]
    p.write_text("\n".join(lines) + "\n")
    res = replay_file(cfg, p, "quote", feed_id=21, timeout=20)
    assert res.acked and res.report.bad_rows == 2 and res.report.out_of_order == 1
    expect = q.take(pa.array([i for i in range(5000) if i not in (9, 19)]))
    got = logged_table(cfg, "quote", 21)
    assert_same(got, as_expected(expect))


def test_parquet_and_hdb_date_replayed_exactly(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    q = quotes(3000, seed=1)
    # An HDB partition is sym-major (sorted by sym then time), split over two files.
    part = cfg.hdb_dir / "quote" / "date=2023-11-14"
    part.mkdir(parents=True)
    hdb = q.take(pa.array(np.lexsort((q.column("time").to_numpy(), q.column("sym").to_numpy()))))
    hdb = hdb.set_column(0, "time", hdb.column("time").cast(pa.timestamp("ns")))
    pq.write_table(hdb.slice(0, 1000), part / "part-0.parquet")
    pq.write_table(hdb.slice(1000), part / "part-1.parquet")
    res = replay_hdb(cfg, "2023-11-14", "quote", feed_id=22, timeout=20)
    assert res.acked and res.report.sorted and res.report.rows == 3000
    assert_same(logged_table(cfg, "quote", 22), as_expected(q))
    with pytest.raises(ReplayError, match="no HDB partition"):
        replay_hdb(cfg, "2023-11-15", "quote", feed_id=22)
    # A plain Parquet file, with a null making one bad row.
    f = part.parent.parent / "q.parquet"
    price = pa.array([None if i == 7 else v for i, v in enumerate(q.column("bid").to_pylist())])
    pq.write_table(q.set_column(2, "bid", price), f)
    res = replay_file(cfg, f, "quote", feed_id=23, timeout=20)
    assert res.acked and res.report.bad_rows == 1 and "row 8: column 'bid' is null" in res.report.errors[0]
    expect = q.take(pa.array([i for i in range(3000) if i != 7]))
    assert_same(logged_table(cfg, "quote", 23), as_expected(expect))


def test_paced_replay_keeps_the_recorded_pace(stack, tmp_path):
    cfg, procs = stack
    start_tp(cfg, procs)
    n = 200
    t = pa.table({"time": T0 + np.linspace(0, 10**9, n).astype(np.int64),   # 1 s recorded
                  "sym": ["A"] * n, "price": np.ones(n), "size": np.arange(n)})
    p = tmp_path / "t.parquet"
    pq.write_table(t, p)
    t0 = time.monotonic()
    res = replay_file(cfg, p, "trade", speed=4.0, feed_id=24, timeout=10)
    took = time.monotonic() - t0
    assert res.acked and res.published == n
    assert took >= 0.24, f"1 s of data at 4x should take ~0.25 s, took {took:.3f}"
    assert res.stats.sent > 5, "paced rows go out as they fall due, not in one batch"
    assert logged_table(cfg, "trade", 24).column("size").to_pylist() == list(range(n))
