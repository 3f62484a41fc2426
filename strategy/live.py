"""Live runs: the tickerplant subscription drives the same callbacks as a backtest, and the
strategy's orders go to the gateway over its intents socket (/work/helpers/INTENTS.md).

    from gateway.client import OrderClient
    from strategy.live import GatewayPort, run
    run(PairsStrategy(), tp_settings, GatewayPort(OrderClient(intents, client="pairs@run1")),
        hdb_dir=cfg.hdb_dir, stop=lambda: stopping)

Data: `tickerplant.subscriber.Subscriber` for the strategy's tables and syms (the whole day
first, from the TP's log, then live, exactly once). The runner's one thread polls the
subscriber's SUB socket and the gateway's DEALER together and takes what arrived with
`Subscriber.take` (no subscriber thread, so a quote costs no wake-up between threads), so
order events are delivered as they arrive, quiet market or not. Updates that queued while the
strategy was busy are taken together: consecutive updates of one table become one chunk (the
runtime's natural batching; decisions do not depend on where chunks are cut). The day's log
is taken a bounded number of updates at a time (memory stays bounded at join, and order
events are handled in between). A strategy slower than the market leaves messages in
its SUB queue; at the queue's bound the SUB drops, and the subscriber refills the gap from the
TP's log (memory stays bounded, nothing is missed).

Orders: `GatewayPort` adapts `gateway.client.OrderClient` (a DEALER). What the gateway sends
is mapped onto the strategy API's events here, in one place:
  * a reply with ok false is a refusal: the API turns it into an `on_order` event with status
    REJECTED (for `new`) and the gateway's `code` (a gateway.risk.Deny value such as
    "max_order_qty", or one of gateway.intents.CODES such as "no_venue", "not_working");
  * a `new` whose reply already says it is over (status EXPIRED: nothing could be routed) gets
    no later event from the gateway, so the port delivers that parent event itself;
  * parent events (no `venue` key) carry the order's current qty and price, and a replace
    the gateway accepted is followed by one (the gateway changes the parent's terms then but
    sends a parent event only when its status or filled qty changes);
  * a request the client refuses before sending (a bad field: ValueError) or that cannot be
    sent because no gateway is connected (the DEALER is not writable; ZMQ_IMMEDIATE) is
    refused with code "bad_request" or "gateway_down" (after `send_wait_s` for a connection
    being made): a strategy never blocks on a gateway that is down;
  * a new order decided on data older than `max_age_s` (its data time against the wall
    clock) is refused with code "stale_data" and not sent: a strategy started mid-day first
    reads the day so far from the TP's log (its state is the same as if it had run all day),
    and what it would have done then must not reach today's market at yesterday's prices.
    Cancels always go.
Tags are the strategy's own ("pairs-1", ...); the gateway keys idempotency by (client, tag)
for the trading day, so each run uses its own `client` id (see `strategy.process`): a
restarted strategy numbering its tags from 1 again must never be answered with the orders
of the previous run.

Any other port works too: a `strategy.backtest_port.BacktestPort` here is paper trading on
live data (the venues' matching engines in process).
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import zmq

from strategy.api import Context, Strategy
from strategy.runtime import QUOTE_COLS, TRADE_COLS, Chunk, Runtime, Universe
from strategy.sources import columns

log = logging.getLogger("strategy.live")
wall_ns = time.time_ns

TERMINAL = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED"})


class GatewayPort:
    """The live order port: intents to the gateway through `gateway.client.OrderClient`
    (DEALER mode), replies and events back as dicts (see the module docstring)."""

    hot: frozenset = frozenset()          # the venues match live: nothing to step here

    def __init__(self, client, max_age_s: float | None = None, connect_wait_s: float = 2.0,
                 send_wait_s: float = 0.1):
        self.client = client
        self.max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self.send_wait_ms = max(0, int(send_wait_s * 1000))
        # a DEALER with ZMQ_IMMEDIATE is writable once its connection is up: give it that long
        client.socket.poll(max(0, int(connect_wait_s * 1000)), zmq.POLLOUT)
        self.inbox: list[dict] = []
        self._ops: dict[str, tuple[str, str, int | None, float | None]] = {}  # request tag -> op
        self._terms: dict[str, list] = {}     # order tag -> [qty, price] as the gateway has it
        self._last: dict[str, dict] = {}      # working order tag -> its last parent event
        self.counts = collections.Counter()

    @property
    def socket(self):
        """The DEALER socket (the runner polls it beside the market data)."""
        return self.client.socket

    def request(self, msg: dict, time: int) -> None:
        """Send one intent; the gateway stamps its own time."""
        op, tag = msg["op"], msg["tag"]
        fields = {k: v for k, v in msg.items() if k not in ("op", "tag")}
        if op == "new" and self.max_age_ns is not None and time < (now := wall_ns()) - self.max_age_ns:
            self.counts["stale_data"] += 1
            self.inbox.append({"tag": tag, "ok": False, "code": "stale_data",
                               "text": f"decided on data {(now - time) / 1e9:.1f}s old (max {self.max_age_ns / 1e9:g}s): "
                                       f"not sent (catching up from the log, or the strategy is behind)"})
            return
        sock = self.client.socket
        if not sock.poll(0, zmq.POLLOUT) and not sock.poll(self.send_wait_ms, zmq.POLLOUT):
            # no gateway connected: OrderClient.submit would block in send (ZMQ_IMMEDIATE)
            self.counts["gateway_down"] += 1
            self.inbox.append({"tag": tag, "ok": False, "code": "gateway_down",
                               "text": f"no gateway connected at {self.client.endpoint}: the order was "
                                       f"not sent (`tickstack status gateway`)"})
            return
        try:
            self.client.submit(op, tag=tag, **fields)
        except ValueError as e:                      # refused before sending
            self.counts["bad_request"] += 1
            self.inbox.append({"tag": tag, "ok": False, "code": "bad_request", "text": str(e)})
            return
        self.counts[op] += 1
        self._ops[tag] = (op, msg.get("target", ""), msg.get("qty"), msg.get("price"))
        if op == "new":
            self._terms[tag] = [msg.get("qty"), msg.get("price")]

    def poll(self, timeout_ms: int = 0) -> None:
        """Take what the gateway sent (waiting up to `timeout_ms` for the first message)."""
        for m in self.client.events(timeout_ms / 1000):
            self._adapt(m)

    def _adapt(self, m: dict) -> None:
        ev = m.get("event")
        if ev is None:
            op, target, qty, price = self._ops.pop(m.get("tag"), ("", "", None, None))
            self.inbox.append(m)
            if not m.get("ok"):
                return
            # a new that is over in its reply (EXPIRED, nothing routed) gets its parent event
            # from the gateway too
            if op == "replace" and target in self._terms:
                terms = self._terms[target]
                terms[0] = qty
                if price is not None:
                    terms[1] = price
                # the gateway changes the parent's terms when it accepts the replace, and sends
                # a parent event only if its status or filled qty changes: say it here
                last = self._last.get(target, {"event": "order", "tag": target, "id": m.get("id", ""),
                                               "status": "NEW", "cum_qty": 0, "avg_px": 0.0})
                self.inbox.append({**last, "leaves_qty": max(0, qty - last.get("cum_qty", 0)),
                                   "qty": terms[0], "price": terms[1], "text": m.get("text", "")})
            return
        if ev == "order" and "venue" not in m:
            tag = m.get("tag")
            terms = self._terms.get(tag)
            if terms is not None:
                if "qty" in m:                       # the gateway's terms win
                    terms[:] = [m["qty"], m.get("price")]
                else:
                    m["qty"], m["price"] = terms
            if m.get("status") in TERMINAL:
                self._terms.pop(tag, None)
                self._last.pop(tag, None)
            elif tag in self._terms:
                self._last[tag] = m
        self.inbox.append(m)

    # the runtime's market hooks: the venues see the market themselves
    def begin(self, quotes) -> None:
        pass

    def finish(self) -> None:
        self.poll()

    def sync(self, t: int) -> None:
        self.poll()

    def next_due(self) -> None:
        return None

    def end_of_day(self, t: int) -> None:
        pass


def chunk_of(table: str, batch, universe: Universe) -> Chunk | None:
    """TP updates of one table (a RecordBatch, or a list of them) as one runtime chunk (quote
    or trade table; others: None)."""
    batches = batch if isinstance(batch, list) else [batch]
    batches = [b for b in batches if b.num_rows]
    if table not in ("quote", "trade") or not batches:
        return None
    cols = columns(pa.Table.from_batches(batches), table, universe)
    return Chunk(cols, None) if table == "quote" else Chunk(None, cols)


def chunk_of_updates(table: str, updates: list, universe: Universe, registry) -> Chunk | None:
    """Subscriber updates of one table as one runtime chunk, from numpy views of the wire
    bytes (Update.columns: no Arrow objects, the single-row hot path); an update the
    subscriber already decoded (a sym-filtered one) goes through Arrow."""
    if table not in ("quote", "trade"):
        return None
    names = [c.name for c in registry[table].columns] if registry is not None else None
    want = ("time", "sym") + (QUOTE_COLS if table == "quote" else TRADE_COLS)
    parts = []
    for u in updates:
        cols, n = u.columns() if names is not None else (None, 0)
        if cols is None:
            c = chunk_of(table, u.batch, universe)
            if c is not None:
                parts.append(c.quotes if table == "quote" else c.trades)
            continue
        if not n:
            continue
        by = dict(zip(names, cols))
        if any(w not in by for w in want):
            raise ValueError(f"{table} updates need columns {want}; the TP's table has {names}")
        codes, words = by["sym"]
        lut = np.fromiter((universe.code(w) for w in words), np.int32, len(words))
        part = {"time": by["time"].view(np.int64), "code": lut[codes]}
        for c in want[2:]:
            part[c] = by[c].astype(np.float64 if c in ("bid", "ask", "price") else np.int64, copy=False)
        parts.append(part)
    if not parts:
        return None
    cols = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return Chunk(cols, None) if table == "quote" else Chunk(None, cols)


def subscription(strategy: Strategy, tp=None, curve=None):
    """The TP subscription a live run of `strategy` reads: its tables (quote and/or trade) and
    syms. A process makes it itself to watch it (health()) and hands it to `run`."""
    from tickerplant.subscriber import Subscriber
    tables = [t for t, want in (("quote", strategy.wants_quotes), ("trade", strategy.wants_trades)) if want]
    return Subscriber(tp, tables=tables, syms=strategy.syms, curve=curve)


def run(strategy: Strategy, tp=None, port=None, *, mode: str = "auto", hdb_dir: Path | None = None,
        stop=None, poll_s: float = 0.05, subscriber=None, stop_timeout_s: float = 5.0,
        on_ready=None, date: dt.date | None = None, curve=None) -> Runtime:
    """Run `strategy` on the live stream until `stop()` is true or KeyboardInterrupt.
    `tp`: TickerplantSettings (default: the config's); `port`: GatewayPort or a paper port;
    `subscriber`: a ready Subscriber (tests), else one is made for the strategy's tables/syms.
    At the end `on_stop` runs (e.g. a flatten), and the orders it sent are followed for up to
    `stop_timeout_s` until they are done. `on_ready()` is called once subscribed."""
    from tickerplant.subscriber import EndOfDay, Update

    if port is None:
        raise ValueError("live runs need an order port: GatewayPort(OrderClient(...)), or a "
                         "BacktestPort for paper trading")
    universe = getattr(port, "universe", None)
    if universe is None:
        universe = Universe()
    runtime = Runtime(strategy, port, universe, mode)
    strategy.bind(port, runtime, Context("live", hdb_dir, date or dt.date.today()))
    runtime.start()
    sub = subscriber or subscription(strategy, tp, curve)
    sub.start()                               # handshake now: nothing published after is missed
    if on_ready is not None:
        on_ready()
    poller = zmq.Poller()
    poller.register(sub.socket, zmq.POLLIN)
    orders = getattr(port, "socket", None)
    if orders is not None:
        poller.register(orders, zmq.POLLIN)
    poll_ms = max(1, int(poll_s * 1000))
    last_time = 0
    more = True                               # the day so far, from the log, first
    try:
        while not (stop is not None and stop()):
            ready = dict(poller.poll(0 if more else poll_ms))
            if more or sub.socket in ready or not ready:
                items = sub.take()
                more = sub.more
                if items:
                    last_time = _dispatch(items, runtime, universe, last_time, Update, EndOfDay,
                                          sub.registry)
            if orders is None or orders in ready or not ready:
                port.sync(strategy.now)
                runtime.drain()
        runtime.stop()
        _follow(strategy, port, runtime, stop_timeout_s)
    except KeyboardInterrupt:
        runtime.stop()
    finally:
        sub.close()
    return runtime


def _dispatch(items: list, runtime: Runtime, universe: Universe, last_time: int,
              Update, EndOfDay, registry=None) -> int:
    """Hand what the subscriber queued to the runtime: runs of updates of one table as one
    chunk each, end of day in its place."""
    run_table, run = None, []

    def flush(lt: int) -> int:
        if run:
            c = chunk_of_updates(run_table, run, universe, registry)
            run.clear()
            if c is not None:
                runtime.feed(c)
                return max(lt, c.last_time)
        return lt
    for ev in items:
        if isinstance(ev, Update):
            if ev.table != run_table:
                last_time = flush(last_time)
                run_table = ev.table
            run.append(ev)
        elif isinstance(ev, EndOfDay):
            last_time = flush(last_time)
            runtime.end_of_day(last_time)
    return flush(last_time)


def _follow(strategy: Strategy, port, runtime: Runtime, timeout: float) -> None:
    """After on_stop: deliver events until every order of the strategy is done (its last
    orders, e.g. a flatten, reached the gateway and were answered), at most `timeout` s."""
    end = time.monotonic() + timeout
    while strategy.working() and time.monotonic() < end:
        if hasattr(port, "socket"):
            port.poll(50)
        else:
            port.sync(strategy.now)
        runtime.drain()
    left = strategy.working()
    if left:
        log.warning("%s: %d orders still working at exit: %s", strategy.name, len(left),
                    ", ".join(o.tag for o in left[:10]))
