"""The backtest order port: the gateway's order path in process, answering the intents of
/work/helpers/INTENTS.md (new, cancel, replace, cancel_all, orders, status) with the same
replies and events, from the gateway's own libraries:

    pre-trade risk   gateway.risk.Risk          (checks every parent order, replace and cancel)
    order state      gateway.orders.Orders      (every child order version; fills, positions)
    routing          gateway.sor.route          (children across venues by price, fees, size)
    venues           gateway.matching.MatchingEngine per venue, with the venue's FillModel
                     (price offset, displayed size, consumed liquidity, latency, fees)

Market data reaches the engines and the risk engine lazily, as batches: the runtime says
`begin(quote columns)` for each chunk and `sync(t)` before anything happens at data time t
(an order, a timer, a due request); rows are fed up to t then, in one numpy call per engine.
A venue with nothing resting and nothing due gets only the rows that change its state (see
`_feed_engine`; `compress = False` feeds every row, with the same results: tested). The
engines apply latency themselves: a request stamped t takes effect at t + latency against the
quotes stamped up to then. Risk gets each sym's latest valid quote (all it keeps).

Replies and events go to `inbox` (dicts, as the gateway sends them over ZeroMQ): a reply per
request ({"tag", "ok", "code", "text", "id"...}; a risk denial has ok false and the
gateway.risk.Deny value as code), then "order" events (a child's, with its venue; the
parent's, venue "", when the parent's status or filled quantity changes, as
gateway.sor.parent_state computes it) and "fill" events (one per execution, named by the
parent's tag). Codes this port uses besides risk's are the gateway's (gateway.intents.CODES):
unknown_order, not_working (nothing to cancel or replace), bad_request, unknown_venue; and one
of its own, replace_unsupported (a parent working at more than one venue: the gateway
replaces each child, this port does not).

Working DAY orders are canceled at each day's end (`end_of_day`), as a venue expires them.
Everything is deterministic: no clock, no randomness, reports merged across venues by time
(ties in venue order).
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter

import numpy as np
import pyarrow as pa

from gateway.config import VenueSettings
from gateway.matching import MatchingEngine, Routed
from gateway.model import (CancelOrder, ExecReport, NewOrder, OrdStatus, OrdType,
                           ReplaceOrder, Side, TimeInForce)
from gateway.orders import Orders, Outcome
from gateway.risk import Risk, RiskSettings
from gateway.sor import VenueQuote, parent_state, route

log = logging.getLogger("strategy.backtest")

SIDE = {"buy": Side.BUY, "sell": Side.SELL}
TYPE = {"limit": OrdType.LIMIT, "market": OrdType.MARKET}
TIF = {"day": TimeInForce.DAY, "ioc": TimeInForce.IOC, "fok": TimeInForce.FOK, "gtc": TimeInForce.GTC}
RESTING = (TimeInForce.DAY, TimeInForce.GTC)


class Parent:
    """A strategy's parent order as the port keeps it."""
    __slots__ = ("tag", "id", "order", "strategy", "time", "status", "cum", "avg", "fees", "code",
                 "text", "pending")

    def __init__(self, tag: str, pid: str, order: NewOrder, strategy: str, time: int):
        self.tag, self.id, self.order, self.strategy, self.time = tag, pid, order, strategy, time
        self.status, self.cum, self.avg, self.fees = "PENDING_NEW", 0, 0.0, 0.0
        self.code, self.text, self.pending = None, "", None


class BacktestPort:
    def __init__(self, venues: dict[str, VenueSettings], risk: RiskSettings | None = None,
                 universe=None, session: str = "strategy"):
        if not venues:
            raise ValueError("a backtest needs at least one venue")
        self.venues = dict(venues)
        self.engines = {n: MatchingEngine(v.fill_model(), venue=n, id_prefix=f"{n}-",
                                          syms=v.syms or None, halted=v.halted)
                        for n, v in self.venues.items()}
        self.risk = Risk(risk or RiskSettings())
        self.orders = Orders()
        self.session = session
        self.universe = universe
        self.inbox: list[dict] = []
        self.hot: set[str] = set()           # syms with a resting child order at some venue
        self.parents: dict[str, Parent] = {}  # by tag
        self._by_id: dict[str, Parent] = {}
        self.fills: list[tuple] = []
        self.counters: Counter[str] = Counter()
        self._tags: dict[str, dict] = {}       # request tag -> its reply (idempotency)
        self._q: dict | None = None
        self._fed = 0
        self._n = 0
        self._pending_out: list[Routed] = []   # reports of cancels sent, handled together
        self.compress = True                   # idle venues get each sym's last row only (see _feed)
        self._raw: dict[str, tuple] = {}       # each sym's last quote row fed: bid, ask, bsize, asize
        self.now = 0

    # ---- market data ----------------------------------------------------------------------
    def begin(self, quotes: dict | None) -> None:
        """A new chunk's quote columns (time, code, bid, ask, bsize, asize, runmax)."""
        self._q, self._fed = quotes, 0

    def finish(self) -> None:
        """The chunk's remaining rows reach the venues."""
        q = self._q
        if q is not None and self._fed < len(q["time"]):
            self._feed(self._fed, len(q["time"]))
        self._q, self._fed = None, 0

    def sync(self, t: int) -> None:
        """Everything that happens at the venues up to data time t has happened: requests due
        by t took effect, resting orders met the quotes stamped up to t. While nothing is
        pending or resting, nothing can happen, and the quotes wait to be fed in one larger
        batch (before the next request, or at the end of the chunk)."""
        if self.hot or self.next_due() is not None:
            self._feed_to(t)
        if t > self.now:
            self.now = t

    def _feed_to(self, t: int) -> None:
        """The venues and risk see the market up to data time t; requests due by t take effect."""
        q = self._q
        if q is not None:
            j = int(np.searchsorted(q["runmax"], t, "right"))
            if j > self._fed:
                self._feed(self._fed, j)
        out: list[Routed] = []
        for e in self.engines.values():
            due = e.next_due()
            if due is not None and due <= t:
                out += e.advance(t)
        if out:
            self._handle(out)
        if t > self.now:
            self.now = t

    def next_due(self) -> int | None:
        dues = [d for d in (e.next_due() for e in self.engines.values()) if d is not None]
        return min(dues) if dues else None

    def _feed(self, a: int, b: int) -> None:
        q = self._q
        self._fed = b
        words = self.universe.names
        codes = q["code"][a:b]
        if b - a < len(words):             # name only the syms of these rows
            uniq, inv = np.unique(codes, return_inverse=True)
            words, codes = [words[c] for c in uniq.tolist()], inv.astype(np.int32)
        time, bid, ask = q["time"][a:b], q["bid"][a:b], q["ask"][a:b]
        bsize, asize = q["bsize"][a:b], q["asize"][a:b]
        out: list[Routed] = []
        cols = (time, bid, ask, bsize, asize)
        changes: dict = {}
        for e in self.engines.values():
            out += self._feed_engine(e, q["runmax"][a:b], codes, words, cols, changes)
        last = _last_rows(codes, len(words))
        for c in last.tolist():
            self._raw[words[codes[c]]] = (float(bid[c]), float(ask[c]), int(bsize[c]), int(asize[c]))
        rows = _latest_valid(codes, len(words), bid, ask) if q["runmax"] is q["time"] else None
        if rows is None:
            self.risk.on_quotes(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                                               pa.array(words, pa.string())),
                                bid, ask, time)
        else:          # the same result: Risk keeps only each sym's latest valid quote
            self.risk.on_quotes(np.asarray(words, dtype=object)[codes[rows]], bid[rows], ask[rows], time[rows])
        if out:
            self._handle(out)
        t = int(q["runmax"][b - 1])
        if t > self.now:
            self.now = t

    def _feed_engine(self, e: MatchingEngine, tmax, codes, words, cols, changes: dict) -> list[Routed]:
        """Feed one venue the slice's rows. While nothing rests there (nor anywhere: the port
        tracks resting orders across venues) and no request of its falls due, no row can fill
        anything, and for a sym whose displayed size is untouched (available == displayed on
        both sides) the venue's state after the rows is what their last row makes it (the
        engine's replenish rule keeps available == displayed row by row): such a sym gets its
        last row only. A sym with consumed size also gets the first row that changes each
        consumed side (that replenishes it; from there the same holds). A request falling due
        inside the slice takes effect after the rows stamped up to then, as always."""
        def rows_of(lo: int, hi: int) -> np.ndarray:
            sub = codes[lo:hi]
            rows = _last_rows(sub, len(words)) + lo
            for c in np.unique(sub).tolist():
                side = _consumed(e, words[c])
                if side:
                    rows = np.union1d(rows, self._first_changes(codes, c, lo, hi, side, cols, words, changes))
            return rows

        def feed(rows) -> list[Routed]:
            t, b_, a_, bs, as_ = cols
            if rows is None:
                return e.on_quotes(t, (codes, words), b_, a_, bs, as_)
            return e.on_quotes(t[rows], (codes[rows], words), b_[rows], a_[rows], bs[rows], as_[rows])

        n = len(codes)
        if not self.compress or self.hot:
            return feed(None)
        out: list[Routed] = []
        pos = 0
        while pos < n:
            due = e.next_due()
            if due is None or due > tmax[n - 1]:
                return out + feed(rows_of(pos, n))
            j = int(np.searchsorted(tmax, due, "right"))
            if j > pos:
                out += feed(rows_of(pos, j))
            seg = e.advance(due)
            out += seg
            pos = max(j, pos)
            final = {r.report.order_id: r.report.ord_status for r in seg if isinstance(r.report, ExecReport)}
            if any(not st.terminal for st in final.values()):
                # an order rests now: every later row may cross it
                t, b_, a_, bs, as_ = cols
                rest = np.arange(pos, n)
                return out + (e.on_quotes(t[rest], (codes[rest], words), b_[rest], a_[rest], bs[rest], as_[rest])
                              if len(rest) else [])
        return out

    def _first_changes(self, codes, c: int, lo: int, hi: int, side, cols, words, changes: dict) -> np.ndarray:
        """The rows in [lo, hi) of code c that first change its bid side (if side[0]) and its
        ask side (if side[1]) against the row before it (before the slice: the last row fed)."""
        if c not in changes:
            _, bid, ask, bsize, asize = cols
            at = np.flatnonzero(codes == c)
            prev = self._raw.get(words[c])
            flags = []
            for px, sz, k in ((bid, bsize, 0), (ask, asize, 1)):
                p, z = px[at], sz[at]
                pp = np.concatenate([[prev[k] if prev else np.nan], p[:-1]])
                zz = np.concatenate([[prev[k + 2] if prev else -1], z[:-1]])
                flags.append(~((p == pp) | (np.isnan(p) & np.isnan(pp))) | (z != zz))
            changes[c] = (at, flags[0], flags[1])
        at, fb, fa = changes[c]
        inside = (at >= lo) & (at < hi)
        out = []
        for on, f in ((side[0], fb), (side[1], fa)):
            if on:
                hit = np.flatnonzero(f & inside)[:1]
                if len(hit):
                    out.append(int(at[hit[0]]))
        return np.array(out, dtype=np.int64)

    # ---- requests -------------------------------------------------------------------------
    def request(self, msg: dict, time: int) -> None:
        """One intent (a dict as INTENTS.md gives it), at data time `time`."""
        tag = msg.get("tag")
        if not isinstance(tag, str) or not tag or len(tag) > 64:
            self.counters["bad_request"] += 1
            self._reply({"tag": tag, "ok": False, "code": "bad_request",
                         "text": "every request needs a tag: a string of 1-64 chars"}, time)
            return
        if tag in self._tags:
            self.counters["dup"] += 1
            self.inbox.append({**self._tags[tag], "dup": True})
            return
        time = max(int(time), 0)
        self._feed_to(time)
        op = msg.get("op")
        handler = {"new": self._new, "cancel": self._cancel, "replace": self._replace,
                   "cancel_all": self._cancel_all, "orders": self._list, "status": self._status}.get(op)
        if handler is None:
            self._reply({"tag": tag, "ok": False, "code": "bad_request",
                         "text": f"unknown op {op!r}: one of new, cancel, replace, cancel_all, orders, status"},
                        time)
            return
        handler(msg, max(time, self.now))

    def _reply(self, rep: dict, time: int) -> dict:
        rep.setdefault("code", None)
        rep.setdefault("text", "")
        rep["time"] = time
        if rep.get("tag"):
            self._tags[rep["tag"]] = rep
        self.inbox.append(rep)
        return rep

    def _new(self, msg: dict, t: int) -> None:
        tag = msg["tag"]
        side, typ, tif = SIDE.get(msg.get("side")), TYPE.get(msg.get("type", "limit")), TIF.get(msg.get("tif", "day"))
        sym = msg.get("sym")
        venue = msg.get("venue")
        if side is None or typ is None or tif is None or not isinstance(sym, str) or not sym:
            self._reply({"tag": tag, "ok": False, "code": "bad_request",
                         "text": f"new needs sym, side buy/sell, type limit/market, tif day/ioc/fok/gtc "
                                 f"(got {msg})"}, t)
            return
        if venue is not None and venue not in self.engines:
            self._reply({"tag": tag, "ok": False, "code": "unknown_venue",
                         "text": f"unknown venue {venue!r}; venues: {sorted(self.engines)}"}, t)
            return
        self._n += 1
        pid = f"P{self._n}"
        price = msg.get("price") if typ is OrdType.LIMIT else None
        qty = msg.get("qty")
        order = NewOrder(pid, sym, side, qty, typ, price, tif, msg.get("account", ""), t)
        strategy = msg.get("strategy", self.session)
        p = Parent(tag, pid, order, strategy, t)
        self.parents[tag] = p
        self._by_id[pid] = p
        d = self.risk.check(order, t)
        if not d:
            self.counters["denied"] += 1
            self.orders.deny(order, "", d.text, t, strategy=strategy)
            p.status, p.code, p.text = "REJECTED", d.code.value, d.text
            self._reply({"tag": tag, "ok": False, "id": pid, "code": d.code.value, "text": d.text}, t)
            return
        if venue is not None:
            children = [(venue, dataclasses.replace(order, cl_ord_id=f"{pid}.1"))]
            text = ""
        else:
            rt = route(order, self._venue_quotes(sym), _numbering(pid))
            children, text = [(c.venue, c.order) for c in rt.children], rt.text
        self._reply({"tag": tag, "ok": True, "id": pid}, t)
        p.text = text
        out: list[Routed] = []
        for v, child in children:
            self.risk.on_change(self.orders.new(child, v, t, parent_id=pid, strategy=strategy))
            out += self.engines[v].submit(self.session, child, t)
        self._handle(out, touched={pid})

    def _venue_quotes(self, sym: str) -> dict[str, VenueQuote]:
        quotes = {}
        for n, e in self.engines.items():
            v = self.venues[n]
            q = e.quote(sym)
            if q is None:
                quotes[n] = VenueQuote(math.nan, math.nan, 0, 0, v.taker_fee_per_share, v.taker_fee_bps)
            else:
                quotes[n] = VenueQuote(q["bid"], q["ask"], q["bid_size"], q["ask_size"],
                                       v.taker_fee_per_share, v.taker_fee_bps)
        return quotes

    def _target(self, msg: dict, t: int) -> Parent | None:
        p = self.parents.get(msg.get("target"))
        if p is None:
            self._reply({"tag": msg["tag"], "ok": False, "code": "unknown_order",
                         "text": f"no order with tag {msg.get('target')!r}"}, t)
        return p

    def _working_children(self, p: Parent):
        return [c for c in self.orders.children(p.id) if c.working]

    def _cancel(self, msg: dict, t: int) -> None:
        p = self._target(msg, t)
        if p is None:
            return
        n = self._cancel_parent(p, t)
        if n == 0:
            self._reply({"tag": msg["tag"], "ok": False, "code": "not_working", "id": p.id,
                         "text": f"order {p.tag} is {p.status}: nothing to cancel"}, t)
        else:
            self._reply({"tag": msg["tag"], "ok": True, "id": p.id}, t)
            self._flush()

    def _cancel_parent(self, p: Parent, t: int, only_day: bool = False) -> int:
        """Send a cancel for each working child; the number sent."""
        sent = 0
        for c in self._working_children(p):
            if (only_day and c.tif is not TimeInForce.DAY) or c.request is not None:
                continue                       # GTC survives the day; a request is pending
            self._n += 1
            cancel = CancelOrder(f"{c.cl_ord_id}~{self._n}", c.cl_ord_id, c.sym, c.side, c.order_qty,
                                 c.order_id, t)
            ch = self.orders.cancel_sent(cancel, t)
            if ch.outcome is not Outcome.APPLIED:
                continue                       # a cancel or replace is already pending
            self.risk.on_change(ch)
            self.risk.check_cancel(cancel, t)
            self._child_event(ch, t)
            self._pending_out += self.engines[c.venue].submit(self.session, cancel, t)
            sent += 1
        return sent

    def _flush(self) -> None:
        out, self._pending_out = self._pending_out, []
        if out:
            self._handle(out)

    def _replace(self, msg: dict, t: int) -> None:
        p = self._target(msg, t)
        if p is None:
            return
        tag = msg["tag"]
        working = self._working_children(p)
        if len(working) != 1:
            code, text = (("not_working", f"order {p.tag} is {p.status}: nothing to replace") if not working else
                          ("replace_unsupported", f"order {p.tag} works at {len(working)} venues; cancel it "
                                                  f"and send a new order"))
            self._reply({"tag": tag, "ok": False, "code": code, "id": p.id, "text": text}, t)
            return
        c = working[0]
        qty, price = msg.get("qty"), msg.get("price")
        other = p.cum - c.cum_qty
        if not isinstance(qty, int) or qty - other <= c.cum_qty:
            self._reply({"tag": tag, "ok": False, "code": "bad_request", "id": p.id,
                         "text": f"new total qty {qty!r} must be a whole number above the {p.cum} filled"}, t)
            return
        self._n += 1
        rep = ReplaceOrder(f"{c.cl_ord_id}~{self._n}", c.cl_ord_id, c.sym, c.side, qty - other,
                           None if c.ord_type is OrdType.MARKET else price, c.ord_type, c.tif,
                           c.order_id, t)
        d = self.risk.check_replace(rep, c, t)
        if not d:
            self.counters["denied"] += 1
            self._reply({"tag": tag, "ok": False, "code": d.code.value, "id": p.id, "text": d.text}, t)
            return
        ch = self.orders.replace_sent(rep, t)
        if ch.outcome is not Outcome.APPLIED:
            self._reply({"tag": tag, "ok": False, "code": "bad_request", "id": p.id, "text": ch.text}, t)
            return
        self.risk.on_change(ch)
        p.pending = (qty, rep.price)
        self._reply({"tag": tag, "ok": True, "id": p.id}, t)
        self._child_event(ch, t)
        self._handle(self.engines[c.venue].submit(self.session, rep, t), touched={p.id})

    def _cancel_all(self, msg: dict, t: int) -> None:
        n = 0
        for p in list(self.parents.values()):
            if p.status in _DONE:
                continue
            if any(k in msg and msg[k] is not None and msg[k] != v for k, v in
                   (("strategy", p.strategy), ("account", p.order.account), ("sym", p.order.sym))):
                continue
            n += self._cancel_parent(p, t)
        self._reply({"tag": msg["tag"], "ok": True, "count": n}, t)
        self._flush()

    def _list(self, msg: dict, t: int) -> None:
        open_only = bool(msg.get("open", False))
        rows = [self._parent_row(p) for p in self.parents.values()
                if not open_only or p.status not in _DONE]
        self._reply({"tag": msg["tag"], "ok": True, "orders": rows}, t)

    def _status(self, msg: dict, t: int) -> None:
        self._reply({"tag": msg["tag"], "ok": True, "state": self.risk.state.name,
                     "venues": {n: "LOGGED_ON" for n in self.engines},
                     "counters": dict(self.counters),
                     "positions": {p.sym: p.qty for p in self.risk.positions()}}, t)

    def end_of_day(self, t: int) -> None:
        """Cancel every working DAY order (the venues expire them at the end of the day)."""
        self._feed_to(t)
        for p in list(self.parents.values()):
            if p.status not in _DONE:
                self._cancel_parent(p, t, only_day=True)
        self._flush()
        lat = max((e.model.latency_ns for e in self.engines.values()), default=0)
        self._feed_to(t + lat)

    # ---- reports --------------------------------------------------------------------------
    def _handle(self, out: list[Routed], touched: set[str] | None = None) -> None:
        if len(self.engines) > 1 and len(out) > 1:
            out = sorted(out, key=_report_time)          # stable: ties stay in venue order
        touched = set(touched or ())
        for r in out:
            rep = r.report
            ch = self.orders.apply(rep)
            if ch.alarm:
                self.counters[ch.outcome.name.lower()] += 1
                log.error("backtest: %s: %s", ch.outcome.value, ch.text)
            if ch.order is None:
                continue
            self.risk.on_change(ch)
            o = ch.order
            p = self._by_id.get(o.parent_id)
            if p is None:
                continue
            touched.add(p.id)
            t = rep.time
            if ch.status is not ch.prev or ch.replaced is not None:
                self._child_event(ch, t)
            if ch.fill_qty:
                self.counters["fills"] += 1
                exec_id = rep.exec_id if isinstance(rep, ExecReport) else ""
                side = "buy" if o.side is Side.BUY else "sell"
                self.fills.append((t, p.tag, p.id, o.cl_ord_id, o.venue, exec_id, o.sym, side,
                                   ch.fill_qty, ch.fill_px, ch.fee))
                p.fees += ch.fee
                self.inbox.append({"event": "fill", "tag": p.tag, "id": p.id, "exec_id": exec_id,
                                   "venue": o.venue, "sym": o.sym, "side": side, "qty": ch.fill_qty,
                                   "price": ch.fill_px, "fee": ch.fee, "time": t})
            if ch.replaced is not None and p.pending is not None:
                qty, price = p.pending
                p.order = dataclasses.replace(p.order, qty=qty, price=price)
                p.pending = None
            self._parent_event(p, t)
        for pid in touched:
            self._parent_event(self._by_id[pid], self.now)
        self._update_hot(out)

    def _child_event(self, ch, t: int) -> None:
        o = ch.order
        p = self._by_id.get(o.parent_id)
        if p is None:
            return
        self.inbox.append({"event": "order", "tag": p.tag, "id": o.cl_ord_id, "status": ch.status.name,
                           "cum_qty": o.cum_qty, "leaves_qty": o.leaves_qty, "avg_px": o.avg_px,
                           "venue": o.venue, "text": ch.text or o.text, "time": t})

    def _parent_event(self, p: Parent, t: int) -> None:
        ps = parent_state(p.order, self.orders.children(p.id))
        status = ps.status.name
        if status == p.status and ps.filled == p.cum:
            return
        p.status, p.cum, p.avg = status, ps.filled, ps.avg_px
        done = ps.status.terminal
        self.inbox.append({"event": "order", "tag": p.tag, "id": p.id, "status": status,
                           "cum_qty": ps.filled, "leaves_qty": 0 if done else p.order.qty - ps.filled,
                           "avg_px": ps.avg_px, "venue": "", "text": p.text, "time": t,
                           "qty": p.order.qty, "price": p.order.price})

    def _update_hot(self, out: list[Routed]) -> None:
        syms = {r.report.sym for r in out if isinstance(r.report, ExecReport)} | self.hot
        for s in syms:
            if any(o.tif in RESTING and o.status is not OrdStatus.PENDING_NEW
                   for o in self.orders.working(sym=s)):
                self.hot.add(s)
            else:
                self.hot.discard(s)

    def _parent_row(self, p: Parent) -> dict:
        o = p.order
        return {"tag": p.tag, "id": p.id, "sym": o.sym, "side": "buy" if o.side is Side.BUY else "sell",
                "qty": o.qty, "type": "market" if o.ord_type is OrdType.MARKET else "limit",
                "price": o.price, "tif": o.tif.name.lower(), "status": p.status, "cum_qty": p.cum,
                "avg_px": p.avg, "fees": p.fees, "time": p.time, "code": p.code, "text": p.text,
                "strategy": p.strategy}


_DONE = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


def _last_rows(codes: np.ndarray, k: int) -> np.ndarray:
    """The index of each code's last row, in row order."""
    last = np.full(k, -1, np.int64)
    np.maximum.at(last, codes, np.arange(len(codes), dtype=np.int64))
    return np.sort(last[last >= 0])


def _consumed(engine: MatchingEngine, sym: str) -> tuple[bool, bool] | None:
    """Which sides of `sym` a fill took displayed size of at this venue that no quote
    replenished yet (bid, ask); None: neither."""
    q = engine.quote(sym)
    if q is None:
        return None
    side = (q["bid_avail"] != q["bid_size"], q["ask_avail"] != q["ask_size"])
    return side if any(side) else None


def _latest_valid(codes: np.ndarray, k: int, bid: np.ndarray, ask: np.ndarray) -> np.ndarray | None:
    """Row index of each code's last quote with two positive finite sides, for time-sorted
    rows and few syms (one vectorised pass per sym); None for many syms."""
    if k > 16:
        return None
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask > 0)
    n = len(codes)
    rows = []
    for c in range(k):
        hit = np.flatnonzero((codes[::-1] == c) & ok[::-1][:n])[:1]
        if len(hit):
            rows.append(n - 1 - int(hit[0]))
    return np.array(sorted(rows), dtype=np.int64)


def _report_time(r: Routed) -> int:
    return r.report.time


def _numbering(pid: str):
    n = 0

    def next_id() -> str:
        nonlocal n
        n += 1
        return f"{pid}.{n}"
    return next_id
