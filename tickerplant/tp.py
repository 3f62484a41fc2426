"""The tickerplant: validate, log, publish (kdb-tick's tick.q as one class). The wire protocol
(sockets, frames, topics, control commands) is tickerplant/protocol.py; this is the server.

Sockets, endpoints from `TickerplantSettings` (loopback by default): `ingest` ROUTER (feeds),
`pub` PUB (subscribers), `ctl` ROUTER speaking the REQ/REP envelope (sub handshake, status, eod,
stop). The TP never waits for anyone: PUB drops for a subscriber whose queue is full, and every
payload carries its seq and its table's previous seq, so the subscriber sees the gap and fills
it from the log. With `log_serve` set, a LogServer (tickerplant/logserve.py) serves the log's
records from its own thread and socket to subscribers that cannot read the file. With [curve]
on, every one of these sockets is a CURVE server (tickerplant/curve.py; set up at bind, nothing
per message) and refused handshakes show in status as `auth_denied`.

No message on any socket can block or end the TP. Every socket is read with NOBLOCK after a poll
(a REP socket can poll readable and then block in recv on a message without an envelope, and
fails with EFSM on a multipart request). A control request with a REQ envelope (routing ids, an
empty delimiter, a body) gets exactly one JSON reply, an error one for anything malformed
(counted as `bad_control`); a message without an envelope cannot be answered and is dropped
(counted as `dropped_control`). ZeroMQ itself disconnects a peer sending a frame over
`ctl_max_bytes` (control) or 2 x `max_message_bytes` (ingest).

Memory per subscriber is bounded in bytes. ZeroMQ's high-water mark counts messages (a
multipart message is one), and a changed SNDHWM only applies to connections made afterwards
(libzmq 4.3.5, checked), so the TP fixes both factors of the product at bind time: it never
publishes a message of more than `pub_message_bytes` (payloads plus 128 per frame; the class),
and sets hwm = clamp(pub_queue_bytes // class, 1, pub_hwm). Natural batching is what keeps
this from costing anything: the payloads of one table that one loop took go out together as
one multipart message, split where the next payload would cross the class or where the message
would hold more than pub_hwm // hwm payloads (so a full queue holds at most pub_queue_bytes and
at most pub_hwm payloads, as when each payload went alone). A single payload
larger than the class (our feeds split theirs to fit; a raw sender might not) makes the class
grow to the next power of two and the PUB endpoint unbind and bind again with the new hwm:
every subscriber reconnects by itself and fills what it missed from the log (`pub_rebinds`).

Per message, the loop costs: two recvs, `codec.check` (a dozen operations for tables of
fixed-width columns and one symbol column), the dedup lookup; the log write, the metas and
the PUB send are per loop and table (one send call per payload frame).

State, all of it:
  day, log        the trading day and its LogWriter (log.seq = last seq written today)
  last[table]     seq of the table's last message today (the `prev` of its next one)
  fseq[feed]      last fseq logged per feed id
  pending[table]  batched mode: [(meta, frame, size)] waiting for the publish timer
  counters        what came in, what went out, what was refused
  pub_class       the largest message the publish queue is sized for (bytes; see above)
"""
from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import reprlib
import time
from collections import Counter, defaultdict
from itertools import chain, repeat
from pathlib import Path

import zmq

from schemas.codec import HEADER, MAGIC, CodecError, check, peek
from schemas.registry import Registry
from tickerplant import protocol as p
from tickerplant.clock import Clock
from tickerplant.config import CurveSettings, EodSettings, TickerplantConfig, TickerplantSettings
from tickerplant.curve import refused, secure_server
from tickerplant.health import TABLE as HEARTBEAT_TABLE
from tickerplant.health import Outbox
from tickerplant.log import LogWriter, is_control
from tickerplant.protocol import NOBLOCK, SNDMORE, split_envelope, topic

log = logging.getLogger("tickerplant")

# What one queued message costs beyond its bytes, per frame: libzmq's 64-byte msg_t in the pipe
# plus the allocation header of its content. Part of the publish queue's byte accounting.
FRAME_COST = 128
CTL_PER_LOOP = 64            # control requests served per loop, so a flood cannot starve ingest
_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 60


class Tickerplant:
    def __init__(self, settings: TickerplantSettings, eod: EodSettings, log_dir: Path,
                 registry: Registry, ctx: zmq.Context | None = None,
                 curve: CurveSettings | None = None):
        self.tp = settings
        self.curve = curve
        self.registry = registry
        self.clock = Clock(eod.time, eod.tz)
        self.dir = Path(log_dir)
        self.ctx = ctx or zmq.Context.instance()
        self.counters: Counter = Counter()
        self.last: dict[str, int] = {}
        self.fseq: dict[int, int] = {}
        self.pending: dict[str, list] = defaultdict(list)
        self.stopping = False
        self.last_error = ""
        self.outbox = Outbox()   # its own heartbeat rows (tickerplant/health.py), taken at heartbeat
        # what the TP publishes per message, at most: the queue is sized for it once, at bind
        self.pub_class = settings.pub_message_bytes
        self._open_day()
        self._bind()
        self.log_server = None
        if settings.log_serve:
            from tickerplant.logserve import LogServer
            self.log_server = LogServer(settings.log_serve, self.dir, registry.tables,
                                        chunk_bytes=settings.log_chunk_bytes,
                                        max_request_bytes=settings.log_serve_max_bytes,
                                        curve=curve, ctx=self.ctx).start()

    @classmethod
    def from_config(cls, cfg: TickerplantConfig) -> "Tickerplant":
        return cls(cfg.tickerplant, cfg.eod, cfg.tplog_dir, cfg.registry(), curve=cfg.curve)

    # -- day and log --------------------------------------------------------------------------
    def _open_day(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        today = self.clock.day()
        logs = sorted(self.dir.glob("tp_????????.log"))
        day = today
        if logs:
            latest = p.log_day(logs[-1])
            w = LogWriter(logs[-1], latest, visit=self._recover)
            if w.torn:
                log.warning("%s: cut a torn last record (%d bytes), kept beside it", w.path, w.torn)
            log.info("continuing %s at seq %d", w.path, w.seq)
            if latest >= today and not w.ended:
                self._start(w, latest)
                return
            if not w.ended:  # the TP was down over a roll: close that day now
                log.warning("closing %s, left open by a previous run", w.path)
                w.end()
            else:
                w.close()
            day = max(today, latest + dt.timedelta(days=1))
            self.last = {}
        self._start(LogWriter(p.log_path(self.dir, day), day), day)

    def _recover(self, rec) -> None:
        """Rebuild last[table] and fseq[feed] from a log being continued, record by record."""
        if is_control(rec.payload):
            return
        head = peek(rec.payload)
        self.last[head.table] = rec.seq
        # size the publish queue for the day's messages now, not by a rebind at the first one
        cost = len(rec.payload) + 2 * FRAME_COST + p.META.size
        if cost > self.pub_class:
            self.pub_class = 1 << (cost - 1).bit_length()
        if head.feed:
            self.fseq[head.feed] = max(self.fseq.get(head.feed, 0), head.fseq)

    def _start(self, w: LogWriter, day: dt.date) -> None:
        w.fsync = self.tp.fsync == "always"
        self.log, self.day = w, day
        self.ymd = p.ymd(day)
        self.roll_at = self.clock.end(day)

    def end_of_day(self) -> dt.date:
        """Close the day: publish what is pending, mark and close its log, tell subscribers,
        open the next day. Every message before this call is in the old day, every one after in
        the new: the TP is single-threaded."""
        self._publish_pending()
        ended, seq, last = self.day, self.log.seq, dict(self.last)
        self.log.end()
        self.pub.send_multipart(p.news(p.EOD_TOPIC, ended, seq, last))
        day = max(ended + dt.timedelta(days=1), self.clock.day())
        self.last = {}
        self._start(LogWriter(p.log_path(self.dir, day), day), day)
        self.counters["eod"] += 1
        log.info("end of day %s at seq %d; now %s", ended, seq, day)
        return ended

    # -- sockets ------------------------------------------------------------------------------
    def _bind(self) -> None:
        self.ingest = self.ctx.socket(zmq.ROUTER)
        self.ingest.setsockopt(zmq.MAXMSGSIZE, 2 * self.tp.max_message_bytes)  # hard cap: peer dropped
        self.ingest.setsockopt(zmq.RCVHWM, 0)
        self.ingest.setsockopt(zmq.LINGER, 0)
        secure_server(self.ingest, self.curve)
        self.ingest.bind(self.tp.ingest)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, self.pub_hwm())
        self.pub.setsockopt(zmq.LINGER, 0)
        secure_server(self.pub, self.curve)
        self.pub.bind(self.tp.pub)
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)  # a wildcard port resolved
        self.pub_bound = True
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, self.tp.ctl_max_bytes)
        self.ctl.setsockopt(zmq.LINGER, 0)
        secure_server(self.ctl, self.curve)
        self.ctl.bind(self.tp.ctl)

    def pub_hwm(self) -> int:
        """Messages each subscriber's queue may hold: pub_queue_bytes of the current class."""
        return self.tp.queue_messages(self.pub_class)

    @property
    def pub_group(self) -> int:
        """Payloads one published message may hold, so that a full queue holds at most pub_hwm
        payloads (as many as it did when each payload went alone)."""
        return max(1, self.tp.pub_hwm // self.pub_hwm())

    @property
    def pub_class(self) -> int:
        """The largest message the publish queue is sized for (bytes)."""
        return self._pub_class

    @pub_class.setter
    def pub_class(self, value: int) -> None:
        self._pub_class = value
        self._group = self.pub_group

    def _grow_pub(self, cost: int) -> None:
        """A payload of `cost` bytes is about to be published and exceeds the class: grow the
        class and rebind, so that no existing queue (sized for smaller messages) takes it.
        Never happens for payloads up to pub_message_bytes (every message from our feeds).
        Known libzmq 4.3.5 race (zeromq/libzmq#3442): a subscriber connection that breaks in the
        few ms while the unbind tears it down, in the middle of a multipart message, can trip an
        assertion; rebinds are rare (once per size class above pub_message_bytes)."""
        old = self.pub_class
        self.pub_class = 1 << (cost - 1).bit_length()
        hwm = self.pub_hwm()
        if self.pub_bound:
            self.pub.unbind(self.pub_endpoint)
        self.pub.setsockopt(zmq.SNDHWM, hwm)
        self.counters["pub_rebinds"] += 1
        log.info("publish queue: messages up to %d bytes (was %d), %d per subscriber "
                 "(pub_queue_bytes %d); subscribers reconnect and fill the gap from the log",
                 self.pub_class, old, hwm, self.tp.pub_queue_bytes)
        self._rebind_pub(wait_s=1.0)

    def _rebind_pub(self, wait_s: float) -> None:
        """Bind the PUB again. libzmq closes the old listener asynchronously, so the port can be
        busy for a few ms; after `wait_s` the heartbeat retries instead of the TP blocking."""
        end = time.monotonic() + wait_s
        while True:
            self.pub.getsockopt(zmq.EVENTS)  # let the socket process its pipes' termination
            try:
                self.pub.bind(self.pub_endpoint)
                self.pub_bound = True
                return
            except zmq.ZMQError as e:
                if e.errno != errno.EADDRINUSE or time.monotonic() >= end:
                    if self.pub_bound or wait_s:
                        log.error("cannot bind the publish socket %s again (%s); retrying at each "
                                  "heartbeat, subscribers will fill the gap from the log",
                                  self.pub_endpoint, e)
                    self.pub_bound = False
                    return
            time.sleep(0.002)

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        self._publish_pending()
        self.log.close(sync=self.tp.fsync != "never")
        if self.log_server is not None:
            self.log_server.stop()
        for s in (self.ingest, self.pub, self.ctl):
            s.close(0)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.ingest, zmq.POLLIN)
        poller.register(self.ctl, zmq.POLLIN)
        hb_every = self.tp.heartbeat_ms * 1_000_000
        pub_every = self.tp.batch_ms * 1_000_000
        next_hb = next_pub = time.time_ns()
        batched = self.tp.mode == "batched"
        try:
            while not self.stopping:
                now = time.time_ns()
                due = min(next_hb, self.roll_at, next_pub if batched else next_hb)
                events = dict(poller.poll(max(0, (due - now) // 1_000_000))) if due > now else {}
                if self.ingest in events:
                    self.take()
                if self.ctl in events:
                    self.control()
                now = time.time_ns()
                if now >= self.roll_at:
                    self.end_of_day()
                if batched and now >= next_pub:
                    self._publish_pending()
                    next_pub = now + pub_every
                if now >= next_hb:
                    self.heartbeat()
                    next_hb = now + hb_every
        finally:
            self.close()

    def take(self) -> int:
        """Take what the ingest socket holds (up to `loop_msgs` messages), log it in one write,
        publish it (one multipart message per table), ack the feeds. O(1) Python per message
        whatever its row count; see the module docstring for what that O(1) is."""
        tables, sizes, msgs, acks = [], [], [], {}
        recv, reg, limit, fseqs = self.ingest.recv, self.registry, self.tp.max_message_bytes, self.fseq
        received = rows = 0
        for _ in range(self.tp.loop_msgs):
            try:
                ident = recv(NOBLOCK)
                # a ROUTER delivers a whole message at once: the rest is there (NOBLOCK anyway)
                msg = recv(NOBLOCK, copy=False)
            except zmq.Again:
                break
            if msg.more:
                frames = [msg]
                try:
                    while frames[-1].more:
                        frames.append(recv(NOBLOCK, copy=False))
                except zmq.Again:
                    break
                self._other(ident, frames)
                continue
            received += 1
            n = len(msg)
            if n > limit:
                self._reject(ident, msg.buffer, f"message of {n} bytes exceeds max_message_bytes "
                                                f"({limit}); send smaller batches")
                continue
            try:
                table, nrows, feed, fseq = check(msg.buffer, reg)
            except CodecError as e:
                self._reject(ident, msg.buffer, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a message the codec did not foresee
                self._reject(ident, msg.buffer, f"malformed message ({type(e).__name__}: {e})")
                continue
            if feed:
                acks[feed] = ident
                if fseq <= fseqs.get(feed, 0):
                    self.counters["duplicates"] += 1
                    continue
                fseqs[feed] = fseq
            tables.append(table)
            sizes.append(n)
            msgs.append(msg)
            rows += nrows
        if received:
            self.counters["received"] += received
        if msgs:
            self._log_and_publish(tables, sizes, msgs, rows)
        if acks:
            send = self.ingest.send
            for feed, ident in acks.items():
                send(ident, SNDMORE)
                send(p.ACK, SNDMORE)
                send(p.ack(feed, fseqs.get(feed, 0)))
        return len(msgs)

    def _log_and_publish(self, tables: list, sizes: list, msgs: list, rows: int, own: bool = False) -> None:
        """Log the loop's messages in one write, then publish each table's as one message (or
        as few as the class allows), or keep them for the timer in batched mode. The counters
        `rows` and `logged` count what feeds sent: the TP's own heartbeat rows (`own`) are
        counted apart, as `heartbeats`."""
        seq = self.log.append(msgs)
        k = len(msgs)
        if not own:
            c = self.counters
            c["rows"] += rows
            c["logged"] += k
        last = self.last
        if tables.count(tables[0]) == k:  # one table (the usual loop): its seqs are consecutive
            table = tables[0]
            groups = {table: (range(seq, seq + k), chain((last.get(table, 0),), range(seq, seq + k - 1)),
                              msgs, sizes)}
            last[table] = seq + k - 1
        else:
            by: dict[str, tuple[list, list, list, list]] = {}
            for i, table in enumerate(tables):
                g = by.get(table)
                if g is None:
                    g = by[table] = ([], [last.get(table, 0)], [], [])
                g[0].append(seq + i)
                g[1].append(seq + i)
                g[2].append(msgs[i])
                g[3].append(sizes[i])
            for table, g in by.items():
                last[table] = g[0][-1]
            groups = by
        ymd = repeat(self.ymd)
        if self.tp.mode == "immediate":
            for table, (seqs, prevs, frames, fsizes) in groups.items():
                metas = b"".join(map(p.META.pack, ymd, seqs, prevs))
                self._publish(table, metas, frames, fsizes)
        else:
            for table, (seqs, prevs, frames, fsizes) in groups.items():
                self.pending[table].extend(zip(map(p.META.pack, ymd, seqs, prevs), frames, fsizes))

    def _publish(self, table: str, metas: bytes, frames: list, sizes: list) -> None:
        """[topic + metas, payload, ...] of one table's payloads in order, split so that no
        message costs more than the class (payload bytes + META + 128 per frame) or holds more
        than `pub_group` payloads; a payload that alone exceeds the class goes alone, after the
        queue has grown for it."""
        k = len(frames)
        per = FRAME_COST + p.META.size
        limit, group = self._pub_class, self._group
        if k <= group and sum(sizes) + k * per + FRAME_COST <= limit:
            self._send_group(topic(table) + metas, frames)
            return
        start, cost, m = 0, FRAME_COST, p.META.size
        for i, size in enumerate(sizes):
            if i > start and (cost + size + per > limit or i - start == group):
                self._send_group(topic(table) + metas[start * m: i * m], frames[start:i])
                start, cost = i, FRAME_COST
            if size + per + FRAME_COST > limit:
                self._grow_pub(size + per + FRAME_COST)
                limit, group = self._pub_class, self._group
            cost += size + per
        self._send_group(topic(table) + metas[start * m:], frames[start:])

    def _send_group(self, head: bytes, frames: list) -> None:
        """One multipart message: the payload frames go as the received zmq.Frames (no copy).
        By hand, with int flags: pyzmq's send_multipart does enum arithmetic per frame."""
        send = self.pub.send
        send(head, SNDMORE)
        last = len(frames) - 1
        for i, f in enumerate(frames):
            send(f, 0 if i == last else SNDMORE, copy=False)

    def _publish_pending(self) -> None:
        """Batched mode: what the timer collected, one table at a time, in as few messages as
        the class allows."""
        for table, items in self.pending.items():
            metas, frames, sizes = zip(*items)
            self._publish(table, b"".join(metas), list(frames), list(sizes))
        self.pending.clear()

    def _reject(self, ident: bytes, buf, why: str) -> None:
        feed = fseq = 0
        if len(buf) >= HEADER.size and bytes(buf[:4]) == MAGIC:
            feed, fseq = HEADER.unpack_from(buf)[5:7]
        self.counters["rejected"] += 1
        self.last_error = why
        log.warning("rejected a message from feed %d (fseq %d): %s", feed, fseq, why)
        self.ingest.send_multipart([ident, p.ERR, p.ack(feed, fseq), why.encode()])

    def _other(self, ident: bytes, frames) -> None:
        feed = p.parse_feed_id(frames[1].bytes) if len(frames) == 2 and frames[0].bytes == p.HELLO else None
        if feed is not None:
            self.ingest.send_multipart([ident, p.ACK, p.ack(feed, self.fseq.get(feed, 0))])
            return
        self.counters["received"] += 1
        self._reject(ident, b"", f"expected one frame per batch, got {len(frames)} frames")

    def heartbeat(self) -> None:
        if not self.pub_bound:
            self._rebind_pub(wait_s=0)
        rows = self.outbox.take()
        if rows and HEARTBEAT_TABLE in self.registry:
            # the TP's own `heartbeat` rows: logged and published like any feed's message
            self._log_and_publish([HEARTBEAT_TABLE] * len(rows), list(map(len, rows)), rows, len(rows), own=True)
            self.counters["heartbeats"] += len(rows)
        self.pub.send_multipart(p.news(p.HB_TOPIC, self.day, self.log.seq, self.last))

    def post_heartbeat(self, row: bytes) -> bool:
        """From the health thread: the TP's heartbeat row, published by the loop at its next
        heartbeat (within heartbeat_ms). False (dropped) when the loop has not taken the last ones."""
        return self.outbox.put(row)

    def health(self) -> dict:
        """The health hook (tickerplant/health.py), read from another thread: counters only.
        In: messages received on ingest; out: messages logged and published (its own
        heartbeat rows too)."""
        c = self.counters
        return {"msgs_in": c.get("received", 0), "msgs_out": c.get("logged", 0) + c.get("heartbeats", 0), "lag": 0,
                "errors": sum(c.get(k, 0) for k in ("rejected", "bad_control", "dropped_control",
                                                     "unsent_control")),
                "last_error": self.last_error, "extra": {"rows_in": c.get("rows", 0)}}

    # -- control ------------------------------------------------------------------------------
    def control(self) -> None:
        """Serve what the ctl socket holds (up to CTL_PER_LOOP requests): each request with a REQ
        envelope gets exactly one reply; a message without one is dropped and counted."""
        for _ in range(CTL_PER_LOOP):
            try:
                frames = self.ctl.recv_multipart(NOBLOCK)
            except zmq.Again:
                return
            envelope, body = split_envelope(frames)
            if envelope is None:
                self.counters["dropped_control"] += 1
                self.last_error = "dropped a control message without a REQ envelope"
                continue
            reply, hello = self._command(body)
            try:
                self.ctl.send_multipart([*envelope, reply], NOBLOCK)
            except zmq.ZMQError as e:  # the peer's queue is full or it left: nothing to answer
                self.counters["unsent_control"] += 1
                log.warning("control reply not sent: %s", e)
            if hello is not None:
                self.pub.send_multipart([p.HELLO_TOPIC, hello, p.META.pack(self.ymd, self.log.seq, 0)])

    def _command(self, body: list[bytes]) -> tuple[bytes, bytes | None]:
        """(the JSON reply, the !hello token to publish after it or None). A malformed request
        (anything `_parse` raises, RecursionError and MemoryError included) costs only itself."""
        try:
            cmd, tables, token = _parse(body, self.registry)
        except Exception as e:  # noqa: BLE001 - whatever the bytes did to the parser
            self.counters["bad_control"] += 1
            try:
                why = f"{type(e).__name__}: {str(e)[:300]}"
            except Exception:  # noqa: BLE001 - even the error's text failed
                why = type(e).__name__
            self.last_error = f"bad control request ({why})"
            return json.dumps({"error": f"bad control request ({why}); send one frame of JSON "
                                        "like {\"cmd\": \"status\"}"}).encode(), None
        hello = None
        if cmd == "sub":
            self._publish_pending()
            st = os.stat(self.log.path)
            # (device, inode): a subscriber tells the TP's file from a namesake on its own host
            reply = {"date": self.day.isoformat(), "log": str(self.log.path), "seq": self.log.seq,
                     "log_id": [st.st_dev, st.st_ino], "schemas": self.registry.spec(tables)}
            hello = token.encode()
        elif cmd == "status":
            reply = self.status()
        elif cmd == "eod":
            ended = self.end_of_day()
            reply = {"ended": ended.isoformat(), "date": self.day.isoformat()}
        else:  # stop
            self.stopping = True
            reply = {"stopping": True}
        return json.dumps(reply).encode(), hello

    def status(self) -> dict:
        out = {"pid": os.getpid(), "date": self.day.isoformat(), "log": str(self.log.path),
               "seq": self.log.seq, "mode": self.tp.mode, "tables": self.last,
               "feeds": {str(k): v for k, v in self.fseq.items()},
               # refused CURVE handshakes (auth_denied...) count with the TP's own refusals
               "counters": {**self.counters, **refused(self.ctx)}, "last_error": self.last_error,
                "pub": {"queue_bytes": self.tp.pub_queue_bytes, "message_bytes": self.pub_class,
                        "hwm": self.pub_hwm(), "bound": self.pub_bound}}
        if self.log_server is not None:
            out["log_serve"] = self.log_server.status()
        return out


def _parse(body: list[bytes], registry: Registry) -> tuple[str, list[str] | None, str]:
    """(cmd, tables, token) of a control request, or an exception saying what is wrong."""
    if len(body) != 1:
        raise ValueError(f"the request has {len(body)} frames, expected one")
    req = json.loads(body[0])
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise ValueError("the request is not a JSON object with a \"cmd\" string")
    if req["cmd"] not in ("sub", "status", "eod", "stop"):
        raise ValueError(f"unknown command {_brief.repr(req['cmd'])}; use sub, status, eod or stop")
    tables = req.get("tables") or None
    if tables is not None and not (isinstance(tables, list) and all(isinstance(t, str) for t in tables)):
        raise ValueError(f"\"tables\" must be a list of table names, not {_brief.repr(tables)}")
    unknown = [t for t in tables or () if t not in registry]
    if unknown:
        raise ValueError(f"unknown tables {_brief.repr(unknown)}; known tables: {registry.tables}")
    token = req.get("token", "")
    if not isinstance(token, str):
        raise ValueError("\"token\" must be a string")
    return req["cmd"], tables, token
