"""Order intents: every message between a client (strategy, CLI) and the gateway, parsed and
built here and nowhere else. The protocol is /work/helpers/INTENTS.md; in short:

    request  one frame of UTF-8 JSON: {"op": ..., "tag": ..., [client], op fields}
    reply    {"tag", "ok", "code", "text", ...op fields}: exactly one per request
    event    {"event": "order" | "fill" | "state", ...}: asynchronous, DEALER clients only

`parse(frame)` turns a request frame into one of the request classes below or raises
`IntentError` (with the tag when the request got that far, so the error reply names it).
It is strict: unknown ops, unknown fields, wrong types, a float where a whole number is
needed, NaN, an over-long string: all refused with a text that says what to send instead.
Nothing else is raised, whatever the bytes (hypothesis-tested).

`encode(obj)` is the one JSON encoder of the protocol (compact, NaN-free: non-finite floats
become null). `reply`, `order_event`, `fill_event` and `state_event` build the dicts, so the
gateway and the backtester's in-process port produce the same shapes.

Codes. A denied or failed request has `ok: false` and a stable lower-case `code`: a
pre-trade risk code (the value of a `gateway.risk.Deny`, e.g. "max_order_qty",
"price_collar", "halted"; `Deny(code)` turns it back into the enum) or one of the gateway's
own codes in `CODES`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

MAX_TAG = 64            # characters in a tag, a client id, a target
MAX_NAME = 64           # sym, account, strategy, venue, reason, filter values
MAX_TEXT = 500          # a reason given to halt/reduce/resume

OPS = ("new", "cancel", "replace", "cancel_all", "halt", "reduce", "resume", "orders", "status")
SIDES = ("buy", "sell")
TYPES = ("limit", "market")
TIFS = ("day", "gtc", "ioc", "fok")

# The gateway's own reply codes (risk denials use gateway.risk.Deny values).
CODES = {
    "bad_request": "the request is not valid JSON of this protocol (the text says what is wrong)",
    "too_large": "the request is larger than [gateway] max_intent_bytes",
    "unknown_venue": "the venue named is not one the gateway trades",
    "venue_down": "the venue named is not connected (or not caught up after a reconnect)",
    "no_venue": "no venue the gateway trades is connected",
    "unknown_order": "no order with that tag (from this client) or id",
    "not_working": "the order is already done (filled, canceled, rejected or expired)",
    "pending": "a cancel or replace of this order is still waiting for the venue's answer",
    "halt_timeout": "halted, but some orders were still working when the wait ended",
    "busy": "the gateway is recovering and its queue of waiting requests is full; retry",
    "internal": "the gateway failed on this request (a bug: see its log); it goes on",
}


class IntentError(ValueError):
    """A request that cannot be carried out as sent. `tag` is the request's tag when it was
    readable (the error reply carries it), `code` one of CODES."""

    def __init__(self, text: str, tag: str | None = None, code: str = "bad_request"):
        super().__init__(text)
        self.text, self.tag, self.code = text, tag, code


# -- requests ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class New:
    tag: str
    sym: str
    side: str                 # "buy" | "sell"
    qty: int
    type: str = "limit"       # "limit" | "market"
    price: float | None = None
    tif: str = "day"
    account: str | None = None
    strategy: str | None = None
    venue: str | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    tag: str
    target: str               # the tag of the order to cancel (or its id)
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Replace:
    tag: str
    target: str
    qty: int                  # the new total quantity (filled quantity included)
    price: float | None = None   # None: keep the price
    client: str | None = None


@dataclass(frozen=True, slots=True)
class CancelAll:
    tag: str
    strategy: str | None = None
    account: str | None = None
    sym: str | None = None
    client: str | None = None


@dataclass(frozen=True, slots=True)
class SetState:
    """halt, reduce or resume (`op`)."""
    op: str
    tag: str
    reason: str = ""
    client: str | None = None


@dataclass(frozen=True, slots=True)
class ListOrders:
    tag: str
    open: bool = False
    limit: int = 1000
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    tag: str
    client: str | None = None


Request = New | Cancel | Replace | CancelAll | SetState | ListOrders | Status

# fields each op takes besides op/tag/client: name -> (kind, required)
_FIELDS: dict[str, dict[str, tuple[str, bool]]] = {
    "new": {"sym": ("name", True), "side": ("side", True), "qty": ("qty", True),
            "type": ("type", False), "price": ("price", False), "tif": ("tif", False),
            "account": ("name", False), "strategy": ("name", False), "venue": ("name", False)},
    "cancel": {"target": ("tag", True)},
    "replace": {"target": ("tag", True), "qty": ("qty", True), "price": ("price", False)},
    "cancel_all": {"strategy": ("name", False), "account": ("name", False), "sym": ("name", False)},
    "halt": {"reason": ("text", False)},
    "reduce": {"reason": ("text", False)},
    "resume": {"reason": ("text", False)},
    "orders": {"open": ("bool", False), "limit": ("limit", False)},
    "status": {},
}
_CHOICES = {"side": SIDES, "type": TYPES, "tif": TIFS}


def _text(value: Any, name: str, limit: int, tag: str | None, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise IntentError(f"{name} must be a string, got {type(value).__name__}", tag)
    if not value and not empty:
        raise IntentError(f"{name} must not be empty", tag)
    if len(value) > limit:
        raise IntentError(f"{name} is {len(value)} characters; at most {limit}", tag)
    if any(c < " " or c == "\x7f" for c in value):
        raise IntentError(f"{name} holds control characters; send printable text", tag)
    return value


def _value(kind: str, value: Any, name: str, tag: str | None):
    if kind == "name":
        return _text(value, name, MAX_NAME, tag)
    if kind == "tag":
        return _text(value, name, MAX_TAG, tag)
    if kind == "text":
        return _text(value, name, MAX_TEXT, tag, empty=True)
    if kind in _CHOICES:
        if value not in _CHOICES[kind]:
            raise IntentError(f"{name} must be one of {list(_CHOICES[kind])}, got {value!r}", tag)
        return value
    if kind in ("qty", "limit"):
        if type(value) is not int:        # bool is an int subclass: refused too
            raise IntentError(f"{name} must be a whole number (JSON integer), got {value!r}", tag)
        if value <= 0 or value >= 2**63:
            raise IntentError(f"{name} must be > 0 and < 2**63, got {value}", tag)
        return value
    if kind == "price":
        if value is None:
            return None
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            raise IntentError(f"{name} must be a finite number > 0 (or null), got {value!r}", tag)
        return float(value)
    if kind == "bool":
        if type(value) is not bool:
            raise IntentError(f"{name} must be true or false, got {value!r}", tag)
        return value
    raise AssertionError(kind)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON here")


def parse(frame: bytes | bytearray | memoryview, max_bytes: int | None = None) -> Request:
    """The request in one frame; IntentError (and nothing else) when it is not a valid one."""
    if max_bytes is not None and len(frame) > max_bytes:
        raise IntentError(f"request of {len(frame)} bytes; at most {max_bytes}", code="too_large")
    try:
        data = json.loads(bytes(frame).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise IntentError(f"not UTF-8 JSON ({e}); send one JSON object per frame, "
                          f'e.g. {{"op": "status", "tag": "s1"}}') from None
    if not isinstance(data, dict):
        raise IntentError(f"a request is a JSON object, got {type(data).__name__}")
    raw_tag = data.get("tag")
    tag = raw_tag if isinstance(raw_tag, str) and 0 < len(raw_tag) <= MAX_TAG else None
    op = data.get("op")
    if op not in OPS:
        raise IntentError(f"op must be one of {list(OPS)}, got {op!r}", tag)
    if "tag" not in data:
        raise IntentError(f"{op}: a tag (string, 1-{MAX_TAG} characters) is required", None)
    tag = _text(raw_tag, "tag", MAX_TAG, None)
    client = data.get("client")
    if client is not None:
        client = _text(client, "client", MAX_TAG, tag)
    spec = _FIELDS[op]
    extra = sorted(k for k in data if k not in spec and k not in ("op", "tag", "client"))
    if extra:
        raise IntentError(f"{op}: unknown fields {extra}; it takes {sorted(spec)}", tag)
    values = {}
    for name, (kind, required) in spec.items():
        if name not in data or (data[name] is None and not required and kind != "price"):
            if required:
                raise IntentError(f"{op}: {name} is required", tag)
            continue
        values[name] = _value(kind, data[name], name, tag)
    if op == "new":
        type_ = values.get("type", "limit")
        price = values.get("price")
        if type_ == "limit" and price is None:
            raise IntentError("new: a limit order needs a price > 0", tag)
        if type_ == "market" and price is not None:
            raise IntentError("new: a market order takes no price (send null or leave it out)", tag)
        return New(tag=tag, client=client, **values)
    if op == "cancel":
        return Cancel(tag=tag, client=client, **values)
    if op == "replace":
        return Replace(tag=tag, client=client, **values)
    if op == "cancel_all":
        return CancelAll(tag=tag, client=client, **values)
    if op in ("halt", "reduce", "resume"):
        return SetState(op=op, tag=tag, client=client, **values)
    if op == "orders":
        return ListOrders(tag=tag, client=client, **values)
    return Status(tag=tag, client=client)


def request(op: str, tag: str, **fields) -> bytes:
    """The frame for a request (the client side); fields that are None are left out. The
    result always parses (ValueError here otherwise, before anything is sent)."""
    body = {"op": op, "tag": tag, **{k: v for k, v in fields.items() if v is not None}}
    frame = encode(body)
    try:
        parse(frame)
    except IntentError as e:
        raise ValueError(f"{op}: {e.text}") from None
    return frame


# -- replies and events -----------------------------------------------------------------------
def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def encode(obj: dict) -> bytes:
    """Compact UTF-8 JSON; a non-finite float becomes null (JSON has no NaN)."""
    try:
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        return json.dumps(_clean(obj), separators=(",", ":")).encode()


def decode(frame: bytes) -> dict:
    """A reply or event frame (the client side). ValueError if it is not a JSON object."""
    obj = json.loads(frame)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object from the gateway, got {type(obj).__name__}")
    return obj


def reply(tag: str | None, ok: bool, code: str | None = None, text: str = "", **fields) -> dict:
    return {"tag": tag, "ok": ok, "code": code, "text": text, **fields}


def error(e: IntentError) -> dict:
    return reply(e.tag, False, e.code, e.text)


def order_event(tag: str, id: str, status: str, cum_qty: int, leaves_qty: int, avg_px: float,
                time: int, text: str = "", venue: str | None = None, child: str | None = None) -> dict:
    """A parent's (venue and child None) or a child's (venue, child = its ClOrdID) state."""
    ev = {"event": "order", "tag": tag, "id": id, "status": status, "cum_qty": cum_qty,
          "leaves_qty": leaves_qty, "avg_px": avg_px, "text": text, "time": time}
    if venue is not None:
        ev["venue"], ev["child"] = venue, child
    return ev


def fill_event(tag: str, id: str, child: str, exec_id: str, venue: str, sym: str, side: str,
               qty: int, price: float, fee: float, time: int) -> dict:
    return {"event": "fill", "tag": tag, "id": id, "child": child, "exec_id": exec_id,
            "venue": venue, "sym": sym, "side": side, "qty": qty, "price": price, "fee": fee,
            "time": time}


def state_event(state: str, reason: str, time: int) -> dict:
    """`state` is "ACTIVE", "REDUCING" or "HALTED"."""
    return {"event": "state", "state": state, "reason": reason, "time": time}


@dataclass
class Envelope:
    """How a request arrived on the ROUTER, so the reply goes back the same way: `route` is
    the routing frames (the peer identity, any proxies' ids, and for REQ clients the empty
    delimiter). A REQ client (delimiter present) gets the reply only; a DEALER client
    (no delimiter) also gets events."""
    route: list[bytes] = field(default_factory=list)

    @property
    def identity(self) -> bytes:
        return self.route[0]

    @property
    def dealer(self) -> bool:
        return len(self.route) == 1


def split(frames: list[bytes]) -> tuple[Envelope, list[bytes]]:
    """A ROUTER message -> (envelope, body frames). Everything up to and including the last
    empty frame is the envelope (REQ, or DEALER via proxies); without an empty frame, the
    identity alone (a DEALER talking directly)."""
    for i in range(len(frames) - 1, 0, -1):
        if not frames[i]:
            return Envelope(frames[:i + 1]), frames[i + 1:]
    return Envelope(frames[:1]), frames[1:]
