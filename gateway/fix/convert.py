"""gateway.model objects <-> quickfix messages (FIX 4.4), both directions.

    to_fix(NewOrder | CancelOrder | ReplaceOrder | ExecReport | CancelReject, reject_reason=None)
        -> quickfix.Message (header 8/35 set; the session fills 49/56/34/52 when it sends)
    from_fix(message, venue="") -> the model object for 35 = D, F, G, 8 or 9

`from_fix` raises `MessageError` (and nothing else) when a field the model needs is missing
or has a value the model cannot hold (side 5, a fractional quantity, a NaN price, a bad
timestamp...). Its `.tag` names the field and `.missing` tells a missing tag from a bad
value, so a caller can answer with the right session-level Reject (373 = 1 or 5).
Values that are well formed but unacceptable to a venue (qty <= 0, a limit without a price)
are not parse errors: they are business rejects, decided by the matching engine.

Wire conventions: quantities are whole numbers; prices are written in their shortest exact
decimal form (no exponent), so a float survives the round trip unchanged; TransactTime (60)
carries as many fractional digits as the ns time needs (3, 6 or 9). A report's `venue` is
not on the wire (the session says which venue it came from): pass it to `from_fix`.
OrdRejReason (103) goes on the wire from `reject_reason`; the model keeps only the text.
OrderID (37) is required in 8 and 9: an empty order_id is sent as "NONE", as FIX
prescribes for an unknown order, and read back as "".
"""
from __future__ import annotations

import calendar
import math
import time as _time

import quickfix as fix

from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder,
                           OrdStatus, OrdType, ReplaceOrder, Side, TimeInForce)

BEGIN_STRING = "FIX.4.4"
NONE_ID = "NONE"
MSG_TYPES = {NewOrder: "D", CancelOrder: "F", ReplaceOrder: "G", ExecReport: "8", CancelReject: "9"}

# tags
ACCOUNT, AVG_PX, CL_ORD_ID, COMMISSION, COMM_TYPE, CUM_QTY, EXEC_ID = 1, 6, 11, 12, 13, 14, 17
LAST_PX, LAST_QTY, MSG_TYPE, ORDER_ID, ORDER_QTY, ORD_STATUS, ORD_TYPE = 31, 32, 35, 37, 38, 39, 40
ORIG_CL_ORD_ID, PRICE, SIDE, SYMBOL, TEXT, TIF, TRANSACT_TIME = 41, 44, 54, 55, 58, 59, 60
CXL_REJ_REASON, ORD_REJ_REASON, EXEC_TYPE, LEAVES_QTY, CXL_REJ_RESPONSE_TO = 102, 103, 150, 151, 434
MSG_SEQ_NUM, POSS_DUP = 34, 43
COMM_ABSOLUTE = "3"


class MessageError(ValueError):
    """A FIX message the model cannot represent. `tag` is the offending field; `missing` is
    True when it is absent (reject with 373=1), False when its value is bad (373=5)."""

    def __init__(self, tag: int, problem: str, missing: bool = False):
        super().__init__(f"tag {tag}: {problem}")
        self.tag, self.problem, self.missing = tag, problem, missing


# -- values ---------------------------------------------------------------------------------
def format_time(ns: int) -> str:
    """ns since the epoch (UTC) -> FIX UTCTimestamp, with 3, 6 or 9 fractional digits."""
    if ns < 0:
        raise ValueError(f"time {ns} is before 1970; FIX timestamps cannot hold it")
    secs, frac = divmod(int(ns), 1_000_000_000)
    head = _time.strftime("%Y%m%d-%H:%M:%S", _time.gmtime(secs))
    if frac % 1_000_000 == 0:
        return f"{head}.{frac // 1_000_000:03d}"
    if frac % 1_000 == 0:
        return f"{head}.{frac // 1_000:06d}"
    return f"{head}.{frac:09d}"


def parse_time(text: str, tag: int = TRANSACT_TIME) -> int:
    """FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.f...], up to 9 digits) -> ns since the epoch."""
    try:
        head, _, frac = text.partition(".")
        if len(head) != 17 or head[8] != "-" or (frac and (not frac.isdigit() or len(frac) > 9)):
            raise ValueError
        st = _time.strptime(head, "%Y%m%d-%H:%M:%S")
    except ValueError:
        raise MessageError(tag, f"{text!r} is not a UTCTimestamp (YYYYMMDD-HH:MM:SS.sss)") from None
    return calendar.timegm(st) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def format_price(px: float) -> str:
    """The shortest decimal that reads back as exactly `px`, never in exponent form."""
    px = float(px)
    if not math.isfinite(px):
        raise ValueError(f"price {px} is not a finite number")
    text = repr(px)
    if "e" in text or "E" in text:
        import numpy as np
        text = np.format_float_positional(px, unique=True, trim="-")
    elif text.endswith(".0"):
        text = text[:-2]
    return text


def _get(msg: fix.FieldMap, tag: int) -> str:
    if not msg.isSetField(tag):
        raise MessageError(tag, "required field is missing", missing=True)
    return msg.getField(tag)


def _opt(msg: fix.FieldMap, tag: int) -> str | None:
    return msg.getField(tag) if msg.isSetField(tag) else None


def _enum(enum, msg, tag: int, default=None):
    raw = _opt(msg, tag) if default is not None else _get(msg, tag)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(f"{m.value} ({m.name.lower()})" for m in enum)
        raise MessageError(tag, f"{enum.__name__} {raw!r} is not supported; use one of {allowed}") from None


def _qty(msg, tag: int, required: bool = True) -> int:
    raw = _get(msg, tag) if required else _opt(msg, tag)
    if raw is None:
        return 0
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        value = float(raw)
    except ValueError:
        raise MessageError(tag, f"quantity {raw!r} is not a number") from None
    if not value.is_integer():
        raise MessageError(tag, f"quantity {raw!r} is not a whole number of units")
    return int(value)


def _px(msg, tag: int, required: bool = False) -> float | None:
    raw = _get(msg, tag) if required else _opt(msg, tag)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise MessageError(tag, f"price {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise MessageError(tag, f"price {raw!r} is not a finite number")
    return value


def _int(msg, tag: int, default: int) -> int:
    raw = _opt(msg, tag)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise MessageError(tag, f"{raw!r} is not an integer") from None


def _time_of(msg, tag: int = TRANSACT_TIME, required: bool = True) -> int:
    raw = _get(msg, tag) if required else _opt(msg, tag)
    return 0 if raw is None else parse_time(raw, tag)


def _order_id(msg, required: bool) -> str:
    raw = _get(msg, ORDER_ID) if required else _opt(msg, ORDER_ID)
    return "" if raw is None or raw == NONE_ID else raw


def msg_type(msg: fix.Message) -> str:
    header = msg.getHeader()
    return header.getField(MSG_TYPE) if header.isSetField(MSG_TYPE) else ""


# -- model -> FIX ---------------------------------------------------------------------------
def _message(kind: str) -> fix.Message:
    msg = fix.Message()
    header = msg.getHeader()
    header.setField(8, BEGIN_STRING)
    header.setField(MSG_TYPE, kind)
    return msg


def _set(msg: fix.Message, tag: int, value: str) -> None:
    if "\x01" in value:
        raise ValueError(f"tag {tag}: value {value!r} contains the FIX field delimiter SOH")
    msg.setField(tag, value)


def _set_id(msg, tag: int, value: str, what: str) -> None:
    if not value:
        raise ValueError(f"{what} is empty; FIX requires tag {tag}")
    _set(msg, tag, value)


def _new_order(o: NewOrder) -> fix.Message:
    m = _message("D")
    _set_id(m, CL_ORD_ID, o.cl_ord_id, "cl_ord_id")
    if o.account:
        _set(m, ACCOUNT, o.account)
    _set_id(m, SYMBOL, o.sym, "sym")
    _set(m, SIDE, Side(o.side).value)
    _set(m, TRANSACT_TIME, format_time(o.time))
    _set(m, ORDER_QTY, str(int(o.qty)))
    _set(m, ORD_TYPE, OrdType(o.ord_type).value)
    if o.price is not None:
        _set(m, PRICE, format_price(o.price))
    _set(m, TIF, TimeInForce(o.tif).value)
    return m


def _cancel(o: CancelOrder) -> fix.Message:
    m = _message("F")
    _set_id(m, ORIG_CL_ORD_ID, o.orig_cl_ord_id, "orig_cl_ord_id")
    if o.order_id:
        _set(m, ORDER_ID, o.order_id)
    _set_id(m, CL_ORD_ID, o.cl_ord_id, "cl_ord_id")
    _set_id(m, SYMBOL, o.sym, "sym")
    _set(m, SIDE, Side(o.side).value)
    _set(m, TRANSACT_TIME, format_time(o.time))
    _set(m, ORDER_QTY, str(int(o.qty)))
    return m


def _replace(o: ReplaceOrder) -> fix.Message:
    m = _message("G")
    if o.order_id:
        _set(m, ORDER_ID, o.order_id)
    _set_id(m, ORIG_CL_ORD_ID, o.orig_cl_ord_id, "orig_cl_ord_id")
    _set_id(m, CL_ORD_ID, o.cl_ord_id, "cl_ord_id")
    _set_id(m, SYMBOL, o.sym, "sym")
    _set(m, SIDE, Side(o.side).value)
    _set(m, TRANSACT_TIME, format_time(o.time))
    _set(m, ORDER_QTY, str(int(o.qty)))
    _set(m, ORD_TYPE, OrdType(o.ord_type).value)
    if o.price is not None:
        _set(m, PRICE, format_price(o.price))
    _set(m, TIF, TimeInForce(o.tif).value)
    return m


def _exec_report(r: ExecReport, reject_reason: int | None) -> fix.Message:
    if OrdStatus(r.ord_status) is OrdStatus.REPLACED:
        raise ValueError("OrdStatus 5 (replaced) does not exist in FIX 4.4: a replace is "
                         "reported with ExecType 5 and the order's current status (new, partially filled)")
    m = _message("8")
    _set(m, ORDER_ID, r.order_id or NONE_ID)
    if r.cl_ord_id:
        _set(m, CL_ORD_ID, r.cl_ord_id)
    if r.orig_cl_ord_id:
        _set(m, ORIG_CL_ORD_ID, r.orig_cl_ord_id)
    _set_id(m, EXEC_ID, r.exec_id, "exec_id")
    _set(m, EXEC_TYPE, ExecType(r.exec_type).value)
    _set(m, ORD_STATUS, OrdStatus(r.ord_status).value)
    if reject_reason is not None:
        _set(m, ORD_REJ_REASON, str(int(reject_reason)))
    _set_id(m, SYMBOL, r.sym, "sym")
    _set(m, SIDE, Side(r.side).value)
    _set(m, ORDER_QTY, str(int(r.order_qty)))
    if r.price is not None:
        _set(m, PRICE, format_price(r.price))
    if r.exec_type is ExecType.TRADE:
        _set(m, LAST_QTY, str(int(r.last_qty)))
        _set(m, LAST_PX, format_price(r.last_px))
    _set(m, LEAVES_QTY, str(int(r.leaves_qty)))
    _set(m, CUM_QTY, str(int(r.cum_qty)))
    _set(m, AVG_PX, format_price(r.avg_px))
    _set(m, TRANSACT_TIME, format_time(r.time))
    if r.fee:
        _set(m, COMMISSION, format_price(r.fee))
        _set(m, COMM_TYPE, COMM_ABSOLUTE)
    if r.text:
        _set(m, TEXT, r.text)
    return m


def _cancel_reject(r: CancelReject) -> fix.Message:
    if r.response_to not in ("1", "2"):
        raise ValueError(f"response_to {r.response_to!r}: FIX 434 is '1' (cancel) or '2' (replace)")
    m = _message("9")
    _set(m, ORDER_ID, r.order_id or NONE_ID)
    _set_id(m, CL_ORD_ID, r.cl_ord_id, "cl_ord_id")
    _set_id(m, ORIG_CL_ORD_ID, r.orig_cl_ord_id, "orig_cl_ord_id")
    _set(m, ORD_STATUS, OrdStatus(r.ord_status).value)
    _set(m, TRANSACT_TIME, format_time(r.time))
    _set(m, CXL_REJ_RESPONSE_TO, r.response_to)
    _set(m, CXL_REJ_REASON, str(int(r.reason)))
    if r.text:
        _set(m, TEXT, r.text)
    return m


def to_fix(obj, reject_reason: int | None = None) -> fix.Message:
    """The FIX message for a model object. Raises ValueError for an object FIX cannot carry
    (an empty id, a non-finite price, OrdStatus 5)."""
    if isinstance(obj, NewOrder):
        return _new_order(obj)
    if isinstance(obj, CancelOrder):
        return _cancel(obj)
    if isinstance(obj, ReplaceOrder):
        return _replace(obj)
    if isinstance(obj, ExecReport):
        return _exec_report(obj, reject_reason)
    if isinstance(obj, CancelReject):
        return _cancel_reject(obj)
    raise TypeError(f"no FIX message for {type(obj).__name__}")


# -- FIX -> model ---------------------------------------------------------------------------
def _parse_new(m) -> NewOrder:
    return NewOrder(cl_ord_id=_get(m, CL_ORD_ID), sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE),
                    qty=_qty(m, ORDER_QTY), ord_type=_enum(OrdType, m, ORD_TYPE), price=_px(m, PRICE),
                    tif=_enum(TimeInForce, m, TIF, TimeInForce.DAY), account=_opt(m, ACCOUNT) or "",
                    time=_time_of(m))


def _parse_cancel(m) -> CancelOrder:
    return CancelOrder(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                       sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE), qty=_qty(m, ORDER_QTY),
                       order_id=_order_id(m, False), time=_time_of(m))


def _parse_replace(m) -> ReplaceOrder:
    return ReplaceOrder(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                        sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE), qty=_qty(m, ORDER_QTY),
                        price=_px(m, PRICE), ord_type=_enum(OrdType, m, ORD_TYPE),
                        tif=_enum(TimeInForce, m, TIF, TimeInForce.DAY),
                        order_id=_order_id(m, False), time=_time_of(m))


def _parse_exec_report(m, venue: str) -> ExecReport:
    exec_type = _enum(ExecType, m, EXEC_TYPE)
    trade = exec_type is ExecType.TRADE
    fee = _px(m, COMMISSION) or 0.0
    if fee and _opt(m, COMM_TYPE) not in (None, COMM_ABSOLUTE):
        raise MessageError(COMM_TYPE, "only absolute commissions (13=3) are understood")
    status = _enum(OrdStatus, m, ORD_STATUS)
    if status is OrdStatus.REPLACED:
        raise MessageError(ORD_STATUS, "OrdStatus 5 is not FIX 4.4; report the order's current status")
    return ExecReport(cl_ord_id=_opt(m, CL_ORD_ID) or "", order_id=_order_id(m, True),
                      exec_id=_get(m, EXEC_ID), exec_type=exec_type, ord_status=status,
                      sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE),
                      order_qty=_qty(m, ORDER_QTY, required=False),
                      last_qty=_qty(m, LAST_QTY, required=trade),
                      last_px=_px(m, LAST_PX, required=trade) or 0.0,
                      leaves_qty=_qty(m, LEAVES_QTY), cum_qty=_qty(m, CUM_QTY),
                      avg_px=_px(m, AVG_PX, required=True), orig_cl_ord_id=_opt(m, ORIG_CL_ORD_ID) or "",
                      price=_px(m, PRICE), text=_opt(m, TEXT) or "", venue=venue, fee=fee,
                      time=_time_of(m, required=False))


def _parse_cancel_reject(m, venue: str) -> CancelReject:
    response_to = _get(m, CXL_REJ_RESPONSE_TO)
    if response_to not in ("1", "2"):
        raise MessageError(CXL_REJ_RESPONSE_TO, f"{response_to!r} is not 1 (cancel) or 2 (replace)")
    return CancelReject(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                        order_id=_order_id(m, True), ord_status=_enum(OrdStatus, m, ORD_STATUS),
                        response_to=response_to, reason=_int(m, CXL_REJ_REASON, 99),
                        text=_opt(m, TEXT) or "", venue=venue, time=_time_of(m, required=False))


def from_fix(msg: fix.Message, venue: str = ""):
    """The model object for an order-flow message; MessageError if it cannot be one."""
    kind = msg_type(msg)
    if kind == "D":
        return _parse_new(msg)
    if kind == "F":
        return _parse_cancel(msg)
    if kind == "G":
        return _parse_replace(msg)
    if kind == "8":
        return _parse_exec_report(msg, venue)
    if kind == "9":
        return _parse_cancel_reject(msg, venue)
    raise MessageError(MSG_TYPE, f"message type {kind!r} is not part of the order flow (D F G 8 9)")


def reject_reason(msg: fix.Message) -> int | None:
    """OrdRejReason (103) of an ExecutionReport, when present (the model keeps only text)."""
    raw = _opt(msg, ORD_REJ_REASON)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
