"""The tickerplant: validate, log, publish (kdb-tick's tick.q as one class). The wire protocol
(sockets, frames, topics, control commands) is tickerplant/protocol.py; this is the server.

Sockets, endpoints from `TickerplantSettings` (loopback by default): `ingest` ROUTER (feeds),
`pub` PUB (subscribers), `ctl` ROUTER speaking the REQ/REP envelope (sub handshake, status, eod,
stop). The TP never waits for anyone: PUB drops for a subscriber whose queue is full, and every
payload carries its seq and its table's previous seq, so the subscriber sees the gap and fills
it from the log.

No message on any socket can block or end the TP. Every socket is read with NOBLOCK after a poll
(a REP socket can poll readable and then block in recv on a message without an envelope, and
fails with EFSM on a multipart request). A control request with a REQ envelope (routing ids, an
empty delimiter, a body) gets exactly one JSON reply, an error one for anything malformed
(counted as `bad_control`); a message without an envelope cannot be answered and is dropped
(counted as `dropped_control`). ZeroMQ itself disconnects a peer sending a frame over
`ctl_max_bytes` (control) or 2 x `max_message_bytes` (ingest).

Memory per subscriber is bounded in bytes. ZeroMQ's high-water mark counts messages, and a
changed SNDHWM only applies to connections made afterwards (libzmq 4.3.5, checked), so the TP
sizes it from the largest message it has published, rounded up to a power of two ("class"):
hwm = clamp(pub_queue_bytes // class, 1, pub_hwm). When a message larger than the class is about
to go out, the class grows and the PUB endpoint is unbound and bound again with the new hwm:
every subscriber reconnects by itself and fills what it missed from the log. So each connection's
queue holds at most hwm messages of at most `class` bytes each.

State, all of it:
  day, log        the trading day and its LogWriter (log.seq = last seq written today)
  last[table]     seq of the table's last message today (the `prev` of its next one)
  fseq[feed]      last fseq logged per feed id
  pending[table]  batched mode: [(meta, frame)] waiting for the publish timer
  counters        what came in, what went out, what was refused
  pub_class       the publish queue's message size class (bytes; see above)
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
from pathlib import Path

import zmq

from schemas.codec import HEADER, MAGIC, CodecError, peek, validate
from schemas.registry import Registry
from tickerplant import protocol as p
from tickerplant.clock import Clock
from tickerplant.config import EodSettings, TickerplantConfig, TickerplantSettings
from tickerplant.log import LogWriter, is_control
from tickerplant.protocol import NOBLOCK, SNDMORE, split_envelope, topic

log = logging.getLogger("tickerplant")

# What one queued message costs beyond its bytes, per frame: libzmq's 64-byte msg_t in the pipe
# plus the allocation header of its content. Part of the publish queue's byte accounting.
FRAME_COST = 128
BATCH_GROUP_BYTES = 1 << 20  # batched mode: one published multipart message holds at most this
CTL_PER_LOOP = 64            # control requests served per loop, so a flood cannot starve ingest
_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = 60


class Tickerplant:
    def __init__(self, settings: TickerplantSettings, eod: EodSettings, log_dir: Path,
                 registry: Registry, ctx: zmq.Context | None = None):
        self.tp = settings
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
        # below this class every subscriber gets the full pub_hwm (single-row flows)
        self.pub_class = max(1, settings.pub_queue_bytes // settings.pub_hwm)
        self._open_day()
        self._bind()

    @classmethod
    def from_config(cls, cfg: TickerplantConfig) -> "Tickerplant":
        return cls(cfg.tickerplant, cfg.eod, cfg.tplog_dir, cfg.registry())

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
        cost = len(rec.payload) + 2 * FRAME_COST
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
        self.ingest.bind(self.tp.ingest)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, self.pub_hwm())
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.tp.pub)
        self.pub_endpoint = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)  # a wildcard port resolved
        self.pub_bound = True
        self.ctl = self.ctx.socket(zmq.ROUTER)
        self.ctl.setsockopt(zmq.MAXMSGSIZE, self.tp.ctl_max_bytes)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(self.tp.ctl)

    def pub_hwm(self) -> int:
        """Messages each subscriber's queue may hold: pub_queue_bytes of the current class."""
        return max(1, min(self.tp.pub_hwm, self.tp.pub_queue_bytes // self.pub_class))

    def _grow_pub(self, cost: int) -> None:
        """A message of `cost` bytes is about to be published and exceeds the class: grow the
        class and rebind, so that no existing queue (sized for smaller messages) takes it.
        Known libzmq 4.3.5 race (zeromq/libzmq#3442): a subscriber connection that breaks in the
        few ms while the unbind tears it down, in the middle of a multipart message, can trip an
        assertion; rebinds are rare (once per size class) to keep that window negligible."""
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
        publish it, ack the feeds. O(1) Python per message whatever its row count."""
        accepted, acks = [], {}
        recv, reg, limit = self.ingest.recv, self.registry, self.tp.max_message_bytes
        c = self.counters
        biggest = 0
        for _ in range(self.tp.loop_msgs):
            try:
                ident = recv(NOBLOCK)
                # a ROUTER delivers a whole message at once: the rest is there (NOBLOCK anyway)
                msg = recv(NOBLOCK, copy=False)
                if msg.more:
                    frames = [msg]
                    while frames[-1].more:
                        frames.append(recv(NOBLOCK, copy=False))
                    self._other(ident, frames)
                    continue
            except zmq.Again:
                break
            buf = msg.buffer
            c["received"] += 1
            n = len(buf)
            if n > limit:
                self._reject(ident, buf, f"message of {n} bytes exceeds max_message_bytes "
                                         f"({limit}); send smaller batches")
                continue
            try:
                head = validate(buf, reg)
            except CodecError as e:
                self._reject(ident, buf, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a message the codec did not foresee
                self._reject(ident, buf, f"malformed message ({type(e).__name__}: {e})")
                continue
            if n > biggest:
                biggest = n
            if head.feed:
                acks[head.feed] = ident
                if head.fseq <= self.fseq.get(head.feed, 0):
                    c["duplicates"] += 1
                    continue
                self.fseq[head.feed] = head.fseq
            accepted.append((head.table, head.nrows, msg))
        if accepted:
            if self.tp.mode == "immediate" and biggest + 2 * FRAME_COST > self.pub_class:
                self._grow_pub(biggest + 2 * FRAME_COST)
            self._log_and_publish(accepted)
        for feed, ident in acks.items():
            self.ingest.send_multipart([ident, p.ACK, p.ack(feed, self.fseq.get(feed, 0))])
        return len(accepted)

    def _log_and_publish(self, accepted: list) -> None:
        seq = self.log.append([m.buffer for _, _, m in accepted])
        last, c = self.last, self.counters
        immediate = self.tp.mode == "immediate"
        send = self.pub.send
        rows = 0
        for table, nrows, msg in accepted:
            meta = p.META.pack(self.ymd, seq, last.get(table, 0))
            last[table] = seq
            seq += 1
            rows += nrows
            if immediate:
                send(topic(table) + meta, SNDMORE)
                send(msg, 0, copy=False)
            else:
                self.pending[table].append((meta, msg))
        c["rows"] += rows
        c["logged"] += len(accepted)

    def _publish_pending(self) -> None:
        """One multipart message per table and up to BATCH_GROUP_BYTES (a bigger payload goes
        alone), so the publish queue's class stays near that size."""
        for table, items in self.pending.items():
            start, cost = 0, FRAME_COST
            for i, (_, f) in enumerate(items):
                size = len(f.buffer) + FRAME_COST + p.META.size
                if i > start and cost + size > BATCH_GROUP_BYTES:
                    self._publish_group(table, items[start:i], cost)
                    start, cost = i, FRAME_COST
                cost += size
            if start < len(items):
                self._publish_group(table, items[start:], cost)
        self.pending.clear()

    def _publish_group(self, table: str, items: list, cost: int) -> None:
        if cost > self.pub_class:
            self._grow_pub(cost)
        self.pub.send_multipart([topic(table) + b"".join(m for m, _ in items),
                                 *(f for _, f in items)], copy=False)

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
        self.pub.send_multipart(p.news(p.HB_TOPIC, self.day, self.log.seq, self.last))

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
            reply = {"date": self.day.isoformat(), "log": str(self.log.path), "seq": self.log.seq,
                     "schemas": self.registry.spec(tables)}
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
        return {"pid": os.getpid(), "date": self.day.isoformat(), "log": str(self.log.path),
                "seq": self.log.seq, "mode": self.tp.mode, "tables": self.last,
                "feeds": {str(k): v for k, v in self.fseq.items()},
                "counters": dict(self.counters), "last_error": self.last_error,
                "pub": {"queue_bytes": self.tp.pub_queue_bytes, "message_bytes": self.pub_class,
                        "hwm": self.pub_hwm(), "bound": self.pub_bound}}


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
