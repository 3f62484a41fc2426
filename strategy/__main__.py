"""`python -m strategy --name NAME [--param key=value ...] [--config F] [--home H]`: one
strategy running live in the stack (strategy.process)."""
import json
import sys

from schemas.process import boot, on_term
from strategy.process import StrategyConfig, StrategyProcess


def _params(items) -> dict:
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.exit(f"strategy: --param {item!r} is not key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def main(argv=None) -> None:
    def flags(ap):
        ap.add_argument("--name", required=True, help="a known strategy name (pairs) or module:Class")
        ap.add_argument("--param", action="append", help="strategy parameter key=value (JSON value), repeatable")
    cfg, args = boot("strategy", StrategyConfig, argv, flags)
    try:
        proc = StrategyProcess.from_config(cfg, args.name, _params(args.param))
    except ValueError as e:              # unknown name or parameter (StrategyError is a ValueError)
        sys.exit(f"strategy: {e}")
    on_term(proc.stop)
    from tickerplant.health import start_monitor
    watch = start_monitor(f"strategy-{args.name}", cfg, proc.health)
    try:
        proc.run()
    except ValueError as e:              # e.g. pairs with no pairs to trade and no history to pick them
        sys.exit(f"strategy {args.name}: {e}")
    finally:
        watch.close()


if __name__ == "__main__":
    main()
