"""What a breach is, and the next child order of an orderly flatten: pure functions the risk
process calls (and tests drive directly).

    breaches(limits, pnl, var, gross, net) -> [(kind, value, limit), ...]
    child_order(position, bid, ask, bsize, asize, share, through_bps) -> Child | None

A child never goes past flat: its quantity is at most |position|. It takes at most `share` of
the size displayed on the side it hits (the bid size to sell, the ask size to buy), rounded
down; when that is less than one unit, or the sym has no two-sided quote, there is no child
(wait for the next quote). Its limit price is `through_bps` through the touch (sell: bid x (1 -
bps), buy: ask x (1 + bps)), rounded to 1e-6 so the price is a clean decimal on the wire.
"""
from __future__ import annotations

import math
from typing import NamedTuple

KINDS = ("loss", "var", "gross", "net")


class Child(NamedTuple):
    side: str          # "buy" | "sell"
    qty: int
    price: float
    displayed: int     # the size shown on the side taken, when it was sized


def breaches(limits, pnl: float, var: float, gross: float, net: float) -> list[tuple[str, float, float]]:
    """The limits of `limits` (a risk.config.Limits) this book breaks now: (kind, value, limit);
    value and limit in the same units (loss: -pnl vs max_loss; net: |net|)."""
    out = []
    if limits.max_loss is not None and -pnl > limits.max_loss:
        out.append(("loss", -pnl, limits.max_loss))
    if limits.max_var is not None and math.isfinite(var) and var > limits.max_var:
        out.append(("var", var, limits.max_var))
    if limits.max_gross is not None and gross > limits.max_gross:
        out.append(("gross", gross, limits.max_gross))
    if limits.max_net is not None and abs(net) > limits.max_net:
        out.append(("net", abs(net), limits.max_net))
    return out


def child_order(position: int, bid: float, ask: float, bsize: int, asize: int, share: float,
                through_bps: float) -> Child | None:
    """The next flattening child for a position (None: flat, or nothing to take now)."""
    if position == 0 or not (bid > 0 and ask > 0 and math.isfinite(bid) and math.isfinite(ask)):
        return None
    through = through_bps * 1e-4
    if position > 0:
        shown = int(bsize)
        qty = min(position, int(math.floor(share * shown + 1e-9)))
        side, price = "sell", bid * (1 - through)
    else:
        shown = int(asize)
        qty = min(-position, int(math.floor(share * shown + 1e-9)))
        side, price = "buy", ask * (1 + through)
    if qty < 1:
        return None
    return Child(side, qty, round(price, 6), shown)
