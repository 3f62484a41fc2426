"""The strategy API: one class that runs live (TP subscription + gateway) and in backtest (HDB
or TP log replayed through the same callbacks), making the same decisions on the same data.

    class MyStrategy(Strategy):
        name = "mine"                      # the `strategy` field of every order it sends
        syms = ["S001", "S002"]            # its subscription (None: every sym)

        def on_start(self): self.every(10.0, "rebalance")
        def on_quote(self, q): ...         # one row: Quote(time, sym, bid, ask, bsize, asize)
        def on_quotes(self, b): ...        # or a batch: QuoteBatch of numpy columns
        def on_trade(self, t): ... / def on_trades(self, b): ...
        def on_fill(self, f): ...          # Fill(tag, id, exec_id, venue, sym, side, qty, price, fee, time)
        def on_order(self, e): ...         # OrderEvent of a parent order: state changes, denials
        def on_timer(self, name, time): ...
        def on_stop(self): ...

Time. `self.now` is data time: the time of the market data event being handled (or of the
timer firing); nothing here reads the wall clock. Timers fire on data time: a timer due at T
fires after every event stamped <= T and before the first one stamped > T, in both modes.

Per-event or batch. A strategy that overrides `on_quotes`/`on_trades` runs in batch mode by
default (the runner's `mode="auto"`), else per event; one that has both can be run either way.
A batch callback sees consecutive rows (cut at every timer); the order events its orders cause
are delivered after it returns, as live they arrive after the batch was handled. A batch
strategy stamps each order with the time of the row that decided it (`time=`); orders from
one callback must come in time order (an earlier one takes effect at the latest time reached).

Orders map 1:1 onto the gateway's intents (/work/helpers/INTENTS.md) through an order port:
    buy(sym, qty, price=None) / sell(...)  -> tag     a new parent order; price None = market
    limit(sym, side, qty, price)           -> tag     side "buy" / "sell"
    cancel(tag), replace(tag, qty=, price=) -> tag of the request
    cancel_all(sym=None)                              this strategy's working orders
    flatten(sym=None)                                 cancel_all, then market orders to flat
Every reply and event comes back through the callbacks after the current callback returns
(never re-entrantly), in the order the gateway (or the backtest port) produced them: a risk
denial is an `on_order` event with status "REJECTED" and `code` the risk reason.
Positions (`position(sym)`) follow this strategy's own fills.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strategy.events import DONE, Fill, OrderEvent, Quote, QuoteBatch, Trade, TradeBatch

NS = 1_000_000_000
SIDES = ("buy", "sell")
TIFS = ("day", "ioc", "fok", "gtc")


class StrategyError(ValueError):
    """A strategy used the API wrongly (bad side, unknown tag, ...); the message says how."""


@dataclass
class Context:
    """Where a strategy runs: "backtest" or "live", the history it may read (the HDB), and the
    first trading day of the run (None live: today)."""
    mode: str = "backtest"
    hdb_dir: Path | None = None
    date: Any = None
    params: dict = field(default_factory=dict)


@dataclass
class OrderState:
    """The strategy's view of one of its parent orders, kept from the gateway's events."""
    tag: str
    sym: str
    side: str
    qty: int
    price: float | None
    type: str
    tif: str
    time: int
    id: str = ""
    status: str = "PENDING_NEW"
    cum_qty: int = 0
    avg_px: float = 0.0
    fees: float = 0.0
    code: str | None = None
    text: str = ""

    @property
    def done(self) -> bool:
        return self.status in DONE

    @property
    def leaves_qty(self) -> int:
        return 0 if self.done else self.qty - self.cum_qty


def overrides(obj: object, name: str) -> bool:
    """Does `obj`'s class define `name` itself (not just inherit Strategy's)?"""
    return getattr(type(obj), name, None) is not getattr(Strategy, name, None)


class Strategy:
    name: str = "strategy"
    syms: list[str] | None = None        # subscription; None: every sym
    account: str = ""

    def __init__(self, **params):
        for k, v in params.items():
            if not hasattr(self, k):
                raise StrategyError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(self, k, v)
        self.now = 0
        self.context = Context()
        self.orders: dict[str, OrderState] = {}
        self.positions: dict[str, int] = {}
        self.trading_state = "ACTIVE"
        self._port = None
        self._runtime = None
        self._n = 0
        self._requests: dict[str, tuple[str, str]] = {}   # request tag -> (op, target tag)

    # ---- callbacks (override what you need) ------------------------------------------------
    def on_start(self) -> None: ...
    def on_stop(self) -> None: ...
    def on_quote(self, q: Quote) -> None: ...
    def on_trade(self, t: Trade) -> None: ...

    def on_quotes(self, batch: QuoteBatch) -> None:
        for q in batch.rows():
            self.now = q.time
            self.on_quote(q)

    def on_trades(self, batch: TradeBatch) -> None:
        for t in batch.rows():
            self.now = t.time
            self.on_trade(t)

    def on_fill(self, fill: Fill) -> None: ...
    def on_order(self, event: OrderEvent) -> None: ...
    def on_timer(self, name: str, time: int) -> None: ...
    def on_trading_state(self, state: str, reason: str) -> None: ...

    # ---- what the runner reads ------------------------------------------------------------
    @property
    def wants_quotes(self) -> bool:
        return overrides(self, "on_quote") or overrides(self, "on_quotes")

    @property
    def wants_trades(self) -> bool:
        return overrides(self, "on_trade") or overrides(self, "on_trades")

    @property
    def batch_capable(self) -> bool:
        return ((not self.wants_quotes or overrides(self, "on_quotes"))
                and (not self.wants_trades or overrides(self, "on_trades")))

    @property
    def event_capable(self) -> bool:
        return ((not self.wants_quotes or overrides(self, "on_quote"))
                and (not self.wants_trades or overrides(self, "on_trade")))

    def bind(self, port, runtime, context: Context | None = None) -> None:
        """Attach the order port and the runtime (timers, event delivery): the runner does this."""
        self._port, self._runtime = port, runtime
        if context is not None:
            self.context = context

    # ---- timers ---------------------------------------------------------------------------
    def every(self, seconds: float, name: str = "timer") -> None:
        """Fire on_timer(name, T) at every multiple T of `seconds` in data time (UTC ns)."""
        interval = round(seconds * NS)
        if interval <= 0:
            raise StrategyError(f"timer {name!r}: interval must be > 0 s (got {seconds})")
        self._need_runtime().add_timer(name, interval=interval)

    def at(self, time: int, name: str = "timer") -> None:
        """Fire on_timer(name, time) once, when data time passes `time` (int ns)."""
        self._need_runtime().add_timer(name, due=int(time))

    def cancel_timer(self, name: str) -> None:
        self._need_runtime().remove_timer(name)

    # ---- orders ---------------------------------------------------------------------------
    def buy(self, sym: str, qty: int, price: float | None = None, *, tif: str = "day",
            venue: str | None = None, time: int | None = None) -> str:
        """Buy `qty` of `sym`: a limit order at `price`, or a market order (price None)."""
        return self._new(sym, "buy", qty, price, tif, venue, time)

    def sell(self, sym: str, qty: int, price: float | None = None, *, tif: str = "day",
             venue: str | None = None, time: int | None = None) -> str:
        """Sell `qty` of `sym`: a limit order at `price`, or a market order (price None)."""
        return self._new(sym, "sell", qty, price, tif, venue, time)

    def limit(self, sym: str, side: str, qty: int, price: float, *, tif: str = "day",
              venue: str | None = None, time: int | None = None) -> str:
        """A limit order; side "buy" or "sell"."""
        if price is None:
            raise StrategyError("limit() needs a price; buy()/sell() without one send a market order")
        return self._new(sym, side, qty, price, tif, venue, time)

    def cancel(self, tag: str, *, time: int | None = None) -> str:
        """Cancel the working order `tag` (all its working children)."""
        self._known(tag)
        return self._send({"op": "cancel", "target": tag}, time)

    def replace(self, tag: str, qty: int | None = None, price: float | None = None, *,
                time: int | None = None) -> str:
        """Change a working order's total qty and/or its price."""
        o = self._known(tag)
        msg = {"op": "replace", "target": tag, "qty": int(o.qty if qty is None else qty),
               "price": o.price if price is None else float(price)}
        return self._send(msg, time)

    def cancel_all(self, sym: str | None = None, *, time: int | None = None) -> str:
        """Cancel every working order of this strategy (of one sym, if given)."""
        msg: dict[str, Any] = {"op": "cancel_all", "strategy": self.name}
        if sym is not None:
            msg["sym"] = sym
        return self._send(msg, time)

    def flatten(self, sym: str | None = None, *, time: int | None = None) -> list[str]:
        """Cancel this strategy's working orders (of `sym`, or all), then send market orders
        that bring each position (by this strategy's fills) to zero. Returns the new tags.
        A working order that fills before its cancel lands leaves a residual: call again."""
        self.cancel_all(sym, time=time)
        tags = []
        for s, pos in sorted(self.positions.items()):
            if pos and (sym is None or s == sym):
                tags.append(self._new(s, "sell" if pos > 0 else "buy", abs(pos), None, "day", None, time))
        return tags

    def position(self, sym: str) -> int:
        return self.positions.get(sym, 0)

    def working(self, sym: str | None = None) -> list[OrderState]:
        return [o for o in self.orders.values() if not o.done and (sym is None or o.sym == sym)]

    # ---- internals ------------------------------------------------------------------------
    def _need_runtime(self):
        if self._runtime is None:
            raise StrategyError("the strategy is not running: timers and orders need a runner "
                                "(strategy.backtest.run or strategy.live.run)")
        return self._runtime

    def _known(self, tag: str) -> OrderState:
        o = self.orders.get(tag)
        if o is None:
            raise StrategyError(f"unknown order tag {tag!r}: name a tag buy()/sell()/limit() returned")
        return o

    def _new(self, sym, side, qty, price, tif, venue, time) -> str:
        if side not in SIDES:
            raise StrategyError(f"side must be 'buy' or 'sell', not {side!r}")
        if tif not in TIFS:
            raise StrategyError(f"tif must be one of {TIFS}, not {tif!r}")
        if not isinstance(qty, int):
            if isinstance(qty, float) and qty.is_integer():
                qty = int(qty)
            elif hasattr(qty, "__index__"):
                qty = qty.__index__()
            else:
                raise StrategyError(f"qty must be a whole number of units, not {qty!r}")
        msg: dict[str, Any] = {"op": "new", "sym": sym, "side": side, "qty": qty,
                               "type": "market" if price is None else "limit", "tif": tif,
                               "strategy": self.name}
        if price is not None:
            price = float(price)
            if not math.isfinite(price):
                raise StrategyError(f"price must be finite, not {price}")
            msg["price"] = price
        if self.account:
            msg["account"] = self.account
        if venue is not None:
            msg["venue"] = venue
        t = self.now if time is None else int(time)
        tag = self._tag()
        self.orders[tag] = OrderState(tag, sym, side, qty, price, msg["type"], tif, t)
        msg["tag"] = tag
        self._requests[tag] = ("new", tag)
        self._need_port().request(msg, t)
        return tag

    def _send(self, msg: dict, time: int | None) -> str:
        tag = self._tag()
        msg["tag"] = tag
        self._requests[tag] = (msg["op"], msg.get("target", ""))
        self._need_port().request(msg, self.now if time is None else int(time))
        return tag

    def _need_port(self):
        if self._port is None:
            raise StrategyError("the strategy has no order port: run it with strategy.backtest.run "
                                "or strategy.live.run")
        return self._port

    def _tag(self) -> str:
        self._n += 1
        return f"{self.name}-{self._n}"

    def deliver(self, msg: dict) -> None:
        """Hand one reply or event from the port to the callbacks (the runtime calls this)."""
        ev = msg.get("event")
        if ev is None:
            self._reply(msg)
        elif ev == "fill":
            f = Fill(msg["tag"], msg.get("id", ""), msg.get("exec_id", ""), msg.get("venue", ""),
                     msg["sym"], msg["side"], int(msg["qty"]), float(msg["price"]),
                     float(msg.get("fee", 0.0)), int(msg.get("time", self.now)))
            self.positions[f.sym] = self.positions.get(f.sym, 0) + f.signed_qty
            o = self.orders.get(f.tag)
            if o is not None:
                o.fees += f.fee
            self.on_fill(f)
        elif ev == "order":
            if msg.get("venue"):
                return                      # a child's state: the parent's event follows
            e = OrderEvent(msg["tag"], msg.get("id", ""), msg["status"], int(msg.get("cum_qty", 0)),
                           int(msg.get("leaves_qty", 0)), float(msg.get("avg_px", 0.0)), "",
                           msg.get("text", ""), int(msg.get("time", self.now)), msg.get("code"))
            o = self.orders.get(e.tag)
            if o is not None:
                o.status, o.cum_qty, o.avg_px = e.status, e.cum_qty, e.avg_px
                if e.id:
                    o.id = e.id
                if "qty" in msg:
                    o.qty = int(msg["qty"])
                if "price" in msg and msg["price"] is not None:
                    o.price = float(msg["price"])
            self.on_order(e)
        elif ev == "state":
            self.trading_state = msg.get("state", self.trading_state)
            self.on_trading_state(self.trading_state, msg.get("reason", ""))

    def _reply(self, msg: dict) -> None:
        tag = msg.get("tag", "")
        op, target = self._requests.pop(tag, ("", ""))
        t = int(msg.get("time", self.now))
        if msg.get("ok"):
            o = self.orders.get(tag)
            if o is not None and msg.get("id"):
                o.id = msg["id"]
            return
        code, text = msg.get("code"), msg.get("text", "")
        if op == "new":
            o = self.orders.get(tag)
            if o is not None:
                o.status, o.code, o.text = "REJECTED", code, text
            self.on_order(OrderEvent(tag, msg.get("id", ""), "REJECTED", 0, 0, 0.0, "", text, t, code))
        elif op in ("cancel", "replace") and target in self.orders:
            o = self.orders[target]
            self.on_order(OrderEvent(target, o.id, o.status, o.cum_qty, o.leaves_qty, o.avg_px, "",
                                     f"{op} refused: {text}", t, code))
