"""A loss-limit breach: the risk process (a real process) moves the gateway to REDUCING and
flattens the book in an orderly way, child by child, each a bounded share of the displayed
size, the position stepping down to flat without ever crossing it. The trading stack is
tests/trading.py's: a real tickerplant process, venues A and B and the gateway (FIX over
loopback); every number asserted is read from what was published through the TP."""
from __future__ import annotations

import pytest

from helpers import free_port, wait_for
from trading import Trading

pytestmark = pytest.mark.process

SHARE = 0.1
SHOWN = 1000


@pytest.fixture
def trading(tmp_path):
    t = Trading(tmp_path / "home", **{
        # the children repeat sym, side, qty and price: let the gateway take them 0.2 s apart
        "gateway.risk": {"duplicate_window_ms": 1.0},
        "risk": {"ctl": f"tcp://127.0.0.1:{free_port()}", "publish_s": 0.2},
        "risk.limits": {"max_loss": 500.0},
        "risk.flatten": {"interval_s": 0.2, "max_display_share": SHARE, "through_bps": 10.0}})
    try:
        yield t
    finally:
        t.close()


def risk_status(t):
    import json
    from tickerplant.protocol import request
    try:
        return json.loads(request(t.cfg.risk.ctl, [b'{"cmd": "status"}'], timeout=1.0)[0].bytes)
    except Exception:  # noqa: BLE001 - not up yet
        return None


def book_position(t, book, sym):
    st = risk_status(t)
    return next((p["position"] for p in (st or {}).get("positions", []) if (p["book"], p["sym"]) == (book, sym)), None)


def test_a_loss_breach_reduces_and_flattens_step_by_step(trading):
    t = trading
    t.procs.start("strategy.risk", name="risk")
    wait_for(lambda: risk_status(t), timeout=30, what="the risk process")
    t.quote("FL", 100.0, 100.02, SHOWN, SHOWN)
    trader = t.connect("trader")
    r = trader.new("FL", "buy", 600, 100.05, tif="ioc", strategy="t1")
    assert r["ok"], r
    wait_for(lambda: book_position(t, "t1", "FL") == 600, timeout=10, what="risk to see the position")
    assert t.gw.risk.state.name == "ACTIVE"

    t.quote("FL", 98.0, 98.02, SHOWN, SHOWN)          # 600 x -2.02: a loss over the 500 limit
    wait_for(lambda: book_position(t, "t1", "FL") == 0, timeout=30, what="the book to be flat")
    assert t.gw.risk.state.name == "REDUCING"
    # new risk is refused while reducing; the operator resumes
    denied = trader.new("FL", "buy", 10, 98.05, tif="ioc", strategy="t1")
    assert not denied["ok"] and denied["code"] == "reducing"

    acts = wait_for(lambda: (a := rows(t, "risk_action")) and any(x["action"] == "flat" for x in a) and a,
                    timeout=10, what="the flat action to be published")
    kinds = [a["action"] for a in acts]
    assert kinds[0] == "breach" and acts[0]["reason"] == "loss" and acts[0]["value"] > 500
    assert "reduce" in kinds and kinds.index("reduce") < kinds.index("flatten_order")
    children = [a for a in acts if a["action"] == "flatten_order"]
    assert all(a["reason"] == "sell" and a["book"] == "t1" for a in children)
    # each child a bounded share of the size displayed when it was cut, never more than the position
    assert all(0 < a["qty"] <= SHARE * a["value"] and a["value"] == SHOWN for a in children)
    assert sum(a["qty"] for a in children) == 600 and len(children) == 600 // int(SHARE * SHOWN)
    assert kinds[-1] == "flat" or "flat" in kinds

    # the position, as published in `risk` rows and as the executions add up, steps down to 0
    seq = [r["position"] for r in rows(t, "risk") if (r["book"], r["sym"]) == ("t1", "FL")]
    steps = [a - b for a, b in zip(seq, seq[1:]) if a != b]
    assert seq[0] == 600 and seq[-1] == 0 and min(seq) == 0
    assert all(0 < s <= SHARE * SHOWN for s in steps), seq          # never up, never past flat
    fills = [e for e in t.rows("execution") if e["strategy"] == "t1"]
    running, path = 0, []
    for e in fills:
        running += e["qty"] if e["side"] == "buy" else -e["qty"]
        path.append(running)
    assert path[0] >= 0 and min(path) >= 0 and path[-1] == 0
    by_child = {}
    for e in fills[1:]:
        by_child[e["parent"]] = by_child.get(e["parent"], 0) + e["qty"]
    assert all(q <= SHARE * SHOWN for p, q in by_child.items() if p != fills[0]["parent"])
    # the flatten orders are the risk process's, in the book's strategy
    flat_orders = {o["parent"] or o["id"] for o in t.rows("order") if o["client"] == t.cfg.risk.client}
    assert len(flat_orders) == len(children)


def rows(t, table):
    """Every published row of `table` in the TP's log (any feed), in log order."""
    from schemas.codec import decode
    from tickerplant.log import scan
    from tickerplant.protocol import control
    path = control(t.cfg.tickerplant.ctl, "status")["log"]
    return [r for _, _, p in scan(path, (table,), strict=False) for r in decode(p, t.cfg.registry())[1].to_pylist()]
