"""What every process's thin `__main__` shares: --config/--home, logging, SIGTERM -> stop().

It sits in the bottom layer beside the config base so that no process imports `ops`:
`python -m rdb` is `serve("rdb", RdbConfig, Rdb.from_config)`.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

from schemas.settings import ConfigError, load


def boot(name: str, model, argv=None, extra=None):
    """Parse the common flags (and any `extra(parser)` adds), set up logging, load the
    process's config. Returns (cfg, args); a bad config exits with its message."""
    ap = argparse.ArgumentParser(prog=f"python -m {name}")
    ap.add_argument("--config", help="TOML config file (default: embedded defaults or $TICKSTACK_CONFIG)")
    ap.add_argument("--home", help="directory for everything the stack writes (or $TICKSTACK_HOME)")
    if extra:
        extra(ap)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(message)s")
    try:
        cfg = load(model, args.config, args.home, only_own=True)
    except ConfigError as e:
        sys.exit(f"{name}: {e}")
    return cfg, args


def on_term(stop) -> None:
    """Turn SIGTERM/SIGINT into a call of `stop()` so the process can close its files cleanly."""
    def handler(signum, frame):
        stop()
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve(name: str, model, make, argv=None, monitor=None) -> None:
    """The whole of a process's __main__: boot, build it with `make(cfg)`, turn SIGTERM into
    its `stop()`, and `run()` it until stopped. `monitor(cfg, proc)`, if given, starts what
    watches the process (its heartbeats and metrics: tickerplant.health.monitor) and returns
    something to `close()` when it ends."""
    cfg, _ = boot(name, model, argv)
    proc = make(cfg)
    on_term(proc.stop)
    watch = monitor(cfg, proc) if monitor is not None else None
    try:
        proc.run()
    finally:
        if watch is not None:
            watch.close()
