"""Smart order routing: split a parent order into child orders across venues, and follow a
parent's progress through its children. Pure functions; no clock, no I/O.

Routing policy (`route`):
- A venue is usable for taking when it shows a positive price and size on the side the parent
  takes (asks for a buy, bids for a sell) within the parent's limit price (any price for a
  market order). The limit applies to the venue's price; fees only rank venues.
- Usable venues are ranked by effective price, fees included (buy: ask + fee per share +
  ask x fee bps; sell: bid - the same), then larger displayed size, then venue name. Each in turn
  gets min(remaining, displayed size).
- What displayed size does not cover: DAY/GTC rests at the best venue (the best-ranked usable one,
  else the best-ranked venue quoting that side at all, else the cheapest by fees, then by name;
  it is added to that venue's child); IOC is not sent (`Routing.unrouted`).
- FOK: routed only when the displayed size at acceptable prices covers the whole quantity,
  else nothing is sent. When one venue covers it alone, the whole order goes there (fill-or-kill
  holds); otherwise each venue gets a FOK child for what it displays: each child is all-or-none,
  but the parent can end partly filled if displayed liquidity vanishes (no cross-venue FOK exists).
- A market parent's children are market orders; a DAY/GTC market remainder goes to the best
  venue as a market order (it will take deeper liquidity there).
- Children keep the parent's sym, side, account, type, price and time; they are numbered
  `<parent id>.<n>` unless `next_id` is given, and each carries the parent's id.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from gateway.model import NewOrder, OrdStatus, OrdType, Side, TimeInForce

if TYPE_CHECKING:
    from gateway.orders import Order


@dataclass(frozen=True, slots=True)
class VenueQuote:
    """A venue's top of book and its taker fee (per share and/or in bps; negative is a rebate)."""
    bid: float
    ask: float
    bid_size: int
    ask_size: int
    fee_per_share: float = 0.0
    fee_bps: float = 0.0


class Child(NamedTuple):
    venue: str
    order: NewOrder
    parent_id: str


class Routing(NamedTuple):
    children: tuple[Child, ...]
    unrouted: int          # quantity not sent (IOC remainder, FOK that could not be covered)
    text: str = ""


def effective_price(side: Side, price: float, q: VenueQuote) -> float:
    """What a taker pays (buy) or receives (sell) per share at this venue, fees included."""
    fee = q.fee_per_share + price * q.fee_bps * 1e-4
    return price + fee if side is Side.BUY else price - fee


def route(parent: NewOrder, quotes: Mapping[str, VenueQuote],
          next_id: Callable[[], str] | None = None) -> Routing:
    """Children for `parent` across the venues in `quotes` (see the module docstring)."""
    side, qty, tif = parent.side, parent.qty, parent.tif
    market = parent.ord_type is OrdType.MARKET
    buy = side is Side.BUY
    if qty <= 0:
        return Routing((), max(qty, 0), f"parent {parent.cl_ord_id}: qty {qty} is not > 0")
    if not market and not (parent.price or 0) > 0:
        return Routing((), qty, f"parent {parent.cl_ord_id}: a limit order needs a price > 0")
    if not quotes:
        return Routing((), qty, "no venue to route to")

    def quoted(q: VenueQuote) -> tuple[float, int]:
        return (q.ask, q.ask_size) if buy else (q.bid, q.bid_size)

    ranked = []    # (effective price signed so lower is better, -size, venue), side quoted
    for venue, q in quotes.items():
        px, size = quoted(q)
        if px > 0 and size > 0:
            eff = effective_price(side, px, q)
            ranked.append((eff if buy else -eff, -size, venue))
    ranked.sort()

    def acceptable(v: str) -> bool:
        px = quoted(quotes[v])[0]
        return market or (px <= parent.price if buy else px >= parent.price)
    usable = [v for _, _, v in ranked if acceptable(v)]

    alloc: dict[str, int] = {}
    left = qty
    if tif is TimeInForce.FOK:
        shown = sum(quoted(quotes[v])[1] for v in usable)
        if shown < qty:
            return Routing((), qty, f"FOK not routed: {shown} displayed at acceptable prices, "
                                    f"{qty} needed")
        whole = [v for v in usable if quoted(quotes[v])[1] >= qty]
        if whole:
            alloc[whole[0]], left = qty, 0
    for v in usable:
        if not left:
            break
        take = min(left, quoted(quotes[v])[1])
        alloc[v] = take
        left -= take

    unrouted, text = 0, ""
    if left:
        if tif in (TimeInForce.DAY, TimeInForce.GTC):
            best = (usable or [v for _, _, v in ranked] or sorted(
                quotes, key=lambda v: (quotes[v].fee_per_share + quotes[v].fee_bps * 1e-4 *
                                       (parent.price or 0), v)))[0]
            alloc[best] = alloc.get(best, 0) + left
            text = f"{left} rests at {best}"
        else:
            unrouted, text = left, f"{left} not sent: {tif.name} and no more displayed size"
    if next_id is None:
        ids = iter(range(1, len(alloc) + 1))

        def next_id() -> str:
            return f"{parent.cl_ord_id}.{next(ids)}"
    children = tuple(
        Child(v, NewOrder(next_id(), parent.sym, side, n, parent.ord_type,
                          None if market else parent.price, tif, parent.account, parent.time),
              parent.cl_ord_id)
        for v, n in alloc.items())
    return Routing(children, unrouted, text)


class ParentState(NamedTuple):
    qty: int
    filled: int
    avg_px: float
    working_qty: int       # leaves of the children still working
    status: OrdStatus


def parent_state(parent: NewOrder, children: Iterable[Order]) -> ParentState:
    """A parent's progress from its children (their live versions, e.g. Orders.children(id)):
    FILLED when the children filled the parent's qty; while any child works, PENDING_NEW
    (none acknowledged), NEW or PARTIALLY_FILLED; once all are done, REJECTED if nothing was
    routed or every child was rejected, else EXPIRED for IOC/FOK and CANCELED for DAY/GTC."""
    children = list(children)
    filled = sum(c.cum_qty for c in children)
    notional = sum(c.cum_qty * c.avg_px for c in children)
    working = [c for c in children if c.working]
    leaves = sum(c.leaves_qty for c in working)
    if filled >= parent.qty:
        status = OrdStatus.FILLED
    elif working:
        status = (OrdStatus.PARTIALLY_FILLED if filled else
                  OrdStatus.PENDING_NEW if all(c.status is OrdStatus.PENDING_NEW for c in working)
                  else OrdStatus.NEW)
    elif not filled and all(c.status is OrdStatus.REJECTED for c in children):
        status = OrdStatus.REJECTED
    elif parent.tif in (TimeInForce.IOC, TimeInForce.FOK):
        status = OrdStatus.EXPIRED
    else:
        status = OrdStatus.CANCELED
    return ParentState(parent.qty, filled, notional / filled if filled else 0.0, leaves, status)
