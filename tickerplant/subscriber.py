"""Subscribe to the tickerplant: the whole day, exactly once per message, per table in order.

    for ev in Subscriber(tables=["trade"], syms=["AAPL"]):
        if isinstance(ev, Update): ...ev.table, ev.batch (pyarrow.RecordBatch), ev.seq
        else: ...ev.date                      # EndOfDay, after the day's last message

    for b in Subscriber(tables=["trade"]).batches():      # natural batching, see below
        if isinstance(b, Batch): ...b.table, b.columns(), b.arrow(), b.seqs, b.counts, b.date
        else: ...b.date                       # EndOfDay, after the day's last batch

    Subscriber(tp_settings, ["quote"]).run(upd=lambda table, batch: ..., end=lambda date: ...)
    Subscriber(tp_settings, ["quote"]).run(upd_batch=lambda b: ..., end=lambda date: ...)

`tp` is the TP's `TickerplantSettings` (default: the [tickerplant] section of $TICKSTACK_CONFIG,
else the embedded defaults). Table definitions come from the TP in the handshake (as kdb's
.u.sub returns the schema) unless a registry is given.

Batches. `batches()` hands a consumer, per table, the rows of every message that arrived in one
poll (everything the socket held when it looked, up to POLL_MSGS messages), concatenated in
order; a stretch read from the log (joining, a gap) comes in batches of up to BATCH_BYTES of
payload per table. At a low rate a batch is one message, at once; at a high rate batches grow
by themselves, so the consumer pays per batch, not per message. The messages, rows and order
are those of the per-message iterator, exactly once; an EndOfDay comes after every batch of
its day and before any of the next.

Your own poll loop. `take()` never blocks: it returns what has arrived as Updates and EndOfDays.
Register `socket` in your zmq.Poller, call take() when it is readable, when your poll times out
(so that it can time a silent TP and warn), and at once while `more` is True (it is while the
day's log is being read). No thread of ours sits between the
socket and you, so a message costs no wake-up between threads (live strategies run this way).

Socket semantics. A SUB socket connects to the TP's PUB; ZeroMQ reconnects it by itself after a
TP restart. Its receive queue holds `TickerplantSettings.queue_messages()` messages, each at
most `pub_message_bytes` (the TP's own bound), so it too is bounded in bytes. Three ways to
miss data, each handled:
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
"The log" is the TP's file when the path it names in the handshake is that file here (same
device and inode), else the TP's log server (`[tickerplant] log_serve`, another host): the same
records with their seqs, a chunk per request (`log="auto"`; "file" or "network" insist).
With [curve] on (`curve`, default: the config's [curve]), every socket is a CURVE client.
A published message of one table's payloads that continues exactly where that table left off,
all of today, is taken whole (a few operations, whatever its payloads); anything else goes
payload by payload through the checks above.
Sym filtering happens here, on whole batches (one numpy mask per batch or message).
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import struct
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import zmq

from schemas.codec import columns, decode, peek, warm_up
from schemas.registry import Registry
from schemas.settings import section
from tickerplant import protocol as p
from tickerplant.config import CurveSettings, TickerplantSettings
from tickerplant.curve import secure_client
from tickerplant.log import FILE_HEADER, LogReader, is_control, parse_control

log = logging.getLogger("subscriber")

POLL_MSGS = 4096            # messages taken from the socket in one poll, at most, per batch
BATCH_BYTES = 32 << 20      # payload bytes per table in one batch read from the log, at most
_POLL_END = object()        # the stream's marker: the socket had nothing more (a batch ends)
_NOBLOCK, _POLLIN = p.NOBLOCK, int(zmq.POLLIN)
_NROWS, _NROWS_AT = struct.Struct("<I"), 8   # a payload's row count in its header


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


class Batch:
    """The rows of consecutive messages of one table, in order: `table`, `date`, `seqs` (each
    message's seq), `counts` (each message's rows in the batch: after a sym filter, maybe 0),
    `columns()` -> (columns, rows) in the form `schemas.codec.columns` gives them (numpy arrays,
    (int32 codes, words) for symbols, Arrow arrays for strings; what `Store.append_columns`
    takes), `arrow()` -> pyarrow.RecordBatch, `len(batch)` rows, `parts()` each message's
    columns apart, `nbytes` the payload bytes. Columns are built on first use:
    views of the message itself when the batch is one message, else one concatenation per
    column (symbols merged into one dictionary)."""
    __slots__ = ("table", "date", "seqs", "nbytes", "_payloads", "_registry", "_syms", "_cols", "_n",
                 "_counts")

    def __init__(self, table: str, date: dt.date, seqs: list[int], payloads: list, registry: Registry,
                 syms: set | None = None, nbytes: int = 0):
        self.table, self.date, self.seqs, self.nbytes = table, date, seqs, nbytes
        self._payloads, self._registry, self._syms = payloads, registry, syms
        self._cols = self._counts = None
        self._n = 0

    def parts(self):
        """(columns, rows) of each message in turn, as views of the message itself: no
        concatenation, for a consumer that copies rows anyway (the RDB's store does, and for
        big messages one copy beats two). With a sym filter: the filtered batch, as one part."""
        if self._syms is not None or self._payloads is None:
            yield self.columns()
            return
        for b in self._payloads:
            head, _, cols = columns(b, self._registry)
            yield cols, head.nrows

    def columns(self) -> tuple[list, int]:
        if self._cols is None:
            self._cols, self._counts = _gather(self._payloads, self._registry)
            self._n = int(self._counts.sum())
            if self._syms is not None:
                self._filter()
            self._payloads = None  # the columns hold what they need
        return self._cols, self._n

    @property
    def counts(self) -> np.ndarray:
        self.columns()
        return self._counts

    def __len__(self) -> int:
        return self.columns()[1]

    @property
    def rows(self) -> int:
        """Rows in the batch: from the messages' headers while the columns are not built."""
        if self._cols is None and self._syms is None:
            return sum(_NROWS.unpack_from(b, _NROWS_AT)[0] for b in self._payloads)
        return self.columns()[1]

    def _filter(self) -> None:
        codes, words = self._cols[1]
        lut = np.fromiter((w in self._syms for w in words), bool, len(words))
        if lut.all():
            return
        mask = lut[codes]
        ends = np.cumsum(self._counts)
        kept = np.concatenate([[0], np.cumsum(mask)])
        self._counts = kept[ends] - kept[ends - self._counts]
        self._n = int(kept[-1])
        self._cols = [(c[0][mask], c[1]) if isinstance(c, tuple)
                      else c.filter(pa.array(mask)) if isinstance(c, pa.Array) else c[mask]
                      for c in self._cols]

    def arrow(self) -> pa.RecordBatch:
        cols, n = self.columns()
        schema = self._registry[self.table]
        arrays = []
        for c, col in zip(schema.columns, cols):
            if c.type == "symbol":
                codes, words = col
                arrays.append(pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()),
                                                             pa.array(words, pa.string())))
            elif c.type == "string":
                arrays.append(col)
            elif c.type == "bool":
                arrays.append(pa.array(col.astype(bool)))
            else:
                arrays.append(pa.Array.from_buffers(c.arrow, n, [None, pa.py_buffer(np.ascontiguousarray(col))]))
        return pa.RecordBatch.from_arrays(arrays, schema=schema.arrow)

    def __repr__(self) -> str:
        return f"Batch({self.table}, date={self.date}, messages={len(self.seqs)}, seqs={self.seqs[0]}..{self.seqs[-1]})"


def _gather(payloads: list, registry: Registry) -> tuple[list, np.ndarray]:
    """(columns, rows per message) of validated payloads of one table, concatenated in order:
    one `columns` call per message (views, a few microseconds), then one concatenation per
    column; symbol dictionaries are merged in Arrow, so only the batch's distinct words
    become Python strings. (Many messages of one buffer can skip even the per-message call:
    see the log replay's vectorised layouts.)"""
    if len(payloads) == 1:
        head, _, cols = columns(payloads[0], registry)
        return cols, np.array([head.nrows], np.int64)
    parts = [columns(b, registry, words=False) for b in payloads]
    counts = np.fromiter((h.nrows for h, _, _ in parts), np.int64, len(parts))
    schema = parts[0][1]
    out = []
    for j, (_, typ, item) in enumerate(schema.plan):
        got = [c[j] for _, _, c in parts]
        if item:
            out.append(np.concatenate(got))
        elif typ == "symbol":
            out.append(_merge_symbols(got, counts))
        else:
            out.append(pa.concat_arrays(got))
    return out, counts


def _merge_symbols(got: list, counts: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One (codes, words) from each message's (codes, Arrow dictionary): the distinct words of
    all the dictionaries (one Arrow hash pass) and each row's code into them."""
    dicts = [d for _, d in got]
    sizes = np.fromiter(map(len, dicts), np.int64, len(dicts))
    enc = pc.dictionary_encode(pa.concat_arrays(dicts))
    lut = enc.indices.to_numpy(zero_copy_only=False)
    codes = np.concatenate([c for c, _ in got]).astype(np.int64)
    codes += np.repeat(np.cumsum(sizes) - sizes, counts)
    return lut[codes].astype(np.int32, copy=False), enc.dictionary.to_pylist()


def _same_file(path: str, log_id) -> bool:
    """Is `path` here the TP's log file (same device and inode as it reported)? Without an id
    (an older TP), any readable file by that name is taken for it."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return log_id is None or [st.st_dev, st.st_ino] == list(log_id)


@dataclass(frozen=True, slots=True)
class EndOfDay:
    date: dt.date


_METAS: dict[int, struct.Struct] = {}


def _metas(k: int) -> struct.Struct:
    """k METAs (date, seq, prev) back to back, read in one call."""
    s = _METAS.get(k)
    if s is None:
        if len(_METAS) > 4096:
            _METAS.clear()
        s = _METAS[k] = struct.Struct("<" + "IQQ" * k)
    return s


class Subscriber:
    def __init__(self, tp: TickerplantSettings | None = None, tables=None, syms=None,
                 registry: Registry | None = None, connect_timeout: float = 30.0,
                 ctx: zmq.Context | None = None, curve: CurveSettings | None = None,
                 log: str = "auto"):
        self.tp = tp or section(TickerplantSettings, "tickerplant")
        self.curve = curve if curve is not None else section(CurveSettings, "curve")
        if log not in ("auto", "file", "network"):
            raise ValueError(f"log={log!r}: use \"auto\", \"file\" or \"network\"")
        if log == "network" and not self.tp.log_serve:
            raise ValueError("log=\"network\" needs the TP's log server: set [tickerplant] log_serve "
                             "(on the TP and here) to its endpoint")
        self.log_mode = log
        self.remote = None                    # the LogClient, in network mode
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
        # in messages of at most pub_message_bytes each: the same byte bound as the TP's queue
        self.sub.setsockopt(zmq.RCVHWM, self.tp.queue_messages())
        for t in self.tables or [""]:
            self.sub.setsockopt(zmq.SUBSCRIBE, p.topic(t) if t else b"")
        self.sub.setsockopt(zmq.SUBSCRIBE, p.CONTROL_PREFIX)
        secure_client(self.sub, self.curve)
        self.sub.connect(self.tp.pub)
        self.closed = False
        # state: the day being read, its log, how far the log has been read, each table's seq
        self.day: dt.date | None = None       # None between a day's end and the next's first news
        self.ended: dt.date | None = None
        self.logdir = None                    # the TP's log directory, from the handshake
        self.reader: LogReader | None = None
        self.cursor = (FILE_HEADER.size, 0)
        self.last: dict[str, int] = {}
        self.counters = {"live": 0, "from_log": 0, "gaps": 0, "malformed": 0}
        self._ymd = 0                         # self.day as yyyymmdd (0: no day)

    def close(self) -> None:
        self.closed = True
        if self._step is not None:              # take(): the caller's thread, nothing iterating
            self._step.close()
            self.sub.close(0)
            if self.remote is not None:
                self.remote.close()

    _step = None                                # take()'s suspended stream
    more = False                                # take() stopped at its limit: call it again now

    @property
    def socket(self) -> zmq.Socket:
        """The SUB socket, to register in the caller's zmq.Poller for `take`."""
        return self.sub

    def take(self, limit: int = 1024) -> list:
        """Without blocking: the Updates and EndOfDays that what has arrived makes, in order,
        for a caller that runs its own poll loop (no thread of ours, so no wake-up between
        threads). Register `socket` and call take() when it is readable, on a timer, and at
        once while `more` is True: the first calls read the day so far from the log, at most
        about `limit` events each. Use one of iteration, batches() and take() per Subscriber."""
        step = self._step
        if step is None:
            step = self._step = self._stream(wait_ms=0)
        out, update = [], self._update
        self.more = False
        for item in step:
            if type(item) is tuple:
                table, seqs, payloads, day = item
                for seq, payload in zip(seqs, payloads):
                    ev = update(table, seq, day, payload)
                    if ev is not None:
                        out.append(ev)
            elif item is _POLL_END:
                break
            else:
                out.append(item)
            if len(out) >= limit:
                self.more = True
                break
        return out

    def run(self, upd=None, end=None, upd_batch=None) -> None:
        """Call `upd(table, batch)` per message, or `upd_batch(batch)` per Batch; `end(date)`
        at each end of day."""
        if upd_batch is not None:
            for b in self.batches():
                if isinstance(b, Batch):
                    upd_batch(b)
                elif end is not None:
                    end(b.date)
            return
        if upd is None:
            raise TypeError("run() needs upd(table, batch) or upd_batch(batch)")
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
                rep = p.control(self.tp.ctl, "sub", timeout=2.0, token=token, curve=self.curve,
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
        self._ymd = p.ymd(day)
        self.logdir = os.path.dirname(path) if path else self.logdir
        self.reader = None
        self.cursor = (FILE_HEADER.size, 0)
        self.last = {}

    def _choose_log(self, rep: dict) -> None:
        """File or network: the file when it is the TP's own (same device and inode as the TP
        reports), else the TP's log server. log="auto" decides; "file"/"network" insist."""
        mode = self.log_mode
        if mode == "auto":
            mode = "file" if _same_file(rep["log"], rep.get("log_id")) or not self.tp.log_serve else "network"
            if mode == "file" and not _same_file(rep["log"], rep.get("log_id")):
                raise SubscriberError(
                    f"cannot read the tickerplant's log {rep['log']} here (another host, or another "
                    "file by that name); set [tickerplant] log_serve on the TP and here to read it "
                    "over the network")
        if mode == "network" and self.remote is None:
            from tickerplant.logserve import LogClient
            self.remote = LogClient(self.tp.log_serve, self.curve, ctx=self.ctx,
                                    timeout=min(10.0, self.connect_timeout))
            log.info("reading the log over the network from %s", self.tp.log_serve)

    def _read_log(self, until: int | None):
        """Deliver log records from the cursor with seq < until (None: to the end of the file),
        skipping what was already delivered. Ends the day at its end-of-day record."""
        if self.remote is not None:
            yield from self._read_remote(until)
            return
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

    def _read_remote(self, until: int | None):
        """`_read_log` over the TP's log server, a chunk per request; the cursor is the last seq
        the server has looked at (records of other tables included)."""
        deadline = time.monotonic() + self.connect_timeout
        tables = sorted(self.tables) if self.tables else None
        while self.day is not None and not self.closed:
            try:
                # what was delivered live is not sent again (the file's reader skips it locally)
                chunk = self.remote.fetch(self.day, self.cursor[1] + 1,
                                          None if until is None else until - 1, tables, self.last)
            except p.Unreachable:
                if time.monotonic() > deadline:
                    raise SubscriberError(f"the log server {self.tp.log_serve} does not answer; "
                                          f"cannot fill the gap after seq {self.cursor[1]}") from None
                continue
            except p.ControlError as e:
                raise SubscriberError(str(e)) from None
            head = chunk.head
            if head.get("missing"):
                return
            for seq, payload in zip(chunk.seqs, chunk.payloads):
                self.cursor = (0, seq)
                if is_control(payload):
                    if "eod" in parse_control(payload):
                        yield from self._end()
                        return
                    continue
                table = peek(payload).table
                if (self.tables is None or table in self.tables) and seq > self.last.get(table, 0):
                    self.counters["from_log"] += 1
                    self.counters["from_network"] = self.counters.get("from_network", 0) + 1
                    yield self._deliver(table, seq, payload)
            self.cursor = (0, max(self.cursor[1], head["next"] - 1))
            if head.get("error") and until is not None and self.cursor[1] < until - 1:
                raise SubscriberError(f"the tickerplant's log: {head['error']}; cannot fill the gap "
                                      f"up to seq {until - 1}. Check it with `tickstack log check`")
            if head["done"]:
                return

    def _end(self):
        self.ended, self.day, self.reader = self.day, None, None
        self._ymd = 0
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
        """One message goes to the consumer: the stream's item for it."""
        self.last[table] = seq
        return table, (seq,), [payload], self.day

    def _update(self, table: str, seq: int, day: dt.date, payload) -> Update | None:
        """A message as an Update, sym-filtered (None: none of its rows is wanted)."""
        if self.syms is None:
            return Update(table, seq, day, payload, self.registry)
        _, _, cols = columns(payload, self.registry)
        codes, words = cols[1]
        lut = np.fromiter((w in self.syms for w in words), bool, len(words))
        if not lut.any():
            return None
        if lut.all():
            return Update(table, seq, day, payload, self.registry)
        _, batch = decode(payload, self.registry)
        return Update(table, seq, day, batch=batch.filter(pa.array(lut[codes])))

    # -- the stream ---------------------------------------------------------------------------
    def start(self) -> "Subscriber":
        """Handshake now (it otherwise happens on the first iteration): afterwards nothing
        published is missed, even before iteration begins."""
        if self._snapshot is None:
            warm_up()
            self._snapshot = self._handshake()
        return self

    _snapshot: dict | None = None

    def __iter__(self):
        """Update per message, EndOfDay per day."""
        update = self._update
        for item in self._stream():
            if type(item) is tuple:
                table, seqs, payloads, day = item
                for seq, payload in zip(seqs, payloads):
                    ev = update(table, seq, day, payload)
                    if ev is not None:
                        yield ev
            elif item is not _POLL_END:
                yield item

    def batches(self):
        """Batch per table per poll (and per stretch of log), EndOfDay per day."""
        acc: dict[str, list] = {}   # table -> [seqs, payloads, bytes, day], in arrival order
        syms = self.syms

        def flush():
            for table, (seqs, payloads, nbytes, day) in acc.items():
                b = Batch(table, day, seqs, payloads, self.registry, syms, nbytes)
                if syms is None or len(b):
                    yield b
            acc.clear()

        for item in self._stream():
            if type(item) is tuple:
                table, seqs, payloads, day = item
                a = acc.get(table)
                if a is None:
                    a = acc[table] = [list(seqs), payloads, 0, day]
                else:
                    a[0].extend(seqs)
                    a[1].extend(payloads)
                a[2] += sum(map(len, payloads))
                if a[2] >= BATCH_BYTES:
                    del acc[table]
                    b = Batch(table, a[3], a[0], a[1], self.registry, syms, a[2])
                    if syms is None or len(b):
                        yield b
            elif item is _POLL_END:
                if acc:
                    yield from flush()
            else:  # EndOfDay: after every batch of its day
                yield from flush()
                yield item

    def _stream(self, wait_ms: int = 100):
        """The state machine: items (table, seqs, payloads, day) in the order they are to be
        delivered, EndOfDay, and _POLL_END after each poll's messages. wait_ms=0 (take): a
        poll that finds nothing yields _POLL_END too, instead of waiting."""
        rep = self.start()._snapshot
        self._choose_log(rep)
        self._begin(dt.date.fromisoformat(rep["date"]), rep["log"])
        yield from self._read_log(rep["seq"] + 1)
        yield _POLL_END
        # silence is timed by the clock, not by counting polls: take() polls without waiting,
        # and at whatever rate its caller calls it
        limit_ms = 10 * self.tp.heartbeat_ms
        heard, warned = time.monotonic(), False
        recv, counters = self.sub.recv, self.counters
        items = [(self.sub, _POLLIN)]
        while not self.closed:
            if not zmq.zmq_poll(items, wait_ms):
                if not warned and (time.monotonic() - heard) * 1000 >= limit_ms:
                    warned = True
                    log.warning("no heartbeat from the tickerplant for %d ms; waiting", limit_ms)
                if not wait_ms:
                    yield _POLL_END
                continue
            heard, warned = time.monotonic(), False
            for _ in range(POLL_MSGS):
                try:
                    f = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    break
                frames = [f]
                while f.more:  # the rest of a multipart message is there with its first frame
                    f = recv(_NOBLOCK, copy=False)
                    frames.append(f)
                head = frames[0].bytes
                if head[:1] == p.CONTROL_PREFIX:
                    yield from self._control(head, frames)
                    continue
                cut = head.find(b"\0")
                k = len(frames) - 1
                if cut < 0 or len(head) != cut + 1 + p.META.size * k:
                    counters["malformed"] += 1
                    log.warning("dropped a malformed message from the tickerplant (%d frames)", k + 1)
                    continue
                table = head[:cut].decode()
                metas = _metas(k).unpack_from(head, cut + 1) if k else ()
                seqs, prevs = metas[1::3], metas[2::3]
                last = self.last  # _begin replaces it
                before = last.get(table, 0)
                if (k and prevs[0] == before and metas[0::3].count(self._ymd) == k
                        and seqs[0] > before and prevs[1:] == seqs[:-1]):
                    # the usual case: today's, continuing exactly where this table left off
                    last[table] = seqs[-1]
                    counters["live"] += k
                    yield table, seqs, [x.buffer for x in frames[1:]], self.day
                else:
                    yield from self._live(table, metas, frames[1:])
            yield _POLL_END
        self.sub.close(0)
        if self.remote is not None:
            self.remote.close()

    def _control(self, head: bytes, frames):
        if head == p.HB_TOPIC:
            yield from self._heartbeat(*p.parse_news(frames[1].bytes))
        elif head == p.EOD_TOPIC:
            day = p.parse_news(frames[1].bytes)[0]
            if self.day is not None and day >= self.day:
                yield from self._read_log(None)  # its end-of-day record ends the day
                if self.day is not None:
                    yield from self._end()

    def _heartbeat(self, day: dt.date, seq: int, last: dict[str, int]):
        if self.day is None or day > self.day:
            yield from self._roll_to(day)
        if day == self.day and any(s > self.last.get(t, 0) for t, s in last.items()
                                   if self.tables is None or t in self.tables):
            self.counters["gaps"] += 1
            yield from self._read_log(seq + 1)

    def _live(self, table: str, metas: tuple, payloads):
        """Payload by payload: a new day, a duplicate, a gap before it."""
        for i, frame in enumerate(payloads):
            ymd, seq, prev = metas[3 * i: 3 * i + 3]
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
            yield self._deliver(table, seq, frame.buffer)
