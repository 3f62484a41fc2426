"""The as-of join a user runs (SQL `aj_trades` / `aj` through the Engine, and hdb.asof) gives
DuckDB's ASOF LEFT JOIN rows on random days: random syms, many quotes and trades at the same
nanosecond, syms with trades and no quotes. Where several quotes share the matched nanosecond
DuckDB takes any one of them; ours must take the one that arrived last (kdb's aj)."""
from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hdb.asof import AsofError, asof_join, join_day
from hdb.eod import save_day
from hdb.sql import Engine

DAY = dt.date(2024, 1, 2)
BASE = int(np.datetime64(DAY, "ns").astype(np.int64)) + 14 * 3600 * 10**9
SYMS = ["AA", "B", "CCC", "D", "EE"]


@st.composite
def days(draw):
    """A day of trades and quotes in arrival (time) order. Row ids ride in `price` (trades) and
    `bid` (quotes) so every output row can be traced to its inputs."""
    nsyms = draw(st.integers(1, len(SYMS)))
    span = draw(st.sampled_from([3, 20, 1000]))          # small spans: many equal times
    nt, nq = draw(st.integers(1, 60)), draw(st.integers(1, 120))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    tt = np.sort(BASE + rng.integers(0, span, nt))
    qt = np.sort(BASE + rng.integers(0, span, nq))
    # quotes may lack some syms entirely
    qsyms = SYMS[:nsyms] if draw(st.booleans()) else SYMS[:max(1, nsyms - 1)]
    trades = pa.table({
        "time": pa.array(tt, pa.timestamp("ns")),
        "sym": pa.array([SYMS[i] for i in rng.integers(0, nsyms, nt)]).dictionary_encode(),
        "price": np.arange(nt, dtype=np.float64),
        "size": rng.integers(1, 5, nt)})
    quotes = pa.table({
        "time": pa.array(qt, pa.timestamp("ns")),
        "sym": pa.array([qsyms[i] for i in rng.integers(0, len(qsyms), nq)]).dictionary_encode(),
        "bid": np.arange(nq, dtype=np.float64),
        "ask": np.arange(nq, dtype=np.float64) + 0.5,
        "bsize": rng.integers(1, 5, nq), "asize": rng.integers(1, 5, nq)})
    return trades, quotes


def duckdb_asof(hdb: Path) -> dict:
    """DuckDB's own ASOF LEFT JOIN over the same files, keyed by trade id."""
    t = f"read_parquet('{hdb}/trade/date=*/*.parquet', hive_partitioning = true)"
    q = f"read_parquet('{hdb}/quote/date=*/*.parquet', hive_partitioning = true)"
    con = duckdb.connect(config={"asof_loop_join_threshold": 0})
    rows = con.sql(f"SELECT l.*, r.bid, r.ask, r.bsize, r.asize FROM {t} l ASOF LEFT JOIN {q} r "
                   f"ON l.sym = r.sym AND l.date = r.date AND l.time >= r.time").to_arrow_table()
    con.close()
    return {r["price"]: r for r in rows.to_pylist()}


def check_against_duckdb(got: pa.Table, want: dict, trades: pa.Table, quotes: pa.Table) -> None:
    assert got.num_rows == len(want) == trades.num_rows
    qsym = quotes.column("sym").cast(pa.string()).to_pylist()
    qtime = quotes.column("time").cast(pa.int64()).to_pylist()
    last_at = {}                           # (sym, time) -> the quote that arrived last
    for i, key in enumerate(zip(qsym, qtime)):
        last_at[key] = i
    for row in got.to_pylist():
        ref = want[row["price"]]
        assert {k: row[k] for k in ("time", "sym", "size", "date")} == \
            {k: ref[k] for k in ("time", "sym", "size", "date")}
        if ref["bid"] is None:
            assert (row["bid"], row["ask"], row["bsize"], row["asize"]) == (None,) * 4
            continue
        mine, theirs = int(row["bid"]), int(ref["bid"])
        # the same nanosecond of the same sym as DuckDB's pick, and the last quote at it
        assert (qsym[mine], qtime[mine]) == (qsym[theirs], qtime[theirs])
        assert mine == last_at[(qsym[mine], qtime[mine])]
        if mine == theirs:
            assert (row["ask"], row["bsize"], row["asize"]) == (ref["ask"], ref["bsize"], ref["asize"])
        else:   # DuckDB took another quote at that nanosecond: ours is that one's values' peer
            assert (row["ask"], row["bsize"], row["asize"]) == (
                quotes.column("ask")[mine].as_py(), quotes.column("bsize")[mine].as_py(),
                quotes.column("asize")[mine].as_py())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days(), st.sampled_from([0, 10**9]))
def test_aj_trades_through_the_engine_gives_duckdbs_asof_rows(registry, day, sym_search_rows):
    """Both ways of matching (a search per sym; one search over composite keys) are checked."""
    import hdb.asof as asof
    trades, quotes = day
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(asof, "SYM_SEARCH_ROWS", sym_search_rows)
        hdb = Path(d)
        save_day(hdb, DAY, {"trade": trades, "quote": quotes}, registry, progress=False)
        want = duckdb_asof(hdb)
        eng = Engine(hdb_dir=hdb, registry=registry)
        try:
            got = eng.query(f"FROM aj_trades(DATE '{DAY}')").table
            # the same join inside a bigger statement, and the generic aj()
            inside = eng.query(f"SELECT * FROM aj_trades(DATE '{DAY}') t WHERE t.size > 0 "
                               f"ORDER BY price").table
            generic = eng.query(f"SELECT time, sym, price, size, date, bid, ask, bsize, asize "
                                f"FROM aj('trade', 'quote', '{DAY}') ORDER BY price").table
        finally:
            eng.close()
        check_against_duckdb(got, want, trades, quotes)
        check_against_duckdb(inside, want, trades, quotes)
        check_against_duckdb(generic, want, trades, quotes)
        assert got.schema == inside.schema     # typed as DuckDB types its own results
        direct = join_day(hdb, DAY, columns=["bid", "ask", "bsize", "asize"])
        check_against_duckdb(direct, want, trades, quotes)


def test_unsorted_input_is_refused_with_what_to_do():
    t = pa.table({"time": pa.array([2, 1], pa.timestamp("ns")), "sym": ["A", "A"]})
    q = pa.table({"time": pa.array([1], pa.timestamp("ns")), "sym": ["A"], "bid": [1.0]})
    with pytest.raises(AsofError, match="left table is not sorted by sym then time.*sort_by"):
        asof_join(t, q)
    with pytest.raises(AsofError, match="right table is not sorted"):
        asof_join(q.select(["time", "sym"]), pa.table({"time": pa.array([1, 1], pa.timestamp("ns")),
                                                       "sym": ["B", "A"], "bid": [1.0, 2.0]}))


def test_a_day_without_quotes_falls_back_to_the_macro(tmp_path, registry):
    from hdb_testdata import make_trades
    save_day(tmp_path, DAY, {"trade": make_trades(100)}, registry, progress=False)
    eng = Engine(hdb_dir=tmp_path, registry=registry)
    got = eng.query(f"FROM aj_trades(DATE '{DAY}')").table
    eng.close()
    assert got.num_rows == 100 and got.column("bid").null_count == 100


def test_the_engine_joins_literal_calls_itself_and_leaves_the_rest_to_duckdb(tmp_path, registry,
                                                                              monkeypatch):
    import hdb.sql as sql
    from hdb_testdata import make_quotes, make_trades
    save_day(tmp_path, DAY, {"trade": make_trades(500), "quote": make_quotes(800)}, registry,
             progress=False)
    calls = []
    real = sql.join_day
    monkeypatch.setattr(sql, "join_day", lambda *a, **k: calls.append(a) or real(*a, **k))
    eng = Engine(hdb_dir=tmp_path, registry=registry)
    try:
        whole = eng.query(f"FROM aj_trades(DATE '{DAY}')").table
        assert len(calls) == 1
        n = eng.query(f"SELECT count(*) AS n, count(bid) AS b FROM aj('trade', 'quote', "
                      f"DATE '{DAY}') x").table.to_pylist()[0]
        assert len(calls) == 2 and n["n"] == 500
        # a computed or NULL day is the macro's (DuckDB's ASOF join), with the same rows
        macro = eng.query(f"FROM aj_trades(DATE '{DAY}' + INTERVAL 0 DAY) ORDER BY sym, time").table
        every = eng.query("FROM aj_trades(NULL)").table
        assert len(calls) == 2
        assert n["b"] == 500 - macro.column("bid").null_count
        assert every.num_rows == 500
        ordered = whole.sort_by([("sym", "ascending"), ("time", "ascending")])
        assert ordered.select(["time", "sym", "bid", "ask"]).equals(
            macro.select(["time", "sym", "bid", "ask"]).cast(ordered.select(["time", "sym", "bid", "ask"]).schema))
    finally:
        eng.close()
