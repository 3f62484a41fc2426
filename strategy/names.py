"""Strategy names: what `tickstack backtest NAME`, `tickstack strategy start NAME` and
`python -m strategy --name NAME` accept. A known short name (`STRATEGIES`) or `module:Class`
(any importable Strategy subclass)."""
from __future__ import annotations

import importlib

STRATEGIES = {"pairs": "strategy.examples.pairs:PairsStrategy"}


def strategy_class(spec: str):
    """The strategy class named by `spec`; ValueError naming the known names otherwise."""
    target = STRATEGIES.get(spec, spec)
    if ":" not in target:
        raise ValueError(f"unknown strategy {spec!r}: use one of {sorted(STRATEGIES)} or module:Class")
    mod, _, cls = target.partition(":")
    try:
        return getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load {target}: {e}") from None
