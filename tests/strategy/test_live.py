"""Live mode: a real tickerplant process, a feed publishing quotes, the strategy subscribed
through tickerplant.subscriber, its orders through an in-process port (paper trading on the
venues' matching engines): the same callbacks, timers and decisions as a backtest of the same
rows."""
from __future__ import annotations

import threading

import numpy as np

from helpers import send, start_tp
from strategy import live
from strategy.api import Strategy
from strategy.backtest import run as backtest
from strategy.backtest_port import BacktestPort
from strategy.config import BacktestSettings
from strategy.runtime import Universe
from strategy.sources import TableSource

NS = 1_000_000_000
T0 = 1_704_205_800 * NS
N = 120


def quotes(n=N):
    t = T0 + np.arange(n, dtype=np.int64) * 400_000_000
    syms = np.array(["X", "Y", "Z"])[np.arange(n) % 3]
    mid = 100 + np.sin(np.arange(n) / 7.0)
    return {"time": t, "sym": syms, "bid": np.round(mid - 0.05, 2), "ask": np.round(mid + 0.05, 2),
            "bsize": np.full(n, 300), "asize": np.full(n, 300)}


class Trader(Strategy):
    name = "live"
    syms = ["X", "Y"]

    def on_start(self):
        self.seen = []
        self.every(3.0, "tick")

    def on_quote(self, q):
        self.seen.append(("q", q.time, q.sym))
        if len(self.seen) % 9 == 0:
            if self.position(q.sym) <= 0:
                self.buy(q.sym, 50, q.ask, tif="ioc")
            else:
                self.sell(q.sym, 50, q.bid, tif="ioc")

    def on_timer(self, name, time):
        self.seen.append((name, time, ""))

    def on_fill(self, f):
        self.seen.append(("fill", f.time, f.sym))


def test_live_subscription_drives_the_same_callbacks_and_decisions_as_a_backtest(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    q = quotes()
    half = N // 2
    # the first half is in the TP's log before the strategy subscribes, the rest arrives live
    send(cfg, "quote", [{k: v[a:a + 20] for k, v in q.items()} for a in range(0, half, 20)])
    st = Trader()
    port = BacktestPort(BacktestSettings().venues, BacktestSettings().risk, Universe(), session=st.name)
    want = sum(1 for s in q["sym"] if s in Trader.syms)
    done, halt = threading.Event(), threading.Event()

    def enough():
        return halt.is_set() or sum(k == "q" for k, _, _ in st.seen) >= want
    runner = threading.Thread(target=lambda: (live.run(st, cfg.tickerplant, port, mode="event", stop=enough),
                                              done.set()))
    runner.start()
    try:
        send(cfg, "quote", [{k: v[a:a + 20] for k, v in q.items()} for a in range(half, N, 20)], first_fseq=100)
        runner.join(timeout=60)
        assert done.is_set(), "the live run did not see every quote"
    finally:
        halt.set()
        runner.join(timeout=10)
    bt = Trader()
    res = backtest(bt, TableSource(q, chunk_rows=20), mode="event")
    assert [x for x in st.seen if x[0] != "fill"] == [x for x in bt.seen if x[0] != "fill"]
    assert len([x for x in st.seen if x[0] == "tick"]) >= 10
    live_orders = [(o.tag, o.time, o.sym, o.side, o.qty, o.price, o.status) for o in st.orders.values()]
    bt_orders = [(o.tag, o.time, o.sym, o.side, o.qty, o.price, o.status) for o in bt.orders.values()]
    assert live_orders == bt_orders and len(bt_orders) >= 5
    assert res.fills.num_rows >= 5
