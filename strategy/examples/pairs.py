"""Pairs statistical arbitrage: trade the z-score of cointegrated pairs' spreads.

    tickstack backtest pairs --date 2024-01-05           # pairs picked from the days before
    run(PairsStrategy(pairs=[PairFit(...)]), source)     # or given

Selection (on_start, unless `pairs` is given): the `lookback_days` HDB days before the run's
first day are sampled every `sample_s` (log mids as of each grid time) and every pair of syms
is put to the Engle-Granger test (strategy.cointegration.select_pairs: p < `p_max`, spread
half-life < `max_half_life_s`, each sym in one pair at most). Those snapshots seed each pair's
rolling window. `pairs` may name fits (PairFit, or its 7 fields as a list, as TOML gives
them) or (a, b) to fit on that history.

No history yet (a fresh home, live): with `sim = [syms, seed]` (what the live runner passes
from the stack's `[feed]`, whose simulator is the default feed) the simulator's designed
pairs are traded (`designed_pairs`): each pair's hedge ratio is the designed one, its
constant and spread sd are measured on a warm-up sample of the same simulator (same syms and
seed, so the same prices' structure), and the rolling fit then learns from the day as it
goes (first refit after `min_samples` snapshots). Without `sim` and without history it is an
error that says what to pass.

Hedge ratio: rolling OLS of log b on log a (beta, alpha, residual sd) over the last `window`
snapshots, refit every `refit_every` snapshots. A snapshot is taken as data passes each
multiple of `sample_s` (the legs' log mids as of that time), exactly when a data-time timer
would fire; it is done in the quote callbacks rather than with a timer so that the batch form
is not cut every `sample_s` (it applies each refit from the row after it, vectorised), and the
fit is the same per event and in batch.

Signal: z = (log b - beta log a - alpha) / sd on every quote of either leg (none in the first
`warmup_s` of data time from the first quote of a leg: let the open settle). The target is
short the spread (sell b, buy beta-weighted a) when z > entry_z, long when z < -entry_z, flat
when |z| < exit_z, else unchanged. A change of target sends both legs together: IOC limit
orders `tol_bps` through the touch, sized by notional (b: `notional`, a: beta x `notional`).

Legs that fail: when all of a pair's orders are done and its positions differ from the
target book, an entry or flip is unwound at once (the pair goes flat and waits for the next
change of target); what is still off is retried at each snapshot (per event) or after each
batch, at most `max_retries` times in a row, further through the touch each time.
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
    warmup_s: float = 0.0              # no signal in this much data time after the first quote
    sim: list | None = None            # [syms, seed] of the stack's simulator: its designed pairs
                                       # when there is no history (live on a fresh home)

    def on_start(self) -> None:
        fits = self.pairs
        hist = self.history or {}
        if fits is not None:
            fits = [PairFit(*f) if not isinstance(f, PairFit) and len(f) == len(PairFit._fields) else f
                    for f in fits]
        if fits is None and self.sim is not None and not self._has_history():
            fits = designed_pairs(*self.sim, sample_s=self.sample_s)
            log.info("pairs: no history before %s in %s: trading the simulator's designed pairs %s",
                     self.context.date, self.context.hdb_dir, [(f.a, f.b, round(f.beta, 3)) for f in fits])
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
        self._step = round(self.sample_s * 1e9)
        self._grid = None                  # the next multiple of sample_s to sample at
        self._warm_end = None              # data time of the first signal (first quote + warmup_s)

    # ---- history ----------------------------------------------------------------------------
    def _has_history(self) -> bool:
        hdb, day = self.context.hdb_dir, self.context.date
        return hdb is not None and any(day is None or d < day for d in _days(hdb))

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
        if self._grid is None or q.time > self._grid:
            self._sample_until(q.time)
        bid, ask = q.bid, q.ask
        if not (bid > 0 and ask > 0):
            return
        if self._warm_end is None:
            self._warm_end = q.time + round(self.warmup_s * 1e9)
        self._bid[q.sym] = bid
        self._ask[q.sym] = ask
        lm = math.log((bid + ask) * 0.5)
        entry, exit_ = self.entry_z, self.exit_z
        warm = q.time < self._warm_end
        for p, isb in legs:
            if isb:
                p.lb = lm
            else:
                p.la = lm
            z = (p.lb - p.beta * p.la - p.alpha) / p.sd
            if z != z or warm:
                continue
            tgt = p.target
            new = -1 if z > entry else 1 if z < -entry else 0 if abs(z) < exit_ else tgt
            if new != tgt:
                self._retarget(p, new, q.time, (self._bid.get(p.a), self._ask.get(p.a)),
                               (self._bid.get(p.b), self._ask.get(p.b)))

    # ---- batch ------------------------------------------------------------------------------
    def on_quotes(self, b) -> None:
        code, bid, ask, time = b.code, b.bid, b.ask, b.time
        with np.errstate(invalid="ignore", divide="ignore"):
            valid = (bid > 0) & (ask > 0)
            lm_all = np.log((bid + ask) * 0.5)
        entry, exit_ = self.entry_z, self.exit_z
        if self._grid is None:
            self._grid = -(-int(time[0]) // self._step) * self._step
        grid = np.arange(self._grid, int(time[-1]), self._step, dtype=np.int64)  # passed in this batch
        legs = []
        for p in self._pairs:
            if p.ca < 0 or p.cb < 0:
                p.ca, p.cb = b.code_of(p.a), b.code_of(p.b)
            isb = code == p.cb
            idx = np.flatnonzero(((code == p.ca) | isb) & valid)
            onb = isb[idx]
            ona = ~onb
            lm = lm_all[idx]
            # each leg's log mid as of every row: the last value of that leg so far (cumsum trick)
            la = np.concatenate([[p.la], lm[ona]])[np.cumsum(ona)]
            lb = np.concatenate([[p.lb], lm[onb]])[np.cumsum(onb)]
            legs.append((idx, ona, onb, la, lb))
        changes = self._sample_batch(grid, time, legs) if len(grid) else [[] for _ in self._pairs]
        if self._warm_end is None:
            first = [int(time[lg[0][0]]) for lg in legs if len(lg[0])]
            if first:
                self._warm_end = min(first) + round(self.warmup_s * 1e9)
        decisions = []
        for n, (p, (idx, ona, onb, la, lb)) in enumerate(zip(self._pairs, legs)):
            if not len(idx):
                continue
            if changes[n]:        # refits inside this batch: each row uses the fit in force then
                at = np.searchsorted(np.array([c[0] for c in changes[n]]), time[idx], "left") - 1
                par = np.array([c[1:] for c in changes[n]])
                beta, alpha, sd = par[at, 0], par[at, 1], par[at, 2]
            else:
                beta, alpha, sd = p.beta, p.alpha, p.sd
            z = (lb - beta * la - alpha) / sd
            if self._warm_end is not None and time[idx[0]] < self._warm_end:
                z = np.where(time[idx] < self._warm_end, np.nan, z)
            with np.errstate(invalid="ignore"):
                # only rows that can change the target matter; most batches have none
                if p.target == 0:
                    moves = np.abs(z) > entry
                elif p.target < 0:
                    moves = z < exit_
                else:
                    moves = z > -exit_
            if moves.any():
                with np.errstate(invalid="ignore"):
                    sig = np.where(z > entry, -1.0, np.where(z < -entry, 1.0,
                                                             np.where(np.abs(z) < exit_, 0.0, np.nan)))
                have = ~np.isnan(sig)
                tgt = np.concatenate([[float(p.target)], sig[have]])[np.cumsum(have)]
                prev = np.concatenate([[float(p.target)], tgt[:-1]])
                moved = np.flatnonzero(tgt != prev)
                if len(moved):
                    # each leg's touch as of every decision row: its last row so far in this batch
                    pos = idx.astype(float)
                    row_a = np.concatenate([[np.nan], pos[ona]])[np.cumsum(ona)]
                    row_b = np.concatenate([[np.nan], pos[onb]])[np.cumsum(onb)]
                    for k in moved.tolist():
                        decisions.append((int(idx[k]), n, p, int(tgt[k]),
                                          self._touch_at(p.a, row_a[k], bid, ask),
                                          self._touch_at(p.b, row_b[k], bid, ask),
                                          float(beta if np.isscalar(beta) else beta[k])))
                    p.target = int(tgt[-1])
            p.la, p.lb = float(la[-1]), float(lb[-1])
            for sym, rows in ((p.a, idx[ona]), (p.b, idx[onb])):
                if len(rows):
                    self._bid[sym], self._ask[sym] = float(bid[rows[-1]]), float(ask[rows[-1]])
        # orders go out in row order across pairs, as the per-event form sends them
        decisions.sort(key=lambda d: (d[0], d[1]))
        for row, _, p, new, qa, qb, hedge in decisions:
            self._retarget(p, new, int(time[row]), qa, qb, hedge)
        for p in self._pairs:           # retries of failed legs: after the batch
            if p.off and not p.working:
                self._reconcile(p, int(time[-1]))

    def _sample_batch(self, grid, time, legs) -> list[list]:
        """Snapshots at the grid times this batch passed, as of each (the pairs' values before
        the batch, or their last row at or before it); the refits they bring, per pair:
        [(grid time, beta, alpha, sd), ...] with the fit in force before first."""
        asof = []
        for p, (idx, ona, onb, la, lb) in zip(self._pairs, legs):
            at = np.searchsorted(time[idx], grid, "right") - 1
            ok = at >= 0
            xa = np.where(ok, la[np.maximum(at, 0)] if len(la) else p.la, p.la)
            xb = np.where(ok, lb[np.maximum(at, 0)] if len(lb) else p.lb, p.lb)
            asof.append((xa.tolist(), xb.tolist()))
        changes: list[list] = [[] for _ in self._pairs]
        for j, t in enumerate(grid.tolist()):
            self._samples += 1
            refit = self._samples % self.refit_every == 0
            for n, p in enumerate(self._pairs):
                xa, xb = asof[n][0][j], asof[n][1][j]
                if refit and not changes[n]:
                    changes[n].append((t, p.beta, p.alpha, p.sd))
                self._snap(p, xa, xb, refit)
                if refit:
                    changes[n].append((t, p.beta, p.alpha, p.sd))
        self._grid = int(grid[-1]) + self._step
        # change points: the first entry is the fit before the batch (from the batch's start)
        return [[(-1 << 62,) + c[0][1:]] + c[1:] if c else [] for c in changes]

    def _touch_at(self, sym: str, row: float, bid, ask) -> tuple:
        if row == row:
            return float(bid[int(row)]), float(ask[int(row)])
        return self._bid.get(sym), self._ask.get(sym)

    # ---- snapshots and the rolling fit ------------------------------------------------------
    # Taken as data passes each multiple of sample_s (what a data-time timer would do), here
    # in the quote callbacks so the batch form needs no cut every sample_s.
    def _sample_until(self, t: int) -> None:
        """Snapshots at every grid time before t (per event: the values now are as of then)."""
        step = self._step
        if self._grid is None:
            self._grid = -(-t // step) * step
        g = self._grid
        while g < t:
            self._samples += 1
            refit = self._samples % self.refit_every == 0
            for p in self._pairs:
                self._snap(p, p.la, p.lb, refit)
                if p.off and not p.working:
                    self._reconcile(p, g)
            g += step
        self._grid = g

    def _snap(self, p: _Pair, la: float, lb: float, refit: bool) -> None:
        if la == la and lb == lb:
            p.xs.append(la)
            p.ys.append(lb)
        if refit and len(p.xs) >= self.min_samples:
            beta, alpha, sd = ols(np.fromiter(p.xs, float, len(p.xs)), np.fromiter(p.ys, float, len(p.ys)))
            if beta > 0 and sd > 0:
                p.beta, p.alpha, p.sd = beta, alpha, sd

    # ---- orders -----------------------------------------------------------------------------
    def _retarget(self, p: _Pair, new: int, t: int, qa: tuple, qb: tuple,
                  beta: float | None = None) -> None:
        """The target changed at time t; qa/qb: each leg's (bid, ask) then, beta the hedge
        ratio in force then (default: the current one)."""
        p.target = new
        p.retries, p.off = 0, False
        if new == 0:
            na = nb = 0
        else:
            ma, mb = _mid(*qa), _mid(*qb)
            if not (mb > 0 and ma > 0):
                return
            nb = max(1, round(self.notional / mb))
            na = max(1, round((p.beta if beta is None else beta) * self.notional / ma))
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


def designed_pairs(syms, seed: int, sample_s: float = 10.0, events: int = 50_000) -> list[PairFit]:
    """The simulator's designed cointegrated pairs (feedhandlers.sim.MarketSim with these syms
    and seed) as fits: beta is the designed hedge ratio; alpha and sd are the mean and sd of
    log b - beta log a over snapshots every `sample_s` of a warm-up run of the same simulator
    (`events` events at 20/s: about 40 min of simulated time, ~20 spread half-lives). The
    designed structure (levels, loadings, hedge ratios) depends only on syms and seed, not on
    the start time or rate, so a live feed started from the same [feed] settings has it."""
    from feedhandlers.sim import MarketSim
    sim = MarketSim(syms, seed=seed, event_rate=20.0)
    q = sim.step(events)["quote"]
    t, names = q["time"], q["sym"]
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = (q["bid"] + q["ask"]) * 0.5
    at = grid(int(t[0]), int(t[-1]), sample_s)
    out = []
    for p in sim.pairs:
        la = _asof_log(t[names == p.a], mid[names == p.a], at)
        lb = _asof_log(t[names == p.b], mid[names == p.b], at)
        s = (lb - p.beta * la)[np.isfinite(la) & np.isfinite(lb)]
        if len(s) < 10:
            continue
        out.append(PairFit(p.a, p.b, p.beta, float(s.mean()), float(s.std()), 0.0, p.half_life_s))
    return out


def _mid(bid, ask) -> float:
    return (bid + ask) * 0.5 if bid and ask else math.nan  # bid/ask None before a leg's first quote


def _asof_log(t: np.ndarray, mid: np.ndarray, at: np.ndarray) -> np.ndarray:
    i = np.searchsorted(t, at, "right") - 1
    v = np.full(len(at), np.nan)
    v[i >= 0] = np.log(mid[i[i >= 0]])
    return v


def _days(hdb) -> list[dt.date]:
    from pathlib import Path
    q = Path(hdb) / "quote"
    return [dt.date.fromisoformat(p.name[5:]) for p in q.glob("date=*")] if q.is_dir() else []
