"""The trading path's vocabulary, in FIX 4.4 terms, shared by the gateway, the venues, the
matching library, the strategies and the backtester.

Enum values are the FIX wire values (Side 54, OrdType 40, TimeInForce 59, ExecType 150,
OrdStatus 39), so converting to and from a FIX message is a lookup, never a translation table.
Quantities are whole units (int); prices are floats. Times are int ns since the epoch (UTC).

Identifiers: `cl_ord_id` (11) is chosen by whoever sends the order and is unique per order
version (a replace gets a new one; `orig_cl_ord_id` (41) names the one it replaces);
`order_id` (37) is the venue's id for the order across versions; `exec_id` (17) is unique per
execution report at a venue, so a duplicate report is recognised by it.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Side(str, Enum):
    BUY = "1"
    SELL = "2"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrdType(str, Enum):
    MARKET = "1"
    LIMIT = "2"


class TimeInForce(str, Enum):
    DAY = "0"
    GTC = "1"
    IOC = "3"
    FOK = "4"


class ExecType(str, Enum):
    NEW = "0"
    CANCELED = "4"
    REPLACED = "5"
    PENDING_CANCEL = "6"
    REJECTED = "8"
    PENDING_NEW = "A"
    EXPIRED = "C"
    PENDING_REPLACE = "E"
    TRADE = "F"
    ORDER_STATUS = "I"


class OrdStatus(str, Enum):
    NEW = "0"
    PARTIALLY_FILLED = "1"
    FILLED = "2"
    CANCELED = "4"
    REPLACED = "5"          # a version that was replaced (kept as a terminal state per version)
    PENDING_CANCEL = "6"
    REJECTED = "8"
    PENDING_NEW = "A"
    EXPIRED = "C"
    PENDING_REPLACE = "E"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({OrdStatus.FILLED, OrdStatus.CANCELED, OrdStatus.REPLACED,
                       OrdStatus.REJECTED, OrdStatus.EXPIRED})


@dataclass(frozen=True, slots=True)
class NewOrder:
    """A new order as it goes to a venue (FIX NewOrderSingle, 35=D)."""
    cl_ord_id: str
    sym: str
    side: Side
    qty: int
    ord_type: OrdType = OrdType.LIMIT
    price: float | None = None        # required for LIMIT, ignored for MARKET
    tif: TimeInForce = TimeInForce.DAY
    account: str = ""
    time: int = 0                     # TransactTime (60), ns


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel a working order (FIX OrderCancelRequest, 35=F)."""
    cl_ord_id: str
    orig_cl_ord_id: str
    sym: str
    side: Side
    qty: int                          # OrderQty of the order being canceled
    order_id: str = ""
    time: int = 0


@dataclass(frozen=True, slots=True)
class ReplaceOrder:
    """Change qty and/or price of a working order (FIX OrderCancelReplaceRequest, 35=G).
    `qty` is the new total order quantity (already-filled quantity included), as in FIX."""
    cl_ord_id: str
    orig_cl_ord_id: str
    sym: str
    side: Side
    qty: int
    price: float | None
    ord_type: OrdType = OrdType.LIMIT
    tif: TimeInForce = TimeInForce.DAY
    order_id: str = ""
    time: int = 0


@dataclass(frozen=True, slots=True)
class ExecReport:
    """A venue's report on an order (FIX ExecutionReport, 35=8). Invariants a venue keeps:
    cum_qty + leaves_qty == order_qty while the order works (leaves 0 once it is done);
    avg_px is the qty-weighted mean of every fill's last_px; last_qty/last_px are set only for
    exec_type TRADE."""
    cl_ord_id: str
    order_id: str
    exec_id: str
    exec_type: ExecType
    ord_status: OrdStatus
    sym: str
    side: Side
    order_qty: int
    last_qty: int = 0
    last_px: float = 0.0
    leaves_qty: int = 0
    cum_qty: int = 0
    avg_px: float = 0.0
    orig_cl_ord_id: str = ""
    price: float | None = None        # the order's limit price, when it has one
    text: str = ""
    venue: str = ""
    fee: float = 0.0                  # commission (12) on this fill, in price currency
    time: int = 0                     # TransactTime (60), ns


@dataclass(frozen=True, slots=True)
class CancelReject:
    """A venue refused a cancel or replace (FIX OrderCancelReject, 35=9)."""
    cl_ord_id: str
    orig_cl_ord_id: str
    order_id: str
    ord_status: OrdStatus             # the order's status after the refusal
    response_to: str                  # CxlRejResponseTo (434): "1" cancel, "2" replace
    reason: int = 99                  # CxlRejReason (102): 0 too late, 1 unknown order, 99 other
    text: str = ""
    venue: str = ""
    time: int = 0
