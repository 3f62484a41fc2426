"""The gateway and the venues as processes (`python -m gateway`, `python -m gateway.venue`),
killed with kill -9 mid-order: the gateway comes back with its sequence numbers, rebuilds its
orders from the TP log and the venues' resent reports, and sends no order twice; a venue
that dies is reflected in the orders that were working there."""
from __future__ import annotations

import glob
import socket
import time

import numpy as np
import pytest

from gateway.client import GatewayUnavailable, OrderClient
from helpers import start_tp, wait_for
from trading import events_until

pytestmark = pytest.mark.process


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def start_venue(cfg, procs, name):
    procs.start("gateway.venue", "--name", name, name=f"venue-{name}")
    wait_for(lambda: listening(cfg.venues[name].port), timeout=30, what=f"venue {name}'s FIX port")


def gateway_status(cfg):
    try:
        return OrderClient(cfg.gateway.intents, mode="req", timeout=2.0).status()
    except GatewayUnavailable:
        return None


def start_gateway(cfg, procs):
    procs.start("gateway", name="gateway")
    return wait_for(lambda: (s := gateway_status(cfg)) and not s["recovering"] and all(
        v["ready"] for v in s["venues"].values()) and s, timeout=30, what="the gateway, caught up")


def quote(cfg, feed, sym, bid, ask, size=100):
    """Publish a quote and wait until the gateway applied it (the venues read the same stream)."""
    before = (gateway_status(cfg) or {}).get("counters", {}).get("quote_batches", 0)
    feed.publish("quote", {"time": np.array([time.time_ns()]), "sym": np.array([sym]),
                           "bid": np.array([bid]), "ask": np.array([ask]), "bsize": np.array([size]),
                           "asize": np.array([size])})
    wait_for(lambda: (gateway_status(cfg) or {}).get("counters", {}).get("quote_batches", 0) > before,
             what="the quote")
    time.sleep(0.3)                       # the venue processes subscribe to the same stream


def venue_log(cfg, name) -> list[str]:
    return [line for p in glob.glob(str(cfg.root / "fix" / f"venue-{name}" / "log" / "*messages*"))
            for line in open(p, errors="replace")]


def new_orders_at(cfg, name, cl_ord_id) -> list[str]:
    return [line for line in venue_log(cfg, name)
            if "\x0135=D\x01" in line and f"\x0111={cl_ord_id}\x01" in line]


def logged_tag(cfg, parent_id):
    """The tag of the parent's latest row in today's TP log (None: no row yet)."""
    from gateway.recovery import read_published
    from tickerplant.protocol import control
    past = read_published(control(cfg.tickerplant.ctl, "status")["log"], cfg.registry(), cfg.gateway.feed_id)
    row = past.parents.get(parent_id)
    return None if row is None else row["tag"]


def parent_is(tag, status):
    return lambda e: e.get("event") == "order" and e["tag"] == tag and "venue" not in e and e["status"] == status


@pytest.fixture
def stack(make_stack):
    from feedhandlers.base import Feed
    cfg, procs = make_stack(gateway={"heartbeat_s": 1, "venues": ["A"]})
    start_tp(cfg, procs)
    start_venue(cfg, procs, "A")
    start_gateway(cfg, procs)
    feed = Feed(cfg.tickerplant, 99, cfg.registry(), batch_ms=0)
    clients = []

    def client(name="strat"):
        c = OrderClient(cfg.gateway.intents, client=name, timeout=10)
        clients.append(c)
        return c
    yield cfg, procs, feed, client
    for c in clients:
        c.close()
    feed.close(1)


def test_gateway_kill9_mid_order_then_restart(stack):
    cfg, procs, feed, client = stack
    c = client()
    quote(cfg, feed, "KIL", 10.0, 10.1)
    r = c.new("KIL", "buy", 300, 10.1, tag="k1")       # 100 fills at once, 200 rests
    child = r["children"][0]["id"]
    events_until(c, parent_is("k1", "PARTIALLY_FILLED"))
    # this test is the case where the order's rows reached the TP's log (they are published when
    # the kernel idles, after the events): wait for that; the next test kills before they can
    wait_for(lambda: logged_tag(cfg, r["id"]) == "k1", what="the order's rows in the TP log")
    seq_before = wait_for(lambda: gateway_status(cfg), what="the gateway's status")["venues"]["A"]["last_seq"]
    procs.kill("gateway")                               # SIGKILL, mid-order

    st = start_gateway(cfg, procs)
    assert st["venues"]["A"]["last_seq"] > seq_before   # the session went on: no sequence reset
    (o,) = [p for p in c.orders()["orders"] if p["id"] == r["id"]]
    # the venue canceled the rest on disconnect, and said so in what it resent
    assert (o["status"], o["cum_qty"], o["tag"]) == ("CANCELED", 100, "k1")
    assert [(ch["id"], ch["status"], ch["cum_qty"]) for ch in o["children"]] == [(child, "CANCELED", 100)]
    assert [p["qty"] for p in st["positions"] if p["sym"] == "KIL"] == [100]

    again = c.new("KIL", "buy", 300, 10.1, tag="k1")    # the strategy resends its intent
    assert again["dup"] and again["id"] == r["id"] and again["status"] == "CANCELED"
    time.sleep(0.3)
    assert len(new_orders_at(cfg, "A", child)) == 1     # sent once, never resent
    assert not any("\x0143=Y\x01" in line and "\x0135=D\x01" in line for line in venue_log(cfg, "A"))

    quote(cfg, feed, "KIL", 10.0, 10.1, size=200)        # and it trades on
    c.new("KIL", "buy", 50, 10.1, tag="k2")
    assert events_until(c, parent_is("k2", "FILLED"))[-1]["cum_qty"] == 50


def test_gateway_kill9_while_the_tp_is_down_rebuilds_from_the_venues_resend(stack):
    """The worst case: the order's rows never reached the TP (it was down), so only the venue
    knows. After the restart the venue resends, the child is adopted from its reports, and a
    resent intent maps to it (deterministic ids)."""
    cfg, procs, feed, client = stack
    c = client()
    quote(cfg, feed, "LOST", 20.0, 20.1)
    procs.kill("tp")
    r = c.new("LOST", "buy", 50, 20.1, tag="l1")
    events_until(c, parent_is("l1", "FILLED"))
    procs.kill("gateway")
    start_tp(cfg, procs)
    st = start_gateway(cfg, procs)
    assert [p["qty"] for p in st["positions"] if p["sym"] == "LOST"] == [50]
    again = c.new("LOST", "buy", 50, 20.1, tag="l1")
    assert again["dup"] and again["id"] == r["id"]
    assert (again["status"], again["cum_qty"]) == ("FILLED", 50)
    assert len(new_orders_at(cfg, "A", r["children"][0]["id"])) == 1
    out = procs.output("gateway")
    assert "expecting its messages again" in out and f"adopted {r['children'][0]['id']}" in out


def test_a_venue_killed_mid_order_is_reflected_and_the_session_comes_back(stack):
    cfg, procs, feed, client = stack
    c = client()
    quote(cfg, feed, "VKL", 10.0, 10.1)
    r = c.new("VKL", "buy", 10, 9.9, tag="v1")           # rests at A
    events_until(c, parent_is("v1", "NEW"))
    procs.kill("venue-A")
    evs = events_until(c, parent_is("v1", "CANCELED"))
    (child,) = [e for e in evs if e["event"] == "order" and e["tag"] == "v1" and "venue" in e
                and e["status"] == "CANCELED"]
    assert "disconnected" in child["text"]
    assert not wait_for(lambda: gateway_status(cfg), what="the gateway's status")["venues"]["A"]["logged_on"]
    down = c.new("VKL", "buy", 10, 9.9, tag="v2")
    assert not down["ok"] and down["code"] == "no_venue"
    start_venue(cfg, procs, "A")
    wait_for(lambda: (gateway_status(cfg) or {}).get("venues", {}).get("A", {}).get("ready"),
             what="the gateway to reconnect by itself")
    quote(cfg, feed, "VKL", 10.0, 10.1)
    c.new("VKL", "buy", 10, 10.1, tag="v3")
    events_until(c, parent_is("v3", "FILLED"))
