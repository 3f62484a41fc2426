"""Historical VaR and expected shortfall: scenarios of per-sym mid returns from the HDB (and
today's closed minutes), applied to the books' current exposures.

    sc = Scenarios(horizon_min=1, confidence=0.99)
    sc.load_history(hdb_dir, before=date.today(), days=5)      # DuckDB over the quote partitions
    sc.add_today(minute, syms, mids)                           # each closed minute of today
    var, es = sc.var_es(exposure)                              # exposure: (syms x books) of position x mid

Method (historical simulation, linear in the exposure). For each day, each sym's mid on a
1-minute grid: the mid of the last quote with two positive sides stamped in that minute (by
time, ties by the larger mid), carried forward over minutes without one, NaN before the sym's
first; the grid runs from the day's first minute with a quote to its last. A scenario is one
`horizon_min`-minute window within one day (overlapping windows; never across days): each
sym's simple return mid[t + h] / mid[t] - 1, 0 where either end is NaN. A book's scenario PnL
is sum_s exposure_s x r_s; the loss is its negative; VaR is the `confidence` quantile of the
losses (numpy's linear interpolation), ES the mean of the losses >= VaR. Positive numbers are
losses. With fewer than `min_scenarios` scenarios both are NaN.

Today's minutes are appended as they close (a minute closes when data time reaches its end),
so VaR follows the day intraday as well as the positions (which change it at every update).
"""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

NAN = math.nan
MINUTE = 60_000_000_000


def hdb_days(hdb_dir: Path | None, before: dt.date, days: int) -> list[dt.date]:
    """The last `days` dates with a quote partition before `before`."""
    if hdb_dir is None:
        return []
    q = Path(hdb_dir) / "quote"
    have = sorted(dt.date.fromisoformat(p.name[5:]) for p in q.glob("date=*")) if q.is_dir() else []
    return [d for d in have if d < before][-days:]


def minute_mids(hdb_dir: Path, day: dt.date) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(minutes since the epoch, syms, mids[minute x sym]) of one HDB day: the grid above,
    carried forward. DuckDB reads only what the minute closes need."""
    import duckdb
    path = Path(hdb_dir) / "quote" / f"date={day}" / "*.parquet"
    con = duckdb.connect()
    try:
        rows = con.execute(
            "SELECT sym, epoch_ns(time) // 60000000000 AS m, "
            "last((bid + ask) / 2 ORDER BY time, (bid + ask) / 2) AS mid "
            f"FROM read_parquet('{path.as_posix()}') "
            "WHERE bid > 0 AND ask > 0 AND isfinite(bid) AND isfinite(ask) "
            "GROUP BY ALL ORDER BY sym, m").fetchnumpy()
    finally:
        con.close()
    syms_col = np.asarray(rows["sym"], dtype=object)
    if not len(syms_col):
        return np.zeros(0, np.int64), [], np.zeros((0, 0))
    m = np.asarray(rows["m"], dtype=np.int64)
    mid = np.asarray(rows["mid"], dtype=np.float64)
    syms, code = np.unique(syms_col.astype(str), return_inverse=True)
    first, last = int(m.min()), int(m.max())
    grid = np.full((last - first + 1, len(syms)), NAN)
    grid[m - first, code] = mid
    return np.arange(first, last + 1, dtype=np.int64), [str(s) for s in syms], ffill(grid)


def ffill(a: np.ndarray) -> np.ndarray:
    """Carry each column's last non-NaN value down over NaNs (vectorised)."""
    if not a.size:
        return a
    ok = ~np.isnan(a)
    idx = np.where(ok, np.arange(a.shape[0])[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = a[idx, np.arange(a.shape[1])[None, :]]
    out[~np.maximum.accumulate(ok, axis=0)] = NAN
    return out


def window_returns(mids: np.ndarray, h: int) -> np.ndarray:
    """(rows - h) x syms simple returns over h rows; 0 where either end is NaN."""
    if mids.shape[0] <= h:
        return np.zeros((0, mids.shape[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = mids[h:] / mids[:-h] - 1.0
    r[~np.isfinite(r)] = 0.0
    return r


class Scenarios:
    def __init__(self, horizon_min: int = 1, confidence: float = 0.99, min_scenarios: int = 30):
        self.h, self.confidence, self.min_scenarios = horizon_min, confidence, min_scenarios
        self.days: list[dt.date] = []
        self._blocks: list[tuple[list[str], np.ndarray]] = []    # per day: (syms, returns)
        self._today_syms: list[str] = []
        self._today: list[np.ndarray] = []                       # closed minutes' mids (ffilled)
        self._cache: tuple | None = None

    # ---- building -----------------------------------------------------------------------
    def load_history(self, hdb_dir: Path | None, before: dt.date, days: int) -> list[dt.date]:
        """Scenarios of the last `days` HDB days before `before`; returns the days used."""
        for d in hdb_days(hdb_dir, before, days):
            _, syms, mids = minute_mids(hdb_dir, d)
            r = window_returns(mids, self.h)
            if len(r):
                self._blocks.append((syms, r))
                self.days.append(d)
        self._cache = None
        return self.days

    def add_block(self, syms: list[str], returns: np.ndarray) -> None:
        """Scenarios given directly (rows x syms returns)."""
        self._blocks.append((list(syms), np.asarray(returns, dtype=np.float64)))
        self._cache = None

    def add_today(self, syms: list[str], mids: np.ndarray) -> None:
        """The mids (one per sym of `syms`, NaN: none yet) at the close of today's next minute."""
        self._today_syms = list(syms)
        self._today.append(np.asarray(mids, dtype=np.float64).copy())
        self._cache = None

    def clear_today(self) -> None:
        self._today, self._today_syms = [], []
        self._cache = None

    @property
    def count(self) -> int:
        return sum(len(r) for _, r in self._blocks) + max(0, len(self._today) - self.h)

    # ---- the matrix ---------------------------------------------------------------------
    def matrix(self, syms: list[str]) -> np.ndarray:
        """scenarios x len(syms) returns, columns in the order of `syms` (0 for a sym a block
        does not have). Cached until the scenarios or the syms change."""
        key = (len(syms), len(self._blocks), len(self._today))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        index = {s: i for i, s in enumerate(syms)}
        parts = []
        blocks = list(self._blocks)
        if len(self._today) > self.h:
            n = len(self._today_syms)
            today = np.full((len(self._today), n), NAN)
            for i, row in enumerate(self._today):
                today[i, :len(row)] = row
            blocks.append((self._today_syms, window_returns(today, self.h)))
        for bsyms, r in blocks:
            out = np.zeros((len(r), len(syms)))
            cols = [(index[s], j) for j, s in enumerate(bsyms) if s in index]
            if cols:
                dst, src = zip(*cols)
                out[:, list(dst)] = r[:, list(src)]
            parts.append(out)
        m = np.concatenate(parts) if parts else np.zeros((0, len(syms)))
        self._cache = (key, m)
        return m

    def var_es(self, exposure: np.ndarray, syms: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """VaR and ES (positive: losses) of each column of `exposure` (len(syms) x k: position
        x mid per sym, one column per portfolio)."""
        exposure = np.asarray(exposure, dtype=np.float64)
        if exposure.ndim == 1:
            exposure = exposure[:, None]
        k = exposure.shape[1]
        r = self.matrix(syms)
        if len(r) < self.min_scenarios:
            return np.full(k, NAN), np.full(k, NAN)
        losses = -(r @ np.nan_to_num(exposure))
        return var_es_of(losses, self.confidence)


def var_es_of(losses: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per column of `losses` (scenarios x k): the confidence quantile and the mean at or
    beyond it."""
    var = np.quantile(losses, confidence, axis=0)
    tail = losses >= var[None, :]
    es = (losses * tail).sum(axis=0) / np.maximum(tail.sum(axis=0), 1)
    return var, es
