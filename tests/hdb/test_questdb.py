"""QuestDB sink: the ILP it produces (checked with the questdb client's own Buffer), the DDL and
dedup key, tie numbering, retries and reporting when QuestDB is down. Live round trips run only
with QUESTDB_ADDR="host:http_port,pg_port" (e.g. 127.0.0.1:9000,8812); no server is faked."""
from __future__ import annotations

import re

import os
import time
import uuid

import pyarrow as pa
import pytest
from hdb_testdata import DAY, make_trades

from hdb.config import QuestDBSettings
from hdb.eod import list_partitions, save_day
from hdb.questdb import TIE, ddl, fill_buffer, new_buffer, questdb_query, sink_day, with_ties
from hdb.sql import QueryError
from schemas.registry import load_registry

NS = 1_704_200_000_000_000_000


def small() -> pa.Table:
    return pa.table({
        "time": pa.array([NS + 5, NS + 5, NS + 3, NS + 5, NS + 5], pa.timestamp("ns")),
        "sym": pa.array(["B", "B", "A", "A", "B"]).dictionary_encode(),
        "price": [1.5, 2.0, 3.25, 4.0, 2.0],
        "size": [10, 20, 30, 40, 20],
    })


def test_ties_number_same_sym_same_time_rows(registry):
    t = with_ties(small(), registry["trade"])
    assert t.column("sym").cast(pa.string()).to_pylist() == ["A", "A", "B", "B", "B"]
    assert t.column(TIE).to_pylist() == [0, 0, 0, 1, 2]
    # deterministic: the same day gives the same keys, so a resend upserts the same rows
    assert with_ties(small(), registry["trade"]).equals(t)


def test_ilp_lines(registry):
    buf = new_buffer(protocol_version=1)
    fill_buffer(buf, registry["trade"], with_ties(small(), registry["trade"]))
    assert bytes(buf).decode().splitlines() == [
        f"trade,sym=A price=3.25,size=30i,{TIE}=0i {NS + 3}",
        f"trade,sym=A price=4.0,size=40i,{TIE}=0i {NS + 5}",
        f"trade,sym=B price=1.5,size=10i,{TIE}=0i {NS + 5}",
        f"trade,sym=B price=2.0,size=20i,{TIE}=1i {NS + 5}",
        f"trade,sym=B price=2.0,size=20i,{TIE}=2i {NS + 5}",
    ]


def test_ilp_for_every_symbol_column(registry):
    values = {"time": pa.array([NS], pa.timestamp("ns")), "sym": ["X"], "id": ["o1"],
              "side": ["buy"], "qty": [5], "price": [9.5], "type": ["limit"],
              "status": ["new"], "account": ["acc 1"]}
    blank = {"symbol": "", "string": "", "int64": 0, "float64": 0.0}   # the columns not looked at
    order = pa.table({c.name: values[c.name] if c.name in values else [blank[c.type]]
                      for c in registry["order"].columns})
    buf = new_buffer(protocol_version=1)
    fill_buffer(buf, registry["order"], with_ties(order, registry["order"]))
    line = bytes(buf).decode().strip()
    tags, ts = re.split(r"(?<!\\) ", line, maxsplit=1)[0], line.split(" ")[-1]   # an escaped space is in a value
    assert tags.startswith("order,") and "sym=X" in tags and "side=buy" in tags and "account=acc\\ 1" in tags
    assert 'id="o1"' in line and "qty=5i" in line and ts == str(NS)


def test_ddl(registry):
    assert ddl(registry["trade"]) == (
        'CREATE TABLE IF NOT EXISTS "trade" ("time" TIMESTAMP_NS, "sym" SYMBOL, "price" DOUBLE, '
        '"size" LONG, "tie_n" INT) TIMESTAMP("time") PARTITION BY DAY WAL '
        'DEDUP UPSERT KEYS("time", "sym", "tie_n")')
    assert ddl(registry["order"], "TIMESTAMP").startswith('CREATE TABLE IF NOT EXISTS "order" ("time" TIMESTAMP, ')


def test_down_questdb_is_retried_reported_and_costs_no_parquet(tmp_path, registry):
    day_tables = {"trade": make_trades(1000)}
    assert save_day(tmp_path, DAY, day_tables, registry, progress=False) == {"trade": 1000}
    waits = []
    dead = QuestDBSettings(enabled=True, ilp="http::addr=127.0.0.1:1;",
                           pg="host=127.0.0.1 port=1 user=admin password=quest dbname=qdb connect_timeout=2",
                           retries=2, backoff_s=0.5)
    rep = sink_day(dead, DAY, day_tables, registry, sleep=waits.append)
    assert not rep.ok and "trade" in rep.errors and rep.attempts == {"trade": 3}
    assert waits == [0.5, 1.0]
    assert [(p.table, p.rows) for p in list_partitions(tmp_path)] == [("trade", 1000)]


def test_query_refuses_writes_and_says_when_down():
    for sql in ["DROP TABLE trade", "insert into trade values(1)", "SELECT 1; DROP TABLE trade",
                "  alter table trade drop partition list '2024-01-02'", "TRUNCATE TABLE trade"]:
        with pytest.raises(QueryError, match="read-only"):
            questdb_query("host=127.0.0.1 port=1", sql)
    with pytest.raises(QueryError, match="cannot reach QuestDB"):
        questdb_query("host=127.0.0.1 port=1 user=admin password=quest dbname=qdb connect_timeout=2", "SELECT 1")


ADDR = os.environ.get("QUESTDB_ADDR")
live = pytest.mark.skipif(not ADDR, reason="no QuestDB: set QUESTDB_ADDR=host:http_port,pg_port "
                                            "(e.g. 127.0.0.1:9000,8812) to run the live round trips")


@pytest.fixture
def live_setup(tmp_path):
    http, pg_port = ADDR.split(",")
    host = http.split(":")[0]
    name = f"tickstack_test_{uuid.uuid4().hex[:8]}"
    (tmp_path / "t.toml").write_text(f'[{name}]\ntime = "timestamp"\nsym = "symbol"\n'
                                     f'price = "float64"\nsize = "int64"\n')
    reg = load_registry(tmp_path / "t.toml")
    s = QuestDBSettings(enabled=True, ilp=f"http::addr={http};",
                        pg=f"host={host} port={pg_port} user=admin password=quest dbname=qdb",
                        retries=1, backoff_s=0.2)
    yield s, reg, name
    import psycopg
    with psycopg.connect(s.pg, autocommit=True) as con:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


def wait_rows(pg: str, name: str, n: int, timeout: float = 30) -> int:
    """WAL tables apply asynchronously: poll until `n` rows are visible."""
    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        try:
            got = questdb_query(pg, f'SELECT count() AS n FROM "{name}"').column("n")[0].as_py()
        except QueryError:
            got = -1
        if got == n:
            return got
        time.sleep(0.2)
    return got


@live
def test_live_round_trip_keeps_ties_and_is_idempotent(live_setup):
    s, reg, name = live_setup
    day = small()
    rep = sink_day(s, DAY, {name: day}, reg)
    assert rep.ok, rep.errors
    assert wait_rows(s.pg, name, 5) == 5           # the three B rows at one ns all survive
    assert sink_day(s, DAY, {name: day}, reg).ok   # resend: upserts, no duplicates
    time.sleep(2)
    assert wait_rows(s.pg, name, 5) == 5
    got = questdb_query(s.pg, f'SELECT sym, price, size, tie_n FROM "{name}" ORDER BY sym, time, tie_n')
    assert got.column("tie_n").to_pylist() == [0, 0, 0, 1, 2]
    assert got.column("price").to_pylist() == [3.25, 4.0, 1.5, 2.0, 2.0]


@live
def test_live_bulk(live_setup):
    s, reg, name = live_setup
    t = make_trades(200_000, nsyms=50)
    rep = sink_day(s, DAY, {name: t}, reg)
    assert rep.ok and rep.rows == {name: 200_000}
    assert wait_rows(s.pg, name, 200_000, timeout=60) == 200_000
    vwap = questdb_query(s.pg, f'SELECT sum(price * size) / sum(size) AS v FROM "{name}"').column("v")[0].as_py()
    want = (pa.compute.sum(pa.compute.multiply(t["price"], t["size"])).as_py() / pa.compute.sum(t["size"]).as_py())
    assert abs(vwap - want) < 1e-9 * abs(want)


def test_ilp_path_runs_through_the_real_sender_and_fails_cleanly(registry, monkeypatch):
    """With the DDL step skipped and the protocol version pinned (so the client does not
    probe the server first), the rows go through Sender.from_conf/new_buffer/dataframe/flush
    for real; nothing listens, so the flush fails and the client's own error is reported."""
    import hdb.questdb as qdb
    monkeypatch.setattr(qdb, "create_table", lambda *a: None)
    s = QuestDBSettings(enabled=True, ilp="http::addr=127.0.0.1:1;retry_timeout=0;protocol_version=2;",
                        retries=1, backoff_s=0.0, chunk_rows=2)
    rep = sink_day(s, DAY, {"trade": small()}, registry, sleep=lambda _: None)
    assert not rep.ok and rep.attempts == {"trade": 2}
    assert "Could not flush buffer" in rep.errors["trade"], rep.errors
