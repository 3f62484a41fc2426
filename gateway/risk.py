"""Pre-trade risk (SEC 15c3-5 / FIA recommended controls): every order is checked here before
it reaches the wire, and every denial carries a stable reason code (`Deny`) and a clear text.

Contract:
- `Risk(settings)` is one risk scope (the firm, or one account: the gateway keeps one per scope).
  It holds the live quote per sym, positions (qty, average cost, realized PnL), open order
  exposure per sym and side, the number of working orders, and the rate windows.
- `check(order, now)` / `check_replace(rep, order, now)` / `check_cancel(cancel, now)` return a
  `Decision` (truthy when admitted). An admitted order or replace is counted in the rate,
  duplicate and order-to-trade windows at once, because it is about to be sent; its open
  quantity arrives through `on_change` (from `gateway.orders.Orders`) or `on_open`.
- Cancels are ALWAYS admitted, in every trading state and over every rate limit: a kill switch
  that cannot cancel is worse than a burst of messages. They do count in the message window.
- Nothing here reads a clock: time is int ns, always passed in, so the backtester runs the same
  code. Nothing raises on market data: a bad quote is counted and skipped.

The checks, in order (the first that fails is reported):
  HALTED state; BAD_ORDER (qty <= 0, limit without a price); RESTRICTED sym; MAX_ORDER_QTY;
  NO_QUOTE (none yet, when the collar or the quote age check is on, or a market order) and
  STALE_QUOTE (older than max_quote_age_ms); PRICE_COLLAR (limit price further than collar_bps
  from the mid); MAX_ORDER_NOTIONAL (qty x limit price, or x the far touch for a market order);
  DUPLICATE_ORDER (same sym, side, qty and price admitted within duplicate_window_ms);
  POSITION_LIMIT (position + open orders on the same side + this order, worst case);
  REDUCING state (see below); DAILY_LOSS (realized + unrealized below -max_daily_loss: only
  orders that reduce a position pass); GROSS_EXPOSURE and NET_EXPOSURE (worst case over open
  orders, marked at the mid: an order is denied when it raises a measure that ends above its
  limit, so an order that lowers it always passes); MAX_OPEN_ORDERS; ORDER_TO_TRADE (orders
  sent / fills, once order_to_trade_min_orders were sent); ORDER_RATE (new orders) and
  MESSAGE_RATE (new + replace + cancel), sliding windows of rate_window_ms (a message exactly
  that old has left the window): denied, not queued.

Trading states: ACTIVE; REDUCING admits only orders that reduce |position| and never past flat,
counting the orders already working on that side (two sells of 60 against a long 100: the
second is denied); HALTED admits only cancels.

Unrealized PnL marks longs at the bid and shorts at the ask; exposure is marked at the mid
(before a sym's first quote: its last fill price). Positions are per sym within this scope;
fees reduce realized PnL.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from enum import Enum
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from gateway.model import CancelOrder, NewOrder, OrdType, ReplaceOrder, Side
from schemas.settings import Settings

if TYPE_CHECKING:
    from gateway.orders import Change, Order

INF = math.inf
BUY, SELL, MARKET = Side.BUY, Side.SELL, OrdType.MARKET


class SymLimits(Settings):
    """Per-sym overrides of the per-order limits; a field left unset takes the global value."""
    max_order_qty: int | None = Field(None, gt=0)
    max_order_notional: float | None = Field(None, gt=0)
    collar_bps: float | None = Field(None, gt=0)
    max_quote_age_ms: float | None = Field(None, gt=0)
    max_position: int | None = Field(None, gt=0)


class RiskSettings(Settings):
    """Pre-trade limits. Any limit set to None (omitted from TOML: write it out to change it)
    is off. `syms` overrides the per-order limits for named syms, e.g.
        [gateway.risk.syms.AAPL]
        max_order_qty = 500
    """
    max_order_qty: int | None = Field(10_000, gt=0)
    max_order_notional: float | None = Field(1_000_000.0, gt=0)
    collar_bps: float | None = Field(500.0, gt=0)           # 5% around the mid
    max_quote_age_ms: float | None = Field(5_000.0, gt=0)
    max_position: int | None = Field(100_000, gt=0)          # shares, worst case with open orders
    max_gross_exposure: float | None = Field(20_000_000.0, gt=0)
    max_net_exposure: float | None = Field(10_000_000.0, gt=0)
    max_open_orders: int | None = Field(1_000, gt=0)
    max_orders: int | None = Field(200, gt=0)                # new orders per rate window
    max_messages: int | None = Field(500, gt=0)              # new + replace + cancel per window
    rate_window_ms: float = Field(1_000.0, gt=0)
    max_daily_loss: float | None = Field(250_000.0, gt=0)
    duplicate_window_ms: float | None = Field(1_000.0, gt=0)
    max_order_to_trade: float | None = Field(100.0, gt=0)
    order_to_trade_min_orders: int = Field(500, ge=1)
    restricted: frozenset[str] = frozenset()
    syms: dict[str, SymLimits] = {}


class TradingState(str, Enum):
    ACTIVE = "active"
    REDUCING = "reducing"      # only orders that reduce |position|, never past flat
    HALTED = "halted"          # only cancels


class Deny(str, Enum):
    """Why an order was denied; the values are stable (they are published)."""
    HALTED = "halted"
    REDUCING = "reducing"
    BAD_ORDER = "bad_order"
    RESTRICTED = "restricted"
    MAX_ORDER_QTY = "max_order_qty"
    NO_QUOTE = "no_quote"
    STALE_QUOTE = "stale_quote"
    PRICE_COLLAR = "price_collar"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    DUPLICATE_ORDER = "duplicate_order"
    POSITION_LIMIT = "position_limit"
    DAILY_LOSS = "daily_loss"
    GROSS_EXPOSURE = "gross_exposure"
    NET_EXPOSURE = "net_exposure"
    MAX_OPEN_ORDERS = "max_open_orders"
    ORDER_TO_TRADE = "order_to_trade"
    ORDER_RATE = "order_rate"
    MESSAGE_RATE = "message_rate"


class Decision(NamedTuple):
    """ok, or denied with a code and a text. Truthy when admitted."""
    code: Deny | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.code is None

    def __bool__(self) -> bool:
        return self.code is None


ACCEPT = Decision()


class Position(NamedTuple):
    sym: str
    qty: int
    avg_cost: float
    realized: float
    unrealized: float


class _Sym:
    """One sym's limits (resolved once) and state."""
    __slots__ = ("sym", "max_qty", "max_notional", "collar", "max_age", "max_pos", "restricted",
                 "need_quote", "bid", "ask", "mid", "qt", "pos", "avg", "realized", "last_px",
                 "open_buy", "open_sell", "g", "nl", "ns", "u")

    def __init__(self, sym: str, cfg: RiskSettings):
        o = cfg.syms.get(sym) or SymLimits()

        def pick(name):
            v = getattr(o, name)
            v = getattr(cfg, name) if v is None else v
            return INF if v is None else v
        self.sym = sym
        self.max_qty, self.max_notional = pick("max_order_qty"), pick("max_order_notional")
        self.collar = pick("collar_bps") / 1e4
        self.max_age = pick("max_quote_age_ms") * 1e6
        self.max_pos = pick("max_position")
        self.restricted = sym in cfg.restricted
        self.need_quote = self.collar < INF or self.max_age < INF
        self.bid = self.ask = self.mid = 0.0
        self.qt = -1                                  # no quote yet
        self.pos, self.avg, self.realized, self.last_px = 0, 0.0, 0.0, 0.0
        self.open_buy = self.open_sell = 0
        self.g = self.nl = self.ns = self.u = 0.0     # this sym's share of the book totals


class Risk:
    """Pre-trade risk for one scope. See the module docstring for the checks and policies."""

    def __init__(self, settings: RiskSettings | None = None):
        cfg = self.settings = settings or RiskSettings()
        self._syms: dict[str, _Sym] = {}
        self._state, self._reason = TradingState.ACTIVE, ""
        self._max_gross = cfg.max_gross_exposure or INF
        self._max_net = cfg.max_net_exposure or INF
        self._max_open = cfg.max_open_orders or INF
        self._max_loss = cfg.max_daily_loss or INF
        self._max_otr = cfg.max_order_to_trade or INF
        self._otr_min = cfg.order_to_trade_min_orders
        self._rate_ns = int(cfg.rate_window_ms * 1e6)
        self._max_orders = cfg.max_orders or INF
        self._max_msgs = cfg.max_messages or INF
        self._order_times: deque[int] | None = deque() if cfg.max_orders else None
        self._msg_times: deque[int] | None = deque() if cfg.max_messages else None
        self._dup_ns = int(cfg.duplicate_window_ms * 1e6) if cfg.duplicate_window_ms else 0
        self._recent: dict[tuple, tuple[int, str | None]] = {}
        self._recent_cap = 10_000
        self._gross = self._nl = self._ns = self._unrealized = self._realized = 0.0
        self._open_orders = 0
        self._orders_sent = self._fills = 0
        self.denials: Counter[Deny] = Counter()
        self.counts: Counter[str] = Counter()

    # ---- state ---------------------------------------------------------------------------
    @property
    def state(self) -> TradingState:
        return self._state

    @property
    def state_reason(self) -> str:
        return self._reason

    def set_state(self, state: TradingState, reason: str = "") -> None:
        self._state, self._reason = TradingState(state), reason

    # ---- checks --------------------------------------------------------------------------
    def check(self, order: NewOrder, now: int, parent: NewOrder | None = None) -> Decision:
        """Admit or deny a new order; an admitted one counts in the rate windows at once.

        `parent`: the order is one child of a routed parent (gateway.sor). The per-order limits
        (size, notional) then apply to the parent's quantity, so a parent over a limit is
        denied however it is split, and the duplicate check compares parents: children of one
        parent never count as duplicates of each other. Everything about the book (position,
        exposure, open orders, rates) is checked per child, as each goes on the wire."""
        state = self._state
        if state is TradingState.HALTED:
            return self._deny(Deny.HALTED, f"trading is halted ({self._reason or 'no reason given'}): "
                                           f"only cancels pass")
        sym, side, qty, px = order.sym, order.side, order.qty, order.price
        s = self._syms.get(sym) or self._add(sym)
        market = order.ord_type is MARKET
        whole = qty
        if parent is not None:
            if not ((type(qty) is int or isinstance(qty, np.integer)) and qty > 0):
                return self._deny(Deny.BAD_ORDER, f"qty must be a whole number > 0 (qty {qty!r})")
            whole = parent.qty
        if (d := self._order_checks(s, side, whole, px, market, now)) is not None:
            return d
        if market:
            px = s.ask if side is BUY else s.bid
        dup_key = None
        pid = parent.cl_ord_id if parent is not None else None
        if self._dup_ns:
            dup_key = (sym, side, whole, order.price)
            seen = self._recent.get(dup_key)
            if seen is not None and now - seen[0] < self._dup_ns and (pid is None or seen[1] != pid):
                return self._deny(Deny.DUPLICATE_ORDER, f"the same order ({side.name} {whole} {sym} @ "
                                  f"{order.price}) was sent {(now - seen[0]) / 1e6:.0f} ms ago; duplicate "
                                  f"window {self._dup_ns / 1e6:.0f} ms")
        if (d := self._book_checks(s, side, qty, px, state)) is not None:
            return d
        if self._open_orders >= self._max_open:
            return self._deny(Deny.MAX_OPEN_ORDERS, f"{self._open_orders} orders already working, "
                              f"max_open_orders {self._max_open}")
        n = self._orders_sent + 1
        if n >= self._otr_min and n > self._max_otr * max(self._fills, 1):
            return self._deny(Deny.ORDER_TO_TRADE, f"{n} orders for {self._fills} fills exceeds "
                              f"max_order_to_trade {self._max_otr:g}")
        w, m = self._order_times, self._msg_times
        cutoff = now - self._rate_ns
        if w is not None:
            while w and w[0] <= cutoff:
                w.popleft()
            if len(w) >= self._max_orders:
                return self._deny(Deny.ORDER_RATE, f"{len(w)} orders in the last "
                                  f"{self._rate_ns / 1e6:g} ms, max_orders {self._max_orders}")
        if m is not None:
            while m and m[0] <= cutoff:
                m.popleft()
            if len(m) >= self._max_msgs:
                return self._deny(Deny.MESSAGE_RATE, f"{len(m)} messages in the last "
                                  f"{self._rate_ns / 1e6:g} ms, max_messages {self._max_msgs}")
            m.append(now)
        if w is not None:
            w.append(now)
        self._orders_sent = n
        if dup_key is not None:
            self._remember(dup_key, now, pid)
        return ACCEPT

    def check_replace(self, rep: ReplaceOrder, order: Order, now: int) -> Decision:
        """Admit or deny a replace of `order` (its live version in gateway.orders) to rep.qty /
        rep.price. Only a raise in open quantity meets the position, exposure and loss checks;
        in REDUCING a replace passes when it keeps its side's orders within flat, or only
        lowers the quantity at the same price."""
        state = self._state
        if state is TradingState.HALTED:
            return self._deny(Deny.HALTED, f"trading is halted ({self._reason or 'no reason given'}): "
                                           f"only cancels pass")
        side, qty, px = order.side, rep.qty, rep.price
        s = self._syms.get(order.sym) or self._add(order.sym)
        market = rep.ord_type is MARKET
        add = qty - order.order_qty
        if add > 0 and s.restricted:
            return self._deny(Deny.RESTRICTED, f"{s.sym} is restricted: no new exposure")
        if (d := self._order_checks(s, side, qty, px, market, now, restricted=False)) is not None:
            return d
        if market:
            px = s.ask if side is BUY else s.bid
        if add > 0:
            if (d := self._book_checks(s, side, add, px, state)) is not None:
                return d
        elif state is TradingState.REDUCING and not self._reduces(s, side, 0) and not (
                add < 0 and rep.price == order.price):
            return self._deny(Deny.REDUCING, f"trading is reducing ({self._reason}): a replace of a "
                              f"{side.name} that does not reduce the {s.sym} position {s.pos} may "
                              f"only lower its quantity")
        m = self._msg_times
        if m is not None:
            cutoff = now - self._rate_ns
            while m and m[0] <= cutoff:
                m.popleft()
            if len(m) >= self._max_msgs:
                return self._deny(Deny.MESSAGE_RATE, f"{len(m)} messages in the last "
                                  f"{self._rate_ns / 1e6:g} ms, max_messages {self._max_msgs}")
            m.append(now)
        return ACCEPT

    def check_cancel(self, cancel: CancelOrder, now: int) -> Decision:
        """Always admitted (a kill switch must be able to cancel); counts as a message."""
        if self._msg_times is not None:
            self._msg_times.append(now)
        return ACCEPT

    # ---- updates -------------------------------------------------------------------------
    def on_quote(self, sym: str, bid: float, ask: float, time: int) -> bool:
        """The sym's live quote. A quote without two positive finite sides, or older than the
        one held, is counted and skipped (returns False)."""
        if not (0 < bid < INF and 0 < ask < INF):
            self.counts["bad_quote"] += 1
            return False
        s = self._syms.get(sym) or self._add(sym)
        if time < s.qt:
            self.counts["old_quote"] += 1
            return False
        s.bid, s.ask, s.mid, s.qt = bid, ask, (bid + ask) * 0.5, time
        if s.pos or s.open_buy or s.open_sell or s.g:     # else its share of the book stays 0
            self._mark(s)
        return True

    def on_quotes(self, syms, bids, asks, times) -> int:
        """A batch of quotes (numpy arrays, or pyarrow arrays: a dictionary-encoded sym column
        is used as is). Only each sym's latest valid row is applied, so the Python work is per
        sym, not per row. Returns the number of syms updated."""
        codes, names = _sym_codes(syms)
        bids, asks = _floats(bids), _floats(asks)
        times = _times(times)
        good = (codes >= 0) & np.isfinite(bids) & np.isfinite(asks) & (bids > 0) & (asks > 0)
        if not good.all():
            self.counts["bad_quote"] += int((~good).sum())
            codes, bids, asks, times = codes[good], bids[good], asks[good], times[good]
        if not len(codes):
            return 0
        order = np.lexsort((times, codes))           # by sym, then time: a sym's last is its newest
        last = order[np.r_[codes[order][1:] != codes[order][:-1], True]]
        n = 0
        get, mark = self._syms.get, self._mark
        for c, b, a, t in zip(codes[last].tolist(), bids[last].tolist(), asks[last].tolist(),
                              times[last].tolist()):
            sym = names[c]
            s = get(sym) or self._add(sym)
            if t < s.qt:
                self.counts["old_quote"] += 1
                continue
            s.bid, s.ask, s.mid, s.qt = b, a, (b + a) * 0.5, t
            if s.pos or s.open_buy or s.open_sell or s.g:
                mark(s)
            n += 1
        return n

    def on_quote_batch(self, batch: pa.RecordBatch) -> int:
        """`on_quotes` on a quote table batch (columns time, sym, bid, ask) as the TP publishes it."""
        return self.on_quotes(batch.column("sym"), batch.column("bid"), batch.column("ask"),
                              batch.column("time"))

    def on_fill(self, sym: str, side: Side, qty: int, px: float, fee: float = 0.0) -> None:
        """A fill moves the position, its average cost and the realized PnL (less fees)."""
        s = self._syms.get(sym) or self._add(sym)
        pos, d = s.pos, qty if side is BUY else -qty
        if pos == 0 or (pos > 0) == (d > 0):
            s.avg = (s.avg * abs(pos) + px * qty) / (abs(pos) + qty)
        else:
            closed = min(qty, abs(pos))
            pnl = closed * (px - s.avg) * (1 if pos > 0 else -1)
            s.realized += pnl
            self._realized += pnl
            if qty > abs(pos):
                s.avg = px                           # flipped: the rest opens at this price
            elif qty == abs(pos):
                s.avg = 0.0
        s.pos = pos + d
        s.realized -= fee
        self._realized -= fee
        s.last_px = px
        self._fills += 1
        self._mark(s)

    def on_open(self, sym: str, side: Side, qty: int, orders: int = 0) -> None:
        """Open quantity on a sym's side changed by `qty` (signed); working orders by `orders`."""
        s = self._syms.get(sym) or self._add(sym)
        if side is BUY:
            s.open_buy += qty
        else:
            s.open_sell += qty
        self._open_orders += orders
        self._mark(s)

    def on_change(self, change: Change) -> None:
        """Follow the order tracker: apply every Change's fill and open deltas (they are zero
        when nothing changed, so passing every Change is right)."""
        o = change.order
        if o is None:
            return
        if change.fill_qty:
            self.on_fill(o.sym, o.side, change.fill_qty, change.fill_px, change.fee)
        if change.open_qty or change.open_orders:
            self.on_open(o.sym, o.side, change.open_qty, change.open_orders)

    def set_position(self, sym: str, qty: int, avg_cost: float) -> None:
        """Seed a position (e.g. carried from yesterday)."""
        s = self._syms.get(sym) or self._add(sym)
        s.pos, s.avg = qty, avg_cost if qty else 0.0
        if not s.last_px:
            s.last_px = avg_cost
        self._mark(s)

    # ---- queries -------------------------------------------------------------------------
    def position(self, sym: str) -> Position:
        s = self._syms.get(sym)
        if s is None:
            return Position(sym, 0, 0.0, 0.0, 0.0)
        return Position(sym, s.pos, s.avg, s.realized, s.u)

    def positions(self) -> list[Position]:
        """Every sym that has a position or realized PnL (rows for the `position` table)."""
        return [Position(s.sym, s.pos, s.avg, s.realized, s.u) for s in self._syms.values()
                if s.pos or s.realized]

    def pnl(self) -> tuple[float, float]:
        """(realized, unrealized) over the scope."""
        return self._realized, self._unrealized

    def exposure(self) -> tuple[float, float]:
        """(gross, net) notional, worst case over open orders."""
        return self._gross, max(abs(self._nl), abs(self._ns))

    def open_qty(self, sym: str, side: Side) -> int:
        s = self._syms.get(sym)
        return 0 if s is None else s.open_buy if side is BUY else s.open_sell

    @property
    def open_orders(self) -> int:
        return self._open_orders

    # ---- internals -----------------------------------------------------------------------
    def _add(self, sym: str) -> _Sym:
        s = self._syms[sym] = _Sym(sym, self.settings)
        return s

    def _deny(self, code: Deny, text: str) -> Decision:
        self.denials[code] += 1
        return Decision(code, text)

    def _order_checks(self, s: _Sym, side: Side, qty: int, px: float | None, market: bool,
                      now: int, restricted: bool = True) -> Decision | None:
        """The checks on the order alone: shape, restricted list, size, quote, collar, notional."""
        whole = type(qty) is int or isinstance(qty, np.integer)
        if not (whole and qty > 0) or not (market or (px is not None and 0 < px < INF)):
            return self._deny(Deny.BAD_ORDER, f"qty must be a whole number > 0 and a limit order needs "
                              f"a finite price > 0 (qty {qty!r}, price {px!r})")
        if restricted and s.restricted:
            return self._deny(Deny.RESTRICTED, f"{s.sym} is on the restricted list")
        if qty > s.max_qty:
            return self._deny(Deny.MAX_ORDER_QTY, f"qty {qty} > max_order_qty {s.max_qty} for {s.sym}")
        if s.qt < 0:
            if s.need_quote or market:
                return self._deny(Deny.NO_QUOTE, f"no quote for {s.sym} yet: cannot check the price")
        elif now - s.qt > s.max_age:
            return self._deny(Deny.STALE_QUOTE, f"the last {s.sym} quote is {(now - s.qt) / 1e6:.0f} ms "
                              f"old, max_quote_age_ms {s.max_age / 1e6:g}")
        if market:
            px = s.ask if side is BUY else s.bid
        elif s.qt >= 0 and abs(px - s.mid) > s.collar * s.mid:
            return self._deny(Deny.PRICE_COLLAR, f"price {px} is {abs(px - s.mid) / s.mid * 1e4:.0f} bps "
                              f"from the {s.sym} mid {s.mid:g}, collar_bps {s.collar * 1e4:g}")
        if qty * px > s.max_notional:
            return self._deny(Deny.MAX_ORDER_NOTIONAL, f"notional {qty * px:,.2f} > max_order_notional "
                              f"{s.max_notional:,.2f} for {s.sym}")
        return None

    def _reduces(self, s: _Sym, side: Side, qty: int) -> bool:
        """Would `qty` more on `side`, with every order already working on that side, only bring
        the position toward flat?"""
        if side is BUY:
            return s.pos < 0 and s.open_buy + qty <= -s.pos
        return s.pos > 0 and s.open_sell + qty <= s.pos

    def _book_checks(self, s: _Sym, side: Side, qty: int, px: float, state: TradingState
                     ) -> Decision | None:
        """The checks on what `qty` more open on `side` does to the book."""
        buy = side is BUY
        long, short = s.pos + s.open_buy, s.pos - s.open_sell
        if buy:
            long += qty
            if long > s.max_pos:
                return self._deny(Deny.POSITION_LIMIT, f"{s.sym} position {s.pos} + open buys "
                                  f"{s.open_buy} + {qty} = {long} > max_position {s.max_pos}")
        else:
            short -= qty
            if -short > s.max_pos:
                return self._deny(Deny.POSITION_LIMIT, f"{s.sym} position {s.pos} - open sells "
                                  f"{s.open_sell} - {qty} = {short} < -max_position {s.max_pos}")
        reduces = (s.pos < 0 and long <= 0) if buy else (s.pos > 0 and short >= 0)
        if not reduces:
            if state is TradingState.REDUCING:
                return self._deny(Deny.REDUCING, f"trading is reducing ({self._reason}): {side.name} "
                                  f"{qty} {s.sym} does not reduce the position {s.pos} within flat "
                                  f"(working on that side: {s.open_buy if buy else s.open_sell})")
            loss = -(self._realized + self._unrealized)
            if loss > self._max_loss:
                return self._deny(Deny.DAILY_LOSS, f"loss today {loss:,.2f} > max_daily_loss "
                                  f"{self._max_loss:,.2f}: only orders that reduce a position pass")
        m = s.mid if s.mid > 0 else s.last_px or px
        g = max(abs(long), abs(short)) * m
        if g > s.g:
            gross = self._gross - s.g + g
            if gross > self._max_gross:
                return self._deny(Deny.GROSS_EXPOSURE, f"gross exposure would be {gross:,.0f} > "
                                  f"max_gross_exposure {self._max_gross:,.0f}")
        nl, ns = self._nl, self._ns
        before = max(abs(nl), abs(ns))
        if buy:
            nl += long * m - s.nl
        else:
            ns += short * m - s.ns
        net = max(abs(nl), abs(ns))
        if net > self._max_net and net > before:
            return self._deny(Deny.NET_EXPOSURE, f"net exposure would be {net:,.0f} > "
                              f"max_net_exposure {self._max_net:,.0f}")
        return None

    def _mark(self, s: _Sym) -> None:
        """Recompute the sym's share of gross, net and unrealized PnL and adjust the totals."""
        m = s.mid if s.mid > 0 else s.last_px
        long, short = s.pos + s.open_buy, s.pos - s.open_sell
        g, nl, ns = max(abs(long), abs(short)) * m, long * m, short * m
        u = 0.0
        if s.pos:
            px = (s.bid if s.pos > 0 else s.ask) or s.last_px
            u = s.pos * (px - s.avg)
        self._gross += g - s.g
        self._nl += nl - s.nl
        self._ns += ns - s.ns
        self._unrealized += u - s.u
        s.g, s.nl, s.ns, s.u = g, nl, ns, u

    def _remember(self, key: tuple, now: int, parent_id: str | None) -> None:
        self._recent[key] = (now, parent_id)
        if len(self._recent) > self._recent_cap:    # prune, amortized: keep only the window
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < self._dup_ns}
            self._recent_cap = max(10_000, 2 * len(self._recent))


def _sym_codes(syms) -> tuple[np.ndarray, list]:
    """(int codes per row, -1 for a null sym; the names the codes index). Arrow's hash
    encoding does the per-row work in C, for plain string columns and numpy arrays alike."""
    if isinstance(syms, pa.ChunkedArray):
        syms = syms.combine_chunks()
    if not isinstance(syms, pa.Array):
        syms = pa.array(np.asarray(syms, dtype=object), pa.string())
    if not isinstance(syms, pa.DictionaryArray):
        syms = pc.dictionary_encode(syms)
    codes = syms.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, syms.dictionary.to_pylist()


def _floats(a) -> np.ndarray:
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        a = a.to_numpy(zero_copy_only=False)          # nulls become NaN, then count as bad
    return np.asarray(a, dtype=np.float64)


def _times(a) -> np.ndarray:
    if isinstance(a, (pa.Array, pa.ChunkedArray)):
        a = a.cast(pa.int64()).fill_null(-1).to_numpy(zero_copy_only=False)
    a = np.asarray(a)
    return a.view(np.int64) if a.dtype.kind == "M" else a.astype(np.int64)
