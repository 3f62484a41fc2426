"""The default stack trades: `tickstack start` runs risk and the pairs strategy after the
gateway; simulator quotes -> the strategy's signals -> orders through the gateway's risk and
FIX -> the venues -> executions in the RDB -> positions and PnL in the `risk` table and in
`tickstack positions|pnl|risk`. `tickstack strategy stop|start` stops (flattening) and starts
it again. Real processes, as an operator runs them."""
from __future__ import annotations

import json
import time

import pytest

from helpers import free_port, wait_for

pytestmark = pytest.mark.process

PARAMS = {"entry_z": 0.7, "exit_z": 0.2, "notional": 1500.0, "tol_bps": 40.0, "sample_s": 1.0,
          "warmup_s": 2.0}


def rows(s, sql):
    out = s.ts("query", sql, "--source", "rdb", "--format", "json").stdout
    return [json.loads(x) for x in out.splitlines()]


def test_the_pairs_strategy_trades_end_to_end_and_risk_follows(cli):
    s = cli(feed={"rate": 400.0}, risk={"ctl": f"tcp://127.0.0.1:{free_port()}", "publish_s": 0.5},
            **{"strategy.params.pairs": PARAMS})
    r = s.ts("risk", ok=False)
    assert r.returncode == 1 and "risk is not running: `tickstack start risk`" in r.stderr
    r = s.ts("start")
    assert "started: tp rdb hdb feed venue-A venue-B gateway risk strategy-pairs" in r.stdout, r.stdout
    st = s.status()
    assert st["risk"]["state"] == "running" and st["risk"]["trading"] == "ACTIVE"
    assert st["strategy-pairs"]["state"] == "running"

    wait_for(lambda: len(rows(s, "select * from execution where strategy = 'pairs'")) >= 4, timeout=40,
             every=0.5, what="the pairs strategy's fills in the RDB")
    wait_for(lambda: rows(s, "select * from risk where book = 'pairs' and sym = ''"), timeout=10, every=0.5,
             what="risk rows of the pairs book")
    out = s.ts("positions").stdout
    assert "pairs" in out and "avg_cost" in out
    assert "pairs" in s.ts("pnl").stdout and "total" in s.ts("pnl").stdout
    out = s.ts("risk").stdout
    assert "trading ACTIVE" in out and "historical simulation" in out and "pairs" in out

    r = s.ts("strategy", "stop", "pairs")                 # on_stop flattens its positions
    assert "stopped: strategy-pairs" in r.stdout

    def flat_in_rdb():
        net = rows(s, "select sym, sum(case when side = 'buy' then qty else -qty end) as n "
                      "from execution where strategy = 'pairs' group by sym")
        return net if all(x["n"] == 0 for x in net) else None
    wait_for(flat_in_rdb, timeout=20, every=0.5, what="the strategy to flatten at stop")
    fills = rows(s, "select side, qty, price, fee, time from execution where strategy = 'pairs'")
    last_fill = max(f["time"] for f in fills)

    def settled():
        book = rows(s, "select * from risk where book = 'pairs' and sym = '' order by time desc limit 1")
        return book[0] if book and book[0]["time"] > last_fill else None
    book = wait_for(settled, timeout=10, every=0.5, what="a risk row after the last fill")
    # flat: realized PnL is what was received minus what was paid, less fees
    cash = sum((-f["qty"] if f["side"] == "buy" else f["qty"]) * f["price"] for f in fills)
    fees = sum(f["fee"] for f in fills)
    assert book["position"] == 0 and book["unrealized"] == 0
    assert book["realized"] == pytest.approx(cash - fees, abs=1e-6)
    pos = [json.loads(x) for x in s.ts("positions", "--json").stdout.splitlines()]
    assert pos and all(p["position"] == 0 for p in pos if p["book"] == "pairs")

    assert "started: strategy-pairs" in s.ts("strategy", "start", "pairs").stdout
    assert s.status()["strategy-pairs"]["state"] == "running"
    r = s.ts("strategy", "start", "nosuch", ok=False)
    assert r.returncode == 1 and "unknown strategy 'nosuch'" in r.stderr
    s.ts("stop")
    assert not any(v["state"] == "running" for v in s.status().values())
