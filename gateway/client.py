"""OrderClient: the strategy's and the CLI's side of the order intents protocol (INTENTS.md).

    from gateway.client import OrderClient
    oc = OrderClient(client="pairs")                       # DEALER: replies and events
    r = oc.new("AAPL", "buy", 100, 189.5, tif="day", tag="pairs-1")
    if not r["ok"]: print(r["code"], r["text"])           # e.g. "max_order_qty", "..."
    for ev in oc.events(timeout=1.0): ...                  # {"event": "order"|"fill"|"state", ...}
    oc.cancel("pairs-1"); oc.replace("pairs-1", qty=200, price=189.4)
    oc.cancel_all(strategy="pairs"); oc.halt("risk breach"); oc.reduce("..."); oc.resume("...")
    oc.orders(open=True)["orders"]; oc.status()
    oc.close()

    OrderClient(mode="req")      # the CLI: a fresh REQ socket per request, reply only

Every request method sends one request and returns its reply (a dict: "tag", "ok", "code",
"text" and the op's fields; see gateway.intents and INTENTS.md), waiting up to `timeout`
seconds; no answer raises `GatewayUnavailable`. `tag` defaults to a fresh one (unique per
OrderClient); pass your own to make a request idempotent across reconnects and restarts: the
gateway keys intents by (client, tag), so a resent tag gets the existing order (`"dup": true`),
never a second one. Give `client` a stable name for that (default: the socket's identity,
which changes on every connect).

Asynchronous use (DEALER): `submit(op, **fields)` (or `send(intent_dict)`) sends without
waiting and returns the tag; its reply arrives later through `events()` (or `poll(ms)`): a
reply has "ok" and no "event" key. Events for
this client's orders arrive on the same socket: `events(timeout)` returns everything received
so far (waiting up to `timeout` for the first one). `socket` can be registered in a
zmq.Poller. Events go to the connection this client last sent a request on (a reconnecting
strategy re-registers with its next request; ask `orders()` to catch up on what it missed).

Replies and events carry times as int ns since the epoch (UTC). Not thread-safe: one thread
uses an OrderClient (make one per thread).

Socket semantics. DEALER: the gateway's ROUTER queues up to its high-water mark of events
for a slow client, then drops them for that client (it never blocks); `orders()` is the
truth. A request sent while the gateway is down waits in ZeroMQ (this client sets
ZMQ_IMMEDIATE, so only while connecting) and the call times out; a restarted gateway answers
a resent tag idempotently, so retrying with the same tag is always safe.
"""
from __future__ import annotations

import itertools
import os
import time
from collections import deque

import zmq

from tickerplant.curve import secure_client

from gateway import intents

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5040"


class GatewayUnavailable(ConnectionError):
    """The gateway did not answer in time."""


class OrderClient:
    def __init__(self, endpoint: str | None = None, client: str | None = None, *,
                 mode: str = "dealer", timeout: float = 5.0, ctx: zmq.Context | None = None,
                 curve=None):
        if mode not in ("dealer", "req"):
            raise ValueError(f"mode {mode!r}: 'dealer' (strategies) or 'req' (one request, one reply)")
        if endpoint is None:
            from gateway.config import GatewaySettings
            from schemas.settings import section
            endpoint = section(GatewaySettings, "gateway").intents
        elif not isinstance(endpoint, str):      # a GatewaySettings
            endpoint = endpoint.intents
        self.endpoint, self.client, self.mode, self.timeout = endpoint, client, mode, timeout
        self.curve = curve                      # [curve] (CurveSettings): a CURVE client when on
        self.ctx = ctx or zmq.Context.instance()
        self._prefix = os.urandom(4).hex() + "-"
        self._n = itertools.count(1)
        self._unread: deque[dict] = deque()     # events and late replies, in arrival order
        self._waiting: dict[str, dict | None] = {}
        self.bad_frames = 0                     # frames from the gateway that were not JSON objects
        self.sock = None
        if mode == "dealer":
            self.sock = self._socket(zmq.DEALER)

    @property
    def socket(self) -> zmq.Socket:
        """The DEALER socket (for a zmq.Poller); None in req mode."""
        return self.sock

    def _socket(self, kind):
        s = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.IMMEDIATE, 1)
        s.setsockopt(zmq.RCVHWM, 0)
        secure_client(s, self.curve)
        s.connect(self.endpoint)
        return s

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def __enter__(self) -> "OrderClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------------------
    def new(self, sym: str, side: str, qty: int, price: float | None = None, *, type: str | None = None,
            tif: str = "day", account: str | None = None, strategy: str | None = None,
            venue: str | None = None, tag: str | None = None) -> dict:
        """A new parent order. `type` defaults to "limit" with a price, "market" without.
        Reply: ok, code (a risk code on a denial), text, id (the parent id), status,
        children [{id, venue, qty, status}], dup."""
        return self.request("new", tag, **self._new_fields(sym, side, qty, price, type, tif, account,
                                                            strategy, venue))

    def cancel(self, target: str, *, tag: str | None = None) -> dict:
        """Cancel a working order: `target` is its tag (or the parent id)."""
        return self.request("cancel", tag, target=target)

    def replace(self, target: str, qty: int, price: float | None = None, *, tag: str | None = None) -> dict:
        """Change a working order to `qty` in total (filled included) and `price` (None: keep)."""
        return self.request("replace", tag, target=target, qty=qty, price=price)

    def cancel_all(self, *, strategy: str | None = None, account: str | None = None,
                   sym: str | None = None, tag: str | None = None) -> dict:
        return self.request("cancel_all", tag, strategy=strategy, account=account, sym=sym)

    def halt(self, reason: str = "", *, tag: str | None = None, timeout: float | None = None) -> dict:
        """HALTED + cancel every working order; the reply comes once the venues confirmed (or
        the gateway's halt timeout passed: ok false, code "halt_timeout", "working" lists ids)."""
        # the gateway answers after the venues confirmed, at most [gateway] halt_timeout_s
        return self.request("halt", tag, timeout=timeout or max(self.timeout, 15.0), reason=reason)

    def reduce(self, reason: str = "", *, tag: str | None = None) -> dict:
        return self.request("reduce", tag, reason=reason)

    def resume(self, reason: str = "", *, tag: str | None = None) -> dict:
        return self.request("resume", tag, reason=reason)

    def orders(self, open: bool = False, limit: int | None = None) -> dict:
        """{"orders": [parent dicts with "children"]}, oldest first (the newest `limit`)."""
        return self.request("orders", None, open=open, limit=limit)

    def status(self, timeout: float | None = None) -> dict:
        return self.request("status", None, timeout=timeout)

    # -- the protocol ---------------------------------------------------------------------------
    def next_tag(self) -> str:
        return f"{self._prefix}{next(self._n)}"

    def request(self, op: str, tag: str | None = None, timeout: float | None = None, **fields) -> dict:
        """Send one request and wait for its reply."""
        tag = tag or self.next_tag()
        frame = intents.request(op, tag, client=self.client, **fields)
        wait = self.timeout if timeout is None else timeout
        if self.mode == "req":
            return self._req(frame, wait)
        self._waiting[tag] = None
        self.sock.send(frame)
        end = time.monotonic() + wait
        try:
            while self._waiting[tag] is None:
                left = end - time.monotonic()
                if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                    if time.monotonic() >= end:
                        raise GatewayUnavailable(self._no_answer(wait))
                    continue
                self._take()
            return self._waiting[tag]
        finally:
            self._waiting.pop(tag, None)

    def submit(self, op: str, tag: str | None = None, **fields) -> str:
        """Send without waiting (DEALER); returns the tag. The reply comes through `events()`."""
        if self.mode != "dealer":
            raise RuntimeError("submit needs mode='dealer' (a REQ socket must wait for each reply)")
        tag = tag or self.next_tag()
        self.sock.send(intents.request(op, tag, client=self.client, **fields))
        return tag

    def submit_new(self, sym: str, side: str, qty: int, price: float | None = None, *,
                   type: str | None = None, tif: str = "day", account: str | None = None,
                   strategy: str | None = None, venue: str | None = None, tag: str | None = None) -> str:
        """`new` without waiting for the reply (see `submit`)."""
        return self.submit("new", tag, **self._new_fields(sym, side, qty, price, type, tif, account,
                                                          strategy, venue))

    def send(self, msg: dict) -> str:
        """Send one request given as its INTENTS.md dict ({"op": ..., "tag": ..., fields})
        without waiting (DEALER); returns its tag (a fresh one if it has none). The reply and
        the events arrive through `poll` / `events`. ValueError for a dict that is not a valid
        request (nothing is sent)."""
        fields = dict(msg)
        op, tag = fields.pop("op", None), fields.pop("tag", None)
        client = fields.pop("client", None)
        if client is not None and self.client is not None and client != self.client:
            raise ValueError(f"request for client {client!r} on an OrderClient of {self.client!r}")
        if self.client is None and client is not None:
            self.client = client
        return self.submit(op, tag, **fields)

    def poll(self, timeout_ms: int = 0) -> list[dict]:
        """Replies of `send`/`submit` and events received so far, oldest first, waiting up to
        `timeout_ms` for the first (`events` in milliseconds)."""
        return self.events(timeout_ms / 1000.0)

    def events(self, timeout: float = 0.0) -> list[dict]:
        """Everything received and not yet returned (events, and replies of `submit`), oldest
        first; waits up to `timeout` seconds for the first one when there is none."""
        if self.mode != "dealer":
            return []
        self._take()
        if not self._unread and timeout > 0 and self.sock.poll(max(1, int(timeout * 1000))):
            self._take()
        out = list(self._unread)
        self._unread.clear()
        return out

    # -- internals ------------------------------------------------------------------------------
    @staticmethod
    def _new_fields(sym, side, qty, price, type_, tif, account, strategy, venue) -> dict:
        type_ = type_ or ("limit" if price is not None else "market")
        return dict(sym=sym, side=side, qty=qty, type=type_, price=price, tif=tif, account=account,
                    strategy=strategy, venue=venue)

    def _take(self) -> None:
        """Read what the socket holds: replies we wait for are filed, the rest kept in order."""
        sock = self.sock
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = intents.decode(frame)
            except ValueError:
                self.bad_frames += 1
                continue
            tag = msg.get("tag")
            if "event" not in msg and tag in self._waiting and self._waiting[tag] is None:
                self._waiting[tag] = msg
            else:
                self._unread.append(msg)

    def _req(self, frame: bytes, wait: float) -> dict:
        s = self._socket(zmq.REQ)
        try:
            s.send(frame)
            if not s.poll(max(1, int(wait * 1000))):
                raise GatewayUnavailable(self._no_answer(wait))
            return intents.decode(s.recv())
        finally:
            s.close(0)

    def _no_answer(self, wait: float) -> str:
        return (f"no answer from the gateway at {self.endpoint} in {wait:g}s: is it running? "
                f"(`tickstack status`; start it with `tickstack start gateway`)")
