"""The FIX layer: our FIX 4.4 dictionary, model <-> message conversions, session settings, the
inbox, and the callback discipline over real quickfix sessions on loopback."""
from __future__ import annotations

import math
import threading
import time
import xml.etree.ElementTree as ET

import pytest
import quickfix as fix
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.fix import (DICTIONARY, BusinessReject, Endpoint, Inbox, MessageError, Received,
                         SessionReject, SessionSpec, acceptor_text, format_price, format_time, from_fix,
                         initiator_text, parse_time, to_fix)
from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus, OrdType,
                           ReplaceOrder, Side, TimeInForce)
from helpers import free_port

DD = fix.DataDictionary(str(DICTIONARY))


def wire(msg: fix.Message, seq: int = 1) -> str:
    """The message as a peer would receive it: full header, serialized."""
    h = msg.getHeader()
    h.setField(49, "A")
    h.setField(56, "B")
    h.setField(34, str(seq))
    h.setField(52, "20260101-12:00:00.000")
    return msg.toString()


def received(text: str) -> fix.Message:
    """Parse and validate as a session with UseDataDictionary=Y does."""
    msg = fix.Message(text, DD, True)
    DD.validate(msg)
    return msg


# -- the dictionary ---------------------------------------------------------------------------------
def test_the_dictionary_uses_fix44_tag_numbers_and_enums():
    """Every field and enum value we define is the one quickfix's own FIX field catalogue has."""
    root = ET.parse(DICTIONARY).getroot()
    assert (root.get("major"), root.get("minor")) == ("4", "4") and DD.getVersion() == "FIX.4.4"
    fields = root.find("fields")
    assert len(fields) > 100
    for f in fields:
        name, number = f.get("name"), int(f.get("number"))
        assert getattr(fix, name)().getField() == number, name
        known = {str(v) for k, v in vars(fix).items() if k.startswith(name + "_")}
        for v in f.findall("value"):
            assert v.get("enum") in known, (name, v.get("enum"))
    kinds = {m.get("msgtype") for m in root.find("messages")}
    assert kinds == set("012345A89DFGj")


def test_quickfix_validates_messages_with_our_dictionary():
    order = NewOrder("c1", "AAPL", Side.BUY, 100, OrdType.LIMIT, 10.5, time=1_700_000_000_123_000_000)
    assert from_fix(received(wire(to_fix(order)))) == order
    missing = to_fix(order)
    missing.removeField(55)
    with pytest.raises(fix.RequiredTagMissing):
        received(wire(missing))
    for tag, value in [(40, "5"), (54, "Z"), (59, "9")]:      # 40=5 is no longer used in FIX 4.4
        bad = to_fix(order)
        bad.setField(tag, value)
        with pytest.raises(fix.IncorrectTagValue):
            received(wire(bad))
    undefined = to_fix(order)
    undefined.setField(9999, "x")
    with pytest.raises(fix.FIXException):
        received(wire(undefined))


# -- conversions ------------------------------------------------------------------------------------
IDS = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="|"), min_size=1, max_size=20)
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
PRICES = st.floats(min_value=1e-6, max_value=1e7, allow_nan=False, allow_infinity=False)
QTY = st.integers(0, 10**9)
TIMES = st.integers(0, 4_000_000_000 * 10**9)
SIDES, TYPES, TIFS = st.sampled_from(list(Side)), st.sampled_from(list(OrdType)), st.sampled_from(list(TimeInForce))

NEW = st.builds(NewOrder, cl_ord_id=IDS, sym=IDS, side=SIDES, qty=QTY, ord_type=TYPES,
                price=st.none() | PRICES, tif=TIFS, account=st.just("") | IDS, time=TIMES)
CANCEL = st.builds(CancelOrder, cl_ord_id=IDS, orig_cl_ord_id=IDS, sym=IDS, side=SIDES, qty=QTY,
                   order_id=st.just("") | IDS, time=TIMES)
REPLACE = st.builds(ReplaceOrder, cl_ord_id=IDS, orig_cl_ord_id=IDS, sym=IDS, side=SIDES, qty=QTY,
                    price=st.none() | PRICES, ord_type=TYPES, tif=TIFS, order_id=st.just("") | IDS, time=TIMES)


@st.composite
def exec_reports(draw):
    exec_type = draw(st.sampled_from(list(ExecType)))
    trade = exec_type is ExecType.TRADE
    return ExecReport(cl_ord_id=draw(st.just("") | IDS), order_id=draw(IDS.filter(lambda s: s != "NONE")),
                      exec_id=draw(IDS), exec_type=exec_type,
                      ord_status=draw(st.sampled_from([s for s in OrdStatus if s is not OrdStatus.REPLACED])),
                      sym=draw(IDS), side=draw(SIDES), order_qty=draw(QTY),
                      last_qty=draw(QTY) if trade else 0, last_px=draw(PRICES) if trade else 0.0,
                      leaves_qty=draw(QTY), cum_qty=draw(QTY), avg_px=draw(st.just(0.0) | PRICES),
                      orig_cl_ord_id=draw(st.just("") | IDS), price=draw(st.none() | PRICES),
                      text=draw(TEXT).strip(), venue="VENUE_A", fee=draw(st.just(0.0) | PRICES | PRICES.map(lambda x: -x)),
                      time=draw(TIMES))


CXL_REJECT = st.builds(CancelReject, cl_ord_id=IDS, orig_cl_ord_id=IDS, order_id=IDS.filter(lambda s: s != "NONE"),
                       ord_status=st.sampled_from([s for s in OrdStatus if s is not OrdStatus.REPLACED]),
                       response_to=st.sampled_from(["1", "2"]), reason=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 99]),
                       text=TEXT.map(str.strip), venue=st.just("VENUE_A"), time=TIMES)


@settings(max_examples=300)
@given(obj=st.one_of(NEW, CANCEL, REPLACE, exec_reports(), CXL_REJECT))
def test_model_to_fix_and_back_is_identity_and_valid_fix44(obj):
    msg = received(wire(to_fix(obj)))          # through the wire format and the dictionary
    assert from_fix(msg, venue="VENUE_A") == obj


def test_a_reject_carries_its_ordrejreason_and_no_order_id_reads_as_none():
    r = ExecReport("c", "", "e1", ExecType.REJECTED, OrdStatus.REJECTED, "AAPL", Side.SELL, 5, text="why")
    msg = received(wire(to_fix(r, reject_reason=13)))
    assert (msg.getField(103), msg.getField(37), msg.getField(58)) == ("13", "NONE", "why")
    assert from_fix(msg).order_id == ""


def test_objects_fix_cannot_carry_are_refused_when_sending():
    with pytest.raises(ValueError, match="OrdStatus 5"):
        to_fix(ExecReport("c", "o", "e", ExecType.REPLACED, OrdStatus.REPLACED, "A", Side.BUY, 1))
    with pytest.raises(ValueError, match="cl_ord_id is empty"):
        to_fix(NewOrder("", "A", Side.BUY, 1))
    with pytest.raises(ValueError, match="delimiter"):
        to_fix(NewOrder("a\x01b", "A", Side.BUY, 1))
    with pytest.raises(ValueError, match="finite"):
        to_fix(NewOrder("a", "A", Side.BUY, 1, price=math.inf))


GOOD = wire(to_fix(NewOrder("c1", "AAPL", Side.BUY, 100, OrdType.LIMIT, 10.5, time=10**18)))


@pytest.mark.parametrize("tag, value, missing", [
    (11, None, True), (55, None, True), (54, None, True), (38, None, True), (60, None, True),
    (54, "5", False), (38, "1.5", False), (38, "ten", False), (44, "nan", False), (44, "x", False),
    (60, "2026-01-01 12:00:00", False), (60, "20260101-12:00:00.1234567890", False), (40, "3", False),
])
def test_a_message_the_model_cannot_hold_raises_message_error_naming_the_tag(tag, value, missing):
    msg = fix.Message(GOOD, DD, False)
    if value is None:
        msg.removeField(tag)
    else:
        msg.setField(tag, value)
    with pytest.raises(MessageError) as e:
        from_fix(msg)
    assert e.value.tag == tag and e.value.missing is missing and str(tag) in str(e.value)


def test_a_data_field_holding_the_delimiter_does_not_confuse_parsing():
    msg = fix.Message(GOOD, DD, False)
    msg.setField(354, "5")
    msg.setField(355, "a\x01b=c")
    assert from_fix(received(msg.toString())) == from_fix(fix.Message(GOOD, DD, False))


@given(drop=st.sets(st.sampled_from([11, 55, 54, 38, 40, 44, 59, 60, 1])),
       garble=st.dictionaries(st.sampled_from([11, 55, 54, 38, 40, 44, 59, 60]),
                              st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=12),
                              max_size=3))
def test_any_broken_order_gives_a_model_object_or_message_error_never_anything_else(drop, garble):
    msg = fix.Message(GOOD, DD, False)
    for tag in drop:
        msg.removeField(tag)
    for tag, value in garble.items():
        msg.setField(tag, value)
    try:
        obj = from_fix(msg)
    except MessageError:
        return
    assert isinstance(obj, NewOrder) and obj.qty == int(obj.qty)


@given(ns=TIMES)
def test_timestamps_round_trip_to_the_nanosecond(ns):
    text = format_time(ns)
    assert parse_time(text) == ns
    assert len(text.split(".")[1]) in (3, 6, 9)


@given(px=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False) | st.floats(min_value=1e-12, max_value=1e-4))
def test_prices_are_written_exactly_and_never_in_exponent_form(px):
    text = format_price(px)
    assert float(text) == px and "e" not in text.lower()


# -- settings -----------------------------------------------------------------------------------------
def test_session_settings_hold_the_recovery_and_latency_choices(tmp_path):
    text = initiator_text([SessionSpec("GW", "VENUE_A", port=5301), SessionSpec("GW", "VENUE_B", port=5302)],
                          heartbeat_s=2, reconnect_s=1, directory=tmp_path / "gw")
    for line in ["ConnectionType=initiator", "ResetOnLogon=N", "ResetOnDisconnect=N", "PersistMessages=Y",
                 "SocketNodelay=Y", "UseDataDictionary=Y", f"DataDictionary={DICTIONARY}", "HeartBtInt=2",
                 f"FileStorePath={tmp_path / 'gw' / 'store'}", "SocketConnectHost=127.0.0.1"]:
        assert line in text.splitlines()
    assert text.count("[SESSION]") == 2 and (tmp_path / "gw" / "store").is_dir()
    acc = acceptor_text([SessionSpec("VENUE_A", "GW")], port=5301, directory=tmp_path / "v")
    assert "AllowedRemoteAddresses=127.0.0.1" in acc.splitlines() and "ResetOnLogon=N" in acc.splitlines()
    s = fix.SessionSettings()
    s.setFromString(text)
    assert s.size() == 2
    with pytest.raises(ValueError, match="CompID"):
        acceptor_text([SessionSpec("VENUE A", "GW")], port=5301, directory=tmp_path)
    with pytest.raises(ValueError, match="port"):
        initiator_text([SessionSpec("GW", "V")], heartbeat_s=1, reconnect_s=1, directory=tmp_path)


# -- the inbox ----------------------------------------------------------------------------------------
def test_inbox_wakes_a_zmq_poller_and_loses_nothing_from_many_threads():
    inbox = Inbox()
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for s in (pull, push):
        s.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    poller.register(pull, zmq.POLLIN)
    try:
        assert poller.poll(50) == []
        n, producers = 20_000, 4

        def produce(k):
            for i in range(n):
                inbox.put((k, i))
        threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for t in threads:
            t.start()
        push.send(b"tick")
        got, zmsgs, end = [], [], time.monotonic() + 30
        while (len(got) < n * producers or not zmsgs) and time.monotonic() < end:
            for sock, _ in poller.poll(1000):
                if sock is pull:
                    zmsgs.append(pull.recv())
                else:
                    got += inbox.drain(1000)
        for t in threads:
            t.join()
        got += inbox.drain()
        assert zmsgs == [b"tick"]
        for k in range(producers):
            assert [i for kk, i in got if kk == k] == list(range(n))
        assert inbox.drain() == [] and not inbox.wait(0.01)
    finally:
        pull.close()
        push.close()
        inbox.close()


# -- real sessions: the callback discipline ------------------------------------------------------------
_unread: dict[int, list] = {}     # events drained from an inbox but not yet looked at


def wait_event(inbox: Inbox, pred, timeout: float = 5.0):
    """The next event matching `pred` (events before it are skipped, events after it kept)."""
    buf = _unread.setdefault(id(inbox), [])
    end = time.monotonic() + timeout
    while True:
        while buf:
            ev = buf.pop(0)
            if pred(ev):
                return ev
        if time.monotonic() > end:
            raise AssertionError("no matching FIX event within the timeout")
        inbox.wait(0.05)
        buf += inbox.drain()


@pytest.fixture(scope="module")
def session_pair(tmp_path_factory):
    """(server, client): an acceptor taking orders and an initiator taking reports, logged on
    (one pair for the module: an initiator takes a second to stop)."""
    tmp = tmp_path_factory.mktemp("pair")
    port = free_port()
    server = Endpoint.acceptor([SessionSpec("SRV", "CLI")], port=port, directory=tmp / "srv")
    client = Endpoint.initiator([SessionSpec("CLI", "SRV", port=port)], heartbeat_s=1, reconnect_s=1,
                                directory=tmp / "cli")
    try:
        server.start()
        client.start()
        assert client.wait_logged_on(10) and server.wait_logged_on(10)
        yield server, client
    finally:
        client.close()
        server.close()


@pytest.fixture
def pair(session_pair):
    for ep in session_pair:
        ep.inbox.drain()
        _unread.pop(id(ep.inbox), None)
        assert ep.logged_on(), "the shared session is down: an earlier test broke it"
    return session_pair


CLI, SRV = "FIX.4.4:CLI->SRV", "FIX.4.4:SRV->CLI"
ORDER = NewOrder("c1", "AAPL", Side.BUY, 100, OrdType.LIMIT, 10.5, time=1_700_000_000_000_000_000)


def raw_send(ep: Endpoint, session: str, msg: fix.Message) -> None:
    fix.Session.sendToTarget(msg, ep.app.sessions[session])


def test_messages_cross_a_real_session_both_ways(pair):
    server, client = pair
    assert client.send(CLI, ORDER)
    ev = wait_event(server.inbox, lambda e: isinstance(e, Received))
    assert ev.message == ORDER and ev.session == SRV and not ev.poss_dup
    report = ExecReport("c1", "O1", "E1", ExecType.REJECTED, OrdStatus.REJECTED, "AAPL", Side.BUY, 100, text="no")
    assert server.send(SRV, report, reject_reason=1)
    ev = wait_event(client.inbox, lambda e: isinstance(e, Received))
    assert ev.message == ExecReport(**{**report_fields(report), "venue": "SRV"}) and ev.reject_reason == 1


def report_fields(r):
    return {k: getattr(r, k) for k in r.__dataclass_fields__}


def test_a_message_the_model_cannot_hold_gets_a_session_reject_saying_why(pair):
    server, client = pair
    bad = to_fix(ORDER)
    bad.setField(54, "5")                             # valid FIX 4.4 (sell short), not for us
    raw_send(client, CLI, bad)
    ev = wait_event(client.inbox, lambda e: isinstance(e, SessionReject))
    assert (ev.ref_tag, ev.reason) == (54, 5) and "Side" in ev.text
    bad = to_fix(ORDER)
    bad.removeField(55)                               # breaks the dictionary: quickfix rejects it
    raw_send(client, CLI, bad)
    ev = wait_event(client.inbox, lambda e: isinstance(e, SessionReject))
    assert (ev.ref_tag, ev.reason) == (55, 1)
    assert server.app.counters["parse_errors"] >= 1 and client.logged_on()
    client.send(CLI, ORDER)
    assert wait_event(server.inbox, lambda e: isinstance(e, Received)).message == ORDER


def test_an_unexpected_message_type_gets_a_business_reject(pair):
    server, client = pair
    report = ExecReport("c1", "O1", "E1", ExecType.NEW, OrdStatus.NEW, "AAPL", Side.BUY, 100, leaves_qty=100)
    raw_send(client, CLI, to_fix(report))             # an ExecutionReport sent to the order taker
    ev = wait_event(client.inbox, lambda e: isinstance(e, BusinessReject))
    assert (ev.ref_msg_type, ev.reason) == ("8", 3)
    assert server.app.counters["unsupported"] >= 1


def test_an_exception_in_our_callback_code_is_counted_answered_and_the_session_goes_on(pair):
    server, client = pair
    real = server.app.deliver
    errors = server.app.counters["errors"]

    def broken(ev):
        raise RuntimeError("a bug in the consumer's hand-over")
    server.app.deliver = broken
    client.send(CLI, ORDER)
    ev = wait_event(client.inbox, lambda e: isinstance(e, BusinessReject))
    assert (ev.ref_msg_type, ev.reason) == ("D", 4) and "not processed" in ev.text
    assert server.app.counters["errors"] == errors + 1
    server.app.deliver = real
    client.send(CLI, NewOrder("c2", "AAPL", Side.SELL, 5, OrdType.MARKET))
    assert wait_event(server.inbox, lambda e: isinstance(e, Received)).message.cl_ord_id == "c2"


def test_reports_sent_while_the_client_is_away_are_resent_on_its_return(tmp_path):
    """The file store and no reset on logon: a client that drops (as if killed) and comes back
    with its store gets every report the venue sent meanwhile, in order, marked PossDup."""
    port = free_port()                               # its own CompIDs: one SessionID per process at a time
    server = Endpoint.acceptor([SessionSpec("SRV2", "CLI2")], port=port, directory=tmp_path / "srv").start()
    spec = [SessionSpec("CLI2", "SRV2", port=port)]
    client = Endpoint.initiator(spec, heartbeat_s=1, reconnect_s=1, directory=tmp_path / "cli").start()
    again = None
    try:
        assert client.wait_logged_on(10)
        client.close()                                # no logout: the connection just drops
        end = time.monotonic() + 10
        while server.logged_on() and time.monotonic() < end:
            time.sleep(0.01)
        for i in range(3):
            assert server.send("FIX.4.4:SRV2->CLI2", ExecReport("c1", "O1", f"E{i}", ExecType.CANCELED, OrdStatus.CANCELED,
                                               "AAPL", Side.BUY, 100, cum_qty=i))
        again = Endpoint.initiator(spec, heartbeat_s=1, reconnect_s=1, directory=tmp_path / "cli").start()
        got = [wait_event(again.inbox, lambda e: isinstance(e, Received)) for _ in range(3)]
        assert [e.message.exec_id for e in got] == ["E0", "E1", "E2"] and all(e.poss_dup for e in got)
    finally:
        for ep in (again, client, server):
            if ep is not None:
                ep.close()
