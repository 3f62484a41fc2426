"""The feed base: batching, message numbering, acks and resend, rate control.

Socket semantics (why acks and resend exist)
--------------------------------------------
A feed connects a ZeroMQ DEALER to the tickerplant's ROUTER (`TickerplantSettings.ingest`) and sends
single-frame messages: the codec bytes of one batch of one table, stamped with this feed's id
(`feed`, nonzero u32) and its message number (`fseq`, u64, +1 per message).

ZeroMQ reconnects by itself, but "sent" only means "queued": a plain DEALER queues up to its HWM
while disconnected, and whatever sits in kernel buffers or in the TP's receive queue when the TP
dies is lost without any error. So this feed sets ZMQ_IMMEDIATE (nothing is queued inside ZeroMQ
for a peer that is not connected) and keeps every message in its own bounded buffer until the TP
acks it. The TP's replies:

* `[b"ack", <IQ feed, last_fseq_logged>]` - cumulative: everything up to that fseq is logged;
* `[b"err", <IQ feed, fseq>, text]` - that message was rejected and will never be logged;
* the answer to `[b"hello", <I feed>]` is an ack with the last fseq logged for this feed (0 if none).

The feed says hello at start (so a restarted feed continues its numbering instead of having its
messages dropped as duplicates) and again after every reconnect, which the ZMQ socket monitor
reports (disconnect, then handshake). After the hello answer every unacked message is resent in
order; the TP drops any fseq it already logged, so resending never duplicates a row. If acks
stop while messages are outstanding (`ack_timeout_ms`, backing off to 16x) they are resent too.

Buffer-full policy (stated, configurable in `[feed]`)
-----------------------------------------------------
Unacked messages are bounded by `buffer_bytes` and `buffer_msgs`. When a new message does not
fit, the producer (the thread calling `publish`/`flush`) blocks up to `block_s` seconds for acks
to free space; if it still does not fit, `on_full` decides: "drop_oldest" (default: the oldest
unacked message is discarded, counted in `dropped`/`dropped_rows`; the newest data is what a live
feed wants), "drop_newest" (the new message is discarded and counted), or "error" (`BufferFull` is
raised in the producer, nothing is dropped). A single message larger than `buffer_bytes` is still
accepted when the buffer is empty.

Natural batching (`batch_ms=0`)
------------------------------
`batch_ms=0` means "send as soon as the socket is free", not "one message per publish": a
publish hands its rows to the I/O thread and wakes it, and everything of a table published until
the I/O thread gets to it goes as ONE message (at most `batch_rows` rows; a publish that brings
a table to `batch_rows` encodes and queues it at once). At a low rate each publish goes alone and
at once; at a high rate messages grow by themselves, so the per-message costs here, at the TP
and at every subscriber are paid per batch. While the TP is not connected, or the buffer is
full, or the socket is at its high-water mark, publish queues its own message at once, as with a
timer (so the buffer-full policy applies to the producer, as always). Numbering, buffering,
acks, resends and dedup are per message, whatever its size. `batch_rows=1` still sends every
publish as its own message.

Threads: `publish` runs in the caller's thread (conversion to numpy, rate limiting by sleeping -
never spinning; batching and encoding when a batch is full); one background I/O thread owns the
sockets (sends, acks, resends, natural and time-based flushes). No per-row Python: rows travel
as numpy arrays; text columns given as numpy str arrays are converted to Arrow once per message,
not once per publish. Messages are split to fit the TP's `pub_message_bytes` (and
`max_message_bytes`), so the TP never has to grow its publish queue for them.
A message is sent as soon as it is queued: a producer that queues one (or rows for one) wakes
the I/O thread through an inproc PAIR socket (one wake message at most, never lost: see
`Feed._wake`), and the I/O thread polls with timeout 0 while it has anything sendable.
`FeedStats.late_sends` counts messages that nonetheless waited for a poll timeout (a lost
wake-up; it stays 0).
"""
from __future__ import annotations

import collections
import logging
import math
import struct
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import zmq
from zmq.utils.monitor import recv_monitor_message

from feedhandlers.config import FeedSettings
from schemas import codec
from schemas.registry import Registry, Schema, load_registry
from tickerplant import protocol as p
from tickerplant.config import CurveSettings, TickerplantSettings
from tickerplant.curve import secure_client

log = logging.getLogger(__name__)

FSEQ_OFFSET = codec.HEADER.size - 8       # fseq is the header's last field (u64)
_FSEQ = struct.Struct("<Q")
_HELLO_RETRY_S = 0.2                      # re-say hello while unanswered
_POLL_CAP_S = 0.1                         # the I/O thread re-checks deadlines at least this often
_BURST = 256                              # messages sent per lock hold, so producers get a turn
# batch_ms=0: a publish goes out from the publishing thread itself while fewer messages than
# _WINDOW, holding fewer rows than _WINDOW_ROWS, await the TP's ack; beyond that, rows wait for
# the next ack and go together (natural batching). Small, so that under load messages grow
# instead of multiplying: each one costs an encode here and a message at every hop.
_WINDOW = 16
_WINDOW_ROWS = 64
_POLLIN, _POLLOUT, _EVENTS, _NOBLOCK = int(zmq.POLLIN), int(zmq.POLLOUT), int(zmq.EVENTS), int(zmq.NOBLOCK)


# every Feed of this process, for its health hook (`feeds_health`: a feed process's heartbeat)
_FEEDS: "weakref.WeakSet[Feed]" = weakref.WeakSet()


def feeds_health() -> dict:
    """The health hook (tickerplant/health.py) of a process's feeds, summed: in = messages
    the TP acked, out = messages sent, errors = rejected + dropped."""
    h = {"msgs_in": 0, "msgs_out": 0, "errors": 0, "last_error": "",
         "extra": {"rows_out": 0, "acked_rows": 0, "buffered": 0}}
    for f in list(_FEEDS):
        one = f.health()
        for k in ("msgs_in", "msgs_out", "errors"):
            h[k] += one[k]
        for k, v in one["extra"].items():
            h["extra"][k] += v
        h["last_error"] = one["last_error"] or h["last_error"]
    return h


class BufferFull(RuntimeError):
    """The unacked-message buffer stayed full for `block_s` and `on_full` is "error"."""


class TokenBucket:
    """`take(n)` sleeps just long enough to hold `rate` units/s on average, allowing a burst of
    `burst_s` seconds' worth. Debt model: a request larger than the bucket is let through and
    paid for by sleeping, so there is no busy wait and no starvation of big batches."""

    def __init__(self, rate: float, burst_s: float = 0.1, clock=time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.rate = float(rate)
        self.capacity = max(1.0, self.rate * burst_s)
        self.tokens = self.capacity
        self._clock, self._sleep = clock, sleep
        self._t = clock()

    def take(self, n: float) -> float:
        """Spend `n` tokens; returns the seconds slept."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._t) * self.rate)
        self._t = now
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        wait = -self.tokens / self.rate
        self._sleep(wait)
        return wait


@dataclass(frozen=True)
class FeedStats:
    feed_id: int
    sent: int            # messages sent for the first time
    sent_rows: int
    acked: int           # messages the TP confirmed logged (incl. ones it already had)
    acked_rows: int
    resent: int          # extra sends after a reconnect or ack timeout
    dropped: int         # messages discarded by the buffer-full policy
    dropped_rows: int
    rejected: int        # messages the TP refused (never logged)
    last_error: str      # the TP's text for the last rejection
    buffered: int        # unacked messages held for resend
    buffered_bytes: int
    pending_rows: int    # rows published but not yet batched into a message
    reconnects: int
    ack_timeouts: int
    # Messages that sat sendable in the queue until the I/O thread's poll timed out, instead of
    # going when they were queued: a lost wake-up. Stays 0; anything else is a bug.
    late_sends: int
    last_acked: int      # highest fseq acked
    next_fseq: int | None  # None until the TP answered hello
    connected: bool


class _Msg:
    __slots__ = ("fseq", "buf", "nrows", "sends")

    def __init__(self, fseq: int, buf: bytes | bytearray, nrows: int):
        self.fseq, self.buf, self.nrows, self.sends = fseq, buf, nrows, 0

    def stamp(self, fseq: int) -> None:
        if self.fseq != fseq:
            buf = self.buf if isinstance(self.buf, bytearray) else bytearray(self.buf)
            _FSEQ.pack_into(buf, FSEQ_OFFSET, fseq)
            self.buf, self.fseq = buf, fseq


def _as_array(values: Any, col, want: np.dtype | None = None) -> np.ndarray | pa.Array:
    """One column as a 1-d numpy array of its wire type (`want`, col.dtype: None for text).
    Text columns become Arrow string arrays, except numpy str arrays, which stay numpy until
    their message is encoded (one conversion for all the publishes it holds: see `_text`)."""
    if type(values) is np.ndarray and values.ndim == 1:   # the common case, in a few operations
        if (values.dtype == want) if want is not None else values.dtype.kind == "U":
            return values
    if col.dtype is None and isinstance(values, (pa.Array, pa.ChunkedArray)):
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if isinstance(values, pa.DictionaryArray):
            values = values.dictionary_decode()
        if not pa.types.is_string(values.type):
            values = values.cast(pa.string())
        return values
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if col.dtype is not None and col.type == "timestamp" and pa.types.is_timestamp(values.type):
            values = values.cast(pa.timestamp("ns")).cast(pa.int64())
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise codec.CodecError(f"column {col.name!r}: expected 1-d values, got shape {arr.shape}")
    if col.dtype is None:
        if arr.dtype.kind not in "OUS":
            raise codec.CodecError(f"column {col.name!r} ({col.type}): expected strings, got {arr.dtype}")
        if arr.dtype.kind == "U":
            return arr                 # converted with the rest of its message (`_text`)
        try:                           # objects or bytes: checked now, in the caller's thread
            return pa.array(arr.astype(object) if arr.dtype.kind == "S" else arr, pa.string())
        except (pa.ArrowException, UnicodeDecodeError) as e:
            raise codec.CodecError(f"column {col.name!r} ({col.type}): values are not all "
                                   f"strings ({e})") from None
    if col.type == "timestamp" and arr.dtype.kind == "M":
        return arr.astype("datetime64[ns]").view("<i8")
    if arr.dtype.kind in "OUS":
        raise codec.CodecError(f"column {col.name!r} ({col.type}): expected numbers, got {arr.dtype}")
    return arr.astype(col.dtype, copy=False)


def _ascii_strings(arr: np.ndarray) -> pa.Array | None:
    """A numpy fixed-width unicode array as an Arrow string array without per-row objects,
    when it is plain ASCII (tickers are); None means "take the general path"."""
    n, w = len(arr), arr.dtype.itemsize // 4
    if arr.dtype.kind != "U" or w == 0 or n == 0:
        return None
    codes = np.ascontiguousarray(arr).view(np.uint32).reshape(n, w)
    if codes.max() >= 128:
        return None
    chars = codes.astype(np.uint8)
    nonzero = chars != 0
    # numpy pads with trailing NULs only: a value's length is its last nonzero char + 1
    lengths = np.where(nonzero.any(axis=1), w - np.argmax(nonzero[:, ::-1], axis=1), 0)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    data = chars[np.arange(w) < lengths[:, None]] if (lengths != w).any() else chars.reshape(-1)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


_PLANS: dict[int, tuple[Schema, list]] = {}


def _text(cols: dict, schema: Schema) -> dict:
    """Numpy str `string` columns as Arrow string arrays (vectorised when ASCII), once per
    message. Symbol columns, short ones and non-ASCII ones stay numpy: the codec encodes those
    itself (symbols without a string per row)."""
    for c in schema.columns:
        v = cols[c.name]
        if c.type == "string" and isinstance(v, np.ndarray) and len(v) > codec.SMALL_ROWS:
            fast = _ascii_strings(v)   # ~10x cheaper to encode than a numpy str array
            if fast is not None:
                cols[c.name] = fast
    return cols


def _concat(parts: list) -> np.ndarray | pa.Array:
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    return pa.concat_arrays([p if isinstance(p, pa.Array) else pa.array(p, pa.string()) for p in parts])


class Feed:
    """A connection to the tickerplant that batches, numbers, buffers and resends.

    `Feed(tp, feed_id, registry=None, settings=None, **overrides)`: `tp` is the TP's
    `TickerplantSettings` (its ingest endpoint and message size limit); `settings` the
    `FeedSettings` (default: the embedded defaults); overrides are any of its fields
    (batch_rows=1, on_full="error", ...). `registry` defaults to the built-in tables. `curve`:
    the [curve] settings when the TP's endpoints are CURVE servers (tickerplant/curve.py). Use
    as a context manager or call `close()`.
    """

    def __init__(self, tp: TickerplantSettings, feed_id: int | None = None,
                 registry: Registry | None = None, *, settings: FeedSettings | None = None,
                 context: zmq.Context | None = None, curve: CurveSettings | None = None,
                 **overrides):
        base = settings.model_dump() if settings is not None else {}
        self.settings = s = FeedSettings.model_validate({**base, **overrides})
        self.feed_id = int(feed_id if feed_id is not None else s.feed_id)
        if not 0 < self.feed_id < 2**32:
            raise ValueError(f"feed_id must be a nonzero u32, got {self.feed_id}")
        self.registry = registry if registry is not None else load_registry()
        codec.warm_up()
        self.endpoint = tp.ingest
        self.max_message_bytes = tp.max_message_bytes
        # the feed's messages fit what the TP publishes whole (its queue never grows for them)
        self.message_bytes = min(tp.max_message_bytes, tp.pub_message_bytes)
        self._batch_rows = s.batch_rows
        self._batch_s = s.batch_ms / 1000.0
        self._rows_bucket = TokenBucket(s.max_rows_per_s) if s.max_rows_per_s else None
        self._msgs_bucket = TokenBucket(s.max_msgs_per_s) if s.max_msgs_per_s else None

        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)     # space freed, acks arrived, hello answered
        self._pending: dict[str, list[dict[str, np.ndarray]]] = {}
        self._pending_rows: dict[str, int] = {}
        self._pending_since: float | None = None
        self._unsent: collections.deque[_Msg] = collections.deque()
        self._inflight: collections.deque[_Msg] = collections.deque()   # sent, not acked
        self._bytes = 0
        self._next_fseq: int | None = None
        self._ready = False           # hello answered on the current connection
        self._connected = False
        self._hello_at = 0.0
        self._progress_at = time.monotonic()
        self._backoff = 1
        self._blocked_out = False     # last send hit the HWM: poll for POLLOUT
        self._stop = False
        self._closed = False
        self._wake_pending = False
        self._waiters = 0             # threads in _wait_for: acks notify only when there are any
        self._schemas: dict[str, Schema] = {}
        self._c = dict(sent=0, sent_rows=0, acked=0, acked_rows=0, resent=0, dropped=0,
                       dropped_rows=0, rejected=0, reconnects=0, ack_timeouts=0, late_sends=0,
                       last_acked=0)
        self._last_error = ""

        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.IMMEDIATE, 1)      # never queue inside ZMQ for an absent TP
        self._sock.setsockopt(zmq.LINGER, 0)         # our buffer, not ZMQ's, is the source of truth
        self._sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self._sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self._sock.setsockopt(zmq.SNDHWM, 10_000)
        secure_client(self._sock, curve)             # a CURVE client when [curve] is on
        self._mon = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED)
        wake_addr = f"inproc://feed-wake-{id(self):x}"
        self._wake_rx = self._ctx.socket(zmq.PAIR)
        self._wake_rx.bind(wake_addr)
        self._wake_tx = self._ctx.socket(zmq.PAIR)
        self._wake_tx.connect(wake_addr)
        self._sock.connect(self.endpoint)
        self._io = threading.Thread(target=self._run, name=f"feed-{self.feed_id}-io", daemon=True)
        self._io.start()
        _FEEDS.add(self)
        # Wait briefly for the TP's last fseq so numbering continues; if the TP is down, messages
        # are buffered unnumbered and numbered when it answers.
        with self._cv:
            self._wait_for(lambda: self._next_fseq is not None, s.hello_timeout_ms / 1000.0)

    @classmethod
    def from_config(cls, cfg, feed_id: int | None = None, registry: Registry | None = None,
                    **overrides) -> "Feed":
        """A feed from a process config (`FeedConfig`, or the stack's): its [tickerplant]
        endpoints, [feed] settings and tables."""
        return cls(cfg.tickerplant, feed_id, registry or cfg.registry(), settings=cfg.feed,
                   curve=getattr(cfg, "curve", None), **overrides)

    # ---------------------------------------------------------------- producer side

    def publish(self, table: str, columns: Mapping[str, Any] | pa.RecordBatch | pa.Table) -> None:
        """Queue rows of `table` (a mapping column -> array-like of equal length, or an Arrow
        batch/table). They go out as one message when `batch_rows` or `batch_ms` is reached."""
        if self._closed:
            raise RuntimeError("feed is closed")
        schema = self._schemas.get(table) or self._schema(table)
        cols = self._columns(schema, columns)
        n = len(cols["time"])
        if n == 0:
            return
        if self._rows_bucket:
            self._rows_bucket.take(n)
        if self._msgs_bucket:
            with self._lock:
                have = self._pending_rows.get(table, 0) + n
            if have >= self._batch_rows or self._batch_s == 0:
                self._msgs_bucket.take(-(-have // self._batch_rows))
        with self._lock:
            self._pending.setdefault(table, []).append(cols)
            rows = self._pending_rows[table] = self._pending_rows.get(table, 0) + n
            if rows >= self._batch_rows:
                self._flush_table(table, block=True)
                self._send_now()
            elif self._batch_s == 0:
                if rows == n and not self._window_open():
                    self._service()   # the acks that arrived may open the window for these rows
                if not self._coalescing():
                    self._flush_table(table, block=True)
                    self._send_now()
                elif rows == n and not self._unsent and self._window_open():
                    self._flush_table(table, block=True)   # the socket is free: now, from here
                    self._send_now()
                elif self._unsent or rows == n:
                    self._wake()      # the I/O thread now watches for the ack that sends these
                # else rows of this table already wait (the window was full): these join them,
                # and the I/O thread sends them all at an ack. A busy producer holds the GIL, so
                # the I/O thread gets there late and the batch grows: natural batching.
            elif self._pending_since is None:
                self._pending_since = time.monotonic()
                self._wake()          # so the I/O thread arms the batch_ms timer

    def _coalescing(self) -> bool:
        """batch_ms=0: may rows wait to go with later ones (natural batching)? Only while the
        TP is connected and acking, the socket takes messages and the buffer has room;
        otherwise the producer queues its message itself. Lock held."""
        return self._ready and not self._blocked_out and not self._full(1)

    def _window_open(self) -> bool:
        """Fewer than _WINDOW messages, holding fewer than _WINDOW_ROWS rows, await acks."""
        inflight = self._inflight
        return len(inflight) < _WINDOW and sum(m.nrows for m in inflight) < _WINDOW_ROWS

    def _send_now(self) -> None:
        """In a producer, after queueing messages (lock held): send them from this thread if
        the socket takes them, and take in the replies that arrived meanwhile (any call on the
        socket may take the notification the I/O thread waits on, so whoever calls it drains
        it: see `_run`). What the socket would not take is left to the I/O thread."""
        if not self._unsent or self._stop:
            return
        if self._ready and not self._blocked_out:
            self._send_some()
            self._service()
        if self._unsent:
            self._wake()

    def flush(self) -> None:
        """Turn every pending row into messages now (does not wait for acks; see `wait_acked`)."""
        with self._lock:
            for table in list(self._pending):
                self._flush_table(table, block=True)
            self._send_now()

    def wait_acked(self, timeout: float | None = None) -> bool:
        """Flush, then wait until the TP acked everything; True if it did within `timeout`.
        With on_full="error" a full buffer is waited out here (up to `timeout`), not raised."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self.flush()
                break
            except BufferFull:
                if end is not None and time.monotonic() >= end:
                    return False
        with self._cv:
            left = None if end is None else max(0.0, end - time.monotonic())
            return self._wait_for(lambda: not (self._unsent or self._inflight) or self._stop,
                                     left) and not (self._unsent or self._inflight or self._pending)

    def close(self, timeout: float | None = None) -> bool:
        """Flush, wait up to `timeout` (default `close_timeout_s`) for the last acks, stop.
        Returns True if every message was acked; unacked ones are counted as dropped."""
        if self._closed:
            return not self._c["dropped"]
        timeout = self.settings.close_timeout_s if timeout is None else timeout
        ok = self.wait_acked(timeout)
        with self._lock:
            self._closed = True
            self._stop = True
            lost = list(self._unsent) + list(self._inflight)
            self._c["dropped"] += len(lost)
            self._c["dropped_rows"] += sum(m.nrows for m in lost) + sum(self._pending_rows.values())
            self._wake()
        self._io.join()
        self._wake_tx.close(0)
        return ok

    def __enter__(self) -> "Feed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def health(self) -> dict:
        """The health hook (tickerplant/health.py): counters read without the lock (another
        thread reads them while this feed publishes). In = messages the TP acked, out = sent."""
        c = self._c
        return {"msgs_in": c["acked"], "msgs_out": c["sent"], "errors": c["rejected"] + c["dropped"],
                "last_error": self._last_error,
                "extra": {"rows_out": c["sent_rows"], "acked_rows": c["acked_rows"],
                          "buffered": len(self._unsent) + len(self._inflight)}}

    def stats(self) -> FeedStats:
        with self._lock:
            return FeedStats(feed_id=self.feed_id, **self._c, last_error=self._last_error,
                             buffered=len(self._unsent) + len(self._inflight),
                             buffered_bytes=self._bytes,
                             pending_rows=sum(self._pending_rows.values()),
                             next_fseq=self._next_fseq, connected=self._connected)

    # ---------------------------------------------------------------- batching

    def _schema(self, table: str) -> Schema:
        schema = self._schemas[table] = self.registry[table]
        return schema

    @staticmethod
    def _columns(schema: Schema, data) -> dict[str, np.ndarray]:
        if isinstance(data, (pa.RecordBatch, pa.Table)):
            data = {n: data.column(n) for n in data.schema.names}
        plan = _PLANS.get(id(schema))
        if plan is None or plan[0] is not schema:   # keyed by id; the entry keeps the schema alive
            plan = _PLANS[id(schema)] = (schema, [(c.name, c, c.dtype) for c in schema.columns])
        try:
            cols = {name: _as_array(data[name], c, dtype) for name, c, dtype in plan[1]}
        except KeyError:
            cols = None
        if cols is None or len(data) != len(cols):
            missing = [c for c in schema.names if c not in data]
            extra = sorted(set(data) - set(schema.names))
            raise codec.CodecError(f"table {schema.name!r}: missing columns {missing}, unknown "
                                   f"columns {extra}; columns are {schema.names}")
        lens = set(map(len, cols.values()))
        if len(lens) > 1:
            raise codec.CodecError(f"table {schema.name!r}: columns differ in length: "
                                   f"{ {k: len(v) for k, v in cols.items()} }")
        return cols

    def _flush_table(self, table: str, block: bool) -> bool:
        """Encode `table`'s pending rows into messages of at most batch_rows. Lock held.
        With block=False (the I/O thread) nothing is done unless the buffer has room."""
        if not self._pending.get(table):
            return True
        if not block and self._full(1):
            return False
        parts = self._pending.pop(table)
        self._pending_rows.pop(table, None)
        if not self._pending:
            self._pending_since = None
        schema = self.registry[table]
        try:
            if len(parts) == 1 and len(parts[0]["time"]) <= self._batch_rows:  # one publish
                cols = parts[0]
                n = len(cols["time"])
                fseq = self._next_fseq or 0
                buf = codec.encode_row(schema, cols, self.feed_id, fseq) if n == 1 else None
                if buf is None:
                    cols = _text(cols, schema)
                    buf = codec.encode(schema, cols, feed=self.feed_id, fseq=fseq)
                msgs = [(buf, n)] if len(buf) <= self.message_bytes else list(self._encode(schema, cols))
            else:
                cols = _text(parts[0] if len(parts) == 1 else
                             {k: _concat([p[k] for p in parts]) for k in parts[0]}, schema)
                n = len(cols["time"])
                msgs = [m for lo in range(0, n, self._batch_rows)
                        for m in self._encode(schema, {k: v[lo: lo + self._batch_rows] for k, v in cols.items()})]
        except Exception as e:  # noqa: BLE001 - some publish's text the codec refused
            cols, n, msgs = self._encode_apart(schema, parts, e)
        done = 0
        try:
            for buf, rows in msgs:
                self._enqueue(buf, rows, block)
                done += rows
        except BufferFull:
            # on_full="error" loses nothing: the rows not yet queued go back to pending, so a
            # later flush()/close() (or the next publish) sends them.
            rest = {k: v[done:] for k, v in cols.items()}
            self._pending[table] = [rest] + self._pending.get(table, [])
            self._pending_rows[table] = self._pending_rows.get(table, 0) + (n - done)
            if self._pending_since is None:
                self._pending_since = time.monotonic()
                self._wake()          # so the I/O thread arms the batch_ms timer
            raise
        return True

    def _encode(self, schema: Schema, cols: dict[str, np.ndarray]):
        """Codec bytes, split until each fits the largest message the TP publishes whole."""
        n = len(cols["time"])
        buf = codec.encode(schema, cols, feed=self.feed_id, fseq=self._next_fseq or 0)
        if len(buf) <= self.message_bytes or n <= 1:
            yield buf, n
            return
        pieces = min(n, max(2, -(-len(buf) * 9 // (self.message_bytes * 8))))  # ~12% headroom
        step = -(-n // pieces)
        for lo in range(0, n, step):
            yield from self._encode(schema, {k: v[lo: lo + step] for k, v in cols.items()})

    def _encode_apart(self, schema: Schema, parts: list, error: Exception):
        """A batch that did not encode: each publish on its own, so that one bad publish costs
        only its own rows: dropped, counted and reported (`last_error`, the log), never raised,
        as the publish that brought them may be long gone (numpy str columns are converted when
        their message is encoded; every other column is checked in `publish`). Lock held."""
        good, msgs, bad = [], [], 0
        for part in parts:
            try:
                cols = _text(dict(part), schema)
                msgs.extend(self._encode(schema, cols))
                good.append(cols)
            except Exception as e:  # noqa: BLE001
                bad += len(part["time"])
                error = e
        if bad:
            self._c["dropped"] += 1
            self._c["dropped_rows"] += bad
            self._last_error = f"{bad} rows of table {schema.name!r} refused by the codec: {error}"
            log.error("feed %d: %s", self.feed_id, self._last_error)
        cols = {k: _concat([g[k] for g in good]) for k in parts[0]} if good else {}
        return cols, sum(r for _, r in msgs), msgs

    # ---------------------------------------------------------------- the bounded buffer

    def _full(self, size: int) -> bool:
        count = len(self._unsent) + len(self._inflight)
        if count == 0:
            return False
        return count >= self.settings.buffer_msgs or self._bytes + size > self.settings.buffer_bytes

    def _enqueue(self, buf: bytes, nrows: int, block: bool) -> None:
        """Add one message to the buffer, applying the buffer-full policy. Lock held."""
        s = self.settings
        size = len(buf)
        if block and self._full(size) and s.block_s > 0:
            self._wait_for(lambda: not self._full(size), s.block_s)
        # The I/O thread (block=False) never waits or raises: it overshoots by at most the
        # one small time-flushed batch per table it checked room for.
        if block and self._full(size):
            if s.on_full == "error":
                raise BufferFull(f"feed {self.feed_id}: {len(self._unsent) + len(self._inflight)} "
                                 f"unacked messages, {self._bytes} bytes, for {s.block_s}s; "
                                 f"is the tickerplant at {self.endpoint} up?")
            if s.on_full == "drop_newest":
                self._c["dropped"] += 1
                self._c["dropped_rows"] += nrows
                return
            while self._full(len(buf)):
                old = self._inflight.popleft() if self._inflight else self._unsent.popleft()
                self._bytes -= len(old.buf)
                self._c["dropped"] += 1
                self._c["dropped_rows"] += old.nrows
        msg = _Msg(_FSEQ.unpack_from(buf, FSEQ_OFFSET)[0], buf, nrows)
        if self._next_fseq is not None:
            msg.stamp(self._next_fseq)
            self._next_fseq += 1
        self._unsent.append(msg)
        self._bytes += size

    def _wait_for(self, predicate, timeout):
        """`Condition.wait_for`, counted so that acks skip notifying nobody, and so that the I/O
        thread watches for replies meanwhile (woken to see it). Lock held."""
        self._waiters += 1
        self._wake()
        try:
            return self._cv.wait_for(predicate, timeout)
        finally:
            self._waiters -= 1

    def _wake(self) -> None:
        """Nudge the I/O thread out of its poll to look at the state again (lock held).

        `_wake_pending` is True exactly while one wake message is unread: it is set together
        with the send here and cleared together with the read in `_take_wake`, both under the
        lock, so wakes coalesce but none is lost. The I/O thread never wakes itself: it derives
        its poll timeout from the state before every poll (0 while it has anything to send)."""
        if self._wake_pending or threading.current_thread() is self._io:
            return
        self._wake_pending = True
        self._wake_tx.send(b"", zmq.NOBLOCK)

    def _take_wake(self) -> None:
        with self._lock:
            while self._wake_rx.poll(0):   # one message, by the invariant above
                self._wake_rx.recv(zmq.NOBLOCK)
            self._wake_pending = False

    # ---------------------------------------------------------------- I/O thread

    def _run(self) -> None:
        """The I/O thread. Producers send on the DEALER too (see `_send_now`), so every call on
        it happens under the lock, and this thread waits on the socket's ZMQ_FD (a plain file
        descriptor, no socket call) rather than on the socket: the FD turns readable when the
        socket may have news, and before each wait `_service` reads ZMQ_EVENTS and drains the
        replies, so nothing waits behind a notification another call consumed.
        It watches the FD only while something waits on the TP's replies (`_awaiting`): in a
        steady flow the publishing thread takes the acks in itself when its window fills, and
        this thread is not woken once per ack."""
        fd = (self._sock.getsockopt(zmq.FD), _POLLIN)
        others = [(self._wake_rx, _POLLIN), (self._mon, _POLLIN)]
        try:
            with self._lock:
                self._say_hello()
            while True:
                with self._lock:
                    if self._stop:
                        break
                    self._service()
                    timeout = self._poll_timeout()
                    items = [fd, *others] if self._awaiting() else others
                events = dict(zmq.zmq_poll(items, math.ceil(timeout * 1000)))
                late = 0 if events or not timeout else self._unwoken()
                if self._wake_rx in events:
                    self._take_wake()
                if self._mon in events:
                    self._on_monitor()
                with self._lock:
                    self._service()
                self._tick(late)
        except Exception:               # never die silently: the producer would block forever
            log.exception("feed %d: I/O thread failed", self.feed_id)
            with self._lock:
                self._stop = True
                self._last_error = "I/O thread failed; see log"
                self._cv.notify_all()
        finally:
            with self._lock:
                self._stop = True
                self._sock.disable_monitor()
                self._mon.close(0)
                self._sock.close(0)
                self._wake_rx.close(0)

    def _awaiting(self) -> bool:
        """Does progress wait on a reply or on free space (so the I/O thread must see them at
        once)? The hello, a producer or closer waiting, rows waiting for the window, messages
        the socket would not take. Lock held."""
        return (not self._ready or bool(self._waiters) or self._blocked_out
                or (bool(self._pending) and self._batch_s == 0) or bool(self._unsent))

    def _service(self) -> None:
        """Replies and free space the DEALER shows (ZMQ_EVENTS), all of them: until the socket
        is empty, so that its FD signals the next one. Lock held."""
        get = self._sock.getsockopt
        ev = get(_EVENTS)
        while ev & _POLLIN:
            self._on_reply()
            ev = get(_EVENTS)
        if self._blocked_out and ev & _POLLOUT:
            self._blocked_out = False

    def _natural(self) -> bool:
        """Rows wait to go as one message per table, and the window is open (batch_ms=0).
        Lock held."""
        return (self._batch_s == 0 and bool(self._pending) and self._window_open()
                and self._coalescing())

    def _unwoken(self) -> int:
        """After a poll that timed out: how many queued messages (or tables of rows waiting to
        be one) could have been sent all along and have no wake-up on its way to say so (a wake
        that lands just after the timeout is not a lost one)."""
        with self._lock:
            self._service()           # an ack in the socket may have opened the window
            natural = self._natural()
            if (not (self._ready and (self._unsent or natural)) or self._blocked_out
                    or self._wake_rx.poll(0)):
                return 0
            return len(self._unsent) + (len(self._pending) if natural else 0)

    def _poll_timeout(self) -> float:
        if self._ready and (self._unsent or self._natural()) and not self._blocked_out:
            return 0.0                # sendable now: only look for replies on the way
        now = time.monotonic()
        t = _POLL_CAP_S
        if self._pending_since is not None:
            t = min(t, self._pending_since + self._batch_s - now)
        if not self._ready:
            t = min(t, self._hello_at + _HELLO_RETRY_S - now)
        if self._inflight:
            t = min(t, self._progress_at + self._ack_timeout() - now)
        return max(t, 0.001)

    def _ack_timeout(self) -> float:
        return self.settings.ack_timeout_ms / 1000.0 * self._backoff

    def _say_hello(self) -> None:
        self._hello_at = time.monotonic()
        try:
            self._sock.send_multipart([p.HELLO, p.feed_id(self.feed_id)], zmq.NOBLOCK)
        except zmq.Again:
            pass                      # not connected yet: the handshake event or retry says it

    def _on_monitor(self) -> None:
        while self._mon.poll(0):
            ev = recv_monitor_message(self._mon)["event"]
            with self._lock:
                if ev == zmq.EVENT_DISCONNECTED:
                    # Whatever was in flight may be lost: resend it all after the next hello.
                    self._connected = False
                    self._ready = False
                    self._c["reconnects"] += 1
                    self._rewind()
                elif ev == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    # Events are read in order, so a DISCONNECTED before this one has already
                    # unset _ready: if it is set, the hello was answered on this connection
                    # (replies can be taken in before this event is read).
                    self._connected = True
                    if not self._ready:
                        self._say_hello()

    def _rewind(self) -> None:
        """Move every sent-but-unacked message back to the front of the send queue."""
        if self._inflight:
            self._unsent.extendleft(reversed(self._inflight))
            self._inflight.clear()

    def _on_reply(self) -> None:
        """One reply from the TP (ZMQ_EVENTS said one is there). Lock held."""
        recv = self._sock.recv
        try:
            f = recv(_NOBLOCK, copy=False)
            frames = [f.bytes]
            while f.more:              # a message arrives whole: the rest is there
                f = recv(_NOBLOCK, copy=False)
                frames.append(f.bytes)
        except zmq.Again:
            return
        kind = frames[0]
        try:
            if kind == p.ACK and len(frames) >= 2:
                feed, last = p.parse_ack(frames[1])
                if feed == self.feed_id:
                    self._on_ack(last)
            elif kind == p.ERR and len(frames) >= 2:
                feed, fseq = p.parse_ack(frames[1])
                text = frames[2].decode("utf-8", "replace") if len(frames) > 2 else ""
                if feed == self.feed_id:
                    self._on_err(fseq, text)
            else:
                log.warning("feed %d: unexpected reply %r", self.feed_id, frames[:1])
        except struct.error:
            log.warning("feed %d: malformed reply %r", self.feed_id, frames)

    def _on_ack(self, last: int) -> None:
        with self._lock:
            if self._next_fseq is None:
                # First hello answer: number what was buffered while the TP was unknown.
                self._next_fseq = last + 1
                for m in self._unsent:
                    m.stamp(self._next_fseq)
                    self._next_fseq += 1
            elif last >= self._next_fseq:
                log.warning("feed %d: TP has fseq %d logged but this feed only numbered up to %d; "
                            "is another feed using the same id?", self.feed_id, last, self._next_fseq - 1)
            if not self._ready:
                # Hello answered on this connection: everything unacked goes again, in order.
                self._ready = True
                self._rewind()
            for q in (self._inflight, self._unsent):
                while q and q[0].fseq <= last:
                    m = q.popleft()
                    self._bytes -= len(m.buf)
                    self._c["acked"] += 1
                    self._c["acked_rows"] += m.nrows
            if last > self._c["last_acked"]:
                self._c["last_acked"] = last
            self._progress_at = time.monotonic()
            self._backoff = 1
            if self._waiters:          # hello answered and/or space freed
                self._cv.notify_all()

    def _on_err(self, fseq: int, text: str) -> None:
        with self._lock:
            self._c["rejected"] += 1
            self._last_error = text
            log.error("feed %d: TP rejected fseq %d: %s", self.feed_id, fseq, text)
            for q in (self._inflight, self._unsent):
                for m in q:
                    if m.fseq == fseq:
                        q.remove(m)
                        self._bytes -= len(m.buf)
                        break
            self._cv.notify_all()

    def _tick(self, late: int = 0) -> None:
        """Deadlines and sending; runs after every poll. `late`: messages the poll kept waiting."""
        now = time.monotonic()
        with self._lock:
            if self._pending_since is not None and now - self._pending_since >= self._batch_s:
                for table in list(self._pending):
                    self._flush_table(table, block=False)
                if self._pending:      # buffer full: retry at the next poll, not in a tight loop
                    self._pending_since = now
            if not self._ready:
                if now - self._hello_at >= _HELLO_RETRY_S:
                    self._say_hello()
                return
            if self._inflight and now - self._progress_at >= self._ack_timeout():
                self._c["ack_timeouts"] += 1
                self._backoff = min(16, self._backoff * 2)
                self._progress_at = now
                self._rewind()
            if self._natural():       # everything published since the last send, one per table
                for table in list(self._pending):
                    self._flush_table(table, block=False)
            self._send_some(late)

    def _send_some(self, late: int = 0) -> None:
        """Send queued messages in fseq order until the queue or ZMQ's HWM stops us; the first
        `late` of them are counted as late. Lock held (by the I/O thread or a producer)."""
        if self._stop:
            return
        self._blocked_out = False
        for _ in range(_BURST):
            if not self._unsent:
                return
            m = self._unsent[0]
            try:
                # copied: a zero-copy send hands each buffer to pyzmq's collector thread, a GIL
                # hand-off per message that costs more than copying a message of <= 1 MiB
                self._sock.send(m.buf, _NOBLOCK, copy=len(m.buf) <= self.message_bytes)
            except zmq.Again:
                self._blocked_out = True
                return
            if late:
                late -= 1
                self._c["late_sends"] += 1
            self._unsent.popleft()
            if not self._inflight:
                self._progress_at = time.monotonic()
            self._inflight.append(m)
            m.sends += 1
            if m.sends == 1:
                self._c["sent"] += 1
                self._c["sent_rows"] += m.nrows
            else:
                self._c["resent"] += 1
