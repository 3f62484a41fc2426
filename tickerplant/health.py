"""Heartbeats through the tickerplant and Prometheus metrics, for every process of the stack.

Contract. A process's library class has ONE hook, `health() -> dict`, read from other threads
(counters only: plain int reads, no locks on the process's hot paths):

    msgs_in, msgs_out   totals since start (what "in" and "out" mean is the process's: the TP
                        received/published messages, the RDB subscribed messages/answered
                        queries, a feed acked/sent messages, ...)
    errors, last_error  total errors, the text of the last one ("" if none)
    lag                 optional int: seqs behind the TP (-1: not applicable)
    position, tables    optional: a TP subscription's seq per table and its tables (None: all),
                        as `subscriber_health(sub)` gives them; the heartbeat thread turns them
                        into `lag` against the TP's own `status` once per interval
    extra               optional {name: number}: exported as gauges `tickstack_<name>`

`Monitor` (one per process) runs a daemon thread that every `[health] heartbeat_s` reads
health(), adds pid, rss and the rates over the interval, and sends one row of the `heartbeat`
table (schemas/tables.toml; sym = the process name) through the TP: the TP itself queues it
for its own loop (`Tickerplant.post_heartbeat`), every other process sends it on its own
DEALER to the TP's ingest ROUTER, as a codec message with feed id 0 (no acks, no dedup:
a heartbeat lost is simply not there; the next one follows).

Never blocking its process: the DEALER has ZMQ_IMMEDIATE (nothing queues inside ZeroMQ for a
TP that is not connected) and a send high-water mark of a few messages, and every send is
NOBLOCK: while the TP is down, or not reading, the row is dropped and counted
(`tickstack_heartbeats_dropped_total`). ZeroMQ reconnects by itself; the first row goes one
interval after start, so a TP that is up has been connected by then (the slow-joiner delay is
a subscriber's problem, not an ingest sender's: the ROUTER takes what arrives once connected).

Metrics. `prometheus_client` serves the process's own registry on `[health] metrics_host`
(loopback by default) at the configured port (0: a free one); the bound address is written
to <home>/run/NAME.metrics as a URL, for `tickstack status`. A custom collector reads health()
at scrape time (no per-message metric updates). The endpoint serves only reads; a malformed
request costs its own connection (prometheus_client's threading HTTP server). Names:
tickstack_messages_{in,out}_total, tickstack_messages_{in,out}_per_second, tickstack_lag_messages,
tickstack_errors_total, tickstack_last_error_info{error}, tickstack_resident_memory_bytes,
tickstack_heartbeat_time_seconds (the last heartbeat handed to the TP; start time before the
first), tickstack_heartbeat_interval_seconds, tickstack_heartbeats_{sent,dropped}_total,
tickstack_process_id; each with the label process="NAME".
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
import zmq

from schemas import codec
from schemas.registry import Registry, load_registry
from tickerplant import protocol as p
from tickerplant.config import HealthSettings, TickerplantSettings

log = logging.getLogger("health")

TABLE = "heartbeat"
SEND_HWM = 4                # rows queued in ZeroMQ for a connected TP, at most
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def subscriber_health(sub) -> dict:
    """What a `tickerplant.subscriber.Subscriber` counts, as health() keys (None: nothing yet)."""
    if sub is None:              # not subscribed (yet): no lag to tell
        return {"msgs_in": 0, "errors": 0, "lag": -1}
    c = sub.counters
    return {"msgs_in": c["live"] + c["from_log"], "errors": c["malformed"],
            "position": dict(sub.last), "tables": sub.tables}


def lag_of(position: dict[str, int], tables, tp_tables: dict[str, int]) -> int:
    """Seqs the most-behind subscribed table is behind the TP's last seq of that table."""
    want = tp_tables if tables is None else {t: s for t, s in tp_tables.items() if t in tables}
    return max((max(0, s - position.get(t, 0)) for t, s in want.items()), default=0)


def heartbeat_row(registry: Registry, name: str, when_ns: int, h: dict) -> bytes:
    """One `heartbeat` row as a codec message (feed 0: no acks, no dedup)."""
    cols = {"time": np.array([when_ns], "<i8"), "sym": np.array([name]),
            "pid": np.array([h["pid"]], "<i8"), "msgs_in": np.array([h["msgs_in"]], "<i8"),
            "msgs_out": np.array([h["msgs_out"]], "<i8"), "in_rate": np.array([h["in_rate"]], "<f8"),
            "out_rate": np.array([h["out_rate"]], "<f8"), "lag": np.array([h["lag"]], "<i8"),
            "rss": np.array([h["rss"]], "<i8"), "errors": np.array([h["errors"]], "<i8"),
            "last_error": [h["last_error"][:1000]]}
    return codec.encode(registry[TABLE], cols)


class IngestSender:
    """Rows to the TP's ingest ROUTER on a DEALER that never blocks (see the module docstring).
    Used from one thread only (the heartbeat thread), like any ZeroMQ socket."""

    def __init__(self, tp: TickerplantSettings, ctx: zmq.Context | None = None, curve=None):
        from tickerplant.curve import secure_client
        self.sock = (ctx or zmq.Context.instance()).socket(zmq.DEALER)
        secure_client(self.sock, curve)
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.sock.setsockopt(zmq.RCVHWM, 16)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.sock.connect(tp.ingest)
        self.rejected = 0
        self.last_error = ""

    def __call__(self, buf: bytes) -> bool:
        """Send one row; False (dropped) when the TP is not connected or not reading."""
        self._replies()
        try:
            self.sock.send(buf, p.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def _replies(self) -> None:
        """The TP answers a feed-0 message only to refuse it: count it, keep its text."""
        for _ in range(16):
            try:
                frames = self.sock.recv_multipart(p.NOBLOCK)
            except zmq.Again:
                return
            if frames and frames[0] == p.ERR:
                self.rejected += 1
                self.last_error = frames[-1].decode("utf-8", "replace")
                log.warning("the tickerplant refused a heartbeat: %s", self.last_error)

    def close(self) -> None:
        self.sock.close(0)


class Monitor:
    """Heartbeats and /metrics of one process. `send(buf) -> bool` hands a row to the TP
    (None: an IngestSender on `tp`'s ingest endpoint, made in the heartbeat thread)."""

    def __init__(self, name: str, settings: HealthSettings, health: Callable[[], dict],
                 run_dir: Path | None = None, tp: TickerplantSettings | None = None,
                 send: Callable[[bytes], bool] | None = None, registry: Registry | None = None,
                 curve=None):
        if send is None and tp is None:
            raise ValueError("a Monitor needs the TP's settings or a send function")
        self.name, self.settings, self.health = name, settings, health
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.tp, self.send, self.curve = tp, send, curve     # curve: [curve] of a CURVE stack
        self.registry = registry if registry is not None and TABLE in registry else load_registry()
        self.pid = os.getpid()
        self.sent = self.dropped = 0
        self.last_beat = time.time()      # before the first heartbeat: the start counts as one
        self.rates = (0.0, 0.0)
        self.lag = -1
        self.url: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self._sender: IngestSender | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, beating: bool = True) -> "Monitor":
        """Serve /metrics (unless [health] metrics = false) and start the heartbeat thread
        (beating=False: metrics only; the caller beats with `beat()`, e.g. a test)."""
        if self.settings.metrics:
            self._serve_metrics()
        if not beating:
            return self
        self._thread = threading.Thread(target=self._run, name=f"health-{self.name}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            f = self._metrics_file()
            try:
                if f is not None and f.read_text().strip() == self.url:
                    f.unlink()
            except OSError:
                pass

    def __enter__(self) -> "Monitor":
        return self if self._server is not None or self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- heartbeats ---------------------------------------------------------------------------
    def _run(self) -> None:
        every = self.settings.heartbeat_s
        prev = None
        try:
            if self.send is None:
                self._sender = IngestSender(self.tp, curve=self.curve)
                self.send = self._sender
            wait = every
            while not self._stop.wait(wait):
                t0 = time.monotonic()
                try:
                    prev = self.beat(prev)
                except Exception:  # noqa: BLE001 - a failed heartbeat never ends the process
                    log.exception("heartbeat of %s failed; trying again in %gs", self.name, every)
                wait = max(0.0, every - (time.monotonic() - t0))
        finally:
            if self._sender is not None:
                self._sender.close()

    def beat(self, prev: tuple | None = None) -> tuple:
        """Sample, compute rates since `prev` (monotonic, msgs_in, msgs_out), send one row.
        Returns the new `prev`."""
        h = self.health()
        now = time.monotonic()
        ins, outs = int(h.get("msgs_in", 0)), int(h.get("msgs_out", 0))
        if prev is not None and now > prev[0]:
            dt = now - prev[0]
            self.rates = (max(0.0, (ins - prev[1]) / dt), max(0.0, (outs - prev[2]) / dt))
        self.lag = self._lag(h)
        row = heartbeat_row(self.registry, self.name, time.time_ns(), self._row(h))
        if self.send(row):
            self.sent += 1
            self.last_beat = time.time()
        else:
            self.dropped += 1
        return now, ins, outs

    def _lag(self, h: dict) -> int:
        if "lag" in h:
            return int(h["lag"])
        if "position" not in h or self.tp is None:
            return -1
        try:
            st = p.control(self.tp.ctl, "status", timeout=min(1.0, self.settings.heartbeat_s / 2),
                           curve=self.curve)
        except (p.Unreachable, p.ControlError, ValueError):
            return -1
        return lag_of(h["position"], h.get("tables"), st.get("tables", {}))

    def _row(self, h: dict) -> dict:
        return {"pid": self.pid, "msgs_in": int(h.get("msgs_in", 0)), "msgs_out": int(h.get("msgs_out", 0)),
                "in_rate": self.rates[0], "out_rate": self.rates[1], "lag": self.lag, "rss": rss_bytes(),
                "errors": int(h.get("errors", 0)) + (self._sender.rejected if self._sender else 0),
                "last_error": str(h.get("last_error") or (self._sender.last_error if self._sender else ""))}

    # -- metrics ------------------------------------------------------------------------------
    def _metrics_file(self) -> Path | None:
        return self.run_dir / f"{self.name}.metrics" if self.run_dir is not None else None

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        s = self.settings
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        port = s.metrics_ports.get(self.name, 0)
        f = self._metrics_file()
        try:
            self._server, _ = start_http_server(port, addr=s.metrics_host, registry=registry)
        except OSError as e:  # the process matters more than its metrics: run on without them
            log.error("%s: cannot serve metrics on %s:%d (%s); running without them: set "
                      "[health] metrics_ports.%s to a free port, or 0 for any", self.name,
                      s.metrics_host, port, e, self.name)
            if f is not None:
                f.unlink(missing_ok=True)
            return
        host = s.metrics_host if ":" not in s.metrics_host else f"[{s.metrics_host}]"
        self.url = f"http://{host}:{self._server.server_port}/metrics"
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            tmp = f.with_suffix(f".metrics.{self.pid}")
            tmp.write_text(self.url + "\n")
            tmp.replace(f)
        log.info("%s: metrics on %s, heartbeat every %gs", self.name, self.url, s.heartbeat_s)


class _Collector:
    """Reads the process's health() at scrape time."""

    def __init__(self, m: Monitor):
        self.m = m

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
        m = self.m
        h = m.health()
        label = [m.name]
        row = m._row(h)

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=["process"])
            g.add_metric(label, value)
            return g

        def counter(name, doc, value):
            c = CounterMetricFamily(name, doc, labels=["process"])
            c.add_metric(label, value)
            return c

        yield counter("tickstack_messages_in", "messages taken in since start", row["msgs_in"])
        yield counter("tickstack_messages_out", "messages sent out since start", row["msgs_out"])
        yield gauge("tickstack_messages_in_per_second", "messages in per second, last heartbeat interval", m.rates[0])
        yield gauge("tickstack_messages_out_per_second", "messages out per second, last heartbeat interval", m.rates[1])
        yield gauge("tickstack_lag_messages", "seqs behind the tickerplant (-1: n/a)",
                    int(h["lag"]) if "lag" in h else m.lag)
        yield counter("tickstack_errors", "errors since start", row["errors"])
        info = InfoMetricFamily("tickstack_last_error", "the last error's text", labels=["process"])
        info.add_metric(label, {"error": row["last_error"][:300]})
        yield info
        yield gauge("tickstack_resident_memory_bytes", "resident set size", row["rss"])
        yield gauge("tickstack_heartbeat_time_seconds", "when the last heartbeat went to the tickerplant (epoch s)",
                    m.last_beat)
        yield gauge("tickstack_heartbeat_interval_seconds", "[health] heartbeat_s", m.settings.heartbeat_s)
        yield counter("tickstack_heartbeats_sent", "heartbeat rows handed to the tickerplant", m.sent)
        yield counter("tickstack_heartbeats_dropped", "heartbeat rows dropped (tickerplant down or not reading)",
                      m.dropped)
        yield gauge("tickstack_process_id", "the process id", m.pid)
        for k, v in (h.get("extra") or {}).items():
            yield gauge(f"tickstack_{k}", k.replace("_", " "), float(v))


def monitor(name: str):
    """For `schemas.process.serve(..., monitor=monitor("rdb"))`: a function (cfg, proc) that
    starts the process's Monitor from its config (`[health]`, run dir, `[tickerplant]`) and its
    `proc.health`; the TP is recognised by its `post_heartbeat` and publishes its own rows."""
    def start(cfg, proc) -> Monitor:
        return start_monitor(name, cfg, proc.health, getattr(proc, "post_heartbeat", None))
    return start


def start_monitor(name: str, cfg, health: Callable[[], dict],
                  send: Callable[[bytes], bool] | None = None) -> Monitor:
    """A started Monitor of a process from its config (a StackSettings with `health` and
    `tickerplant` sections)."""
    return Monitor(name, cfg.health, health, cfg.run_dir, cfg.tickerplant, send, cfg.registry(),
                   getattr(cfg, "curve", None)).start()


class Outbox:
    """The TP's own heartbeat rows, from the heartbeat thread to the TP's loop: a bounded
    deque (appends and pops are atomic in CPython), drained by the loop at its heartbeat."""

    def __init__(self, size: int = 16):
        self.rows: deque[bytes] = deque()
        self.size = size

    def put(self, buf: bytes) -> bool:
        if len(self.rows) >= self.size:  # the loop is not taking them: drop, never grow
            return False
        self.rows.append(buf)
        return True

    def take(self) -> list[bytes]:
        out = []
        while self.rows:
            out.append(self.rows.popleft())
        return out
