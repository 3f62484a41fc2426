"""Venue messages that make no sense never stop the gateway. The venue here is a real quickfix
acceptor in the test that answers the gateway's orders with whatever the test sends: a
duplicate ExecID, an overfill, a report for an order nobody sent, fields our converter cannot
hold, a value the data dictionary refuses. Each is counted (and published as an alarm where
an operator must look); the order's state stays right and trading goes on."""
from __future__ import annotations

import gc
import threading
import time

import pytest
import quickfix as fix

from gateway.fix import VENUE_ACCEPTS, Endpoint, Received, SessionReject, SessionSpec, to_fix
from gateway.model import ExecReport, ExecType, NewOrder, OrdStatus
from helpers import free_port, wait_for
from trading import Trading, events_until

pytestmark = pytest.mark.process
SESSION = "FIX.4.4:VENUE_X->GATEWAY"


class ScriptedVenue:
    """The acceptor: the orders it received, and reports sent exactly as the test writes them."""

    def __init__(self, port, directory):
        self.ep = Endpoint.acceptor([SessionSpec("VENUE_X", "GATEWAY")], port=port, directory=directory,
                                    accepts=VENUE_ACCEPTS).start()
        self.events = []

    def take(self, kind, timeout=10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.ep.inbox.wait(0.05)
            self.events += self.ep.inbox.drain()
            for i, ev in enumerate(self.events):
                if isinstance(ev, kind) or (isinstance(ev, Received) and isinstance(ev.message, kind)):
                    return self.events.pop(i)
        raise AssertionError(f"the test venue got no {kind.__name__}")

    def report(self, o: NewOrder, exec_id, exec_type, status, last_qty=0, cum=0, px=10.1, cl=None, raw=None):
        r = ExecReport(cl or o.cl_ord_id, "X-1", exec_id, exec_type, status, o.sym, o.side, o.qty,
                       last_qty=last_qty, last_px=px if last_qty else 0.0, cum_qty=cum,
                       leaves_qty=0 if status in (OrdStatus.FILLED,) else max(o.qty - cum, 0),
                       avg_px=px if cum else 0.0, price=o.price, time=time.time_ns())
        if raw is None:
            assert self.ep.send(SESSION, r)
            return
        msg = to_fix(r)
        for tag, value in raw.items():
            msg.setField(tag, value)
        assert fix.Session.sendToTarget(msg, self.ep.app.sessions[SESSION])

    def close(self):
        self.ep.close()
        self.ep = None
        gc.collect()              # quickfix's objects freed here, not in some forked child later


@pytest.fixture
def junk(tmp_path):
    port = free_port()
    venue = ScriptedVenue(port, tmp_path / "venue")
    t = None
    try:
        t = Trading(tmp_path / "home", in_process_venues=(), **{
            "venues.X": {"port": port},
            "gateway": {"venues": ["X"], "heartbeat_s": 1, "sor": False, "default_venue": "X"}})
        yield t, venue
    finally:
        if t is not None:
            t.close()
        venue.close()


def parent_is(tag, status):
    return lambda e: e.get("event") == "order" and e["tag"] == tag and "venue" not in e and e["status"] == status


def test_bad_duplicate_unknown_and_overfilling_reports_never_stop_the_gateway(junk):
    t, x = junk
    c = t.client
    t.quote("JNK", 10.0, 10.1)
    r = c.new("JNK", "buy", 100, 10.1, tag="j1")
    assert r["ok"] and r["children"][0]["venue"] == "X"
    o = x.take(NewOrder).message
    x.report(o, "E1", ExecType.NEW, OrdStatus.NEW)
    x.report(o, "E2", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, 40, 40)
    x.report(o, "E2", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, 40, 40)        # duplicate ExecID
    x.report(o, "E3", ExecType.TRADE, OrdStatus.FILLED, 80, 120)                 # overfill: 120 > 100
    x.report(o, "E4", ExecType.NEW, OrdStatus.NEW, cl="NOT-OURS")                # an unknown order
    x.report(o, "E5", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, 10, 50, raw={32: "1.5"})  # qty 1.5
    x.report(o, "E6", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, 10, 50, raw={39: "Z"})    # no such status
    x.report(o, "E7", ExecType.TRADE, OrdStatus.FILLED, 60, 100)
    evs = events_until(c, parent_is("j1", "FILLED"))
    assert evs[-1]["cum_qty"] == 100
    assert sorted(e["exec_id"] for e in evs if e["event"] == "fill" and e["tag"] == "j1") == ["E2", "E7"]
    st = c.status()
    assert st["counters"]["duplicate_reports"] == 1
    assert st["counters"]["overfill_reports"] == 1 and st["counters"]["unknown_reports"] == 1
    assert st["fix"]["parse_errors"] == 1                   # ours: a fractional quantity
    assert [p["qty"] for p in st["positions"] if p["sym"] == "JNK"] == [100]
    rejects = [x.take(SessionReject), x.take(SessionReject)]  # both bad messages answered with 35=3
    assert any("1.5" in r.text or "32" in r.text or r.ref_tag == 32 for r in rejects)
    alarms = t.published("alarm", lambda a: a["code"] in ("overfill", "unknown_order"))
    assert {a["code"] for a in alarms} == {"overfill", "unknown_order"}
    execs = t.published("execution", lambda e: e["parent"] == r["id"])
    assert sorted((e["exec_id"], e["qty"]) for e in execs) == [("E2", 40), ("E7", 60)]

    # and trading goes on, on the same session
    r2 = c.new("JNK", "sell", 100, 10.0, tag="j2")
    assert r2["ok"]
    o2 = x.take(NewOrder).message
    x.report(o2, "F1", ExecType.NEW, OrdStatus.NEW)
    x.report(o2, "F2", ExecType.TRADE, OrdStatus.FILLED, 100, 100, px=10.0)
    events_until(c, parent_is("j2", "FILLED"))
    wait_for(lambda: [p["qty"] for p in c.status()["positions"] if p["sym"] == "JNK"] in ([0], []),
             what="the position to be flat")
    assert t.gw.fix.logged_on() and c.status()["venues"]["X"]["ready"]


def test_the_kill_switch_waits_out_a_pending_replace_then_cancels_and_confirms(junk):
    """HALTED lets cancels through; an order whose replace is still pending at the venue gets
    its cancel as soon as the replace is answered, and the halt answers only once the venue
    confirmed the cancel."""
    from gateway.model import CancelOrder, ReplaceOrder
    t, x = junk
    c = t.client
    t.quote("HLT", 10.0, 10.1)
    c.new("HLT", "buy", 100, 10.0, tag="h1")
    o = x.take(NewOrder).message
    x.report(o, "H1", ExecType.NEW, OrdStatus.NEW)
    events_until(c, parent_is("h1", "NEW"))
    assert c.replace("h1", qty=120, price=10.05)["ok"]
    rep = x.take(ReplaceOrder).message                  # the venue holds its answer back
    halted = {}
    th = threading.Thread(target=lambda: halted.update(c.halt("drill", timeout=30)))
    other = t.connect("test")                            # the halt blocks its own client
    th.start()
    wait_for(lambda: other.status()["state"] == "HALTED", what="HALTED")
    assert th.is_alive()                                 # nothing confirmed yet
    r = ExecReport(rep.cl_ord_id, "X-1", "H2", ExecType.REPLACED, OrdStatus.NEW, o.sym, o.side, 120,
                   leaves_qty=120, orig_cl_ord_id=o.cl_ord_id, price=10.05, time=time.time_ns())
    assert x.ep.send(SESSION, r)
    cx = x.take(CancelOrder).message                     # sent once the replace resolved
    assert cx.orig_cl_ord_id == rep.cl_ord_id
    assert th.is_alive()
    r = ExecReport(cx.cl_ord_id, "X-1", "H3", ExecType.CANCELED, OrdStatus.CANCELED, o.sym, o.side, 120,
                   orig_cl_ord_id=rep.cl_ord_id, price=10.05, time=time.time_ns())
    assert x.ep.send(SESSION, r)
    th.join(10)
    assert halted["ok"] and halted["working"] == [] and halted["state"] == "HALTED"
    (p,) = [p for p in other.orders()["orders"] if p["tag"] == "h1"]
    assert p["status"] == "CANCELED" and p["qty"] == 120
    assert other.resume("drill over")["state"] == "ACTIVE"
