"""The venue simulator: a quickfix acceptor in front of a MatchingEngine.

    venue = Venue(VenueSettings(name="A", port=5301), state_dir).start()
    venue.on_quote_batch(batch)  # or on_quotes(...)/on_quote(...): the market, from any thread
    venue.halt("AAPL"); venue.resume("AAPL")
    venue.stop()
    python -m gateway.venue --name A [--config FILE] [--home DIR] [--port N] [--no-quotes]

Threads. quickfix's acceptor threads run FixApp callbacks, which only convert and enqueue
into the Inbox. One matching thread owns the engine: it drains the inbox (orders, cancels,
replaces, logons/logouts, quote batches, halts), feeds the engine with the wall-clock time,
wakes when a request's latency elapses (engine.next_due), and sends every report with
Session.sendToTarget. So the engine is single-threaded, and a slow or failing report never
blocks a quickfix thread.

Sessions: one per client CompID in settings.target_comp_ids, all on settings.port. The file
store under `state_dir` keeps sequence numbers and sent messages across restarts of either
side (no reset on logon).

Cancel-on-disconnect: when a session logs out or drops, its working orders are canceled
(ExecType 4, Text says why), its not-yet-live orders are rejected and its pending cancels/
replaces get OrderCancelReject 0. Those reports are sent while the session is down: quickfix
stores them under the next sequence numbers, and when the client logs on again (without a
reset) it sees the gap and the venue resends them (PossDupFlag=Y). A client that logs on with
a sequence reset loses them; the orders are canceled either way.

A venue that is killed loses its book (it is a simulator): clients see no report for orders
that were working; its FIX store survives, so sequence numbers continue.

The market: the process subscribes to the tickerplant's quote table with `subscribe_quotes`
(the one function that knows the subscriber API); tests feed quotes directly.
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gateway.config import VenueSettings
from gateway.fix import VENUE_ACCEPTS, Endpoint, LoggedOn, LoggedOut, Received, SessionSpec
from gateway.matching import MatchingEngine, Routed

log = logging.getLogger("venue")


@dataclass(frozen=True, slots=True)
class _Quotes:
    columns: tuple                    # (time, sym, bid, ask, bsize, asize) as numpy / (codes, words)


@dataclass(frozen=True, slots=True)
class _Halt:
    sym: str
    on: bool


_STOP = object()


def _quote_columns(batch) -> tuple:
    """Numpy columns of a pyarrow RecordBatch of the quote table, built on the caller's thread."""
    import pyarrow as pa

    def col(name):
        return batch.column(batch.schema.get_field_index(name))
    t = col("time")
    if pa.types.is_timestamp(t.type):
        t = t.cast(pa.timestamp("ns")).cast(pa.int64())
    sym = col("sym")
    if pa.types.is_dictionary(sym.type):
        sym = (sym.indices.to_numpy(zero_copy_only=False), sym.dictionary.to_pylist())
    else:
        sym = sym.to_numpy(zero_copy_only=False)
    return (t.to_numpy(zero_copy_only=False), sym,
            *(col(n).to_numpy(zero_copy_only=False) for n in ("bid", "ask", "bsize", "asize")))


class Venue:
    def __init__(self, settings: VenueSettings, state_dir: str | Path, *,
                 clock: Callable[[], int] = time.time_ns, id_prefix: str | None = None):
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.clock = clock
        if id_prefix is None:  # ExecIDs stay unique across restarts of the venue
            id_prefix = f"{settings.name}{np.base_repr(clock() // 1_000_000, 36)}-"
        self.engine = MatchingEngine(settings.fill_model(), venue=settings.name, id_prefix=id_prefix,
                                     syms=settings.syms or None, halted=settings.halted)
        self.fix = Endpoint.acceptor([SessionSpec(settings.comp_id, t) for t in settings.target_comp_ids],
                                     port=settings.port, directory=self.state_dir,
                                     allowed_remote=settings.allowed_remote, accepts=VENUE_ACCEPTS)
        self.inbox, self.app = self.fix.inbox, self.fix.app
        self.counters = {"events": 0, "errors": 0, "reports": 0, "unsent": 0, "cancel_on_disconnect": 0}
        self.last_error = ""
        self.quote_sub = None      # the TP subscription feeding it quotes (subscribe_quotes), if any
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------
    def sessions(self) -> list[str]:
        return list(self.fix.sessions)

    def start(self) -> "Venue":
        s = self.settings
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"venue-{s.name}-matching", daemon=True)
        self._thread.start()
        try:
            self.fix.start()
        except Exception:
            self.stop()
            raise
        log.info("venue %s (%s) accepting %s on port %d", s.name, s.comp_id, ", ".join(s.target_comp_ids), s.port)
        return self

    def stop(self) -> None:
        """Log every session out, stop the matching thread. Safe to call twice, from a signal."""
        if not self._running:
            return
        self._running = False
        try:
            self.fix.stop()            # logs the sessions out
            self.fix.close()           # and frees their SessionIDs in this process
        except Exception:  # noqa: BLE001 - stopping anyway
            log.exception("stopping the acceptor")
        self.inbox.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(10)
        self.inbox.close()
        self._stopped.set()

    def run(self) -> None:
        """Start if needed, then block until stop() (the process's main thread)."""
        if not self._running:
            self.start()
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> "Venue":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- inputs (any thread) -----------------------------------------------------------------------
    def on_quote_batch(self, batch) -> None:
        """A pyarrow RecordBatch of the quote table."""
        self.inbox.put(_Quotes(_quote_columns(batch)))

    def on_quotes(self, time, sym, bid, ask, bsize, asize) -> None:
        self.inbox.put(_Quotes((np.asarray(time), sym, np.asarray(bid), np.asarray(ask),
                                np.asarray(bsize), np.asarray(asize))))

    def on_quote(self, sym: str, bid: float, ask: float, bsize: int, asize: int, time: int | None = None) -> None:
        t = self.clock() if time is None else time
        self.on_quotes([t], [sym], [bid], [ask], [bsize], [asize])

    def halt(self, sym: str) -> None:
        self.inbox.put(_Halt(sym, True))

    def resume(self, sym: str) -> None:
        self.inbox.put(_Halt(sym, False))

    def health(self) -> dict:
        """The health hook (tickerplant/health.py): in = events (FIX messages, quote batches,
        session changes), out = reports sent; lag of the quote subscription."""
        from tickerplant.health import subscriber_health
        c = self.counters
        h = subscriber_health(self.quote_sub)
        h.update(msgs_in=c["events"], msgs_out=c["reports"], errors=h["errors"] + c["errors"] + c["unsent"],
                 last_error=self.last_error)
        return h

    def status(self) -> dict:
        return {"name": self.settings.name, "port": self.settings.port,
                "sessions": {s: self.app.logged_on(s) for s in self.sessions()},
                "counters": dict(self.counters), "fix": dict(self.app.counters),
                "engine": dict(self.engine.counters)}

    # -- the matching thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        engine, inbox = self.engine, self.inbox
        while True:
            due = engine.next_due()
            timeout = 0.5 if due is None else min(0.5, max(0.0, (due - self.clock()) / 1e9))
            inbox.wait(timeout)
            for ev in inbox.drain(4096):
                if ev is _STOP:
                    return
                self._handle(ev)
            if engine.next_due() is not None:
                self._guard(lambda: engine.advance(self.clock()))

    def _handle(self, ev) -> None:
        self.counters["events"] += 1
        engine = self.engine
        if isinstance(ev, Received):
            self._guard(lambda: engine.submit(ev.session, ev.message, self.clock()))
        elif isinstance(ev, _Quotes):
            self._guard(lambda: engine.on_quotes(*ev.columns))
        elif isinstance(ev, LoggedOut):
            n = len(engine.working(ev.session))
            if n:
                self.counters["cancel_on_disconnect"] += n
                log.info("%s disconnected: canceling its %d working orders", ev.session, n)
            self._guard(lambda: engine.cancel_all(ev.session, self.clock()))
        elif isinstance(ev, LoggedOn):
            log.info("%s logged on", ev.session)
        elif isinstance(ev, _Halt):
            self._guard(lambda: (engine.halt if ev.on else engine.resume)(ev.sym, self.clock()))

    def _guard(self, step: Callable[[], list[Routed]]) -> None:
        """Run one engine step and send its reports; a failure is logged and counted, and the
        loop goes on with the next event."""
        try:
            out = step()
        except Exception:  # noqa: BLE001 - one bad event must not stop the venue
            self.counters["errors"] += 1
            self.last_error = f"engine step failed: {sys.exc_info()[1]!r}"[:1000]
            log.exception("venue %s: engine step failed; continuing", self.settings.name)
            return
        for r in out:
            try:
                if self.app.send(r.session, r.report, r.reject_reason):
                    self.counters["reports"] += 1
                else:
                    self.counters["unsent"] += 1
                    log.warning("no session %s for report %s", r.session, r.report)
            except Exception:  # noqa: BLE001
                self.counters["errors"] += 1
                log.exception("sending a report to %s failed", r.session)


def subscribe_quotes(venue: Venue, tp, curve=None) -> Callable[[], None]:
    """Feed `venue` the tickerplant's quote table from a thread (the whole day, then live);
    returns a function that stops it. The only place the venue knows the subscriber API."""
    from tickerplant.subscriber import Subscriber, Update
    state = {"sub": None, "stopped": False}

    def follow():
        while not state["stopped"]:
            try:
                state["sub"] = venue.quote_sub = sub = Subscriber(tp, tables=["quote"], curve=curve)
                for ev in sub:
                    if isinstance(ev, Update):
                        venue.on_quote_batch(ev.batch)
            except Exception:  # noqa: BLE001 - TP away or restarting: subscribe again
                if not state["stopped"]:
                    log.exception("quote subscription failed; subscribing again in 1 s")
                    time.sleep(1)

    def stop():
        state["stopped"] = True
        if state["sub"] is not None:
            state["sub"].close()

    threading.Thread(target=follow, name=f"venue-{venue.settings.name}-quotes", daemon=True).start()
    return stop


def settings_for(cfg, name: str) -> VenueSettings:
    """This venue's settings from the config's `[venues.<name>]`; an unknown name is an error
    naming the configured ones."""
    if name not in cfg.venues:
        raise SystemExit(f"gateway.venue: no venue {name!r} in the config; configured: "
                         f"{sorted(cfg.venues)} (add a [venues.{name}] table)")
    return cfg.venues[name]


def main(argv=None) -> None:
    from gateway.config import VenueConfig
    from schemas.process import boot, on_term

    def flags(ap):
        ap.add_argument("--name", required=True, help="venue name (its settings: venues.<name>)")
        ap.add_argument("--port", type=int, help="FIX port, instead of the configured one")
        ap.add_argument("--no-quotes", action="store_true", help="do not subscribe to the tickerplant")
    cfg, args = boot("gateway.venue", VenueConfig, argv, flags)
    settings = settings_for(cfg, args.name)
    if args.port:
        settings = VenueSettings(**{**settings.model_dump(), "port": args.port})
    from tickerplant.health import start_monitor
    venue = Venue(settings, cfg.root / "fix" / f"venue-{settings.name}")
    on_term(venue.stop)
    venue.start()
    stop_quotes = None if args.no_quotes else subscribe_quotes(venue, cfg.tickerplant, cfg.curve)
    watch = start_monitor(f"venue-{args.name}", cfg, venue.health)
    try:
        venue.run()
    finally:
        watch.close()
        if stop_quotes:
            stop_quotes()


if __name__ == "__main__":
    main()
