"""The read-only engine: views over history and today, kdb-style helpers checked against plain
pandas, refusals of anything that writes or reads outside the HDB, time and row limits."""
from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hdb_testdata import DAY, make_quotes, make_trades

from hdb.eod import save_day
from hdb.sql import Engine, QueryError

DAY2 = DAY + dt.timedelta(days=1)
TODAY = DAY + dt.timedelta(days=2)


@pytest.fixture(scope="module")
def data():
    return {DAY: (make_trades(20_000, nsyms=10, day=DAY, seed=1), make_quotes(40_000, nsyms=10, day=DAY, seed=2)),
            DAY2: (make_trades(15_000, nsyms=10, day=DAY2, seed=3), make_quotes(30_000, nsyms=10, day=DAY2, seed=4))}


@pytest.fixture(scope="module")
def hdb(tmp_path_factory, data, registry):
    root = tmp_path_factory.mktemp("hdb")
    for day, (t, q) in data.items():
        save_day(root, day, {"trade": t, "quote": q}, registry, progress=False)
    return root


@pytest.fixture(scope="module")
def eng(hdb, registry):
    return Engine(hdb_dir=hdb, registry=registry)


def df(t: pa.Table) -> pd.DataFrame:
    return t.to_pandas()


def pandas_trades(t: pa.Table) -> pd.DataFrame:
    d = df(t)
    d["sym"] = d["sym"].astype(str)
    return d


def test_history_views_and_date_pruning(eng, data):
    got = eng.query("SELECT date, count(*) AS n FROM trade GROUP BY date ORDER BY date").table
    assert got.to_pydict() == {"date": [DAY, DAY2], "n": [20_000, 15_000]}
    plan = eng.query(f"EXPLAIN ANALYZE SELECT count(*) FROM trade WHERE date = DATE '{DAY2}'").table
    text = "\n".join(str(v) for v in plan.column(1).to_pylist())
    assert "15000" in text.replace(",", "") and "35000" not in text.replace(",", "")


def test_one_statement_spans_today_and_history(hdb, data, registry):
    today = make_trades(500, nsyms=10, day=TODAY, seed=9)
    # during EOD the RDB still holds DAY2 while its partition already exists: no double count
    eng = Engine(hdb_dir=hdb, today=lambda: {"trade": today}, day=lambda: TODAY, registry=registry)
    got = eng.query("SELECT date, count(*) AS n FROM trade GROUP BY date ORDER BY date").table
    assert got.to_pydict() == {"date": [DAY, DAY2, TODAY], "n": [20_000, 15_000, 500]}
    joined = eng.query("""
        SELECT t.sym, t.n AS today_n, h.n AS hist_n
        FROM (SELECT sym, count(*) n FROM trade_today GROUP BY sym) t
        JOIN (SELECT sym, count(*) n FROM trade_hist GROUP BY sym) h USING (sym) ORDER BY sym""").table
    assert sum(joined.column("today_n").to_pylist()) == 500
    assert sum(joined.column("hist_n").to_pylist()) == 35_000
    # the EOD window: the RDB's day also on disk counts once
    eng2 = Engine(hdb_dir=hdb, today=lambda: {"trade": data[DAY2][0]}, day=lambda: DAY2, registry=registry)
    n = eng2.query("SELECT count(*) FROM trade").table.column(0)[0].as_py()
    assert n == 35_000


def test_today_snapshot_is_fresh_each_query(registry):
    state = {"trade": make_trades(10, seed=1)}
    eng = Engine(today=lambda: state, day=lambda: TODAY, registry=registry)
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 10
    state["trade"] = make_trades(25, seed=2)
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 25
    assert eng.query("SELECT count(*) FROM quote").table.column(0)[0].as_py() == 0
    assert eng.query("SELECT DISTINCT date FROM trade").table.column(0).to_pylist() == [TODAY]


def test_new_partition_visible_without_restart(tmp_path, registry):
    eng = Engine(hdb_dir=tmp_path, registry=registry)
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 0
    save_day(tmp_path, DAY, {"trade": make_trades(100)}, registry, progress=False)
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 100
    save_day(tmp_path, DAY2, {"trade": make_trades(50, day=DAY2)}, registry, progress=False)
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 150


def test_asof_join_matches_pandas(eng, data):
    trades, quotes = data[DAY]
    got = df(eng.query(f"FROM aj_trades(DATE '{DAY}') ORDER BY sym, time").table)
    t = pandas_trades(trades).sort_values("time")
    q = pandas_trades(quotes).sort_values("time")
    want = pd.merge_asof(t, q, on="time", by="sym", direction="backward")
    want = want.sort_values(["sym", "time"], kind="stable").reset_index(drop=True)
    assert len(got) == len(want) == 20_000
    for c in ["time", "sym", "price", "size", "bid", "ask", "bsize", "asize"]:
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    # the generic form gives the same rows
    gen = df(eng.query(f"SELECT time, sym, bid FROM aj('trade', 'quote', DATE '{DAY}') ORDER BY sym, time").table)
    np.testing.assert_array_equal(gen["bid"].to_numpy(), want["bid"].to_numpy())


def test_ohlcv_bars_match_pandas(eng, data):
    trades = pandas_trades(data[DAY2][0])
    got = df(eng.query(f"FROM ohlcv('trade', INTERVAL 1 MINUTE, DATE '{DAY2}')").table)
    trades["bar"] = trades["time"].dt.floor("1min")
    g = trades.sort_values("time", kind="stable").groupby(["sym", "bar"])
    want = pd.DataFrame({"open": g["price"].first(), "high": g["price"].max(), "low": g["price"].min(),
                         "close": g["price"].last(), "volume": g["size"].sum(), "trades": g.size()}).reset_index()
    got = got.sort_values(["sym", "bar"]).reset_index(drop=True)
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["bar"].to_numpy().astype("datetime64[ns]"), want["bar"].to_numpy())
    for c in ["open", "high", "low", "close", "volume", "trades"]:
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    # xbar on its own is the kdb bar start
    xb = eng.query("SELECT xbar(TIMESTAMP_NS '2024-01-02 13:07:59.999999999', INTERVAL 5 MINUTE) AS b").table
    assert xb.column(0)[0].as_py() == dt.datetime(2024, 1, 2, 13, 5)


def test_vwap_and_last_match_pandas(eng, data):
    trades = pandas_trades(data[DAY][0])
    got = df(eng.query(f"FROM vwap_by_sym('trade', DATE '{DAY}')").table).set_index("sym")
    want = (trades.price * trades["size"]).groupby(trades.sym).sum() / trades["size"].groupby(trades.sym).sum()
    np.testing.assert_allclose(got["vwap"].to_numpy(), want.sort_index().to_numpy(), rtol=1e-12)
    inline = df(eng.query(f"SELECT sym, vwap(price, size) v FROM trade WHERE date = '{DAY}' GROUP BY sym ORDER BY sym").table)
    np.testing.assert_allclose(inline["v"].to_numpy(), want.sort_index().to_numpy(), rtol=1e-12)
    quotes = pandas_trades(data[DAY][1])
    last = df(eng.query(f"FROM last_by_sym('quote', DATE '{DAY}') ORDER BY sym").table)
    wantq = quotes.sort_values("time", kind="stable").groupby("sym").last().reset_index()
    for c in ["sym", "time", "bid", "ask"]:
        np.testing.assert_array_equal(last[c].to_numpy(), wantq[c].to_numpy(), err_msg=c)


REFUSED = [
    "COPY (SELECT 1) TO '{hdb}/stolen.csv'",
    "COPY trade TO '/tmp/tickstack_stolen.parquet'",
    "SELECT * FROM read_parquet('/etc/*.parquet')",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('{hdb}/../../../../etc/hostname')",
    "ATTACH '/tmp/tickstack_x.duckdb' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "INSERT INTO trade VALUES (1)",
    "SET enable_external_access = true",
    "SET allowed_directories = ['/']",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE '/tmp/tickstack_export'",
    "SELECT 1; COPY (SELECT 1) TO '/tmp/tickstack_stolen2.csv'",
    "SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/tickstack_stolen3.csv''')",
    "DROP VIEW trade",
    "CALL checkpoint()",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_refused_with_a_clear_error(eng, hdb, sql):
    before = sorted(p.name for p in hdb.rglob("*"))
    with pytest.raises(QueryError) as e:
        eng.query(sql.format(hdb=hdb))
    msg = str(e.value)
    assert "read-only" in msg or "SELECT" in msg, msg
    assert sorted(p.name for p in hdb.rglob("*")) == before
    # the engine still answers, still locked
    assert eng.query("SELECT count(*) FROM trade").table.column(0)[0].as_py() == 35_000
    assert eng.query("SELECT current_setting('enable_external_access')").table.column(0)[0].as_py() is False


def test_rdb_engine_reads_no_files(hdb, registry):
    eng = Engine(today=lambda: {}, registry=registry)
    with pytest.raises(QueryError, match="refused"):
        eng.query(f"SELECT * FROM read_parquet('{hdb}/trade/*/*.parquet')")


def test_time_limit(hdb, registry):
    eng = Engine(hdb_dir=hdb, timeout_s=0.3, registry=registry)
    t0 = time.monotonic()
    with pytest.raises(QueryError, match="time limit of 0.3s"):
        eng.query("SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = 7")
    assert time.monotonic() - t0 < 10
    assert eng.query("SELECT 42").table.column(0)[0].as_py() == 42


def test_row_limit(hdb, registry):
    eng = Engine(hdb_dir=hdb, max_rows=1000, registry=registry)
    r = eng.query("SELECT * FROM trade")
    assert r.table.num_rows == 1000 and r.truncated
    r = eng.query("SELECT * FROM trade LIMIT 1000")
    assert r.table.num_rows == 1000 and not r.truncated
    r = eng.query("SELECT * FROM range(1000000)")
    assert r.table.num_rows == 1000 and r.truncated


def test_bad_sql_is_a_query_error(eng):
    for sql in ["", "   ", "SELEC 1", "SELECT * FROM nosuch", "SELECT 1/'x'"]:
        with pytest.raises(QueryError):
            eng.query(sql)


def test_asof_join_never_planned_as_a_nested_loop(eng):
    """DuckDB's ~1-row estimate for a hive-filtered scan would make every ASOF join a nested
    loop (1000x slower on a real day); the engine turns that off for every thread's cursor."""
    import threading
    seen = []
    t = threading.Thread(target=lambda: seen.append(
        eng.query("SELECT current_setting('asof_loop_join_threshold') AS v").table.column(0)[0].as_py()))
    t.start()
    t.join()
    assert seen == [0]
    plan = eng.query(f"EXPLAIN FROM aj_trades(DATE '{DAY}')").table.column(1)[0].as_py()
    assert "ASOF" in plan.upper() and "NESTED_LOOP" not in plan.upper().replace(" ", "_")


def test_today_with_per_chunk_dictionaries(registry):
    """The RDB's chunks each carry their own sym dictionary; SQL sees the values."""
    a = pa.DictionaryArray.from_arrays(pa.array([0, 1, 0], pa.int32()), pa.array(["X", "Y"]))
    b = pa.DictionaryArray.from_arrays(pa.array([1, 0], pa.int32()), pa.array(["Z", "X"]))
    t = pa.table({"time": pa.chunked_array([pa.array([1, 2, 3], pa.timestamp("ns")), pa.array([4, 5], pa.timestamp("ns"))]),
                  "sym": pa.chunked_array([a, b]), "price": pa.chunked_array([[1.0, 2, 3], [4.0, 5]]),
                  "size": pa.chunked_array([[1, 2, 3], [4, 5]])})
    eng = Engine(today=lambda: {"trade": t}, registry=registry)
    got = eng.query("SELECT sym, count(*) AS n FROM trade GROUP BY sym ORDER BY sym").table
    assert got.to_pydict() == {"sym": ["X", "Y", "Z"], "n": [3, 1, 1]}
    eng.close()


def test_a_cut_result_warns_every_time_unless_the_caller_opts_in(hdb, registry):
    """A cut result cannot pass unnoticed: a TruncatedWarning at every query (not only the
    first at a call site, Python's default), unless the caller says it reads `truncated`."""
    import warnings

    from hdb.sql import TruncatedWarning
    eng = Engine(hdb_dir=hdb, max_rows=100, registry=registry)
    try:
        for _ in range(2):
            with pytest.warns(TruncatedWarning, match="cut at 100 rows"):
                assert eng.query("SELECT * FROM range(1000)").truncated
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            assert eng.query("SELECT * FROM range(1000)", allow_truncated=True).truncated
            assert not eng.query("SELECT * FROM range(100)").truncated
        assert not [w for w in seen if issubclass(w.category, TruncatedWarning)]
    finally:
        eng.close()


def test_the_query_client_warns_of_a_cut_result(hdb, registry):
    import warnings

    from hdb.server import QueryServer, query
    from hdb.sql import TruncatedWarning
    eng = Engine(hdb_dir=hdb, max_rows=100, registry=registry)
    srv = QueryServer("tcp://127.0.0.1:*", eng, workers=1).start()
    try:
        with pytest.warns(TruncatedWarning, match=f"cut at 100 rows, the row limit of the server at {srv.endpoint}"):
            r = query(srv.endpoint, "SELECT * FROM range(1000)", timeout=30)
        assert r.truncated and r.table.num_rows == 100
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("default")
            assert query(srv.endpoint, "SELECT * FROM range(1000)", timeout=30, allow_truncated=True).truncated
        assert not [w for w in seen if issubclass(w.category, TruncatedWarning)
                    and "server at" in str(w.message)]
    finally:
        srv.stop()
        eng.close()
