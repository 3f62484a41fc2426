"""The live order port on the real gateway: strategy API calls go out as intents through
gateway.client.OrderClient, and what the gateway really answers comes back as the strategy
API's events (a real tickerplant process, venues A and B and the gateway's FIX sessions over
loopback: tests/trading.py)."""
from __future__ import annotations

import time

import pytest

from helpers import wait_for
from strategy.api import Strategy
from strategy.live import GatewayPort
from strategy.runtime import Runtime, Universe
from trading import Trading

pytestmark = pytest.mark.process


class Recorder(Strategy):
    name = "rec"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.events, self.fills, self.states = [], [], []

    def on_order(self, e):
        self.events.append(e)

    def on_fill(self, f):
        self.fills.append(f)

    def on_trading_state(self, state, reason):
        self.states.append((state, reason))


@pytest.fixture(scope="module")
def trading(tmp_path_factory):
    t = Trading(tmp_path_factory.mktemp("port") / "home", **{
        "gateway.risk": {"duplicate_window_ms": 1.0},
        "gateway.risk.syms.QTY": {"max_order_qty": 10}})
    yield t
    t.close()


RUNS = iter(range(1, 1000))


def running(t, max_age_s=None):
    """A strategy bound to a GatewayPort; a client id of its own per run, as
    strategy.process gives each run (its tags start at rec-1 again)."""
    st = Recorder()
    port = GatewayPort(t.connect(f"rec@{next(RUNS)}"), max_age_s)
    rt = Runtime(st, port, Universe(), "event")
    st.bind(port, rt)
    st.now = time.time_ns()
    return st, port, rt


def until(st, port, rt, cond, timeout=10.0):
    def step():
        port.poll(50)
        rt.drain()
        return cond()
    return wait_for(step, timeout=timeout, every=0, what="the strategy's events")


def parent(st, tag, status):
    return [e for e in st.events if e.tag == tag and e.status == status]


def test_a_fill_through_the_venues_reaches_the_callbacks(trading):
    trading.quote("PF", 50.0, 50.02, 500, 500)
    st, port, rt = running(trading)
    tag = st.buy("PF", 40, 50.05, tif="ioc")
    until(st, port, rt, lambda: parent(st, tag, "FILLED"))
    assert sum(f.qty for f in st.fills if f.tag == tag) == 40 and st.position("PF") == 40
    assert st.orders[tag].status == "FILLED" and st.orders[tag].id.startswith("P")
    assert all(f.price == 50.02 for f in st.fills)


def test_a_risk_denial_is_a_rejected_order_event_with_the_gateways_code(trading):
    trading.quote("QTY", 10.0, 10.01)
    st, port, rt = running(trading)
    tag = st.buy("QTY", 11, 10.01)
    until(st, port, rt, lambda: parent(st, tag, "REJECTED"))
    (e,) = parent(st, tag, "REJECTED")
    assert e.code == "max_order_qty" and "max_order_qty" in e.text
    assert st.orders[tag].done and st.orders[tag].code == "max_order_qty"


def test_an_order_the_gateway_could_not_route_ends_expired(trading):
    """The gateway answers an IOC that finds no displayed size with status EXPIRED in the reply
    and sends no event after it; the port delivers the parent's end itself."""
    trading.quote("NR", 20.0, 20.02, 100, 100)
    st, port, rt = running(trading)
    tag = st.buy("NR", 10, 19.5, tif="ioc")          # below the ask: nothing to take
    until(st, port, rt, lambda: st.orders[tag].done)
    assert st.orders[tag].status == "EXPIRED" and [e.status for e in st.events if e.tag == tag] == ["EXPIRED"]


def test_cancel_replace_and_refusals(trading):
    trading.quote("RP", 30.0, 30.04, 1000, 1000)
    st, port, rt = running(trading)
    tag = st.buy("RP", 100, 29.0)                    # rests
    until(st, port, rt, lambda: parent(st, tag, "NEW"))
    st.replace(tag, qty=150, price=29.5)
    until(st, port, rt, lambda: st.orders[tag].qty == 150 and st.orders[tag].price == 29.5)
    st.cancel(tag)
    until(st, port, rt, lambda: parent(st, tag, "CANCELED"))
    st.cancel(tag)                                   # nothing left to cancel: the gateway's code
    until(st, port, rt, lambda: any(e.code == "not_working" for e in st.events))
    (e,) = [e for e in st.events if e.code == "not_working"]
    assert e.tag == tag and e.text.startswith("cancel refused")


def test_a_stale_decision_is_not_sent(trading):
    trading.quote("ST", 40.0, 40.02)
    st, port, rt = running(trading, max_age_s=1.0)
    before = trading.gw.counts["new"]
    st.now = time.time_ns() - 5_000_000_000          # as if catching up on the log
    tag = st.buy("ST", 5, 40.02)
    rt.drain()
    assert st.orders[tag].status == "REJECTED" and st.orders[tag].code == "stale_data"
    st.now = time.time_ns()
    fresh = st.buy("ST", 5, 40.02, tif="ioc")
    until(st, port, rt, lambda: st.orders[fresh].done)
    assert st.orders[fresh].status == "FILLED" and trading.gw.counts["new"] == before + 1


def test_trading_state_changes_reach_the_strategy(trading):
    st, port, rt = running(trading)
    trading.quote("SS", 10.0, 10.02)
    st.buy("SS", 1, 10.02, tif="ioc")                # the gateway learns this client's connection
    until(st, port, rt, lambda: st.working() == [])
    trading.client.reduce("drill")
    try:
        until(st, port, rt, lambda: st.states)
        assert st.states[-1] == ("REDUCING", "drill") and st.trading_state == "REDUCING"
    finally:
        trading.client.resume("drill over")
    until(st, port, rt, lambda: st.trading_state == "ACTIVE")


def test_no_gateway_is_a_refusal_not_a_hang(tmp_path):
    from gateway.client import OrderClient
    from helpers import free_port
    st = Recorder()
    port = GatewayPort(OrderClient(f"tcp://127.0.0.1:{free_port()}", client="rec@nobody"), connect_wait_s=0.2)
    rt = Runtime(st, port, Universe(), "event")
    st.bind(port, rt)
    st.now = time.time_ns()
    t0 = time.monotonic()
    tag = st.buy("X", 1, 10.0)
    rt.drain()
    assert time.monotonic() - t0 < 5 and st.orders[tag].code == "gateway_down"
    port.client.close()
