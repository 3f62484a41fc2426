"""The gateway's order ids: deterministic, so an intent resent after a restart maps to the
order it already made, and the venue refuses a ClOrdID it already has.

    parent_id(day, client, tag) -> "P" + 16 base32 characters (80 bits of BLAKE2b over the
                                   trading day, the client id and the tag)
    child_id(parent, n)         -> "<parent>.<n>": the n-th order sent for the parent (children
                                   and replacement versions share the numbering)
    cancel_id(cl_ord_id, run, n) -> "<cl_ord_id>~<run>.<n>": a cancel request (never a
                                   published order id; `run` differs per gateway run so ids of
                                   cancels sent before a restart are never reused)
    parent_of(cl_ord_id)        -> the parent id of a child id of ours, else None
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re

_CHILD = re.compile(r"^(P[A-Z2-7]{16})\.(\d{1,9})$")


def parent_id(day: dt.date, client: str, tag: str) -> str:
    h = hashlib.blake2b(f"{day:%Y%m%d}\0{client}\0{tag}".encode(), digest_size=10).digest()
    return "P" + base64.b32encode(h).decode()


def child_id(parent: str, n: int) -> str:
    return f"{parent}.{n}"


def cancel_id(cl_ord_id: str, run: str, n: int) -> str:
    return f"{cl_ord_id}~{run}.{n}"


def parent_of(cl_ord_id: str) -> str | None:
    m = _CHILD.match(cl_ord_id)
    return m.group(1) if m else None


def child_number(cl_ord_id: str) -> int:
    m = _CHILD.match(cl_ord_id)
    return int(m.group(2)) if m else 0
