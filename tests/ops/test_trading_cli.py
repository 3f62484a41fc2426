"""Trading from the command line, as an operator does it: `tickstack start` runs the venues and
the gateway with the rest of the stack; `order`, `orders`, `cancel`, `halt`, `resume` go
through the gateway's risk path; orders and executions land in the RDB and, after the end of
day, in the HDB. And every trading command against a gateway that is down says how to start
it."""
from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.process


def rows(s, sql, source="rdb"):
    out = s.ts("query", sql, "--source", source, "--format", "json").stdout
    return [json.loads(x) for x in out.splitlines()]


def test_every_trading_command_says_how_to_start_a_gateway_that_is_down(cli):
    s = cli()
    for cmd in (["order", "buy", "S001", "1"], ["orders"], ["cancel", "P1"], ["halt"], ["resume"]):
        r = s.ts(*cmd, ok=False)
        assert r.returncode == 1 and "gateway is not running: `tickstack start gateway`" in r.stderr, (cmd, r.stderr)


def test_trading_from_the_cli_through_to_history(cli):
    s = cli(strategy={"run": []})                # no strategy trading beside the operator
    r = s.ts("start")
    assert "started: tp rdb hdb feed venue-A venue-B gateway risk" in r.stdout, r.stdout
    st = s.status()
    assert {n: st[n]["state"] for n in st} == {n: "running" for n in st}
    assert st["gateway"]["trading"] == "ACTIVE" and st["gateway"]["venues"] == {"A": "ready", "B": "ready"}
    assert "venues=A:ready,B:ready" in s.ts("status", "gateway").stdout

    for _ in range(100):                         # the simulated feed's quotes reach the RDB
        q = rows(s, "select bid, ask from quote where sym = 'S002' order by time desc limit 1")
        if q:
            break
        time.sleep(0.1)
    r = s.ts("order", "buy", "S001", "100")      # market
    assert "FILLED 100/100" in r.stdout and "fill  " in r.stdout, r.stdout
    filled = r.stdout.split()[0]

    r = s.ts("order", "buy", "S001", "100000000", ok=False)
    assert r.returncode == 1 and "denied (max_order_qty)" in r.stderr

    limit = round(q[0]["bid"] * 0.98, 2)          # inside the 5% collar, below the market: rests
    r = s.ts("order", "buy", "S002", "10", "--limit", str(limit), "--wait", "0.5")
    assert "still NEW" in r.stdout, r.stdout
    resting = r.stdout.split()[0]
    assert resting in s.ts("orders", "--open").stdout
    (o,) = [json.loads(x) for x in s.ts("orders", "--json").stdout.splitlines() if resting in x]
    assert (o["status"], o["sym"], o["qty"], o["price"]) == ("NEW", "S002", 10, limit)
    assert "cancel sent" in s.ts("cancel", resting).stdout
    for _ in range(50):
        if resting not in s.ts("orders", "--open").stdout:
            break
        time.sleep(0.1)
    assert resting not in s.ts("orders", "--open").stdout

    s.ts("order", "sell", "S002", "10", "--limit", str(round(q[0]["ask"] * 1.02, 2)), "--wait", "0")
    r = s.ts("halt", "--reason", "drill")
    assert "HALTED (drill)" in r.stdout and "nothing is working" in r.stdout
    r = s.ts("order", "buy", "S001", "1", ok=False)
    assert "denied (halted)" in r.stderr
    assert "ACTIVE" in s.ts("resume").stdout

    # orders are ticks: in the RDB now, in the HDB after the end of day
    execs = rows(s, "select order_id, qty, venue from execution")
    assert [(e["order_id"], e["qty"]) for e in execs] == [(f"{filled}.1", 100)]
    reasons = {x["reason"] for x in rows(s, 'select reason from "order" where reason <> \'\'')}
    assert {"max_order_qty", "halted"} <= reasons
    s.ts("eod")
    for _ in range(100):
        try:
            hist = rows(s, "select order_id, qty from execution", source="hdb")
        except AssertionError:
            hist = []
        if hist:
            break
        time.sleep(0.2)
    assert [(e["order_id"], e["qty"]) for e in hist] == [(f"{filled}.1", 100)]
    statuses = {x["status"] for x in rows(s, f"select status from \"order\" where id = '{resting}'", source="hdb")}
    assert statuses == {"PENDING_NEW", "NEW", "CANCELED"}
    assert "stopped: risk gateway venue-B venue-A feed hdb rdb tp" in s.ts("stop").stdout
