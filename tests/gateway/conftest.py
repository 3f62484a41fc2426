"""Fixtures of the gateway's tests: `trading`, a stack per module (see tests/trading.py)."""
from __future__ import annotations

import pytest

from trading import Trading


@pytest.fixture(scope="module")
def trading(tmp_path_factory):
    """The shared stack of a module: venues A (deep, dearer) and B (half the size, a touch
    wider, cheaper), risk overrides for a few syms, so most tests need no stack of their own."""
    t = Trading(tmp_path_factory.mktemp("trading") / "home", **{
        "venues.A": {"display_fraction": 1.0, "taker_fee_bps": 0.3, "maker_fee_bps": -0.2},
        "venues.B": {"price_offset_bps": 0.5, "display_fraction": 0.5, "taker_fee_bps": 0.1,
                     "maker_fee_bps": -0.05},
        "gateway": {"heartbeat_s": 1},
        "gateway.risk": {"restricted": ["BANNED"], "duplicate_window_ms": 1000.0},
        "gateway.risk.syms.QTY": {"max_order_qty": 10},
        "gateway.risk.syms.NOTL": {"max_order_notional": 1000.0},
        "gateway.risk.syms.POS": {"max_position": 50},
        "gateway.risk.syms.OLD": {"max_quote_age_ms": 50.0},
    })
    yield t
    t.close()
