"""`tickstack hdb ...`: inspect and backfill the Parquet history (the lead attaches `hdb`)."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("hdb")
def hdb() -> None:
    """The Parquet history: list partitions, backfill files."""


@hdb.command("ls")
@click.option("--table", "table", default=None, help="Only this table.")
@click.pass_obj
def ls(cfg, table) -> None:
    """Tables, dates, rows and bytes of every partition."""
    from hdb.eod import list_partitions
    parts = [p for p in list_partitions(cfg.hdb_dir) if table is None or p.table == table]
    if not parts:
        click.echo(f"no partitions under {cfg.hdb_dir}")
        return
    click.echo(f"{'table':12} {'date':10} {'rows':>14} {'bytes':>14}")
    for p in parts:
        click.echo(f"{p.table:12} {p.date.isoformat():10} {p.rows:>14,} {p.bytes:>14,}")
    click.echo(f"{len(parts)} partitions, {sum(p.rows for p in parts):,} rows, "
               f"{sum(p.bytes for p in parts):,} bytes")


@hdb.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--table", "-t", required=True, help="Table the file's rows belong to.")
@click.option("--replace", is_flag=True,
              help="Replace the days the file covers instead of merging into them.")
@click.option("--utc-days", is_flag=True,
              help="Split days by UTC date instead of the tickerplant's roll time and zone.")
@click.pass_obj
def load(cfg, file, table, replace, utc_days) -> None:
    """Backfill FILE (CSV with a header, or Parquet) into TABLE's date partitions."""
    from hdb.load import LoadError, load_file, trading_day
    day_of = None if utc_days else trading_day(cfg.eod.time, cfg.eod.tz)
    try:
        days = load_file(cfg.hdb_dir, file, table, cfg.registry(), day_of=day_of,
                         mode="replace" if replace else "merge")
    except LoadError as e:
        raise click.ClickException(str(e)) from None
    for d, n in sorted(days.items()):
        click.echo(f"{table} {d}: {n:,} rows {'written' if replace else 'merged'}")
    click.echo(f"{sum(days.values()):,} rows into {len(days)} days under {cfg.hdb_dir}")
