"""The SQL query endpoint (RDB and HDB alike) and its client.

Sockets:
    frontend  ROUTER bound at `endpoint` (loopback by default). Clients talk REQ to it (or any
              socket that speaks the REQ envelope: DEALER sending an empty delimiter first).
              ZeroMQ disconnects a peer that sends a frame over `max_request_bytes`. A CURVE
              server when [curve] is on (tickerplant/curve.py): a client without the key is
              refused in the handshake and counted in `counters()` (auth_denied).
    backend   ROUTER bound at a private inproc address; each worker is a DEALER on it.
    broker    one thread between the two: it reads the frontend (NOBLOCK) only while a worker is
              idle, so further requests wait in ZeroMQ's queues, and hands each request to the
              idle worker that has waited longest, with its envelope; a worker's answer goes
              back to the envelope's peer and the worker is idle again.
    workers   `workers` threads, each with its own DuckDB cursor (the Engine gives every thread
              its own), so `workers` queries run at once.

Every socket is read with NOBLOCK after a poll: a REP socket (what this server used to use) polls
readable and then blocks in recv on a message without an envelope.

Request:  one frame, JSON `{"sql": "...", "format": "arrow"}` ("format" is optional; "arrow" is
          the only one), after the REQ envelope (routing ids, an empty delimiter).
Reply:    `[b"ok", <Arrow IPC stream>, <JSON {"rows", "truncated", "ms"}>]` or `[b"err", <text>]`.
Every request with an envelope gets exactly one reply: garbage (not JSON, not UTF-8, multipart,
wrong fields, refused or failing SQL) gets an err reply, counted in `stats["err"]`. A message
without an envelope cannot be answered: it is dropped and counted in `stats["dropped"]`. Nothing
a client sends stops or blocks the server.
"""
from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter, deque

import pyarrow as pa
import zmq

from hdb.config import HdbSettings
from hdb.sql import Engine, QueryError, Result
from tickerplant.config import CurveSettings
from tickerplant.curve import refused, release, secure_server
from tickerplant.protocol import Unreachable, request
from tickerplant.protocol import split_envelope

log = logging.getLogger(__name__)
MAX_REQUEST = HdbSettings.model_fields["max_request_bytes"].default
POLL_MS = 100            # how often an idle worker checks for stop
READY, DONE = b"ready", b"done"   # worker -> broker: idle at start / an answer follows


def encode_table(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def decode_table(buf) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(buf)).read_all()


def parse_request(frames: list) -> str:
    """The SQL text of a request, or QueryError saying what a request must look like."""
    want = 'send one frame of JSON: {"sql": "SELECT ...", "format": "arrow"}'
    if len(frames) != 1:
        raise QueryError(f"request has {len(frames)} frames; {want}")
    try:
        req = json.loads(bytes(frames[0]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise QueryError(f"request is not UTF-8 JSON; {want}") from None
    if not isinstance(req, dict) or not isinstance(req.get("sql"), str):
        raise QueryError(f'request has no "sql" string; {want}')
    fmt = req.get("format", "arrow")
    if fmt != "arrow":
        raise QueryError(f"format {fmt!r} is not supported; use \"arrow\"")
    extra = set(req) - {"sql", "format"}
    if extra:
        raise QueryError(f"unknown request fields {sorted(extra)}; {want}")
    return req["sql"]


class QueryServer:
    """Serves `engine` at `endpoint` with `workers` threads. `start()` returns once the socket is
    bound (errors such as a port in use raise there); `stop()` ends every thread."""

    def __init__(self, endpoint: str, engine: Engine, workers: int = 2,
                 max_request_bytes: int = MAX_REQUEST, curve: CurveSettings | None = None):
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.endpoint = endpoint
        self.engine = engine
        self.workers = workers
        self.max_request_bytes = max_request_bytes
        self.curve = curve
        self.stats: Counter = Counter()
        self.last_error = ""                  # the text of the last failed query (health())
        self._stats_lock = threading.Lock()
        self._ctx = zmq.Context()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backend = f"inproc://hdb-query-{uuid.uuid4().hex}"
        self._control = f"inproc://hdb-query-ctl-{uuid.uuid4().hex}"

    def start(self) -> "QueryServer":
        front = self._ctx.socket(zmq.ROUTER)
        front.setsockopt(zmq.MAXMSGSIZE, self.max_request_bytes)
        front.setsockopt(zmq.LINGER, 0)
        try:
            secure_server(front, self.curve)
            front.bind(self.endpoint)
        except (zmq.ZMQError, ValueError):
            front.close(0)
            release(self._ctx)
            self._ctx.term()
            raise
        # a wildcard port ("tcp://127.0.0.1:*") resolves here, so callers can learn it
        self.endpoint = front.getsockopt_string(zmq.LAST_ENDPOINT)
        back = self._ctx.socket(zmq.ROUTER)
        back.setsockopt(zmq.LINGER, 0)
        back.bind(self._backend)
        ctl = self._ctx.socket(zmq.PAIR)
        ctl.bind(self._control)
        self._ctl = self._ctx.socket(zmq.PAIR)
        self._ctl.connect(self._control)
        t = threading.Thread(target=self._broker, args=(front, back, ctl), name="hdb-query-broker",
                             daemon=True)
        t.start()
        self._threads.append(t)
        for i in range(self.workers):
            w = threading.Thread(target=self._work, name=f"hdb-query-{i}", daemon=True)
            w.start()
            self._threads.append(w)
        log.info("query server on %s with %d workers", self.endpoint, self.workers)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        try:
            self._ctl.send(b"TERMINATE", zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        for t in self._threads:
            t.join(timeout)
        self._ctl.close(0)
        release(self._ctx)
        self._ctx.term()

    def counters(self) -> dict:
        """`stats` and the refused CURVE handshakes (auth_denied...)."""
        with self._stats_lock:
            return {**self.stats, **refused(self._ctx)}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _broker(self, front, back, ctl) -> None:
        idle: deque[bytes] = deque()
        poller = zmq.Poller()
        poller.register(back, zmq.POLLIN)
        poller.register(ctl, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                # the frontend is read only while a worker can take what it holds
                poller.register(front, zmq.POLLIN if idle else 0)
                events = dict(poller.poll(POLL_MS))
                if ctl in events:
                    break
                if back in events:
                    self._answers(back, front, idle)
                if front in events:
                    self._requests(front, back, idle)
        except zmq.ZMQError as e:
            if not self._stop.is_set():
                log.error("query broker stopped: %s", e)
        finally:
            for s in (front, back, ctl):
                s.close(0)

    def _answers(self, back, front, idle: deque) -> None:
        while True:
            try:
                frames = back.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            worker, tag = frames[0].bytes, frames[1].bytes
            if tag == DONE:
                # ROUTER without ROUTER_MANDATORY drops a reply to a peer that left: never blocks
                front.send_multipart(frames[2:], zmq.NOBLOCK, copy=False)
            idle.append(worker)

    def _requests(self, front, back, idle: deque) -> None:
        while idle:
            try:
                frames = front.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            envelope, _ = split_envelope(frames)
            if envelope is None:
                self._count("dropped")
                continue
            back.send_multipart([idle.popleft(), *frames], copy=False)

    def health(self) -> dict:
        """Requests in (answered or dropped), replies out, errors (failed and dropped): the
        query part of a process's health hook (tickerplant/health.py)."""
        s = self.stats
        ok, err, dropped = s.get("ok", 0), s.get("err", 0), s.get("dropped", 0)
        return {"msgs_in": ok + err + dropped, "msgs_out": ok + err, "errors": err + dropped,
                "last_error": self.last_error}

    def _count(self, what: str) -> None:
        with self._stats_lock:
            self.stats[what] += 1

    def handle(self, frames: list) -> list:
        """The reply frames for one request; never raises."""
        try:
            sql = parse_request(frames)
            res = self.engine.query(sql, allow_truncated=True)  # the reply says it was cut
            body = encode_table(res.table)
            meta = json.dumps({"rows": res.table.num_rows, "truncated": res.truncated,
                               "ms": round(res.ms, 3)}).encode()
            self._count("ok")
            return [b"ok", body, meta]
        except QueryError as e:
            self._count("err")
            self.last_error = str(e)[:1000]
            return [b"err", str(e).encode()]
        except Exception as e:  # a bug (or RecursionError, MemoryError) costs one query, never the server
            log.exception("query failed unexpectedly")
            self._count("err")
            self.last_error = f"internal error: {type(e).__name__}: {e}"[:1000]
            return [b"err", f"internal error: {type(e).__name__}: {e}".encode()]

    def _work(self) -> None:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self._backend)
        try:
            sock.send(READY)
            while not self._stop.is_set():
                if not sock.poll(POLL_MS):
                    continue
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    continue
                envelope, body = split_envelope(frames)  # the broker sends only enveloped requests
                reply = self.handle([f.buffer for f in body])
                sock.send_multipart([DONE, *envelope, *reply], copy=False)
        except zmq.ZMQError as e:
            if not self._stop.is_set():
                log.error("query worker stopped: %s", e)
        finally:
            sock.close(0)


def query(endpoint: str, sql: str, timeout: float = 60, allow_truncated: bool = False,
          curve: CurveSettings | None = None) -> Result:
    """Run `sql` on the query server at `endpoint`. Raises QueryError with the server's text,
    or saying nothing answered within `timeout` seconds. A result the server cut at its row
    limit has `truncated` set and, unless `allow_truncated`, issues a TruncatedWarning."""
    try:
        frames = request(endpoint, [json.dumps({"sql": sql, "format": "arrow"}).encode()], timeout,
                         curve=curve)
    except Unreachable as e:
        raise QueryError(str(e)) from None
    kind = bytes(frames[0].buffer)
    if kind == b"ok" and len(frames) == 3:
        meta = json.loads(bytes(frames[2].buffer))
        res = Result(decode_table(frames[1].buffer), bool(meta["truncated"]), float(meta["ms"]))
        if res.truncated and not allow_truncated:
            from hdb.sql import warn_truncated
            warn_truncated(res.table.num_rows, f"the server at {endpoint}")
        return res
    if kind == b"err" and len(frames) >= 2:
        raise QueryError(bytes(frames[1].buffer).decode("utf-8", "replace"))
    raise QueryError(f"unexpected reply from {endpoint}: {kind[:20]!r}; is it a tickstack query endpoint?")
