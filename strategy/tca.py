"""Transaction cost analysis of a run's fills, per fill, per (venue) order and per parent.

Definitions (side sign s = +1 for a buy, -1 for a sell; mids are the market's quote mids,
as of a time = the last quote stamped at or before it):
* slippage vs arrival mid, bps = s * (price - arrival mid) / arrival mid * 1e4, where the
  arrival mid is the mid when the parent order was sent. Positive = cost.
* slippage vs mid at fill, bps = s * (price - mid at the fill's time) / that mid * 1e4.
* markout at +h, bps = s * (mid at fill time + h - price) / price * 1e4: positive when the
  market moved the fill's way afterwards. NaN when fill time + h is past the run's data.
* fees in price currency as charged (negative = rebate); fees bps = fees / notional * 1e4.
* shortfall = s * (avg price - arrival mid) * filled + fees (currency; positive = cost).
Per order and per parent, the bps figures are qty-weighted means over their fills.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

NS = 1_000_000_000


def asof(marks: dict, syms: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The mid of each (sym, time) as of that time (NaN before the sym's first quote)."""
    out = np.full(len(times), np.nan)
    for s in np.unique(syms).tolist():
        m = marks.get(s)
        if m is None:
            continue
        at = np.flatnonzero(syms == s)
        ts, mids = m
        i = np.searchsorted(ts, times[at], "right") - 1
        ok = i >= 0
        out[at[ok]] = mids[i[ok]]
    return out


def fill_tca(fills: pa.Table, arrival: np.ndarray, marks: dict, end_time: int,
             horizons_s=(1.0, 10.0, 60.0)) -> pa.Table:
    """`fills` with the TCA columns added; `arrival` = the arrival time of each fill's parent."""
    n = fills.num_rows
    if n == 0:
        cols = {"notional": pa.array([], pa.float64()), "mid": pa.array([], pa.float64()),
                "arrival_mid": pa.array([], pa.float64()), "slippage_arrival_bps": pa.array([], pa.float64()),
                "slippage_mid_bps": pa.array([], pa.float64()), "fee_bps": pa.array([], pa.float64())}
        for h in horizons_s:
            cols[_mk(h)] = pa.array([], pa.float64())
        for k, v in cols.items():
            fills = fills.append_column(k, v)
        return fills
    sym = np.asarray(fills.column("sym").to_pylist(), dtype=object)
    t = fills.column("time").to_numpy()
    px = fills.column("price").to_numpy()
    qty = fills.column("qty").to_numpy().astype(np.float64)
    fee = fills.column("fee").to_numpy()
    s = np.where(np.asarray(fills.column("side").to_pylist(), dtype=object) == "buy", 1.0, -1.0)
    mid = asof(marks, sym, t)
    amid = asof(marks, sym, np.asarray(arrival, np.int64))
    notional = qty * px
    out = {"notional": notional, "mid": mid, "arrival_mid": amid,
           "slippage_arrival_bps": s * (px - amid) / amid * 1e4,
           "slippage_mid_bps": s * (px - mid) / mid * 1e4,
           "fee_bps": fee / notional * 1e4}
    for h in horizons_s:
        th = t + int(round(h * NS))
        later = asof(marks, sym, th)
        later[th > end_time] = np.nan
        out[_mk(h)] = s * (later - px) / px * 1e4
    for k, v in out.items():
        fills = fills.append_column(k, pa.array(v, pa.float64()))
    return fills


def _mk(h: float) -> str:
    return f"markout_{h:g}s_bps"


def group_tca(fills: pa.Table, key: str, horizons_s=(1.0, 10.0, 60.0)) -> dict[str, dict]:
    """Per value of `key` (e.g. "tag" or "order_id"): qty-weighted bps figures, filled qty,
    avg price, fees, notional, shortfall."""
    if fills.num_rows == 0:
        return {}
    keys = np.asarray(fills.column(key).to_pylist(), dtype=object)
    q = fills.column("qty").to_numpy().astype(np.float64)
    px = fills.column("price").to_numpy()
    fee = fills.column("fee").to_numpy()
    s = np.where(np.asarray(fills.column("side").to_pylist(), dtype=object) == "buy", 1.0, -1.0)
    amid = fills.column("arrival_mid").to_numpy()
    cols = ["slippage_arrival_bps", "slippage_mid_bps"] + [_mk(h) for h in horizons_s]
    vals = {c: fills.column(c).to_numpy() for c in cols}
    uniq, inv = np.unique(keys, return_inverse=True)
    k = len(uniq)
    filled = np.bincount(inv, q, k)
    notional = np.bincount(inv, q * px, k)
    fees = np.bincount(inv, fee, k)
    out = {}
    wmean = {}
    for c in cols:
        v = vals[c]
        ok = np.isfinite(v)
        w = np.bincount(inv[ok], q[ok], k)
        with np.errstate(invalid="ignore", divide="ignore"):
            wmean[c] = np.where(w > 0, np.bincount(inv[ok], (q * v)[ok], k) / w, np.nan)
    first = np.zeros(k, np.int64)
    first[inv[::-1]] = np.arange(len(inv))[::-1]       # each key's first fill
    for i, name in enumerate(uniq.tolist()):
        avg = notional[i] / filled[i]
        sign, am = s[first[i]], amid[first[i]]
        rec = {"filled": int(filled[i]), "avg_px": float(avg), "notional": float(notional[i]),
               "fees": float(fees[i]), "fee_bps": float(fees[i] / notional[i] * 1e4),
               "shortfall": float(sign * (avg - am) * filled[i] + fees[i]) if am == am else float("nan")}
        for c in cols:
            rec[c] = float(wmean[c][i])
        out[name] = rec
    return out
