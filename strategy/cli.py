"""`tickstack backtest STRATEGY --date D [--to D2] [--out DIR]` (the lead attaches `backtest`
to the CLI group; it reads the stack config from the group's context object).

STRATEGY is a name (`pairs`) or `module:Class`; `--param key=value` sets a strategy parameter
(the value is read as JSON when it parses, else as a string). History comes from the HDB under
the home, or `--log FILE` replays a tickerplant log instead. Results: Parquet tables,
summary.json and report.html in `--out` (default `<home>/backtests/<strategy>-<date>`).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from strategy.names import STRATEGIES, strategy_class  # noqa: F401 - STRATEGIES: the known names


def load_strategy(spec: str):
    """The strategy class named by `spec`: a known name or `module:Class`."""
    try:
        return strategy_class(spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="STRATEGY") from None


def _params(items) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


@click.command("backtest")
@click.argument("strategy_spec", metavar="STRATEGY")
@click.option("--date", "date", type=click.DateTime(["%Y-%m-%d"]), help="First day (HDB).")
@click.option("--to", "to", type=click.DateTime(["%Y-%m-%d"]), help="Last day (default: --date).")
@click.option("--log", "log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Replay this tickerplant log instead of the HDB.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Results directory.")
@click.option("--mode", type=click.Choice(["auto", "event", "batch"]), default=None,
              help="Per-event or batch callbacks (default: [backtest] mode, auto).")
@click.option("--param", "params", multiple=True, help="Strategy parameter key=value (repeatable).")
@click.option("--no-report", is_flag=True, help="Write the tables only, no report.html.")
@click.pass_context
def backtest(ctx, strategy_spec, date, to, log_file, out, mode, params, no_report) -> None:
    """Backtest STRATEGY (a name like `pairs`, or module:Class) over history."""
    from strategy.backtest import run
    from strategy.sources import HdbSource, LogSource, SourceError

    cfg = ctx.obj
    settings = cfg.backtest
    cls = load_strategy(strategy_spec)
    try:
        st = cls(**_params(params))
    except (TypeError, ValueError) as e:
        raise click.ClickException(f"{strategy_spec}: {e}") from None
    try:
        if log_file is not None:
            source = LogSource(log_file, cfg.registry(), settings.chunk_rows)
            first = source.day
        elif date is None:
            raise click.UsageError("give --date D (HDB days) or --log FILE")
        else:
            first = date.date()
            source = HdbSource(cfg.hdb_dir, first, to.date() if to else None, settings.chunk_rows)
    except SourceError as e:
        raise click.ClickException(str(e)) from None
    out = out or cfg.root / "backtests" / f"{st.name}-{first}"
    try:
        res = run(st, source, settings, mode=mode, progress=True, hdb_dir=cfg.hdb_dir, date=first)
    except (ValueError, SourceError) as e:
        raise click.ClickException(str(e)) from None
    res.write(out, report=not no_report)
    s = res.summary
    click.echo(f"{st.name} {first}{' .. ' + str(to.date()) if to else ''} ({s['mode']}): "
               f"gross {s['gross_pnl']:,.2f}  fees {s['fees']:,.2f}  net {s['net_pnl']:,.2f}  "
               f"sharpe {s['sharpe']:.2f}  max drawdown {s['max_drawdown']:,.2f}")
    click.echo(f"{s['orders']} orders, {s['fills']} fills, traded {s['traded_notional']:,.0f}; "
               f"denials {s['denials'] or 'none'}")
    click.echo(f"results: {out}{'' if no_report else '  report: ' + str(out / 'report.html')}")

