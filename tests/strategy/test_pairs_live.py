"""What pairs does live on a fresh home: without history it trades the simulator's designed
pairs (the stack's [feed] syms and seed), with the designed hedge ratios and spreads measured
on a warm-up of the same simulator; `warmup_s` keeps it out of the first seconds of data, the
same way per event and in batch."""
from __future__ import annotations

import math

import numpy as np
import pytest

from feedhandlers.sim import MarketSim
from gateway.config import VenueSettings
from gateway.risk import RiskSettings
from strategy.backtest import run
from strategy.config import BacktestSettings
from strategy.examples.pairs import PairsStrategy, designed_pairs
from strategy.sources import TableSource


def test_designed_pairs_are_the_simulators():
    fits = designed_pairs(20, 42)
    sim = MarketSim(20, seed=42)
    assert [(f.a, f.b, f.beta) for f in fits] == [(p.a, p.b, p.beta) for p in sim.pairs]
    # the spread of a pair is stationary around alpha with about the designed sd (0.004)
    assert all(0.002 < f.sd < 0.006 and math.isfinite(f.alpha) for f in fits)


def test_no_history_and_the_simulator_named_trades_its_designed_pairs(tmp_path):
    st = PairsStrategy(sim=[20, 42])
    sim = MarketSim(20, seed=42, start_ns=1_704_205_800 * 10**9, event_rate=50)
    res = run(st, TableSource(**sim.step(20_000)), hdb_dir=tmp_path)      # an empty HDB
    assert {(f.a, f.b) for f in st.fits} == {(p.a, p.b) for p in sim.pairs}
    assert res.summary["orders"] >= 2
    with pytest.raises(ValueError, match=r"pass pairs="):
        run(PairsStrategy(), TableSource(**sim.step(100)), hdb_dir=tmp_path)


def test_warmup_is_the_same_per_event_and_in_batch():
    sim = MarketSim(20, seed=42, start_ns=1_704_205_800 * 10**9, event_rate=200)
    data = sim.step(30_000)
    first = int(data["quote"]["time"][0])
    settings = BacktestSettings(venues={"A": VenueSettings(name="A", latency_ms=0)},
                                risk=RiskSettings(max_quote_age_ms=None))
    orders = {}
    for mode in ("event", "batch"):
        st = PairsStrategy(sim=[20, 42], entry_z=0.7, exit_z=0.2, sample_s=1.0, warmup_s=20.0,
                           notional=500.0, flatten_on_stop=False)
        res = run(st, TableSource(**data, chunk_rows=3_000), settings, mode=mode)
        orders[mode] = res.orders.to_pandas()[["tag", "time", "sym", "side", "qty", "price"]]
    assert len(orders["event"]) >= 4
    assert (orders["event"]["time"] >= first + 20 * 10**9).all()
    assert orders["event"].equals(orders["batch"])
