"""Pair selection on history: log-mid snapshots on a time grid, the Engle-Granger
cointegration test, hedge ratios by OLS, the spread's mean-reversion half-life.

The Engle-Granger test is statsmodels' `coint` (OLS of y on x with a constant, then an ADF
test of the residuals with MacKinnon's p-values for a cointegrating regression). statsmodels
is the well-kept reference implementation; writing MacKinnon's response surfaces again would
be a second, less tested copy. The ADF lag order is fixed (`lags`, default 2) instead of
chosen by AIC over dozens of regressions: ~100x faster on a few thousand points, and the
snapshots of an OU spread are close to AR(1) anyway.

Snapshots: the log mid of each sym at every multiple of `sample_s` (UTC ns) within each day
of data, as of that time (the last quote stamped at or before it) - exactly what a strategy
timer firing on data time sees.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

NS = 1_000_000_000


class PairFit(NamedTuple):
    """y = b, x = a: log b = alpha + beta log a + spread. `pvalue` from Engle-Granger;
    `half_life_s` of the spread's mean reversion (AR(1) on the snapshots)."""
    a: str
    b: str
    beta: float
    alpha: float
    sd: float
    pvalue: float
    half_life_s: float


def grid(first: int, last: int, sample_s: float) -> np.ndarray:
    """Multiples of sample_s (ns) in [first, last]."""
    step = int(round(sample_s * NS))
    return np.arange(-(-first // step) * step, last + 1, step, dtype=np.int64)


def snapshots(times: np.ndarray, codes: np.ndarray, mids: np.ndarray, names: list[str],
              at: np.ndarray) -> dict[str, np.ndarray]:
    """sym -> log mid as of each time in `at` (NaN before the sym's first quote). `times` must
    be sorted within each sym (time order overall is fine)."""
    out = {}
    for c in np.unique(codes).tolist():
        m = codes == c
        t, v = times[m], mids[m]
        ok = np.isfinite(v) & (v > 0)
        t, v = t[ok], np.log(v[ok])
        i = np.searchsorted(t, at, "right") - 1
        s = np.full(len(at), np.nan)
        s[i >= 0] = v[i[i >= 0]]
        out[names[c]] = s
    return out


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(beta, alpha, residual sd) of y = alpha + beta x."""
    mx, my = x.mean(), y.mean()
    dx = x - mx
    vx = float(dx @ dx)
    if vx <= 0:
        return math.nan, math.nan, math.nan
    beta = float(dx @ (y - my)) / vx
    alpha = float(my - beta * mx)
    resid = y - alpha - beta * x
    return beta, alpha, float(resid.std())


def half_life(spread: np.ndarray, sample_s: float) -> float:
    """Mean-reversion half-life (s) of a sampled spread, from the AR(1) fit
    s[t] - s[t-1] = k (s[t-1] - mean) + e: half-life = -ln 2 / ln(1 + k) samples."""
    s = spread - spread.mean()
    lag, d = s[:-1], np.diff(s)
    v = float(lag @ lag)
    if v <= 0:
        return math.inf
    k = float(lag @ d) / v
    if not -1 < k < 0:
        return math.inf
    return -math.log(2) / math.log1p(k) * sample_s


def engle_granger(y: np.ndarray, x: np.ndarray, lags: int = 2) -> float:
    """p-value of Engle-Granger's test that y and x are cointegrated (small: they are)."""
    from statsmodels.tsa.stattools import coint
    return float(coint(y, x, trend="c", maxlag=lags, autolag=None)[1])


def select_pairs(snaps: dict[str, np.ndarray], sample_s: float, p_max: float = 1e-3,
                 max_half_life_s: float = 3600.0, max_pairs: int = 10, lags: int = 2
                 ) -> list[PairFit]:
    """Cointegrated pairs among the syms, best (smallest p-value) first, each sym in at most
    one pair. For each unordered pair both regressions are tested (y on x and x on y) and the
    one with the smaller p-value is kept. A pair passes with p < p_max (a Bonferroni-style
    bar: many pairs are tested) and a spread half-life under max_half_life_s."""
    syms = sorted(s for s, v in snaps.items() if np.isfinite(v).sum() > 50)
    cands = []
    for a, b in itertools.combinations(syms, 2):
        ok = np.isfinite(snaps[a]) & np.isfinite(snaps[b])
        if ok.sum() < 50:
            continue
        xa, xb = snaps[a][ok], snaps[b][ok]
        best = None
        for x, y, na, nb in ((xa, xb, a, b), (xb, xa, b, a)):
            p = engle_granger(y, x, lags)
            if best is None or p < best[0]:
                best = (p, x, y, na, nb)
        p, x, y, na, nb = best
        if not p < p_max:
            continue
        beta, alpha, sd = ols(x, y)
        if not (beta > 0 and sd > 0):
            continue
        hl = half_life(y - alpha - beta * x, sample_s)
        if hl > max_half_life_s:
            continue
        cands.append(PairFit(na, nb, beta, alpha, sd, p, hl))
    cands.sort(key=lambda f: (f.pvalue, f.a, f.b))
    used: set[str] = set()
    out = []
    for f in cands:
        if f.a in used or f.b in used:
            continue
        out.append(f)
        used |= {f.a, f.b}
        if len(out) >= max_pairs:
            break
    return out
