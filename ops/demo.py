"""`tickstack demo`: the whole stack for a few seconds, then a day of history to look at.

    run(cfg, config_path, seconds=30, console=Console())   # raises DemoFailed; stops the stack

In order:
  1. start the default stack with `processes.start` (tp rdb hdb feed, the venues, gateway,
     risk, strategy-pairs), one line per process as each becomes ready;
  2. the live view (`ops.top`) for `seconds` (one summary line every few seconds when the
     output is not a terminal);
  3. an end of day (the TP's control `eod`, as `tickstack eod`), waiting until the HDB answers
     for that day every table the RDB held;
  4. history queries on the HDB's query endpoint (as `tickstack query --source hdb`): 1-minute
     bars (`ohlcv`), VWAP per sym (`vwap_by_sym`), trades as-of joined to quotes
     (`aj_trades`), the strategy's PnL (the `risk` table's last book rows, and its fills from
     `execution`) and TCA of the day's executions (strategy.tca over the HDB's quotes);
  5. the backtest of pairs over the day just written, with its report (as `tickstack
     backtest pairs --date D`);
  6. the stack stopped in reverse order, always (a failure, Ctrl-C, SIGTERM included).

The pairs strategy runs with DEMO_PARAMS (as `--param` on its process, and the same in the
backtest): a wider net than its defaults (entry at |z| 0.7, 1 s samples, 2 s warm-up) so it
trades within seconds of a fresh open; the library defaults are untouched. Its pairs are given
too: the simulator's designed pairs (`designed_pairs` for the stack's `[feed]` syms and seed),
which pairs trades on a fresh home anyway; given, they hold on a home with earlier demo days
too, whose few seconds of history would otherwise be searched for cointegrated pairs. A home where a
stack already runs is refused: the demo ends its day and stops it, which is not the demo's to
do to someone's stack.
"""
from __future__ import annotations

import datetime as dt
import json
import signal
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ops import processes, top

DEMO_PARAMS = {"entry_z": 0.7, "exit_z": 0.2, "notional": 1500.0, "tol_bps": 40.0, "sample_s": 1.0,
               "warmup_s": 2.0}
TABLES = ("trade", "quote", "order", "execution", "risk")
EOD_TIMEOUT_S = 90.0


class DemoFailed(RuntimeError):
    """A step of the demo failed; the text names the step, why, and the log to read."""


def _say(console, text: str, style: str | None = None) -> None:
    console.print(text, style=style, highlight=False, soft_wrap=True)


def run(cfg, config_path=None, seconds: float = 30.0, console=None, interval: float = 2.0) -> dict:
    """The demo (see the module docstring); returns what it found: {"date", "hdb", "report"}."""
    from rich.console import Console
    console = console or Console()
    already = [r["name"] for r in processes.status(cfg) if r["state"] == "running"]
    if already:
        raise DemoFailed(f"a stack is already running under {cfg.root} ({' '.join(already)}); the demo "
                         f"ends the day and stops the stack: `tickstack stop` first, or give the demo "
                         f"another --home")
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminate)          # SIGTERM stops the stack like Ctrl-C
    step = "start"
    try:
        params = _start(cfg, config_path, console)
        step = "live view"
        _say(console, f"\nlive view for {seconds:g}s (the same as `tickstack top`):", "bold")
        top.watch(cfg, interval=interval, seconds=seconds, console=console, check=lambda s: _alive(cfg, s))
        step = "end of day"
        day, counts = end_of_day(cfg, console)
        step = "history queries"
        history(cfg, day, console)
        step = "backtest"
        report = backtest(cfg, day, console, params)
        return {"date": day, "hdb": counts, "report": report}
    except DemoFailed as e:
        raise DemoFailed(f"demo failed at {step}: {e}") from None
    except (KeyboardInterrupt, SystemExit):
        _say(console, f"\ninterrupted at {step}; stopping the stack")
        raise
    except Exception as e:  # noqa: BLE001 - any failure: say which step and where to look
        raise DemoFailed(f"demo failed at {step}: {type(e).__name__}: {e}; the processes' output is in "
                         f"{cfg.log_dir}") from e
    finally:
        signal.signal(signal.SIGTERM, old)
        _say(console, "stopping the stack ...")
        done = processes.stop(cfg)
        _say(console, f"stopped: {' '.join(done) or 'nothing was running'}")


def _terminate(signum, frame):
    raise KeyboardInterrupt


def pairs_params(cfg) -> dict:
    """The pairs strategy's demo parameters: DEMO_PARAMS and the simulator's designed pairs."""
    from strategy.examples.pairs import designed_pairs
    fits = designed_pairs(cfg.feed.syms, cfg.feed.seed, sample_s=DEMO_PARAMS["sample_s"])
    return {**DEMO_PARAMS, "pairs": [[f.a, f.b, *map(float, f[2:])] for f in fits]}


def _start(cfg, config_path, console) -> dict:
    params = pairs_params(cfg)
    args = {"strategy-pairs": [a for k, v in params.items() for a in ("--param", f"{k}={json.dumps(v)}")]}
    names = processes.process_names(cfg)
    _say(console, f"starting the stack under {cfg.root} (logs in {cfg.log_dir}):", "bold")
    for name in names:
        t0 = time.monotonic()
        try:
            processes.start(cfg, [name], config_path, args if name in args else None, timeout=60.0)
        except processes.ProcError as e:
            raise DemoFailed(str(e)) from None
        pid = processes.pid_of(cfg, name)
        _say(console, f"  {name:16} ready  pid {pid}  ({time.monotonic() - t0:.1f}s)")
    _say(console, "pairs trades " + ", ".join(f"{p[1]}/{p[0]} (beta {p[2]:.3f})" for p in params["pairs"])
         + " with " + " ".join(f"{k}={v}" for k, v in DEMO_PARAMS.items())
         + " (demo parameters: it trades within seconds of a fresh open)")
    return params


def _alive(cfg, snap: dict) -> None:
    dead = [r["name"] for r in snap["processes"] if r["state"] in ("dead", "stopped")]
    if dead:
        raise DemoFailed(f"{', '.join(dead)} stopped running; see "
                         + ", ".join(str(cfg.log_dir / f"{n}.log") for n in dead))


def _hdb(cfg, sql: str, timeout: float = 60.0) -> pa.Table:
    from ops.query import QueryFailed, run_query
    try:
        return run_query(cfg, sql, "hdb", timeout).table
    except QueryFailed as e:
        raise DemoFailed(f"{e} (query: {sql}); see {cfg.log_dir / 'hdb.log'}") from None


def _counts(cfg, source: str, where: str = "") -> dict:
    from hdb.server import query
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM \"{t}\" {where}" for t in TABLES)
    t = query(getattr(cfg, source).query, sql, timeout=10, curve=cfg.curve).table
    return dict(zip(t.column("t").to_pylist(), t.column("n").to_pylist()))


def end_of_day(cfg, console, timeout: float = EOD_TIMEOUT_S) -> tuple[dt.date, dict]:
    """End the day at the TP (as `tickstack eod`); wait until the HDB holds, for that day,
    every table the RDB held rows of. Returns (the day, the HDB's rows per table)."""
    from tickerplant.protocol import Unreachable, control
    before = _counts(cfg, "rdb")
    try:
        r = control(cfg.tickerplant.ctl, "eod", timeout=10, curve=cfg.curve)
    except Unreachable as e:
        raise DemoFailed(f"{e}; see {cfg.log_dir / 'tp.log'}") from None
    day = dt.date.fromisoformat(r["ended"])
    _say(console, f"\nend of day {day} (the tickerplant is now on {r['date']}); the RDB held "
         + ", ".join(f"{t} {n:,}" for t, n in before.items())
         + "; waiting for the HDB to have the day ...", "bold")
    want = [t for t, n in before.items() if n]
    end = time.monotonic() + timeout
    counts: dict = {}
    while time.monotonic() < end:
        try:
            counts = _counts(cfg, "hdb", f"WHERE date = DATE '{day}'")
        except Exception:  # noqa: BLE001 - the HDB may be picking up the new partitions
            counts = {}
        if counts and all(counts.get(t) for t in want):
            break
        time.sleep(0.5)
    else:
        raise DemoFailed(f"the HDB did not have {day} within {timeout:g}s (has {counts or 'nothing'}, "
                         f"wanted {', '.join(want)}); see {cfg.log_dir / 'rdb.log'} and "
                         f"{cfg.log_dir / 'hdb.log'}")
    _say(console, f"HDB {day}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items())
         + f"  ({cfg.hdb_dir})")
    return day, counts


def _show(console, title: str, sql: str, table: pa.Table) -> None:
    import duckdb
    _say(console, f"\n{title}", "bold")
    _say(console, f"  tickstack query --source hdb \"{sql}\"", "dim")
    console.print(str(duckdb.from_arrow(table)) if table.num_rows else "(no rows)", highlight=False,
                  soft_wrap=True, markup=False)


def history(cfg, day: dt.date, console) -> None:
    """The history queries on the day just written, through the HDB's query endpoint."""
    d = f"DATE '{day}'"
    queries = [
        ("1-minute bars (ohlcv)",
         f"SELECT sym, bar, open, high, low, close, volume, round(vwap, 4) AS vwap, trades "
         f"FROM ohlcv('trade', INTERVAL 1 MINUTE, {d}) ORDER BY sym, bar LIMIT 8"),
        ("VWAP per sym (vwap_by_sym)",
         f"SELECT sym, round(vwap, 4) AS vwap, volume, trades FROM vwap_by_sym('trade', {d}) ORDER BY sym LIMIT 10"),
        ("trades as-of joined to the prevailing quote (aj_trades)",
         f"SELECT time, sym, price, size, bid, ask FROM aj_trades({d}) ORDER BY time DESC LIMIT 8"),
        ("the strategy's fills (execution)",
         f"SELECT strategy, venue, count(*) AS fills, sum(qty) AS qty, round(sum(qty * price), 2) AS notional, "
         f"round(sum(fee), 4) AS fees FROM execution WHERE date = {d} GROUP BY ALL ORDER BY ALL"),
        ("PnL per book at the close (risk: each book's last row)",
         f"SELECT book, position, round(realized, 2) AS realized, round(unrealized, 2) AS unrealized, "
         f"round(pnl, 2) AS pnl, state, trading FROM risk WHERE date = {d} AND sym = '' "
         f"QUALIFY row_number() OVER (PARTITION BY book ORDER BY time DESC) = 1 ORDER BY book"),
    ]
    for title, sql in queries:
        _show(console, title, sql, _hdb(cfg, sql))
    tca = day_tca(cfg, day)
    _say(console, "\nTCA of the day's executions (strategy.tca over the HDB's quotes)", "bold")
    if not tca:
        _say(console, "(no executions)")
        return
    for k, v in tca.items():
        _say(console, f"  {k:22} {v:,.3f}" if isinstance(v, float) else f"  {k:22} {v}")


def day_tca(cfg, day: dt.date) -> dict:
    """TCA over a history day's executions: qty-weighted slippage vs the arrival mid (the mid
    when the parent order was first seen) and vs the mid at the fill, fees, markouts; the
    same definitions as a backtest's (strategy.tca)."""
    from strategy.sources import HdbSource
    from strategy.tca import fill_tca
    d = f"DATE '{day}'"
    fills = _hdb(cfg, f"SELECT time, sym, side, qty, price, fee, parent, order_id FROM execution "
                      f"WHERE date = {d} ORDER BY time")
    if not fills.num_rows:
        return {}
    fills = fills.set_column(0, "time", pc.cast(fills.column("time"), pa.int64()))
    parents = _hdb(cfg, f"SELECT id, min(time) AS t FROM \"order\" WHERE date = {d} GROUP BY id")
    first_seen = dict(zip(parents.column("id").to_pylist(),
                          pc.cast(parents.column("t"), pa.int64()).to_pylist()))
    t = fills.column("time").to_numpy()
    arrival = np.array([first_seen.get(p, x) for p, x in zip(fills.column("parent").to_pylist(), t.tolist())],
                       np.int64)
    src = HdbSource(cfg.hdb_dir, day)
    marks = src.marks(sorted(set(fills.column("sym").to_pylist())))
    end_time = int(max(m[0][-1] for m in marks.values())) if marks else int(t.max())
    horizons = tuple(cfg.backtest.markouts_s)
    out = fill_tca(fills, arrival, marks, end_time, horizons)
    q = out.column("qty").to_numpy().astype(np.float64)
    summary: dict = {"fills": out.num_rows, "parents": len(set(fills.column("parent").to_pylist())),
                     "notional": float(np.sum(out.column("notional").to_numpy())),
                     "fees": float(np.sum(out.column("fee").to_numpy()))}
    for c in ["slippage_arrival_bps", "slippage_mid_bps", "fee_bps"] + [f"markout_{h:g}s_bps" for h in horizons]:
        v = out.column(c).to_numpy()
        ok = np.isfinite(v)
        summary[c] = float(np.sum(q[ok] * v[ok]) / np.sum(q[ok])) if ok.any() else float("nan")
    return summary


def backtest(cfg, day: dt.date, console, params: dict | None = None) -> Path:
    """pairs backtested over the day just written (as `tickstack backtest pairs --date D`), with
    the parameters it ran with live (default: `pairs_params`); returns the report's path."""
    from strategy.backtest import run as run_backtest
    from strategy.names import strategy_class
    from strategy.sources import HdbSource
    params = params or pairs_params(cfg)
    st = strategy_class("pairs")(**params)
    shown = " ".join(f"--param {k}={v}" for k, v in DEMO_PARAMS.items())
    _say(console, f"\nbacktest of pairs over {day}, with the parameters and pairs it ran with live", "bold")
    _say(console, f"  tickstack backtest pairs --date {day} {shown} --param 'pairs=[...]'", "dim")
    source = HdbSource(cfg.hdb_dir, day, None, cfg.backtest.chunk_rows)
    res = run_backtest(st, source, cfg.backtest, hdb_dir=cfg.hdb_dir, date=day)
    out = cfg.root / "backtests" / f"{st.name}-{day}"
    res.write(out, report=True)
    s = res.summary
    _say(console, f"  gross {s['gross_pnl']:,.2f}  fees {s['fees']:,.2f}  net {s['net_pnl']:,.2f}  "
         f"{s['orders']} orders, {s['fills']} fills, traded {s['traded_notional']:,.0f}")
    report = out / "report.html"
    _say(console, f"  report: {report}")
    return report


def summary_json(found: dict) -> str:
    return json.dumps({"date": str(found["date"]), "hdb": found["hdb"], "report": str(found["report"])})
