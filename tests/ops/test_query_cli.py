"""`tickstack query` as an operator meets it: a stopped RDB or HDB, JSON numbers and times,
results cut at the row limit."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest

from ops import processes as procs

pytestmark = pytest.mark.process


def test_query_a_stopped_process_fails_at_once_naming_the_fix(cli):
    """Nothing running: the query says which process to start instead of waiting out the
    300 s default timeout. (The subprocess timeout only bounds a hang; no time is asserted.)"""
    s = cli()
    for source, name in (("rdb", "rdb"), ("hdb", "hdb"), ("all", "rdb")):
        r = s.ts("query", "select 1", "--source", source, ok=False, timeout=30)
        assert r.returncode != 0
        assert f"{name} is not running: `tickstack start {name}`" in r.stderr, (source, r.stderr)


def test_query_after_kill_9_fails_at_once(cli):
    s = cli(supervisor={"backoff_initial_s": 600.0})   # the supervisor waits long before a restart
    s.ts("start", "hdb")
    os.kill(procs.pid_of(s.cfg, "hdb"), signal.SIGKILL)
    r = s.ts("query", "select 1", "--source", "hdb", ok=False, timeout=30)
    assert "hdb is not running: `tickstack start hdb`" in r.stderr, r.stderr


def test_json_numbers_are_numbers_and_times_have_nanoseconds(cli, tmp_path):
    s = cli()
    csv = tmp_path / "t.csv"
    csv.write_text("time,sym,price,size\n"
                   "2026-11-20T14:30:00.123456789,NVDA,100.25,248000\n"
                   "2026-11-20T14:30:01.000000001,NVDA,100.5,505\n"
                   "2026-11-20T14:30:02,AAPL,1.0,9223372036854775807\n")
    s.ts("hdb", "load", str(csv), "--table", "trade", "--utc-days")
    s.ts("start", "hdb")

    def rows(sql):
        out = s.ts("query", sql, "--source", "hdb", "--format", "json").stdout
        return [json.loads(x) for x in out.splitlines()]
    # sum() of BIGINT is a HUGEINT in DuckDB (decimal128(38, 0) in Arrow): exact integers
    assert rows("select sym, sum(size) v from trade group by sym order by sym") == [
        {"sym": "AAPL", "v": 9223372036854775807}, {"sym": "NVDA", "v": 248505}]
    assert rows("select sum(size) * 1000 v from trade")[0]["v"] == (9223372036854775807 + 248505) * 1000
    assert rows("select 170141183460469231731687303715884105727::hugeint h")[0]["h"] == 2**127 - 1
    got = rows("select time, price, date from trade order by time")
    assert [r["time"] for r in got] == ["2026-11-20T14:30:00.123456789", "2026-11-20T14:30:01.000000001",
                                        "2026-11-20T14:30:02.000000000"]
    assert [r["price"] for r in got] == [100.25, 100.5, 1.0] and isinstance(got[2]["price"], float)
    assert got[0]["date"] == "2026-11-20"
    from decimal import Decimal
    line = s.ts("query", "select 12.345::decimal(10,3) d, null n, 'x\"y' t", "--source", "hdb",
                "--format", "json").stdout
    assert json.loads(line, parse_float=Decimal) == {"d": Decimal("12.345"), "n": None, "t": 'x"y'}


def test_cut_results_are_said_on_stderr_with_the_key(cli, tmp_path):
    s = cli(hdb={"max_rows": 10}, rdb={"max_rows": 7})
    s.ts("start", "hdb")
    r = s.ts("query", "select * from range(100)", "--source", "hdb", "--format", "json")
    assert len(r.stdout.splitlines()) == 10
    assert "cut at 10 rows (hdb.max_rows)" in r.stderr and "raise hdb.max_rows" in r.stderr, r.stderr
    r = s.ts("query", "select * from range(10)", "--source", "hdb", "--format", "json")
    assert len(r.stdout.splitlines()) == 10 and "cut" not in r.stderr

    # the in-process RDB of `log replay --sql` has the RDB's limit
    from schemas.codec import encode
    from tickerplant.log import LogWriter, log_path
    day = dt.date(2026, 11, 20)
    path = log_path(tmp_path, day)
    w = LogWriter(path, day)
    w.append([encode(s.cfg.registry()["trade"], {"time": list(range(20)), "sym": ["X"] * 20,
                                                   "price": [1.0] * 20, "size": list(range(20))})])
    w.close()
    r = s.ts("log", "replay", str(path), "--sql", "select * from trade")
    assert "cut at 7 rows (rdb.max_rows)" in r.stderr, r.stderr

    # --source all over today's trades cut by the RDB's limit would be wrong: refused
    s.ts("start", "tp", "rdb")
    csv = tmp_path / "t.csv"
    csv.write_text("time,sym,price,size\n" + "".join(f"2026-11-20T14:30:00.{i:09d},A,1.0,{i}\n" for i in range(10)))
    s.ts("publish", "trade", str(csv))
    for _ in range(100):
        out = s.ts("query", "select count(*) n from trade", "--format", "json").stdout
        if json.loads(out)["n"] == 10:
            break
        time.sleep(0.1)
    r = s.ts("query", "select count(*) n from trade", "--source", "all", ok=False)
    assert r.returncode != 0 and "today's trade has more than 7 rows (rdb.max_rows)" in r.stderr, r.stderr
