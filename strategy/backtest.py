"""Backtests: a strategy replayed over history through the same callbacks it gets live, its
orders through the gateway's own risk, order-state, routing and matching code in process.

    from strategy.backtest import run
    from strategy.sources import HdbSource
    res = run(MyStrategy(), HdbSource(hdb_dir, date(2024, 1, 2)))     # -> strategy.results.Results
    res.write("out/")                                                   # Parquet + report.html

The data path: a source yields chunks of the strategy's tables and syms in time order (HDB) or
log order (TP log); the runtime (strategy.runtime) calls the per-event or the batch callbacks
and fires timers on data time; the BacktestPort (strategy.backtest_port) feeds the venues'
matching engines and the risk engine lazily, in one numpy call per engine for all rows up to
the time something can happen (an order, a due request, a quote against a resting order); an
idle venue gets only the rows that change its state (each sym's last row, and the row that
replenishes consumed size). Per event, the Python work is the strategy's callback plus a few
comparisons; per batch, none per row.

Deterministic: the same data, settings and strategy give the same orders, fills and tables
(no wall clock, no randomness; ties broken by stable sorts and fixed venue order). Working DAY
orders are canceled at the end of each day. A progress bar (tqdm) shows rows handled.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from tqdm import tqdm

from strategy.api import Context, Strategy
from strategy.backtest_port import BacktestPort
from strategy.config import BacktestSettings
from strategy.results import Results, build
from strategy.runtime import Runtime


def run(strategy: Strategy, source, settings: BacktestSettings | None = None, *,
        mode: str | None = None, progress: bool = False, hdb_dir: Path | None = None,
        date: dt.date | None = None) -> Results:
    """Run `strategy` over `source` (HdbSource, LogSource, TableSource) and return its results.
    `mode`: "event", "batch" or "auto" (default: the settings' mode)."""
    settings = settings or BacktestSettings()
    universe = source.universe
    port = BacktestPort(settings.venues, settings.risk, universe, session=strategy.name)
    runtime = Runtime(strategy, port, universe, mode or settings.mode)
    first_day = date or getattr(source, "day", None) or (getattr(source, "days", None) or [None])[0]
    strategy.bind(port, runtime, Context("backtest", hdb_dir or getattr(source, "hdb", None), first_day))
    runtime.start()
    tables = [t for t, want in (("quote", strategy.wants_quotes), ("trade", strategy.wants_trades)) if want]
    syms = list(strategy.syms) if strategy.syms is not None else None
    spans: list[list[int]] = []
    day = object()
    with tqdm(total=source.rows(tables, syms) if tables else 0, unit="rows", unit_scale=True,
              desc=f"backtest {strategy.name}", disable=not progress, leave=False) as bar:
        for d, chunk in (source.chunks(tables, syms) if tables else ()):
            if d != day:
                if spans:
                    runtime.end_of_day(spans[-1][1])
                day = d
                first = min(int(c["time"][0]) for c in (chunk.quotes, chunk.trades)
                            if c is not None and len(c["time"]))
                spans.append([first, first])
            runtime.feed(chunk)
            spans[-1][1] = max(spans[-1][1], chunk.last_time)
            bar.update(chunk.rows)
    runtime.stop()
    if spans:
        runtime.end_of_day(max(spans[-1][1], strategy.now))
    traded = sorted({f[6] for f in port.fills} | {p.order.sym for p in port.parents.values()})
    marks = source.marks(traded) if traded else {}
    counters = {**runtime.counters, **{f"port_{k}": v for k, v in port.counters.items()},
                "risk_denials": {k.value: v for k, v in port.risk.denials.items()}}
    return build(port, marks, [tuple(s) for s in spans], settings, strategy.name, runtime.mode, counters)
