"""A venue's matching engine: orders fill against the market's live quotes, transformed per
venue. A pure library: no sockets, no threads, no clock. Every call passes the time (int ns);
the same calls in the same order give the same reports (the venue process and a backtest run
this same code). Not thread-safe: one thread owns an engine.

    engine = MatchingEngine(fill_model, venue="A", id_prefix="A1-")
    out = engine.submit(session, NewOrder | CancelOrder | ReplaceOrder, time)   # -> [Routed]
    out = engine.on_quotes(time, sym, bid, ask, bsize, asize)     # numpy columns of the quote table
    out = engine.advance(time)            # requests whose latency has elapsed
    out = engine.cancel_all(session, time)    # cancel-on-disconnect
    out = engine.halt(sym, time) / engine.resume(sym, time); engine.next_due() -> int | None
Each Routed is (session, ExecReport | CancelReject, reject_reason): whom to tell, what, and
for a rejected order its OrdRejReason (103).

The model, exactly:
* Quotes. The venue sees each quote row transformed: bid - offset, ask + offset, where
  offset = price * offset_bps / 1e4 + offset_abs, and each side's displayed size is
  floor(size * display_fraction). A side with a non-finite or non-positive price has no
  quote. Venue prices are rounded to 1e-8 (not to a tick).
* Consumed liquidity. A fill takes displayed size from the side it trades against (an ask
  for a buy, a bid for a sell), whether the order takes (arrives marketable) or rests (is
  crossed by a quote). A side replenishes, to the displayed size of the newest quote, only
  when a later quote row for the sym changes that side's price or size; a row that repeats
  a side leaves what was consumed consumed. So one quote never fills twice, and two orders
  never take the same displayed size.
* Latency. A request (new, cancel, replace) submitted at t takes effect at t + latency:
  it is validated, acknowledged and matched then, against the quotes stamped at or before
  that time (within a quote batch, rows stamped <= t + latency apply first). Requests take
  effect in (time, submission) order. Reports carry the time they happen. Live, the venue
  calls `advance(now)` when `next_due()` comes; a backtest feeds quotes and requests in
  time order. Both give the same reports.
* Taking. An order that takes effect trades at once against the venue quote on the other
  side if it is marketable (market, or buy limit >= ask / sell limit <= bid), at the quote's
  price, for min(leaves, available displayed size): one level, the top of book. Taker fees.
* Resting. What is left of a DAY/GTC order rests, in price-time priority among all sessions:
  market orders first, then the best limit price, then the earliest time. A quote that
  crosses resting orders (ask <= a buy's limit, bid >= a sell's limit; touching counts)
  fills them in priority order out of that side's available size. A resting limit order
  fills at its own limit price, never at the better quote price (conservative, and what an
  exchange does for the resting side), with maker fees (negative = rebate). A resting market
  order fills at the quote price with taker fees.
* Market orders never need a price. They are rejected if the side they take has no quote
  when they take effect; a DAY/GTC market order's unfilled part rests and takes each new
  quote's liquidity, ahead of every limit order.
* IOC: take what is available now, cancel the rest (ExecType 4). FOK: fill all of it now
  from the available size, or cancel all of it (no fill). Neither ever rests.
* Cancel: unknown id -> CancelReject 1; order already done -> CancelReject 0 (too late).
  Replace (qty = new total): same checks, plus new qty must exceed the filled qty, a limit
  keeps a price > 0, the type, sym and side stay, tif stays DAY/GTC; otherwise
  CancelReject 99 with the reason in Text, and the order is unchanged. A replace keeps time
  priority only when the price is unchanged and qty does not grow. A replaced order that
  becomes marketable takes at once, as a new order would.
  The ClOrdID of a successful cancel/replace becomes the order's current id; requests must
  name the current id (an older one is refused, naming the current one).
* Rejects (ExecType 8, OrdRejReason): unknown sym 1 (a sym is known once it has been
  quoted, or if it is in `syms`), halted sym 2 (exchange closed), qty <= 0 13, limit without
  a price > 0 99, market order with no quote 99, ClOrdID already used by this session 6.
  While a sym is halted: new orders and replaces are refused, cancels work, nothing fills.
* Reports: every accepted order gets NEW first, then TRADE per fill, then CANCELED/REPLACED
  as they happen. ExecIDs are unique (id_prefix + counter; give each run its own prefix).
  cum_qty + leaves_qty == order_qty while working, leaves 0 once done; avg_px is the
  qty-weighted mean of the fills.
* cancel_all(session): every working order of the session is canceled now (no latency),
  its not-yet-live new orders are rejected, its pending cancels/replaces get CancelReject 0.

Quote batches (`on_quotes`): O(syms in the batch) Python plus numpy work for every sym with
no resting order; per-row Python only for rows that cross a resting order.
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, NamedTuple

import numpy as np

from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus,
                           OrdType, ReplaceOrder, Side, TimeInForce)


class OrdRejReason(IntEnum):
    """FIX 4.4 tag 103 values this engine uses."""
    UNKNOWN_SYMBOL = 1
    EXCHANGE_CLOSED = 2
    DUPLICATE_ORDER = 6
    INCORRECT_QUANTITY = 13
    OTHER = 99


class CxlRejReason(IntEnum):
    """FIX 4.4 tag 102 values this engine uses."""
    TOO_LATE_TO_CANCEL = 0
    UNKNOWN_ORDER = 1
    EXCHANGE_OPTION = 2
    DUPLICATE_CLORDID = 6
    OTHER = 99


CANCEL, REPLACE = "1", "2"             # CxlRejResponseTo (434)


@dataclass(frozen=True, slots=True)
class FillModel:
    """How a venue turns the market's quotes into fills. No defaults here: they live in
    gateway.config.VenueSettings (VenueSettings.fill_model() builds one)."""
    offset_bps: float                  # added to the ask, subtracted from the bid, in bps of price
    offset_abs: float                  # the same, in price units (e.g. ticks x tick size)
    display_fraction: float            # the share of the market's size this venue shows, (0, 1]
    taker_fee_bps: float
    taker_fee_per_share: float
    maker_fee_bps: float               # negative: a rebate
    maker_fee_per_share: float
    latency_ns: int

    def __post_init__(self):
        if not 0 < self.display_fraction <= 1:
            raise ValueError(f"display_fraction {self.display_fraction} must be in (0, 1]")
        if self.latency_ns < 0:
            raise ValueError(f"latency_ns {self.latency_ns} must be >= 0")
        if self.offset_bps < 0 or self.offset_abs < 0:
            raise ValueError("price offsets make the venue worse than the market: use values >= 0")


class Routed(NamedTuple):
    session: str
    report: ExecReport | CancelReject
    reject_reason: int | None = None


class _Order:
    __slots__ = ("session", "cl_ord_id", "order_id", "sym", "sid", "side", "buy", "qty", "ord_type",
                 "market", "price", "tif", "account", "cum", "avg", "status", "prio", "seq")

    @property
    def leaves(self) -> int:
        return self.qty - self.cum if not self.status.terminal else 0

    def key(self) -> tuple:
        """Sort key in a book: market orders first, then better price, then earlier."""
        if self.market:
            return (0, 0.0, self.prio)
        return (1, -self.price if self.buy else self.price, self.prio)


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as the engine holds it (for status queries and tests)."""
    session: str
    cl_ord_id: str
    order_id: str
    sym: str
    side: Side
    qty: int
    ord_type: OrdType
    price: float | None
    tif: TimeInForce
    cum_qty: int
    leaves_qty: int
    avg_px: float
    status: OrdStatus


def _same(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x == y) | (np.isnan(x) & np.isnan(y))


class MatchingEngine:
    def __init__(self, model: FillModel, venue: str = "", id_prefix: str = "",
                 syms: Iterable[str] | None = None, halted: Iterable[str] = ()):
        self.model = model
        self.venue = venue
        self.prefix = id_prefix
        self.now = 0
        self._universe = frozenset(syms) if syms else None
        self._index: dict[str, int] = {}
        self._names: list[str] = []
        self._cap = 0
        self._grow(64)
        self._bids: dict[int, list[_Order]] = {}
        self._asks: dict[int, list[_Order]] = {}
        self._orders: dict[tuple[str, str], _Order] = {}   # every id a version ever had
        self._pending: list[tuple[int, int, str, object]] = []  # (due, seq, session, request)
        self._batch: dict | None = None                          # columns of the batch being applied
        self._halted_names: set[str] = set()
        self._seq = 0
        self._exec_n = 0
        self._order_n = 0
        self.counters = {"orders": 0, "rejects": 0, "fills": 0, "cancels": 0, "replaces": 0,
                         "cancel_rejects": 0, "quote_rows": 0, "crossing_rows": 0}
        for s in sorted(self._universe or ()):
            self._sid(s)
        for s in halted:
            self._set_halt(s, True)

    # -- sym state ------------------------------------------------------------------------------
    # per-sym state arrays, indexed by sym id: raw quote (for change detection), venue view,
    # displayed and still-available sizes, flags
    _STATE = [("_rbid", np.nan, np.float64), ("_rask", np.nan, np.float64), ("_vbid", np.nan, np.float64),
              ("_vask", np.nan, np.float64), ("_rbsz", 0, np.int64), ("_rasz", 0, np.int64),
              ("_bdisp", 0, np.int64), ("_adisp", 0, np.int64), ("_bavail", 0, np.int64),
              ("_aavail", 0, np.int64), ("_active", False, bool), ("_halted", False, bool),
              ("_quoted", False, bool)]   # _active: resting orders and not halted; _quoted: a row applied

    def _grow(self, cap: int) -> None:
        for name, fill, dtype in self._STATE:
            new = np.full(cap, fill, dtype)
            old = getattr(self, name, None)
            if old is not None:
                new[:len(old)] = old
            setattr(self, name, new)
        self._cap = cap

    def _sid(self, sym: str) -> int:
        sid = self._index.get(sym)
        if sid is not None:
            return sid
        if self._universe is not None and sym not in self._universe:
            return -1
        sid = len(self._names)
        if sid >= self._cap:
            self._grow(self._cap * 2)
        self._index[sym] = sid
        self._names.append(sym)
        self._halted[sid] = sym in self._halted_names
        return sid

    def _ids(self, sym) -> np.ndarray:
        """Engine sym ids (-1: outside the universe) for a column of syms: an array of str, a
        (codes, words) pair, or a pyarrow DictionaryArray. O(distinct syms) Python."""
        if isinstance(sym, tuple):
            codes, words = sym
            ids = np.fromiter((self._sid(str(w)) for w in words), np.int64, len(words))
            return ids[np.asarray(codes)]
        if hasattr(sym, "dictionary") and hasattr(sym, "indices"):
            words = sym.dictionary.to_pylist()
            ids = np.fromiter((self._sid(w) for w in words), np.int64, len(words))
            return ids[sym.indices.to_numpy(zero_copy_only=False)]
        arr = np.asarray(sym)
        if arr.ndim != 1:
            raise ValueError("sym must be a 1-d column")
        words, inv = np.unique(arr, return_inverse=True)
        ids = np.fromiter((self._sid(str(w)) for w in words), np.int64, len(words))
        return ids[inv.reshape(-1)]

    def _venue_prices(self, bid, ask):
        m = self.model
        with np.errstate(invalid="ignore"):
            vb = bid * (1 - m.offset_bps / 1e4) - m.offset_abs
            va = ask * (1 + m.offset_bps / 1e4) + m.offset_abs
            # rounded to 1e-8 so float noise (10.0 + 0.01 = 10.009999...) never decides a cross
            vb = np.where(np.isfinite(bid) & (bid > 0) & (vb > 0), np.round(vb, 8), np.nan)
            va = np.where(np.isfinite(ask) & (ask > 0), np.round(va, 8), np.nan)
        return vb, va

    def _display(self, size):
        return np.floor(np.maximum(size, 0) * self.model.display_fraction).astype(np.int64)

    def _apply(self, rows: np.ndarray) -> None:
        """Make the quote state what it is after `rows` (ascending row indices of the current
        batch, any syms): numpy only, grouped by sym."""
        if not len(rows):
            return
        c = self._batch
        r = c["rid"][rows]
        order = np.argsort(r, kind="stable")
        r, rows = r[order], rows[order]
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        g = r[starts]
        last = rows[np.r_[starts[1:], len(r)] - 1]
        rb, ra, rbs, ras = c["bid"][rows], c["ask"][rows], c["bsize"][rows], c["asize"][rows]

        def prev(x, state):
            p = np.empty_like(x)
            p[1:] = x[:-1]
            p[starts] = state[g]
            return p
        changed_b = ~_same(rb, prev(rb, self._rbid)) | (rbs != prev(rbs, self._rbsz))
        changed_a = ~_same(ra, prev(ra, self._rask)) | (ras != prev(ras, self._rasz))
        any_b = np.logical_or.reduceat(changed_b, starts)
        any_a = np.logical_or.reduceat(changed_a, starts)
        self._rbid[g], self._rask[g] = c["bid"][last], c["ask"][last]
        self._rbsz[g], self._rasz[g] = c["bsize"][last], c["asize"][last]
        self._vbid[g], self._vask[g] = c["vbid"][last], c["vask"][last]
        self._bdisp[g], self._adisp[g] = c["bdisp"][last], c["adisp"][last]
        self._quoted[g] = True
        self._bavail[g] = np.where(any_b, self._bdisp[g], self._bavail[g])
        self._aavail[g] = np.where(any_a, self._adisp[g], self._aavail[g])

    # -- public API -----------------------------------------------------------------------------
    def halt(self, sym: str, time: int) -> list[Routed]:
        """From `time` on, refuse new orders and replaces for `sym` and stop its fills (cancels
        still work). Requests due before `time` take effect first; their reports are returned."""
        out = self.advance(time)
        self._set_halt(sym, True)
        return out

    def resume(self, sym: str, time: int) -> list[Routed]:
        """Trade `sym` again from `time`; resting orders match from its next quote on."""
        out = self.advance(time)
        self._set_halt(sym, False)
        return out

    def _set_halt(self, sym: str, on: bool) -> None:
        (self._halted_names.add if on else self._halted_names.discard)(sym)
        sid = self._index.get(sym)
        if sid is not None:
            self._halted[sid] = on
            self._touch(sid)

    @property
    def halted(self) -> frozenset[str]:
        return frozenset(self._halted_names)

    def next_due(self) -> int | None:
        """When the earliest submitted request takes effect (None: nothing pending)."""
        return self._pending[0][0] if self._pending else None

    def submit(self, session: str, request: NewOrder | CancelOrder | ReplaceOrder, time: int) -> list[Routed]:
        """A client's request arrived at `time`; it takes effect at time + latency. Returns the
        reports of everything that took effect up to `time` (this request too, with no latency)."""
        if not isinstance(request, (NewOrder, CancelOrder, ReplaceOrder)):
            raise TypeError(f"submit takes NewOrder, CancelOrder or ReplaceOrder, not {type(request).__name__}")
        self._seq += 1
        heapq.heappush(self._pending, (int(time) + self.model.latency_ns, self._seq, session, request))
        return self.advance(time)

    def advance(self, time: int) -> list[Routed]:
        """Let every request due at or before `time` take effect."""
        out: list[Routed] = []
        self._run_due(int(time), out)
        self.now = max(self.now, int(time))
        return out

    def on_quote(self, time: int, sym: str, bid: float, ask: float, bsize: int, asize: int) -> list[Routed]:
        """One quote row (same rules as on_quotes, without the numpy setup)."""
        out: list[Routed] = []
        time = int(time)
        self._run_due(time - 1, out)       # as in on_quotes: a request due at `time` sees this row
        sid = self._sid(sym)
        self.counters["quote_rows"] += 1
        if sid >= 0:
            vb, va = self._venue_prices(np.array([bid], float), np.array([ask], float))
            bd, ad = self._display(np.array([bsize])), self._display(np.array([asize]))
            self._set_one(sid, float(bid), float(ask), int(bsize), int(asize),
                          float(vb[0]), float(va[0]), int(bd[0]), int(ad[0]))
            self.now = max(self.now, time)
            if self._active[sid]:
                self._match_resting(sid, out)
        self._run_due(time, out)
        self.now = max(self.now, time)
        return out

    def on_quotes(self, time, sym, bid, ask, bsize, asize) -> list[Routed]:
        """A batch of quote rows (the quote table's columns, in row order): `time` int ns (or
        datetime64), `sym` an array of str, a (codes, words) pair or a pyarrow
        DictionaryArray, `bid`/`ask` floats, `bsize`/`asize` sizes. Requests that fall due
        inside the batch take effect between the rows stamped before and after them."""
        t = np.asarray(time)
        if t.dtype.kind == "M":
            t = t.astype("datetime64[ns]").view(np.int64)
        t = t.astype(np.int64, copy=False)
        n = len(t)
        cols = {"bid": np.asarray(bid, np.float64), "ask": np.asarray(ask, np.float64),
                "bsize": self._sizes(bsize), "asize": self._sizes(asize)}
        if any(len(v) != n for v in cols.values()):
            raise ValueError("quote columns have different lengths")
        out: list[Routed] = []
        if n == 0:
            return out
        rid = self._ids(sym)
        if len(rid) != n:
            raise ValueError("quote columns have different lengths")
        cols["rid"], cols["time"], cols["runmax"] = rid, t, np.maximum.accumulate(t)
        cols["vbid"], cols["vask"] = self._venue_prices(cols["bid"], cols["ask"])
        cols["bdisp"], cols["adisp"] = self._display(cols["bsize"]), self._display(cols["asize"])
        self._batch = cols
        self.counters["quote_rows"] += n
        try:
            pos = 0
            while pos < n:
                k = n
                if self._pending:
                    later = np.flatnonzero(t[pos:] > self._pending[0][0])
                    if len(later):
                        k = pos + int(later[0])
                self._quote_rows(pos, k, out)
                if k < n:
                    self._run_due(int(t[k]) - 1, out)
                pos = k
            self._run_due(int(t.max()), out)
            self.now = max(self.now, int(t.max()))
        finally:
            self._batch = None
        return out

    def on_quote_batch(self, batch) -> list[Routed]:
        """A pyarrow RecordBatch of the quote table (time, sym, bid, ask, bsize, asize)."""
        def col(name):
            return batch.column(batch.schema.get_field_index(name))
        tcol = col("time")
        if hasattr(tcol.type, "unit"):
            import pyarrow as pa
            tcol = tcol.cast(pa.timestamp("ns")).cast(pa.int64())
        return self.on_quotes(tcol.to_numpy(zero_copy_only=False), col("sym"),
                              col("bid").to_numpy(zero_copy_only=False), col("ask").to_numpy(zero_copy_only=False),
                              col("bsize").to_numpy(zero_copy_only=False), col("asize").to_numpy(zero_copy_only=False))

    def cancel_all(self, session: str, time: int) -> list[Routed]:
        """Cancel-on-disconnect: cancel `session`'s working orders now; reject its new orders
        that are not live yet; answer its pending cancels/replaces with CancelReject 0."""
        time = int(time)
        out: list[Routed] = []
        self.now = max(self.now, time)
        working = sorted({id(o): o for o in self._orders.values()
                          if o.session == session and not o.status.terminal}.values(), key=lambda o: o.seq)
        for o in working:
            self._cancel_order(o, o.cl_ord_id, "", "canceled: session disconnected", out)
        mine = [p for p in self._pending if p[2] == session]
        if mine:
            self._pending = [p for p in self._pending if p[2] != session]
            heapq.heapify(self._pending)
            for _, _, _, req in sorted(mine):
                if isinstance(req, NewOrder):
                    self._reject_new(session, req, self._new_order_id(), OrdRejReason.OTHER,
                                     "rejected: session disconnected before the order took effect", out)
                else:
                    o = self._orders.get((session, req.orig_cl_ord_id))
                    self._cancel_reject(session, req, o, CxlRejReason.TOO_LATE_TO_CANCEL,
                                        "too late: the order was canceled when the session disconnected", out)
        return out

    def order(self, session: str, cl_ord_id: str) -> OrderView | None:
        o = self._orders.get((session, cl_ord_id))
        return None if o is None else self._view(o)

    def working(self, session: str | None = None) -> list[OrderView]:
        seen = {id(o): o for o in self._orders.values()
                if not o.status.terminal and (session is None or o.session == session)}
        return [self._view(o) for o in sorted(seen.values(), key=lambda o: o.seq)]

    def quote(self, sym: str) -> dict | None:
        """The venue's view of `sym`: transformed prices, displayed and still-available sizes."""
        sid = self._index.get(sym)
        if sid is None:
            return None
        return {"bid": float(self._vbid[sid]), "ask": float(self._vask[sid]),
                "bid_size": int(self._bdisp[sid]), "ask_size": int(self._adisp[sid]),
                "bid_avail": int(self._bavail[sid]), "ask_avail": int(self._aavail[sid]),
                "halted": bool(self._halted[sid])}

    # -- quotes -----------------------------------------------------------------------------------
    @staticmethod
    def _sizes(x) -> np.ndarray:
        a = np.asarray(x)
        if a.dtype.kind == "f":
            a = np.where(np.isfinite(a), a, 0)
        return a.astype(np.int64, copy=False)

    def _quote_rows(self, a: int, b: int, out: list[Routed]) -> None:
        """Apply rows [a, b) of the current batch. Syms with no resting order: numpy only.
        Syms with resting orders: numpy for the rows that cannot cross their book, one Python
        step per row that can, all such rows in row order (so reports come in row order, as
        row-by-row calls give them). Fills only make a book less aggressive, so a row that
        cannot cross the book as it was at the start cannot cross it later either."""
        if a >= b:
            return
        c = self._batch
        rid = c["rid"][a:b]
        valid = rid >= 0
        hot = np.zeros(b - a, bool)
        hot[valid] = self._active[rid[valid]]
        if not hot.any():
            self._apply(np.flatnonzero(valid) + a)
            self.now = max(self.now, int(c["runmax"][b - 1]))
            return
        self._apply(np.flatnonzero(valid & ~hot) + a)
        rows_of, done, crossings = {}, {}, []
        for sid in np.unique(rid[hot]).tolist():
            rows = np.flatnonzero(rid == sid) + a
            bids, asks = self._bids.get(sid), self._asks.get(sid)
            best_buy = -math.inf if not bids else (math.inf if bids[0].market else bids[0].price)
            best_sell = math.inf if not asks else (-math.inf if asks[0].market else asks[0].price)
            with np.errstate(invalid="ignore"):
                cross = (((c["vask"][rows] <= best_buy) & (c["adisp"][rows] > 0))
                         | ((c["vbid"][rows] >= best_sell) & (c["bdisp"][rows] > 0)))
            rows_of[sid], done[sid] = rows, 0
            crossings += [(int(rows[p]), sid, p) for p in np.flatnonzero(cross).tolist()]
        for i, sid, p in sorted(crossings):
            if not self._active[sid]:
                continue
            self._apply(rows_of[sid][done[sid]:p])
            self._set_one(sid, float(c["bid"][i]), float(c["ask"][i]), int(c["bsize"][i]), int(c["asize"][i]),
                          float(c["vbid"][i]), float(c["vask"][i]), int(c["bdisp"][i]), int(c["adisp"][i]))
            self.now = max(self.now, int(c["runmax"][i]))
            self.counters["crossing_rows"] += 1
            self._match_resting(sid, out)
            done[sid] = p + 1
        for sid, rows in rows_of.items():
            self._apply(rows[done[sid]:])
        self.now = max(self.now, int(c["runmax"][b - 1]))

    def _set_one(self, sid, rb, ra, rbs, ras, vb, va, bd, ad) -> None:
        if not (rb == self._rbid[sid] or (rb != rb and self._rbid[sid] != self._rbid[sid])) or rbs != self._rbsz[sid]:
            self._bavail[sid] = bd
        if not (ra == self._rask[sid] or (ra != ra and self._rask[sid] != self._rask[sid])) or ras != self._rasz[sid]:
            self._aavail[sid] = ad
        self._quoted[sid] = True
        self._rbid[sid], self._rask[sid], self._rbsz[sid], self._rasz[sid] = rb, ra, rbs, ras
        self._vbid[sid], self._vask[sid], self._bdisp[sid], self._adisp[sid] = vb, va, bd, ad

    def _match_resting(self, sid: int, out: list[Routed]) -> None:
        if self._halted[sid]:
            return
        for book, buy in ((self._bids.get(sid), True), (self._asks.get(sid), False)):
            if not book:
                continue
            px = float(self._vask[sid] if buy else self._vbid[sid])
            avail = int(self._aavail[sid] if buy else self._bavail[sid])
            if px != px:
                continue
            while book and avail > 0:
                o = book[0]
                if not o.market and (o.price < px if buy else o.price > px):
                    break
                q = min(o.qty - o.cum, avail)
                avail -= q
                if o.market:
                    self._fill(o, q, px, False, out)
                else:
                    self._fill(o, q, o.price, True, out)
                if o.cum == o.qty:
                    book.pop(0)
            if buy:
                self._aavail[sid] = avail
            else:
                self._bavail[sid] = avail
        self._touch(sid)

    def _touch(self, sid: int) -> None:
        self._active[sid] = bool(self._bids.get(sid) or self._asks.get(sid)) and not self._halted[sid]

    # -- requests ----------------------------------------------------------------------------------
    def _run_due(self, until: int, out: list[Routed]) -> None:
        while self._pending and self._pending[0][0] <= until:
            due, _, session, req = heapq.heappop(self._pending)
            self.now = max(self.now, due)
            if isinstance(req, NewOrder):
                self._new(session, req, out)
            elif isinstance(req, CancelOrder):
                self._cancel(session, req, out)
            else:
                self._replace(session, req, out)

    def _next_exec_id(self) -> str:
        self._exec_n += 1
        return f"{self.prefix}E{self._exec_n}"

    def _new_order_id(self) -> str:
        self._order_n += 1
        return f"{self.prefix}O{self._order_n}"

    def _report(self, o: _Order, exec_type: ExecType, out: list[Routed], *, cl_ord_id: str | None = None,
                orig: str = "", last_qty: int = 0, last_px: float = 0.0, fee: float = 0.0,
                text: str = "") -> None:
        out.append(Routed(o.session, ExecReport(
            cl_ord_id=o.cl_ord_id if cl_ord_id is None else cl_ord_id, order_id=o.order_id,
            exec_id=self._next_exec_id(), exec_type=exec_type, ord_status=o.status, sym=o.sym,
            side=o.side, order_qty=o.qty, last_qty=last_qty, last_px=last_px, leaves_qty=o.leaves,
            cum_qty=o.cum, avg_px=o.avg, orig_cl_ord_id=orig,
            price=None if o.market else o.price, text=text, venue=self.venue, fee=fee, time=self.now)))

    def _reject_new(self, session: str, req: NewOrder, order_id: str, reason: OrdRejReason, text: str,
                    out: list[Routed]) -> None:
        self.counters["rejects"] += 1
        out.append(Routed(session, ExecReport(
            cl_ord_id=req.cl_ord_id, order_id=order_id, exec_id=self._next_exec_id(),
            exec_type=ExecType.REJECTED, ord_status=OrdStatus.REJECTED, sym=req.sym, side=req.side,
            order_qty=req.qty, price=req.price, text=text, venue=self.venue, time=self.now), int(reason)))

    def _cancel_reject(self, session: str, req, o: _Order | None, reason: CxlRejReason, text: str,
                       out: list[Routed]) -> None:
        self.counters["cancel_rejects"] += 1
        out.append(Routed(session, CancelReject(
            cl_ord_id=req.cl_ord_id, orig_cl_ord_id=req.orig_cl_ord_id,
            order_id=o.order_id if o is not None else "",
            ord_status=o.status if o is not None else OrdStatus.REJECTED,
            response_to=CANCEL if isinstance(req, CancelOrder) else REPLACE, reason=int(reason),
            text=text, venue=self.venue, time=self.now)))

    def _no_quote(self, sid: int, buy: bool) -> bool:
        px = self._vask[sid] if buy else self._vbid[sid]
        return not px == px

    def _new(self, session: str, req: NewOrder, out: list[Routed]) -> None:
        order_id = self._new_order_id()
        if (session, req.cl_ord_id) in self._orders:
            return self._reject_new(session, req, order_id, OrdRejReason.DUPLICATE_ORDER,
                                    f"ClOrdID {req.cl_ord_id} was already used by this session; use a new one", out)
        side, ord_type, tif = Side(req.side), OrdType(req.ord_type), TimeInForce(req.tif)
        sid = self._index.get(req.sym, -1)
        if self._universe is None and sid >= 0 and not self._quoted[sid]:
            sid = -1                       # registered by a batch, but its first row is still ahead
        reason = text = None
        if sid < 0:
            reason, text = OrdRejReason.UNKNOWN_SYMBOL, f"unknown sym {req.sym!r}: this venue has no quote for it"
        elif req.sym in self._halted_names:
            reason, text = OrdRejReason.EXCHANGE_CLOSED, f"{req.sym} is halted at this venue; orders are refused until it resumes"
        elif req.qty <= 0:
            reason, text = OrdRejReason.INCORRECT_QUANTITY, f"qty {req.qty} must be a whole number > 0"
        elif ord_type is OrdType.LIMIT and not (req.price is not None and math.isfinite(req.price) and req.price > 0):
            reason, text = OrdRejReason.OTHER, f"a limit order needs a price > 0 (got {req.price})"
        elif ord_type is OrdType.MARKET and self._no_quote(sid, side is Side.BUY):
            reason, text = OrdRejReason.OTHER, (f"no {'ask' if side is Side.BUY else 'bid'} quote for {req.sym}: "
                                                "a market order has nothing to fill against; send a limit order")
        if reason is not None:
            self._orders[(session, req.cl_ord_id)] = self._record(session, req, order_id, sid, OrdStatus.REJECTED)
            return self._reject_new(session, req, order_id, reason, text, out)
        o = self._record(session, req, order_id, sid, OrdStatus.NEW)
        self._orders[(session, req.cl_ord_id)] = o
        self.counters["orders"] += 1
        self._report(o, ExecType.NEW, out)
        self._enter(o, out)

    def _record(self, session, req: NewOrder, order_id, sid, status) -> _Order:
        o = _Order()
        o.session, o.cl_ord_id, o.order_id, o.sym, o.sid = session, req.cl_ord_id, order_id, req.sym, sid
        o.side = Side(req.side)
        o.buy = o.side is Side.BUY
        o.qty, o.ord_type, o.tif, o.account = int(req.qty), OrdType(req.ord_type), TimeInForce(req.tif), req.account
        o.market = o.ord_type is OrdType.MARKET
        o.price = None if o.market or req.price is None else float(req.price)
        o.cum, o.avg, o.status = 0, 0.0, status
        self._seq += 1
        o.prio = o.seq = self._seq
        return o

    def _enter(self, o: _Order, out: list[Routed]) -> None:
        """An order (new or just replaced) takes what it can now, then rests or is canceled."""
        sid = o.sid
        if not self._halted[sid]:
            px = float(self._vask[sid] if o.buy else self._vbid[sid])
            avail = int(self._aavail[sid] if o.buy else self._bavail[sid])
            marketable = px == px and (o.market or (px <= o.price if o.buy else px >= o.price))
            q = min(o.qty - o.cum, avail) if marketable else 0
            if o.tif is TimeInForce.FOK and q < o.qty - o.cum:
                q = 0
            if q > 0:
                if o.buy:
                    self._aavail[sid] = avail - q
                else:
                    self._bavail[sid] = avail - q
                self._fill(o, q, px, False, out)
        if o.status.terminal:
            return
        if o.tif in (TimeInForce.IOC, TimeInForce.FOK):
            o.status = OrdStatus.CANCELED
            self.counters["cancels"] += 1
            what = "IOC: unfilled part canceled" if o.tif is TimeInForce.IOC else "FOK: could not fill all of it now; canceled"
            self._report(o, ExecType.CANCELED, out, text=what)
            return
        book = (self._bids if o.buy else self._asks).setdefault(sid, [])
        bisect.insort(book, o, key=_Order.key)
        self._touch(sid)

    def _fill(self, o: _Order, qty: int, px: float, maker: bool, out: list[Routed]) -> None:
        m = self.model
        bps, per_share = (m.maker_fee_bps, m.maker_fee_per_share) if maker else (m.taker_fee_bps, m.taker_fee_per_share)
        fee = qty * per_share + qty * px * bps / 1e4
        o.cum += qty
        # the running mean of fill prices: exact (== px) while every fill has the same price
        o.avg = px if o.cum == qty else o.avg + (px - o.avg) * (qty / o.cum)
        o.status = OrdStatus.FILLED if o.cum == o.qty else OrdStatus.PARTIALLY_FILLED
        self.counters["fills"] += 1
        self._report(o, ExecType.TRADE, out, last_qty=qty, last_px=px, fee=fee)

    def _unbook(self, o: _Order) -> None:
        book = (self._bids if o.buy else self._asks).get(o.sid)
        if book and o in book:
            book.remove(o)
            self._touch(o.sid)

    def _target(self, session: str, req, out: list[Routed]) -> _Order | None:
        """The order a cancel/replace names, or None after answering with a CancelReject."""
        o = self._orders.get((session, req.orig_cl_ord_id))
        if o is None:
            self._cancel_reject(session, req, None, CxlRejReason.UNKNOWN_ORDER,
                                f"unknown order {req.orig_cl_ord_id}", out)
            return None
        if (session, req.cl_ord_id) in self._orders:
            self._cancel_reject(session, req, o, CxlRejReason.DUPLICATE_CLORDID,
                                f"ClOrdID {req.cl_ord_id} was already used by this session; use a new one", out)
            return None
        if o.status.terminal:
            self._cancel_reject(session, req, o, CxlRejReason.TOO_LATE_TO_CANCEL,
                                f"too late: order {req.orig_cl_ord_id} is already {o.status.name.lower()}", out)
            return None
        if o.cl_ord_id != req.orig_cl_ord_id:
            self._cancel_reject(session, req, o, CxlRejReason.UNKNOWN_ORDER,
                                f"{req.orig_cl_ord_id} is no longer this order's ClOrdID; name the current one, "
                                f"{o.cl_ord_id}, as OrigClOrdID", out)
            return None
        if req.sym != o.sym or Side(req.side) is not o.side:
            self._cancel_reject(session, req, o, CxlRejReason.OTHER,
                                f"sym/side ({req.sym}, {Side(req.side).name}) do not match order "
                                f"{o.cl_ord_id} ({o.sym}, {o.side.name})", out)
            return None
        return o

    def _cancel_order(self, o: _Order, cl_ord_id: str, orig: str, text: str, out: list[Routed]) -> None:
        self._unbook(o)
        o.status = OrdStatus.CANCELED
        if cl_ord_id != o.cl_ord_id:
            o.cl_ord_id = cl_ord_id
            self._orders[(o.session, cl_ord_id)] = o
        self.counters["cancels"] += 1
        self._report(o, ExecType.CANCELED, out, orig=orig, text=text)

    def _cancel(self, session: str, req: CancelOrder, out: list[Routed]) -> None:
        o = self._target(session, req, out)
        if o is not None:
            self._cancel_order(o, req.cl_ord_id, req.orig_cl_ord_id, "", out)

    def _replace(self, session: str, req: ReplaceOrder, out: list[Routed]) -> None:
        o = self._target(session, req, out)
        if o is None:
            return
        problem = None
        ord_type, tif = OrdType(req.ord_type), TimeInForce(req.tif)
        if o.sym in self._halted_names:
            reason = CxlRejReason.EXCHANGE_OPTION
            problem = f"{o.sym} is halted at this venue; only cancels are accepted"
        else:
            reason = CxlRejReason.OTHER
            if req.qty <= 0:
                problem = f"new qty {req.qty} must be > 0; to remove the order, cancel it"
            elif req.qty <= o.cum:
                problem = f"new qty {req.qty} must exceed the {o.cum} already filled; cancel instead"
            elif ord_type is not o.ord_type:
                problem = "the order type cannot change; cancel and send a new order"
            elif tif not in (TimeInForce.DAY, TimeInForce.GTC):
                problem = f"a working order cannot become {tif.name}; cancel and send a new order"
            elif not o.market and not (req.price is not None and math.isfinite(req.price) and req.price > 0):
                problem = f"a limit order needs a price > 0 (got {req.price})"
        if problem is not None:
            return self._cancel_reject(session, req, o, reason, problem, out)
        new_price = None if o.market else float(req.price)
        keeps_priority = new_price == o.price and req.qty <= o.qty
        self._unbook(o)
        orig = o.cl_ord_id
        o.cl_ord_id = req.cl_ord_id
        self._orders[(session, req.cl_ord_id)] = o
        o.qty, o.price, o.tif = int(req.qty), new_price, tif
        if not keeps_priority:
            self._seq += 1
            o.prio = self._seq
        self.counters["replaces"] += 1
        self._report(o, ExecType.REPLACED, out, orig=orig)
        self._enter(o, out)

    def _view(self, o: _Order) -> OrderView:
        return OrderView(o.session, o.cl_ord_id, o.order_id, o.sym, o.side, o.qty, o.ord_type, o.price,
                         o.tif, o.cum, o.leaves, o.avg, o.status)
