"""The tickerplant: validate, log, publish (kdb-tick's tick.q as one class). The wire protocol
(sockets, frames, topics, control commands) is tickerplant/protocol.py; this is the server.

Sockets, endpoints from `TickerplantSettings` (loopback by default): `ingest` ROUTER (feeds),
`pub` PUB (subscribers), `ctl` REP (sub handshake, status, eod, stop). The TP never waits for
anyone: PUB drops for a subscriber whose queue is full, and every payload carries its seq and
its table's previous seq, so the subscriber sees the gap and fills it from the log.

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
from tickerplant.protocol import NOBLOCK, SNDMORE, topic

log = logging.getLogger("tickerplant")


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
        for _ in range(self.tp.loop_msgs):
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
        self.ingest.send_multipart([ident, p.ERR, p.ack(feed, fseq), why.encode()])

    def _other(self, ident: bytes, frames) -> None:
        feed = p.parse_feed_id(frames[1].bytes) if len(frames) == 2 and frames[0].bytes == p.HELLO else None
        if feed is not None:
            self.ingest.send_multipart([ident, p.ACK, p.ack(feed, self.fseq.get(feed, 0))])
            return
        self.counters["received"] += 1
        self._reject(ident, b"", f"expected one frame per batch, got {len(frames)} frames")

    def heartbeat(self) -> None:
        self.pub.send_multipart(p.news(p.HB_TOPIC, self.day, self.log.seq, self.last))

    # -- control ------------------------------------------------------------------------------
    def control(self) -> None:
        raw = self.ctl.recv()
        hello = None
        try:
            req = json.loads(raw)
            cmd = req["cmd"]
            if cmd == "sub":
                tables = req.get("tables") or None
                unknown = [t for t in tables or () if t not in self.registry]
                if unknown:
                    raise ValueError(f"unknown tables {unknown}; known tables: {self.registry.tables}")
                self._publish_pending()
                reply = {"date": self.day.isoformat(), "log": str(self.log.path), "seq": self.log.seq,
                         "schemas": self.registry.spec(tables)}
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
            self.pub.send_multipart([p.HELLO_TOPIC, hello, p.META.pack(self.ymd, self.log.seq, 0)])

    def status(self) -> dict:
        return {"pid": os.getpid(), "date": self.day.isoformat(), "log": str(self.log.path),
                "seq": self.log.seq, "mode": self.tp.mode, "tables": self.last,
                "feeds": {str(k): v for k, v in self.fseq.items()},
                "counters": dict(self.counters), "last_error": self.last_error}
