"""The gateway end to end, through OrderClient (the public API): a real tickerplant process,
venues A and B (quickfix acceptors with matching engines, fed by the TP's quotes) and the
gateway's quickfix initiator logged on to them over loopback. Every lifecycle, smart order
routing, each risk limit stopping its order before the wire, the trading states and the kill
switch, and what is published through the TP."""
from __future__ import annotations

import glob
import threading
import time

import pytest

from trading import events_until
from helpers import wait_for

pytestmark = pytest.mark.process


def parent_event(tag, status):
    return lambda e: e.get("event") == "order" and e["tag"] == tag and "venue" not in e and e["status"] == status


def venue_seen(t) -> dict:
    """What each venue's acceptor has received so far (application messages)."""
    return {n: v.fix.app.counters["received"] for n, v in t.venues.items()}


def fix_log(t, name: str) -> str:
    """The venue's FIX message log (every message it received and sent)."""
    return "".join(open(p, errors="replace").read()
                   for p in glob.glob(str(t.home / "fix" / f"venue-{name}" / "log" / "*messages*")))


def orders_received(t, name: str, cl_ord_id: str) -> int:
    """How many NewOrderSingles with this ClOrdID the venue's log shows."""
    return sum(1 for line in fix_log(t, name).splitlines()
               if "\x0135=D\x01" in line and f"\x0111={cl_ord_id}\x01" in line)


# -- lifecycles ---------------------------------------------------------------------------------------
def test_fill(trading):
    t, c = trading, trading.client
    t.quote("FIL", 100.0, 100.1, 500, 500)
    r = c.new("FIL", "buy", 100, 100.2, tag="fill-1", strategy="s1")
    assert r["ok"] and r["code"] is None and r["status"] == "PENDING_NEW" and not r.get("dup")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 100)]     # A is cheaper
    evs = events_until(c, parent_event("fill-1", "FILLED"))
    (fill,) = [e for e in evs if e["event"] == "fill" and e["tag"] == "fill-1"]
    assert (fill["id"], fill["venue"], fill["qty"], fill["price"], fill["side"]) == (r["id"], "A", 100, 100.1, "buy")
    assert fill["fee"] == pytest.approx(100 * 100.1 * 0.3e-4)
    assert [e["status"] for e in evs if e.get("event") == "order" and "venue" in e] == ["NEW", "FILLED"]
    (ex,) = t.published("execution", lambda x: x["parent"] == r["id"])
    assert (ex["qty"], ex["price"], ex["venue"], ex["exec_id"], ex["strategy"], ex["status"]) == (
        100, 100.1, "A", fill["exec_id"], "s1", "FILLED")
    rows = t.published("order", lambda x: x["id"] == r["id"] and x["status"] == "FILLED")
    assert rows[-1]["tag"] == "fill-1" and rows[-1]["client"] == "test" and rows[-1]["cum_qty"] == 100
    child = [x["status"] for x in t.rows("order") if x["id"] == r["children"][0]["id"]]
    assert child == ["PENDING_NEW", "NEW", "FILLED"]


def test_partial_fill_rests_then_cancel(trading):
    t, c = trading, trading.client
    t.quote("PRT", 50.0, 50.1, 100, 100)
    r = c.new("PRT", "buy", 200, 50.1, tag="part-1")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 200)]    # 100 takes, 100 rests
    events_until(c, parent_event("part-1", "PARTIALLY_FILLED"))
    x = c.cancel("part-1")
    assert x["ok"] and x["sent"] == 1
    evs = events_until(c, parent_event("part-1", "CANCELED"))
    assert evs[-1]["cum_qty"] == 100 and evs[-1]["leaves_qty"] == 0
    assert not t.venues["A"].engine.working()
    again = c.cancel("part-1", tag="part-1-cancel-again")
    assert not again["ok"] and again["code"] == "not_working"


def test_replace_moves_the_price_and_the_venue_fills(trading):
    t, c = trading, trading.client
    t.quote("RPL", 30.0, 30.5, 100, 100)
    r = c.new("RPL", "buy", 100, 30.1, tag="rpl-1")
    events_until(c, parent_event("rpl-1", "NEW"))
    x = c.replace("rpl-1", qty=150, price=30.6)
    assert x["ok"] and x["sent"] == 1
    evs = events_until(c, parent_event("rpl-1", "PARTIALLY_FILLED"))
    child = [e for e in evs if e["event"] == "order" and e["tag"] == "rpl-1" and "venue" in e]
    assert "REPLACED" in [e["status"] for e in child]
    (fill,) = [e for e in evs if e["event"] == "fill" and e["tag"] == "rpl-1"]
    assert (fill["qty"], fill["price"]) == (100, 30.5) and fill["child"] == f"{r['id']}.2"
    (o,) = [p for p in c.orders()["orders"] if p["id"] == r["id"]]
    assert (o["qty"], o["price"], o["cum_qty"]) == (150, 30.6, 100)
    assert [(ch["id"], ch["qty"], ch["leaves_qty"]) for ch in o["children"]] == [(f"{r['id']}.2", 150, 50)]
    c.cancel("rpl-1")
    events_until(c, parent_event("rpl-1", "CANCELED"))


def test_a_venue_reject_rejects_the_order(trading):
    t, c = trading, trading.client
    t.quote("VREJ", 10.0, 10.1)
    for v in t.venues.values():
        v.halt("VREJ")
    try:
        r = c.new("VREJ", "buy", 10, 10.2, tag="vrej-1", venue="B")
        assert r["ok"] and r["children"][0]["venue"] == "B"
        evs = events_until(c, parent_event("vrej-1", "REJECTED"))
        child = [e for e in evs if e["event"] == "order" and e["tag"] == "vrej-1" and "venue" in e]
        assert "halted" in child[-1]["text"].lower()
    finally:
        for v in t.venues.values():
            v.resume("VREJ")


def test_ioc_takes_what_is_displayed_across_venues_and_expires_the_rest(trading):
    t, c = trading, trading.client
    t.quote("IOC", 20.0, 20.1, 100, 100)              # A shows 100 at 20.1, B 50 at 20.101005
    r = c.new("IOC", "buy", 200, 20.2, tif="ioc", tag="ioc-1")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 100), ("B", 50)]
    evs = events_until(c, parent_event("ioc-1", "EXPIRED"))
    assert evs[-1]["cum_qty"] == 150
    fills = [e for e in evs if e["event"] == "fill" and e["tag"] == "ioc-1"]
    assert sorted((e["venue"], e["qty"], e["price"]) for e in fills) == [
        ("A", 100, 20.1), ("B", 50, 20.101005)]


def test_fok_routes_only_what_it_can_fill_whole(trading):
    t, c = trading, trading.client
    t.quote("FOK", 20.0, 20.1, 100, 100)              # 150 displayed in all
    before = venue_seen(t)
    r = c.new("FOK", "buy", 200, 20.2, tif="fok", tag="fok-1")
    assert r["ok"] and r["status"] == "EXPIRED" and r["children"] == [] and "FOK" in r["text"]
    assert venue_seen(t) == before
    r = c.new("FOK", "buy", 80, 20.2, tif="fok", tag="fok-2")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 80)]
    assert events_until(c, parent_event("fok-2", "FILLED"))[-1]["cum_qty"] == 80
    t.quote("FOK", 20.0, 20.1, 10, 10)
    r = c.new("FOK", "buy", 10, 20.2, tif="fok", tag="fok-3", venue="B")    # B shows 5: it kills it
    assert r["children"][0]["venue"] == "B"
    evs = events_until(c, parent_event("fok-3", "EXPIRED"))
    assert evs[-1]["cum_qty"] == 0


def test_market_order(trading):
    t, c = trading, trading.client
    t.quote("MKT", 10.0, 10.1, 100, 100)
    r = c.new("MKT", "sell", 30, tag="mkt-1")
    assert r["ok"] and r["children"][0]["venue"] == "A" and r["children"][0]["price"] is None
    evs = events_until(c, parent_event("mkt-1", "FILLED"))
    (fill,) = [e for e in evs if e["event"] == "fill" and e["tag"] == "mkt-1"]
    assert (fill["price"], fill["qty"], fill["side"]) == (10.0, 30, "sell")


def test_sor_ranks_by_price_with_fees_splits_by_displayed_size_and_remembers_what_it_took(trading):
    t, c = trading, trading.client
    t.quote("SOR", 100.0, 100.1, 100, 100)            # A: 100 at 100.1; B: 50 at 100.105005
    r = c.new("SOR", "buy", 120, 100.2, tag="sor-1")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 100), ("B", 20)]
    evs = events_until(c, parent_event("sor-1", "FILLED"))
    fills = [e for e in evs if e["event"] == "fill" and e["tag"] == "sor-1"]
    assert sorted((e["venue"], e["qty"], e["price"]) for e in fills) == [
        ("A", 100, 100.1), ("B", 20, 100.105005)]
    # A's displayed size stays used until a new quote: the next order goes to B (30 left
    # there), and its DAY remainder rests there too
    r = c.new("SOR", "buy", 60, 100.2, tag="sor-2")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("B", 60)]
    events_until(c, parent_event("sor-2", "PARTIALLY_FILLED"))
    c.cancel("sor-2")
    events_until(c, parent_event("sor-2", "CANCELED"))
    t.quote("SOR", 100.0, 100.1, 100, 200)            # a new quote: A shows 200 again
    r = c.new("SOR", "buy", 150, 100.2, tag="sor-3")
    assert [(ch["venue"], ch["qty"]) for ch in r["children"]] == [("A", 150)]
    events_until(c, parent_event("sor-3", "FILLED"))


# -- idempotency ----------------------------------------------------------------------------------------
def test_a_resent_tag_gets_the_existing_order_never_a_second_one(trading):
    t, c = trading, trading.client
    t.quote("DUP", 10.0, 10.1)
    r = c.new("DUP", "buy", 10, 9.9, tag="dup-1")
    assert r["ok"], r
    events_until(c, parent_event("dup-1", "NEW"))           # the venue has it
    before = venue_seen(t)
    again = c.new("DUP", "buy", 10, 9.9, tag="dup-1")
    assert again["dup"] and again["id"] == r["id"] and venue_seen(t) == before
    other = t.connect("test")                           # another connection, same client id
    assert other.new("DUP", "buy", 10, 9.9, tag="dup-1")["id"] == r["id"]
    wait_for(lambda: orders_received(t, "A", f"{r['id']}.1"), what="the venue's log")
    assert orders_received(t, "A", f"{r['id']}.1") == 1
    c.cancel("dup-1")
    events_until(c, parent_event("dup-1", "CANCELED"))


# -- pre-trade risk: stopped before the wire, published with the code -------------------------------------
RISK_CASES = [
    # sym, quote (bid, ask) or None, order kwargs, code
    ("QTY", (10.0, 10.1), dict(side="buy", qty=11, price=10.1), "max_order_qty"),
    ("NOTL", (100.0, 100.1), dict(side="buy", qty=20, price=100.1), "max_order_notional"),
    ("CLR", (100.0, 100.1), dict(side="buy", qty=1, price=120.0), "price_collar"),
    ("BANNED", (10.0, 10.1), dict(side="sell", qty=1, price=10.0), "restricted"),
    ("NOQ", None, dict(side="buy", qty=1, price=10.0), "no_quote"),
    ("OLD", (10.0, 10.1), dict(side="buy", qty=1, price=10.0), "stale_quote"),
    ("POS", (10.0, 10.1), dict(side="buy", qty=60, price=10.0), "position_limit"),
]


@pytest.mark.parametrize("sym, quote, order, code", RISK_CASES, ids=[c[3] for c in RISK_CASES])
def test_each_risk_limit_stops_its_order_before_the_wire(trading, sym, quote, order, code):
    t, c = trading, trading.client
    if quote:
        t.quote(sym, *quote)
    if code == "stale_quote":
        time.sleep(0.1)                                  # max_quote_age_ms is 50 for OLD
    before = venue_seen(t)
    r = c.new(sym, tag=f"risk-{code}", **order)
    assert not r["ok"] and r["code"] == code and r["status"] == "REJECTED" and r["text"]
    rows = t.published("order", lambda x: x["parent"] == r["id"] or x["id"] == r["id"])
    assert {x["reason"] for x in rows} == {code} and {x["status"] for x in rows} == {"REJECTED"}
    assert venue_seen(t) == before
    assert r["id"] not in fix_log(t, "A") + fix_log(t, "B")


def test_duplicate_orders_are_denied_but_siblings_of_one_parent_are_not(trading):
    t, c = trading, trading.client
    t.quote("DUPO", 10.0, 10.1, 1000, 1000)
    first = c.new("DUPO", "buy", 120, 10.2, tag="dupo-1", tif="ioc")
    assert first["ok"] and len(first["children"]) == 1
    second = c.new("DUPO", "buy", 120, 10.2, tag="dupo-2", tif="ioc")       # same order, new tag
    assert not second["ok"] and second["code"] == "duplicate_order"
    big = c.new("DUPO", "buy", 1200, 10.2, tag="dupo-3", tif="ioc")          # A 880 left + B 500
    assert big["ok"] and [ch["venue"] for ch in big["children"]] == ["A", "B"]
    assert all(ch["status"] == "PENDING_NEW" for ch in big["children"])


def test_halted_lets_cancels_through_and_the_kill_switch_cancels_everything_confirmed(trading):
    t, c = trading, trading.client
    t.quote("KILL", 50.0, 50.5)
    a = c.new("KILL", "buy", 10, 50.1, tag="kill-a", venue="A")
    b = c.new("KILL", "sell", 10, 50.4, tag="kill-b", venue="B")
    events_until(c, parent_event("kill-a", "NEW"), parent_event("kill-b", "NEW"))
    mine = {a["children"][0]["id"], b["children"][0]["id"]}

    def working_at(name):
        return {o.cl_ord_id for o in t.venues[name].engine.working()} & mine
    assert working_at("A") == {a["children"][0]["id"]} and working_at("B") == {b["children"][0]["id"]}
    try:
        h = c.halt("test kill switch")
        assert h["ok"] and h["working"] == [] and h["state"] == "HALTED"
        # confirmed by the venues: their books are empty and their reports said CANCELED
        assert not t.venues["A"].engine.working() and not t.venues["B"].engine.working()   # nothing at all
        for r in (a, b):
            (o,) = [p for p in c.orders()["orders"] if p["id"] == r["id"]]
            assert o["status"] == "CANCELED" and o["children"][0]["status"] == "CANCELED"
        state = [e for e in events_until(c, lambda e: e.get("event") == "state") if e.get("event") == "state"]
        assert state[-1]["state"] == "HALTED" and state[-1]["reason"] == "test kill switch"
        before = venue_seen(t)
        d = c.new("KILL", "buy", 1, 50.1, tag="kill-c")
        assert not d["ok"] and d["code"] == "halted" and venue_seen(t) == before
        assert c.status()["state"] == "HALTED"
    finally:
        assert c.resume("test over")["state"] == "ACTIVE"
    assert c.new("KILL", "buy", 1, 49.0, tag="kill-d")["ok"]
    c.cancel("kill-d")


def test_reducing_admits_only_orders_toward_flat(trading):
    t, c = trading, trading.client
    t.quote("RED", 10.0, 10.1)
    c.new("RED", "buy", 100, 10.2, tag="red-1")
    events_until(c, parent_event("red-1", "FILLED"))
    try:
        assert c.reduce("loss limit near")["state"] == "REDUCING"
        up = c.new("RED", "buy", 10, 10.2, tag="red-2")
        assert not up["ok"] and up["code"] == "reducing"
        down = c.new("RED", "sell", 60, 10.0, tag="red-3")
        assert down["ok"]
        events_until(c, parent_event("red-3", "FILLED"))
        past_flat = c.new("RED", "sell", 41, 10.0, tag="red-4")
        assert not past_flat["ok"] and past_flat["code"] == "reducing"
    finally:
        c.resume("done")
    pos = {p["sym"]: p["qty"] for p in c.status()["positions"]}
    assert pos["RED"] == 40


def test_status_and_orders(trading):
    c = trading.client
    st = c.status()
    assert st["ok"] and st["state"] == "ACTIVE" and not st["recovering"]
    assert {n: (v["logged_on"], v["ready"]) for n, v in st["venues"].items()} == {"A": (True, True), "B": (True, True)}
    every = c.orders()["orders"]
    assert every and all({"id", "tag", "status", "children"} <= set(o) for o in every)
    assert all(o["status"] not in ("FILLED", "CANCELED", "REJECTED", "EXPIRED") for o in c.orders(open=True)["orders"])
    assert len(c.orders(limit=2)["orders"]) == 2


def test_bad_requests_get_clear_errors(trading):
    c = trading.client
    r = c.request("cancel", target="no-such-tag")
    assert not r["ok"] and r["code"] == "unknown_order"
    r = c.new("X", "buy", 1, 1.0, venue="Z")
    assert not r["ok"] and r["code"] == "unknown_venue" and "A" in r["text"]
    with pytest.raises(ValueError, match="qty"):
        c.new("X", "buy", 0, 1.0)            # refused before anything is sent
    wait_for(lambda: c.status()["ok"], what="the gateway to still answer")


def test_a_strategy_trades_live_through_the_gateway(trading):
    """strategy.live drives a Strategy on the TP's quotes; its orders go through OrderClient
    (send/poll, as strategy.live.GatewayPort calls them): it sees its reply, fill and order
    events through its callbacks."""
    from strategy.api import Strategy
    from strategy.live import GatewayPort, run
    t = trading
    seen = {"fills": [], "orders": []}

    class Once(Strategy):
        name = "once"
        syms = ["LIVE"]

        def on_quote(self, q):
            if not self.orders:
                self.buy("LIVE", 10, q.ask + 0.05)

        def on_fill(self, f):
            seen["fills"].append(f)

        def on_order(self, e):
            seen["orders"].append(e)
    t.quote("LIVE", 10.0, 10.1)
    oc = t.connect("live-once")
    th = threading.Thread(target=run, args=(Once(), t.cfg.tickerplant, GatewayPort(oc)),
                          kwargs={"stop": lambda: any(e.status == "FILLED" for e in seen["orders"])})
    th.start()
    th.join(30)
    assert not th.is_alive()
    (f,) = seen["fills"]
    assert (f.sym, f.side, f.qty, f.price, f.venue) == ("LIVE", "buy", 10, 10.1, "A")
    assert seen["orders"][-1].status == "FILLED" and seen["orders"][-1].cum_qty == 10
