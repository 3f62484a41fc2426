"""The risk process: positions, PnL, exposure and VaR per book from the tickerplant, limits,
and the gateway moved to REDUCING/HALTED with an orderly flatten on a breach.

    rp = RiskProcess.from_config(cfg)      # or: python -m strategy.risk [--config F] [--home H]
    rp.run()                               # until stop() (SIGTERM)

Inputs. A `Subscriber` on `execution` and `quote` (the day so far from the TP's log, then live,
exactly once), polled by the loop beside its other sockets (`Subscriber.take`, no thread of
its own); the loop takes everything waiting at once: quote batches go to `Book.on_quotes` as
each sym's last row (no per-row Python), fills to `Book.on_fills`. Today's minute closes (for
VaR) are taken as data time crosses each minute's end. When nothing arrives, the loop still
calls take(), so the subscriber times a silent TP and warns.

Outputs, through the TP (a Feed, feed id `[risk] feed_id`):
  `risk`: every `publish_s` and after every batch of fills: one row per (book, sym) with a
    position or realized PnL, and one per book (sym ""): position, avg cost, realized,
    unrealized, pnl, gross, net, VaR, ES, the book's state and the gateway's trading state.
  `risk_action`: every action with its reason: breach (kind, value, limit), reduce/halt sent,
    the gateway's answer, cancel_all, each flatten child (qty, price, displayed size), denials,
    flat / within_limit, breach cleared.

Limits (risk.limits.breaches) are checked at every publish. A book in breach:
  1. the gateway is moved to `on_breach` (REDUCING or HALTED) unless it already is; asked
     again every `action_retry_s` while it is not (also if someone resumes while the breach
     stands: the risk process holds the state until every book is back within its limits,
     or the limit is raised);
  2. the book's working orders are canceled (cancel_all for its strategy/account), once per
     breach;
  3. with flatten enabled (REDUCING only), each sym of the book is flattened by IOC children
     (risk.limits.child_order): one at a time per sym, `interval_s` apart, each waiting until
     the previous one is done and its fills are in the book (so the position it sizes from is
     the real one and it never crosses flat), until the book is flat or within its limits.
  The gateway stays REDUCING after the flatten; an operator resumes (`tickstack resume`) once
  the limits allow. Orders are sent as client `[risk] client` with the book's strategy and
  account, so their fills land in that book.

Control: a ROUTER on `[risk] ctl` answers {"cmd": "status"} with everything the CLI shows
(`tickstack positions|pnl|risk`), as tickerplant.protocol.control speaks it: REQ envelopes,
NOBLOCK receives after a poll, exactly one JSON reply per enveloped request (an error reply for
junk), messages without an envelope dropped and counted, ZMQ_MAXMSGSIZE 64 KiB.

Day roll (the TP's end of day): positions and average costs carry over; realized PnL starts
again; today's VaR minutes are cleared and the history is read again an hour later (the EOD
save puts the day into the HDB meanwhile).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import zmq

from strategy.risk.book import MINUTE, Book
from strategy.risk.config import RiskProcessSettings
from strategy.risk.limits import KINDS, breaches, child_order
from strategy.risk.var import Scenarios
from tickerplant.config import CurveSettings
from tickerplant.curve import refused, secure_server

log = logging.getLogger("risk")

STRICT = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}
WANT = {"reduce": "REDUCING", "halt": "HALTED"}
DONE = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})
NAN = math.nan
CTL_MAX_BYTES = 64 << 10
HISTORY_RELOAD_S = 3600.0
STATUS_EVERY_NS = 5_000_000_000


@dataclass
class FlatChild:
    tag: str
    sym: str
    qty: int
    id: str = ""
    cum: int = 0
    done: bool = False


@dataclass
class BookState:
    state: str = "ok"                  # ok | breach | flattening | flat
    breached: dict = field(default_factory=dict)   # kind -> (value, limit)
    canceled: bool = False
    children: dict = field(default_factory=dict)   # sym -> FlatChild
    next_at: dict = field(default_factory=dict)    # sym -> ns
    last_denial: dict = field(default_factory=dict)  # sym -> code


class RiskProcess:
    def __init__(self, settings: RiskProcessSettings, tp, intents: str, hdb_dir: Path | None, registry,
                 *, clock=time.time_ns, today: dt.date | None = None, curve=None):
        self.settings = s = settings
        self.curve = curve or CurveSettings()   # [curve]: the ctl socket and every client
        self.tp, self.intents, self.hdb_dir, self.registry = tp, intents, hdb_dir, registry
        self.clock = clock
        self.today = today or dt.date.today()
        self.book = Book(s.book_by)
        self.scenarios = Scenarios(s.var.horizon_min, s.var.confidence, s.var.min_scenarios)
        self.states: dict[str, BookState] = {}
        self.trading = "UNKNOWN"
        self.trading_reason = ""
        self.actions: deque = deque(maxlen=200)
        self.counts: Counter[str] = Counter()
        self.run_id = np.base_repr(clock() // 1_000_000, 36).lower()
        self._n = 0
        self._asked: tuple[str, int] | None = None       # (state asked for, when)
        self._down_noted: str | None = None
        self._status_at = 0
        self._requests: dict[str, tuple] = {}            # our tag -> what it was
        self._rows: dict[str, list[dict]] = {"risk_action": []}
        self._stop = False
        self._next_close: int | None = None
        self._runmax = 0
        self._dirty = False
        self._last_publish = 0
        self._history_at = 0
        self.last_snapshot: dict = {}
        self.ctl = self.client = self.feed = self.sub = None
        self.failed: BaseException | None = None

    @classmethod
    def from_config(cls, cfg) -> "RiskProcess":
        return cls(cfg.risk, cfg.tickerplant, cfg.gateway.intents, cfg.hdb_dir, cfg.registry(),
                   curve=getattr(cfg, "curve", None))

    # ---- lifecycle ------------------------------------------------------------------------
    def start(self) -> "RiskProcess":
        """Read the VaR history, bind the control socket, connect to the gateway and the TP."""
        from feedhandlers.base import Feed
        from gateway.client import OrderClient
        from tickerplant.subscriber import Subscriber
        s = self.settings
        self._load_history()
        ctx = zmq.Context.instance()
        self.ctl = ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, CTL_MAX_BYTES)
        try:
            secure_server(self.ctl, self.curve)
            self.ctl.bind(s.ctl)
        except zmq.ZMQError as e:
            self.ctl.close(0)
            raise RuntimeError(f"risk cannot bind {s.ctl} ({e}); set another risk.ctl") from None
        self.client = OrderClient(self.intents, client=s.client, curve=self.curve)
        self.feed = Feed(self.tp, s.feed_id, self.registry, batch_ms=0, hello_timeout_ms=500,
                         curve=self.curve)
        self.sub = Subscriber(self.tp, tables=["execution", "quote"], registry=self.registry,
                              curve=self.curve)
        self.sub.start()
        self._status_at = self.clock()
        self._submit("status")
        log.info("risk: ctl %s, books by %s, VaR %d scenarios from %s, limits %s", s.ctl, s.book_by,
                 self.scenarios.count, [str(d) for d in self.scenarios.days] or "no history",
                 s.limits.model_dump())
        return self

    def health(self) -> dict:
        """The health hook (tickerplant/health.py), read from another thread: in = execution
        and quote messages from the TP, out = messages of risk/risk_action rows sent to it;
        lag of the subscription."""
        from tickerplant.health import subscriber_health
        c = self.counts
        h = subscriber_health(self.sub)
        f = self.feed.health() if self.feed is not None else {"msgs_out": 0, "errors": 0, "last_error": ""}
        h.update(msgs_out=f["msgs_out"], last_error=f["last_error"],
                 errors=h["errors"] + f["errors"] + sum(c.get(k, 0) for k in (
                     "errors", "history_errors", "ctl_bad", "ctl_unenveloped", "ctl_unsent")))
        return h

    def stop(self) -> None:
        """End the loop (safe from a signal handler)."""
        self._stop = True

    def run(self) -> None:
        if self.ctl is None:
            self.start()
        try:
            self._loop()
        finally:
            self._close()
        if self.failed is not None:
            raise RuntimeError(f"risk: the tickerplant subscription failed: {self.failed}") from self.failed

    def _close(self) -> None:
        try:
            if self._rows["risk_action"] or self._dirty:
                self._publish(self.clock())
        except Exception:  # noqa: BLE001
            log.exception("risk: last publish failed")
        if self.sub is not None:
            self.sub.close()
        if self.feed is not None:
            self.feed.close(5.0)
        if self.client is not None:
            self.client.close()
        if self.ctl is not None:
            self.ctl.close(0)

    # ---- the loop ---------------------------------------------------------------------------
    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub.socket, zmq.POLLIN)
        poller.register(self.ctl, zmq.POLLIN)
        poller.register(self.client.socket, zmq.POLLIN)
        publish_ns = int(self.settings.publish_s * 1e9)
        more = True                                   # the day so far, from the log, first
        while not self._stop:
            wait = max(1, min(100, (self._last_publish + publish_ns - self.clock()) // 1_000_000))
            ready = dict(poller.poll(0 if more else wait))
            if more or self.sub.socket in ready or not ready:   # idle: lets it time silence
                try:
                    items = self.sub.take()
                except Exception as e:  # noqa: BLE001
                    # a fresh subscription would deliver the day again: end, and be restarted
                    self.failed, self._stop = e, True
                    log.error("risk: the subscription failed (%s); stopping", e)
                    break
                more = self.sub.more
                self._guard("market data", self._on_data, items)
            if self.client.socket in ready or self._requests:
                self._guard("gateway events", self._on_events, self.client.events(0))
            if self.ctl in ready:
                self._guard("ctl", self._on_ctl)
            now = self.clock()
            if self._dirty or now - self._last_publish >= publish_ns:
                self._guard("check", self._check, now)
            if self._history_at and now >= self._history_at:
                self._history_at = 0
                self._guard("history", self._load_history)

    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one bad step never stops risk
            self.counts["errors"] += 1
            log.exception("risk: %s step failed; going on", what)

    # ---- market data and fills ------------------------------------------------------------
    def _on_data(self, items: list) -> None:
        from tickerplant.subscriber import EndOfDay, Update
        quotes: list[pa.RecordBatch] = []
        for ev in items:
            if isinstance(ev, Update):
                if ev.table == "quote":
                    quotes.append(ev.batch)
                elif ev.table == "execution":
                    if quotes:                      # keep the order: quotes before these fills
                        self._quotes(quotes)
                        quotes = []
                    if self.book.on_fills(ev.batch):
                        self._dirty = True
            elif isinstance(ev, EndOfDay):
                if quotes:
                    self._quotes(quotes)
                    quotes = []
                self._day_rolled(ev.date)
        if quotes:
            self._quotes(quotes)

    def _quotes(self, batches: list) -> None:
        if len(batches) > 1:
            merged = pa.Table.from_batches(batches).combine_chunks().to_batches()
            if not merged:
                return
            b = merged[0]
        else:
            b = batches[0]
        t = b.column("time")
        t = (t.cast(pa.int64()) if pa.types.is_timestamp(t.type) else t).to_numpy(zero_copy_only=False)
        if not len(t):
            return
        self.counts["quote_batches"] += len(batches)
        if not self.settings.var.include_today:
            self.book.on_quotes(b)
            return
        runmax = np.maximum.accumulate(np.maximum(t, self._runmax))
        if self._next_close is None:
            self._next_close = (int(runmax[0]) // MINUTE + 1) * MINUTE
        done = 0
        while runmax[-1] >= self._next_close:
            j = int(np.searchsorted(runmax, self._next_close, "left"))
            if j > done:
                self.book.on_quotes(b.slice(done, j - done))
                done = j
            self.scenarios.add_today(self.book.syms, self.book.mids())
            self._next_close += MINUTE
        if done < len(t):
            self.book.on_quotes(b.slice(done))
        self._runmax = int(runmax[-1])

    def _day_rolled(self, day: dt.date) -> None:
        log.info("risk: day %s ended: realized PnL starts again, positions carry over", day)
        self.book.new_day()
        self.scenarios.clear_today()
        self._next_close = None
        self.today = day + dt.timedelta(days=1)
        self._history_at = self.clock() + int(HISTORY_RELOAD_S * 1e9)
        self._dirty = True

    def _load_history(self) -> None:
        v = self.settings.var
        sc = Scenarios(v.horizon_min, v.confidence, v.min_scenarios)
        try:
            sc.load_history(self.hdb_dir, self.today, v.days)
        except Exception:  # noqa: BLE001 - VaR from what there is; the reason is logged
            self.counts["history_errors"] += 1
            log.exception("risk: reading VaR history from %s failed; VaR from today's minutes only",
                          self.hdb_dir)
        sc._today, sc._today_syms = self.scenarios._today, self.scenarios._today_syms
        self.scenarios = sc

    # ---- the gateway ------------------------------------------------------------------------
    def _tag(self) -> str:
        self._n += 1
        return f"{self.settings.client}-{self.run_id}-{self._n}"

    def _submit(self, op: str, **fields) -> str | None:
        """Send a request without waiting (its reply arrives as an event); None when no gateway
        is connected (a DEALER with ZMQ_IMMEDIATE would block in send)."""
        if not self.client.socket.poll(0, zmq.POLLOUT) and not self.client.socket.poll(100, zmq.POLLOUT):
            self.counts["gateway_down"] += 1
            return None
        tag = self._tag()
        try:
            self.client.submit(op, tag=tag, **fields)
        except ValueError as e:
            log.error("risk: %s refused before sending: %s", op, e)
            return None
        self._requests[tag] = (op, fields)
        return tag

    def _on_events(self, events: list[dict]) -> None:
        for ev in events:
            kind = ev.get("event")
            if kind == "state":
                self.trading, self.trading_reason = ev.get("state", self.trading), ev.get("reason", "")
                self._dirty = True
            elif kind == "order" and "venue" not in ev:
                self._child_event(ev.get("tag"), ev.get("id", ""), ev.get("status", ""), ev.get("cum_qty", 0))
            elif kind is None:
                self._reply(ev)

    def _reply(self, r: dict) -> None:
        op, fields = self._requests.pop(r.get("tag"), (None, {}))
        if op == "status":
            if r.get("ok"):
                self.trading, self.trading_reason = r.get("state", self.trading), r.get("reason", "")
        elif op in ("reduce", "halt"):
            if r.get("ok") or r.get("state") in STRICT:
                self.trading = r.get("state", WANT[op])
            self._action("", "", f"{op}_answer", "ok" if r.get("ok") else (r.get("code") or "refused"),
                         text=r.get("text", ""))
        elif op == "cancel_all":
            self._action("", fields.get("strategy") or fields.get("account") or "", "cancel_all_answer",
                         "ok" if r.get("ok") else (r.get("code") or "refused"), text=r.get("text", ""))
        elif op == "new":
            if not r.get("ok"):
                self._child_event(r.get("tag"), r.get("id", ""), "REJECTED", 0, r.get("code"), r.get("text", ""))
            else:
                self._child_event(r.get("tag"), r.get("id", ""), r.get("status", "PENDING_NEW"),
                                  r.get("cum_qty", 0))

    def _child_event(self, tag, pid: str, status: str, cum: int, code=None, text: str = "") -> None:
        for book, st in self.states.items():
            for sym, ch in st.children.items():
                if ch.tag != tag:
                    continue
                if pid:
                    ch.id = pid
                if status in DONE:
                    ch.done, ch.cum = True, int(cum or 0)
                if status == "REJECTED" and code and st.last_denial.get(sym) != code:
                    st.last_denial[sym] = code
                    self._action(sym, book, "flatten_denied", code, qty=ch.qty, tag=tag, text=text)
                return

    # ---- limits and actions -------------------------------------------------------------------
    def _check(self, now: int) -> None:
        if now - self._status_at > STATUS_EVERY_NS:
            # the trading state from the gateway itself now and then: a restarted gateway sends
            # state events only to clients that spoke to it since
            self._status_at = now
            self._submit("status")
        snap, per_row, per_book = self._measure()
        desired = None
        cancels = []
        s = self.settings
        for b, name in enumerate(self.book.books):
            st = self.states.setdefault(name, BookState())
            pnl = float(snap.book_realized[b] + snap.book_unrealized[b])
            found = breaches(s.limits_of(name), pnl, float(per_book[0][b]), float(snap.book_gross[b]),
                             float(snap.book_net[b]))
            now_kinds = {k: (v, lim) for k, v, lim in found}
            for k, (v, lim) in now_kinds.items():
                if k not in st.breached:
                    log.warning("risk: book %s breached %s: %.2f > %.2f", name, k, v, lim)
                    self._action("", name, "breach", k, value=v, limit=lim,
                                 text=f"{k} {v:,.2f} > limit {lim:,.2f}")
            for k in set(st.breached) - set(now_kinds):
                self._action("", name, "breach_cleared", k, value=st.breached[k][0], limit=st.breached[k][1])
            st.breached = now_kinds
            if now_kinds:
                desired = WANT[s.on_breach]
                if st.state == "ok":
                    st.state = "breach"
                if not st.canceled:
                    st.canceled = True
                    cancels.append(name)
            elif st.state in ("breach", "flattening"):
                self._action("", name, "within_limit", "ok", text="back within every limit")
                st.state, st.canceled, st.next_at = "ok", False, {}
            elif st.state == "flat":
                st.state, st.canceled = "ok", False
        if desired is not None:
            self._enforce(desired, now)
            for name in cancels:               # after the state change: nothing new gets in between
                self._cancel_book(name)
            if s.flatten.enabled and self.trading == "REDUCING":
                self._flatten(snap, now)
        self._publish(now, snap, per_row, per_book)

    def _enforce(self, want: str, now: int) -> None:
        if STRICT.get(self.trading, -1) >= STRICT[want]:
            return
        if self._asked and self._asked[0] == want and now - self._asked[1] < self.settings.action_retry_s * 1e9:
            return
        why = "; ".join(f"book {b} {k} {v:,.2f} > {lim:,.2f}" for b, st in self.states.items()
                        for k, (v, lim) in st.breached.items())
        op = "reduce" if want == "REDUCING" else "halt"
        tag = self._submit(op, reason=f"risk: {why}"[:500])
        self._asked = (want, now)
        if tag or self._down_noted != want:          # a gateway that stays down: said once
            self._action("", "", op, "sent" if tag else "gateway_down", tag=tag or "",
                         text=f"trading {self.trading} -> {want}: {why}")
        self._down_noted = None if tag else want

    def _cancel_book(self, book: str) -> None:
        strategy, account = self._book_fields(book)
        if strategy is None and account is None:
            return
        tag = self._submit("cancel_all", strategy=strategy, account=account)
        self._action("", book, "cancel_all", "sent" if tag else "gateway_down", tag=tag or "")

    def _book_fields(self, book: str) -> tuple[str | None, str | None]:
        """(strategy, account) of the orders that land in `book`."""
        by = self.settings.book_by
        if by == "strategy":
            return (None if book == "-" else book), None
        if by == "account":
            return None, (None if book == "-" else book)
        account, _, strategy = book.partition("/")
        return (None if strategy == "-" else strategy), (None if account == "-" else account)

    def _flatten(self, snap, now: int) -> None:
        f = self.settings.flatten
        bk = self.book
        for b, name in enumerate(bk.books):
            st = self.states[name]
            if not st.breached:
                continue
            rows = np.flatnonzero((snap.book == b) & (snap.position != 0))
            if not len(rows) and not any(not ch.done for ch in st.children.values()):
                if st.state != "flat":
                    st.state = "flat"
                    self._action("", name, "flat", "ok", text="every position of the book is flat")
                continue
            st.state = "flattening"
            strategy, account = self._book_fields(name)
            for r in rows.tolist():
                s = int(snap.sym[r])
                sym = bk.syms[s]
                ch = st.children.get(sym)
                if ch is not None:
                    if not ch.done or bk.filled_by_parent.get(ch.id, 0) < ch.cum:
                        continue          # its fills are not in the book yet: size from the truth
                    del st.children[sym]
                if now < st.next_at.get(sym, 0):
                    continue
                pos = int(snap.position[r])
                c = child_order(pos, bk.bid[s], bk.ask[s], bk.bsize[s], bk.asize[s], f.max_display_share,
                                f.through_bps)
                if c is None:
                    continue
                tag = self._tag_new(sym, c, strategy, account)
                st.next_at[sym] = now + int(f.interval_s * 1e9)
                if tag is None:
                    continue
                st.children[sym] = FlatChild(tag, sym, c.qty)
                self._action(sym, name, "flatten_order", c.side, value=float(c.displayed),
                             limit=f.max_display_share, qty=c.qty, price=c.price, tag=tag,
                             text=f"position {pos}: {c.side} {c.qty} of {c.displayed} displayed, IOC @ {c.price:g}")

    def _tag_new(self, sym: str, c, strategy, account) -> str | None:
        return self._submit("new", sym=sym, side=c.side, qty=c.qty, type="limit", price=c.price, tif="ioc",
                            strategy=strategy, account=account)

    # ---- measures and rows ---------------------------------------------------------------------
    def _measure(self):
        """The book's snapshot, VaR/ES per position row and per book."""
        bk = self.book
        snap = bk.snapshot()
        n, nb, ns = len(snap.position), len(bk.books), len(bk.syms)
        expo = np.zeros((ns, nb + n))
        if n:
            np.add.at(expo, (snap.sym, snap.book), snap.net)
            expo[snap.sym, nb + np.arange(n)] = snap.net
        var, es = self.scenarios.var_es(expo, bk.syms) if nb + n else (np.zeros(0), np.zeros(0))
        return snap, (var[nb:], es[nb:]), (var[:nb], es[:nb])

    def _action(self, sym: str, book: str, action: str, reason: str, *, value: float = NAN,
                limit: float = NAN, qty: int = 0, price: float = NAN, tag: str = "", text: str = "") -> None:
        row = dict(time=self.clock(), sym=sym, book=book, action=action, reason=reason, value=value,
                   limit=limit, qty=qty, price=price, tag=tag, text=text[:1000])
        self._rows["risk_action"].append(row)
        self.actions.append(row)
        self.counts[f"action_{action}"] += 1
        self._dirty = True

    def _publish(self, now: int, snap=None, per_row=None, per_book=None) -> None:
        if snap is None:
            snap, per_row, per_book = self._measure()
        bk = self.book
        keep = np.flatnonzero((snap.position != 0) | (snap.realized != 0))
        nb = len(bk.books)
        states = [self.states.get(b, BookState()).state for b in bk.books]
        book_pos = np.bincount(snap.book, np.abs(snap.position), nb) if len(snap.position) else np.zeros(nb)
        n = len(keep) + nb
        if n:
            cols = {
                "time": np.full(n, now, np.int64),
                "sym": np.array([bk.syms[i] for i in snap.sym[keep].tolist()] + [""] * nb, dtype=object),
                "book": np.array([bk.books[i] for i in snap.book[keep].tolist()] + bk.books, dtype=object),
                "position": np.concatenate([snap.position[keep], book_pos.astype(np.int64)]),
                "avg_cost": np.concatenate([snap.avg_cost[keep], np.full(nb, NAN)]),
                "realized": np.concatenate([snap.realized[keep], snap.book_realized]),
                "unrealized": np.concatenate([snap.unrealized[keep], snap.book_unrealized]),
                "gross": np.concatenate([snap.gross[keep], snap.book_gross]),
                "net": np.concatenate([snap.net[keep], snap.book_net]),
                "var": np.concatenate([per_row[0][keep], per_book[0]]),
                "es": np.concatenate([per_row[1][keep], per_book[1]]),
                "state": np.array([states[i] for i in snap.book[keep].tolist()] + states, dtype=object),
                "trading": np.full(n, self.trading, dtype=object),
            }
            cols["pnl"] = cols["realized"] + cols["unrealized"]
            self.feed.publish("risk", {c.name: cols[c.name] for c in self.registry["risk"].columns})
            self.counts["risk_rows"] += n
        acts = self._rows["risk_action"]
        if acts:
            self.feed.publish("risk_action", {c.name: np.array([a[c.name] for a in acts],
                                                               dtype=object if c.dtype is None else c.dtype)
                                              for c in self.registry["risk_action"].columns})
            self.counts["action_rows"] += len(acts)
            acts.clear()
        self._dirty = False
        self._last_publish = now
        self.last_snapshot = self._view(now, snap, per_row, per_book, keep)

    def _view(self, now, snap, per_row, per_book, keep) -> dict:
        bk = self.book
        s = self.settings
        pos = [{"book": bk.books[int(snap.book[r])], "sym": bk.syms[int(snap.sym[r])],
                "position": int(snap.position[r]), "avg_cost": float(snap.avg_cost[r]),
                "realized": float(snap.realized[r]), "unrealized": float(snap.unrealized[r]),
                "mid": float(snap.mid[r]), "gross": float(snap.gross[r]), "net": float(snap.net[r]),
                "var": float(per_row[0][r]), "es": float(per_row[1][r])} for r in keep.tolist()]
        books = []
        for b, name in enumerate(bk.books):
            st = self.states.get(name, BookState())
            lim = s.limits_of(name)
            books.append({"book": name, "realized": float(snap.book_realized[b]),
                          "unrealized": float(snap.book_unrealized[b]),
                          "pnl": float(snap.book_realized[b] + snap.book_unrealized[b]),
                          "gross": float(snap.book_gross[b]), "net": float(snap.book_net[b]),
                          "var": float(per_book[0][b]), "es": float(per_book[1][b]), "state": st.state,
                          "breached": {k: list(v) for k, v in st.breached.items()},
                          "limits": lim.model_dump(),
                          "flattening": {sym: {"tag": c.tag, "qty": c.qty, "done": c.done}
                                         for sym, c in st.children.items()}})
        return {"time": now, "positions": pos, "books": books}

    # ---- control ------------------------------------------------------------------------------
    def status(self) -> dict:
        s = self.settings
        snap = self.last_snapshot or {"time": 0, "positions": [], "books": []}
        return {"pid": os.getpid(), "ctl": s.ctl, "trading": self.trading, "trading_reason": self.trading_reason,
                "book_by": s.book_by, "on_breach": s.on_breach, **snap,
                "var": {"method": "historical simulation", "horizon_min": s.var.horizon_min,
                        "confidence": s.var.confidence, "scenarios": self.scenarios.count,
                        "days": [str(d) for d in self.scenarios.days],
                        "include_today": s.var.include_today},
                "actions": list(self.actions)[-50:],
                "counters": {**self.counts, **{f"book_{k}": v for k, v in self.book.counts.items()},
                             **refused()},
                "data": {"last_quote_time": self.book.last_quote_time,
                         "last_fill_time": self.book.last_fill_time,
                         "fills": self.book.counts["fills"], "quote_rows": self.book.counts["quote_rows"]}}

    def _on_ctl(self) -> None:
        from tickerplant.protocol import split_envelope
        for _ in range(64):
            try:
                frames = self.ctl.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            envelope, body = split_envelope(frames)
            if envelope is None:
                self.counts["ctl_unenveloped"] += 1
                continue
            try:
                req = json.loads(body[0]) if len(body) == 1 else None
                if not isinstance(req, dict):
                    raise ValueError("send one JSON object, e.g. {\"cmd\": \"status\"}")
                cmd = req.get("cmd")
                if cmd in ("status", "positions", "pnl", "risk"):
                    reply = self.status()
                else:
                    raise ValueError(f"unknown cmd {cmd!r}: status")
            except (ValueError, UnicodeDecodeError, RecursionError) as e:
                self.counts["ctl_bad"] += 1
                reply = {"error": f"{e}"}
            try:
                self.ctl.send_multipart([*envelope, json.dumps(reply, default=_jsonable).encode()], zmq.NOBLOCK)
            except zmq.ZMQError:
                self.counts["ctl_unsent"] += 1


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(type(v).__name__)
