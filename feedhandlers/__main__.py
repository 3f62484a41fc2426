"""python -m feedhandlers [--config FILE] [--home DIR] sim|replay|itch ...

The same commands as `tickstack feed ...`; this wrapper only loads the feed's config first.
"""
from __future__ import annotations

import logging
import sys

import click

from feedhandlers.base import feeds_health
from feedhandlers.cli import feed
from feedhandlers.config import FeedConfig
from schemas.settings import ConfigError, load


@click.group(help=feed.help)
@click.option("--config", default=None, help="TOML config file (default: embedded defaults or $TICKSTACK_CONFIG)")
@click.option("--home", default=None, help="directory the stack writes to (or $TICKSTACK_HOME)")
@click.pass_context
def cli(ctx, config, home):
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s feed %(levelname)s %(message)s")
    try:
        ctx.obj = load(FeedConfig, config, home, only_own=True)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    from tickerplant.health import start_monitor
    ctx.call_on_close(start_monitor("feed", ctx.obj, feeds_health).close)


for _name, _cmd in feed.commands.items():
    cli.add_command(_cmd, _name)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="python -m feedhandlers")


if __name__ == "__main__":
    main()
