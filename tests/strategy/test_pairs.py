"""The pairs example on simulated history: it finds the simulator's designed cointegrated
pairs, trades them profitably before costs, decides the same per event and in batch, and
unwinds a leg that fails."""
from __future__ import annotations

import numpy as np
import pytest

from gateway.config import VenueSettings
from gateway.risk import RiskSettings
from strategy.backtest import run
from strategy.config import BacktestSettings
from strategy.examples.pairs import PairsStrategy
from strategy.sources import HdbSource, TableSource


def unordered(pairs):
    return {frozenset((p.a, p.b)) for p in pairs}


def test_pairs_finds_the_designed_pairs_and_trades_them_profitably_before_costs(sim_hdb):
    hdb, designed, day, _ = sim_hdb
    st = PairsStrategy()
    res = run(st, HdbSource(hdb, day), hdb_dir=hdb)
    assert unordered(st.fits) == unordered(designed)
    for f in st.fits:                      # the hedge ratio as designed, either way round
        d = next(p for p in designed if {p.a, p.b} == {f.a, f.b})
        assert f.beta == pytest.approx(d.beta if f.b == d.b else 1 / d.beta, rel=0.1)
    s = res.summary
    assert s["fills"] >= 40 and s["orders"] >= 40
    assert s["gross_pnl"] > 0, s
    traded = set(res.fills.column("sym").to_pylist())
    assert traded <= {x for p in designed for x in (p.a, p.b)}


def _quiet_settings():
    # one venue answering at once and no quote-age limit, so every leg fills as sent and the
    # comparison is about decisions only
    return BacktestSettings(venues={"A": VenueSettings(name="A", latency_ms=0, taker_fee_bps=0.3)},
                            risk=RiskSettings(max_quote_age_ms=None))


def _decisions(res):
    o = res.orders.to_pandas()
    return o[["tag", "time", "sym", "side", "qty", "price", "status", "cum_qty", "avg_px"]]


def test_per_event_and_batch_make_the_same_decisions(sim_hdb):
    hdb, designed, day, _ = sim_hdb
    pairs = [(p.a, p.b) for p in designed]
    runs = {}
    for mode in ("event", "batch"):
        st = PairsStrategy(pairs=pairs, notional=500.0, flatten_on_stop=False)
        runs[mode] = run(st, HdbSource(hdb, day, chunk_rows=20_000), _quiet_settings(), mode=mode,
                         hdb_dir=hdb)
    ev, bt = runs["event"], runs["batch"]
    assert ev.summary["mode"] == "event" and bt.summary["mode"] == "batch"
    assert ev.summary["counters"]["batches"] == 0 and bt.summary["counters"]["events"] == 0
    assert set(ev.orders.column("status").to_pylist()) == {"FILLED"}   # nothing failed
    assert ev.orders.num_rows >= 20
    assert _decisions(ev).equals(_decisions(bt))
    assert ev.fills.to_pandas().equals(bt.fills.to_pandas())
    assert ev.summary["gross_pnl"] == bt.summary["gross_pnl"]


def test_a_leg_that_fails_is_unwound(sim_hdb):
    hdb, designed, day, _ = sim_hdb
    p = designed[0]
    # every order for the b leg is denied by pre-trade risk: each entry's a leg must be undone
    settings = _quiet_settings().model_copy(
        update={"risk": RiskSettings(restricted=frozenset({p.b}), max_quote_age_ms=None)})
    st = PairsStrategy(pairs=[(p.a, p.b)], notional=500.0, flatten_on_stop=False)
    res = run(st, HdbSource(hdb, day), settings, mode="event", hdb_dir=hdb)
    o = res.orders.to_pandas()
    assert (o[o.sym == p.b].code == "restricted").all() and (o.sym == p.b).sum() >= 3
    fills = res.fills.to_pandas()
    assert set(fills.sym) == {p.a}
    pos = res.positions.to_pandas()
    # the a leg goes out with the (denied) b leg, then comes back to flat: every entry fill is
    # followed by an unwind fill of the opposite side, sent right after the denial
    assert len(fills) >= 2 and pos.position.iloc[-1] == 0
    signs = np.where(fills.side == "buy", 1, -1) * fills.qty
    assert np.all(np.abs(np.cumsum(signs)) <= fills.qty.max())
    entries, unwinds = fills.iloc[::2], fills.iloc[1::2]
    assert (entries.side.to_numpy() != unwinds.side.to_numpy()).all()
    assert ((unwinds.time.to_numpy() - entries.time.to_numpy()) < 5_000_000_000).all()


def test_a_tp_log_and_the_same_rows_in_memory_replay_alike(sim_hdb, tmp_path):
    """The TP log path (tickerplant.log.scan) gives the strategy the same data as the HDB."""
    from schemas.codec import encode
    from schemas.registry import load_registry
    from strategy.sources import LogSource
    from tickerplant.log import LogWriter

    hdb, designed, day, cols = sim_hdb
    reg = load_registry()
    path = tmp_path / "tp.log"
    w = LogWriter(path, day)
    q = cols["quote"]
    n = len(q["time"])
    step = 5000
    for a in range(0, n, step):        # quotes in TP-sized batches, in time order
        w.append([encode(reg["quote"], {k: v[a:a + step] for k, v in q.items()})])
    w.close()
    pairs = [(p.a, p.b) for p in designed]
    res_log = run(PairsStrategy(pairs=pairs, notional=500.0), LogSource(path, reg, chunk_rows=7000),
                  _quiet_settings(), mode="event", hdb_dir=hdb, date=day)
    res_mem = run(PairsStrategy(pairs=pairs, notional=500.0), TableSource(q, day=day, chunk_rows=9000),
                  _quiet_settings(), mode="event", hdb_dir=hdb, date=day)
    assert res_log.orders.num_rows >= 20
    assert _decisions(res_log).equals(_decisions(res_mem))
