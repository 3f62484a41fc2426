"""tickstack: run the stack, push and query data, inspect and fix logs, benchmark.

    tickstack demo [--seconds N]          # start it all, watch, end the day, query, backtest, stop
    tickstack run                         # the whole stack with the simulated feed, until Ctrl-C
    tickstack top [--once]                # live view of a running stack
    tickstack start|stop|status [PROC]    # tp rdb hdb feed venue-A venue-B gateway risk strategy-pairs
                                          # (start: under a supervisor that restarts them)
    tickstack query "select ..."          # SQL over today (rdb), history (hdb) or both (all)
    tickstack order buy|sell SYM QTY [--limit PX]; orders; cancel ID; halt; resume
    tickstack positions | pnl | risk      # from the risk process
    tickstack strategy start|stop NAME    # a strategy running live in the stack
    tickstack keys [--dir DIR]            # CURVE keypairs for the endpoints; prints the [curve] lines
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

import click

from ops import processes
from ops.config import ConfigError, load


def _fail(msg: str) -> None:
    raise click.ClickException(msg)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="TICKSTACK_CONFIG",
              help="TOML config (default: embedded defaults).")
@click.option("--home", type=click.Path(file_okay=False), envvar="TICKSTACK_HOME",
              help="Where the stack keeps logs, history, pid files (default ~/.tickstack).")
@click.pass_context
def cli(ctx, config_path, home):
    """kdb+-style tick infrastructure: tickerplant, RDB, HDB on Parquet + DuckDB."""
    ctx.meta["config_path"] = config_path
    ctx.meta["home"] = home
    if ctx.invoked_subcommand == "config":   # the config tools read (and judge) the file themselves
        return
    try:
        ctx.obj = load(config_path, home)
    except ConfigError as e:
        _fail(f"{e}\n(`tickstack config check FILE` lists every problem)")


def _proc_names(cfg, names) -> list[str] | None:
    """The named processes (folder names such as tickerplant work too); an unknown name is an
    error listing the known ones."""
    known = processes.process_names(cfg, processes.running_strategies(cfg))
    bad = [n for n in names if processes.canonical(n) not in known]
    if bad:
        _fail(f"no process {', '.join(bad)}; the processes are: {' '.join(known)} "
              f"(or the folder names {' '.join(processes.ALIASES)})")
    return list(names) or None


PROC = click.STRING


@cli.command()
@click.argument("names", nargs=-1, type=PROC)
@click.pass_context
def start(ctx, names):
    """Start processes (default: all: tp rdb hdb feed, the venues, the gateway, risk, the
    strategies of [strategy] run) under this home's supervisor, which restarts any that dies
    and runs the scheduled jobs; returns once they are ready."""
    from ops import supervisor
    try:
        done = supervisor.start(ctx.obj, _proc_names(ctx.obj, names), ctx.meta["config_path"])
    except processes.ProcError as e:
        _fail(str(e))
    click.echo(f"started: {' '.join(done) or 'nothing (already running)'}  home: {ctx.obj.root}")


@cli.command()
@click.argument("names", nargs=-1, type=PROC)
@click.pass_obj
def stop(cfg, names):
    """Stop processes (default: all, then the supervisor), cleanly, in reverse order; the
    supervisor does not restart them."""
    from ops import supervisor
    try:
        done = supervisor.stop(cfg, _proc_names(cfg, names))
    except processes.ProcError as e:
        _fail(str(e))
    click.echo(f"stopped: {' '.join(done) or 'nothing was running'}")


@cli.command()
@click.argument("names", nargs=-1, type=PROC)
@click.option("--json", "as_json", is_flag=True, help="name, pid, state and the TP's log file as JSON")
@click.pass_obj
def status(cfg, names, as_json):
    """Which processes run (default: all), with their pids and the TP's current log."""
    rows = processes.status(cfg, _proc_names(cfg, names))
    if as_json:
        click.echo(processes.to_json(rows))
        return
    for r in rows:
        supervised = ""
        if r.get("uptime_s") is not None or r.get("restarts") or r.get("last_error"):
            supervised = (f"  up {_duration(r['uptime_s'])} restarts {r['restarts']}"
                          + (f" rss {r['rss'] / 2**20:.0f}M" if r.get("rss") else "")
                          + (f" again in {r['restart_in_s']:g}s" if "restart_in_s" in r else ""))
        extra = f"  log={r['log']} seq={r['seq']}" if "log" in r else ""
        if "trading" in r and "venues" in r:
            extra = (f"  trading={r['trading']} orders={r['orders']} working={r['working']} venues="
                     + ",".join(f"{v}:{x}" for v, x in r["venues"].items()))
        elif "trading" in r:
            extra = (f"  trading={r['trading']} books={r['books']}"
                     + (f" breached={','.join(r['breached'])}" if r["breached"] else ""))
        error = f"  last error: {r['last_exit'] or 'exit'}: {r['last_error']}" if r.get("last_error") else ""
        click.echo(f"{r['name']:14} {_state(r):12} {r['pid'] or '-':>8}{supervised}{extra}{_health(r)}{error}")
    sup = processes.supervision(cfg)
    if sup and not names:
        click.echo(f"{'supervisor':14} {'running':12} {sup['pid']:>8}  control {sup['ctl']}; "
                   f"jobs: {', '.join(sup.get('jobs') or {}) or 'none enabled'}")


def _duration(seconds) -> str:
    """12s, 4m05s, 3h02m, 2d04h: an uptime at a glance."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


@cli.command()
@click.option("--seconds", type=float, help="Stop after this long (default: until Ctrl-C).")
@click.option("--syms", type=int, help="Simulated symbols (default from config).")
@click.option("--rate", type=float, help="Simulated ticks per second (default from config).")
@click.pass_context
def run(ctx, seconds, syms, rate):
    """The whole stack with the simulated feed, in the foreground."""
    cfg = ctx.obj
    sup = processes.supervisor_pid(cfg)
    if sup:   # its processes would be stopped here and restarted there
        _fail(f"`tickstack start` runs this home's stack under its supervisor (pid {sup}): "
              "`tickstack stop` first, or give `run` another --home")
    feed = ["sim"] + (["--syms", str(syms)] if syms else []) + (["--rate", str(rate)] if rate else [])
    try:
        processes.start(cfg, None, ctx.meta["config_path"], {"feed": feed})
    except processes.ProcError as e:
        processes.stop(cfg)
        _fail(str(e))
    click.echo(f"tickstack running, home {cfg.root}; try in another shell:\n"
               f"  tickstack query \"select sym, count(*), avg(price) from trade group by sym\"\n"
               f"Ctrl-C stops.")
    end = time.monotonic() + seconds if seconds else None
    try:
        while end is None or time.monotonic() < end:
            time.sleep(min(2.0, max(0.0, end - time.monotonic())) if end else 2.0)
            click.echo(_summary(cfg))
    except KeyboardInterrupt:
        pass
    finally:
        processes.stop(cfg)
        click.echo("stopped")


def _state(r: dict) -> str:
    """A process's state, flagged when it stopped heartbeating: "running (quiet 42s)"."""
    if not r.get("quiet"):
        return r["state"]
    age = r.get("heartbeat_age_s")
    return r["state"] + (f" (quiet {age:.0f}s)" if age is not None else " (quiet)")


def _health(r: dict) -> str:
    """Rates and lag from its last heartbeat interval (ops.processes.health_of), compactly."""
    if "rates" not in r:
        return ""
    return (f"  in={r['rates']['in']:.0f}/s out={r['rates']['out']:.0f}/s lag={r['lag']}"
            + (f" errors={r['errors']}" if r["errors"] else ""))


def _summary(cfg) -> str:
    from hdb.server import query
    parts = []
    try:
        t = query(cfg.rdb.query, "select (select count(*) from trade) as trades, "
                                 "(select count(*) from quote) as quotes", timeout=2,
                  curve=cfg.curve).table.to_pylist()[0]
        parts.append(f"rdb trades={t['trades']} quotes={t['quotes']}")
    except Exception as e:  # noqa: BLE001 - a status line, not a failure
        parts.append(f"rdb: {e}")
    for r in processes.status(cfg):
        if r["state"] != "running":
            parts.append(f"{r['name']} {r['state']}!")
    return "  ".join(parts)


@cli.command()
@click.argument("table")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def publish(cfg, table, file):
    """Push the rows of a CSV or Parquet FILE into TABLE through the tickerplant, as fast as it
    takes them, in file order. Bad rows are reported and skipped; good rows all go."""
    from feedhandlers.filefeed import ReplayError, replay_file
    try:
        cfg.registry()[table]
        res = replay_file(cfg, file, table, order="keep", progress=True, timeout=60)
    except KeyError as e:
        _fail(str(e.args[0]))
    except ReplayError as e:
        _fail(str(e))
    rep = res.report
    for err in rep.errors:
        click.echo(f"skipped: {err}", err=True)
    if not res.acked:
        _fail(f"sent {res.published} rows but the tickerplant did not confirm them all within 60s: "
              "is it running? (`tickstack status`)")
    click.echo(f"published {res.published} rows to {table}" + (f"; {rep.bad_rows} bad rows skipped" if rep.bad_rows else ""))


@cli.command()
@click.argument("sql")
@click.option("--source", type=click.Choice(["rdb", "hdb", "all", "questdb"]), default="rdb", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "parquet"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.pass_obj
def query(cfg, sql, source, fmt, out, timeout):
    """Run read-only SQL over today (rdb), history (hdb), both (all) or QuestDB."""
    from ops.query import QueryFailed, run_query, truncation_note, write
    try:
        res = run_query(cfg, sql, source, timeout)
        write(res.table, fmt, out)
    except QueryFailed as e:
        _fail(str(e))
    note = truncation_note(source, res)
    if note:
        click.echo(note, err=True)


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False),
              help="Where to write the keys (default: <home>/keys).")
@click.pass_obj
def keys(cfg, directory):
    """Make a CURVE server keypair and a client keypair (secret files mode 0600) and print the
    [curve] lines that turn CURVE on for every endpoint of the stack."""
    from tickerplant.curve import config_lines, make_keys
    try:
        files = make_keys(Path(directory) if directory else cfg.root / "keys")
    except FileExistsError as e:
        _fail(str(e))
    click.echo(f"# keys in {files['authorized_clients_dir'].parent}; add to the config:")
    click.echo(config_lines(files))
    click.echo("# another host's clients need client.key_secret and server.key (not server.key_secret)")


@cli.command()
@click.argument("table")
@click.option("--sym", "syms", multiple=True, help="Only these syms (repeatable).")
@click.option("--count", type=int, help="Stop after this many rows.")
@click.pass_obj
def subscribe(cfg, table, syms, count):
    """Print TABLE's rows as they arrive (the whole day first, then live)."""
    from ops.query import csv_lines
    from tickerplant.subscriber import EndOfDay, Subscriber
    try:
        sub = Subscriber(cfg.tickerplant, [table], syms=syms or None, registry=cfg.registry(),
                         curve=cfg.curve)
    except KeyError as e:
        _fail(str(e.args[0]))
    seen = 0
    header = False
    for ev in sub:
        if isinstance(ev, EndOfDay):
            click.echo(f"# end of day {ev.date}")
            continue
        batch = ev.batch
        if count:
            batch = batch.slice(0, count - seen)
        if not header:
            click.echo(",".join(batch.schema.names))
            header = True
        if batch.num_rows:
            click.echo("\n".join(csv_lines(batch)))
        seen += batch.num_rows
        if count and seen >= count:
            break


@cli.command()
@click.option("--date", "day", type=click.DateTime(["%Y-%m-%d"]), help="The day to rebuild (with --from-log).")
@click.option("--from-log", "from_log", type=click.Path(exists=True, dir_okay=False),
              help="Rebuild the day's history from this TP log (when the RDB was lost).")
@click.pass_obj
def eod(cfg, day, from_log):
    """End the day now; or rebuild a day's history from a TP log."""
    if from_log:
        from hdb.eod import rebuild_from_log
        rows = rebuild_from_log(cfg.hdb_dir, Path(_plain_log(from_log)), cfg.registry(),
                                day.date() if day else None)
        click.echo(f"rebuilt {', '.join(f'{t}: {n} rows' for t, n in rows.items()) or 'nothing'}")
        return
    if day:
        _fail("--date goes with --from-log; to end today's day now, run `tickstack eod` alone")
    from tickerplant.protocol import Unreachable, control
    try:
        r = control(cfg.tickerplant.ctl, "eod", curve=cfg.curve)
    except Unreachable as e:
        _fail(str(e))
    click.echo(f"ended {r['ended']}; the tickerplant is now on {r['date']}")


def _plain_log(file: str) -> str:
    """FILE, or for a compressed `.log.zst` a decompressed copy removed when the command ends."""
    from tickerplant.logzip import LogZipError, open_log
    try:
        return str(click.get_current_context().with_resource(open_log(file, progress=True)))
    except LogZipError as e:
        _fail(str(e))


@cli.group("log")
def log_group():
    """Check, repair and replay tickerplant logs (FILE may be a compressed .log.zst)."""


@log_group.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def log_check(file, as_json):
    """Valid record count and the offset of the first bad byte (exit 1 if damaged)."""
    from tickerplant.log import check
    r = check(_plain_log(file))
    r.path = Path(file)
    if as_json:
        click.echo(json.dumps({"file": str(r.path), "date": str(r.date), "records": r.records,
                               "last_seq": r.last_seq, "valid_bytes": r.valid_bytes, "size": r.size,
                               "ok": r.ok, "ended": r.ended, "error": r.error}))
    else:
        click.echo(f"{r.path}: {r.records} valid records (last seq {r.last_seq}), "
                   f"{r.valid_bytes} of {r.size} bytes valid" + ("; day ended" if r.ended else ""))
        if not r.ok:
            click.echo(f"first bad byte at offset {r.valid_bytes}: {r.error}\n"
                       f"fix: tickstack log repair {file}")
    sys.exit(0 if r.ok else 1)


@log_group.command("repair")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="Default: FILE.repaired (FILE is kept).")
def log_repair(file, out):
    """Keep the valid prefix, salvage valid records after a corrupt region, write a new file."""
    from tickerplant.log import LogError, repair
    from tickerplant.logzip import plain_path
    try:
        r = repair(_plain_log(file), out or f"{plain_path(file)}.repaired")
    except LogError as e:
        _fail(str(e))
    click.echo(f"wrote {r.out}: kept {r.kept}, salvaged {r.salvaged}, dropped {r.dropped_bytes} bytes"
               + (f"; lost original seqs {r.gaps}" if r.gaps else "") + f". The original {file} is unchanged.")


@log_group.command("replay")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--table", "tables", multiple=True, help="Only these tables (repeatable).")
@click.option("--first", type=int, help="Only the first N records.")
@click.option("--sql", help="Load into an in-process RDB and run this query instead of printing rows.")
@click.pass_obj
def log_replay(cfg, file, tables, first, sql):
    """Stream a log's rows out as CSV, or load them into an RDB and query them."""
    from tickerplant.replay import replay, replay_into
    shown, file = file, _plain_log(file)
    reg = cfg.registry()
    if sql:
        from hdb.sql import Engine, QueryError
        from ops.query import truncation_note, write
        from rdb.store import Store
        store = Store(reg)
        try:
            rows = replay_into(store, file, reg, tables or None, first, progress=True)
            click.echo(f"loaded {rows} rows", err=True)
        except ValueError as e:
            click.echo(f"warning: {str(e).replace(file, shown)}", err=True)
        eng = Engine(today=store.snapshot, registry=reg, max_rows=cfg.rdb.max_rows)
        try:
            res = eng.query(sql, allow_truncated=True)
            write(res.table, "table", None)
        except QueryError as e:
            _fail(str(e))
        finally:  # a DuckDB connection left to interpreter shutdown can abort the process
            eng.close()
        note = truncation_note("replay", res)
        if note:
            click.echo(note, err=True)
        return
    from ops.query import csv_lines
    current = None
    try:
        for seq, table, batch in replay(file, reg, tables or None, first):
            if table != current:
                click.echo(f"# {table}\nseq," + ",".join(batch.schema.names))
                current = table
            if batch.num_rows:
                click.echo("\n".join(f"{seq},{line}" for line in csv_lines(batch)))
    except ValueError as e:
        _fail(str(e).replace(file, shown))


# -- config tools and scheduled jobs ------------------------------------------------------------
@cli.group("config")
def config_group():
    """Show the effective config and where each value came from; check a config file."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="{key: {value, source}} as JSON")
@click.pass_context
def config_show(ctx, as_json):
    """Every section and key of the effective config, with its source: default, file PATH,
    env TICKSTACK_HOME or --home."""
    from click.core import ParameterSource

    from ops.configtool import effective, jsonable, render
    home = ctx.meta["home"]
    from_env = ctx.find_root().get_parameter_source("home") == ParameterSource.ENVIRONMENT
    try:
        _, entries, where = effective(ctx.meta["config_path"], home,
                                      "env TICKSTACK_HOME" if from_env else "--home")
    except (ValueError, TypeError, AttributeError) as e:   # ConfigError, or a validator's crash
        _fail(f"{e}\n(`tickstack config check FILE` lists every problem)")
    if as_json:
        click.echo(json.dumps({"file": str(where) if where else None,
                               "values": {e.key: {"value": jsonable(e.value), "source": e.source}
                                          for e in entries}}, indent=1))
        return
    click.echo(f"# config file: {where}" if where else "# no config file: embedded defaults")
    width = max(len(e.key) for e in entries)
    shown = [render(e.value) for e in entries]
    vwidth = min(40, max(map(len, shown)))
    for e, v in zip(entries, shown):
        click.echo(f"{e.key:<{width}} = {v:<{vwidth}}  # {e.source}")


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.pass_context
def config_check(ctx, file):
    """List every problem in FILE (default: --config / TICKSTACK_CONFIG) with its key path;
    exit 1 if there is any, else print "ok: FILE"."""
    from ops.configtool import check_file
    file = file or ctx.meta["config_path"]
    if not file:
        _fail("name the file to check: tickstack config check FILE")
    problems = check_file(file)
    if not problems:
        click.echo(f"ok: {file}")
        return
    for p in problems:
        click.echo(f"{file}: {p}")
    click.echo(f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in {file}", err=True)
    sys.exit(1)


@cli.group("jobs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="the list as JSON")
@click.pass_context
def jobs_group(ctx, as_json):
    """Scheduled jobs ([jobs.*] in the config) and their next runs; `jobs run NAME` runs one now.
    The scheduler runs in the supervisor of `tickstack start` (alone: `python -m ops.jobs`)."""
    if ctx.invoked_subcommand:
        return
    import datetime as dt

    from ops.jobs import schedule
    rows = schedule(ctx.obj)
    if as_json:
        click.echo(json.dumps([{**r, "next_run": r["next_run"].isoformat() if r["next_run"] else None}
                               for r in rows]))
        return
    click.echo(f"{'job':15} {'on':3} {'time':5} {'tz':20} {'next run':34} does")
    for r in rows:
        nxt = r["next_run"]
        when = (f"{nxt:%Y-%m-%d %H:%M %Z} ({nxt.astimezone(dt.timezone.utc):%H:%M} UTC)"
                if nxt else "-")
        click.echo(f"{r['name']:15} {'on' if r['enabled'] else 'off':3} {r['time']:5} {r['tz']:20} "
                   f"{when:34} {r['does']}")
    sup = processes.supervision(ctx.obj)
    click.echo(f"scheduler: the supervisor (pid {sup['pid']}) runs them" if sup else
               "scheduler: not running (`tickstack start` runs it in its supervisor; alone: python -m ops.jobs)")


@jobs_group.command("run")
@click.argument("name", type=click.Choice(["eod", "log_retention", "hdb_compaction", "hdb_retention"]))
@click.option("--dry-run", is_flag=True, help="Say what it would do; change nothing.")
@click.pass_obj
def jobs_run(cfg, name, dry_run):
    """Run job NAME now (enabled or not), as the scheduler would; exit 1 if it failed."""
    from ops.jobs import run_job
    res = run_job(cfg, name, dry_run=dry_run, progress=True)
    click.echo(res.text())
    sys.exit(0 if res.ok else 1)


# -- risk and live strategies ------------------------------------------------------------------
def _risk(cfg) -> dict:
    """The risk process's status; fails at once, naming the fix, when it does not answer."""
    from tickerplant.protocol import ControlError, Unreachable, request
    if processes.accepts(cfg.risk.ctl, timeout=1.0) is False:
        pid = processes.running(cfg, "risk")
        if pid:
            _fail(f"risk (pid {pid}) does not accept connections on {cfg.risk.ctl} (yet): it may still be "
                  f"starting; see {cfg.log_dir / 'risk.log'}")
        _fail(f"risk is not running: `tickstack start risk` (nothing accepts connections on {cfg.risk.ctl})")
    try:
        reply = json.loads(request(cfg.risk.ctl, [b'{"cmd": "status"}'], timeout=5.0,
                                   what="the risk process", curve=cfg.curve)[0].bytes)
    except (Unreachable, ControlError, ValueError) as e:
        _fail(str(e))
    if "error" in reply:
        _fail(f"risk: {reply['error']}")
    return reply


def _num(v, fmt=",.2f") -> str:
    return "-" if v is None or (isinstance(v, float) and v != v) else format(v, fmt)


@cli.command()
@click.option("--book", help="Only this book.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per position.")
@click.pass_obj
def positions(cfg, book, as_json):
    """Positions per book and sym, from the risk process: average cost, mid, PnL, exposure, VaR."""
    st = _risk(cfg)
    rows = [p for p in st["positions"] if book is None or p["book"] == book]
    if as_json:
        for p in rows:
            click.echo(json.dumps(p))
        return
    click.echo(f"{'book':12} {'sym':8} {'position':>10} {'avg_cost':>10} {'mid':>10} {'realized':>12} "
               f"{'unrealized':>12} {'net':>14} {'var':>12}")
    for p in rows:
        click.echo(f"{p['book']:12} {p['sym']:8} {p['position']:>10,} {_num(p['avg_cost'], '.4f'):>10} "
                   f"{_num(p['mid'], '.4f'):>10} {_num(p['realized']):>12} {_num(p['unrealized']):>12} "
                   f"{_num(p['net']):>14} {_num(p['var']):>12}")
    if not rows:
        click.echo("no positions")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per book.")
@click.pass_obj
def pnl(cfg, as_json):
    """Today's PnL per book (realized after fees, unrealized at bid/ask) and the total."""
    st = _risk(cfg)
    books = st["books"]
    if as_json:
        for b in books:
            click.echo(json.dumps({k: b[k] for k in ("book", "realized", "unrealized", "pnl")}))
        return
    click.echo(f"{'book':16} {'realized':>14} {'unrealized':>14} {'pnl':>14}")
    for b in books:
        click.echo(f"{b['book']:16} {_num(b['realized']):>14} {_num(b['unrealized']):>14} {_num(b['pnl']):>14}")
    tot = [sum(b[k] for b in books) for k in ("realized", "unrealized", "pnl")]
    click.echo(f"{'total':16} {_num(tot[0]):>14} {_num(tot[1]):>14} {_num(tot[2]):>14}")


@cli.command("risk")
@click.option("--json", "as_json", is_flag=True, help="The risk process's whole status as JSON.")
@click.pass_obj
def risk_cmd(cfg, as_json):
    """Per book: PnL, gross and net exposure, VaR and ES against the limits; the gateway's
    trading state and the risk process's last actions."""
    st = _risk(cfg)
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    v = st["var"]
    click.echo(f"trading {st['trading']}" + (f" ({st['trading_reason']})" if st.get("trading_reason") else ""))
    click.echo(f"VaR/ES: {v['method']}, {v['horizon_min']}-min horizon, {v['confidence']:.1%}, "
               f"{v['scenarios']} scenarios from {len(v['days'])} HDB days"
               + (" and today's minutes" if v["include_today"] else ""))
    click.echo(f"{'book':12} {'state':10} {'pnl':>12} {'gross':>14} {'net':>14} {'var':>12} {'es':>12}  limits")
    for b in st["books"]:
        lim = b["limits"]
        limits = " ".join(f"{k[4:]}={_num(x, ',.0f')}" for k, x in lim.items() if x is not None)
        click.echo(f"{b['book']:12} {b['state']:10} {_num(b['pnl']):>12} {_num(b['gross']):>14} "
                   f"{_num(b['net']):>14} {_num(b['var']):>12} {_num(b['es']):>12}  {limits}"
                   + ("  BREACHED " + ",".join(b["breached"]) if b["breached"] else ""))
    if st["actions"]:
        click.echo("last actions:")
        for a in st["actions"][-10:]:
            click.echo(f"  {a['book'] or '-':12} {a['sym'] or '-':8} {a['action']:16} {a['reason']:14} {a['text']}")


@cli.group("strategy")
def strategy_group():
    """Strategies running live in the stack (`python -m strategy --name NAME`)."""


def _strategy_name(name: str) -> str:
    from strategy.names import strategy_class
    try:
        strategy_class(name)
    except ValueError as e:
        _fail(str(e))
    return f"strategy-{name}"


@strategy_group.command("start")
@click.argument("name")
@click.option("--param", "params", multiple=True, help="Strategy parameter key=value (repeatable).")
@click.pass_context
def strategy_start(ctx, name, params):
    """Start strategy NAME (a known name such as `pairs`, or module:Class) against the running
    stack; parameters: [strategy.params.NAME], then --param."""
    from ops import supervisor
    proc = _strategy_name(name)
    args = [a for p in params for a in ("--param", p)]
    try:
        done = supervisor.start(ctx.obj, [proc], ctx.meta["config_path"], {proc: args} if args else None)
    except processes.ProcError as e:
        _fail(str(e))
    click.echo(f"started: {' '.join(done) or 'nothing (already running)'}")


@strategy_group.command("stop")
@click.argument("name")
@click.pass_obj
def strategy_stop(cfg, name):
    """Stop strategy NAME cleanly (it runs its on_stop: pairs flattens); not restarted."""
    from ops import supervisor
    try:
        done = supervisor.stop(cfg, [_strategy_name(name)])
    except processes.ProcError as e:
        _fail(str(e))
    click.echo(f"stopped: {' '.join(done) or 'nothing was running'}")


BENCHES = ["ingest", "latency", "replay", "eod", "query", "itch", "feed", "risk", "backtest", "fix",
           "tick-to-trade", "logserve"]
BENCH_MODULES = {"replay": "log_replay", "tick-to-trade": "tick_to_trade"}


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", type=click.Choice(BENCHES))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(name, args):
    """Benchmarks, each beside its same-run baseline (ARGS go to the benchmark; try -h)."""
    importlib.import_module(f"ops.bench.{BENCH_MODULES.get(name, name)}").main(list(args))


# -- the demo and the live view ----------------------------------------------------------------
@cli.command()
@click.option("--seconds", type=click.FloatRange(min=1.0), default=30.0, show_default=True,
              help="How long the live view runs before the end of day.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes of the live view.")
@click.pass_context
def demo(ctx, seconds, interval):
    """The whole stack on this config: start it, watch it trade, end the day, query the
    history, backtest the day, stop it."""
    from ops.demo import DemoFailed, run as run_demo
    t0 = time.monotonic()
    try:
        run_demo(ctx.obj, ctx.meta["config_path"], seconds=seconds, interval=interval)
    except DemoFailed as e:
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo("demo interrupted; the stack is stopped", err=True)
        sys.exit(130)
    click.echo(f"\ndemo done in {time.monotonic() - t0:.0f}s; next: `tickstack start`, then "
               f"`tickstack top`, `tickstack query ...` (see README.md)")


@cli.command()
@click.option("--once", is_flag=True, help="Print one frame and exit (no live refresh).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--width", type=click.IntRange(min=60), help="Columns to render (default: the terminal's).")
@click.pass_obj
def top(cfg, once, interval, width):
    """A live view of the stack: processes, message rates, RDB rows, positions, PnL, errors."""
    from rich.console import Console

    from ops import top as view
    console = Console(width=width) if width else Console()
    if once:
        # two samples a moment apart, so the frame has message rates
        first = view.snapshot(cfg)
        time.sleep(min(interval, 1.0))
        console.print(view.render(view.snapshot(cfg, first)))
        return
    try:
        view.watch(cfg, interval=interval, console=console)
    except KeyboardInterrupt:
        pass


def _attach(module: str, attr: str) -> None:
    try:
        cli.add_command(getattr(importlib.import_module(module), attr))
    except ImportError as e:  # a half-installed checkout should still run the rest
        print(f"tickstack: {module} unavailable ({e})", file=sys.stderr)


_attach("feedhandlers.cli", "feed")
_attach("ops.trading", "order")
_attach("ops.trading", "orders")
_attach("ops.trading", "cancel")
_attach("ops.trading", "halt")
_attach("ops.trading", "resume")
_attach("hdb.cli", "hdb")
_attach("strategy.cli", "backtest")


def main() -> None:
    cli(prog_name="tickstack")


if __name__ == "__main__":
    main()
