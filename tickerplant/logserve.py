"""The TP's log over the network, for subscribers that cannot read its file (another host).

    server  LogServer(endpoint, log_dir, registry, ...).start()   a thread beside the TP's loop
    client  LogClient(endpoint, curve).fetch(day, from_seq, to_seq, tables) -> Chunk

Socket: a ROUTER at `[tickerplant] log_serve` (loopback unless configured otherwise, a CURVE
server when [curve] is on), speaking the REQ/REP envelope like the TP's ctl socket, so a REQ or a
DEALER sending [b"", request] is a client. One request, one reply:

    request  one JSON frame {"date": "YYYY-MM-DD", "from_seq": n >= 1, "to_seq": m | null,
             "tables": [names] | null, "after": {table: seq}?, "id": k?}: the records of that
             day's log with from_seq <= seq <= to_seq (null: to the end of what is written),
             batch records of `tables` only (null: all) and, of a table in `after`, only those
             with a later seq (what the client already has is not sent again), control
             records (end of day) always.
    reply    [header JSON, seqs, starts, ends (u64 little-endian each), payloads]: the payloads
             in one frame, record i's at [starts[i], ends[i]) (one frame, not one per record:
             ZeroMQ's cost per frame is what a chunk would otherwise spend most on; without a
             table filter it is a slice of the file, sent without a copy)
             header {"date", "id" (echoed), "count", "next": the seq to ask from next, "done":
             true when to_seq or the end of the file was reached, "missing": true when there is
             no log for that day, "error": text when the log is damaged before to_seq}.
             Each reply holds at most `chunk_bytes` of payload (at least one record): a client
             streams a range by asking again from `next`, so both sides hold one chunk at most.
             Every record carries its seq: the subscriber deduplicates exactly as from the file.
    junk     anything else gets [{"error": "..."}] and is counted (`bad_requests`); a message
             without an envelope is dropped and counted (`dropped`); ZeroMQ disconnects a peer
             sending a frame over `max_request_bytes`.

The server never touches the TP's state: it reads the log file with tickerplant/log.py's reader
(read in chunks, not mapped: the TP may cut a torn tail off a file it continues) in its own
thread with its own socket, receives with NOBLOCK after a poll and sends with NOBLOCK. Memory
is bounded: one chunk being built, and 16 replies queued per peer (ROUTER drops a reply beyond
that; the client times out and asks again). Where
the last reply of each range ended is remembered (a few thousand positions), so streaming a
range costs one pass over the file, not one per chunk.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zmq

from schemas.codec import peek
from tickerplant import protocol as p
from tickerplant.config import CurveSettings
from tickerplant.curve import secure_client, secure_server
from tickerplant.log import FILE_HEADER, FRAME, LogError, LogReader, is_control

log = logging.getLogger("logserve")

MAX_RECORDS = 1 << 16       # records per reply, at most, whatever their size
_POSITIONS = 4096           # remembered (file, seq) -> offset positions


class LogRequestError(ValueError):
    """A request the log server cannot serve; the text says what a good one looks like."""


@dataclass(frozen=True, slots=True)
class LogRequest:
    date: dt.date
    from_seq: int
    to_seq: int | None
    tables: tuple[str, ...] | None
    id: int = 0
    after: tuple[tuple[str, int], ...] = ()    # (table, seq): that table's records up to seq are not wanted

    def encode(self) -> bytes:
        return json.dumps({"date": self.date.isoformat(), "from_seq": self.from_seq,
                           "to_seq": self.to_seq, "tables": list(self.tables) if self.tables is not None else None,
                           "after": dict(self.after), "id": self.id}).encode()


_USAGE = ('send one JSON frame like {"date": "2024-01-02", "from_seq": 1, "to_seq": null, '
          '"tables": ["trade"]}')
_KEYS = {"date", "from_seq", "to_seq", "tables", "after", "id"}
_SEQ_MAX = (1 << 63) - 1


def _seq(v, what: str) -> int:
    if type(v) is not int or not 0 < v <= _SEQ_MAX:
        raise LogRequestError(f"\"{what}\" must be an integer from 1 to 2**63-1, not {str(v)[:40]}; {_USAGE}")
    return v


def parse_request(body: list, known_tables=None) -> LogRequest:
    """The request in `body` (the frames after the envelope), or LogRequestError saying what
    is wrong. `known_tables`: if given, names outside it are refused."""
    if len(body) != 1:
        raise LogRequestError(f"the request has {len(body)} frames, expected one; {_USAGE}")
    try:
        req = json.loads(bytes(body[0]))
    except (ValueError, RecursionError) as e:
        raise LogRequestError(f"not JSON ({type(e).__name__}); {_USAGE}") from None
    if not isinstance(req, dict):
        raise LogRequestError(f"the request is not a JSON object; {_USAGE}")
    extra = set(req) - _KEYS
    if extra:
        raise LogRequestError(f"unknown keys {sorted(extra)[:5]}; {_USAGE}")
    if not isinstance(req.get("date"), str):
        raise LogRequestError(f"\"date\" must be a string YYYY-MM-DD; {_USAGE}")
    try:
        day = dt.date.fromisoformat(req["date"])
    except ValueError:
        raise LogRequestError(f"\"date\" {req['date'][:40]!r} is not a date YYYY-MM-DD") from None
    first = _seq(req.get("from_seq"), "from_seq")
    last = req.get("to_seq")
    if last is not None:
        last = _seq(last, "to_seq")
    tables = req.get("tables")
    if tables is not None:
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise LogRequestError(f"\"tables\" must be a list of table names or null; {_USAGE}")
        if known_tables is not None:
            unknown = [t for t in tables if t not in known_tables]
            if unknown:
                raise LogRequestError(f"unknown tables {unknown[:5]}; known: {sorted(known_tables)}")
        tables = tuple(tables)
    after = req.get("after") or {}
    if not isinstance(after, dict) or not all(type(v) is int and 0 <= v <= _SEQ_MAX for v in after.values()):
        raise LogRequestError(f"\"after\" must map table names to seqs (integers >= 0); {_USAGE}")
    if known_tables is not None and not set(after) <= set(known_tables):
        raise LogRequestError(f"unknown tables in \"after\": {sorted(set(after) - set(known_tables))[:5]}")
    rid = req.get("id", 0)
    if type(rid) is not int or not 0 <= rid <= _SEQ_MAX:
        raise LogRequestError("\"id\" must be a non-negative integer")
    return LogRequest(day, first, last, tables, rid, tuple(sorted(after.items())))


class LogServer:
    """Serves `log_dir`'s day logs at `endpoint` from its own thread (see the module docstring)."""

    def __init__(self, endpoint: str, log_dir: Path, known_tables=None, *, chunk_bytes: int = 4 << 20,
                 max_request_bytes: int = 4096, curve: CurveSettings | None = None,
                 ctx: zmq.Context | None = None):
        self.endpoint, self.dir = endpoint, Path(log_dir)
        self.known_tables = set(known_tables) if known_tables is not None else None
        self.chunk_bytes, self.max_request_bytes = chunk_bytes, max_request_bytes
        self.curve = curve
        self.ctx = ctx or zmq.Context.instance()
        self.counters: Counter = Counter()
        self.last_error = ""
        self._positions: OrderedDict = OrderedDict()   # (path, seq) -> offset after that record
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="log-serve", daemon=True)

    def start(self) -> "LogServer":
        """Bind (in the server's thread) and serve; raises what binding raised."""
        self._thread.start()
        self._bound.wait(10)
        if self._failed is not None:
            raise self._failed
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def status(self) -> dict:
        return {"endpoint": self.endpoint, "counters": dict(self.counters), "last_error": self.last_error}

    def _run(self) -> None:
        sock = self.ctx.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
            sock.setsockopt(zmq.LINGER, 0)
            # replies queued per client: a client asks for one chunk at a time, so only a peer
            # sending requests without reading fills this; it holds 16 chunks at most (ROUTER
            # drops the rest). Not less: libzmq acknowledges reads lazily, and at 4 a client
            # reading every reply still saw one dropped now and then (then it waits out its
            # timeout and asks again)
            sock.setsockopt(zmq.SNDHWM, 16)
            secure_server(sock, self.curve)
            sock.bind(self.endpoint)
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._failed = e
            sock.close(0)
            self._bound.set()
            return
        self._bound.set()
        try:
            while not self._stop.is_set():
                if not sock.poll(100):
                    continue
                for _ in range(64):
                    try:
                        frames = sock.recv_multipart(p.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    self._serve(sock, frames)
        finally:
            sock.close(0)

    def _serve(self, sock: zmq.Socket, frames: list) -> None:
        envelope, body = p.split_envelope(frames)
        if envelope is None:
            self.counters["dropped"] += 1
            self.last_error = "dropped a message without a REQ envelope"
            return
        try:
            req = parse_request(body, self.known_tables)
            reply = self.read(req)
            self.counters["served"] += 1
            self.counters["records"] += reply[0]["count"]
        except LogRequestError as e:
            self.counters["bad_requests"] += 1
            self.last_error = f"bad request: {e}"
            reply = [{"error": str(e)}]
        except Exception as e:  # noqa: BLE001 - a request must never end the server
            self.counters["failed"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            log.exception("log request failed")
            reply = [{"error": f"the log server failed on this request ({type(e).__name__}: {e}); "
                               "see the tickerplant's log"}]
        head = json.dumps(reply[0]).encode()
        try:
            sock.send_multipart([*envelope, head, *reply[1:]], p.NOBLOCK, copy=False)
        except zmq.ZMQError:  # the peer's queue is full or it left: it asks again
            self.counters["unsent"] += 1

    def read(self, req: LogRequest) -> list:
        """[header, seqs, starts, ends, payloads] of one chunk of `req`'s range: record i's
        payload is payloads[starts[i]:ends[i]]. Work per block of records (numpy), except the
        table test of each record when the request filters by table."""
        path = p.log_path(self.dir, req.date)
        head = {"date": req.date.isoformat(), "id": req.id, "count": 0, "next": req.from_seq,
                "done": True}
        empty = [head, b"", b"", b"", b""]
        if not path.exists():
            head["missing"] = True
            return empty
        try:
            reader = LogReader(path)
        except LogError as e:
            head["error"] = str(e)
            return empty
        offset, after = self._position(path, req.from_seq)
        wanted = set(req.tables) if req.tables is not None else None
        known = dict(req.after)
        filtering = wanted is not None or bool(known)
        seqs, starts, ends, blobs = [], [], [], []
        size = count = at = 0          # payload bytes and records taken; bytes in blobs
        last, end_offset, full = after, offset, False
        for b in reader.blocks(offset, after, verify=True, mapped=False, last_seq=req.to_seq):
            lo = max(0, req.from_seq - b.first_seq)   # records before from_seq: skipped
            last, end_offset = b.first_seq + len(b) - 1, b.base + int(b.ends[-1])
            if lo >= len(b):
                continue
            st, en = b.starts[lo:] + FRAME.size, b.ends[lo:]
            sq = np.arange(b.first_seq + lo, b.first_seq + len(b), dtype=np.int64)
            mv = memoryview(b.buf)
            keep = None
            if filtering:
                keep = np.fromiter((_wanted(mv[x:y], q, wanted, known) for x, y, q in
                                    zip(st.tolist(), en.tolist(), sq.tolist())), bool, len(sq))
            sizes = en - st if keep is None else np.where(keep, en - st, 0)
            cum = size + np.cumsum(sizes)
            cnt = count + (np.arange(1, len(sq) + 1) if keep is None else np.cumsum(keep))
            over = np.flatnonzero((cum >= self.chunk_bytes) | (cnt >= MAX_RECORDS))
            stop = len(sq) if not len(over) else int(over[0]) + 1
            full = bool(len(over))
            size, count = int(cum[stop - 1]), int(cnt[stop - 1])
            last, end_offset = int(sq[stop - 1]), b.base + int(en[stop - 1])
            st, en, sq = st[:stop], en[:stop], sq[:stop]
            if keep is None:  # every record: one slice of the block, frame headers and all
                a0, a1 = int(st[0]), int(en[-1])
                blobs.append(mv[a0:a1])
                starts.append(st - a0 + at)
                ends.append(en - a0 + at)
                at += a1 - a0
            else:             # only the wanted ones, back to back
                keep = keep[:stop]
                st, en, sq = st[keep], en[keep], sq[keep]
                blobs += [mv[x:y] for x, y in zip(st.tolist(), en.tolist())]
                e = at + np.cumsum(en - st)
                starts.append(e - (en - st))
                ends.append(e)
                at = int(e[-1]) if len(e) else at
            seqs.append(sq)
            if full:
                break
        head["next"] = max(req.from_seq, last + 1)
        head["count"] = count
        if last >= req.from_seq - 1:
            self._remember(path, last, end_offset)
        reached = req.to_seq is not None and last >= req.to_seq
        head["done"] = reached or not full
        if not full and not reached and reader.error:
            head["error"] = f"{path.name}: {reader.error}"
        if not seqs:
            return empty
        return [head, *(np.concatenate(x).astype("<u8").tobytes() for x in (seqs, starts, ends)),
                blobs[0] if len(blobs) == 1 else b"".join(blobs)]

    def _position(self, path: Path, from_seq: int) -> tuple[int, int]:
        """(offset, seq before it) to start reading at for `from_seq`: a remembered position
        at or before it, else the file's start."""
        key = (str(path), from_seq - 1)
        at = self._positions.get(key)
        if at is not None:
            self._positions.move_to_end(key)
            return at, from_seq - 1
        return FILE_HEADER.size, 0

    def _remember(self, path: Path, seq: int, offset: int) -> None:
        self._positions[(str(path), seq)] = offset
        while len(self._positions) > _POSITIONS:
            self._positions.popitem(last=False)


def _wanted(payload, seq: int, tables: set | None, known: dict) -> bool:
    """Is this record part of the reply: a control record, or a batch of a wanted table that
    is later than what the client has of it."""
    if is_control(payload):
        return True
    table = peek(payload).table
    return (tables is None or table in tables) and seq > known.get(table, 0)


@dataclass(slots=True)
class Chunk:
    head: dict
    seqs: list[int]
    payloads: list


class LogClient:
    """Asks a LogServer for a day's records, one chunk per request, over one DEALER socket
    (replies to an earlier request that timed out are recognised by their id and dropped)."""

    def __init__(self, endpoint: str, curve: CurveSettings | None = None, timeout: float = 10.0,
                 ctx: zmq.Context | None = None):
        self.endpoint, self.timeout = endpoint, timeout
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        secure_client(self.sock, curve)
        self.sock.connect(endpoint)
        self._id = int.from_bytes(os.urandom(4), "little") << 16

    def close(self) -> None:
        self.sock.close(0)

    def fetch(self, day: dt.date, from_seq: int, to_seq: int | None = None, tables=None,
              after: dict[str, int] | None = None) -> Chunk:
        """One chunk from `from_seq` (of a table in `after`, only records after its seq);
        p.Unreachable when no reply comes within `timeout`, p.ControlError when the server
        refuses the request."""
        self._id += 1
        req = LogRequest(day, from_seq, to_seq, tuple(sorted(tables)) if tables else None, self._id,
                         tuple(sorted((after or {}).items())))
        self.sock.send_multipart([b"", req.encode()])
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            frames = self.sock.recv_multipart()
            if len(frames) < 2 or len(frames[0]):
                continue
            head = json.loads(frames[1])
            if "error" in head and "id" not in head:
                raise p.ControlError(f"log server {self.endpoint}: {head['error']}")
            if head.get("id") != self._id:
                continue  # the reply to a request given up on
            if len(frames) != 6:
                raise p.ControlError(f"log server {self.endpoint}: a reply of {len(frames)} frames; "
                                     "is it a tickstack log server of this version?")
            seqs = np.frombuffer(frames[2], "<u8").tolist()
            starts = np.frombuffer(frames[3], "<u8").tolist()
            ends = np.frombuffer(frames[4], "<u8").tolist()
            blob = memoryview(frames[5])
            payloads = [blob[a:b] for a, b in zip(starts, ends)]
            return Chunk(head, seqs, payloads)
        raise p.Unreachable(f"no answer from the log server {self.endpoint} in {self.timeout:g}s: "
                            "is the tickerplant running with [tickerplant] log_serve set, and is "
                            "the endpoint reachable from here?")
