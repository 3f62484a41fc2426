"""The order gateway: strategies' intents in, pre-trade risk, smart order routing, FIX 4.4 out
to the venues, and every order event and execution published through the tickerplant.

    gw = Gateway.from_config(cfg).start()       # or: python -m gateway [--config F] [--home H]
    OrderClient(cfg.gateway.intents).new("AAPL", "buy", 100, 189.5)
    gw.stop()

Threads. ONE kernel thread does all the work: it polls the intents ROUTER, the FIX inbox
(quickfix's callbacks only convert and enqueue: gateway.fix.app), the quote inbox (a thread
runs a tickerplant Subscriber on `quote` and hands each batch over) and its timers. So the
order state (gateway.orders.Orders), risk (gateway.risk.Risk), the parents and the routing
view are touched by one thread only. quickfix's threads, the quote thread and the Feed's I/O
thread never touch them.

Sockets. `intents` ROUTER (INTENTS.md; parsing in gateway.intents): every request is read with
NOBLOCK after a poll, its envelope parsed explicitly (a DEALER's identity alone, or a REQ's
routing frames up to the empty delimiter), and it gets exactly one reply, an error one for
junk (not JSON, not an object, unknown op or field, wrong type, several body frames): counted
as `bad_intents`, never blocking or ending the kernel. A frame over `max_intent_bytes` makes
ZeroMQ drop that peer (ZMQ_MAXMSGSIZE); raw TCP bytes that are not ZMTP never get past
ZeroMQ's handshake. Replies and events are sent NOBLOCK: a client that does not read loses
events past `events_hwm` (counted), the gateway never waits for it. Events go to DEALER
clients only (a REQ client gets its reply and nothing else), to the connection the client
(`client` field, else its identity) last sent a request on.

The path of a new intent (nothing reaches the wire without passing risk):
  parse -> idempotency by (client, tag) -> route (gateway.sor over the ready venues' views,
  gateway.quotes: TP quote x the venue's offset and display fraction, minus what we took, with
  its taker fees; or the named venue, or with SOR off the default venue) -> for each child
  `Risk.check(child, parent=...)` -> `Orders.new` -> FIX NewOrderSingle; a denied child is
  recorded with `Orders.deny` and its reason code. Cancels always pass risk (HALTED included);
  replaces pass `Risk.check_replace`. The reply says what happened; then `order`/`fill`
  events follow for the client's orders, and every state change and fill is an `order` /
  `execution` row (gateway.rows) published through the TP with a Feed. Rows collect and go
  out as one message per table when the kernel has been idle for `publish_idle_ms` (1 ms),
  or when the oldest waited `publish_max_ms` (20 ms): encoding a message costs about as much
  as handling an order, so it never sits between an order and its acks, and under load the
  messages grow by themselves. The kernel does not wait for the TP's ack before a FIX send (a
  TP round trip per order would double the latency): the recovery contract below covers an
  order sent whose rows were lost.

Trading states (gateway.risk): ACTIVE; REDUCING; HALTED. `halt` is the kill switch: HALTED,
then a cancel for every working order on every venue; the reply waits until the venues'
ExecutionReports confirmed that nothing works, or `halt_timeout_s` (then ok false, code
"halt_timeout", naming what is left). A cancel that cannot go yet (its order has a pending
replace) is sent as soon as that resolves; a cancel the venue rejects is retried (3 times).

Venues. One FIX session per venue (initiator, file store under <home>/fix/gateway). A venue
is routable ("ready") once logged on AND caught up: after each logon the gateway sends a
TestRequest, and quickfix delivers a session's messages in sequence order, so its Heartbeat
answer comes after everything the venue resent. A session that drops: `Orders.venue_down`
ends that venue's working orders CANCELED (our venues cancel a session's orders on
disconnect), published, and quickfix reconnects by itself every `reconnect_s`.

Venue messages that make no sense never stop anything (gateway.orders decides, this module
counts and publishes): a duplicate ExecID is ignored (counted); an unknown order, an
overfill, an impossible transition or a bad report is counted and published as an `alarm`
row; a message quickfix or our converter cannot parse is rejected at the session level
(gateway.fix.app) and counted. Trading goes on.

RECOVERY CONTRACT (restart after kill -9, or any crash)
  What survives: the TP log (the `order`/`execution` rows that reached it), quickfix's file
  store (sequence numbers, messages sent), and <home>/fix/gateway/durable.json.
  1. Ids are deterministic. A parent's id is a hash of (trading day, client, tag)
     (gateway.ids); its children are "<parent>.<n>". A strategy that resends an intent with a
     tag already used that day (same `client`) gets the existing order (`"dup": true`), never
     a new one, whether the gateway learned of that order from its rows or from a venue.
  2. State is rebuilt from today's rows (gateway.recovery): each order's last published state
     (Orders.restore; its filled quantity is at least what its `execution` rows add up to),
     every execution (positions, PnL, and its ExecID counted as seen, so a resent report is a
     duplicate), the (client, tag) map.
  3. Nothing a venue said is lost: each row carries the MsgSeqNum of the venue message that
     caused it (`fix_seq`), and at start the expected inbound sequence number of each session
     is set back to just after the last one that left an `order` row (each flush publishes its
     `order` message last, so that row proves the flush's other rows logged too; every fill
     and state change of a child leaves an `order` row) (or the value in durable.json,
     written at start, at a clean stop, and whenever every published row was acked). At logon
     the venue resends everything after it (PossDup); ExecIDs already applied are ignored, the
     rest applied. A report for a child of ours that no row mentions (it was sent, its row was
     lost with the process) adopts it: the child is rebuilt from the report and its parent id
     is read from its ClOrdID.
  4. Stale orders are never resent. On a ResendRequest, quickfix gap-fills every application
     message instead of resending it (FixApp resend_app=False): an order that did not reach
     the venue before the connection died is not delivered minutes later.
  5. Once a venue is caught up, any order still working there in our books is ended CANCELED
     ("not working at the venue after the reconnect"): the venue canceled it when our session
     dropped (cancel on disconnect) and said so in what it resent, or never received it.
  6. Until every venue is caught up (or `recovery_timeout_s` passes) new, cancel, replace and
     cancel_all requests wait in a queue (max_waiting_intents; beyond: code "busy"); status,
     orders and halt are answered at once.
  So after a kill -9 and restart: every order ends in the state the venue gave it, fills and
  positions are right, no order is sent twice, and working orders are gone (canceled by the
  venues; the strategy sends new ones with new tags).
  Assumed: venues cancel a session's orders on disconnect (ours do), and keep their FIX store.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import zmq

from gateway import ids, intents
from gateway.config import GatewaySettings, VenueSettings
from gateway.fix import (BusinessReject, Endpoint, Heartbeat, Inbox, LoggedOn, LoggedOut, Received,
                         SessionReject, SessionSpec)
from gateway.intents import (Cancel, CancelAll, IntentError, ListOrders, New, Replace, SetState,
                             Status)
from gateway.model import (CancelOrder, CancelReject, ExecReport, NewOrder, OrdStatus, OrdType,
                           ReplaceOrder, Side, TimeInForce)
from gateway.orders import Change, Order, Orders, Outcome
from gateway.quotes import QuoteView
from gateway.recovery import Published, read_published
from gateway.risk import Deny, Risk, TradingState
from gateway.rows import Rows
from gateway.sor import Child, Routing, parent_state, route
from tickerplant.clock import Clock
from tickerplant.health import subscriber_health
from tickerplant.config import CurveSettings
from tickerplant.curve import refused, secure_server

log = logging.getLogger("gateway")

SIDES = {"buy": Side.BUY, "sell": Side.SELL}
SIDE_NAMES = {Side.BUY: "buy", Side.SELL: "sell"}
TYPES = {"limit": OrdType.LIMIT, "market": OrdType.MARKET}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
TIFS = {"day": TimeInForce.DAY, "gtc": TimeInForce.GTC, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK}
TIF_NAMES = {v: k for k, v in TIFS.items()}
ORDER_OPS = (New, Cancel, Replace, CancelAll)
CANCEL_TRIES = 3
# risk codes about the parent itself (its size, price, sym, state): they hold for every child,
# so the first child's denial denies the parent and no other child is tried
PARENT_LEVEL = frozenset({Deny.HALTED, Deny.BAD_ORDER, Deny.RESTRICTED, Deny.MAX_ORDER_QTY,
                          Deny.NO_QUOTE, Deny.STALE_QUOTE, Deny.PRICE_COLLAR,
                          Deny.MAX_ORDER_NOTIONAL, Deny.DUPLICATE_ORDER})
INTENTS_PER_LOOP = 256
_NOBLOCK, _SNDMORE_NOBLOCK = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
FIX_PER_LOOP = 4096


class VenueLink:
    """One venue's FIX session as the kernel sees it."""

    def __init__(self, name: str, settings: VenueSettings, session: str):
        self.name, self.settings, self.session = name, settings, session
        self.logged_on = False
        self.ready = False          # logged on and caught up (its TestRequest answered)
        self.sync_id = ""
        self.sync_at = 0
        self.last_seq = 0           # highest inbound MsgSeqNum processed
        self.logons = 0

    def view(self) -> dict:
        return {"session": self.session, "port": self.settings.port, "logged_on": self.logged_on,
                "ready": self.ready, "last_seq": self.last_seq, "logons": self.logons}


class Parent:
    """A strategy's order as it asked for it; its children are Orders' versions."""
    __slots__ = ("id", "client", "tag", "strategy", "account", "order", "venue", "status",
                 "cum_qty", "avg_px", "text", "reason", "n", "created", "updated")

    def __init__(self, id: str, client: str, tag: str, strategy: str, account: str,
                 order: NewOrder, venue: str, now: int):
        self.id, self.client, self.tag, self.strategy = id, client, tag, strategy
        self.account, self.order, self.venue = account, order, venue
        self.status = OrdStatus.PENDING_NEW
        self.cum_qty, self.avg_px = 0, 0.0
        self.text = self.reason = ""
        self.n = 0
        self.created = self.updated = now

    @property
    def done(self) -> bool:
        return self.status.terminal


class _Wait:
    """A halt request waiting for the venues' confirmations."""
    __slots__ = ("env", "tag", "deadline")

    def __init__(self, env, tag, deadline):
        self.env, self.tag, self.deadline = env, tag, deadline


class Gateway:
    def __init__(self, settings: GatewaySettings, venues: dict[str, VenueSettings], tp, eod,
                 state_dir: str | Path, tplog_dir: str | Path, registry, *,
                 clock=time.time_ns, follow_quotes: bool = True, curve=None):
        self.settings = s = settings
        self.curve = curve                       # [curve]: the intents socket, the TP clients
        names = list(s.venues) or list(venues)
        missing = [v for v in names if v not in venues]
        if missing:
            raise ValueError(f"gateway.venues names {missing}, but only {sorted(venues)} are configured "
                             f"(add [venues.X] tables or fix gateway.venues)")
        if not names:
            raise ValueError("the gateway trades no venue: configure [venues.X]")
        if s.default_venue and s.default_venue not in names:
            raise ValueError(f"gateway.default_venue {s.default_venue!r} is not one of {names}")
        self.venue_settings = {v: venues[v] for v in names}
        self.tp, self.eod = tp, eod
        self.state_dir, self.tplog_dir = Path(state_dir), Path(tplog_dir)
        self.registry = registry
        self.clock = clock
        self.follow_quotes = follow_quotes
        self.day_clock = Clock(eod.time, eod.tz)
        self._day = (None, 0)
        self.run_id = np.base_repr(clock() // 1_000_000, 36)
        self.orders = Orders()
        self.risk = Risk(s.risk)
        self.view = QuoteView(self.venue_settings)
        self.rows = Rows(registry)
        self.parents: dict[str, Parent] = {}
        self.tags: dict[tuple[str, str], object] = {}      # (client, tag) -> parent id | reply dict
        self.clients: dict[str, bytes] = {}                 # client id -> DEALER identity
        self.cancels: dict[str, str] = {}                   # our cancel ClOrdID -> the order's
        self.cancel_wanted: set[str] = set()                # parents whose children must all go
        self.cancel_tries: Counter[str] = Counter()
        self.waits: list[_Wait] = []
        self.waiting: deque = deque()                       # intents held while recovering
        self.recovering = True
        self.recovery_end = 0
        self.counts: Counter[str] = Counter()
        self._cancel_n = itertools.count(1)
        self._sync_n = itertools.count(1)
        self.links: dict[str, VenueLink] = {}
        self.by_session: dict[str, VenueLink] = {}
        self.fix: Endpoint | None = None
        self.feed = None
        self.router = None
        self.quote_inbox = Inbox()
        self._wake = Inbox()
        self._stop = False
        self._started = False
        self._kernel: threading.Thread | None = None
        self._done = threading.Event()
        self._ready = threading.Event()
        self._sub = None
        self._quote_thread: threading.Thread | None = None
        self._durable_at = 0
        self._durable: dict[str, int] = {}

    @classmethod
    def from_config(cls, cfg) -> "Gateway":
        """From a GatewayConfig (or the stack's Config)."""
        return cls(cfg.gateway, cfg.venues, cfg.tickerplant, cfg.eod, cfg.root / "fix" / "gateway",
                   cfg.tplog_dir, cfg.registry(), curve=getattr(cfg, "curve", None))

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "Gateway":
        """Rebuild from today's rows, start the FIX sessions, bind the intents socket, follow
        quotes, and run the kernel in its thread. Returns once the intents socket is bound."""
        if self._started:
            return self
        self._started = True
        from feedhandlers.base import Feed
        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        now = self.clock()
        past = read_published(self._log_path(), self.registry, s.feed_id)
        self._restore(past, now)
        specs = [SessionSpec(s.sender_comp_id, v.comp_id, host=s.venue_host, port=v.port)
                 for v in self.venue_settings.values()]
        self.fix = Endpoint.initiator(specs, heartbeat_s=s.heartbeat_s, reconnect_s=s.reconnect_s,
                                      directory=self.state_dir, resend_app=False)
        for (name, v), spec in zip(self.venue_settings.items(), specs):
            link = VenueLink(name, v, f"FIX.4.4:{spec.sender}->{spec.target}")
            self.links[name], self.by_session[link.session] = link, link
            self.fix.app.venue_names[v.comp_id] = name       # reports name the venue, not its CompID
        self._rewind(past)
        self.feed = Feed(self.tp, s.feed_id, self.registry, batch_ms=0, hello_timeout_ms=500,
                         curve=self.curve)
        ctx = zmq.Context.instance()
        self.router = r = ctx.socket(zmq.ROUTER)
        r.setsockopt(zmq.LINGER, 0)
        r.setsockopt(zmq.MAXMSGSIZE, s.max_intent_bytes)
        r.setsockopt(zmq.SNDHWM, s.events_hwm)
        try:
            secure_server(r, self.curve)
            r.bind(s.intents)
        except zmq.ZMQError as e:
            self.feed.close(1)
            self.fix.close()
            raise RuntimeError(f"gateway cannot bind {s.intents} ({e}); set another gateway.intents") from None
        self.fix.start()
        self.recovery_end = now + int(s.recovery_timeout_s * 1e9)
        if self.follow_quotes:
            self._quote_thread = threading.Thread(target=self._follow_quotes, name="gateway-quotes",
                                                  daemon=True)
            self._quote_thread.start()
        self._kernel = threading.Thread(target=self._main, name="gateway-kernel", daemon=True)
        self._kernel.start()
        self._ready.wait(10)
        log.info("gateway: intents on %s, venues %s, %d orders and %d fills restored",
                 s.intents, ", ".join(self.links), len(past.children), len(past.executions))
        return self

    def run(self) -> None:
        """Start if needed, then block until stopped (a process's main thread)."""
        self.start()
        while not self._done.wait(0.5):
            pass

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the kernel, log the FIX sessions out, publish what is pending, close. Idempotent;
        safe from a signal handler."""
        self._stop = True
        self._wake.put(None)
        if self._kernel is not None and self._kernel is not threading.current_thread():
            self._kernel.join(timeout)

    def __enter__(self) -> "Gateway":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- start-up helpers --------------------------------------------------------------------------
    def _log_path(self) -> Path | None:
        """Today's TP log: the TP says which; if it does not answer, the newest in tplog_dir."""
        from tickerplant.protocol import control
        try:
            return Path(control(self.tp.ctl, "status", timeout=2.0, curve=self.curve)["log"])
        except Exception:  # noqa: BLE001 - the TP is down: read what is on disk
            logs = sorted(self.tplog_dir.glob("tp_????????.log"))
            if logs:
                log.warning("the tickerplant does not answer; rebuilding from %s", logs[-1])
            return logs[-1] if logs else None

    def _restore(self, past: Published, now: int) -> None:
        for pid, row in past.parents.items():
            p = self._parent_from_row(pid, row)
            self.parents[pid] = p
            if row["tag"]:
                self.tags[(row["client"], row["tag"])] = pid
        fees, filled, notional = Counter(), Counter(), Counter()
        for ex in past.executions:
            fees[ex["order_id"]] += ex["fee"] or 0.0
            filled[ex["order_id"]] += ex["qty"]
            notional[ex["order_id"]] += ex["qty"] * ex["price"]
        chain_qty, chain_px = {}, {}       # fills of each version and the versions it replaced
        for cid, row in past.children.items():
            pid = row["parent"]
            p = self.parents.get(pid)
            if p is None:
                p = self.parents[pid] = self._parent_from_row(pid, {**row, "id": pid, "tag": "", "client": ""})
            orig = row["orig"] or ""
            chain_qty[cid] = chain_qty.get(orig, 0) + filled[cid]
            chain_px[cid] = chain_px.get(orig, 0.0) + notional[cid]
            status, cum, avg = OrdStatus[row["status"]], row["cum_qty"], row["avg_px"] or 0.0
            if chain_qty[cid] > cum:
                # the flush's execution rows reached the log, its order rows did not: the fills win
                cum, avg = chain_qty[cid], chain_px[cid] / chain_qty[cid]
                if cum >= row["qty"]:
                    status = OrdStatus.FILLED
                elif status in (OrdStatus.PENDING_NEW, OrdStatus.NEW):
                    status = OrdStatus.PARTIALLY_FILLED
            order = NewOrder(cid, row["sym"], SIDES[row["side"]], row["qty"], TYPES[row["type"]],
                             _price(row["price"]), TIFS[row["tif"]], row["account"] or "", row["time"])
            ch = self.orders.restore(order, row["venue"], status, cum, avg, row["time"], pid,
                                     row["strategy"] or "", fees[cid], orig_cl_ord_id=orig,
                                     text=row["text"] or "")
            self.risk.on_change(ch)
            p.n = max(p.n, ids.child_number(cid))
        for ex in past.executions:
            if self.orders.restore_fill(ex["venue"], ex["exec_id"], ex["account"] or "", ex["sym"],
                                        SIDES[ex["side"]], ex["qty"]):
                self.risk.on_fill(ex["sym"], SIDES[ex["side"]], ex["qty"], ex["price"], ex["fee"] or 0.0)
        for p in self.parents.values():              # what the children say (their rows are
            children = self.orders.children(p.id)  # the later ones; a parent may be known from
            if children:                           # them only)
                st = parent_state(p.order, children)
                p.status, p.cum_qty, p.avg_px = st.status, st.filled, st.avg_px
        self.counts["restored_orders"] = len(past.children)
        self.counts["restored_fills"] = len(past.executions)

    def _parent_from_row(self, pid: str, row: dict) -> Parent:
        order = NewOrder(pid, row["sym"], SIDES[row["side"]], row["qty"], TYPES[row["type"]],
                         _price(row["price"]), TIFS[row["tif"]], row["account"] or "", row["time"])
        p = Parent(pid, row["client"] or "", row["tag"] or "", row["strategy"] or "",
                   row["account"] or "", order, "", row["time"])
        p.status = OrdStatus[row["status"]] if not row["parent"] else OrdStatus.PENDING_NEW
        p.cum_qty, p.avg_px = (row["cum_qty"], row["avg_px"] or 0.0) if not row["parent"] else (0, 0.0)
        p.text, p.reason = row.get("text") or "", row.get("reason") or ""
        return p

    def _durable_file(self) -> Path:
        return self.state_dir / "durable.json"

    def _rewind(self, past: Published) -> None:
        """Expect each venue's messages again from just after the last one that left a row
        (recovery contract, point 3)."""
        try:
            saved = json.loads(self._durable_file().read_text())
        except (OSError, ValueError):
            saved = {}
        for name, link in self.links.items():
            store = self.fix.next_target_seq(link.session)
            known = max(past.durable.get(name, 0), int(saved.get(name, 0) or 0))
            start = min(store, known) if known else store
            if start < store:
                self.fix.set_next_target_seq(link.session, start)
                log.info("venue %s: expecting its messages again from %d (the store had %d): it "
                         "resends what was received but not durably processed", name, start, store)
            self._durable[name] = start
        self._write_durable()

    def _write_durable(self) -> None:
        tmp = self._durable_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(self._durable))
        os.replace(tmp, self._durable_file())

    def _follow_quotes(self) -> None:
        """The quote thread: today's quotes then live ones, each batch handed to the kernel."""
        from tickerplant.subscriber import Subscriber, Update
        while not self._stop:
            try:
                self._sub = sub = Subscriber(self.tp, tables=["quote"], registry=self.registry,
                                             curve=self.curve or CurveSettings())
                for ev in sub:
                    if isinstance(ev, Update):
                        self.quote_inbox.put(ev.batch)
                    if self._stop:
                        break
            except Exception:  # noqa: BLE001 - TP away or restarting: subscribe again
                if not self._stop:
                    log.warning("quote subscription failed; subscribing again in 1 s", exc_info=True)
                    time.sleep(1)

    # -- the kernel --------------------------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._loop()
        except Exception:  # noqa: BLE001 - logged; the process exits and its supervisor restarts it
            log.exception("gateway kernel failed")
        finally:
            self._shutdown()
            self._done.set()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.fix.inbox, zmq.POLLIN)
        poller.register(self.quote_inbox, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        fix_inbox, router = self.fix.inbox, self.router
        # zmq.Poller reports a non-ZeroMQ object by its file descriptor
        wake_fd, quote_fd, fix_fd = self._wake.fileno(), self.quote_inbox.fileno(), fix_inbox.fileno()
        idle_ms = max(1, round(self.settings.publish_idle_ms))
        max_ns = int(self.settings.publish_max_ms * 1e6)
        pending_since = 0
        self._ready.set()
        while not self._stop:
            timeout = self._poll_ms()
            if pending_since:
                timeout = min(timeout, idle_ms, max(0, (pending_since + max_ns - self.clock()) // 1_000_000))
            ready = dict(poller.poll(timeout))
            now = self.clock()
            if wake_fd in ready:
                self._wake.drain()
            if quote_fd in ready:
                self._guard("quotes", self._on_quotes, self.quote_inbox.drain())
            if fix_fd in ready:
                self._guard("fix", self._on_fix, fix_inbox.drain(FIX_PER_LOOP), now)
            if router in ready:
                self._on_intents(now)
            self._guard("timers", self._timers, self.clock())
            if len(self.rows):
                # publish when the kernel is idle (nothing arrived for publish_idle_ms), or the
                # oldest row waited publish_max_ms: never between an order and its acks
                pending_since = pending_since or now
                if not ready or now - pending_since >= max_ns or len(self.rows) >= 10_000:
                    self._guard("publish", self.rows.flush, self.feed)
                    pending_since = 0

    def _poll_ms(self) -> int:
        if self.recovering or self.waits or self.cancel_wanted:
            return 20
        if any(link.logged_on and not link.ready for link in self.links.values()):
            return 50
        return 250

    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one bad step must not stop the kernel
            self.counts["errors"] += 1
            log.exception("gateway: %s step failed; going on", what)

    def _shutdown(self) -> None:
        if self._sub is not None:
            self._sub.close()
        try:
            if self.fix is not None:
                self.fix.stop()
        except Exception:  # noqa: BLE001
            log.exception("stopping the FIX sessions")
        try:
            if self.fix is not None:
                for ev in self.fix.inbox.drain():
                    if isinstance(ev, Received):
                        self._on_fix([ev], self.clock())
            if len(self.rows):
                self.rows.flush(self.feed)
        except Exception:  # noqa: BLE001
            log.exception("handling the last FIX messages")
        acked = self.feed.close(5.0) if self.feed is not None else False
        if acked and self.fix is not None:
            for name, link in self.links.items():
                self._durable[name] = max(self._durable.get(name, 0), link.last_seq + 1)
            self._write_durable()
        if self.fix is not None:
            self.fix.close()
        if self.router is not None:
            self.router.close(0)
        if self._quote_thread is not None:
            self._quote_thread.join(2)
        self.fix.inbox.close() if self.fix is not None else None

    # -- quotes ------------------------------------------------------------------------------------
    def _on_quotes(self, batches: list) -> None:
        for b in batches:
            if b is None or not b.num_rows:
                continue
            self.risk.on_quote_batch(b)
            self.view.on_batch(b)
            self.counts["quote_batches"] += 1

    # -- intents -----------------------------------------------------------------------------------
    def _on_intents(self, now: int) -> None:
        recv, max_bytes = self.router.recv_multipart, self.settings.max_intent_bytes
        for _ in range(INTENTS_PER_LOOP):
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.counts["intents"] += 1
            env, body = intents.split(frames)
            if len(body) != 1:
                self.counts["bad_intents"] += 1
                self._send(env, intents.reply(None, False, "bad_request", f"expected one frame of JSON "
                                              f"after the envelope, got {len(body)} frames"))
                continue
            try:
                req = intents.parse(body[0], max_bytes)
            except IntentError as e:
                self.counts["bad_intents"] += 1
                self._send(env, intents.error(e))
                continue
            client = req.client or env.identity.hex()
            if env.dealer:
                self.clients[client] = env.identity
            try:
                self._handle(req, client, env, now)
            except Exception:  # noqa: BLE001 - a bug on one request: answer it, go on
                self.counts["errors"] += 1
                log.exception("gateway: request %r failed", req)
                self._send(env, intents.reply(req.tag, False, "internal", "the gateway failed on this "
                                              "request (see its log); nothing was sent for it"))

    def _send(self, env: intents.Envelope, obj: dict) -> None:
        try:
            self.router.send_multipart([*env.route, intents.encode(obj)], zmq.NOBLOCK)
            self.counts["replies"] += 1
        except zmq.ZMQError:
            self.counts["unsent_replies"] += 1

    def _event(self, client: str, obj: dict) -> None:
        ident = self.clients.get(client)
        if ident is None:
            return
        try:
            # a ROUTER never blocks here: for a peer that is gone or whose queue is full
            # (events_hwm) it drops the whole message without an error
            self.router.send(ident, _SNDMORE_NOBLOCK)
            self.router.send(intents.encode(obj), _NOBLOCK)
            self.counts["events"] += 1
        except zmq.ZMQError:
            self.counts["dropped_events"] += 1

    def _handle(self, req, client: str, env, now: int) -> None:
        if isinstance(req, Status):
            self._send(env, intents.reply(req.tag, True, **self.status()))
        elif isinstance(req, ListOrders):
            self._send(env, intents.reply(req.tag, True, orders=self.list_orders(req.open, req.limit)))
        elif isinstance(req, SetState):
            self._set_state(req, client, env, now)
        elif self.recovering:
            key = (client, req.tag)
            if key in self.tags:
                self._order_op(req, client, env, now)
            elif len(self.waiting) >= self.settings.max_waiting_intents:
                self._send(env, intents.reply(req.tag, False, "busy", "the gateway is recovering and "
                                              "its queue is full; retry in a moment with the same tag"))
            else:
                self.waiting.append((req, client, env))
        else:
            self._order_op(req, client, env, now)

    def _order_op(self, req, client: str, env, now: int) -> None:
        key = (client, req.tag)
        seen = self.tags.get(key)
        if seen is not None:
            self.counts["dup_intents"] += 1
            if isinstance(seen, str):
                self._send(env, self._parent_reply(req.tag, self.parents[seen], dup=True))
            else:
                self._send(env, {**seen, "dup": True})
            return
        if isinstance(req, New):
            out = self._new(req, client, now)
        elif isinstance(req, Cancel):
            out = self._cancel(req, client, now)
        elif isinstance(req, Replace):
            out = self._replace(req, client, now)
        else:
            out = self._cancel_all(req, now)
        if isinstance(req, New):
            self.tags[key] = out["id"]
        else:
            self.tags[key] = out
        self._send(env, out)
        if isinstance(req, New) and out["ok"] and out["status"] == "EXPIRED":
            p = self.parents[out["id"]]         # done at once (nothing routed): say so as an event too
            self._event(client, self._parent_event(p, now, 0))

    # -- new ---------------------------------------------------------------------------------------
    def _trading_day(self, now: int):
        day, end = self._day
        if day is None or now >= end:
            day = self.day_clock.day(now)
            self._day = (day, self.day_clock.end(day))
        return day

    def _new(self, req: New, client: str, now: int) -> dict:
        s = self.settings
        pid = ids.parent_id(self._trading_day(now), client, req.tag)
        p = self.parents.get(pid)
        if p is not None:                          # known from its rows or a venue's reports
            self.counts["dup_intents"] += 1
            p.client, p.tag = p.client or client, p.tag or req.tag
            return self._parent_reply(req.tag, p, dup=True)
        order = NewOrder(pid, req.sym, SIDES[req.side], req.qty, TYPES[req.type], req.price,
                         TIFS[req.tif], req.account or s.account, now)
        p = Parent(pid, client, req.tag, req.strategy or "", order.account, order, req.venue or "", now)
        self.parents[pid] = p
        self.counts["new"] += 1
        ready = [v for v, link in self.links.items() if link.ready]
        if req.venue:
            if req.venue not in self.links:
                return self._refuse(p, "unknown_venue", f"venue {req.venue!r} is not traded here; "
                                    f"venues: {sorted(self.links)}", now)
            if req.venue not in ready:
                return self._refuse(p, "venue_down", f"venue {req.venue} is not connected", now)
            venues = [req.venue]
        elif not ready:
            return self._refuse(p, "no_venue", f"no venue is connected (venues: {sorted(self.links)})", now)
        else:
            venues = ready
        if self.risk.state is TradingState.HALTED:
            d = self.risk.check(order, now)
            return self._refuse(p, d.code.value, d.text, now)

        def next_id() -> str:
            p.n += 1
            return ids.child_id(pid, p.n)
        if s.sor and not req.venue:
            routing = route(order, self.view.quotes(req.sym, venues), next_id)
        else:
            v = req.venue or (s.default_venue if s.default_venue in venues else venues[0])
            routing = Routing((Child(v, dataclasses.replace(order, cl_ord_id=next_id()), pid),), 0, "")
        sent, denied = [], []
        limit = None if order.ord_type is OrdType.MARKET else order.price
        for child in routing.children:
            d = self.risk.check(child.order, now, parent=order)
            if d:
                ch = self.orders.new(child.order, child.venue, now, pid, p.strategy)
                if ch.outcome is Outcome.APPLIED:
                    self.risk.on_change(ch)
                    self.view.consume(child.venue, order.sym, order.side, child.order.qty, limit)
                    if not self.fix.send(self.links[child.venue].session, child.order):
                        log.error("no FIX session for venue %s", child.venue)
                    self.counts["children_sent"] += 1
                    self._child_row(ch.order, p, now)
                    sent.append(ch.order)
                    continue
                d = type(d)(None, ch.text)
            ch = self.orders.deny(child.order, child.venue, d.text, now, pid, p.strategy)
            code = d.code.value if d.code is not None else "bad_order"
            if ch.order is not None:
                self._child_row(ch.order, p, now, reason=code)
            denied.append((child.order.cl_ord_id, code, d.text))
            self.counts["denied"] += 1
            if d.code in PARENT_LEVEL:        # the same answer for every child: the parent is denied
                break
        if not sent and denied:
            code, text = denied[0][1], denied[0][2]
            p.status, p.reason, p.text = OrdStatus.REJECTED, code, text
        elif not sent:
            p.status, p.text = OrdStatus.EXPIRED, f"not routed: {routing.text}"
        else:
            st = parent_state(order, self.orders.children(pid))
            p.status = st.status
            p.text = routing.text + (f"; {len(denied)} children denied" if denied else "")
        self._parent_row(p, now)
        out = self._parent_reply(req.tag, p)
        if denied:
            out["denied"] = [{"id": c, "code": k, "text": t} for c, k, t in denied]
        return out

    def _refuse(self, p: Parent, code: str, text: str, now: int) -> dict:
        p.status, p.reason, p.text = OrdStatus.REJECTED, code, text
        self.counts["denied"] += 1
        self._parent_row(p, now)
        return self._parent_reply(p.tag, p)

    def _parent_reply(self, tag: str, p: Parent, dup: bool = False) -> dict:
        ok = p.status is not OrdStatus.REJECTED
        out = intents.reply(tag, ok, None if ok else (p.reason or "rejected"), p.text, id=p.id,
                            status=p.status.name, cum_qty=p.cum_qty, avg_px=p.avg_px,
                            children=[self._child_view(c) for c in self.orders.children(p.id)])
        if dup:
            out["dup"] = True
        return out

    # -- cancel, replace, cancel_all ---------------------------------------------------------------
    def _target(self, client: str, target: str) -> Parent | None:
        pid = self.tags.get((client, target))
        if isinstance(pid, str):
            return self.parents.get(pid)
        return self.parents.get(target)

    def _cancel(self, req: Cancel, client: str, now: int) -> dict:
        p = self._target(client, req.target)
        if p is None:
            return intents.reply(req.tag, False, "unknown_order", f"no order {req.target!r} (a tag of "
                                 f"this client, or a parent id)")
        working = [c for c in self.orders.children(p.id) if c.working]
        if not working:
            return intents.reply(req.tag, False, "not_working", f"order {p.id} is {p.status.name}",
                                 id=p.id, status=p.status.name)
        self.cancel_wanted.add(p.id)
        n = sum(self._cancel_child(c, now) for c in working)
        self.counts["cancel"] += 1
        return intents.reply(req.tag, True, None, f"cancel sent for {n} of {len(working)} working "
                             f"children" + ("; the rest once their pending request resolves"
                                            if n < len(working) else ""), id=p.id, sent=n)

    def _cancel_child(self, o: Order, now: int) -> int:
        """Send a cancel for this working child; 0 if it cannot go now (a pending request, or
        its venue is down: then venue_down ends it)."""
        link = self.links.get(o.venue)
        if o.request is not None or link is None or not link.logged_on:
            return 0
        if self.cancel_tries[o.cl_ord_id] >= CANCEL_TRIES:
            return 0
        cid = ids.cancel_id(o.cl_ord_id, self.run_id, next(self._cancel_n))
        cx = CancelOrder(cid, o.cl_ord_id, o.sym, o.side, o.order_qty, o.order_id, now)
        self.risk.check_cancel(cx, now)
        ch = self.orders.cancel_sent(cx, now)
        if ch.outcome is not Outcome.APPLIED:
            return 0
        self.cancel_tries[o.cl_ord_id] += 1
        self.cancels[cid] = o.cl_ord_id
        self.fix.send(link.session, cx)
        self.counts["cancels_sent"] += 1
        self._changed(ch, now)
        return 1

    def _retry_cancels(self, now: int) -> None:
        for pid in list(self.cancel_wanted):
            working = [c for c in self.orders.children(pid) if c.working]
            if not working:
                self.cancel_wanted.discard(pid)
                continue
            for c in working:
                if c.request is None:
                    self._cancel_child(c, now)

    def _replace(self, req: Replace, client: str, now: int) -> dict:
        p = self._target(client, req.target)
        if p is None:
            return intents.reply(req.tag, False, "unknown_order", f"no order {req.target!r}")
        children = [c for c in self.orders.children(p.id) if c.working]
        if not children:
            return intents.reply(req.tag, False, "not_working", f"order {p.id} is {p.status.name}",
                                 id=p.id, status=p.status.name)
        if any(c.request is not None or not c.acked for c in children):
            return intents.reply(req.tag, False, "pending", f"order {p.id} has a child not yet "
                                 f"acknowledged or with a cancel/replace pending; retry when it resolves",
                                 id=p.id)
        market = p.order.ord_type is OrdType.MARKET
        if market and req.price is not None:
            return intents.reply(req.tag, False, "bad_request", "a market order takes no price", id=p.id)
        price = p.order.price if req.price is None else req.price
        if req.qty <= p.cum_qty:
            return intents.reply(req.tag, False, "bad_request", f"the new qty {req.qty} must exceed the "
                                 f"filled {p.cum_qty} (to stop it, cancel it)", id=p.id)
        left = req.qty - sum(c.cum_qty for c in self.orders.children(p.id))
        plan = []
        for c in children:
            keep = min(c.leaves_qty, left)
            plan.append([c, keep])
            left -= keep
        if left > 0:
            plan[0][1] += left                    # more than working now: the first child grows
        sent, denied, canceled = 0, [], 0
        for c, leaves in plan:
            if leaves == 0:
                canceled += self._cancel_child(c, now)
                continue
            total = c.cum_qty + leaves
            if total == c.order_qty and price == c.price:
                continue
            p.n += 1
            rep = ReplaceOrder(ids.child_id(p.id, p.n), c.cl_ord_id, c.sym, c.side, total, price,
                               c.ord_type, c.tif, c.order_id, now)
            d = self.risk.check_replace(rep, c, now)
            if not d:
                denied.append((c.cl_ord_id, d.code.value, d.text))
                self._replace_denied_row(c, p, now, d)
                continue
            ch = self.orders.replace_sent(rep, now)
            if ch.outcome is not Outcome.APPLIED:
                denied.append((c.cl_ord_id, "pending", ch.text))
                continue
            self.risk.on_change(ch)
            self.fix.send(self.links[c.venue].session, rep)
            self.counts["replaces_sent"] += 1
            self._changed(ch, now)
            sent += 1
        if denied and not sent and not canceled:
            return intents.reply(req.tag, False, denied[0][1], denied[0][2], id=p.id,
                                 denied=[{"id": i, "code": k, "text": t} for i, k, t in denied])
        p.order = dataclasses.replace(p.order, qty=req.qty, price=price)
        self._update_parent(p, now)
        out = intents.reply(req.tag, True, None, f"replace sent for {sent} children"
                            + (f", {canceled} canceled" if canceled else ""), id=p.id, sent=sent)
        if denied:
            out["denied"] = [{"id": i, "code": k, "text": t} for i, k, t in denied]
        return out

    def _replace_denied_row(self, c: Order, p: Parent, now: int, d) -> None:
        """A replace that risk denied: published as a REJECTED order row of the would-be
        version (the working one is unchanged)."""
        self.rows.order(now, c.sym, f"{c.cl_ord_id}~replace", p.id, p.tag, p.client, p.strategy,
                        c.account, SIDE_NAMES[c.side], c.order_qty, c.price, TYPE_NAMES[c.ord_type],
                        TIF_NAMES[c.tif], "REJECTED", c.venue, c.cum_qty, c.avg_px, d.code.value,
                        f"replace denied: {d.text}", c.cl_ord_id)
        self.counts["denied"] += 1

    def _cancel_all(self, req: CancelAll, now: int) -> dict:
        n, parents = 0, 0
        for p in list(self.parents.values()):
            if p.done or (req.strategy and p.strategy != req.strategy) or (
                    req.account and p.account != req.account) or (req.sym and p.order.sym != req.sym):
                continue
            working = [c for c in self.orders.children(p.id) if c.working]
            if working:
                parents += 1
                self.cancel_wanted.add(p.id)
                n += sum(self._cancel_child(c, now) for c in working)
        return intents.reply(req.tag, True, None, f"cancel sent for {n} children of {parents} orders",
                             sent=n, orders=parents)

    # -- trading state -----------------------------------------------------------------------------
    def _set_state(self, req: SetState, client: str, env, now: int) -> None:
        key = (client, req.tag)
        seen = self.tags.get(key)
        if seen is not None and req.op != "halt":
            self._send(env, {**seen, "dup": True})
            return
        state = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING,
                 "resume": TradingState.ACTIVE}[req.op]
        if seen is None:
            changed = self.risk.state is not state or self.risk.state_reason != req.reason
            self.risk.set_state(state, req.reason)
            if changed:
                log.warning("trading state %s (%s)", state.name, req.reason or "no reason given")
                for c in list(self.clients):
                    self._event(c, intents.state_event(state.name, req.reason, now))
                self.rows.alarm(now, "", f"state_{state.name.lower()}", req.reason or "no reason given")
            self.counts[req.op] += 1
        if req.op != "halt":
            out = intents.reply(req.tag, True, None, f"trading is {state.name}", state=state.name)
            self.tags[key] = out
            self._send(env, out)
            return
        self.tags[key] = {"tag": req.tag}
        for p in self.parents.values():
            if not p.done and any(c.working for c in self.orders.children(p.id)):
                self.cancel_wanted.add(p.id)
        for o in self.orders.working():
            self._cancel_child(o, now)
        self.waits.append(_Wait(env, req.tag, now + int(self.settings.halt_timeout_s * 1e9)))
        self._check_waits(now)

    def _check_waits(self, now: int) -> None:
        if not self.waits:
            return
        working = self.orders.working()
        keep = []
        for w in self.waits:
            if not working:
                self._send(w.env, intents.reply(w.tag, True, None, "halted: every venue confirmed, "
                                                "nothing is working", state=self.risk.state.name,
                                                working=[]))
            elif now >= w.deadline:
                left = [f"{o.cl_ord_id} at {o.venue} ({o.status.name})" for o in working]
                self._send(w.env, intents.reply(w.tag, False, "halt_timeout", "halted, but still "
                                                f"working after {self.settings.halt_timeout_s:g}s: "
                                                + ", ".join(left[:20]) + (" ..." if len(left) > 20 else ""),
                                                state=self.risk.state.name,
                                                working=[o.cl_ord_id for o in working]))
            else:
                keep.append(w)
        self.waits = keep

    # -- FIX ---------------------------------------------------------------------------------------
    def _on_fix(self, events: list, now: int) -> None:
        for ev in events:
            try:
                if isinstance(ev, Received):
                    self._report(ev, now)
                elif isinstance(ev, LoggedOn):
                    self._logged_on(ev, now)
                elif isinstance(ev, LoggedOut):
                    self._logged_out(ev, now)
                elif isinstance(ev, Heartbeat):
                    self._heartbeat(ev, now)
                elif isinstance(ev, (SessionReject, BusinessReject)):
                    self.counts["fix_rejects"] += 1
                    link = self.by_session.get(ev.session)
                    self.rows.alarm(now, "", "fix_reject", f"{link.name if link else ev.session} "
                                    f"rejected our message {ev.ref_seq}: {ev.text}")
            except Exception:  # noqa: BLE001 - one message must not stop the others
                self.counts["errors"] += 1
                log.exception("gateway: handling %r failed; going on", ev)
        self._retry_cancels(now)
        self._check_waits(now)

    def _report(self, ev: Received, now: int) -> None:
        link = self.by_session.get(ev.session)
        msg = ev.message
        if link is None or not isinstance(msg, (ExecReport, CancelReject)):
            self.counts["unexpected_messages"] += 1
            return
        self.counts["reports"] += 1
        link.last_seq = max(link.last_seq, ev.seq)
        if msg.venue != link.name:
            msg = dataclasses.replace(msg, venue=link.name)
        if isinstance(msg, ExecReport):
            self._adopt(msg, now, ev.seq)
        ch = self.orders.apply(msg, now)
        self.risk.on_change(ch)
        out = ch.outcome
        if out is Outcome.APPLIED:
            self._changed(ch, now, ev.seq, getattr(msg, "exec_id", ""))
        elif out is Outcome.DUPLICATE:
            self.counts["duplicate_reports"] += 1
        elif out is Outcome.UNKNOWN:
            self.counts["unknown_reports"] += 1
            self.rows.alarm(now, getattr(msg, "sym", ""), "unknown_order",
                            f"{link.name}: report for unknown order {msg.cl_ord_id}: {ch.text}")
        elif out.alarm:
            self.counts[f"{out.name.lower()}_reports"] += 1
            self.rows.alarm(now, ch.order.sym if ch.order else "", out.name.lower(),
                            f"{link.name}: {ch.text}")

    def _adopt(self, r: ExecReport, now: int, seq: int) -> None:
        """A report for a child of ours that we have no record of (sent, then its row was lost
        with a crashed process): rebuild the child from the report (recovery contract, 3)."""
        if r.cl_ord_id in self.orders or r.cl_ord_id in self.cancels or (
                r.orig_cl_ord_id and r.orig_cl_ord_id in self.orders):
            return
        pid = ids.parent_of(r.cl_ord_id)
        if pid is None or r.order_qty <= 0:
            return
        p = self.parents.get(pid)
        price = r.price if r.price else None
        order = NewOrder(r.cl_ord_id, r.sym, r.side, r.order_qty,
                         OrdType.LIMIT if price else OrdType.MARKET, price, TimeInForce.DAY,
                         p.account if p else "", now)
        if p is None:
            p = self.parents[pid] = Parent(pid, "", "", "", "", dataclasses.replace(order, cl_ord_id=pid),
                                           "", now)
            p.text = "adopted from a venue's report after a restart"
            self._parent_row(p, now)
        ch = self.orders.new(order, r.venue, now, pid, p.strategy)
        if ch.outcome is not Outcome.APPLIED:
            return
        total = sum(c.order_qty for c in self.orders.children(pid))
        if total > p.order.qty:                   # a parent known only from its children
            p.order = dataclasses.replace(p.order, qty=total)
        self.risk.on_change(ch)
        p.n = max(p.n, ids.child_number(r.cl_ord_id))
        ch.order.text = "adopted from the venue's report"
        self._child_row(ch.order, p, now, fix_seq=seq)
        self.counts["adopted"] += 1
        log.warning("adopted %s at %s from its report (no row of it survived)", r.cl_ord_id, r.venue)

    def _logged_on(self, ev: LoggedOn, now: int) -> None:
        link = self.by_session.get(ev.session)
        if link is None:
            return
        link.logged_on, link.ready = True, False
        link.logons += 1
        log.info("venue %s logged on; syncing", link.name)
        self._sync(link, now)

    def _sync(self, link: VenueLink, now: int) -> None:
        link.sync_id = f"sync-{self.run_id}-{next(self._sync_n)}"
        link.sync_at = now
        self.fix.app.test_request(link.session, link.sync_id)

    def _heartbeat(self, ev: Heartbeat, now: int) -> None:
        link = self.by_session.get(ev.session)
        if link is None or not link.logged_on or ev.test_req_id != link.sync_id or link.ready:
            return
        link.ready = True
        left = self.orders.venue_down(link.name, now, text=f"not working at {link.name} after the "
                                      f"reconnect (canceled on disconnect, or never received)")
        for ch in left:
            self.risk.on_change(ch)
            self._changed(ch, now)
        log.info("venue %s caught up (inbound seq %d); %d orders ended", link.name, link.last_seq, len(left))
        if self.recovering and all(v.ready for v in self.links.values()):
            self._recovered(now)

    def _logged_out(self, ev: LoggedOut, now: int) -> None:
        link = self.by_session.get(ev.session)
        if link is None:
            return
        was = link.logged_on
        link.logged_on = link.ready = False
        changes = self.orders.venue_down(link.name, now, text=f"venue {link.name} disconnected: it "
                                         f"cancels our orders on disconnect")
        for ch in changes:
            self.risk.on_change(ch)
            self._changed(ch, now)
        if was:
            log.warning("venue %s disconnected; %d working orders ended", link.name, len(changes))
            self.rows.alarm(now, "", "venue_down", f"venue {link.name} disconnected; {len(changes)} "
                            f"working orders ended CANCELED")

    def _recovered(self, now: int) -> None:
        self.recovering = False
        late = [v for v, link in self.links.items() if not link.ready]
        if late:
            log.warning("recovery: venues %s not caught up after %gs; trading on the others",
                        late, self.settings.recovery_timeout_s)
        waiting, self.waiting = self.waiting, deque()
        for req, client, env in waiting:
            try:
                self._order_op(req, client, env, now)
            except Exception:  # noqa: BLE001
                self.counts["errors"] += 1
                log.exception("gateway: queued request %r failed", req)
                self._send(env, intents.reply(req.tag, False, "internal", "the gateway failed on this request"))

    # -- timers ------------------------------------------------------------------------------------
    def _timers(self, now: int) -> None:
        if self.recovering and now >= self.recovery_end:
            self._recovered(now)
        sync_ns = int(self.settings.sync_timeout_s * 1e9)
        for link in self.links.values():
            if link.logged_on and not link.ready and now - link.sync_at > sync_ns:
                self._sync(link, now)
        if self.cancel_wanted:
            self._retry_cancels(now)
        self._check_waits(now)
        if now - self._durable_at > 1_000_000_000:
            self._durable_at = now
            self._save_durable()

    def _save_durable(self) -> None:
        """Advance durable.json when every row published so far was acked by the TP."""
        marks = {n: link.last_seq + 1 for n, link in self.links.items() if link.last_seq}
        if not any(self._durable.get(n, 0) < m for n, m in marks.items()) or len(self.rows):
            return
        st = self.feed.stats()
        if st.buffered or st.pending_rows:
            return
        for n, m in marks.items():
            self._durable[n] = max(self._durable.get(n, 0), m)
        self._write_durable()

    # -- what changed: rows and events ---------------------------------------------------------------
    def _changed(self, ch: Change, now: int, fix_seq: int = 0, exec_id: str = "") -> None:
        o = ch.order
        if o is None:
            return
        p = self.parents.get(o.parent_id)
        if p is None:
            return
        if ch.replaced is not None:
            r = ch.replaced
            self._child_row(r, p, now, fix_seq=fix_seq)
            self._child_event(r, p, now)
        if ch.status is not ch.prev or ch.fill_qty or ch.replaced is not None:
            self._child_row(o, p, now, fix_seq=fix_seq, text=ch.text)
            self._child_event(o, p, now, ch.text)
        if ch.fill_qty:
            self.counts["fills"] += 1
            side = SIDE_NAMES[o.side]
            self.rows.execution(now, o.sym, o.cl_ord_id, exec_id, p.id, side, ch.fill_qty, ch.fill_px,
                                o.venue, ch.fee, o.leaves_qty, o.status.name, o.account, p.strategy,
                                fix_seq)
            if p.client:
                self._event(p.client, intents.fill_event(p.tag, p.id, o.cl_ord_id, exec_id, o.venue,
                                                         o.sym, side, ch.fill_qty, ch.fill_px, ch.fee, now))
        self._update_parent(p, now, fix_seq)

    def _update_parent(self, p: Parent, now: int, fix_seq: int = 0) -> None:
        children = self.orders.children(p.id)
        if not children:
            return
        st = parent_state(p.order, children)
        if st.status is p.status and st.filled == p.cum_qty:
            return
        p.status, p.cum_qty, p.avg_px, p.updated = st.status, st.filled, st.avg_px, now
        if p.done:
            self.cancel_wanted.discard(p.id)
        self._parent_row(p, now, fix_seq)
        if p.client:
            self._event(p.client, self._parent_event(p, now, st.working_qty if not p.done else 0))

    @staticmethod
    def _parent_event(p: Parent, now: int, leaves: int) -> dict:
        ev = intents.order_event(p.tag, p.id, p.status.name, p.cum_qty, leaves, p.avg_px, now, p.text)
        ev["qty"], ev["price"] = p.order.qty, p.order.price      # the parent's (after a replace)
        return ev

    def _parent_row(self, p: Parent, now: int, fix_seq: int = 0) -> None:
        o = p.order
        self.rows.order(now, o.sym, p.id, "", p.tag, p.client, p.strategy, p.account, SIDE_NAMES[o.side],
                        o.qty, o.price, TYPE_NAMES[o.ord_type], TIF_NAMES[o.tif], p.status.name, "",
                        p.cum_qty, p.avg_px, p.reason, p.text, "", fix_seq)

    def _child_row(self, o: Order, p: Parent, now: int, reason: str = "", fix_seq: int = 0,
                   text: str | None = None) -> None:
        self.rows.order(now, o.sym, o.cl_ord_id, p.id, p.tag, p.client, p.strategy, o.account,
                        SIDE_NAMES[o.side], o.order_qty, o.price, TYPE_NAMES[o.ord_type],
                        TIF_NAMES[o.tif], o.status.name, o.venue, o.cum_qty, o.avg_px, reason,
                        o.text if text is None or not text else text, o.orig_cl_ord_id, fix_seq)

    def _child_event(self, o: Order, p: Parent, now: int, text: str = "") -> None:
        if p.client:
            self._event(p.client, intents.order_event(p.tag, p.id, o.status.name, o.cum_qty, o.leaves_qty,
                                                      o.avg_px, now, text or o.text, venue=o.venue,
                                                      child=o.cl_ord_id))

    # -- views -------------------------------------------------------------------------------------
    @staticmethod
    def _child_view(o: Order) -> dict:
        return {"id": o.cl_ord_id, "venue": o.venue, "qty": o.order_qty, "price": o.price,
                "status": o.status.name, "cum_qty": o.cum_qty, "leaves_qty": o.leaves_qty,
                "avg_px": o.avg_px, "text": o.text}

    def list_orders(self, open_only: bool = False, limit: int = 1000) -> list[dict]:
        out = []
        for p in reversed(list(self.parents.values())):
            if open_only and p.done:
                continue
            o = p.order
            out.append({"id": p.id, "tag": p.tag, "client": p.client, "strategy": p.strategy,
                        "account": p.account, "sym": o.sym, "side": SIDE_NAMES[o.side], "qty": o.qty,
                        "price": o.price, "type": TYPE_NAMES[o.ord_type], "tif": TIF_NAMES[o.tif],
                        "status": p.status.name, "cum_qty": p.cum_qty, "avg_px": p.avg_px,
                        "reason": p.reason, "text": p.text, "time": p.created,
                        "children": [self._child_view(c) for c in self.orders.children(p.id)]})
            if len(out) >= limit:
                break
        out.reverse()
        return out

    def health(self) -> dict:
        """The health hook (tickerplant/health.py), read from another thread: in = intents,
        venue reports and quote messages; out = orders, cancels and replaces sent to venues
        and events sent to clients; lag of the quote subscription."""
        c = self.counts
        h = subscriber_health(self._sub)
        h["msgs_in"] += c.get("intents", 0) + c.get("reports", 0)
        h["msgs_out"] = sum(c.get(k, 0) for k in ("children_sent", "cancels_sent", "replaces_sent", "events"))
        h["errors"] += sum(c.get(k, 0) for k in ("errors", "bad_intents", "fix_rejects", "unknown_reports",
                                                  "unexpected_messages", "dropped_events"))
        h["last_error"] = self.feed.health()["last_error"] if self.feed is not None else ""
        h["extra"] = {"orders": len(self.parents)}
        return h

    def status(self) -> dict:
        realized, unrealized = self.risk.pnl()
        gross, net = self.risk.exposure()
        fix_counters = dict(self.fix.app.counters) if self.fix is not None else {}
        return {"pid": os.getpid(), "state": self.risk.state.name, "reason": self.risk.state_reason,
                "recovering": self.recovering, "intents": self.settings.intents,
                "venues": {n: link.view() for n, link in self.links.items()},
                "orders": len(self.parents), "working": len(self.orders.working()),
                "open_orders": self.risk.open_orders, "counters": {**self.counts, **refused()},
                "orders_counts": dict(self.orders.counts), "fix": fix_counters,
                "denials": {d.value: n for d, n in self.risk.denials.items()},
                "positions": [{"sym": p.sym, "qty": p.qty, "avg_cost": p.avg_cost,
                               "realized": p.realized, "unrealized": p.unrealized}
                              for p in self.risk.positions()],
                "pnl": {"realized": realized, "unrealized": unrealized},
                "exposure": {"gross": gross, "net": net}, "rows": dict(self.rows.counts)}


def _price(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v
