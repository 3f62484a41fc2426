"""The tickerplant: validate, log, publish (kdb-tick's tick.q as one class).

Sockets, endpoints from config (loopback by default):
  ingest ROUTER  feeds' DEALERs send one batch (schemas/codec.py) per frame. The TP answers the
                 sender: [b"ack", <IQ feed, last fseq logged>] once per loop per feed, or
                 [b"err", <IQ feed, fseq>, text] for a rejected message, which is never logged or
                 published. [b"hello", <I feed>] asks for the feed's last logged fseq (a resent
                 message at or below it is dropped: resending after a reconnect is safe).
  pub    PUB     [table + b"\\0" + meta, payload, ...], meta = one <IQQ (date yyyymmdd, seq,
                 prev seq of the same table) per payload; the topic prefix is what SUB filters on. Control topics start with "!":
                 !hello (sub handshake), !hb (heartbeat with each table's last seq), !eod.
                 PUB silently drops for a subscriber whose queue (pub_hwm) is full, and a new
                 SUB's subscription reaches the PUB some time after it connects (the slow
                 joiner). Both are handled by the subscriber, not hoped away: every payload
                 carries its seq and its table's previous seq, so a gap is always visible and is
                 filled from the log. The TP never waits for anyone.
  ctl    REP     JSON requests: sub, status, eod, stop.

State, all of it:
  day, log        the trading day and its LogWriter (log.seq = last seq written today)
  last[table]     seq of the table's last message today (the `prev` of its next one)
  fseq[feed]      last fseq logged per feed id
  pending[table]  batched mode: [(meta, frame)] waiting for the publish timer
  counters        what came in, what went out, what was refused
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import struct
import time
from collections import Counter, defaultdict

import zmq

from schemas.codec import HEADER, MAGIC, CodecError, peek, validate
from tickerplant.clock import Clock
from tickerplant.log import LogWriter, day_of, is_control, log_path

log = logging.getLogger("tickerplant")
META = struct.Struct("<IQQ")
NOBLOCK, SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)  # plain ints: pyzmq's enum flags cost per call
ACK = struct.Struct("<IQ")
FEED = struct.Struct("<I")


_TOPICS: dict[str, bytes] = {}


def topic(table: str) -> bytes:
    t = _TOPICS.get(table)
    if t is None:
        t = _TOPICS[table] = table.encode() + b"\0"
    return t


def ymd(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


class Tickerplant:
    def __init__(self, cfg, registry=None, ctx: zmq.Context | None = None):
        self.cfg = cfg
        self.tp = cfg.tickerplant
        self.registry = registry or cfg.registry()
        self.clock = Clock(cfg.eod.time, cfg.eod.tz)
        self.dir = cfg.tplog_dir
        self.ctx = ctx or zmq.Context.instance()
        self.counters: Counter = Counter()
        self.last: dict[str, int] = {}
        self.fseq: dict[int, int] = {}
        self.pending: dict[str, list] = defaultdict(list)
        self.stopping = False
        self.last_error = ""
        self._open_day()
        self._bind()

    # -- day and log --------------------------------------------------------------------------
    def _open_day(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        today = self.clock.day()
        logs = sorted(self.dir.glob("tp_????????.log"))
        day = today
        if logs:
            latest = day_of(logs[-1])
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
        self._start(LogWriter(log_path(self.dir, day), day), day)

    def _recover(self, rec) -> None:
        """Rebuild last[table] and fseq[feed] from a log being continued, record by record."""
        if is_control(rec.payload):
            return
        head = peek(rec.payload)
        self.last[head.table] = rec.seq
        if head.feed:
            self.fseq[head.feed] = max(self.fseq.get(head.feed, 0), head.fseq)

    def _start(self, w: LogWriter, day: dt.date) -> None:
        w.fsync = self.tp.fsync == "always"
        self.log, self.day = w, day
        self.ymd = ymd(day)
        self.roll_at = self.clock.end(day)

    def end_of_day(self) -> dt.date:
        """Close the day: publish what is pending, mark and close its log, tell subscribers,
        open the next day. Every message before this call is in the old day, every one after in
        the new: the TP is single-threaded."""
        self._publish_pending()
        ended, seq, last = self.day, self.log.seq, dict(self.last)
        self.log.end()
        self.pub.send_multipart([b"!eod", json.dumps(
            {"date": ended.isoformat(), "seq": seq, "last": last}).encode()])
        day = max(ended + dt.timedelta(days=1), self.clock.day())
        self.last = {}
        self._start(LogWriter(log_path(self.dir, day), day), day)
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
        self.pub.setsockopt(zmq.SNDHWM, self.tp.pub_hwm)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.tp.pub)
        self.ctl = self.ctx.socket(zmq.REP)
        self.ctl.setsockopt(zmq.LINGER, 0)
        self.ctl.bind(self.tp.ctl)

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
                    self.drain()
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

    def drain(self) -> int:
        """Take what the ingest socket holds (up to `drain` messages), log it in one write,
        publish it, ack the feeds. O(1) Python per message whatever its row count."""
        accepted, acks = [], {}
        recv, reg, limit = self.ingest.recv, self.registry, self.tp.max_message_bytes
        c = self.counters
        for _ in range(self.tp.drain):
            try:
                ident = recv(NOBLOCK)
            except zmq.Again:
                break
            msg = recv(0, copy=False)  # a ROUTER delivers the whole message at once
            if msg.more:
                frames = [msg]
                while frames[-1].more:
                    frames.append(recv(0, copy=False))
                self._other(ident, frames)
                continue
            buf = msg.buffer
            c["received"] += 1
            if len(buf) > limit:
                self._reject(ident, buf, f"message of {len(buf)} bytes exceeds max_message_bytes "
                                         f"({limit}); send smaller batches")
                continue
            try:
                head = validate(buf, reg)
            except CodecError as e:
                self._reject(ident, buf, str(e))
                continue
            if head.feed:
                acks[head.feed] = ident
                if head.fseq <= self.fseq.get(head.feed, 0):
                    c["duplicates"] += 1
                    continue
                self.fseq[head.feed] = head.fseq
            accepted.append((head.table, head.nrows, msg))
        if accepted:
            self._log_and_publish(accepted)
        for feed, ident in acks.items():
            self.ingest.send_multipart([ident, b"ack", ACK.pack(feed, self.fseq.get(feed, 0))])
        return len(accepted)

    def _log_and_publish(self, accepted: list) -> None:
        seq = self.log.append([m.buffer for _, _, m in accepted])
        last, c = self.last, self.counters
        immediate = self.tp.mode == "immediate"
        send = self.pub.send
        rows = 0
        for table, nrows, msg in accepted:
            meta = META.pack(self.ymd, seq, last.get(table, 0))
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
        for table, items in self.pending.items():
            if items:
                self.pub.send_multipart([topic(table) + b"".join(m for m, _ in items),
                                         *(f for _, f in items)], copy=False)
        self.pending.clear()

    def _reject(self, ident: bytes, buf, why: str) -> None:
        feed = fseq = 0
        if len(buf) >= HEADER.size and bytes(buf[:4]) == MAGIC:
            feed, fseq = HEADER.unpack_from(buf)[5:7]
        self.counters["rejected"] += 1
        self.last_error = why
        log.warning("rejected a message from feed %d (fseq %d): %s", feed, fseq, why)
        self.ingest.send_multipart([ident, b"err", ACK.pack(feed, fseq), why.encode()])

    def _other(self, ident: bytes, frames) -> None:
        if len(frames) == 2 and frames[0].bytes == b"hello" and len(frames[1].bytes) == FEED.size:
            feed = FEED.unpack(frames[1].bytes)[0]
            self.ingest.send_multipart([ident, b"ack", ACK.pack(feed, self.fseq.get(feed, 0))])
            return
        self.counters["received"] += 1
        self._reject(ident, b"", f"expected one frame per batch, got {len(frames)} frames")

    def heartbeat(self) -> None:
        self.pub.send_multipart([b"!hb", json.dumps(
            {"date": self.day.isoformat(), "seq": self.log.seq, "last": self.last}).encode()])

    # -- control ------------------------------------------------------------------------------
    def control(self) -> None:
        raw = self.ctl.recv()
        hello = None
        try:
            req = json.loads(raw)
            cmd = req["cmd"]
            if cmd == "sub":
                self._publish_pending()
                reply = {"date": self.day.isoformat(), "log": str(self.log.path), "seq": self.log.seq}
                hello = str(req.get("token", "")).encode()
            elif cmd == "status":
                reply = self.status()
            elif cmd == "eod":
                ended = self.end_of_day()
                reply = {"ended": ended.isoformat(), "date": self.day.isoformat()}
            elif cmd == "stop":
                self.stopping = True
                reply = {"stopping": True}
            else:
                reply = {"error": f"unknown command {cmd!r}; use sub, status, eod or stop"}
        except (ValueError, KeyError, TypeError) as e:
            self.counters["bad_control"] += 1
            reply = {"error": f"bad control request ({e}); send JSON like {{\"cmd\": \"status\"}}"}
        self.ctl.send(json.dumps(reply).encode())
        if hello is not None:
            self.pub.send_multipart([b"!hello", hello, META.pack(self.ymd, self.log.seq, 0)])

    def status(self) -> dict:
        return {"pid": os.getpid(), "date": self.day.isoformat(), "log": str(self.log.path),
                "seq": self.log.seq, "mode": self.tp.mode, "tables": self.last,
                "feeds": {str(k): v for k, v in self.fseq.items()},
                "counters": dict(self.counters), "last_error": self.last_error}
