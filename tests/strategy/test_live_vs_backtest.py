"""Backtest and live make the same decisions on the same data.

A short day is recorded with the simulator through a tickerplant while the pairs strategy
trades it live, as a process (`python -m strategy --name pairs`) through the real gateway and
venues (FIX over loopback). Then the same strategy is backtested over that day's TP log.

Why the recorded log and the live run are the same data: the live strategy reads the TP's
stream gap-free and exactly once, in log order (tickerplant.subscriber), and it subscribed
before the first quote; the backtest's LogSource replays the same log records for the same
syms in the same order. So running live during the recording is replaying the recorded log
into the live path, with the real gateway and venues filling.

"Same decisions" compares the strategy's parent orders: the sequence, in tag order, of (tag,
sym, side, qty, order type, time in force, limit price), live as recorded in the RDB's `order`
table (each parent's first row), backtest from its results; including the flatten at stop.
Fill prices and child routing may differ (the venues fill against their live view of the
market, the backtest at data time + latency); decisions do not depend on them as long as
the IOC legs fill completely, which small legs 40 bps through the touch do in both.
"""
from __future__ import annotations

import math
import signal

import pytest

from helpers import Procs, free_port, start_tp, wait_for, write_config

pytestmark = pytest.mark.process

PARAMS = {"entry_z": 0.5, "exit_z": 0.1, "notional": 1500.0, "tol_bps": 40.0, "sample_s": 1.0,
          "min_samples": 20, "refit_every": 5, "window": 300, "warmup_s": 2.0}
SIM = {"syms": 20, "seed": 42, "rate": 400.0}
SECONDS = 12


def rdb_rows(cfg, sql):
    from hdb.server import query
    return query(cfg.rdb.query, sql).table.to_pylist()


def test_live_orders_equal_the_backtests_on_the_recorded_log(tmp_path):
    from ops.config import load
    from strategy.backtest import run as backtest
    from strategy.examples.pairs import PairsStrategy
    from strategy.sources import LogSource
    from tickerplant.protocol import control

    home = tmp_path / "home"
    path = write_config(home, feed=SIM, risk={"ctl": f"tcp://127.0.0.1:{free_port()}"},
                        **{"strategy.params.pairs": PARAMS})
    cfg = load(path, home)
    procs = Procs(path, home)
    try:
        start_tp(cfg, procs)
        procs.start("rdb")
        for v in ("A", "B"):
            procs.start("gateway.venue", "--name", v, name=f"venue-{v}")
        procs.start("gateway")
        from ops.processes import gateway_status
        wait_for(lambda: (st := gateway_status(cfg)) and not st["recovering"], timeout=30,
                 what="the gateway to log on to both venues")
        procs.start("strategy", "--name", "pairs", name="strategy")
        wait_for(lambda: (home / "run" / "strategy-pairs.ready").is_file(), timeout=30,
                 what="the strategy to subscribe")
        # the market opens after the strategy subscribed: it sees every quote live
        sim = procs.start("feedhandlers", "sim", "--seconds", str(SECONDS), "--no-progress", name="feed")
        sim.wait(timeout=SECONDS + 30)

        def settled():
            # rows of one loop of the gateway share a time: "done" is any terminal row
            rows = rdb_rows(cfg, "select id, bool_or(status in ('FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')) "
                                 "as done from \"order\" where parent = '' and strategy = 'pairs' group by id")
            return rows and all(r["done"] for r in rows)
        wait_for(settled, timeout=20, what="every live order to be done")
        procs.kill("strategy", signal.SIGTERM)             # on_stop: the strategy flattens
        log_path = control(cfg.tickerplant.ctl, "status")["log"]
        wait_for(settled, timeout=20, what="the flatten orders to be done")

        live = rdb_rows(cfg, "select tag, sym, side, qty, type, tif, price from \"order\" where parent = '' "
                             "and strategy = 'pairs' qualify row_number() over (partition by id order by time) = 1")
        fills = rdb_rows(cfg, "select sym, sum(case when side = 'buy' then qty else -qty end) as pos, "
                              "count(*) as n from execution where strategy = 'pairs' group by sym")
    finally:
        procs.stop_all()

    bt = PairsStrategy(**PARAMS, sim=[SIM["syms"], SIM["seed"]])
    res = backtest(bt, LogSource(log_path, cfg.registry()))

    def key(tag):
        return int(tag.rsplit("-", 1)[1])

    def norm(price):
        return None if price is None or (isinstance(price, float) and math.isnan(price)) else round(price, 6)
    want = [(o.tag, o.sym, o.side, o.qty, o.type, o.tif, norm(o.price))
            for o in sorted(bt.orders.values(), key=lambda o: key(o.tag))]
    got = [(r["tag"], r["sym"], r["side"], r["qty"], r["type"], r["tif"], norm(r["price"]))
           for r in sorted(live, key=lambda r: key(r["tag"]))]
    assert len(want) >= 6, f"the day should make the strategy trade; it sent {want}"
    assert got == want
    # the decisions traded through the real venues, and both runs ended flat
    assert sum(r["n"] for r in fills) >= len(want) // 2
    assert all(r["pos"] == 0 for r in fills), fills
    assert res.fills.num_rows and not any(bt.positions.values())
