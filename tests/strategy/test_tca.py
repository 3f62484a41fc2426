"""TCA, PnL, Sharpe and drawdown against figures computed by hand / directly with pandas."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from gateway.config import VenueSettings
from strategy.api import Strategy
from strategy.backtest import run
from strategy.config import BacktestSettings
from strategy.results import max_drawdown, sharpe
from strategy.sources import TableSource

NS = 1_000_000_000
T0 = 1_704_205_800 * NS
# (seconds after T0, bid, ask)
QUOTES = [(0, 100.00, 100.10), (1, 100.10, 100.20), (2, 100.30, 100.40), (11, 100.50, 100.60),
          (60, 99.90, 100.00), (62, 101.00, 101.10), (200, 100.00, 100.10)]
FEE_BPS, FEE_PER_SHARE = 1.0, 0.01


class Scripted(Strategy):
    """At 1 s: buy 100 at market. At 2 s: buy 50 limit 100.00 (rests; the 60 s quote crosses
    it). At 62 s: sell 100 limit 100.50 (takes the 101.00 bid)."""
    name = "scripted"
    syms = ["X"]

    def on_quote(self, q):
        s = (q.time - T0) // NS
        if s == 1:
            self.buy("X", 100)
        elif s == 2:
            self.buy("X", 50, 100.00)
        elif s == 62:
            self.sell("X", 100, 100.50)


def quotes():
    return {"time": np.array([T0 + s * NS for s, _, _ in QUOTES], np.int64),
            "sym": np.array(["X"] * len(QUOTES)), "bid": np.array([b for _, b, _ in QUOTES]),
            "ask": np.array([a for _, _, a in QUOTES]), "bsize": np.full(len(QUOTES), 1000),
            "asize": np.full(len(QUOTES), 1000)}


def settings(**kw):
    venue = VenueSettings(name="A", taker_fee_bps=FEE_BPS, taker_fee_per_share=FEE_PER_SHARE, latency_ms=0)
    return BacktestSettings(venues={"A": venue}, pnl_interval_s=10.0, **kw)


def test_fill_tca_matches_figures_worked_out_by_hand():
    res = run(Scripted(), TableSource(quotes()), settings(), mode="event")
    f = res.fills.to_pandas().set_index("tag")
    assert list(f["price"]) == [100.20, 100.00, 101.00]          # ask, own limit (resting), bid
    buy, rest, sell = f.loc["scripted-1"], f.loc["scripted-2"], f.loc["scripted-3"]
    bps = 1e4
    # market buy at 1 s: arrival mid 100.15, fills at the 100.20 ask
    assert buy["arrival_mid"] == pytest.approx(100.15)
    assert buy["slippage_arrival_bps"] == pytest.approx((100.20 - 100.15) / 100.15 * bps)
    assert buy["slippage_mid_bps"] == pytest.approx((100.20 - 100.15) / 100.15 * bps)
    assert buy["markout_1s_bps"] == pytest.approx((100.35 - 100.20) / 100.20 * bps)    # mid at 2 s
    assert buy["markout_10s_bps"] == pytest.approx((100.55 - 100.20) / 100.20 * bps)   # as of 11 s
    assert buy["markout_60s_bps"] == pytest.approx((99.95 - 100.20) / 100.20 * bps)    # as of 61 s
    assert buy["fee"] == pytest.approx(100 * FEE_PER_SHARE + 100 * 100.20 * FEE_BPS / bps)
    # resting buy sent at 2 s (mid 100.35), crossed by the 60 s quote: fills at its limit, maker (no fee)
    assert rest["time"] == T0 + 60 * NS and rest["fee"] == 0.0
    assert rest["slippage_arrival_bps"] == pytest.approx((100.00 - 100.35) / 100.35 * bps)
    assert rest["slippage_mid_bps"] == pytest.approx((100.00 - 99.95) / 99.95 * bps)
    assert rest["markout_1s_bps"] == pytest.approx((99.95 - 100.00) / 100.00 * bps)
    assert rest["markout_10s_bps"] == pytest.approx((101.05 - 100.00) / 100.00 * bps)
    # the sell at 62 s takes the 101.00 bid: a cost of half the spread
    assert sell["slippage_arrival_bps"] == pytest.approx(-(101.00 - 101.05) / 101.05 * bps)
    assert sell["markout_60s_bps"] == pytest.approx(-(101.05 - 101.00) / 101.00 * bps)
    assert sell["fee"] == pytest.approx(100 * FEE_PER_SHARE + 100 * 101.00 * FEE_BPS / bps)

    tca = res.tca.to_pandas().set_index("tag")
    assert tca.loc["scripted-1", "shortfall"] == pytest.approx((100.20 - 100.15) * 100 + buy["fee"])
    assert tca.loc["scripted-2", "fill_rate"] == 1.0
    assert set(res.tca_orders.column("order_id").to_pylist()) == set(f["order_id"])

    fees = buy["fee"] + sell["fee"]
    gross = -100 * 100.20 - 50 * 100.00 + 100 * 101.00 + 50 * 100.05   # cash + 50 long at the last mid
    s = res.summary
    assert s["gross_pnl"] == pytest.approx(gross)
    assert s["fees"] == pytest.approx(fees)
    assert s["net_pnl"] == pytest.approx(gross - fees)
    assert s["positions"] == {"X": 50}
    assert s["traded_notional"] == pytest.approx(100 * 100.20 + 50 * 100.00 + 100 * 101.00)


def test_markouts_past_the_end_of_the_data_are_unknown():
    q = quotes()
    q = {k: v[:6] for k, v in q.items()}                  # data ends at 62 s
    res = run(Scripted(), TableSource(q), settings(), mode="event")
    sell = res.fills.to_pandas().set_index("tag").loc["scripted-3"]
    assert math.isnan(sell["markout_1s_bps"]) and math.isnan(sell["markout_60s_bps"])


def test_sharpe_and_drawdown_agree_with_pandas_on_the_pnl_curve():
    res = run(Scripted(), TableSource(quotes()), settings(), mode="event")
    pnl = res.pnl.to_pandas()
    steps = np.diff(pnl["time"].to_numpy())
    assert (steps[1:-1] == 10 * NS).all()                 # the grid: every 10 s of data time
    net = pnl["net"]
    per_year = 252 * 6.5 * 3600 / 10.0
    d = net.diff().dropna()
    assert res.summary["sharpe"] == pytest.approx(d.mean() / d.std() * math.sqrt(per_year))
    dd = (net.clip(lower=0).cummax() - net).max()
    assert res.summary["max_drawdown"] == pytest.approx(dd)
    # the curve is cash + position x mid at each grid time
    fills = res.fills.to_pandas()
    mids = pd.Series([(b + a) / 2 for _, b, a in QUOTES], index=[T0 + s * NS for s, _, _ in QUOTES])
    for _, row in pnl.iterrows():
        done = fills[fills["time"] <= row["time"]]
        sign = np.where(done["side"] == "buy", 1, -1)
        pos = int((sign * done["qty"]).sum())
        cash = float(-(sign * done["qty"] * done["price"]).sum())
        mid = mids[mids.index <= row["time"]].iloc[-1]
        assert row["gross"] == pytest.approx(cash + pos * mid)
        assert row["fees"] == pytest.approx(done["fee"].sum())


def test_sharpe_and_drawdown_functions_against_pandas():
    rng = np.random.default_rng(5)
    pnl = np.cumsum(rng.normal(0.1, 1.0, 500))
    s = pd.Series(pnl)
    assert sharpe(pnl, 252) == pytest.approx(s.diff().mean() / s.diff().std() * math.sqrt(252))
    assert max_drawdown(pnl) == pytest.approx((s.clip(lower=0).cummax() - s).max())
    assert max_drawdown(np.array([-1.0, -3.0, 2.0, 1.0])) == 3.0   # the peak starts at 0
