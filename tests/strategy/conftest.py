"""A small simulated history for the strategy tests: four 'days' of MarketSim (8 syms, two
designed cointegrated pairs) saved into an HDB with hdb.eod.save_day. Each day is a block of
200k events (~2.8 h of simulated time at 20 events/s): enough for Engle-Granger to tell the
designed pairs from the rest, small enough to keep the tests quick. Trends are made more
volatile than the feed's defaults so a few hours identify the hedge ratios."""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from feedhandlers.sim import MarketSim
from hdb.eod import save_day
from schemas.registry import load_registry

DAYS = [dt.date(2024, 1, 2) + dt.timedelta(days=i) for i in range(4)]
EVENTS_PER_DAY = 200_000


def make_sim() -> MarketSim:
    return MarketSim(8, seed=3, event_rate=20, n_pairs=2, idio_vol=(0.8, 1.6), factor_vol=0.5)


@pytest.fixture(scope="session")
def sim_hdb(tmp_path_factory):
    """(hdb_dir, designed pairs, the day to backtest, that day's columns {table: {col: array}})."""
    hdb = tmp_path_factory.mktemp("strategy") / "hdb"
    sim = make_sim()
    reg = load_registry()
    last = None
    for d in DAYS:
        last = sim.step(EVENTS_PER_DAY)
        save_day(hdb, d, {k: pa.table(v) for k, v in last.items()}, reg, progress=False)
    return hdb, sim.pairs, DAYS[-1], last
