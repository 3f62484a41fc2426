"""Every order the gateway sent, followed through one table-driven state machine.

Contract:
- `TRANSITIONS` is the whole state machine: {(status, input): next status}. A pair that is not
  in it is an impossible event; it is refused (counted, logged, returned as INVALID) and never
  changes an order. `WORKING` as a next status means "back to the working status the order's
  own progress implies": PENDING_NEW before the venue acknowledged it, else PARTIALLY_FILLED
  when something filled, else NEW (how a CancelReject resumes a PENDING_CANCEL/REPLACE order).
- `Orders` holds one `Order` per order version, keyed by cl_ord_id. A replace makes a new
  version: the old one ends REPLACED (its `replaced_by` names the new one) and the new one
  carries cum_qty, avg_px and fees, the parent id, strategy tag and account.
- Local sends are recorded before they go on the wire: `new`, `deny` (pre-trade risk said no),
  `cancel_sent`, `replace_sent`, `venue_down`. Venue messages go through `apply`. After a
  restart, `restore` and `restore_fill` put back published state (no state-machine step).
- Every call returns one `Change`: what happened (`Outcome`), the order's status before and
  after, the fill it applied, and the change in open quantity and working-order count that a
  risk engine follows (`Risk.on_change`). Nothing here raises on venue input, reads a clock or
  does I/O besides logging: time is passed in (or taken from the message).

Rules users rely on:
- A duplicate ExecReport (same venue and exec_id) is ignored and counted (DUPLICATE).
- A fill that arrives after the cancel ack (or expiry, or a venue disconnect) is applied: the
  venue filled before it canceled. The order stays CANCELED with cum_qty and avg_px updated.
- A fill that would take cum_qty past order_qty is refused loudly (OVERFILL, logged as an error,
  counted) and changes nothing: the caller alarms on it.
- A report for an order nobody knows is counted and returned as UNKNOWN.
- A fill before the NEW ack acknowledges the order; a late NEW ack after fills changes nothing.
  A fill reported on the replacement's cl_ord_id before the REPLACED ack completes the replace
  first. A fill reported on a REPLACED version belongs to its order's live version.
- A venue disconnect cancels that venue's working orders (venues cancel a session's orders when
  it drops: ours do, and real ones offer it); a fill the venue reports later is still applied.
- Fills are tracked from last_qty/last_px of each TRADE report (order-independent, so reports
  arriving out of order add up to the same cum_qty and avg_px).
- One cancel or replace at a time: a second request while one is pending is refused (INVALID);
  cancel-all retries the order once the pending request resolves. A replace waits for the
  venue's ack (a PENDING_NEW order can be canceled, not replaced).

Publishing: a Change with `status != prev` (or a `replaced` version) is an `order` row; one
with `fill_qty` is an `execution` row; `alarm` is true for OVERFILL, INVALID and BAD.
"""
from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from enum import Enum
from typing import NamedTuple

from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus,
                           OrdType, ReplaceOrder, Side, TimeInForce)

log = logging.getLogger("gateway.orders")


class Input(str, Enum):
    """What can happen to an order: local sends, then what the venue reports."""
    RISK_DENIED = "risk denied"          # pre-trade risk refused it; it never reached the wire
    CANCEL_SENT = "cancel sent"
    REPLACE_SENT = "replace sent"
    VENUE_DOWN = "venue down"            # the venue's session dropped (venue cancels on disconnect)
    PENDING_NEW = "pending new"          # ExecType A
    NEW = "new"                          # ExecType 0
    PARTIAL_FILL = "partial fill"        # ExecType F that leaves quantity open
    FILL = "fill"                        # ExecType F that completes order_qty
    PENDING_CANCEL = "pending cancel"    # ExecType 6
    CANCELED = "canceled"                # ExecType 4
    PENDING_REPLACE = "pending replace"  # ExecType E
    REPLACED = "replaced"                # ExecType 5
    REJECTED = "rejected"                # ExecType 8
    EXPIRED = "expired"                  # ExecType C
    CANCEL_REJECT = "cancel reject"      # OrderCancelReject (35=9)


class _Working:
    def __repr__(self) -> str:
        return "WORKING"


WORKING = _Working()

S, On = OrdStatus, Input
PENDING_NEW, NEW, PARTIAL, FILLED = S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED, S.FILLED
PENDING_CANCEL, CANCELED, PENDING_REPLACE = S.PENDING_CANCEL, S.CANCELED, S.PENDING_REPLACE
REPLACED, REJECTED, EXPIRED = S.REPLACED, S.REJECTED, S.EXPIRED

# The state machine. Self-loops are late or repeated messages (valid, nothing changes).
TRANSITIONS: dict[tuple[OrdStatus, Input], OrdStatus | _Working] = {
    # sent, not acknowledged yet
    (PENDING_NEW, On.RISK_DENIED): REJECTED,
    (PENDING_NEW, On.PENDING_NEW): PENDING_NEW,
    (PENDING_NEW, On.NEW): NEW,
    (PENDING_NEW, On.PARTIAL_FILL): PARTIAL,          # a fill before the ack acknowledges it
    (PENDING_NEW, On.FILL): FILLED,
    (PENDING_NEW, On.REJECTED): REJECTED,
    (PENDING_NEW, On.CANCELED): CANCELED,             # e.g. an IOC that found nothing
    (PENDING_NEW, On.EXPIRED): EXPIRED,
    (PENDING_NEW, On.CANCEL_SENT): PENDING_CANCEL,
    (PENDING_NEW, On.CANCEL_REJECT): PENDING_NEW,
    (PENDING_NEW, On.VENUE_DOWN): CANCELED,
    # working at the venue
    (NEW, On.PENDING_NEW): NEW,
    (NEW, On.NEW): NEW,
    (NEW, On.PARTIAL_FILL): PARTIAL,
    (NEW, On.FILL): FILLED,
    (NEW, On.PENDING_CANCEL): NEW,                    # our cancel was already rejected
    (NEW, On.PENDING_REPLACE): NEW,
    (NEW, On.CANCELED): CANCELED,                     # unsolicited: IOC rest, venue end of day
    (NEW, On.EXPIRED): EXPIRED,
    (NEW, On.CANCEL_SENT): PENDING_CANCEL,
    (NEW, On.REPLACE_SENT): PENDING_REPLACE,
    (NEW, On.CANCEL_REJECT): NEW,
    (NEW, On.VENUE_DOWN): CANCELED,
    (PARTIAL, On.PENDING_NEW): PARTIAL,
    (PARTIAL, On.NEW): PARTIAL,
    (PARTIAL, On.PARTIAL_FILL): PARTIAL,
    (PARTIAL, On.FILL): FILLED,
    (PARTIAL, On.PENDING_CANCEL): PARTIAL,
    (PARTIAL, On.PENDING_REPLACE): PARTIAL,
    (PARTIAL, On.CANCELED): CANCELED,
    (PARTIAL, On.EXPIRED): EXPIRED,
    (PARTIAL, On.CANCEL_SENT): PENDING_CANCEL,
    (PARTIAL, On.REPLACE_SENT): PENDING_REPLACE,
    (PARTIAL, On.CANCEL_REJECT): PARTIAL,
    (PARTIAL, On.VENUE_DOWN): CANCELED,
    # a cancel is on its way
    (PENDING_CANCEL, On.PENDING_NEW): PENDING_CANCEL,
    (PENDING_CANCEL, On.NEW): PENDING_CANCEL,
    (PENDING_CANCEL, On.PENDING_CANCEL): PENDING_CANCEL,
    (PENDING_CANCEL, On.PARTIAL_FILL): PENDING_CANCEL,
    (PENDING_CANCEL, On.FILL): FILLED,                # filled before the cancel got there
    (PENDING_CANCEL, On.CANCELED): CANCELED,
    (PENDING_CANCEL, On.EXPIRED): EXPIRED,
    (PENDING_CANCEL, On.REJECTED): REJECTED,          # canceled before the venue accepted it
    (PENDING_CANCEL, On.CANCEL_REJECT): WORKING,
    (PENDING_CANCEL, On.VENUE_DOWN): CANCELED,
    # a replace is on its way
    (PENDING_REPLACE, On.NEW): PENDING_REPLACE,
    (PENDING_REPLACE, On.PENDING_REPLACE): PENDING_REPLACE,
    (PENDING_REPLACE, On.PARTIAL_FILL): PENDING_REPLACE,
    (PENDING_REPLACE, On.FILL): FILLED,
    (PENDING_REPLACE, On.REPLACED): REPLACED,         # the new version starts WORKING
    (PENDING_REPLACE, On.CANCELED): CANCELED,
    (PENDING_REPLACE, On.EXPIRED): EXPIRED,
    (PENDING_REPLACE, On.CANCEL_REJECT): WORKING,
    (PENDING_REPLACE, On.VENUE_DOWN): CANCELED,
    # done: late messages change nothing, except that a late fill on a canceled or expired order
    # is applied (the venue filled it before it canceled)
    (FILLED, On.PENDING_NEW): FILLED,
    (FILLED, On.NEW): FILLED,
    (FILLED, On.PENDING_CANCEL): FILLED,
    (FILLED, On.PENDING_REPLACE): FILLED,
    (FILLED, On.CANCEL_REJECT): FILLED,               # too late to cancel
    (CANCELED, On.PENDING_NEW): CANCELED,
    (CANCELED, On.NEW): CANCELED,
    (CANCELED, On.PENDING_CANCEL): CANCELED,
    (CANCELED, On.PENDING_REPLACE): CANCELED,
    (CANCELED, On.PARTIAL_FILL): CANCELED,
    (CANCELED, On.FILL): CANCELED,
    (CANCELED, On.CANCELED): CANCELED,
    (CANCELED, On.EXPIRED): CANCELED,
    (CANCELED, On.CANCEL_REJECT): CANCELED,
    (EXPIRED, On.PENDING_NEW): EXPIRED,
    (EXPIRED, On.NEW): EXPIRED,
    (EXPIRED, On.PARTIAL_FILL): EXPIRED,
    (EXPIRED, On.FILL): EXPIRED,
    (EXPIRED, On.CANCELED): EXPIRED,
    (EXPIRED, On.EXPIRED): EXPIRED,
    (EXPIRED, On.CANCEL_REJECT): EXPIRED,
    (REJECTED, On.REJECTED): REJECTED,
    (REJECTED, On.CANCEL_REJECT): REJECTED,
    (REPLACED, On.PENDING_NEW): REPLACED,
    (REPLACED, On.NEW): REPLACED,
    (REPLACED, On.PENDING_REPLACE): REPLACED,
    (REPLACED, On.REPLACED): REPLACED,
    (REPLACED, On.CANCEL_REJECT): REPLACED,
}

_BY_EXEC_TYPE = {
    ExecType.PENDING_NEW: On.PENDING_NEW, ExecType.NEW: On.NEW,
    ExecType.PENDING_CANCEL: On.PENDING_CANCEL, ExecType.CANCELED: On.CANCELED,
    ExecType.PENDING_REPLACE: On.PENDING_REPLACE, ExecType.REPLACED: On.REPLACED,
    ExecType.REJECTED: On.REJECTED, ExecType.EXPIRED: On.EXPIRED,
}
# Reports that, named with the replacement's cl_ord_id, prove the venue already replaced.
_IMPLY_REPLACE = frozenset({ExecType.TRADE, ExecType.CANCELED, ExecType.EXPIRED})


class Outcome(str, Enum):
    APPLIED = "applied"                          # status and/or quantities changed
    UNCHANGED = "unchanged"                      # valid, nothing new (late ack, status report)
    DUPLICATE = "ignored: duplicate"             # same venue + exec_id seen before
    UNKNOWN = "ignored: unknown order"
    OVERFILL = "refused: overfill"               # alarm: the venue reports more than we sent
    INVALID = "refused: invalid transition"      # alarm: impossible for the order's status
    BAD = "refused: bad message"                 # alarm: malformed (qty <= 0, wrong venue, ...)

    @property
    def alarm(self) -> bool:
        return self in (Outcome.OVERFILL, Outcome.INVALID, Outcome.BAD)


class Request(NamedTuple):
    """A cancel or replace sent and not yet answered."""
    cl_ord_id: str
    replace: bool
    qty: int = 0
    price: float | None = None
    ord_type: OrdType = OrdType.LIMIT
    tif: TimeInForce = TimeInForce.DAY


class Order:
    """One version of an order (one cl_ord_id). Mutated only by `Orders`."""
    __slots__ = ("cl_ord_id", "orig_cl_ord_id", "sym", "side", "order_qty", "price", "ord_type",
                 "tif", "account", "venue", "parent_id", "strategy", "status", "cum_qty",
                 "avg_px", "fees", "order_id", "acked", "created", "updated", "replaced_by",
                 "request", "text")

    def __init__(self, cl_ord_id: str, sym: str, side: Side, order_qty: int, price: float | None,
                 ord_type: OrdType, tif: TimeInForce, account: str, venue: str, parent_id: str,
                 strategy: str, time: int, orig_cl_ord_id: str = ""):
        self.cl_ord_id, self.orig_cl_ord_id = cl_ord_id, orig_cl_ord_id
        self.sym, self.side, self.order_qty, self.price = sym, side, order_qty, price
        self.ord_type, self.tif, self.account, self.venue = ord_type, tif, account, venue
        self.parent_id, self.strategy = parent_id, strategy
        self.status = PENDING_NEW
        self.cum_qty, self.avg_px, self.fees = 0, 0.0, 0.0
        self.order_id, self.acked = "", False
        self.created = self.updated = time
        self.replaced_by = ""
        self.request: Request | None = None
        self.text = ""

    @property
    def working(self) -> bool:
        return not self.status.terminal

    @property
    def leaves_qty(self) -> int:
        return self.order_qty - self.cum_qty if not self.status.terminal else 0

    @property
    def open_qty(self) -> int:
        """The quantity that may still fill, worst case: a pending replace to a larger qty
        counts at the larger one until the venue answers."""
        if self.status.terminal:
            return 0
        qty = self.order_qty
        if self.request is not None and self.request.replace and self.request.qty > qty:
            qty = self.request.qty
        return qty - self.cum_qty

    def __repr__(self) -> str:
        return (f"Order({self.cl_ord_id} {self.venue} {self.side.name} {self.sym} {self.cum_qty}/"
                f"{self.order_qty} @ {self.price} {self.status.name})")


class Change(NamedTuple):
    """What one call did. `order` is the order's current version (None when unknown);
    `replaced` the version a replace ended. `open_qty` and `open_orders` are signed changes in
    the order's open quantity (on order.side) and in the number of working orders."""
    outcome: Outcome
    order: Order | None = None
    prev: OrdStatus | None = None
    status: OrdStatus | None = None
    fill_qty: int = 0
    fill_px: float = 0.0
    fee: float = 0.0
    open_qty: int = 0
    open_orders: int = 0
    replaced: Order | None = None
    text: str = ""

    @property
    def alarm(self) -> bool:
        return self.outcome.alarm

    @property
    def position_delta(self) -> int:
        """Signed filled quantity for (order.account, order.sym)."""
        return self.order.side.sign * self.fill_qty if self.fill_qty else 0


class Orders:
    """The order tracker: every version by cl_ord_id, working orders, open quantity per
    (sym, side), filled position per (account, sym), counters for everything refused."""

    def __init__(self) -> None:
        self._versions: dict[str, Order] = {}
        self._requests: dict[str, Order] = {}      # cancel/replace cl_ord_id -> the version it acts on
        self._working: dict[str, Order] = {}
        self._open: defaultdict[tuple[str, Side], int] = defaultdict(int)
        self._positions: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._children: defaultdict[str, list[str]] = defaultdict(list)
        self._seen: set[tuple[str, str]] = set()
        self.counts: Counter[str] = Counter()

    # ---- queries -------------------------------------------------------------------------
    def __contains__(self, cl_ord_id: str) -> bool:
        return cl_ord_id in self._versions

    def __len__(self) -> int:
        return len(self._versions)

    def __iter__(self) -> Iterator[Order]:
        return iter(self._versions.values())

    def get(self, cl_ord_id: str) -> Order | None:
        """The version with this cl_ord_id (a REPLACED one included)."""
        return self._versions.get(cl_ord_id)

    def live(self, cl_ord_id: str) -> Order | None:
        """The current version of the order this cl_ord_id belongs to (follows replaces)."""
        o = self._versions.get(cl_ord_id)
        while o is not None and o.replaced_by:
            o = self._versions[o.replaced_by]
        return o

    def working(self, venue: str | None = None, sym: str | None = None,
                side: Side | None = None) -> list[Order]:
        """Working orders (not done), optionally of one venue / sym / side: cancel-all and a
        venue disconnect use this."""
        return [o for o in self._working.values()
                if (venue is None or o.venue == venue) and (sym is None or o.sym == sym)
                and (side is None or o.side is side)]

    def open_qty(self, sym: str, side: Side) -> int:
        """Quantity that may still fill on this sym and side (see Order.open_qty)."""
        return self._open.get((sym, side), 0)

    def position(self, account: str, sym: str) -> int:
        """Net filled quantity (buys minus sells) for this account and sym."""
        return self._positions.get((account, sym), 0)

    def children(self, parent_id: str) -> list[Order]:
        """The current version of every order sent with this parent id."""
        return [self.live(c) for c in self._children.get(parent_id, ())]

    # ---- local sends ---------------------------------------------------------------------
    def new(self, order: NewOrder, venue: str, now: int, parent_id: str = "",
            strategy: str = "") -> Change:
        """Record a new order about to go on the wire (PENDING_NEW)."""
        if (c := self._refuse_id(order.cl_ord_id)) is not None:
            return c
        if order.qty <= 0 or (order.ord_type is OrdType.LIMIT and not (order.price or 0) > 0):
            return self._refuse(Outcome.BAD, None, f"order {order.cl_ord_id}: qty must be > 0 and a "
                                f"limit order needs a price > 0 (qty {order.qty}, price {order.price})")
        o = self._add(order, venue, now, parent_id, strategy)
        self._working[o.cl_ord_id] = o
        self._open[(o.sym, o.side)] += o.order_qty
        return Change(Outcome.APPLIED, o, None, PENDING_NEW, open_qty=o.order_qty, open_orders=1)

    def deny(self, order: NewOrder, venue: str, text: str, now: int, parent_id: str = "",
             strategy: str = "") -> Change:
        """Record an order that pre-trade risk refused: it ends REJECTED with `text`, and never
        counted as open."""
        if (c := self._refuse_id(order.cl_ord_id)) is not None:
            return c
        o = self._add(order, venue, now, parent_id, strategy)
        o.status, o.text = TRANSITIONS[(PENDING_NEW, On.RISK_DENIED)], text
        return Change(Outcome.APPLIED, o, None, o.status, text=text)

    def cancel_sent(self, cancel: CancelOrder, now: int) -> Change:
        """Record a cancel about to go on the wire; INVALID means do not send it."""
        return self._request(cancel.cl_ord_id, cancel.orig_cl_ord_id, On.CANCEL_SENT,
                             Request(cancel.cl_ord_id, False), now)

    def replace_sent(self, rep: ReplaceOrder, now: int) -> Change:
        """Record a replace about to go on the wire; INVALID or BAD means do not send it."""
        o = self._versions.get(rep.orig_cl_ord_id)
        if o is not None:
            bad = (rep.qty < max(o.cum_qty, 1) or rep.sym != o.sym or rep.side is not o.side
                   or (rep.ord_type is OrdType.LIMIT and not (rep.price or 0) > 0))
            if bad:
                return self._refuse(Outcome.BAD, o, f"replace {rep.cl_ord_id} of {o.cl_ord_id}: the new "
                                    f"qty {rep.qty} must be >= the filled {o.cum_qty} and > 0, sym and "
                                    f"side must stay {o.sym} {o.side.name}, a limit needs a price > 0")
        return self._request(rep.cl_ord_id, rep.orig_cl_ord_id, On.REPLACE_SENT,
                             Request(rep.cl_ord_id, True, rep.qty, rep.price, rep.ord_type, rep.tif), now)

    def venue_down(self, venue: str, now: int, text: str = "venue disconnected") -> list[Change]:
        """The venue's session dropped: its working orders end CANCELED (the venue cancels on
        disconnect); fills it reports after reconnecting are still applied."""
        return [self._step(o, On.VENUE_DOWN, now, text=text) for o in self.working(venue=venue)]


    # ---- rebuilding after a restart ------------------------------------------------------
    def restore(self, order: NewOrder, venue: str, status: OrdStatus, cum_qty: int, avg_px: float,
                now: int, parent_id: str = "", strategy: str = "", fees: float = 0.0,
                order_id: str = "", orig_cl_ord_id: str = "", text: str = "") -> Change:
        """Put back a version from its last published state (e.g. today's `order` rows after a
        restart), without a state-machine step. A PENDING_CANCEL or PENDING_REPLACE state comes
        back as the working status its progress implies (the request's answer, if any, arrives
        as a normal report). The version it replaced (`orig_cl_ord_id`), if known, points to it.
        Open quantity and the working set are booked; positions are not (they follow fills:
        `restore_fill`), so the returned Change carries open deltas only."""
        if (c := self._refuse_id(order.cl_ord_id)) is not None:
            return c
        o = self._add(order, venue, now, parent_id, strategy)
        o.orig_cl_ord_id, o.cum_qty, o.avg_px, o.fees = orig_cl_ord_id, cum_qty, avg_px, fees
        o.order_id, o.text, o.updated = order_id, text, now
        o.acked = status is not PENDING_NEW
        if status in (PENDING_CANCEL, PENDING_REPLACE):
            status = PARTIAL if cum_qty else NEW
        o.status = status
        old = self._versions.get(orig_cl_ord_id) if orig_cl_ord_id else None
        if old is not None and old is not o:
            old.replaced_by = o.cl_ord_id
            if parent_id and o.cl_ord_id in self._children.get(parent_id, ()):
                self._children[parent_id].remove(o.cl_ord_id)   # children lists name first versions
        if o.working:
            self._working[o.cl_ord_id] = o
            self._open[(o.sym, o.side)] += o.open_qty
        return Change(Outcome.APPLIED, o, None, o.status, open_qty=o.open_qty,
                      open_orders=int(o.working))

    def restore_fill(self, venue: str, exec_id: str, account: str, sym: str, side: Side,
                     qty: int) -> bool:
        """Put back one execution from its published row: the position moves and the report's
        exec_id counts as seen (a venue resending it is a duplicate). False if already seen."""
        key = (venue, exec_id)
        if exec_id and key in self._seen:
            return False
        if exec_id:
            self._seen.add(key)
        self._positions[(account, sym)] += side.sign * qty
        return True

    # ---- venue messages ------------------------------------------------------------------
    def apply(self, msg: ExecReport | CancelReject, now: int = 0) -> Change:
        """Apply an ExecReport or a CancelReject; never raises on its content. `now` defaults
        to the message's own time."""
        if isinstance(msg, CancelReject):
            return self._cancel_reject(msg, now or msg.time)
        r, t = msg, now or msg.time
        if r.exec_id:
            key = (r.venue, r.exec_id)
            if key in self._seen:
                self.counts["duplicate"] += 1
                o = self._versions.get(r.cl_ord_id)
                return Change(Outcome.DUPLICATE, o, o and o.status, o and o.status,
                              text=f"duplicate exec_id {r.exec_id} from {r.venue or 'the venue'}")
            self._seen.add(key)
        o = (self._versions.get(r.cl_ord_id) or self._requests.get(r.cl_ord_id)
             or self._versions.get(r.orig_cl_ord_id))
        if o is None:
            self.counts["unknown"] += 1
            log.warning("execution report %s from %s for unknown order %s (orig %r): ignored",
                        r.exec_id, r.venue, r.cl_ord_id, r.orig_cl_ord_id)
            return Change(Outcome.UNKNOWN, text=f"unknown order {r.cl_ord_id}")
        if r.venue and o.venue and r.venue != o.venue:
            return self._refuse(Outcome.BAD, o, f"report {r.exec_id} for {o.cl_ord_id} came from "
                                f"{r.venue}, but the order went to {o.venue}")
        if r.exec_type is ExecType.ORDER_STATUS:
            self.counts["status"] += 1
            return Change(Outcome.UNCHANGED, o, o.status, o.status, text="order status report")
        if o.replaced_by and r.exec_type is ExecType.TRADE:
            o = self.live(o.cl_ord_id)
        first = None
        req = o.request
        if o.status is PENDING_REPLACE and req is not None and (r.exec_type is ExecType.REPLACED or (
                r.cl_ord_id == req.cl_ord_id and r.exec_type in _IMPLY_REPLACE)):
            prev, before = o.status, o.open_qty
            old, o = o, self._replace(o, r, t)
            first = self._finish(o, prev, before, True, replaced=old,
                                 text=f"{old.cl_ord_id} replaced by {o.cl_ord_id}")
            if r.exec_type is ExecType.REPLACED:
                return first
            self.counts["implied_replace"] += 1
        elif (r.exec_type is ExecType.REPLACED and r.cl_ord_id == o.cl_ord_id
              and o.orig_cl_ord_id and r.orig_cl_ord_id == o.orig_cl_ord_id):
            self.counts["stale"] += 1    # the ack of a replace a fill already completed
            return Change(Outcome.UNCHANGED, o, o.status, o.status, text="late replace ack")
        if r.order_id and not o.order_id:
            o.order_id = r.order_id
        if r.exec_type is ExecType.TRADE:
            ch = self._fill(o, r, t)
        else:
            ch = self._step(o, _BY_EXEC_TYPE[r.exec_type], t, text=r.text,
                            ack=r.exec_type not in (ExecType.PENDING_NEW, ExecType.REJECTED))
        if first is None:
            return ch
        return ch._replace(outcome=Outcome.APPLIED if ch.outcome is Outcome.UNCHANGED else ch.outcome,
                           prev=first.prev, open_qty=first.open_qty + ch.open_qty,
                           open_orders=first.open_orders + ch.open_orders, replaced=first.replaced)

    # ---- internals -----------------------------------------------------------------------
    def _add(self, order: NewOrder, venue: str, now: int, parent_id: str, strategy: str) -> Order:
        o = Order(order.cl_ord_id, order.sym, order.side, order.qty, order.price, order.ord_type,
                  order.tif, order.account, venue, parent_id, strategy, now)
        self._versions[o.cl_ord_id] = o
        if parent_id:
            self._children[parent_id].append(o.cl_ord_id)
        return o

    def _refuse_id(self, cl_ord_id: str) -> Change | None:
        if cl_ord_id in self._versions or cl_ord_id in self._requests:
            return self._refuse(Outcome.INVALID, self._versions.get(cl_ord_id),
                                f"cl_ord_id {cl_ord_id} is already in use: every order, cancel and "
                                f"replace needs a new one")
        return None

    def _refuse(self, outcome: Outcome, o: Order | None, text: str) -> Change:
        self.counts[outcome.name.lower()] += 1
        (log.error if outcome is Outcome.OVERFILL else log.warning)("%s: %s", outcome.value, text)
        st = o.status if o is not None else None
        return Change(outcome, o, st, st, text=text)

    def _request(self, cl_ord_id: str, orig: str, inp: Input, req: Request, now: int) -> Change:
        if (c := self._refuse_id(cl_ord_id)) is not None:
            return c
        o = self._versions.get(orig)
        if o is None:
            self.counts["unknown"] += 1
            return Change(Outcome.UNKNOWN, text=f"{inp.value}: unknown order {orig}")
        if (o.status, inp) not in TRANSITIONS:
            hint = (f"; its live version is {self.live(orig).cl_ord_id}" if o.replaced_by else
                    "; wait for the pending request's answer" if o.request else "")
            return self._refuse(Outcome.INVALID, o, f"{inp.value} for {orig}: the order is "
                                f"{o.status.name}{hint}")
        before = o.open_qty
        o.request = req
        self._requests[cl_ord_id] = o
        return self._step(o, inp, now, before=before)

    def _cancel_reject(self, rej: CancelReject, t: int) -> Change:
        o = self._requests.get(rej.cl_ord_id)
        if o is None:
            self.counts["unknown"] += 1
            log.warning("cancel reject for unknown request %s (orig %r) from %s: ignored",
                        rej.cl_ord_id, rej.orig_cl_ord_id, rej.venue)
            return Change(Outcome.UNKNOWN, text=f"cancel reject for unknown request {rej.cl_ord_id}")
        if rej.venue and o.venue and rej.venue != o.venue:
            return self._refuse(Outcome.BAD, o, f"cancel reject for {rej.cl_ord_id} came from "
                                f"{rej.venue}, but the order went to {o.venue}")
        if o.request is not None and o.request.cl_ord_id != rej.cl_ord_id:
            self.counts["stale"] += 1      # an older request's answer; a newer one is pending
            return Change(Outcome.UNCHANGED, o, o.status, o.status,
                          text=f"cancel reject for {rej.cl_ord_id}, no longer pending")
        return self._step(o, On.CANCEL_REJECT, t, text=rej.text)

    def _fill(self, o: Order, r: ExecReport, t: int) -> Change:
        q, px = r.last_qty, r.last_px
        if q <= 0 or not 0 < px < float("inf"):
            return self._refuse(Outcome.BAD, o, f"fill {r.exec_id} on {o.cl_ord_id}: last_qty {q} "
                                f"and last_px {px} must both be > 0")
        if o.cum_qty + q > o.order_qty:
            return self._refuse(Outcome.OVERFILL, o, f"fill {r.exec_id} of {q} on {o!r} would make "
                                f"cum_qty {o.cum_qty + q} > order_qty {o.order_qty}: not applied; "
                                f"reconcile with {o.venue} before trading on")
        if o.status in (CANCELED, EXPIRED):
            self.counts["late_fill"] += 1
            log.warning("fill %s of %d on %r after it was done: applied", r.exec_id, q, o)
        inp = On.FILL if o.cum_qty + q == o.order_qty else On.PARTIAL_FILL
        return self._step(o, inp, t, fill=(q, px, r.fee), ack=True, text=r.text)

    def _step(self, o: Order, inp: Input, t: int, text: str = "", before: int | None = None,
              fill: tuple[int, float, float] | None = None, ack: bool = False) -> Change:
        nxt = TRANSITIONS.get((o.status, inp))
        if nxt is None:
            return self._refuse(Outcome.INVALID, o, f"{inp.value} is impossible for {o!r}")
        prev, was_working = o.status, o.working
        if before is None:
            before = o.open_qty
        if ack:
            o.acked = True
        if fill is not None:
            q, px, _ = fill
            o.avg_px = (o.avg_px * o.cum_qty + px * q) / (o.cum_qty + q)
            o.cum_qty += q
            o.fees += fill[2]
        if nxt is WORKING:
            nxt = PARTIAL if o.cum_qty else NEW if o.acked else PENDING_NEW
        if nxt.terminal or inp is On.CANCEL_REJECT:
            o.request = None
        o.status, o.updated = nxt, t
        if text:
            o.text = text
        return self._finish(o, prev, before, was_working, fill=fill, text=text)

    def _replace(self, o: Order, r: ExecReport, t: int) -> Order:
        """End `o` REPLACED and start its replacement, which carries its fills. The venue's
        order_qty and price win over what we asked for."""
        req = o.request
        qty = r.order_qty if r.order_qty >= max(o.cum_qty, 1) else req.qty
        new = Order(req.cl_ord_id, o.sym, o.side, qty, r.price if r.price is not None else req.price,
                    req.ord_type, req.tif, o.account, o.venue, o.parent_id, o.strategy, t,
                    orig_cl_ord_id=o.cl_ord_id)
        new.cum_qty, new.avg_px, new.fees, new.acked = o.cum_qty, o.avg_px, o.fees, True
        new.order_id = r.order_id or o.order_id
        new.status = FILLED if new.cum_qty >= qty else PARTIAL if new.cum_qty else NEW
        o.status, o.replaced_by, o.request, o.updated = REPLACED, new.cl_ord_id, None, t
        self._versions[new.cl_ord_id] = new
        self._requests.pop(req.cl_ord_id, None)
        return new

    def _finish(self, o: Order, prev: OrdStatus, before: int, was_working: bool,
                fill: tuple[int, float, float] | None = None, replaced: Order | None = None,
                text: str = "") -> Change:
        """Book what changed: working set, open qty per (sym, side), positions."""
        d_open = o.open_qty - before
        d_orders = int(o.working) - int(was_working)
        if replaced is not None:
            self._working.pop(replaced.cl_ord_id, None)
        if o.working:
            self._working[o.cl_ord_id] = o
        else:
            self._working.pop(o.cl_ord_id, None)
        if d_open:
            self._open[(o.sym, o.side)] += d_open
        q, px, fee = fill or (0, 0.0, 0.0)
        if q:
            self._positions[(o.account, o.sym)] += o.side.sign * q
        changed = q or o.status is not prev or replaced is not None
        return Change(Outcome.APPLIED if changed else Outcome.UNCHANGED, o, prev, o.status, q, px,
                      fee, d_open, d_orders, replaced, text)
