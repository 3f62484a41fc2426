"""The market simulator: the embedded default feed.

Prices. Each symbol's log mid is  m_s(t) = mu_s + b_s F(t) + l_s W_g(s)(t) [+ S_p(t)]:
  F    one market factor (Brownian), loadings b_s, so returns are correlated as designed
       (`MarketSim.return_corr` is the designed long-horizon correlation of log returns);
  W_g  an own Brownian trend per symbol, except that the second leg B of a designed pair shares
       its first leg A's trend, scaled by beta;
  S_p  for B only: an Ornstein-Uhlenbeck spread (half-life `half_life_s`), so
       log B - beta log A = const + S is stationary: A and B are cointegrated (`MarketSim.pairs`).
Volatility and activity follow a U-shaped intraday profile (busy at the open and the close).

Events. Arrivals are a Poisson process with that U-shaped intensity (mean `event_rate`/s of
simulated time); each event is a quote update or, with probability `trade_prob`, a trade, of a
symbol drawn by activity weight. Quotes are tick-sized around the mid, the spread (in ticks)
widening with volatility; sizes are round lots from a lognormal; trades print at the bid or ask
(sometimes inside), sizes lognormal, mostly round lots.

Everything is generated in vectorised blocks (no per-event Python) and is deterministic for a
seed. `step(n)` advances the simulator's own clock; `step(n, until=ns)` spreads the n events
over the wall-clock interval since the previous step instead (what `run_sim` does for a live
feed, so the times are now).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

NS = 1_000_000_000
SESSION_S = 6.5 * 3600                      # one trading session of simulated time
DEFAULT_START = np.datetime64("2024-01-02T14:30:00", "ns").astype(np.int64)  # 09:30 New York
_U_AMPL = 2.0                               # U-shape: intensity 0.33x midday .. 2.33x at the ends
_BLOCK = 1 << 16                            # events per internal block (bounds memory)


class Pair(NamedTuple):
    """A designed cointegrated pair: log(b) = c + beta * log(a) + OU spread."""
    a: str
    b: str
    beta: float
    half_life_s: float


def _u(x: np.ndarray) -> np.ndarray:
    """Intraday profile at session position x in [0, 1); mean 1 over the session."""
    return 1.0 + _U_AMPL * ((2.0 * x - 1.0) ** 2 - 1.0 / 3.0)


def _u_integral(x: np.ndarray) -> np.ndarray:
    """Integral of _u from 0 to x (equals 1 at x = 1)."""
    return x + _U_AMPL * (((2.0 * x - 1.0) ** 3 + 1.0) / 6.0 - x / 3.0)


def _sym_names(n: int) -> list[str]:
    return [f"S{i:03d}" if n <= 1000 else f"S{i:05d}" for i in range(n)]


def _segment_cumsum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at every index in `starts` (sorted, starting with 0)."""
    cs = np.cumsum(values)
    base = np.repeat(np.concatenate(([0.0], cs[starts[1:] - 1])), np.diff(np.append(starts, len(values))))
    return cs - base


class MarketSim:
    """`MarketSim(syms, seed=42, ...)`; `step(n_events) -> {"quote": {...}, "trade": {...}}`."""

    def __init__(self, syms: int | list[str], seed: int = 42, *,
                 event_rate: float = 1000.0,        # mean events per second of simulated time
                 start_ns: int | None = None,       # the simulated clock's start (UTC ns)
                 n_pairs: int | None = None,        # default: one pair per 5 symbols (at least 1 if >= 2)
                 factor_vol: float = 0.20,          # annualised vol of the market factor
                 idio_vol: tuple[float, float] = (0.15, 0.35),   # range of own-trend vols
                 loading: tuple[float, float] = (0.7, 1.3),      # range of factor loadings
                 half_life_s: float = 120.0,        # OU spread half-life of each pair
                 spread_vol: float = 0.004,         # stationary stdev of each pair's log spread
                 trade_prob: float = 0.2,
                 tick: float = 0.01,
                 spread_bps: float = 3.0):          # typical quoted spread at normal volatility
        rng = np.random.default_rng(seed)
        self.syms = list(syms) if not isinstance(syms, (int, np.integer)) else _sym_names(int(syms))
        n = len(self.syms)
        if n < 1 or len(set(self.syms)) != n:
            raise ValueError("syms must be a positive count or a list of distinct names")
        if event_rate <= 0:
            raise ValueError("event_rate must be > 0")
        self._rng = rng
        self.event_rate = float(event_rate)
        self.trade_prob = float(trade_prob)
        self.tick = float(tick)
        self._tick_dec = max(0, -int(math.floor(math.log10(tick) + 1e-9)))
        self._start = int(DEFAULT_START if start_ns is None else start_ns)
        self._now = self._start                  # simulated clock, ns
        self._t_last = 0.0                       # seconds since start of the last event
        year = 252 * SESSION_S                   # vols are per trading-time year
        self._sig_f = factor_vol / math.sqrt(year)
        self._beta_f = rng.uniform(*loading, n)
        self._sig_w = rng.uniform(*idio_vol, n) / math.sqrt(year)

        # Pairs: disjoint (a, b) among the symbols; b shares a's trend with loading beta.
        n_pairs = (n // 5 if n >= 5 else (1 if n >= 2 else 0)) if n_pairs is None else n_pairs
        if 2 * n_pairs > n:
            raise ValueError(f"{n_pairs} pairs need {2 * n_pairs} symbols, have {n}")
        order = rng.permutation(n)
        a_idx, b_idx = order[:n_pairs], order[n_pairs: 2 * n_pairs]
        hedge = rng.uniform(0.6, 1.5, n_pairs)
        self._group = np.arange(n)               # whose trend W each symbol follows
        self._w_load = np.ones(n)
        self._group[b_idx] = a_idx
        self._w_load[b_idx] = hedge
        self._beta_f[b_idx] = hedge * self._beta_f[a_idx]     # so B - beta A has no factor
        self._pair_of = np.full(n, -1)
        self._pair_of[b_idx] = np.arange(n_pairs)
        self._kappa = math.log(2) / half_life_s
        self._sig_s = spread_vol * math.sqrt(2 * self._kappa)
        self.pairs = [Pair(self.syms[a], self.syms[b], float(h), float(half_life_s))
                      for a, b, h in zip(a_idx, b_idx, hedge)]

        mu = np.log(rng.lognormal(math.log(60), 0.7, n).clip(5, 2000))
        mu[b_idx] = rng.normal(0, 0.3, n_pairs) + hedge * mu[a_idx]   # log B = c + beta log A
        self._mu = mu
        self._spread_bps = spread_bps * rng.uniform(0.5, 2.0, n)
        w = rng.pareto(1.5, n) + 1.0             # a few symbols much busier than the rest
        self._weights = w / w.sum()
        # Process state carried between blocks.
        self._f = 0.0
        self._w = np.zeros(n)
        self._w_time = np.zeros(n)
        self._s = rng.normal(0, spread_vol, n_pairs)
        self._s_time = np.zeros(n_pairs)
        # Inverse of the cumulative intensity over one session, for time-changed arrivals.
        self._grid_x = np.linspace(0.0, 1.0, 20_001)
        self._grid_u = _u_integral(self._grid_x)
        self._lambda_pos = 0.0                    # cumulative intensity consumed, in sessions

    # ----------------------------------------------------------------- design facts

    @property
    def return_corr(self) -> np.ndarray:
        """Designed correlation of long-horizon log returns between symbols (OU spreads are
        bounded, so over long horizons only the factor and the shared trends count)."""
        load_f = self._beta_f[:, None] * self._sig_f
        g = self._group
        var_w = (self._w_load * self._sig_w[g]) ** 2
        cov = load_f @ load_f.T
        same = g[:, None] == g[None, :]
        cov = cov + same * np.outer(self._w_load * self._sig_w[g], self._w_load * self._sig_w[g])
        sd = np.sqrt(load_f[:, 0] ** 2 + var_w)
        return cov / np.outer(sd, sd)

    @property
    def now_ns(self) -> int:
        return self._now

    # ----------------------------------------------------------------- events

    def step(self, n_events: int, until: int | None = None) -> dict[str, dict[str, np.ndarray]]:
        """The next `n_events` events as {"quote": columns, "trade": columns}, each in time
        order, columns exactly as in schemas/tables.toml. With `until` (UTC ns), the events are
        spread uniformly over (previous step's end, until] instead of the simulated clock."""
        n_events = int(n_events)
        if n_events < 0:
            raise ValueError("n_events must be >= 0")
        if until is not None and until < self._now:
            until = self._now
        outs = []
        done = 0
        lo_ns = self._now
        while done < n_events or not outs:
            k = min(_BLOCK, n_events - done)
            if until is not None:
                # This sub-block's share of the wall-clock interval.
                hi_ns = lo_ns + (until - lo_ns) * k // max(1, n_events - done) if k else until
                outs.append(self._block(k, lo_ns, hi_ns))
                lo_ns = hi_ns
            else:
                outs.append(self._block(k, None, None))
            done += k
            if k == 0:
                break
        if until is not None:
            self._now = max(self._now, until)
        if len(outs) == 1:
            return outs[0]
        return {t: {c: np.concatenate([o[t][c] for o in outs]) for c in outs[0][t]} for t in outs[0]}

    def _times(self, k: int, lo_ns: int | None, hi_ns: int | None) -> np.ndarray:
        """Event times (ns) of the next k events."""
        rng = self._rng
        if lo_ns is not None:
            t = np.sort(rng.integers(lo_ns + 1, max(hi_ns, lo_ns + 1) + 1, k))
            return t
        # Time change: unit-rate arrivals in "intensity" time, mapped back through the inverse
        # cumulative U-profile, so arrivals are Poisson with intensity event_rate * u(x).
        per_session = self.event_rate * SESSION_S
        pos = self._lambda_pos + np.cumsum(rng.exponential(1.0, k)) / per_session
        self._lambda_pos = float(pos[-1]) if k else self._lambda_pos
        whole = np.floor(pos)
        x = np.interp(pos - whole, self._grid_u, self._grid_x)
        t = self._start + np.round((whole + x) * SESSION_S * NS).astype(np.int64)
        return np.maximum.accumulate(np.maximum(t, self._now))

    def _block(self, k: int, lo_ns: int | None, hi_ns: int | None) -> dict[str, dict[str, np.ndarray]]:
        rng = self._rng
        times = self._times(k, lo_ns, hi_ns)
        if k:
            self._now = int(times[-1])
        ts = (times - self._start) / NS                     # seconds since start, float
        x = (ts / SESSION_S) % 1.0
        vol = np.sqrt(_u(x))                                # intraday volatility multiplier
        sym = rng.choice(len(self.syms), size=k, p=self._weights)

        # Market factor at every event time.
        dt = np.diff(ts, prepend=self._t_last).clip(0)
        f = self._f + np.cumsum(self._sig_f * vol * np.sqrt(dt) * rng.standard_normal(k))
        if k:
            self._f, self._t_last = float(f[-1]), float(ts[-1])

        # Own trends, evaluated per trend group at that group's event times.
        g = self._group[sym]
        w_at = self._segmented_walk(g, ts, vol, self._w, self._w_time, self._sig_w)
        logmid = self._mu[sym] + self._beta_f[sym] * f + self._w_load[sym] * w_at

        # OU spreads for the B legs of pairs.
        p = self._pair_of[sym]
        isb = p >= 0
        if isb.any():
            logmid[isb] += self._ou(p[isb], ts[isb])

        return self._quotes_and_trades(times, sym, logmid, vol)

    def _segmented_walk(self, g, ts, vol, level, last_t, sig) -> np.ndarray:
        """Brownian paths, one per group, sampled at each event of that group (vectorised)."""
        k = len(g)
        if not k:
            return np.zeros(0)
        order = np.argsort(g, kind="stable")
        gs, tso = g[order], ts[order]
        starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        prev = np.r_[tso[0], tso[:-1]]
        prev[starts] = last_t[gs[starts]]
        dt = (tso - prev).clip(0)
        inc = sig[gs] * vol[order] * np.sqrt(dt) * self._rng.standard_normal(k)
        path = level[gs] + _segment_cumsum(inc, starts)
        ends = np.r_[starts[1:] - 1, k - 1]
        level[gs[ends]] = path[ends]
        last_t[gs[ends]] = tso[ends]
        out = np.empty(k)
        out[order] = path
        return out

    def _ou(self, p: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Exact OU spread per pair at the given times, via S_k e^{kt_k} = S_0 e^{kt_0} +
        cumsum(sd_j Z_j e^{kt_j}), in chunks short enough that the exponentials stay small."""
        kap = self._kappa
        order = np.argsort(p, kind="stable")
        ps, tso = p[order], ts[order]
        out_sorted = np.empty(len(ps))
        z = self._rng.standard_normal(len(ps))
        starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
        ends = np.r_[starts[1:], len(ps)]
        for lo, hi in zip(starts, ends):        # one iteration per pair present, not per event
            pid = ps[lo]
            t, zz = tso[lo:hi], z[lo:hi]
            s0, t0 = self._s[pid], self._s_time[pid]
            i = 0
            while i < len(t):
                # keep kappa * (t - tref) <= 20 within a chunk
                j = i + int(np.searchsorted(t[i:], t[i] + 20.0 / kap, side="right"))
                tt, zc = t[i:j], zz[i:j]
                dt = np.diff(tt, prepend=t0).clip(0)
                sd = self._sig_s * np.sqrt(-np.expm1(-2 * kap * dt) / (2 * kap))
                e = np.exp(kap * (tt - tt[0]))         # relative to the chunk's first event
                s = (s0 * math.exp(-kap * max(0.0, tt[0] - t0)) + np.cumsum(sd * zc * e)) / e
                out_sorted[lo + i: lo + j] = s
                s0, t0 = float(s[-1]), float(tt[-1])
                i = j
            self._s[pid], self._s_time[pid] = s0, t0
        out = np.empty(len(p))
        out[order] = out_sorted
        return out

    def _quotes_and_trades(self, times, sym, logmid, vol) -> dict[str, dict[str, np.ndarray]]:
        rng = self._rng
        k = len(times)
        mid = np.exp(logmid)
        tick = self.tick
        # Spread in ticks: proportional to price and volatility, noisy, at least one tick.
        width = mid * self._spread_bps[sym] * 1e-4 * vol * rng.gamma(2.0, 0.5, k) / tick
        spread = np.maximum(1, np.round(width)).astype(np.int64)
        bid_t = np.maximum(1, np.floor(mid / tick - spread / 2.0 + 0.5).astype(np.int64))
        ask_t = bid_t + spread
        bid = np.round(bid_t * tick, self._tick_dec)
        ask = np.round(ask_t * tick, self._tick_dec)
        is_trade = rng.random(k) < self.trade_prob
        names = np.asarray(self.syms)

        q = ~is_trade
        nq = int(q.sum())
        quote = {
            "time": times[q],
            "sym": names[sym[q]],
            "bid": bid[q],
            "ask": ask[q],
            "bsize": 100 * np.ceil(rng.lognormal(1.2, 0.8, nq)).astype(np.int64),
            "asize": 100 * np.ceil(rng.lognormal(1.2, 0.8, nq)).astype(np.int64),
        }
        tr = is_trade
        nt = int(tr.sum())
        u = rng.random(nt)
        buy = u < 0.45
        inside = u >= 0.9                         # midpoint / hidden liquidity prints
        px_t = np.where(buy, ask_t[tr], bid_t[tr])
        px_t = np.where(inside, (bid_t[tr] + ask_t[tr]) // 2, px_t)
        raw = rng.lognormal(4.2, 1.1, nt)
        lots = rng.random(nt) < 0.7
        size = np.where(lots, 100 * np.maximum(1, np.round(raw / 100)), np.maximum(1, np.round(raw)))
        trade = {
            "time": times[tr],
            "sym": names[sym[tr]],
            "price": np.round(px_t * tick, self._tick_dec),
            "size": size.astype(np.int64),
        }
        return {"quote": quote, "trade": trade}


def run_sim(cfg, syms: int | list[str] | None = None, rate: float | None = None,
            seconds: float | None = None, *, seed: int | None = None, feed=None,
            feed_id: int | None = None, stop=None, progress=None) -> dict:
    """Drive a Feed with the simulator at `rate` events/s (math.inf: as fast as the TP takes
    them) for `seconds` (None: until `stop()` returns True or KeyboardInterrupt). `syms`, `rate`
    and `seed` default (None) to the `[feed]` settings. Events are stamped with wall-clock time (each
    block spread over the interval since the previous one), so a live stack sees "now".
    Returns counts and the feed's stats."""
    from feedhandlers.base import Feed   # local: the simulator itself needs no ZeroMQ

    syms = cfg.feed.syms if syms is None else syms
    rate = cfg.feed.rate if rate is None else rate
    seed = cfg.feed.seed if seed is None else seed
    asap = math.isinf(rate)
    sim = MarketSim(syms, seed=seed, start_ns=time.time_ns(), event_rate=1e6 if asap else rate)
    own = feed is None
    feed = feed or Feed.from_config(cfg, feed_id)
    events = 0
    t0 = time.monotonic()
    # Pacing: one block per `dt` of wall time, sized to catch up with rate * elapsed; sleep in
    # between (never spin). Small rates get fewer, larger gaps; big rates 20 blocks/s.
    dt = 0.05 if asap else min(1.0, max(0.05, 1.0 / rate))
    try:
        while True:
            elapsed = time.monotonic() - t0
            if seconds is not None and elapsed >= seconds:
                break
            if stop is not None and stop():
                break
            if asap:
                n = 20_000
                cols = sim.step(n, until=time.time_ns())
            else:
                target = int(rate * min(elapsed + dt, seconds if seconds is not None else math.inf))
                n = max(0, target - events)
                cols = sim.step(n, until=time.time_ns()) if n else None
            if cols:
                for table, c in cols.items():
                    if len(c["time"]):
                        feed.publish(table, c)
                events += n
                if progress is not None:
                    progress(n)
            if not asap:
                wait = t0 + elapsed + dt - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
    except KeyboardInterrupt:
        pass
    finally:
        if own:
            feed.close()
        else:
            feed.flush()
    wall = time.monotonic() - t0
    return {"events": events, "seconds": wall, "rate": events / wall if wall else 0.0,
            "stats": feed.stats()}
