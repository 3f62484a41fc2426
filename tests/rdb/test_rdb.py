"""The RDB as a real process: today's rows, exactly once, answerable in SQL, across restarts."""
from __future__ import annotations

import signal
import threading
import time

import pytest

from hdb.server import query
from hdb.sql import QueryError
from helpers import send, tp_status, trades, wait_for
from tickerplant.protocol import control as request


def start(cfg, procs, *names):
    for name in names:
        procs.start({"tp": "tickerplant"}.get(name, name), name=name)
        if name == "tp":
            wait_for(lambda: tp_status(cfg), what="tp")
        else:
            wait_for(lambda: _try(lambda: query(cfg.rdb.query, "select 1", timeout=0.5)), what="rdb")


def _try(f):
    try:
        return f() or True
    except Exception:
        return None


def counts(cfg) -> tuple[int, int, int]:
    r = query(cfg.rdb.query, "select count(*) n, count(distinct size) d, coalesce(sum(size), 0) s from trade",
              timeout=10).table.to_pylist()[0]
    return r["n"], r["d"], r["s"]


def test_n_ticks_published_n_rows_in_the_rdb(stack):
    cfg, procs = stack
    start(cfg, procs, "tp", "rdb")
    n = send(cfg, "trade", trades(400, 25))
    wait_for(lambda: counts(cfg)[0] >= n, what="rows in the rdb")
    time.sleep(0.3)
    assert counts(cfg) == (n, n, n * (n - 1) // 2)
    by_sym = query(cfg.rdb.query, "select sym, count(*) c from trade group by sym order by sym").table.to_pylist()
    assert [r["sym"] for r in by_sym] == ["AAPL", "IBM", "MSFT"] and sum(r["c"] for r in by_sym) == n


def test_kill9_of_the_rdb_mid_stream_then_restart_recovers_exactly(stack):
    cfg, procs = stack
    start(cfg, procs, "tp", "rdb")
    total = []
    sender = threading.Thread(target=lambda: total.append(send(cfg, "trade", trades(3000, 10))))
    sender.start()
    wait_for(lambda: counts(cfg)[0] > 2000, what="some rows before the kill")
    procs.kill("rdb", signal.SIGKILL)
    start(cfg, procs, "rdb")  # replays the log, then goes live
    sender.join()
    wait_for(lambda: counts(cfg)[0] >= total[0], what="all rows after the restart")
    time.sleep(0.3)
    n = total[0]
    assert counts(cfg) == (n, n, n * (n - 1) // 2)  # exact: nothing lost, nothing twice


def _paced(batches, every: int, pause: float):
    """The batches, with a pause after every `every` of them: ingest that lasts long enough for a
    query to land in the middle of it however fast the TP and RDB are."""
    for i, b in enumerate(batches, 1):
        yield b
        if i % every == 0:
            time.sleep(pause)


def test_queries_answer_while_ingest_runs_and_cannot_write(stack):
    cfg, procs = stack
    start(cfg, procs, "tp", "rdb")
    # ~2 s of ingest (100 pauses of 20 ms): the sender is paced because natural batching made an
    # unpaced 60k rows land before the first query came back, and the test then proved nothing
    sender = threading.Thread(target=send, args=(cfg, "trade", _paced(trades(3000, 20), 30, 0.02)))
    sender.start()
    seen = [counts(cfg)[0]]
    while seen[-1] < 60000 and (sender.is_alive() or len(seen) < 10_000):
        seen.append(counts(cfg)[0])
    sender.join()
    assert seen == sorted(seen)  # never going back
    assert any(0 < n < 60000 for n in seen), seen[:50]  # answered in the middle of ingest
    for bad in ["insert into trade values (1)", "create table x as select 1",
                "copy trade to '/tmp/x.csv'", "select * from read_csv('/etc/passwd')"]:
        with pytest.raises(QueryError):
            query(cfg.rdb.query, bad)
    wait_for(lambda: counts(cfg)[0] >= 60000, what="all rows")
    assert counts(cfg)[0] == 60000


def test_end_of_day_saves_the_day_and_clears(stack):
    cfg, procs = stack
    start(cfg, procs, "tp", "rdb")
    n = send(cfg, "trade", trades(100, 10))
    wait_for(lambda: counts(cfg)[0] >= n, what="rows")
    ended = request(cfg.tickerplant.ctl, "eod")["ended"]
    part = cfg.hdb_dir / "trade" / f"date={ended}"
    wait_for(lambda: part.exists(), what="the day's partition")
    wait_for(lambda: counts(cfg)[0] == 0, what="the rdb to clear")
    import pyarrow.parquet as pq
    t = pq.read_table(part)
    assert t.num_rows == n and sorted(t.column("size").to_pylist()) == list(range(n))
    m = send(cfg, "trade", trades(10, 10, start=n), first_fseq=101)
    wait_for(lambda: counts(cfg)[0] == m, what="the new day's rows")
