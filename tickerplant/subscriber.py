"""Subscribe to the tickerplant: the whole day, exactly once per message, per table in order.

    for ev in Subscriber(tables=["trade"], syms=["AAPL"]):
        if isinstance(ev, Update): ...ev.table, ev.batch (pyarrow.RecordBatch), ev.seq
        else: ...ev.date                      # EndOfDay, after the day's last message

    Subscriber(tp_settings, ["quote"]).run(upd=lambda table, batch: ..., end=lambda date: ...)

`tp` is the TP's `TickerplantSettings` (default: the [tickerplant] section of $TICKSTACK_CONFIG,
else the embedded defaults). Table definitions come from the TP in the handshake (as kdb's
.u.sub returns the schema) unless a registry is given.

Socket semantics. A SUB socket connects to the TP's PUB; ZeroMQ reconnects it by itself after a
TP restart. Three ways to miss data, each handled:
  * slow joiner: a new subscription reaches the PUB some time after connect. The handshake asks
    the TP's ctl socket for (day, log file, seq S) and the TP then publishes !hello with our
    token; once the hello arrives, everything after it is live and everything up to S is read
    from the log. No hello within 0.5 s means the subscription had not arrived: ask again.
  * PUB drops at the high-water mark, and messages sent while we were disconnected are gone.
    Each payload carries its seq and the previous seq of its table; a jump, or a heartbeat
    naming a later seq for a table, is a gap, filled from the log (the TP logs before it
    publishes, so the records are always there).
  * a missed !eod: a message or heartbeat of a later day closes the old day from its log.
A message reaching us both live and from the log is delivered once: a table's seq only grows.
Sym filtering happens here, on whole batches (one numpy mask per batch).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import zmq

from schemas.codec import columns, decode, peek
from schemas.registry import Registry
from schemas.settings import section
from tickerplant import protocol as p
from tickerplant.config import TickerplantSettings
from tickerplant.log import FILE_HEADER, LogReader, is_control, parse_control

log = logging.getLogger("subscriber")


class SubscriberError(RuntimeError):
    """The subscriber cannot keep its exactly-once promise (e.g. the log is unreadable)."""


class Update:
    """One message of one table: `batch` (pyarrow.RecordBatch), `seq`, `date`. The batch is
    decoded on first use; `columns()` gives numpy views without building Arrow objects."""
    __slots__ = ("table", "seq", "date", "_payload", "_registry", "_batch")

    def __init__(self, table: str, seq: int, date: dt.date, payload=None, registry=None, batch=None):
        self.table, self.seq, self.date = table, seq, date
        self._payload, self._registry, self._batch = payload, registry, batch

    @property
    def batch(self) -> pa.RecordBatch:
        if self._batch is None:
            self._batch = decode(self._payload, self._registry)[1]
        return self._batch

    def columns(self) -> tuple[list, int]:
        """(columns as schemas.codec.columns gives them, rows) - what Store.append_columns takes."""
        if self._batch is None:
            head, _, cols = columns(self._payload, self._registry)
            return cols, head.nrows
        return None, self._batch.num_rows

    def __repr__(self) -> str:
        return f"Update({self.table}, seq={self.seq}, date={self.date}, rows={self.batch.num_rows})"


@dataclass(frozen=True, slots=True)
class EndOfDay:
    date: dt.date


class Subscriber:
    def __init__(self, tp: TickerplantSettings | None = None, tables=None, syms=None,
                 registry: Registry | None = None, connect_timeout: float = 30.0,
                 ctx: zmq.Context | None = None):
        self.tp = tp or section(TickerplantSettings, "tickerplant")
        self.registry = registry
        self.tables = set(tables) if tables else None
        if registry is not None:
            for t in self.tables or ():
                registry[t]  # unknown table: fail now, with the known ones listed
        self.syms = set(syms) if syms else None
        self.connect_timeout = connect_timeout
        self.ctx = ctx or zmq.Context.instance()
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.setsockopt(zmq.RCVHWM, self.tp.pub_hwm)
        for t in self.tables or [""]:
            self.sub.setsockopt(zmq.SUBSCRIBE, p.topic(t) if t else b"")
        self.sub.setsockopt(zmq.SUBSCRIBE, p.CONTROL_PREFIX)
        self.sub.connect(self.tp.pub)
        self.closed = False
        # state: the day being read, its log, how far the log has been read, each table's seq
        self.day: dt.date | None = None       # None between a day's end and the next's first news
        self.ended: dt.date | None = None
        self.logdir = None                    # the TP's log directory, from the handshake
        self.reader: LogReader | None = None
        self.cursor = (FILE_HEADER.size, 0)
        self.last: dict[str, int] = {}
        self.counters = {"live": 0, "from_log": 0, "gaps": 0}

    def close(self) -> None:
        self.closed = True

    def run(self, upd, end=None) -> None:
        for ev in self:
            if isinstance(ev, Update):
                upd(ev.table, ev.batch)
            elif end is not None:
                end(ev.date)

    # -- handshake ----------------------------------------------------------------------------
    def _handshake(self) -> dict:
        deadline = time.monotonic() + self.connect_timeout
        while not self.closed:
            token = os.urandom(8).hex()
            try:
                rep = p.control(self.tp.ctl, "sub", timeout=2.0, token=token,
                                tables=sorted(self.tables) if self.tables else None)
            except p.Unreachable:
                if time.monotonic() > deadline:
                    raise
                continue
            until = time.monotonic() + 0.5
            while (left := until - time.monotonic()) > 0:
                if self.sub.poll(int(left * 1000) + 1):
                    frames = self.sub.recv_multipart()
                    if frames[0] == p.HELLO_TOPIC and frames[1] == token.encode():
                        if self.registry is None:
                            self.registry = Registry.from_spec(rep["schemas"])
                        return rep
        raise SubscriberError("closed before the handshake completed")

    # -- the log ------------------------------------------------------------------------------
    def _begin(self, day: dt.date, path=None) -> None:
        self.day = day
        self.logdir = os.path.dirname(path) if path else self.logdir
        self.reader = None
        self.cursor = (FILE_HEADER.size, 0)
        self.last = {}

    def _read_log(self, until: int | None):
        """Deliver log records from the cursor with seq < until (None: to the end of the file),
        skipping what was already delivered. Ends the day at its end-of-day record."""
        if self.reader is None:
            path = p.log_path(self.logdir, self.day)
            if not os.path.exists(path):
                return
            self.reader = LogReader(path)
        offset, seq = self.cursor
        # read a chunk at a time, not mapped: the TP may cut a torn tail off a file it continues
        for rec in self.reader.batched_records(offset, seq, mapped=False):
            if until is not None and rec.seq >= until:
                break
            self.cursor = (self.reader.end_offset(rec), rec.seq)
            if is_control(rec.payload):
                if "eod" in parse_control(rec.payload):
                    yield from self._end()
                    return
                continue
            table = peek(rec.payload).table
            if (self.tables is None or table in self.tables) and rec.seq > self.last.get(table, 0):
                self.counters["from_log"] += 1
                ev = self._deliver(table, rec.seq, rec.payload)
                if ev is not None:
                    yield ev
        else:
            if self.reader.error and until is not None and self.cursor[1] < until - 1:
                raise SubscriberError(f"{self.reader.path}: {self.reader.error}; cannot fill the gap "
                                      f"up to seq {until - 1}. Check it with `tickstack log check`")

    def _end(self):
        self.ended, self.day, self.reader = self.day, None, None
        yield EndOfDay(self.ended)

    def _roll_to(self, day: dt.date):
        """A later day is live: finish ours from its log (its end-of-day record ends it)."""
        if self.day is not None and self.day < day:
            yield from self._read_log(None)
            if self.day is not None:  # the log has no end marker (closed by a crash): end anyway
                yield from self._end()
        if self.day is None and (self.ended is None or day > self.ended):
            self._begin(day)

    def _deliver(self, table: str, seq: int, payload):
        self.last[table] = seq
        if self.syms is None:
            return Update(table, seq, self.day, payload, self.registry)
        _, _, cols = columns(payload, self.registry)
        codes, words = cols[1]
        lut = np.fromiter((w in self.syms for w in words), bool, len(words))
        if not lut.any():
            return None
        if lut.all():
            return Update(table, seq, self.day, payload, self.registry)
        _, batch = decode(payload, self.registry)
        return Update(table, seq, self.day, batch=batch.filter(pa.array(lut[codes])))

    # -- the stream ---------------------------------------------------------------------------
    def start(self) -> "Subscriber":
        """Handshake now (it otherwise happens on the first iteration): afterwards nothing
        published is missed, even before iteration begins."""
        if self._snapshot is None:
            self._snapshot = self._handshake()
        return self

    _snapshot: dict | None = None

    def __iter__(self):
        rep = self.start()._snapshot
        self._begin(dt.date.fromisoformat(rep["date"]), rep["log"])
        yield from self._read_log(rep["seq"] + 1)
        silent_ms = 0
        limit = 10 * self.tp.heartbeat_ms
        while not self.closed:
            if not self.sub.poll(100):
                silent_ms += 100
                if silent_ms == limit:
                    log.warning("no heartbeat from the tickerplant for %d ms; waiting", limit)
                continue
            silent_ms = 0
            frames = self.sub.recv_multipart(copy=False)
            head = frames[0].bytes
            if head == p.HB_TOPIC:
                yield from self._heartbeat(*p.parse_news(frames[1].bytes))
            elif head == p.EOD_TOPIC:
                day = p.parse_news(frames[1].bytes)[0]
                if self.day is not None and day >= self.day:
                    yield from self._read_log(None)  # its end-of-day record ends the day
                    if self.day is not None:
                        yield from self._end()
            elif head[:1] != p.CONTROL_PREFIX:
                cut = head.index(b"\0")
                yield from self._live(head[:cut].decode(), memoryview(head)[cut + 1:], frames[1:])
        self.sub.close(0)

    def _heartbeat(self, day: dt.date, seq: int, last: dict[str, int]):
        if self.day is None or day > self.day:
            yield from self._roll_to(day)
        if day == self.day and any(s > self.last.get(t, 0) for t, s in last.items()
                                   if self.tables is None or t in self.tables):
            self.counters["gaps"] += 1
            yield from self._read_log(seq + 1)

    def _live(self, table: str, metas: bytes, payloads):
        for i, frame in enumerate(payloads):
            ymd, seq, prev = p.META.unpack_from(metas, i * p.META.size)
            day = p.date_of(ymd)
            if self.day is None or day > self.day:
                yield from self._roll_to(day)
            if self.day != day:
                continue
            last = self.last.get(table, 0)
            if seq <= last:
                continue
            if prev > last:
                self.counters["gaps"] += 1
                yield from self._read_log(seq)
            self.counters["live"] += 1
            ev = self._deliver(table, seq, frame.buffer)
            if ev is not None:
                yield ev
