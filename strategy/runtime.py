"""The runtime between a data stream and a strategy, shared by live and backtest runs: it
calls the strategy's callbacks per event or per batch, fires timers on data time, keeps the
order port's view of the market in step, and delivers the port's replies and events.

Data arrives as `Chunk`s: the rows of the quote and trade tables in dispatch order (HDB: time
order; TP log and live: the TP's order), syms as int codes into one `Universe` per run.

Ordering rules (the same in both modes, so the same data gives the same decisions):
* Data time is the running maximum of the rows' times. A timer due at T fires after every
  row stamped <= T and before the first row stamped > T.
* The order port sees the market up to time t before it handles an order stamped t (every row
  whose data time is <= t), so an order decided on a row meets that row's quote at the venue.
* Per event: the port's events (acks, fills, cancels) are delivered after the callback that
  caused them returns, and before the first row stamped later than they happened; fills of
  resting orders against a sym's quote come right after that quote's callback.
* Batch: a batch is cut at every timer; the port's events are delivered after the batch.

Python work per event in per-event mode: one callback call, one comparison against the next
timer/port due time, and two cheap checks (did anything reach the inbox; does the row's sym
have resting orders). Row objects are built in C. In batch mode there is no per-row Python.
"""
from __future__ import annotations

import gc
import heapq
import math
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from strategy.events import Quote, QuoteBatch, Trade, TradeBatch, rows

INF = math.inf
QUOTE_COLS = ("bid", "ask", "bsize", "asize")
TRADE_COLS = ("price", "size")


class Universe:
    """The run's syms: names and stable int codes (first seen, first numbered)."""

    def __init__(self, names=()):
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        for n in names:
            self.code(n)

    def __len__(self) -> int:
        return len(self.names)

    def code(self, name: str) -> int:
        c = self.index.get(name)
        if c is None:
            c = self.index[name] = len(self.names)
            self.names.append(name)
        return c

    def codes_of(self, col) -> np.ndarray:
        """int32 codes for a sym column: pyarrow (plain or dictionary, chunked or not) or
        numpy/list of str. Python work is per distinct sym, not per row."""
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if isinstance(col, pa.Array):
            if not pa.types.is_dictionary(col.type):
                col = col.dictionary_encode()
            words = col.dictionary.to_pylist()
            idx = col.indices.to_numpy(zero_copy_only=False)
        else:
            arr = np.asarray(col)
            if arr.dtype.kind not in "US":
                arr = arr.astype(str)
            words, idx = np.unique(arr, return_inverse=True)
            words = [str(w) for w in words.tolist()]
        lut = np.fromiter((self.code(str(w)) for w in words), np.int32, len(words))
        return lut[np.asarray(idx).reshape(-1)] if len(words) else np.zeros(0, np.int32)


class Chunk(NamedTuple):
    """Consecutive market data. `quotes`/`trades`: dicts of numpy columns (time int64, code
    int32, then the table's value columns) or None; `kinds`: when both are present, 0 (quote)
    or 1 (trade) per event in dispatch order."""
    quotes: dict | None
    trades: dict | None
    kinds: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return sum(len(c["time"]) for c in (self.quotes, self.trades) if c is not None)

    @property
    def last_time(self) -> int:
        return max((int(c["time"].max()) for c in (self.quotes, self.trades)
                    if c is not None and len(c["time"])), default=0)


def runmax(times: np.ndarray) -> np.ndarray:
    """Data time per row: the running maximum (the rows' own times when they are sorted)."""
    if len(times) < 2 or bool((times[1:] >= times[:-1]).all()):
        return times
    return np.maximum.accumulate(times)


class Runtime:
    """Drives one strategy: `feed(chunk)` per chunk, `start()` / `stop()` around them."""

    def __init__(self, strategy, port, universe: Universe, mode: str = "auto"):
        if mode == "auto":
            mode = "batch" if strategy.batch_capable and (
                _own(strategy, "on_quotes") or _own(strategy, "on_trades")) else "event"
        if mode == "batch" and not strategy.batch_capable:
            raise ValueError(f"{type(strategy).__name__} has no batch callbacks (on_quotes/on_trades) "
                             f"for the tables it handles; run it with mode='event'")
        if mode == "event" and not strategy.event_capable:
            raise ValueError(f"{type(strategy).__name__} has no per-event callbacks (on_quote/on_trade) "
                             f"for the tables it handles; run it with mode='batch'")
        if mode not in ("event", "batch"):
            raise ValueError(f"mode must be 'auto', 'event' or 'batch', not {mode!r}")
        self.mode = mode
        self.st = strategy
        self.port = port
        self.universe = universe
        self.inbox: list = port.inbox
        self._timers: list[tuple[int, int, str, int]] = []   # (due, seq, name, interval or 0)
        self._live_timer: dict[str, int] = {}                  # name -> seq of its current entry
        self._unarmed: list[tuple[str, int]] = []              # `every` before any data time
        self._seq = 0
        self.counters = {"events": 0, "batches": 0, "timers": 0, "deliveries": 0}

    # ---- timers ---------------------------------------------------------------------------
    def add_timer(self, name: str, interval: int | None = None, due: int | None = None) -> None:
        self.remove_timer(name)
        if interval:
            if self.st.now <= 0:
                self._unarmed.append((name, interval))
                return
            due = (self.st.now // interval + 1) * interval
        self._push(name, int(due), interval or 0)

    def remove_timer(self, name: str) -> None:
        self._live_timer.pop(name, None)
        self._unarmed = [u for u in self._unarmed if u[0] != name]

    def _push(self, name: str, due: int, interval: int) -> None:
        self._seq += 1
        self._live_timer[name] = self._seq
        heapq.heappush(self._timers, (due, self._seq, name, interval))

    def _arm(self, t: int) -> None:
        for name, interval in self._unarmed:
            # the first multiple at or after the first row: it fires once data passes it
            self._push(name, -(-t // interval) * interval, interval)
        self._unarmed = []

    def _next_timer(self) -> float:
        h = self._timers
        while h and self._live_timer.get(h[0][2]) != h[0][1]:
            heapq.heappop(h)
        return h[0][0] if h else INF

    def _fire_next(self) -> None:
        due, seq, name, interval = heapq.heappop(self._timers)
        if interval:
            self._seq += 1
            self._live_timer[name] = self._seq
            heapq.heappush(self._timers, (due + interval, self._seq, name, interval))
        else:
            self._live_timer.pop(name, None)
        self.port.sync(due)
        self.drain()
        self.st.now = due
        self.counters["timers"] += 1
        self.st.on_timer(name, due)
        self.drain()

    def _gate(self) -> float:
        d = self.port.next_due()
        return min(self._next_timer(), INF if d is None else d)

    def _catch_up(self, t: int) -> None:
        """Timers and port requests due before data time t, in time order."""
        while True:
            tt = self._next_timer()
            d = self.port.next_due()
            d = INF if d is None else d
            if min(tt, d) >= t:
                return
            if d <= tt:
                self.port.sync(d)
                self.drain()
            else:
                self._fire_next()

    # ---- delivery -------------------------------------------------------------------------
    def drain(self) -> None:
        inbox = self.inbox
        while inbox:
            msgs = inbox[:]
            inbox.clear()
            self.counters["deliveries"] += len(msgs)
            for m in msgs:
                self.st.deliver(m)

    # ---- the stream -----------------------------------------------------------------------
    def start(self) -> None:
        self.st.on_start()
        self.drain()

    def stop(self) -> None:
        self.st.on_stop()
        self.drain()
        self.port.sync(self.st.now)
        self.drain()

    def end_of_day(self, time: int) -> None:
        """Working DAY orders end with the day (the venue expires them)."""
        self.port.end_of_day(time)
        self.drain()

    def feed(self, chunk: Chunk) -> None:
        q, tr = chunk.quotes, chunk.trades
        if q is not None and not len(q["time"]):
            q = None
        if tr is not None and not len(tr["time"]):
            tr = None
        if q is None and tr is None:
            return
        if self._unarmed:
            first = min(int(c["time"][0]) for c in (q, tr) if c is not None)
            self._arm(first)
        if q is not None:
            q["runmax"] = runmax(q["time"])
        if tr is not None:
            tr["runmax"] = runmax(tr["time"])
        # The cyclic GC is paused within a chunk: building a chunk's row tuples would otherwise
        # trigger a collection every few hundred rows (2-4x the cost of building them).
        # Reference counting still frees everything; collections resume between chunks.
        paused = gc.isenabled()
        gc.disable()
        try:
            self.port.begin(q)
            if self.mode == "event":
                self._events(q, tr, chunk.kinds if (q is not None and tr is not None) else None)
            else:
                self._batches(q, tr)
            self.port.finish()
            self.drain()
        finally:
            if paused:
                gc.enable()

    def _events(self, q, tr, kinds) -> None:
        st, port, names = self.st, self.port, np.asarray(self.universe.names, dtype=object)
        parts = []
        if q is not None:
            parts.append((rows(Quote, [q["time"].tolist(), names[q["code"]].tolist()]
                               + [q[c].tolist() for c in QUOTE_COLS]), st.on_quote, q["runmax"]))
        if tr is not None:
            parts.append((rows(Trade, [tr["time"].tolist(), names[tr["code"]].tolist()]
                               + [tr[c].tolist() for c in TRADE_COLS]), st.on_trade, tr["runmax"]))
        if len(parts) == 1:
            evs, f, times = parts[0]
            calls = [f] * len(evs)
            times = times.tolist()
        else:
            n = len(kinds)
            evs_arr = np.empty(n, dtype=object)
            calls_arr = np.empty(n, dtype=object)
            times_arr = np.empty(n, dtype=np.int64)
            for k, (evs_k, f, tk) in enumerate(parts):
                at = np.flatnonzero(kinds == k)
                evs_arr[at] = evs_k
                calls_arr[at] = f
                times_arr[at] = tk
            evs, calls = evs_arr.tolist(), calls_arr.tolist()
            times = np.maximum.accumulate(times_arr).tolist()
        self.counters["events"] += len(evs)
        inbox, hot = self.inbox, port.hot
        gate = self._gate()
        for f, ev, t in zip(calls, evs, times):
            if t > gate:
                self._catch_up(t)
                gate = self._gate()
            st.now = t
            f(ev)
            if inbox:
                self.drain()
                gate = self._gate()
            if hot and ev[1] in hot:
                port.sync(t)
                self.drain()
                gate = self._gate()

    def _batches(self, q, tr) -> None:
        st, port, syms = self.st, self.port, self.universe.names
        nq = 0 if q is None else len(q["time"])
        nt = 0 if tr is None else len(tr["time"])
        pq = pt = 0
        while pq < nq or pt < nt:
            T = self._next_timer()
            eq = nq if T == INF or q is None else int(np.searchsorted(q["runmax"], T, "right"))
            et = nt if T == INF or tr is None else int(np.searchsorted(tr["runmax"], T, "right"))
            eq, et = max(eq, pq), max(et, pt)
            if eq > pq or et > pt:
                last = max(int(q["runmax"][eq - 1]) if eq > pq else 0,
                           int(tr["runmax"][et - 1]) if et > pt else 0)
                st.now = last
                self.counters["batches"] += 1
                if eq > pq:
                    st.on_quotes(QuoteBatch(syms, q["time"][pq:eq], q["code"][pq:eq],
                                            **{c: q[c][pq:eq] for c in QUOTE_COLS}))
                if et > pt:
                    st.on_trades(TradeBatch(syms, tr["time"][pt:et], tr["code"][pt:et],
                                            **{c: tr[c][pt:et] for c in TRADE_COLS}))
                port.sync(max(st.now, last))
                self.drain()
            pq, pt = eq, et
            if pq >= nq and pt >= nt:
                break
            self._fire_next()


def _own(obj, name: str) -> bool:
    from strategy.api import overrides
    return overrides(obj, name)
