"""Live runs: the tickerplant subscription drives the same callbacks as a backtest, and the
strategy's orders go to the gateway over its intents socket (/work/helpers/INTENTS.md).

    from strategy.live import GatewayPort, run
    run(PairsStrategy(), tp_settings, GatewayPort(OrderClient(...)), hdb_dir=cfg.hdb_dir)

Data: `tickerplant.subscriber.Subscriber` for the strategy's tables and syms (the whole day
first, from the TP's log, then live, exactly once), each update handed to the runtime as one
chunk: per-event callbacks per row, or the batch callbacks per update; timers on data time.
The subscriber runs in its own thread (it owns its socket) and passes updates through a
queue, so the strategy's order events are delivered while the market is quiet too (within
`poll_s`).

Orders: `GatewayPort` adapts `gateway.client.OrderClient` (a DEALER on `[gateway] intents`):
every request is sent as the intent dict the strategy API builds; replies and events come
back as dicts and are delivered through the same callbacks. Any other port works too: a
`strategy.backtest_port.BacktestPort` here is paper trading on live data (the venues'
matching engines in process).
"""
from __future__ import annotations

import datetime as dt
import queue
import threading
from pathlib import Path

import pyarrow as pa

from strategy.api import Context, Strategy
from strategy.runtime import Chunk, Runtime, Universe
from strategy.sources import columns


class GatewayPort:
    """The live order port: intents to the gateway through `gateway.client.OrderClient`.

    It needs two things of the client (INTENTS.md, DEALER side): sending one request dict
    without waiting (`send(msg)`), and taking whatever replies and events have arrived without
    blocking (`poll(timeout_ms) -> list[dict]`). The names are adapted here, in one place.
    """

    def __init__(self, client):
        self.client = client
        self.inbox: list[dict] = []
        self.hot: set[str] = set()            # the venues match live: nothing to step here

    # TODO(lead): align these two calls with gateway.client.OrderClient's final API
    # (it was being written alongside this module; INTENTS.md is the contract).
    def _send(self, msg: dict) -> None:
        self.client.send(msg)

    def _receive(self, timeout_ms: int = 0) -> list[dict]:
        return list(self.client.poll(timeout_ms))

    def request(self, msg: dict, time: int) -> None:
        self._send(msg)                       # the gateway stamps its own time

    def poll(self, timeout_ms: int = 0) -> None:
        self.inbox.extend(self._receive(timeout_ms))

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


def chunk_of(table: str, batch: pa.RecordBatch, universe: Universe) -> Chunk | None:
    """One TP update as a runtime chunk (quote or trade table; others: None)."""
    if table not in ("quote", "trade") or not batch.num_rows:
        return None
    cols = columns(pa.Table.from_batches([batch]), table, universe)
    return Chunk(cols, None) if table == "quote" else Chunk(None, cols)


def run(strategy: Strategy, tp=None, port=None, *, mode: str = "auto", hdb_dir: Path | None = None,
        stop=None, poll_s: float = 0.05, subscriber=None) -> Runtime:
    """Run `strategy` on the live stream until `stop()` is true or KeyboardInterrupt.
    `tp`: TickerplantSettings (default: the config's); `port`: GatewayPort or a paper port;
    `subscriber`: a ready Subscriber (tests), else one is made for the strategy's tables/syms."""
    from tickerplant.subscriber import EndOfDay, Subscriber, Update

    if port is None:
        raise ValueError("live runs need an order port: GatewayPort(OrderClient(...)), or a "
                         "BacktestPort for paper trading")
    universe = getattr(port, "universe", None)
    if universe is None:
        universe = Universe()
    runtime = Runtime(strategy, port, universe, mode)
    strategy.bind(port, runtime, Context("live", hdb_dir, dt.date.today()))
    runtime.start()
    tables = [t for t, want in (("quote", strategy.wants_quotes), ("trade", strategy.wants_trades)) if want]
    sub = subscriber or Subscriber(tp, tables=tables, syms=strategy.syms)
    updates: queue.Queue = queue.Queue(maxsize=1024)
    failed: list[BaseException] = []

    def read() -> None:
        try:
            for ev in sub:
                updates.put(ev)
        except BaseException as e:           # noqa: BLE001 - reported in the main thread
            failed.append(e)
            updates.put(None)

    reader = threading.Thread(target=read, name="strategy-subscriber", daemon=True)
    reader.start()
    last_time = 0
    try:
        while not (stop is not None and stop()):
            try:
                ev = updates.get(timeout=poll_s)
            except queue.Empty:
                port.sync(strategy.now)
                runtime.drain()
                continue
            if ev is None:
                raise failed[0]
            if isinstance(ev, Update):
                c = chunk_of(ev.table, ev.batch, universe)
                if c is not None:
                    runtime.feed(c)
                    last_time = max(last_time, c.last_time)
            elif isinstance(ev, EndOfDay):
                runtime.end_of_day(last_time)
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        runtime.stop()
        reader.join(timeout=2)
    return runtime
