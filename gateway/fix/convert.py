"""gateway.model objects <-> quickfix messages (FIX 4.4), both directions.

    to_fix(NewOrder | CancelOrder | ReplaceOrder | ExecReport | CancelReject, reject_reason=None)
        -> quickfix.Message (header 8/35 set; the session fills 49/56/34/52 when it sends)
    from_fix(message, venue="") -> the model object for 35 = D, F, G, 8 or 9
    fields_of(message) -> {tag: value}; from_fields(fields, venue) (one parse, several uses)

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

import datetime as _dt
import math
import time as _time

import numpy as np
import quickfix as fix

from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder,
                           OrdStatus, OrdType, ReplaceOrder, Side, TimeInForce)

BEGIN_STRING = "FIX.4.4"
NONE_ID = "NONE"

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
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_last_second: tuple[int, str] = (-1, "")       # format_time's cache: (second, "YYYYMMDD-HH:MM:SS")


def format_time(ns: int) -> str:
    """ns since the epoch (UTC) -> FIX UTCTimestamp, with 3, 6 or 9 fractional digits."""
    global _last_second
    if ns < 0:
        raise ValueError(f"time {ns} is before 1970; FIX timestamps cannot hold it")
    secs, frac = divmod(int(ns), 1_000_000_000)
    cached = _last_second
    if cached[0] == secs:
        head = cached[1]
    else:
        head = _time.strftime("%Y%m%d-%H:%M:%S", _time.gmtime(secs))
        _last_second = (secs, head)
    if frac % 1_000_000 == 0:
        return f"{head}.{frac // 1_000_000:03d}"
    if frac % 1_000 == 0:
        return f"{head}.{frac // 1_000:06d}"
    return f"{head}.{frac:09d}"


def parse_time(text: str, tag: int = 60) -> int:
    """FIX UTCTimestamp (YYYYMMDD-HH:MM:SS[.f...], up to 9 digits) -> ns since the epoch."""
    try:
        if (len(text) < 17 or text[8] != "-" or text[11] != ":" or text[14] != ":"
                or not (text[:8] + text[9:11] + text[12:14] + text[15:17]).isdigit()):
            raise ValueError
        frac = text[18:]
        if len(text) > 17 and (text[17] != "." or not frac.isdigit() or len(frac) > 9):
            raise ValueError
        h, mi, sec = int(text[9:11]), int(text[12:14]), int(text[15:17])
        if h > 23 or mi > 59 or sec > 60:          # 60: a leap second, which FIX allows
            raise ValueError
        days = _dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise MessageError(tag, f"{text!r} is not a UTCTimestamp (YYYYMMDD-HH:MM:SS.sss)") from None
    return (((days * 24 + h) * 60 + mi) * 60 + sec) * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def format_price(px: float) -> str:
    """The shortest decimal that reads back as exactly `px`, never in exponent form."""
    px = float(px)
    if not math.isfinite(px):
        raise ValueError(f"price {px} is not a finite number")
    text = repr(px)
    if "e" in text or "E" in text:
        text = np.format_float_positional(px, unique=True, trim="-")
    elif text.endswith(".0"):
        text = text[:-2]
    return text


# DATA fields (length-prefixed) may hold SOH bytes, so a message with one is read field by field
_DATA_TAGS = ("\x0189=", "\x0191=", "\x0196=", "\x01213=", "\x01355=")
_HEADER_TAGS = (34, 35, 43, 49, 52, 56)
_BODY_TAGS = (ACCOUNT, AVG_PX, CL_ORD_ID, COMMISSION, COMM_TYPE, CUM_QTY, EXEC_ID, LAST_PX, LAST_QTY, ORDER_ID,
              ORDER_QTY, ORD_STATUS, ORD_TYPE, ORIG_CL_ORD_ID, PRICE, SIDE, SYMBOL, TEXT, TIF, TRANSACT_TIME,
              CXL_REJ_REASON, ORD_REJ_REASON, EXEC_TYPE, LEAVES_QTY, CXL_REJ_RESPONSE_TO)


def fields_of(msg: fix.Message) -> dict[int, str]:
    """The fields of a message, header included, by tag: one call into quickfix instead of two
    per field. Our order-flow messages have no repeating groups."""
    text = msg.toString()
    if any(t in text for t in _DATA_TAGS):
        header = msg.getHeader()
        out = {t: header.getField(t) for t in _HEADER_TAGS if header.isSetField(t)}
        out.update({t: msg.getField(t) for t in _BODY_TAGS if msg.isSetField(t)})
        return out
    out = {}
    for item in text.split("\x01"):
        tag, _, value = item.partition("=")
        if tag:
            try:
                out[int(tag)] = value
            except ValueError:
                raise MessageError(0, f"{item!r} is not a tag=value field") from None
    return out


def _get(f: dict, tag: int) -> str:
    value = f.get(tag)
    if value is None:
        raise MessageError(tag, "required field is missing", missing=True)
    return value


def _enum(enum, f: dict, tag: int, default=None):
    raw = f.get(tag) if default is not None else _get(f, tag)
    if raw is None:
        return default
    try:
        return enum(raw)
    except ValueError:
        allowed = ", ".join(f"{m.value} ({m.name.lower()})" for m in enum)
        raise MessageError(tag, f"{enum.__name__} {raw!r} is not supported; use one of {allowed}") from None


def _qty(f: dict, tag: int, required: bool = True) -> int:
    raw = _get(f, tag) if required else f.get(tag)
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


def _px(f: dict, tag: int, required: bool = False) -> float | None:
    raw = _get(f, tag) if required else f.get(tag)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise MessageError(tag, f"price {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise MessageError(tag, f"price {raw!r} is not a finite number")
    return value


def _int(f: dict, tag: int, default: int) -> int:
    raw = f.get(tag)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise MessageError(tag, f"{raw!r} is not an integer") from None


def _time_of(f: dict, tag: int = TRANSACT_TIME, required: bool = True) -> int:
    raw = _get(f, tag) if required else f.get(tag)
    return 0 if raw is None else parse_time(raw, tag)


def _order_id(f: dict, required: bool) -> str:
    raw = _get(f, ORDER_ID) if required else f.get(ORDER_ID)
    return "" if raw is None or raw == NONE_ID else raw


def msg_type(msg: fix.Message) -> str:
    header = msg.getHeader()
    return header.getField(MSG_TYPE) if header.isSetField(MSG_TYPE) else ""


# -- model -> FIX ---------------------------------------------------------------------------
def _message(kind: str, fields: list[tuple[int, str]]) -> fix.Message:
    """One quickfix message from (tag, value) pairs, built as one string: quickfix parses it
    once, and recomputes BodyLength and CheckSum when the session sends it."""
    parts = [f"8={BEGIN_STRING}\x019=0\x0135={kind}\x01"]
    for tag, value in fields:
        if "\x01" in value:
            raise ValueError(f"tag {tag}: value {value!r} contains the FIX field delimiter SOH")
        if not value:
            raise ValueError(f"tag {tag}: FIX fields cannot be empty")
        parts.append(f"{tag}={value}\x01")
    parts.append("10=000\x01")
    return fix.Message("".join(parts), False)


def _id(value: str, tag: int, what: str) -> tuple[int, str]:
    if not value:
        raise ValueError(f"{what} is empty; FIX requires tag {tag}")
    return (tag, value)


def _new_order(o: NewOrder) -> fix.Message:
    f = [_id(o.cl_ord_id, CL_ORD_ID, "cl_ord_id")]
    if o.account:
        f.append((ACCOUNT, o.account))
    f += [_id(o.sym, SYMBOL, "sym"), (SIDE, Side(o.side).value), (TRANSACT_TIME, format_time(o.time)),
          (ORDER_QTY, str(int(o.qty))), (ORD_TYPE, OrdType(o.ord_type).value)]
    if o.price is not None:
        f.append((PRICE, format_price(o.price)))
    f.append((TIF, TimeInForce(o.tif).value))
    return _message("D", f)


def _cancel(o: CancelOrder) -> fix.Message:
    f = [_id(o.orig_cl_ord_id, ORIG_CL_ORD_ID, "orig_cl_ord_id")]
    if o.order_id:
        f.append((ORDER_ID, o.order_id))
    f += [_id(o.cl_ord_id, CL_ORD_ID, "cl_ord_id"), _id(o.sym, SYMBOL, "sym"), (SIDE, Side(o.side).value),
          (TRANSACT_TIME, format_time(o.time)), (ORDER_QTY, str(int(o.qty)))]
    return _message("F", f)


def _replace(o: ReplaceOrder) -> fix.Message:
    f = [(ORDER_ID, o.order_id)] if o.order_id else []
    f += [_id(o.orig_cl_ord_id, ORIG_CL_ORD_ID, "orig_cl_ord_id"), _id(o.cl_ord_id, CL_ORD_ID, "cl_ord_id"),
          _id(o.sym, SYMBOL, "sym"), (SIDE, Side(o.side).value), (TRANSACT_TIME, format_time(o.time)),
          (ORDER_QTY, str(int(o.qty))), (ORD_TYPE, OrdType(o.ord_type).value)]
    if o.price is not None:
        f.append((PRICE, format_price(o.price)))
    f.append((TIF, TimeInForce(o.tif).value))
    return _message("G", f)


def _exec_report(r: ExecReport, reject_reason: int | None) -> fix.Message:
    if OrdStatus(r.ord_status) is OrdStatus.REPLACED:
        raise ValueError("OrdStatus 5 (replaced) does not exist in FIX 4.4: a replace is "
                         "reported with ExecType 5 and the order's current status (new, partially filled)")
    f = [(ORDER_ID, r.order_id or NONE_ID)]
    if r.cl_ord_id:
        f.append((CL_ORD_ID, r.cl_ord_id))
    if r.orig_cl_ord_id:
        f.append((ORIG_CL_ORD_ID, r.orig_cl_ord_id))
    f += [_id(r.exec_id, EXEC_ID, "exec_id"), (EXEC_TYPE, ExecType(r.exec_type).value),
          (ORD_STATUS, OrdStatus(r.ord_status).value)]
    if reject_reason is not None:
        f.append((ORD_REJ_REASON, str(int(reject_reason))))
    f += [_id(r.sym, SYMBOL, "sym"), (SIDE, Side(r.side).value), (ORDER_QTY, str(int(r.order_qty)))]
    if r.price is not None:
        f.append((PRICE, format_price(r.price)))
    if r.exec_type is ExecType.TRADE:
        f += [(LAST_QTY, str(int(r.last_qty))), (LAST_PX, format_price(r.last_px))]
    f += [(LEAVES_QTY, str(int(r.leaves_qty))), (CUM_QTY, str(int(r.cum_qty))), (AVG_PX, format_price(r.avg_px)),
          (TRANSACT_TIME, format_time(r.time))]
    if r.fee:
        f += [(COMMISSION, format_price(r.fee)), (COMM_TYPE, COMM_ABSOLUTE)]
    if r.text:
        f.append((TEXT, r.text))
    return _message("8", f)


def _cancel_reject(r: CancelReject) -> fix.Message:
    if r.response_to not in ("1", "2"):
        raise ValueError(f"response_to {r.response_to!r}: FIX 434 is '1' (cancel) or '2' (replace)")
    f = [(ORDER_ID, r.order_id or NONE_ID), _id(r.cl_ord_id, CL_ORD_ID, "cl_ord_id"),
         _id(r.orig_cl_ord_id, ORIG_CL_ORD_ID, "orig_cl_ord_id"), (ORD_STATUS, OrdStatus(r.ord_status).value),
         (TRANSACT_TIME, format_time(r.time)), (CXL_REJ_RESPONSE_TO, r.response_to),
         (CXL_REJ_REASON, str(int(r.reason)))]
    if r.text:
        f.append((TEXT, r.text))
    return _message("9", f)


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
def _parse_new(m: dict) -> NewOrder:
    return NewOrder(cl_ord_id=_get(m, CL_ORD_ID), sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE),
                    qty=_qty(m, ORDER_QTY), ord_type=_enum(OrdType, m, ORD_TYPE), price=_px(m, PRICE),
                    tif=_enum(TimeInForce, m, TIF, TimeInForce.DAY), account=m.get(ACCOUNT, ""),
                    time=_time_of(m))


def _parse_cancel(m: dict) -> CancelOrder:
    return CancelOrder(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                       sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE), qty=_qty(m, ORDER_QTY),
                       order_id=_order_id(m, False), time=_time_of(m))


def _parse_replace(m: dict) -> ReplaceOrder:
    return ReplaceOrder(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                        sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE), qty=_qty(m, ORDER_QTY),
                        price=_px(m, PRICE), ord_type=_enum(OrdType, m, ORD_TYPE),
                        tif=_enum(TimeInForce, m, TIF, TimeInForce.DAY),
                        order_id=_order_id(m, False), time=_time_of(m))


def _parse_exec_report(m: dict, venue: str) -> ExecReport:
    exec_type = _enum(ExecType, m, EXEC_TYPE)
    trade = exec_type is ExecType.TRADE
    fee = _px(m, COMMISSION) or 0.0
    if fee and m.get(COMM_TYPE) not in (None, COMM_ABSOLUTE):
        raise MessageError(COMM_TYPE, "only absolute commissions (13=3) are understood")
    status = _enum(OrdStatus, m, ORD_STATUS)
    if status is OrdStatus.REPLACED:
        raise MessageError(ORD_STATUS, "OrdStatus 5 is not FIX 4.4; report the order's current status")
    return ExecReport(cl_ord_id=m.get(CL_ORD_ID, ""), order_id=_order_id(m, True),
                      exec_id=_get(m, EXEC_ID), exec_type=exec_type, ord_status=status,
                      sym=_get(m, SYMBOL), side=_enum(Side, m, SIDE),
                      order_qty=_qty(m, ORDER_QTY, required=False),
                      last_qty=_qty(m, LAST_QTY, required=trade),
                      last_px=_px(m, LAST_PX, required=trade) or 0.0,
                      leaves_qty=_qty(m, LEAVES_QTY), cum_qty=_qty(m, CUM_QTY),
                      avg_px=_px(m, AVG_PX, required=True), orig_cl_ord_id=m.get(ORIG_CL_ORD_ID, ""),
                      price=_px(m, PRICE), text=m.get(TEXT, ""), venue=venue, fee=fee,
                      time=_time_of(m, required=False))


def _parse_cancel_reject(m: dict, venue: str) -> CancelReject:
    response_to = _get(m, CXL_REJ_RESPONSE_TO)
    if response_to not in ("1", "2"):
        raise MessageError(CXL_REJ_RESPONSE_TO, f"{response_to!r} is not 1 (cancel) or 2 (replace)")
    return CancelReject(cl_ord_id=_get(m, CL_ORD_ID), orig_cl_ord_id=_get(m, ORIG_CL_ORD_ID),
                        order_id=_order_id(m, True), ord_status=_enum(OrdStatus, m, ORD_STATUS),
                        response_to=response_to, reason=_int(m, CXL_REJ_REASON, 99),
                        text=m.get(TEXT, ""), venue=venue, time=_time_of(m, required=False))


_PARSERS = {"D": lambda m, v: _parse_new(m), "F": lambda m, v: _parse_cancel(m),
            "G": lambda m, v: _parse_replace(m), "8": _parse_exec_report, "9": _parse_cancel_reject}


def from_fields(fields: dict[int, str], venue: str = ""):
    """The model object for an order-flow message given as `fields_of` returns it."""
    kind = fields.get(MSG_TYPE, "")
    parse = _PARSERS.get(kind)
    if parse is None:
        raise MessageError(MSG_TYPE, f"message type {kind!r} is not part of the order flow (D F G 8 9)")
    return parse(fields, venue)


def from_fix(msg: fix.Message, venue: str = ""):
    """The model object for an order-flow message; MessageError if it cannot be one."""
    return from_fields(fields_of(msg), venue)


def reject_reason(fields: dict[int, str]) -> int | None:
    """OrdRejReason (103) of an ExecutionReport, when present (the model keeps only text)."""
    raw = fields.get(ORD_REJ_REASON)
    try:
        return None if raw is None else int(raw)
    except ValueError:
        return None
