"""A backtest's results: tables (Parquet) and figures (summary.json, report.html).

    <out>/fills.parquet      every execution, with its TCA columns (strategy.tca)
    <out>/orders.parquet     every parent order the strategy sent (denials included)
    <out>/children.parquet   every venue order (child) the port sent, final state
    <out>/tca.parquet        TCA per parent order; <out>/tca_orders.parquet per venue order
    <out>/pnl.parquet        the PnL curve on a grid of `pnl_interval_s` of data time (each
                             day from its first to its last row): gross (marked to the mid),
                             fees (cumulative), net = gross - fees, gross exposure
    <out>/positions.parquet  position per sym after each fill
    <out>/summary.json       totals and the figures below; <out>/report.html the plots

Figures: gross/net PnL and fees; Sharpe = mean / std (ddof 1) of the net PnL's changes per
grid step, times sqrt(steps per year) where a year is `trading_days` sessions of
`session_hours` (a PnL Sharpe: scale-free, no capital assumed); max drawdown = the largest
fall of net PnL from its running peak (the peak starts at 0), in currency; traded notional;
turnover = traded notional / mean gross exposure over the grid.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from strategy.tca import NS, asof, fill_tca, group_tca

FILL_SCHEMA = pa.schema([("time", pa.int64()), ("tag", pa.string()), ("parent_id", pa.string()),
                         ("order_id", pa.string()), ("venue", pa.string()), ("exec_id", pa.string()),
                         ("sym", pa.string()), ("side", pa.string()), ("qty", pa.int64()),
                         ("price", pa.float64()), ("fee", pa.float64())])


def sharpe(pnl: np.ndarray, periods_per_year: float) -> float:
    """Annualised Sharpe of a cumulative PnL series sampled on a regular grid."""
    d = np.diff(np.asarray(pnl, np.float64))
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    return float(d.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else float("nan")


def max_drawdown(pnl: np.ndarray) -> float:
    """Largest fall of a cumulative PnL from its running peak (the peak starts at 0)."""
    p = np.asarray(pnl, np.float64)
    if not len(p):
        return 0.0
    peak = np.maximum.accumulate(np.maximum(p, 0.0))
    return float((peak - p).max())


@dataclass
class Results:
    fills: pa.Table
    orders: pa.Table
    children: pa.Table
    tca: pa.Table
    tca_orders: pa.Table
    pnl: pa.Table
    positions: pa.Table
    summary: dict = field(default_factory=dict)

    def write(self, out: Path, report: bool = True) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("fills", "orders", "children", "tca", "tca_orders", "pnl", "positions"):
            pq.write_table(getattr(self, name), out / f"{name}.parquet")
        (out / "summary.json").write_text(json.dumps(self.summary, indent=2, default=_json) + "\n")
        if report:
            from strategy.report import write_report
            write_report(self, out / "report.html")
        return out


def _json(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return str(v)


def build(port, marks: dict, spans: list[tuple[int, int]], settings, strategy_name: str = "",
          mode: str = "", counters: dict | None = None) -> Results:
    """Results from a finished BacktestPort, the traded syms' marks (sym -> (times, mids))
    and the data time spans of the run's days."""
    horizons = tuple(settings.markouts_s)
    end_time = max((b for _, b in spans), default=0)
    fills = pa.Table.from_pylist([dict(zip(FILL_SCHEMA.names, f)) for f in port.fills], schema=FILL_SCHEMA)
    parents = list(port.parents.values())
    arrival_of = {p.tag: p.time for p in parents}
    arrival = np.array([arrival_of[t] for t in fills.column("tag").to_pylist()], np.int64)
    fills = fill_tca(fills, arrival, marks, end_time, horizons)

    orders = pa.Table.from_pylist([port._parent_row(p) for p in parents], schema=_ORDER_SCHEMA)
    kids = [c for c in port.orders if c.venue]
    children = pa.Table.from_pylist([{
        "order_id": c.cl_ord_id, "parent_id": c.parent_id, "venue": c.venue, "sym": c.sym,
        "side": "buy" if c.side.name == "BUY" else "sell", "qty": c.order_qty, "price": c.price,
        "type": c.ord_type.name.lower(), "tif": c.tif.name.lower(), "status": c.status.name,
        "cum_qty": c.cum_qty, "avg_px": c.avg_px, "fees": c.fees, "created": c.created,
        "updated": c.updated, "replaced_by": c.replaced_by} for c in kids], schema=_CHILD_SCHEMA)

    per_parent = group_tca(fills, "tag", horizons)
    sym_of = {p.tag: p for p in parents}
    tca_rows = []
    for tag, rec in per_parent.items():
        p = sym_of[tag]
        tca_rows.append({"tag": tag, "id": p.id, "sym": p.order.sym,
                         "side": "buy" if p.order.side.name == "BUY" else "sell", "time": p.time,
                         "qty": p.order.qty, "fill_rate": rec["filled"] / p.order.qty if p.order.qty else 0.0,
                         **rec})
    tca = pa.Table.from_pylist(tca_rows) if tca_rows else pa.table({"tag": pa.array([], pa.string())})
    per_order = group_tca(fills, "order_id", horizons)
    child_of = {c.cl_ord_id: c for c in kids}
    tca_orders = pa.Table.from_pylist([{"order_id": k, "venue": child_of[k].venue if k in child_of else "",
                                        "parent_id": child_of[k].parent_id if k in child_of else "",
                                        **rec} for k, rec in per_order.items()]) \
        if per_order else pa.table({"order_id": pa.array([], pa.string())})

    pnl, positions = _pnl(fills, marks, spans, settings.pnl_interval_s)
    net = pnl.column("net").to_numpy() if pnl.num_rows else np.zeros(0)
    gross = pnl.column("gross").to_numpy() if pnl.num_rows else np.zeros(0)
    steps_per_year = settings.trading_days * settings.session_hours * 3600 / settings.pnl_interval_s
    traded = float(np.sum(fills.column("notional").to_numpy())) if fills.num_rows else 0.0
    exposure = pnl.column("gross_exposure").to_numpy() if pnl.num_rows else np.zeros(0)
    mean_exp = float(exposure.mean()) if len(exposure) else 0.0
    statuses: dict[str, int] = {}
    for s in orders.column("status").to_pylist():
        statuses[s] = statuses.get(s, 0) + 1
    denials: dict[str, int] = {}
    for c in orders.column("code").to_pylist():
        if c:
            denials[c] = denials.get(c, 0) + 1
    final = positions.to_pylist()
    last_pos: dict[str, int] = {}
    for r in final:
        last_pos[r["sym"]] = r["position"]
    fee_total = float(np.sum(fills.column("fee").to_numpy())) if fills.num_rows else 0.0
    # the final marks count even off the grid: the last row of the day closes the curve
    summary = {
        "strategy": strategy_name, "mode": mode,
        "start": int(spans[0][0]) if spans else None, "end": int(end_time) if spans else None,
        "days": len(spans),
        "gross_pnl": float(gross[-1]) if len(gross) else 0.0,
        "fees": fee_total,
        "net_pnl": float(net[-1]) if len(net) else 0.0,
        "sharpe": sharpe(net, steps_per_year), "sharpe_gross": sharpe(gross, steps_per_year),
        "max_drawdown": max_drawdown(net), "traded_notional": traded,
        "turnover": traded / mean_exp if mean_exp > 0 else float("nan"),
        "orders": orders.num_rows, "order_status": statuses, "denials": denials,
        "children": children.num_rows, "fills": fills.num_rows,
        "positions": {k: v for k, v in last_pos.items() if v},
        "pnl_interval_s": settings.pnl_interval_s,
        "tca": _tca_summary(fills, horizons),
        "counters": counters or {},
    }
    return Results(fills, orders, children, tca, tca_orders, pnl, positions, summary)


def _tca_summary(fills: pa.Table, horizons) -> dict:
    if not fills.num_rows:
        return {}
    q = fills.column("qty").to_numpy().astype(np.float64)
    out = {}
    for c in ["slippage_arrival_bps", "slippage_mid_bps", "fee_bps"] + [f"markout_{h:g}s_bps" for h in horizons]:
        v = fills.column(c).to_numpy()
        ok = np.isfinite(v)
        out[c] = float(np.sum(q[ok] * v[ok]) / np.sum(q[ok])) if ok.any() else float("nan")
    return out


def _pnl(fills: pa.Table, marks: dict, spans, interval_s: float) -> tuple[pa.Table, pa.Table]:
    """The PnL curve on each day's grid, and positions after each fill."""
    step = max(1, int(round(interval_s * NS)))
    grids = []
    for a, b in spans:
        g = np.arange((a // step + 1) * step, b, step, dtype=np.int64)
        grids.append(np.concatenate([[a], g, [b]]) if b > a else np.array([a], np.int64))
    grid = np.unique(np.concatenate(grids)) if grids else np.zeros(0, np.int64)
    n = len(grid)
    gross = np.zeros(n)
    fees = np.zeros(n)
    exposure = np.zeros(n)
    pos_rows = {"time": [], "sym": [], "position": []}
    if fills.num_rows:
        t = fills.column("time").to_numpy()
        sym = np.asarray(fills.column("sym").to_pylist(), dtype=object)
        side = np.where(np.asarray(fills.column("side").to_pylist(), dtype=object) == "buy", 1, -1)
        q = fills.column("qty").to_numpy() * side
        px = fills.column("price").to_numpy()
        fee = fills.column("fee").to_numpy()
        order = np.argsort(t, kind="stable")
        fcum = np.cumsum(fee[order])
        k = np.searchsorted(t[order], grid, "right")
        fees = np.where(k > 0, fcum[np.maximum(k - 1, 0)], 0.0)
        for s in sorted(set(sym.tolist())):
            m = np.flatnonzero(sym == s)
            m = m[np.argsort(t[m], kind="stable")]
            pos = np.cumsum(q[m])
            cash = np.cumsum(-q[m] * px[m])
            j = np.searchsorted(t[m], grid, "right")
            p_at = np.where(j > 0, pos[np.maximum(j - 1, 0)], 0)
            c_at = np.where(j > 0, cash[np.maximum(j - 1, 0)], 0.0)
            mid = asof(marks, np.full(n, s, dtype=object), grid)
            # before a fill, or with no mark yet, the sym adds nothing; a held position without
            # a mark is valued at its last fill price
            last_px = np.where(j > 0, px[m][np.maximum(j - 1, 0)], 0.0)
            mark = np.where(np.isfinite(mid), mid, last_px)
            gross += c_at + p_at * mark
            exposure += np.abs(p_at * mark)
            pos_rows["time"] += t[m].tolist()
            pos_rows["sym"] += [s] * len(m)
            pos_rows["position"] += pos.tolist()
    pnl = pa.table({"time": pa.array(grid, pa.int64()), "gross": gross, "fees": fees,
                    "net": gross - fees, "gross_exposure": exposure})
    positions = pa.table({"time": pa.array(pos_rows["time"], pa.int64()),
                          "sym": pa.array(pos_rows["sym"], pa.string()),
                          "position": pa.array(pos_rows["position"], pa.int64())})
    if positions.num_rows:
        positions = positions.take(np.argsort(positions.column("time").to_numpy(), kind="stable"))
    return pnl, positions


_ORDER_SCHEMA = pa.schema([("tag", pa.string()), ("id", pa.string()), ("sym", pa.string()),
                           ("side", pa.string()), ("qty", pa.int64()), ("type", pa.string()),
                           ("price", pa.float64()), ("tif", pa.string()), ("status", pa.string()),
                           ("cum_qty", pa.int64()), ("avg_px", pa.float64()), ("fees", pa.float64()),
                           ("time", pa.int64()), ("code", pa.string()), ("text", pa.string()),
                           ("strategy", pa.string())])
_CHILD_SCHEMA = pa.schema([("order_id", pa.string()), ("parent_id", pa.string()), ("venue", pa.string()),
                           ("sym", pa.string()), ("side", pa.string()), ("qty", pa.int64()),
                           ("price", pa.float64()), ("type", pa.string()), ("tif", pa.string()),
                           ("status", pa.string()), ("cum_qty", pa.int64()), ("avg_px", pa.float64()),
                           ("fees", pa.float64()), ("created", pa.int64()), ("updated", pa.int64()),
                           ("replaced_by", pa.string())])
