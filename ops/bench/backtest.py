"""tickstack bench backtest: quotes/s through the pairs strategy, per-event API and batch API,
beside nautilus_trader's BacktestEngine running the same pairs logic on the same quotes in
the same run (when nautilus_trader is installed: pip install -e ".[bench]").

    python -m ops.bench.backtest                       # 1M quotes, 2 pairs
    python -m ops.bench.backtest --quotes 3000000 --pairs 4 --no-nautilus

The quotes are MarketSim's (only the pairs' legs, quotes only); the pairs are the simulator's
designed ones, fitted (OLS) on a history the strategies are seeded with. Both sides run the
same logic: log-mid z-score per quote, entry |z| > 2, exit |z| < 0.5, IOC limit orders on
both legs sized by notional, the legs sampled as data passes every 10 s and the hedge ratio
refit by rolling OLS every 6 samples.

What is timed. tickstack: `strategy.backtest.run(...)` whole: turning the columns into
chunks, the strategy, pre-trade risk, routing across two venues, both matching engines, and
building the result tables (fills, orders, TCA, PnL). nautilus: `engine.run()` only (building
its QuoteTick objects and `add_data` are not timed). Targets: per-event >= 3x nautilus,
batch >= 30x nautilus.
"""
from __future__ import annotations

import argparse
import math
import time
from collections import deque

import numpy as np

from feedhandlers.sim import MarketSim
from ops.bench.common import report
from strategy.cointegration import PairFit, grid, ols, snapshots

ENTRY, EXIT, SAMPLE_S, WINDOW, REFIT_EVERY, NOTIONAL, TOL_BPS = 2.0, 0.5, 10.0, 2340, 6, 10_000.0, 5.0


def make_data(pairs: int, quotes: int, seed: int):
    """(history snapshots, fits, quote columns of the legs)."""
    sim = MarketSim(2 * pairs, seed=seed, event_rate=200, n_pairs=pairs, trade_prob=0.0,
                    idio_vol=(0.8, 1.6), factor_vol=0.5)
    hist = sim.step(400_000)["quote"]
    at = grid(int(hist["time"][0]), int(hist["time"][-1]), SAMPLE_S)
    names = list(sim.syms)
    codes = np.searchsorted(np.array(names), hist["sym"])
    snaps = snapshots(hist["time"], codes, (hist["bid"] + hist["ask"]) * 0.5, names, at)
    fits = []
    for p in sim.pairs:
        ok = np.isfinite(snaps[p.a]) & np.isfinite(snaps[p.b])
        beta, alpha, sd = ols(snaps[p.a][ok], snaps[p.b][ok])
        fits.append(PairFit(p.a, p.b, beta, alpha, sd, 0.0, p.half_life_s))
    q = sim.step(quotes)["quote"]
    return snaps, fits, q


def arrow_quotes(q: dict):
    """The quotes as a pyarrow Table with the sym column dictionary-encoded, as the HDB's
    Parquet and the TP's batches carry it (not timed, like nautilus' QuoteTick building)."""
    import pyarrow as pa
    return pa.table({**{k: v for k, v in q.items() if k != "sym"},
                     "sym": pa.array(q["sym"].astype(object)).dictionary_encode()})


def run_tickstack(fits, snaps, q, mode: str):
    from strategy.backtest import run
    from strategy.examples.pairs import PairsStrategy
    from strategy.sources import TableSource
    st = PairsStrategy(pairs=fits, history=snaps, notional=NOTIONAL, entry_z=ENTRY, exit_z=EXIT,
                       sample_s=SAMPLE_S, window=WINDOW, refit_every=REFIT_EVERY, tol_bps=TOL_BPS,
                       flatten_on_stop=False)
    t0 = time.perf_counter()
    res = run(st, TableSource(q), mode=mode)
    return time.perf_counter() - t0, res.orders.num_rows, res.summary


def run_nautilus(fits, snaps, q):
    """engine.run() seconds and orders sent, or None when nautilus_trader is not installed."""
    try:
        import pandas as pd
        from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
        from nautilus_trader.config import LoggingConfig, StrategyConfig
        from nautilus_trader.model.currencies import USD
        from nautilus_trader.model.enums import AccountType, OmsType, OrderSide, TimeInForce
        from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
        from nautilus_trader.model.instruments import Equity
        from nautilus_trader.model.objects import Money, Price, Quantity
        from nautilus_trader.persistence.wranglers import QuoteTickDataWrangler
        from nautilus_trader.trading.strategy import Strategy as NStrategy
    except ImportError:
        return None

    venue = Venue("SIM")
    instruments = {}
    for s in sorted({x for f in fits for x in (f.a, f.b)}):
        instruments[s] = Equity(instrument_id=InstrumentId(Symbol(s), venue), raw_symbol=Symbol(s),
                                currency=USD, price_precision=2, price_increment=Price.from_str("0.01"),
                                lot_size=Quantity.from_int(1), ts_event=0, ts_init=0)

    class Pairs(NStrategy):
        """The same logic as strategy.examples.pairs (per event), on nautilus' API."""

        def setup(self):
            self.legs = {}
            self.pair_states = []
            for f in fits:
                p = {"f": f, "beta": f.beta, "alpha": f.alpha, "sd": f.sd, "la": math.nan, "lb": math.nan,
                     "target": 0, "book": (0, 0), "xs": deque(snaps[f.a][np.isfinite(snaps[f.a])].tolist(), WINDOW),
                     "ys": deque(snaps[f.b][np.isfinite(snaps[f.b])].tolist(), WINDOW)}
                self.pair_states.append(p)
                self.legs.setdefault(instruments[f.a].id, []).append((p, False))
                self.legs.setdefault(instruments[f.b].id, []).append((p, True))
            self.bid, self.ask, self.samples, self.sent = {}, {}, 0, 0
            self.step, self.grid = int(SAMPLE_S * 1e9), None

        def on_start(self):
            for iid in self.legs:
                self.subscribe_quote_ticks(iid)

        def on_quote_tick(self, tick):
            iid = tick.instrument_id
            t = tick.ts_event
            if self.grid is None:
                self.grid = -(-t // self.step) * self.step
            while self.grid < t:
                self.on_sample()
                self.grid += self.step
            bid, ask = tick.bid_price.as_double(), tick.ask_price.as_double()
            if not (bid > 0 and ask > 0):
                return
            self.bid[iid], self.ask[iid] = bid, ask
            lm = math.log((bid + ask) * 0.5)
            for p, isb in self.legs[iid]:
                if isb:
                    p["lb"] = lm
                else:
                    p["la"] = lm
                z = (p["lb"] - p["beta"] * p["la"] - p["alpha"]) / p["sd"]
                if z != z:
                    continue
                tgt = p["target"]
                new = -1 if z > ENTRY else 1 if z < -ENTRY else 0 if abs(z) < EXIT else tgt
                if new != tgt:
                    self.retarget(p, new)

        def retarget(self, p, new):
            p["target"] = new
            f = p["f"]
            ia, ib = instruments[f.a].id, instruments[f.b].id
            if new == 0:
                na = nb = 0
            else:
                if ia not in self.bid or ib not in self.bid:
                    return
                mb = (self.bid[ib] + self.ask[ib]) * 0.5
                ma = (self.bid[ia] + self.ask[ia]) * 0.5
                nb = max(1, round(NOTIONAL / mb))
                na = max(1, round(p["beta"] * NOTIONAL / ma))
                na, nb = (-na, nb) if new > 0 else (na, -nb)
            for iid, d in ((ia, na - p["book"][0]), (ib, nb - p["book"][1])):
                if d:
                    buy = d > 0
                    px = self.ask[iid] * (1 + TOL_BPS * 1e-4) if buy else self.bid[iid] * (1 - TOL_BPS * 1e-4)
                    order = self.order_factory.limit(iid, OrderSide.BUY if buy else OrderSide.SELL,
                                                     Quantity.from_int(abs(d)), Price(round(px, 2), 2),
                                                     time_in_force=TimeInForce.IOC)
                    self.submit_order(order)
                    self.sent += 1
            p["book"] = (na, nb)

        def on_sample(self):
            self.samples += 1
            refit = self.samples % REFIT_EVERY == 0
            for p in self.pair_states:
                if p["la"] == p["la"] and p["lb"] == p["lb"]:
                    p["xs"].append(p["la"])
                    p["ys"].append(p["lb"])
                if refit and len(p["xs"]) >= 100:
                    beta, alpha, sd = ols(np.fromiter(p["xs"], float), np.fromiter(p["ys"], float))
                    if beta > 0 and sd > 0:
                        p["beta"], p["alpha"], p["sd"] = beta, alpha, sd

    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(venue, oms_type=OmsType.NETTING, account_type=AccountType.MARGIN,
                     starting_balances=[Money(10_000_000, USD)], base_currency=USD)
    for inst in instruments.values():
        engine.add_instrument(inst)
    ticks = []
    for s, inst in instruments.items():
        m = q["sym"] == s
        df = pd.DataFrame({"bid_price": q["bid"][m], "ask_price": q["ask"][m],
                           "bid_size": q["bsize"][m].astype(float), "ask_size": q["asize"][m].astype(float)},
                          index=pd.to_datetime(q["time"][m], utc=True))
        ticks += QuoteTickDataWrangler(inst).process(df)
    engine.add_data(ticks)
    st = Pairs(StrategyConfig())
    st.setup()
    engine.add_strategy(st)
    t0 = time.perf_counter()
    engine.run()
    secs = time.perf_counter() - t0
    engine.dispose()
    return secs, st.sent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench backtest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quotes", type=int, default=1_000_000, help="quotes to replay (default 1M)")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the best of each counts")
    ap.add_argument("--no-nautilus", action="store_true", help="skip the nautilus_trader baseline")
    a = ap.parse_args(argv)
    snaps, fits, q = make_data(a.pairs, a.quotes, a.seed)
    n = len(q["time"])
    print(f"{n:,} quotes of {2 * a.pairs} syms ({a.pairs} designed pairs), sim time "
          f"{(q['time'][-1] - q['time'][0]) / 1e9 / 3600:.1f} h", flush=True)
    table = arrow_quotes(q)
    best = {"event": math.inf, "batch": math.inf, "nautilus": math.inf}
    orders, gross = {}, {}
    have_nautilus = not a.no_nautilus
    # interleaved rounds, best of each: the machine is shared and its load moves
    for _ in range(a.repeat):
        for mode in ("event", "batch"):
            secs, n_orders, summary = run_tickstack(fits, snaps, table, mode)
            best[mode] = min(best[mode], secs)
            orders[mode], gross[mode] = n_orders, summary["gross_pnl"]
        if have_nautilus:
            nt = run_nautilus(fits, snaps, q)
            if nt is None:
                have_nautilus = False
                print("nautilus_trader is not installed: pip install -e \".[bench]\" (or pip install "
                      "nautilus_trader) for the same-run baseline")
            else:
                best["nautilus"] = min(best["nautilus"], nt[0])
                orders["nautilus"] = nt[1]
    print(f"best of {a.repeat}: tickstack per-event {best['event']:.2f} s ({orders['event']} orders, gross "
          f"{gross['event']:,.0f}), batch {best['batch']:.2f} s ({orders['batch']} orders, gross "
          f"{gross['batch']:,.0f})" + (f", nautilus_trader BacktestEngine.run {best['nautilus']:.2f} s "
                                       f"({orders['nautilus']} orders)" if have_nautilus else ""), flush=True)
    if not have_nautilus:
        print(f"{'backtest pairs, per-event API':<44} tickstack {n / best['event']:>14,.0f} quotes/s")
        print(f"{'backtest pairs, batch API':<44} tickstack {n / best['batch']:>14,.0f} quotes/s")
        return
    report("backtest pairs, per-event API vs nautilus", n / best["event"], n / best["nautilus"], "quotes/s", ">= 3x")
    report("backtest pairs, batch API vs nautilus", n / best["batch"], n / best["nautilus"], "quotes/s", ">= 30x")


if __name__ == "__main__":
    main()
