"""The quickfix Application for both ends of our sessions: callbacks that only validate,
convert and hand over.

quickfix calls an Application on its own threads (one per session with the Threaded*
acceptor/initiator). A Python exception escaping a callback that is not one of quickfix's
own ends the process (the wrapper calls Py_Exit(1)) or wedges the session, so here every
callback catches everything, counts it, and answers at the FIX level where that is right:

    message the model cannot hold (MessageError)   -> session Reject 3 (373=1 or 5, 58=why)
    valid FIX, but not a type this role accepts     -> BusinessMessageReject j (380=3)
    a bug of ours while handing the message over   -> BusinessMessageReject j (380=4), logged
Messages that break the data dictionary never get here: quickfix rejects them itself.

What gets through is one event per message, given to `deliver` (typically `Inbox.put`):
    LoggedOn(session) / LoggedOut(session)           - session up / down (logout or drop)
    Received(session, message, seq, poss_dup, reject_reason) - a model object (NewOrder,
                                                       CancelOrder, ReplaceOrder, ExecReport,
                                                       CancelReject)
    SessionReject(session, ref_seq, ref_tag, reason, text)    - the peer sent us a 35=3
    BusinessReject(session, ref_seq, ref_msg_type, reason, text) - the peer sent us a 35=j
    Heartbeat(session, test_req_id)                 - the answer to our `test_request`
`session` is quickfix's SessionID string, e.g. "FIX.4.4:VENUE_A->GATEWAY". The consumer, a
single thread, does the real work and answers with `send(session, obj)`, which is safe from
any thread (quickfix locks the session).

Resends. When the peer asks for messages again (ResendRequest), quickfix resends what it stored
with PossDupFlag=Y, calling `toApp` first. With `resend_app=False` (the gateway) `toApp` refuses
every application message on a resend and quickfix gap-fills it instead: an order that did not
reach the venue when it was sent must not arrive later, when the market has moved and the
sender may already have counted it as canceled. The venues resend (their reports are facts).

`test_request(session, id)` sends a TestRequest; the peer's Heartbeat answer carries the id and
is delivered as `Heartbeat`. quickfix delivers a session's incoming messages in sequence order,
so when that Heartbeat arrives, every message the peer sent before it (including what it
resent after a logon) has been delivered: the gateway uses this to know a venue caught up.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

import quickfix as fix

from gateway.fix.convert import (MSG_SEQ_NUM, POSS_DUP, MessageError, fields_of, from_fields, msg_type,
                                 reject_reason, to_fix)

log = logging.getLogger("fix")

VENUE_ACCEPTS = frozenset("DFG")       # what a venue takes from a client
CLIENT_ACCEPTS = frozenset("89")       # what the gateway takes from a venue

# session-level and business reject reasons we send (FIX 4.4, tags 373 and 380)
REQUIRED_TAG_MISSING, VALUE_IS_INCORRECT = 1, 5
UNSUPPORTED_MESSAGE_TYPE, APPLICATION_NOT_AVAILABLE = 3, 4


@dataclass(frozen=True, slots=True)
class LoggedOn:
    session: str


@dataclass(frozen=True, slots=True)
class LoggedOut:
    session: str


@dataclass(frozen=True, slots=True)
class Received:
    session: str
    message: object                   # a gateway.model object
    seq: int                          # MsgSeqNum (34)
    poss_dup: bool = False            # PossDupFlag (43): a resend
    reject_reason: int | None = None  # OrdRejReason (103) of a rejected order's report


@dataclass(frozen=True, slots=True)
class SessionReject:
    session: str
    ref_seq: int
    ref_tag: int | None
    reason: int | None
    text: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    session: str
    test_req_id: str


@dataclass(frozen=True, slots=True)
class BusinessReject:
    session: str
    ref_seq: int | None
    ref_msg_type: str
    reason: int
    text: str


def _field(fm, tag: int) -> str | None:
    return fm.getField(tag) if fm.isSetField(tag) else None


def _int_field(fm, tag: int) -> int | None:
    raw = _field(fm, tag)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None


class FixApp(fix.Application):
    """Validates, converts and hands over; never raises anything but quickfix's exceptions.
    `accepts` is the set of MsgTypes (35) this end takes (VENUE_ACCEPTS or CLIENT_ACCEPTS)."""

    def __init__(self, deliver: Callable[[object], None], accepts: Iterable[str],
                 resend_app: bool = True):
        super().__init__()
        self.deliver = deliver
        self.accepts = frozenset(accepts)
        self.resend_app = resend_app
        # what a received message's `venue` says: the peer's CompID, or the name given here
        self.venue_names: dict[str, str] = {}
        self.sessions: dict[str, fix.SessionID] = {}
        self._lock = threading.Lock()
        self.counters = {"received": 0, "logons": 0, "logouts": 0, "parse_errors": 0,
                         "unsupported": 0, "errors": 0, "rejects_received": 0, "sent": 0,
                         "gap_filled": 0}

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + n

    # -- sending (any thread) -----------------------------------------------------------------
    def send(self, session: str, obj, reject_reason: int | None = None) -> bool:
        """Send a model object on `session`. False if there is no such session. While the
        session is down quickfix stores the message; the peer gets it by resend on logon."""
        sid = self.sessions.get(session)
        if sid is None:
            return False
        msg = to_fix(obj, reject_reason)
        try:
            ok = fix.Session.sendToTarget(msg, sid)
        except fix.SessionNotFound:
            return False
        if ok:
            self.count("sent")
        return ok

    def test_request(self, session: str, test_req_id: str) -> bool:
        """Send a TestRequest (35=1); the answer arrives as a `Heartbeat` event."""
        sid = self.sessions.get(session)
        if sid is None:
            return False
        msg = fix.Message()
        msg.getHeader().setField(35, "1")
        msg.setField(112, test_req_id)
        try:
            return fix.Session.sendToTarget(msg, sid)
        except fix.SessionNotFound:
            return False

    def logged_on(self, session: str) -> bool:
        sid = self.sessions.get(session)
        s = fix.Session.lookupSession(sid) if sid is not None else None
        return bool(s is not None and s.isLoggedOn())

    # -- callbacks (quickfix's threads) --------------------------------------------------------
    def onCreate(self, sid):
        try:
            self.sessions[sid.toString()] = fix.SessionID(sid.getBeginString().getValue(),
                                                          sid.getSenderCompID().getValue(),
                                                          sid.getTargetCompID().getValue())
        except Exception:
            self._failed("onCreate")

    def onLogon(self, sid):
        try:
            self.count("logons")
            self.deliver(LoggedOn(sid.toString()))
        except Exception:
            self._failed("onLogon")

    def onLogout(self, sid):
        try:
            self.count("logouts")
            self.deliver(LoggedOut(sid.toString()))
        except Exception:
            self._failed("onLogout")

    def toAdmin(self, msg, sid):
        pass

    def toApp(self, msg, sid):
        if self.resend_app:
            return
        try:
            h = msg.getHeader()
            resend = h.isSetField(POSS_DUP) and h.getField(POSS_DUP) == "Y"
        except Exception:
            self._failed("toApp")
            return
        if resend:
            self.count("gap_filled")
            raise fix.DoNotSend()      # quickfix's own exception: it gap-fills this message

    def fromAdmin(self, msg, sid):
        try:
            kind = msg_type(msg)
            if kind == "0" and msg.isSetField(112):
                self.deliver(Heartbeat(sid.toString(), msg.getField(112)))
            elif kind == "3":
                self.count("rejects_received")
                ev = SessionReject(sid.toString(), _int_field(msg, 45) or 0, _int_field(msg, 371),
                                   _int_field(msg, 373), _field(msg, 58) or "")
                log.warning("%s rejected our message %d: %s", ev.session, ev.ref_seq, ev.text)
                self.deliver(ev)
        except Exception:
            self._failed("fromAdmin")

    def fromApp(self, msg, sid):
        try:
            kind = msg_type(msg)
            if kind == "j":
                self.count("rejects_received")
                self.deliver(BusinessReject(sid.toString(), _int_field(msg, 45), _field(msg, 372) or "",
                                            _int_field(msg, 380) or 0, _field(msg, 58) or ""))
                return
            if kind not in self.accepts:
                self.count("unsupported")
                self._reply(msg, sid, "j", UNSUPPORTED_MESSAGE_TYPE, None,
                            f"MsgType {kind} is not accepted here; this end takes {sorted(self.accepts)}")
                return
            fields = fields_of(msg)
            peer = sid.getTargetCompID().getValue()
            obj = from_fields(fields, venue=self.venue_names.get(peer, peer))
            self.deliver(Received(sid.toString(), obj, int(fields.get(MSG_SEQ_NUM, 0)),
                                  fields.get(POSS_DUP) == "Y", reject_reason(fields) if kind == "8" else None))
            self.count("received")
        except MessageError as e:
            self.count("parse_errors")
            self._reply(msg, sid, "3", REQUIRED_TAG_MISSING if e.missing else VALUE_IS_INCORRECT,
                        e.tag, f"{e}; the message was not processed, fix it and send a new one")
        except Exception:
            self._failed("fromApp")
            self._reply(msg, sid, "j", APPLICATION_NOT_AVAILABLE, None,
                        "internal error; the message was not processed, send it again as a new request")

    # -- helpers --------------------------------------------------------------------------------
    def _reply(self, msg, sid, kind: str, reason: int, tag: int | None, text: str) -> None:
        """Answer `msg` with a Reject (3) or BusinessMessageReject (j). Never raises."""
        try:
            out = fix.Message()
            h = out.getHeader()
            h.setField(8, "FIX.4.4")
            h.setField(35, kind)
            ref_seq = _field(msg.getHeader(), MSG_SEQ_NUM)
            if ref_seq is not None:
                out.setField(45, ref_seq)
            ref_type = msg_type(msg) or "?"
            out.setField(372, ref_type)
            if kind == "3":
                out.setField(373, str(reason))
                if tag is not None:
                    out.setField(371, str(tag))
            else:
                out.setField(380, str(reason))
            out.setField(58, text.replace("\x01", " ")[:500])
            fix.Session.sendToTarget(out, sid)
        except Exception:
            self._failed("reject")

    def _failed(self, where: str) -> None:
        self.count("errors")
        try:
            log.exception("FIX callback %s failed; the session goes on", where)
        except Exception:
            pass
