"""`feed` commands: sim, replay, itch. Each takes the Config as the click context object
(`ops.config.Config`), so the group mounts under `tickstack feed ...` or runs alone as
`python -m feedhandlers [--config F] [--home D] ...`.

Feed ids: the TP drops a message whose fseq it already logged *for that feed id*, so two feeds
running at once must not share an id. Defaults: sim = `[feed] feed_id` (1), replay = 2, itch = 3.
"""
from __future__ import annotations

import math
import signal
import sys
import threading

import click

REPLAY_ID = 2
ITCH_ID = 3


def _tty() -> bool:
    """Progress bars only on a terminal: a detached feed's log file should not fill with them."""
    return sys.stderr.isatty()


def _on_term(stop: threading.Event) -> None:
    """SIGTERM ends a run cleanly (flush, wait for acks) like Ctrl-C does."""
    try:
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:        # not the main thread (e.g. CliRunner in a thread): Ctrl-C only
        pass


def _echo_stats(s) -> None:
    click.echo(f"feed {s.feed_id}: sent {s.sent} msgs / {s.sent_rows} rows, acked {s.acked} msgs / "
               f"{s.acked_rows} rows, resent {s.resent}, dropped {s.dropped} ({s.dropped_rows} rows), "
               f"rejected {s.rejected}, reconnects {s.reconnects}")
    if s.last_error:
        click.echo(f"last error from the tickerplant: {s.last_error}", err=True)


@click.group("feed")
def feed():
    """Feed handlers: the market simulator, file replay, ITCH files."""


@feed.command("sim")
@click.option("--syms", type=int, default=None, help="number of symbols (default [feed] syms)")
@click.option("--rate", type=float, default=None,
              help="events per second (default [feed] rate); 0 = as fast as the TP takes them")
@click.option("--seconds", type=float, default=None, help="run this long (default: until Ctrl-C)")
@click.option("--seed", type=int, default=None, help="random seed (default [feed] seed)")
@click.option("--feed-id", type=int, default=None, help="feed id (default [feed] feed_id)")
@click.option("--progress/--no-progress", default=_tty, help="progress bar (default: on a terminal)")
@click.pass_obj
def sim_cmd(cfg, syms, rate, seconds, seed, feed_id, progress):
    """Run the market simulator into the tickerplant."""
    from feedhandlers.sim import run_sim
    if rate is not None and rate < 0:
        raise click.BadParameter("must be >= 0", param_hint="--rate")
    rate = math.inf if rate == 0 else rate
    stop = threading.Event()
    _on_term(stop)
    bar = None
    if progress:
        from tqdm import tqdm
        r = cfg.feed.rate if rate is None else rate
        total = int(r * seconds) if seconds and math.isfinite(r) else None
        bar = tqdm(total=total, unit="ev", unit_scale=True, desc="sim")
    try:
        res = run_sim(cfg, syms, rate, seconds, seed=seed, feed_id=feed_id,
                      stop=stop.is_set, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"{res['events']} events in {res['seconds']:.2f}s ({res['rate']:,.0f}/s)")
    _echo_stats(res["stats"])
    if res["stats"].dropped:
        raise SystemExit(1)


@feed.command("replay")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=True))
@click.option("--hdb-date", default=None, help="replay <home>/hdb/<table>/date=YYYY-MM-DD instead of FILE")
@click.option("--table", required=True, help="the table the rows belong to")
@click.option("--speed", type=float, default=1.0, show_default=True,
              help="times the recorded pace (2 = twice as fast)")
@click.option("--asap", is_flag=True, help="as fast as the tickerplant takes it")
@click.option("--order", type=click.Choice(["sort", "keep"]), default="sort", show_default=True,
              help="rows out of time order: stably sort the file by time, or keep file order")
@click.option("--max-gap", type=float, default=10.0, show_default=True,
              help="paced replay: cut longer pauses in the data to this many seconds")
@click.option("--feed-id", type=int, default=REPLAY_ID, show_default=True)
@click.option("--progress/--no-progress", default=_tty, help="progress bar (default: on a terminal)")
@click.pass_obj
def replay_cmd(cfg, file, hdb_date, table, speed, asap, order, max_gap, feed_id, progress):
    """Replay a CSV/Parquet FILE or an HDB date into the tickerplant."""
    from feedhandlers.filefeed import ReplayError, replay_file, replay_hdb
    if (file is None) == (hdb_date is None):
        raise click.UsageError("give either FILE or --hdb-date (not both)")
    if speed <= 0:
        raise click.BadParameter("must be > 0", param_hint="--speed")
    pace = None if asap else speed
    try:
        if hdb_date:
            res = replay_hdb(cfg, hdb_date, table, speed=pace, feed_id=feed_id, progress=progress,
                             max_gap_s=max_gap)
        else:
            res = replay_file(cfg, file, table, speed=pace, order=order, feed_id=feed_id,
                              progress=progress, max_gap_s=max_gap)
    except (ReplayError, KeyError) as e:
        raise click.ClickException(str(e).strip('"')) from None
    r = res.report
    click.echo(f"{r.source}: {res.published} rows replayed in {res.seconds:.2f}s; "
               f"{r.bad_rows} bad rows skipped; {r.out_of_order} rows out of time order"
               f"{' (sorted)' if r.sorted else ''}")
    if r.ignored_columns:
        click.echo(f"ignored columns: {', '.join(r.ignored_columns)}")
    for e in r.errors:
        click.echo(e, err=True)
    if r.bad_rows > len(r.errors):
        click.echo(f"... and {r.bad_rows - len(r.errors)} more bad rows", err=True)
    _echo_stats(res.stats)
    if not res.acked:
        raise click.ClickException("not every message was acked by the tickerplant (see counts above)")


@feed.command("itch")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--date", "date", default=None,
              help="the trading date of the file, YYYY-MM-DD (default: the date in a NASDAQ file "
                   "name such as 01302019.NASDAQ_ITCH50 or S013019-v50.txt, else the "
                   "tickerplant's current day)")
@click.option("--feed-id", type=int, default=ITCH_ID, show_default=True)
@click.option("--progress/--no-progress", default=_tty, help="progress bar (default: on a terminal)")
@click.pass_obj
def itch_cmd(cfg, file, date, feed_id, progress):
    """Replay a NASDAQ ITCH 5.0 FILE as quotes (top of book) and trades, as fast as possible."""
    from feedhandlers.base import Feed
    from feedhandlers.itch.book import iter_itch_batches   # lazily: only this command needs it
    if date is None:
        date, why = _itch_date(cfg, file)
        click.echo(f"trading date {date} ({why}); pass --date YYYY-MM-DD to choose another")
    errors: dict[str, int] = {}
    rows = {"quote": 0, "trade": 0}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(unit="rows", unit_scale=True, desc="itch")
    f = Feed.from_config(cfg, feed_id)
    try:
        for table, cols in iter_itch_batches(file, date, errors=errors):
            f.publish(table, cols)
            n = len(cols["time"])
            rows[table] += n
            if bar is not None:
                bar.update(n)
    finally:
        if bar is not None:
            bar.close()
        acked = f.close()
    click.echo(f"{file}: {rows['quote']} quotes, {rows['trade']} trades")
    bad = {k: v for k, v in errors.items() if v}
    if bad:
        click.echo(f"skipped bad ITCH frames: {bad}", err=True)
    _echo_stats(f.stats())
    if not acked:
        raise click.ClickException("not every message was acked by the tickerplant")


def _itch_date(cfg, file: str) -> tuple[str, str]:
    """The trading date of an ITCH file, and where it came from: NASDAQ's file names carry it
    (MMDDYYYY.NASDAQ_ITCH50, MMDDYYYY.BX_ITCH_50, ...; the older SMMDDYY-vNN.txt), else the
    tickerplant's current day, else today by the configured end-of-day clock."""
    import datetime as dt
    import re
    from pathlib import Path
    name = Path(file).name
    for pattern, century in ((r"^(\d{2})(\d{2})(\d{4})\.[A-Za-z]+_ITCH", 0), (r"^S(\d{2})(\d{2})(\d{2})-v\d+", 2000)):
        m = re.match(pattern, name)
        if m:
            try:
                return dt.date(int(m[3]) + century, int(m[1]), int(m[2])).isoformat(), f"from the file name {name}"
            except ValueError:
                pass   # digits that are not a date: not NASDAQ's convention after all
    from tickerplant.protocol import ControlError, Unreachable, control
    try:
        return control(cfg.tickerplant.ctl, "status", timeout=1.0, curve=cfg.curve)["date"], "the tickerplant's current day"
    except (Unreachable, ControlError, KeyError):
        from tickerplant.clock import Clock
        return (Clock(cfg.eod.time, cfg.eod.tz).day().isoformat(),
                f"today by the [eod] clock; the tickerplant at {cfg.tickerplant.ctl} did not answer")
