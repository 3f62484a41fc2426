"""One end of our FIX sessions: a quickfix threaded socket acceptor or initiator, its FixApp
and the Inbox its callbacks feed, started and stopped together.

    ep = Endpoint.initiator([SessionSpec("GATEWAY", "VENUE_A", port=5301)], heartbeat_s=5,
                            reconnect_s=1, directory=home / "fix" / "gateway").start()
    poller.register(ep.inbox, zmq.POLLIN)         # LoggedOn / LoggedOut / Received / ... events
    ep.send("FIX.4.4:GATEWAY->VENUE_A", NewOrder(...))
    ep.stop()

The consumer of `inbox` is one thread; `send` is safe from any thread. quickfix's threads
only run the FixApp callbacks (see gateway.fix.app for what they may and may not do).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Iterable

import quickfix as fix

from gateway.fix.app import CLIENT_ACCEPTS, VENUE_ACCEPTS, FixApp
from gateway.fix.inbox import Inbox
from gateway.fix.session_settings import LOOPBACK, SessionSpec, acceptor_settings, initiator_settings

log = logging.getLogger("fix")


class Endpoint:
    def __init__(self, settings: fix.SessionSettings, role: str, accepts: Iterable[str],
                 sessions: list[str], resend_app: bool = True):
        if role not in ("acceptor", "initiator"):
            raise ValueError(f"role {role!r}: 'acceptor' or 'initiator'")
        self.role = role
        self.sessions = sessions
        self.inbox = Inbox()
        self.app = FixApp(self.inbox.put, accepts, resend_app)
        self._settings = settings          # quickfix keeps references into these objects
        self._store = fix.FileStoreFactory(settings)
        self._logs = fix.FileLogFactory(settings)
        cls = fix.ThreadedSocketAcceptor if role == "acceptor" else fix.ThreadedSocketInitiator
        self._engine = cls(self.app, self._store, settings, self._logs)
        self._lock = threading.Lock()
        self.running = False

    @classmethod
    def acceptor(cls, sessions: Iterable[SessionSpec], *, port: int, directory: Path,
                 allowed_remote: Iterable[str] = LOOPBACK, accepts: Iterable[str] = VENUE_ACCEPTS,
                 reset_on_logon: bool = False) -> "Endpoint":
        sessions = list(sessions)
        qf = acceptor_settings(sessions, port=port, directory=directory, allowed_remote=allowed_remote,
                               reset_on_logon=reset_on_logon)
        return cls(qf, "acceptor", accepts, [f"FIX.4.4:{s.sender}->{s.target}" for s in sessions])

    @classmethod
    def initiator(cls, sessions: Iterable[SessionSpec], *, heartbeat_s: int, reconnect_s: int,
                  directory: Path, accepts: Iterable[str] = CLIENT_ACCEPTS,
                  reset_on_logon: bool = False, resend_app: bool = True) -> "Endpoint":
        """`resend_app=False`: application messages asked for again are gap-filled, never
        resent (see gateway.fix.app)."""
        sessions = list(sessions)
        qf = initiator_settings(sessions, heartbeat_s=heartbeat_s, reconnect_s=reconnect_s,
                                directory=directory, reset_on_logon=reset_on_logon)
        return cls(qf, "initiator", accepts, [f"FIX.4.4:{s.sender}->{s.target}" for s in sessions],
                   resend_app)

    def start(self) -> "Endpoint":
        with self._lock:
            if not self.running:
                self._engine.start()
                self.running = True
        return self

    def stop(self, force: bool = False) -> None:
        """Log every session out (force: just drop the connections) and stop. Idempotent.
        A graceful stop waits (whole seconds, quickfix's granularity) for the logouts; an
        initiator's stop takes about a second either way (its connect loop sleeps 1 s)."""
        with self._lock:
            if self.running:
                self.running = False
                self._engine.stop(force)

    def close(self) -> None:
        """Stop (dropping connections) and release the quickfix engine, which unregisters its
        sessions: only then can this process create an Endpoint with the same sessions again
        (quickfix keeps one registry of sessions per process). Close the inbox after the
        consumer is done with it."""
        self.stop(force=True)
        self._engine = None

    def send(self, session: str, obj, reject_reason: int | None = None) -> bool:
        return self.app.send(session, obj, reject_reason)

    def next_target_seq(self, session: str) -> int:
        """The MsgSeqNum this end expects next from the peer (from the file store)."""
        return fix.Session.lookupSession(self.app.sessions[session]).getExpectedTargetNum()

    def set_next_target_seq(self, session: str, seq: int) -> None:
        """Expect `seq` next from the peer: set lower than the store's, the peer is asked to
        resend everything from `seq` at the next logon. Call before `start`."""
        fix.Session.lookupSession(self.app.sessions[session]).setNextTargetMsgSeqNum(seq)

    def logged_on(self, session: str | None = None) -> bool:
        """Is `session` (default: every session) logged on?"""
        names = [session] if session else self.sessions
        return all(self.app.logged_on(s) for s in names)

    def wait_logged_on(self, timeout: float, session: str | None = None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.logged_on(session):
                return True
            time.sleep(0.005)
        return False

    def __enter__(self) -> "Endpoint":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
