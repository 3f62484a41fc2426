"""The venue simulator over real FIX sessions on loopback: a quickfix initiator in the test
against the venue's acceptor. Every order lifecycle, cancel-on-disconnect, garbage on the
FIX port, and the process itself fed by a real tickerplant."""
from __future__ import annotations

import os
import signal
import socket
import time

import pytest
import quickfix as fix

from gateway.config import VenueSettings
from gateway.fix import BusinessReject, Endpoint, Received, SessionReject, SessionSpec, to_fix
from gateway.matching import CxlRejReason, OrdRejReason
from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus, OrdType,
                           ReplaceOrder, Side, TimeInForce)
from gateway.venue import Venue
from helpers import free_port

BUY, SELL, LMT, MKT = Side.BUY, Side.SELL, OrdType.LIMIT, OrdType.MARKET


class Client:
    """A quickfix initiator playing the gateway, with the events it has not looked at yet."""

    def __init__(self, port: int, directory, comp_id: str = "GATEWAY", venue: str = "VENUE_T"):
        self.session = f"FIX.4.4:{comp_id}->{venue}"
        self.ep = Endpoint.initiator([SessionSpec(comp_id, venue, port=port)], heartbeat_s=1, reconnect_s=1,
                                     directory=directory).start()
        self.unread: list = []
        assert self.ep.wait_logged_on(10), "no logon to the venue"

    def send(self, obj) -> None:
        assert self.ep.send(self.session, obj)

    def next(self, pred=lambda e: True, timeout: float = 5.0):
        end = time.monotonic() + timeout
        while True:
            while self.unread:
                ev = self.unread.pop(0)
                if pred(ev):
                    return ev
            if time.monotonic() > end:
                raise AssertionError("no matching event from the venue within the timeout")
            self.ep.inbox.wait(0.05)
            self.unread += self.ep.inbox.drain()

    def reports(self, n: int, timeout: float = 5.0) -> list[Received]:
        """The next n ExecutionReports / OrderCancelRejects."""
        return [self.next(lambda e: isinstance(e, Received), timeout) for _ in range(n)]

    def quiet(self, wait: float = 0.3) -> list:
        """Whatever else arrives within `wait` seconds (to show nothing more was sent)."""
        time.sleep(wait)
        self.unread += self.ep.inbox.drain()
        out = [e for e in self.unread if isinstance(e, Received)]
        self.unread = []
        return out

    def close(self) -> None:
        self.ep.close()


SETTINGS = dict(name="T", display_fraction=0.5, price_offset=0.01, taker_fee_per_share=0.002,
                maker_fee_per_share=-0.001)


@pytest.fixture(scope="module")
def venue(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("venue")
    v = Venue(VenueSettings(port=free_port(), **SETTINGS), tmp / "venue")
    try:
        v.start()
        yield v
    finally:
        v.stop()


@pytest.fixture(scope="module")
def client(venue, tmp_path_factory):
    c = Client(venue.settings.port, tmp_path_factory.mktemp("gw"))
    yield c
    c.close()


@pytest.fixture
def gw(client):
    client.quiet(0)
    assert client.ep.logged_on(), "the shared session is down: an earlier test broke it"
    return client


def quote(venue, sym, bid, ask, bsize, asize):
    venue.on_quote(sym, bid, ask, bsize, asize)


def one(gw, exec_type=None):
    (ev,) = gw.reports(1)
    if exec_type is not None:
        assert ev.message.exec_type is exec_type, ev.message
    return ev.message


# -- lifecycles ----------------------------------------------------------------------------------------
def test_fill(venue, gw):
    quote(venue, "FILL", 99.9, 100.0, 500, 500)
    gw.send(NewOrder("fill-1", "FILL", BUY, 100, LMT, 100.5))
    new, fill = (e.message for e in gw.reports(2))
    assert (new.exec_type, new.ord_status, new.leaves_qty) == (ExecType.NEW, OrdStatus.NEW, 100)
    assert (fill.exec_type, fill.ord_status, fill.last_qty, fill.cum_qty, fill.leaves_qty) == (
        ExecType.TRADE, OrdStatus.FILLED, 100, 100, 0)
    assert fill.last_px == fill.avg_px == 100.01                       # ask + the venue's offset
    assert fill.fee == pytest.approx(100 * 0.002) and fill.order_id == new.order_id != fill.exec_id
    assert fill.venue == "VENUE_T" and fill.exec_id != new.exec_id


def test_partial_fill_by_displayed_size_then_rests_and_fills_when_a_later_quote_crosses(venue, gw):
    quote(venue, "PART", 50.0, 50.1, 100, 100)                       # displays 50
    gw.send(NewOrder("part-1", "PART", BUY, 80, LMT, 50.2))
    new, fill = (e.message for e in gw.reports(2))
    assert (fill.last_qty, fill.leaves_qty, fill.ord_status) == (50, 30, OrdStatus.PARTIALLY_FILLED)
    assert gw.quiet() == []                                            # the rest rests
    quote(venue, "PART", 50.0, 50.3, 100, 100)                       # not crossing
    assert gw.quiet() == []
    quote(venue, "PART", 50.0, 50.15, 100, 200)                      # 50.16 <= 50.2: crosses
    fill = one(gw, ExecType.TRADE)
    assert (fill.last_qty, fill.last_px, fill.cum_qty, fill.leaves_qty, fill.ord_status) == (
        30, 50.2, 80, 0, OrdStatus.FILLED)
    assert fill.fee == pytest.approx(30 * -0.001)                      # maker rebate
    assert fill.avg_px == pytest.approx((50 * 50.11 + 30 * 50.2) / 80)


def test_two_orders_cannot_take_the_same_displayed_size(venue, gw):
    quote(venue, "LIQ", 10.0, 10.1, 200, 200)                         # displays 100
    gw.send(NewOrder("liq-1", "LIQ", BUY, 70, LMT, 10.2))
    gw.send(NewOrder("liq-2", "LIQ", BUY, 70, LMT, 10.2))
    evs = [e.message for e in gw.reports(4)]
    fills = [m for m in evs if m.exec_type is ExecType.TRADE]
    assert [(m.cl_ord_id, m.last_qty) for m in fills] == [("liq-1", 70), ("liq-2", 30)]
    assert gw.quiet() == []


def test_market_ioc_and_fok(venue, gw):
    quote(venue, "TIF", 20.0, 20.1, 100, 100)                         # displays 50 a side
    gw.send(NewOrder("mkt-1", "TIF", SELL, 10, MKT, None))
    new, fill = (e.message for e in gw.reports(2))
    assert (fill.last_px, fill.last_qty, fill.ord_status) == (19.99, 10, OrdStatus.FILLED) and fill.price is None
    gw.send(NewOrder("ioc-1", "TIF", SELL, 60, LMT, 19.0, TimeInForce.IOC))   # 40 left on the bid
    new, fill, cxl = (e.message for e in gw.reports(3))
    assert (fill.last_qty, cxl.exec_type, cxl.ord_status, cxl.cum_qty, cxl.leaves_qty) == (
        40, ExecType.CANCELED, OrdStatus.CANCELED, 40, 0)
    gw.send(NewOrder("fok-1", "TIF", BUY, 51, LMT, 21.0, TimeInForce.FOK))    # 50 on the ask: killed
    new, kill = (e.message for e in gw.reports(2))
    assert (kill.exec_type, kill.cum_qty) == (ExecType.CANCELED, 0) and "FOK" in kill.text
    gw.send(NewOrder("fok-2", "TIF", BUY, 50, LMT, 21.0, TimeInForce.FOK))
    new, fill = (e.message for e in gw.reports(2))
    assert (fill.last_qty, fill.ord_status) == (50, OrdStatus.FILLED)


def test_cancel_and_replace(venue, gw):
    quote(venue, "CXL", 30.0, 30.5, 100, 100)
    gw.send(NewOrder("cxl-1", "CXL", BUY, 100, LMT, 30.1))
    one(gw, ExecType.NEW)
    gw.send(ReplaceOrder("cxl-2", "cxl-1", "CXL", BUY, 150, 30.2))
    rep = one(gw, ExecType.REPLACED)
    assert (rep.cl_ord_id, rep.orig_cl_ord_id, rep.order_qty, rep.price, rep.leaves_qty, rep.ord_status) == (
        "cxl-2", "cxl-1", 150, 30.2, 150, OrdStatus.NEW)
    gw.send(CancelOrder("cxl-3", "cxl-2", "CXL", BUY, 150))
    cxl = one(gw, ExecType.CANCELED)
    assert (cxl.cl_ord_id, cxl.orig_cl_ord_id, cxl.ord_status, cxl.leaves_qty) == ("cxl-3", "cxl-2", OrdStatus.CANCELED, 0)
    gw.send(CancelOrder("cxl-4", "cxl-3", "CXL", BUY, 150))
    (ev,) = gw.reports(1)
    assert isinstance(ev.message, CancelReject)
    assert (ev.message.reason, ev.message.response_to, ev.message.ord_status) == (
        CxlRejReason.TOO_LATE_TO_CANCEL, "1", OrdStatus.CANCELED)
    gw.send(ReplaceOrder("cxl-5", "nope", "CXL", BUY, 10, 30.0))
    (ev,) = gw.reports(1)
    assert (ev.message.reason, ev.message.response_to) == (CxlRejReason.UNKNOWN_ORDER, "2")


def test_replace_that_becomes_marketable_fills(venue, gw):
    quote(venue, "REP", 40.0, 40.5, 400, 400)
    gw.send(NewOrder("rep-1", "REP", SELL, 100, LMT, 41.0))
    one(gw, ExecType.NEW)
    gw.send(ReplaceOrder("rep-2", "rep-1", "REP", SELL, 100, 39.9))
    rep, fill = (e.message for e in gw.reports(2))
    assert rep.exec_type is ExecType.REPLACED and (fill.last_px, fill.last_qty, fill.cl_ord_id) == (39.99, 100, "rep-2")


@pytest.mark.parametrize("order, reason", [
    (NewOrder("rej-sym", "NOSUCH", BUY, 10, LMT, 1.0), OrdRejReason.UNKNOWN_SYMBOL),
    (NewOrder("rej-qty", "REJ", BUY, 0, LMT, 1.0), OrdRejReason.INCORRECT_QUANTITY),
    (NewOrder("rej-neg", "REJ", BUY, -3, LMT, 1.0), OrdRejReason.INCORRECT_QUANTITY),
    (NewOrder("rej-px", "REJ", BUY, 10, LMT, None), OrdRejReason.OTHER),
    (NewOrder("rej-px0", "REJ", BUY, 10, LMT, 0.0), OrdRejReason.OTHER),
    (NewOrder("rej-mkt", "ONESIDED", BUY, 10, MKT, None), OrdRejReason.OTHER),
    (NewOrder("rej-halt", "HALTED", BUY, 10, LMT, 1.0), OrdRejReason.EXCHANGE_CLOSED),
])
def test_rejects_carry_ordrejreason_over_fix(venue, gw, order, reason):
    quote(venue, "REJ", 1.0, 1.1, 100, 100)
    quote(venue, "ONESIDED", 1.0, float("nan"), 100, 0)
    quote(venue, "HALTED", 1.0, 1.1, 100, 100)
    venue.halt("HALTED")
    gw.send(order)
    (ev,) = gw.reports(1)
    rep = ev.message
    assert (rep.exec_type, rep.ord_status, rep.cl_ord_id, rep.leaves_qty) == (
        ExecType.REJECTED, OrdStatus.REJECTED, order.cl_ord_id, 0)
    assert ev.reject_reason == reason and rep.text


def test_halted_sym_takes_cancels_but_not_orders_and_resumes(venue, gw):
    quote(venue, "HLT", 5.0, 5.5, 100, 100)
    gw.send(NewOrder("hlt-1", "HLT", BUY, 10, LMT, 5.1))
    one(gw, ExecType.NEW)
    venue.halt("HLT")
    quote(venue, "HLT", 4.0, 4.5, 100, 100)                           # would cross: halted, no fill
    gw.send(NewOrder("hlt-2", "HLT", BUY, 10, LMT, 5.1))
    assert gw.reports(1)[0].reject_reason == OrdRejReason.EXCHANGE_CLOSED
    venue.resume("HLT")
    quote(venue, "HLT", 4.0, 4.6, 100, 100)
    assert one(gw, ExecType.TRADE).last_px == 5.1


# -- sessions ---------------------------------------------------------------------------------------
def test_cancel_on_disconnect_and_the_reports_reach_the_client_when_it_returns(tmp_path):
    port = free_port()
    settings = VenueSettings(port=port, target_comp_ids=("GW1", "GW2"), **SETTINGS)
    v = Venue(settings, tmp_path / "venue").start()
    a = b = again = None
    try:
        a = Client(port, tmp_path / "gw1", comp_id="GW1")
        b = Client(port, tmp_path / "gw2", comp_id="GW2")
        quote(v, "COD", 10.0, 10.5, 100, 100)
        a.send(NewOrder("a-1", "COD", BUY, 10, LMT, 10.1))
        a.send(NewOrder("a-2", "COD", SELL, 10, LMT, 10.4))
        b.send(NewOrder("b-1", "COD", BUY, 10, LMT, 10.2))
        assert len(a.reports(2)) == 2 and len(b.reports(1)) == 1
        a.close()                                                  # dropped, as if killed
        a = None
        end = time.monotonic() + 10
        while len(v.engine.working()) > 1 and time.monotonic() < end:
            time.sleep(0.02)
        assert [o.cl_ord_id for o in v.engine.working()] == ["b-1"]    # the other client's order stays
        again = Client(port, tmp_path / "gw1", comp_id="GW1")         # same store: sequence recovery
        cxl = [e for e in again.reports(2)]
        assert [(e.message.cl_ord_id, e.message.exec_type) for e in cxl] == [
            ("a-1", ExecType.CANCELED), ("a-2", ExecType.CANCELED)]
        assert all(e.poss_dup and "disconnected" in e.message.text for e in cxl)
        assert v.status()["counters"]["cancel_on_disconnect"] == 2
    finally:
        for c in (a, b, again):
            if c is not None:
                c.close()
        v.stop()


def non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))      # no packet is sent; this picks the outgoing interface
            ip = s.getsockname()[0]
        return None if ip.startswith("127.") else ip
    except OSError:
        return None


LOGON = b"8=FIX.4.4\x019=65\x0135=A\x0134=1\x0149=GATEWAY\x0152=20260101-00:00:00.000\x0156=VENUE_T\x0198=0\x01108=1\x0110=000\x01"


def test_garbage_on_the_fix_port_and_bad_messages_do_not_stop_the_venue(venue, gw):
    port = venue.settings.port
    junk = [os.urandom(4096), b"8=FIX.4.4\x019=5000\x0135=D\x01", LOGON,
            LOGON.replace(b"GATEWAY", b"STRANGER"), b"\x00" * 100_000, b"GET / HTTP/1.1\r\n\r\n"]
    for payload in junk:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            try:
                s.sendall(payload)
                s.settimeout(0.3)
                s.recv(1024)
            except OSError:
                pass
    half = socket.create_connection(("127.0.0.1", port))                # a client that never finishes
    half.sendall(b"8=FIX.4.4\x019=")
    try:
        bad = to_fix(NewOrder("bad-1", "FILL", BUY, 10, LMT, 1.0))
        bad.setField(38, "ten")
        fix.Session.sendToTarget(bad, gw.ep.app.sessions[gw.session])
        assert isinstance(gw.next(lambda e: isinstance(e, SessionReject)), SessionReject)
        fix.Session.sendToTarget(to_fix(ExecReport("x", "o", "e", ExecType.NEW, OrdStatus.NEW, "FILL", BUY, 1)),
                                 gw.ep.app.sessions[gw.session])
        assert gw.next(lambda e: isinstance(e, BusinessReject)).reason == 3
        quote(venue, "ALIVE", 1.0, 1.1, 100, 100)
        gw.send(NewOrder("alive-1", "ALIVE", BUY, 10, LMT, 2.0))
        assert [e.message.exec_type for e in gw.reports(2)] == [ExecType.NEW, ExecType.TRADE]
        assert gw.ep.logged_on() and venue.status()["counters"]["errors"] == 0
    finally:
        half.close()


def logon_bytes(sender: str, target: str) -> bytes:
    m = fix.Message()
    h = m.getHeader()
    stamp = time.strftime("%Y%m%d-%H:%M:%S.000", time.gmtime())
    for tag, value in [(8, "FIX.4.4"), (35, "A"), (49, sender), (56, target), (34, "1"), (52, stamp)]:
        h.setField(tag, value)
    m.setField(98, "0")
    m.setField(108, "30")
    return m.toString().encode()


def logon_reply(src: str, dst: str, port: int, payload: bytes) -> bytes:
    with socket.create_connection((dst, port), timeout=3, source_address=(src, 0)) as s:
        s.sendall(payload)
        s.settimeout(3)
        try:
            return s.recv(4096)
        except OSError:
            return b""


def test_connections_from_other_addresses_than_loopback_are_refused(tmp_path):
    """quickfix's acceptor listens on every interface; AllowedRemoteAddresses keeps it loopback-only."""
    ip = non_loopback_ipv4()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    port = free_port()
    v = Venue(VenueSettings(name="R", port=port, target_comp_ids=("GW9",)), tmp_path).start()
    try:
        assert logon_reply(ip, ip, port, logon_bytes("GW9", "VENUE_R")) == b""
        assert b"\x0135=A\x01" in logon_reply("127.0.0.1", "127.0.0.1", port, logon_bytes("GW9", "VENUE_R"))
    finally:
        v.stop()


# -- the process -------------------------------------------------------------------------------------
def test_the_venue_process_fills_against_quotes_from_the_tickerplant(make_stack):
    import numpy as np
    from helpers import send, start_tp, wait_for
    port = free_port()
    cfg, procs = make_stack(**{"venues.P": {"port": port}})
    start_tp(cfg, procs)
    proc = procs.start("gateway.venue", "--name", "P", "--port", str(port), name="venue")
    gw = None
    try:
        wait_for(lambda: (cfg.root / "fix" / "venue-P" / "log").is_dir() and _listening(port), timeout=30,
                 what="the venue's FIX port")
        gw = Client(port, cfg.root / "gw", venue="VENUE_P")   # its own SessionID in this process
        send(cfg, "quote", [{"time": np.array([time.time_ns()]), "sym": np.array(["TPQ"]), "bid": np.array([9.0]),
                             "ask": np.array([9.5]), "bsize": np.array([100]), "asize": np.array([100])}])

        def filled():          # the venue may still be replaying the day: unknown sym until then
            gw.send(NewOrder(f"tp-{time.monotonic_ns()}", "TPQ", BUY, 10, LMT, 10.0))
            first = gw.reports(1)[0].message
            if first.exec_type is ExecType.REJECTED:
                return False
            fill = gw.reports(1)[0].message
            return fill.exec_type is ExecType.TRADE and fill.last_px == 9.5
        wait_for(filled, timeout=30, every=0.2, what="a fill against the tickerplant's quote")
    finally:
        if gw is not None:
            gw.close()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, procs.output("venue")
    procs.running.pop("venue")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def test_a_venue_killed_with_kill9_comes_back_with_its_sequence_numbers(make_stack):
    """The file store: after kill -9 and a restart, the client's session reconnects by itself
    and continues its sequence numbers (no reset), so nothing sent before is replayed or lost."""
    port = free_port()
    cfg, procs = make_stack(**{"venues.K": {"port": port}})
    args = ("--name", "K", "--port", str(port), "--no-quotes")
    procs.start("gateway.venue", *args, name="venue")
    gw = None
    try:
        from helpers import wait_for
        wait_for(lambda: _listening(port), timeout=30, what="the venue's FIX port")
        gw = Client(port, cfg.root / "gw", venue="VENUE_K")
        gw.send(NewOrder("k-1", "NOSUCH", BUY, 1, LMT, 1.0))
        before = gw.reports(1)[0]
        procs.kill("venue")                                            # SIGKILL
        wait_for(lambda: not gw.ep.logged_on(), timeout=10, what="the client to see the venue go")
        procs.start("gateway.venue", *args, name="venue")
        assert gw.ep.wait_logged_on(30), "the client did not log on to the restarted venue"
        gw.send(NewOrder("k-2", "NOSUCH", BUY, 1, LMT, 1.0))
        after = gw.next(lambda e: isinstance(e, Received) and e.message.cl_ord_id == "k-2")
        assert after.seq > before.seq and not after.poss_dup
        assert before.message.exec_id != after.message.exec_id       # ExecIDs unique across runs
    finally:
        if gw is not None:
            gw.close()
