"""The HTML report of a backtest: one self-contained file (plotly.js embedded, works
offline) a user opens in a browser: the summary figures, the PnL curve (gross, net, fees),
drawdown, positions, TCA by horizon and the distribution of slippage, and the orders by status.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np


def _dt(ns: np.ndarray) -> np.ndarray:
    return np.asarray(ns, np.int64).astype("datetime64[ns]")


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) or "-"
    return html.escape(str(v))


def write_report(res, path: Path) -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    s = res.summary
    figs = []
    pnl = res.pnl
    if pnl.num_rows:
        t = _dt(pnl.column("time").to_numpy())
        net = pnl.column("net").to_numpy()
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3], vertical_spacing=0.05,
                            subplot_titles=("PnL (marked to mid)", "Drawdown of net PnL"))
        fig.add_trace(go.Scatter(x=t, y=pnl.column("gross").to_numpy(), name="gross"), 1, 1)
        fig.add_trace(go.Scatter(x=t, y=net, name="net of fees"), 1, 1)
        fig.add_trace(go.Scatter(x=t, y=-pnl.column("fees").to_numpy(), name="fees paid (cumulative, negative)"), 1, 1)
        peak = np.maximum.accumulate(np.maximum(net, 0.0))
        fig.add_trace(go.Scatter(x=t, y=net - peak, name="drawdown", fill="tozeroy"), 2, 1)
        fig.update_layout(height=560, title="PnL")
        figs.append(fig)
    if res.positions.num_rows:
        fig = go.Figure()
        pos = res.positions
        syms = np.asarray(pos.column("sym").to_pylist(), dtype=object)
        tt = pos.column("time").to_numpy()
        q = pos.column("position").to_numpy()
        for sym in sorted(set(syms.tolist())):
            m = syms == sym
            fig.add_trace(go.Scatter(x=_dt(tt[m]), y=q[m], name=sym, line_shape="hv"))
        fig.update_layout(height=380, title="Positions (after each fill)", yaxis_title="qty")
        figs.append(fig)
    fills = res.fills
    if fills.num_rows:
        tca = s.get("tca", {})
        names = [k for k in tca if k.startswith(("slippage", "markout", "fee"))]
        fig = make_subplots(rows=1, cols=2, subplot_titles=(
            "TCA, qty-weighted (bps; slippage/fees: + is cost, markout: + is favourable)",
            "Slippage vs arrival mid per fill (bps)"))
        fig.add_trace(go.Bar(x=[n.replace("_bps", "") for n in names], y=[tca[n] for n in names],
                             name="bps"), 1, 1)
        fig.add_trace(go.Histogram(x=fills.column("slippage_arrival_bps").to_numpy(), nbinsx=60,
                                   name="slippage vs arrival"), 1, 2)
        fig.update_layout(height=420, title="Transaction costs", showlegend=False)
        figs.append(fig)
    if res.orders.num_rows:
        st = s.get("order_status", {})
        fig = go.Figure(go.Bar(x=list(st), y=list(st.values())))
        fig.update_layout(height=300, title="Parent orders by final status")
        figs.append(fig)

    keys = ["strategy", "mode", "days", "gross_pnl", "fees", "net_pnl", "sharpe", "sharpe_gross",
            "max_drawdown", "traded_notional", "turnover", "orders", "fills", "order_status",
            "denials", "positions"]
    start = f"{_dt(np.array([s['start']]))[0]} UTC" if s.get("start") else "-"
    end = f"{_dt(np.array([s['end']]))[0]} UTC" if s.get("end") else "-"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(s.get(k))}</td></tr>" for k in keys)
    rows += f"<tr><th>data</th><td>{start} .. {end}</td></tr>"
    parts = []
    for i, f in enumerate(figs):
        parts.append(f.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    body = "\n".join(parts) or "<p>No orders, fills or PnL: the strategy did not trade.</p>"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Backtest {html.escape(str(s.get('strategy', '')))}</title>
<style>body{{font-family:sans-serif;margin:24px}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}} th{{background:#f4f4f4}}</style>
</head><body>
<h1>Backtest: {html.escape(str(s.get('strategy', '')))}</h1>
<table>{rows}</table>
{body}
</body></html>
"""
    Path(path).write_text(page)
    return Path(path)
