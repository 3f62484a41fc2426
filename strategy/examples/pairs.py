"""Pairs statistical arbitrage: trade the z-score of cointegrated pairs' spreads.

    tickstack backtest pairs --date 2024-01-05           # pairs picked from the days before
    run(PairsStrategy(pairs=[PairFit(...)]), source)     # or given

Selection (on_start, unless `pairs` is given): the `lookback_days` HDB days before the run's
first day are sampled every `sample_s` (log mids as of each grid time) and every pair of syms
is put to the Engle-Granger test (strategy.cointegration.select_pairs: p < `p_max`, spread
half-life < `max_half_life_s`, each sym in one pair at most). Those snapshots seed each pair's
rolling window.

Hedge ratio: rolling OLS of log b on log a (beta, alpha, residual sd) over the last `window`
snapshots, refit every `refit_every` snapshots. Snapshots and refits happen on a data-time
timer (every `sample_s`), so the fit is the same per event and in batch.

Signal: z = (log b - beta log a - alpha) / sd on every quote of either leg. The target is
short the spread (sell b, buy beta-weighted a) when z > entry_z, long when z < -entry_z, flat
when |z| < exit_z, else unchanged. A change of target sends both legs together: IOC limit
orders `tol_bps` through the touch, sized by notional (b: `notional`, a: beta x `notional`).

Legs that fail: when all of a pair's orders are done and its positions differ from the
target book, an entry or flip is unwound (the pair goes flat and waits for the next change of
target), an exit is retried for what is left (at most `max_retries` times in a row).
Decisions depend on the quotes and the book only, so the per-event (`on_quote`) and batch
(`on_quotes`) forms make the same decisions on the same data; they differ only in when they
react to order events (batch: after the batch).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
from collections import deque

import numpy as np

from strategy.api import Strategy
from strategy.cointegration import PairFit, grid, ols, select_pairs

log = logging.getLogger("strategy.pairs")


class _Pair:
    __slots__ = ("a", "b", "beta", "alpha", "sd", "la", "lb", "xs", "ys", "target", "book_a",
                 "book_b", "pos_a", "pos_b", "working", "retries", "ca", "cb", "fit", "off")

    def __init__(self, fit: PairFit, window: int):
        self.a, self.b, self.fit = fit.a, fit.b, fit
        self.beta, self.alpha, self.sd = fit.beta, fit.alpha, fit.sd
        self.la = self.lb = math.nan
        self.xs: deque = deque(maxlen=window)
        self.ys: deque = deque(maxlen=window)
        self.target = 0
        self.book_a = self.book_b = 0
        self.pos_a = self.pos_b = 0
        self.working: set[str] = set()
        self.retries = 0
        self.off = False                 # positions differ from the book: fix on the next sample
        self.ca = self.cb = -1


class PairsStrategy(Strategy):
    name = "pairs"
    pairs: list | None = None          # PairFit, or (a, b) to fit on history; None: select
    lookback_days: int = 3
    notional: float = 10_000.0         # per unit of spread: b's leg; a's leg is beta x this
    entry_z: float = 2.0
    exit_z: float = 0.5
    sample_s: float = 10.0
    window: int = 2340                 # snapshots in the rolling fit (one 6.5 h day at 10 s)
    refit_every: int = 6
    min_samples: int = 100
    tol_bps: float = 5.0
    p_max: float = 1e-3
    max_half_life_s: float = 3600.0
    max_pairs: int = 10
    max_retries: int = 3
    flatten_on_stop: bool = True
    history: dict | None = None        # sym -> log-mid snapshots to seed the windows (optional)

    def on_start(self) -> None:
        fits = self.pairs
        hist = self.history or {}
        if fits is None or any(not isinstance(f, PairFit) for f in fits):
            hist = self.load_history()
            if fits is None:
                fits = select_pairs(hist, self.sample_s, self.p_max, self.max_half_life_s, self.max_pairs)
            else:
                fits = [self._fit(a, b, hist) for a, b in fits]
            log.info("pairs: %s", [(f.a, f.b, round(f.beta, 3), f.pvalue) for f in fits])
        self.fits = list(fits)
        self._pairs = [_Pair(f, self.window) for f in self.fits]
        self._legs: dict[str, list[tuple[_Pair, bool]]] = {}
        for p in self._pairs:
            if p.a in hist and p.b in hist:
                ok = np.isfinite(hist[p.a]) & np.isfinite(hist[p.b])
                p.xs.extend(hist[p.a][ok].tolist())
                p.ys.extend(hist[p.b][ok].tolist())
            self._legs.setdefault(p.a, []).append((p, False))
            self._legs.setdefault(p.b, []).append((p, True))
        self.syms = sorted(self._legs)
        self._bid: dict[str, float] = {}
        self._ask: dict[str, float] = {}
        self._tag_leg: dict[str, tuple[_Pair, bool]] = {}
        self._samples = 0
        self.every(self.sample_s, "sample")

    # ---- history ----------------------------------------------------------------------------
    def load_history(self) -> dict[str, np.ndarray]:
        """Log-mid snapshots of every sym over the `lookback_days` HDB days before the run."""
        from strategy.sources import HdbSource, SourceError
        hdb, day = self.context.hdb_dir, self.context.date
        if hdb is None or day is None:
            raise ValueError("pairs: no pairs given and no HDB to pick them from; pass pairs=[...] "
                             "or run with an HDB (tickstack backtest pairs --date D)")
        days = sorted(d for d in _days(hdb) if d < day)[-self.lookback_days:]
        if not days:
            raise ValueError(f"pairs: no history in {hdb} before {day} to pick pairs from; "
                             f"save some days first (or pass pairs=[...])")
        try:
            src = HdbSource(hdb, days[0], days[-1])
        except SourceError as e:
            raise ValueError(f"pairs: {e}") from None
        per_day = []
        for d in src.days:
            marks = HdbSource(hdb, d).marks(None)
            if not marks:
                continue
            first = min(int(t[0]) for t, _ in marks.values())
            last = max(int(t[-1]) for t, _ in marks.values())
            at = grid(first, last, self.sample_s)
            per_day.append((len(at), {s: _asof_log(t, mid, at) for s, (t, mid) in marks.items()}))
        syms = sorted({s for _, snaps in per_day for s in snaps})
        return {s: np.concatenate([snaps.get(s, np.full(n, np.nan)) for n, snaps in per_day])
                for s in syms}

    def _fit(self, a: str, b: str, hist) -> PairFit:
        from strategy.cointegration import engle_granger, half_life
        ok = np.isfinite(hist[a]) & np.isfinite(hist[b])
        x, y = hist[a][ok], hist[b][ok]
        beta, alpha, sd = ols(x, y)
        return PairFit(a, b, beta, alpha, sd, engle_granger(y, x), half_life(y - alpha - beta * x, self.sample_s))

    # ---- per event --------------------------------------------------------------------------
    def on_quote(self, q) -> None:
        legs = self._legs.get(q.sym)
        if legs is None:
            return
        bid, ask = q.bid, q.ask
        if not (bid > 0 and ask > 0):
            return
        self._bid[q.sym] = bid
        self._ask[q.sym] = ask
        lm = math.log((bid + ask) * 0.5)
        entry, exit_ = self.entry_z, self.exit_z
        for p, isb in legs:
            if isb:
                p.lb = lm
            else:
                p.la = lm
            z = (p.lb - p.beta * p.la - p.alpha) / p.sd
            if z != z:
                continue
            tgt = p.target
            new = -1 if z > entry else 1 if z < -entry else 0 if abs(z) < exit_ else tgt
            if new != tgt:
                self._retarget(p, new, q.time, (self._bid.get(p.a), self._ask.get(p.a)),
                               (self._bid.get(p.b), self._ask.get(p.b)))

    # ---- batch ------------------------------------------------------------------------------
    def on_quotes(self, b) -> None:
        code, bid, ask, time = b.code, b.bid, b.ask, b.time
        valid = (bid > 0) & (ask > 0)
        lm_all = None
        decisions = []
        for n, p in enumerate(self._pairs):
            if p.ca < 0 or p.cb < 0:
                p.ca, p.cb = b.code_of(p.a), b.code_of(p.b)
            isb = code == p.cb
            idx = np.flatnonzero(((code == p.ca) | isb) & valid)
            if not len(idx):
                continue
            if lm_all is None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    lm_all = np.log((bid + ask) * 0.5)
            lm, onb = lm_all[idx], isb[idx]
            la = _ffill(np.where(onb, np.nan, lm), p.la)
            lb = _ffill(np.where(onb, lm, np.nan), p.lb)
            z = (lb - p.beta * la - p.alpha) / p.sd
            sig = np.full(len(idx), np.nan)
            with np.errstate(invalid="ignore"):
                sig[np.abs(z) < self.exit_z] = 0.0
                sig[z > self.entry_z] = -1.0
                sig[z < -self.entry_z] = 1.0
            tgt = _ffill(sig, float(p.target))
            prev = np.concatenate([[float(p.target)], tgt[:-1]])
            changes = np.flatnonzero(tgt != prev)
            if len(changes):
                # each leg's touch as of every decision row: its last row so far in this batch
                row_a = _ffill(np.where(onb, np.nan, idx.astype(float)), np.nan)
                row_b = _ffill(np.where(onb, idx.astype(float), np.nan), np.nan)
                for k in changes.tolist():
                    decisions.append((int(idx[k]), n, p, int(tgt[k]),
                                      self._touch_at(p.a, row_a[k], bid, ask),
                                      self._touch_at(p.b, row_b[k], bid, ask)))
                p.target = int(tgt[-1])
            p.la, p.lb = float(la[-1]), float(lb[-1])
            for sym, rows in ((p.a, idx[~onb]), (p.b, idx[onb])):
                if len(rows):
                    self._bid[sym], self._ask[sym] = float(bid[rows[-1]]), float(ask[rows[-1]])
        # orders go out in row order across pairs, as the per-event form sends them
        decisions.sort(key=lambda d: (d[0], d[1]))
        for row, _, p, new, qa, qb in decisions:
            self._retarget(p, new, int(time[row]), qa, qb)

    def _touch_at(self, sym: str, row: float, bid, ask) -> tuple:
        if row == row:
            return float(bid[int(row)]), float(ask[int(row)])
        return self._bid.get(sym), self._ask.get(sym)

    # ---- timer: snapshots and the rolling fit -------------------------------------------------
    def on_timer(self, name: str, time: int) -> None:
        if name != "sample":
            return
        self._samples += 1
        refit = self._samples % self.refit_every == 0
        for p in self._pairs:
            if p.off and not p.working:
                self._reconcile(p, time)
            if p.la == p.la and p.lb == p.lb:
                p.xs.append(p.la)
                p.ys.append(p.lb)
            if refit and len(p.xs) >= self.min_samples:
                beta, alpha, sd = ols(np.fromiter(p.xs, float, len(p.xs)), np.fromiter(p.ys, float, len(p.ys)))
                if beta > 0 and sd > 0:
                    p.beta, p.alpha, p.sd = beta, alpha, sd

    # ---- orders -----------------------------------------------------------------------------
    def _retarget(self, p: _Pair, new: int, t: int, qa: tuple, qb: tuple) -> None:
        """The target changed at time t; qa/qb: each leg's (bid, ask) then."""
        p.target = new
        p.retries, p.off = 0, False
        if new == 0:
            na = nb = 0
        else:
            ma, mb = _mid(*qa), _mid(*qb)
            if not (mb > 0 and ma > 0):
                return
            nb = max(1, round(self.notional / mb))
            na = max(1, round(p.beta * self.notional / ma))
            na, nb = (-na, nb) if new > 0 else (na, -nb)
        self._move(p, na - p.book_a, nb - p.book_b, t, qa, qb)
        p.book_a, p.book_b = na, nb

    def _move(self, p: _Pair, da: int, db: int, t: int, qa: tuple, qb: tuple,
              tol_bps: float | None = None) -> None:
        """Both legs go out together: IOC limits `tol_bps` through the touch."""
        tol = (self.tol_bps if tol_bps is None else tol_bps) * 1e-4
        for sym, d, isb, (bid, ask) in ((p.a, da, False, qa), (p.b, db, True, qb)):
            if d == 0:
                continue
            if d > 0:
                tag = self.buy(sym, d, round(ask * (1 + tol), 4), tif="ioc", time=t) if ask else None
            else:
                tag = self.sell(sym, -d, round(bid * (1 - tol), 4), tif="ioc", time=t) if bid else None
            if tag is not None:
                p.working.add(tag)
                self._tag_leg[tag] = (p, isb)

    def on_fill(self, f) -> None:
        leg = self._tag_leg.get(f.tag)
        if leg is None:
            return
        p, isb = leg
        if isb:
            p.pos_b += f.signed_qty
        else:
            p.pos_a += f.signed_qty

    def on_order(self, e) -> None:
        leg = self._tag_leg.get(e.tag)
        if leg is None or not e.done:
            return
        p = leg[0]
        p.working.discard(e.tag)
        if not p.working and not p.off:       # a retry's own outcome waits for the next sample
            self._reconcile(p, max(self.now, e.time))

    def _reconcile(self, p: _Pair, t: int) -> None:
        """All of the pair's orders are done: if its positions are not the book, unwind a
        failed entry (the book goes flat) or finish an exit, now and then on each sample
        (at most max_retries times in a row), through the touch by a growing margin."""
        if (p.pos_a, p.pos_b) == (p.book_a, p.book_b):
            p.off, p.retries = False, 0
            return
        if (p.book_a, p.book_b) != (0, 0):
            log.info("pairs %s/%s: a leg failed (position %d, %d; wanted %d, %d): unwinding",
                     p.a, p.b, p.pos_a, p.pos_b, p.book_a, p.book_b)
            p.book_a = p.book_b = 0
        if p.retries >= self.max_retries:
            if p.off:
                log.warning("pairs %s/%s: position (%d, %d) still not flat after %d tries; waiting "
                            "for the next signal", p.a, p.b, p.pos_a, p.pos_b, p.retries)
            p.off = False
            return
        p.off = True
        p.retries += 1
        self._move(p, p.book_a - p.pos_a, p.book_b - p.pos_b, t,
                   (self._bid.get(p.a), self._ask.get(p.a)), (self._bid.get(p.b), self._ask.get(p.b)),
                   self.tol_bps * (1 + p.retries))

    def on_stop(self) -> None:
        if self.flatten_on_stop and any(self.positions.values()):
            self.flatten()


def _mid(bid, ask) -> float:
    return (bid + ask) * 0.5 if bid and ask else math.nan  # bid/ask None before a leg's first quote


def _asof_log(t: np.ndarray, mid: np.ndarray, at: np.ndarray) -> np.ndarray:
    i = np.searchsorted(t, at, "right") - 1
    v = np.full(len(at), np.nan)
    v[i >= 0] = np.log(mid[i[i >= 0]])
    return v


def _ffill(x: np.ndarray, first: float) -> np.ndarray:
    """Forward-fill NaNs; leading NaNs take `first`."""
    ok = ~np.isnan(x)
    at = np.where(ok, np.arange(len(x)), -1)
    np.maximum.accumulate(at, out=at)
    out = np.where(at >= 0, x[np.maximum(at, 0)], first)
    return out


def _days(hdb) -> list[dt.date]:
    from pathlib import Path
    q = Path(hdb) / "quote"
    return [dt.date.fromisoformat(p.name[5:]) for p in q.glob("date=*")] if q.is_dir() else []
