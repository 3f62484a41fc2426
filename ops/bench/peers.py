"""Same-run peer baselines for the tick path: Redis Streams and NATS JetStream carrying the very
messages tickstack carries, between a publisher process and a consumer process.

What is compared, and why it is fair:
- Same bytes. Every message is one tickstack `trade` batch (time int64 ns, sym, price float64,
  size int64) from `schemas.codec.encode`, so each system carries the same bytes per message,
  and the consumer decodes every message it receives with `schemas.codec.columns` (all pay the
  same decode). Throughput messages are `ops.bench.ingest.messages`, the rows our own bench sends.
- Durable on both. Redis: AOF on, `appendfsync everysec`, no RDB snapshots, otherwise defaults
  (an AOF rewrite may run during long runs, as it would for a user). NATS: JetStream stream with
  FILE storage, server defaults (messages written to the store file as they arrive, fsynced by
  the server's sync interval). Both servers run on 127.0.0.1 from a temp dir (`servers.py`).
- Each system's normal efficient client path (PyPI `redis` and `nats-py`):
  Redis publisher: XADD pipelined (`pipeline(transaction=False)`, up to 1000 commands or ~1 MB
  per round trip). Redis consumer: XREAD BLOCK with COUNT 1000 from the last id seen (id 0-0 at
  first, so nothing before the consumer joined is missed).
  NATS publisher: `js.publish_async` for every message (nats-py's async publish, in flight bounded
  by its window of 4000) with every PubAck gathered and checked. NATS consumer: an ordered push
  consumer (ack none, flow control, deliver all), nats-py's way to read a stream in order as fast
  as it arrives; a pull `fetch(batch)` holds a partial batch until its timeout, which would time
  the consumer's timeout, not the system.
- Throughput: rows/s from the publisher's first send to the consumer holding (having decoded)
  the last row; both processes read CLOCK_MONOTONIC, which is shared across processes.
- Latency: single-row messages at a fixed rate. The publisher writes `time.monotonic_ns()` into
  the row's `time` column just before it sends; the consumer reads the clock as its code takes
  each message and subtracts the stamp. Pacing (`Pacer`): the publisher sleeps to each slot
  (timer slack cut to 1 us, so a sleep ends within tens of us; asyncio's own timers round to
  1 ms) and never spins, so it leaves the cores to the server and the consumer. Waking late
  costs the system nothing (the stamp is taken at the send), and messages whose slots have
  passed go out together, so the rate holds (the achieved rate is reported). Redis sends the due
  XADDs in one pipeline round trip, most often one; NATS calls `publish_async` for each (acks
  gathered, never waited for before the next slot). Percentiles leave out the first 5% of
  messages as warm-up, as `ops.bench.latency` does for ours.
- Exactly once: each run counts rows and sums `size` on both sides and refuses a figure whose
  counts differ (`DeliveryError`); the consumer reads on for 0.1 s after the last row (not
  timed) so late duplicates count. Latency rows carry their message number in `size`.

API (the benches call these; a peer that cannot run here is named by `available()`):
    available() -> {name: None | "why not, and the install command"}
    with Peer(name) as p:                       # server started once, stopped by pid on exit
        p.throughput(rows_per_msg, n_msgs)      # -> rows/s
        p.latency(rate, n_msgs)                 # -> {"p50", "p99", "p999" (us), "rate" (achieved)}
        p.deliver(rows_per_msg, n_msgs, rate=None) -> Delivery  # the run behind both, with counts
    throughput(name, ...), latency(name, ...)   # one-shot: own server for one run
    python -m ops.bench.peers                   # every figure, with progress
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import importlib.metadata
import importlib.util
import multiprocessing as mp
import queue
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ops.bench import servers
from schemas.codec import HEADER, columns, encode
from schemas.registry import load_registry

PEERS = ("redis", "nats")
CLIENTS = {"redis": ("redis", "redis"), "nats": ("nats", "nats-py")}  # (import name, PyPI name)
PIP = 'pip install "tickstack[bench]"'
_REDIS_COUNT = 1000        # XREAD COUNT
_REDIS_PIPELINE = 1000     # XADDs per pipeline round trip (fewer for big messages)
_PIPELINE_BYTES = 1 << 20
_DISTINCT = 16             # distinct pre-encoded messages cycled through in a throughput run
_STALL_S = 30.0            # a run with no progress for this long fails
_LINGER_S = 0.1            # the consumer reads on this long after the last row, for duplicates
_SIZE_COL, _TIME_COL = 3, 0
_PR_SET_TIMERSLACK = 29


class PeerUnavailable(RuntimeError):
    """The peer's server binary or client library is missing; the text says how to install it."""


class DeliveryError(RuntimeError):
    """A peer lost or duplicated messages, or stalled: no figure is reported for it."""


def wait_result(out, progress, rows_sent: int, bar, procs, name: str):
    """The consumer's result from `out` (done_at, rows, size_sum, latencies); DeliveryError if
    one of `procs` failed or the run made no progress for _STALL_S (progress shown on `bar`)."""
    seen, since = -1, time.monotonic()
    while True:
        try:
            msg = out.get(timeout=0.25)
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise DeliveryError(f"{dead[0].name} process died with exit status {dead[0].exitcode}") from None
            now = time.monotonic()
            if progress.value != seen:
                seen, since = progress.value, now
                if bar is not None:
                    bar.update(seen - bar.n)
            elif now - since > _STALL_S:
                raise DeliveryError(f"{name}: consumer has {seen:,} of {rows_sent:,} rows and "
                                    f"no progress for {_STALL_S:.0f} s (messages lost?)") from None
            continue
        if msg[0] == "error":
            raise DeliveryError(msg[1])
        return msg[1:]


def available() -> dict[str, str | None]:
    """Each peer's name -> None if it can run here, else why not and how to install it."""
    out: dict[str, str | None] = {}
    for name in PEERS:
        missing = []
        if servers.binary(name) is None:
            missing.append(f"{servers.BINARIES[name]} (`{servers.INSTALL}`)")
        module, dist = CLIENTS[name]
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python client {dist} (`{PIP}`)")
        out[name] = f"{name} skipped: missing " + " and ".join(missing) if missing else None
    return out


@dataclass(frozen=True)
class Delivery:
    """One publisher -> server -> consumer run: what was sent, what the consumer decoded."""
    peer: str
    rows_per_msg: int
    messages: int
    rows_sent: int
    size_sum_sent: int
    rows: int                 # rows the consumer decoded
    size_sum: int             # sum of their `size` column
    seconds: float            # publisher's first send -> consumer holding the last row
    send_seconds: float       # publisher's first send -> its last send
    latency_ns: np.ndarray = field(repr=False, default_factory=lambda: np.empty(0, np.int64))

    @property
    def exact(self) -> bool:
        return self.rows == self.rows_sent and self.size_sum == self.size_sum_sent

    def check(self) -> Delivery:
        """This delivery, if every row arrived exactly once; else DeliveryError."""
        if not self.exact:
            raise DeliveryError(f"{self.peer}: sent {self.rows_sent:,} rows (size sum {self.size_sum_sent}), "
                                f"consumer decoded {self.rows:,} (size sum {self.size_sum})")
        return self

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds

    @property
    def send_rate(self) -> float:
        """Messages per second the publisher achieved (a paced run that fell behind shows it)."""
        return (self.messages - 1) / self.send_seconds if self.send_seconds > 0 else float("inf")


# ---- the messages -------------------------------------------------------------------------------

def _column_offset(buf: bytes, index: int) -> int:
    """Byte offset of column `index`'s section in an encoded message (read from its lengths)."""
    tlen = struct.unpack_from("<H", buf, 6)[0]
    pos = HEADER.size + tlen + (-tlen % 8)
    ncols = buf[5]
    lengths = struct.unpack_from(f"<{ncols}Q", buf, pos)
    pos += 8 * ncols
    for ln in lengths[:index]:
        pos += ln + (-ln % 8)
    return pos


def _single_row_template() -> tuple[bytearray, int, int]:
    """A one-row trade message and the offsets of its `time` and `size` values."""
    buf = bytearray(encode(load_registry()["trade"], {"time": [0], "sym": ["S001"], "price": [1.0],
                                                       "size": [0]}))
    return buf, _column_offset(buf, _TIME_COL), _column_offset(buf, _SIZE_COL)


def _burst_messages(rows_per_msg: int) -> list[bytes]:
    from ops.bench.ingest import messages  # the rows our own ingest bench sends
    return messages(rows_per_msg, _DISTINCT)


class _Sink:
    """The consumer's half, the same for every peer: decode each message, count rows, sum `size`,
    and in a latency run keep receive - send per message."""

    def __init__(self, expected_rows: int, latency: bool):
        self.registry = load_registry()
        self.expected = expected_rows
        self.rows = 0
        self.size_sum = 0
        self.lat = np.empty(expected_rows if latency else 0, np.int64)
        self.latency = latency
        self.done_at = 0.0  # CLOCK_MONOTONIC when the last expected row was decoded

    def take(self, buf: bytes) -> None:
        if self.latency:
            now = time.monotonic_ns()  # when the consumer's code has this message in hand
        head, _, cols = columns(buf, self.registry)
        if self.latency:
            k = min(head.nrows, len(self.lat) - self.rows)  # more rows than sent: counted, not kept
            self.lat[self.rows: self.rows + k] = now - cols[_TIME_COL][:k]
        self.rows += head.nrows
        self.size_sum += int(cols[_SIZE_COL].sum())
        if not self.done_at and self.rows >= self.expected:
            self.done_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.rows >= self.expected


class Pacer:
    """Slots every 1/rate s from the first call. `due()` sleeps until the next slot and says how
    many messages are due: more than one when the publisher woke or sent late, so the rate holds
    (natural batching) without spinning a core. Sends are stamped when they happen, so a late
    wake-up never counts against the system measured."""

    def __init__(self, rate: float, n: int):
        self.period, self.left = 1.0 / rate, n
        self.slot = time.perf_counter()
        with contextlib.suppress(Exception):  # Linux: 1 us timer slack (default 50 us) for sleeps
            ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)

    def due(self) -> int:
        wait = self.slot - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        k = min(self.left, int((time.perf_counter() - self.slot) / self.period) + 1)
        self.left -= k
        self.slot += k * self.period
        return k


# ---- Redis Streams ------------------------------------------------------------------------------

def _redis_client(address):
    import redis
    return redis.Redis(host=address[0], port=address[1], protocol=2)


def _redis_burst(address, key: str, msgs: list[bytes], n: int, go, stamps) -> None:
    r = _redis_client(address)
    r.ping()
    pipe = r.pipeline(transaction=False)
    depth = max(1, min(_REDIS_PIPELINE, _PIPELINE_BYTES // len(msgs[0])))
    k = len(msgs)
    go.wait()
    stamps[0] = time.monotonic()
    for i in range(n):
        pipe.xadd(key, {b"d": msgs[i % k]})
        if (i + 1) % depth == 0:
            pipe.execute()
    pipe.execute()
    stamps[1] = time.monotonic()
    r.close()


def _redis_paced(address, key: str, rate: float, n: int, go, stamps) -> None:
    r = _redis_client(address)
    r.ping()
    pipe = r.pipeline(transaction=False)
    buf, at_time, at_size = _single_row_template()
    number = 0
    go.wait()
    stamps[0] = time.monotonic()
    pacer = Pacer(rate, n)
    while pacer.left:
        for _ in range(pacer.due()):
            number += 1
            struct.pack_into("<q", buf, at_size, number)
            struct.pack_into("<q", buf, at_time, time.monotonic_ns())
            pipe.xadd(key, {b"d": bytes(buf)})
        pipe.execute()
    stamps[1] = time.monotonic()
    r.close()


def _redis_consume(address, key: str, sink: _Sink, ready, progress) -> None:
    r = _redis_client(address)
    r.ping()
    last = b"0-0"
    ready.set()
    linger = None
    while True:
        if sink.done:
            if linger is not None:
                break
            linger = int(_LINGER_S * 1000)  # one more read: a duplicate after the last row counts too
        reply = r.xread({key: last}, count=_REDIS_COUNT, block=linger or 1000)
        if not reply:
            continue
        entries = reply[0][1]
        for _, fields in entries:
            sink.take(fields[b"d"])
        last = entries[-1][0]
        progress.value = sink.rows
    r.close()


def _redis_drop(address, key: str) -> None:
    r = _redis_client(address)
    r.delete(key)
    r.close()


# ---- NATS JetStream -----------------------------------------------------------------------------

def _nats_url(address) -> str:
    return f"nats://{address[0]}:{address[1]}"


async def _nats_connect(address):
    import nats
    return await nats.connect(_nats_url(address), allow_reconnect=False, max_reconnect_attempts=0)


def _nats_names(key: str) -> tuple[str, str]:
    return key.upper(), f"trade.{key}"  # stream, subject


def _nats_create(address, key: str) -> None:
    from nats.js.api import StorageType

    async def create():
        nc = await _nats_connect(address)
        stream, subject = _nats_names(key)
        await nc.jetstream().add_stream(name=stream, subjects=[subject], storage=StorageType.FILE)
        await nc.close()
    asyncio.run(create())


def _nats_drop(address, key: str) -> None:
    async def drop():
        nc = await _nats_connect(address)
        await nc.jetstream().delete_stream(_nats_names(key)[0])
        await nc.close()
    asyncio.run(drop())


def _check_acks(futures: list) -> list:
    """Futures still pending; raises the first publish error among the finished ones."""
    still = []
    for f in futures:
        if f.done():
            f.result()
        else:
            still.append(f)
    return still


def _nats_burst(address, key: str, msgs: list[bytes], n: int, go, stamps) -> None:
    async def run():
        nc = await _nats_connect(address)
        js = nc.jetstream()
        _, subject = _nats_names(key)
        k = len(msgs)
        acks = []
        go.wait()
        stamps[0] = time.monotonic()
        for i in range(n):
            acks.append(await js.publish_async(subject, msgs[i % k]))
            if len(acks) >= 8192:
                acks = _check_acks(acks)
        stamps[1] = time.monotonic()
        await asyncio.gather(*acks)
        await nc.close()
    asyncio.run(run())


def _nats_paced(address, key: str, rate: float, n: int, go, stamps) -> None:
    async def run():
        nc = await _nats_connect(address)
        js = nc.jetstream()
        _, subject = _nats_names(key)
        buf, at_time, at_size = _single_row_template()
        acks = []
        number = 0
        go.wait()
        stamps[0] = time.monotonic()
        pacer = Pacer(rate, n)
        while pacer.left:
            # the pacer's blocking sleep holds the event loop; that is fine: what was published is
            # already on the socket, and acks wait in it until the yield below
            for _ in range(pacer.due()):
                number += 1
                struct.pack_into("<q", buf, at_size, number)
                struct.pack_into("<q", buf, at_time, time.monotonic_ns())
                acks.append(await js.publish_async(subject, bytes(buf)))
            await asyncio.sleep(0)  # nats-py's flusher task writes them now; acks are read
            if len(acks) >= 8192:
                acks = _check_acks(acks)
        stamps[1] = time.monotonic()
        await asyncio.gather(*acks)
        await nc.close()
    asyncio.run(run())


def _nats_consume(address, key: str, sink: _Sink, ready, progress) -> None:
    async def run():
        nc = await _nats_connect(address)
        js = nc.jetstream()
        _, subject = _nats_names(key)
        done = asyncio.Event()
        seen = 0

        async def on_message(msg):
            nonlocal seen
            sink.take(msg.data)
            seen += 1
            if sink.done:
                done.set()
            elif seen % 1024 == 0:
                progress.value = sink.rows

        sub = await js.subscribe(subject, cb=on_message, ordered_consumer=True)
        ready.set()
        await done.wait()
        await asyncio.sleep(_LINGER_S)  # a duplicate after the last row counts too
        progress.value = sink.rows
        await sub.unsubscribe()
        await nc.close()
    asyncio.run(run())


_PEER_CALLS = {
    "redis": dict(burst=_redis_burst, paced=_redis_paced, consume=_redis_consume,
                  create=lambda address, key: None, drop=_redis_drop, server=servers.redis),
    "nats": dict(burst=_nats_burst, paced=_nats_paced, consume=_nats_consume,
                 create=_nats_create, drop=_nats_drop, server=servers.nats),
}


# ---- the processes ------------------------------------------------------------------------------

def _consumer_main(peer: str, address, key: str, expected_rows: int, latency: bool,
                   ready, progress, out) -> None:
    try:
        sink = _Sink(expected_rows, latency)
        _PEER_CALLS[peer]["consume"](address, key, sink, ready, progress)
        out.put(("done", sink.done_at, sink.rows, sink.size_sum, sink.lat[:min(sink.rows, len(sink.lat))]))
    except BaseException as e:  # the parent must hear why, not wait for a stall
        out.put(("error", f"{peer} consumer: {type(e).__name__}: {e}"))


def _publisher_main(peer: str, address, key: str, plan: tuple, go, stamps, out) -> None:
    try:
        kind, *args = plan
        if kind == "burst":
            rows_per_msg, n = args
            _PEER_CALLS[peer]["burst"](address, key, _burst_messages(rows_per_msg), n, go, stamps)
        else:
            rate, n = args
            _PEER_CALLS[peer]["paced"](address, key, rate, n, go, stamps)
    except BaseException as e:
        out.put(("error", f"{peer} publisher: {type(e).__name__}: {e}"))


def _end(proc: mp.process.BaseProcess) -> None:
    """Stop a bench child by pid if it is still running, and reap it."""
    proc.join(2)
    if proc.is_alive():
        proc.kill()
        proc.join()


class Peer:
    """One peer's server, started on entry and stopped by pid on exit, for several runs:

        with Peer("redis") as redis:
            redis.throughput(100, 20_000); redis.latency(2_000, 10_000)
    """

    def __init__(self, name: str, progress: bool = False):
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; peers are {list(PEERS)}")
        reason = available()[name]
        if reason:
            raise PeerUnavailable(reason)
        self.name = name
        self.progress = progress
        self.server: servers.Server | None = None
        self._stack = contextlib.ExitStack()
        self._runs = 0

    def __enter__(self) -> Peer:
        try:
            tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix=f"tsbench-{self.name}-")))
            self.server = self._stack.enter_context(_PEER_CALLS[self.name]["server"](tmp))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    @property
    def pid(self) -> int:
        return self.server.pid

    def describe(self) -> str:
        """Server and client versions and settings, for the report."""
        exe = servers.binary(self.name)
        version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
        if self.name == "redis":
            from redis.utils import HIREDIS_AVAILABLE
            return (f"{version.split(' sha=')[0]}, AOF appendfsync everysec, no RDB; redis-py "
                    f"{_dist_version('redis')} {'with' if HIREDIS_AVAILABLE else 'WITHOUT'} hiredis")
        return f"{version}, JetStream file storage; nats-py {_dist_version('nats-py')}"

    def deliver(self, rows_per_msg: int, n_msgs: int, rate: float | None = None) -> Delivery:
        """One run: a publisher process sends `n_msgs` messages of `rows_per_msg` rows (all at
        once, or single rows paced at `rate` msg/s) and a consumer process decodes them all."""
        if self.server is None:
            raise RuntimeError("use Peer as a context manager: `with Peer(name) as p: ...`")
        if rate is not None and rows_per_msg != 1:
            raise ValueError("a paced (latency) run sends single-row messages")
        if n_msgs < 1:
            raise ValueError("n_msgs must be at least 1")
        calls = _PEER_CALLS[self.name]
        self._runs += 1
        key = f"bench{self._runs}"
        address = (self.server.host, self.server.port)
        if rate is None:
            msgs = _burst_messages(rows_per_msg)
            sums = [int(np.frombuffer(m, "<i8", rows_per_msg, _column_offset(m, _SIZE_COL)).sum()) for m in msgs]
            size_sum_sent = sum(sums[i % len(msgs)] for i in range(n_msgs))
            plan = ("burst", rows_per_msg, n_msgs)
        else:
            size_sum_sent = n_msgs * (n_msgs + 1) // 2
            plan = ("paced", rate, n_msgs)
        rows_sent = rows_per_msg * n_msgs
        calls["create"](address, key)
        ctx = mp.get_context("spawn")  # fork copies whatever threads the caller runs (pytest, zmq I/O): a rare segfault in the child
        ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
        progress, stamps = ctx.RawValue("q", 0), ctx.RawArray("d", 2)
        consumer = ctx.Process(target=_consumer_main, name=f"{self.name}-consumer",
                               args=(self.name, address, key, rows_sent, rate is not None, ready, progress, out))
        publisher = ctx.Process(target=_publisher_main, name=f"{self.name}-publisher",
                                args=(self.name, address, key, plan, go, stamps, out))
        bar = None
        try:
            consumer.start()
            publisher.start()
            if not ready.wait(60):
                raise DeliveryError(f"{self.name} consumer not ready after 60 s")
            time.sleep(0.2)  # the publisher's connect and imports happen before `go`, not in the timing
            if self.progress:
                from tqdm import tqdm
                what = f"{self.name} " + (f"{rows_per_msg}-row msgs" if rate is None else f"{rate:,.0f} msg/s")
                bar = tqdm(total=rows_sent, desc=what, unit="row", unit_scale=True, leave=False)
            go.set()
            result = wait_result(out, progress, rows_sent, bar, (publisher, consumer), self.name)
            publisher.join(60)
        finally:
            if bar is not None:
                bar.close()
            for p in (publisher, consumer):
                if p.pid is not None:
                    _end(p)
        with contextlib.suppress(Exception):
            calls["drop"](address, key)
        t1, rows, size_sum, lat = result
        t0, t_last = stamps[0], stamps[1]
        return Delivery(self.name, rows_per_msg, n_msgs, rows_sent, size_sum_sent, rows, size_sum,
                        t1 - t0, (t_last - t0) if t_last else float("nan"), lat)

    def throughput(self, rows_per_msg: int, n_msgs: int) -> float:
        """Rows/s, publisher's first send to the consumer holding the last row."""
        return self.deliver(rows_per_msg, n_msgs).check().rows_per_second

    def latency(self, rate: float, n_msgs: int) -> dict[str, float]:
        """Single rows at `rate` msg/s: p50/p99/p999 of send -> decoded, in microseconds, and
        the rate the publisher achieved (`rate`)."""
        d = self.deliver(1, n_msgs, rate).check()
        # `rate` is what the publisher achieved: below the one asked for, the figure is not at that rate
        return dict(zip(("p50", "p99", "p999"), percentiles_us(d.latency_ns)), rate=d.send_rate)


def _dist_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def percentiles_us(lat_ns: np.ndarray) -> tuple[float, float, float]:
    """p50/p99/p999 in us, the first 5% left out as warm-up (connections, first-call costs)."""
    return tuple(float(x) for x in np.percentile(lat_ns[len(lat_ns) // 20:], [50, 99, 99.9]) / 1000)


def throughput(name: str, rows_per_msg: int, n_msgs: int) -> float:
    """Rows/s of one run against a server started and stopped for it."""
    with Peer(name) as p:
        return p.throughput(rows_per_msg, n_msgs)


def latency(name: str, rate: float, n_msgs: int) -> dict[str, float]:
    """p50/p99/p999 (us) of one paced run against a server started and stopped for it."""
    with Peer(name) as p:
        return p.latency(rate, n_msgs)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ops.bench.peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", action="append", choices=PEERS, help="peer to run (default: all)")
    ap.add_argument("--batched", type=int, default=50_000, help="100-row messages per throughput run")
    ap.add_argument("--single", type=int, default=100_000, help="single-row messages per throughput run")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each latency run")
    ap.add_argument("--rate", type=float, action="append", help="latency rates, msg/s (default 2000, 10000)")
    a = ap.parse_args(argv)
    rates = a.rate or [2_000.0, 10_000.0]
    try:
        _report(a.peer or PEERS, a.batched, a.single, rates, a.seconds)
    except KeyboardInterrupt:
        sys.exit("interrupted: bench processes and servers stopped")


def _report(names, batched: int, single: int, rates: list[float], seconds: float) -> None:
    bar = sys.stderr.isatty()  # a live progress bar; in a log, a line as each run starts
    for name in names:
        reason = available()[name]
        if reason:
            print(reason, flush=True)
            continue
        with Peer(name, progress=bar) as p:
            print(f"{name}: {p.describe()}; pid {p.pid} on 127.0.0.1:{p.server.port}", flush=True)
            for rows, n in ((100, batched), (1, single)):
                what = f"{name} {rows}-row messages, throughput ({n:,} messages)"
                if not bar:
                    print(f"  running {what} ...", flush=True)
                print(f"  {what:<52} {p.throughput(rows, n):>12,.0f} rows/s", flush=True)
            for rate in rates:
                n = int(rate * seconds)
                what = f"{name} latency at {rate:,.0f} msg/s ({n:,} messages)"
                if not bar:
                    print(f"  running {what} ...", flush=True)
                r = p.latency(rate, n)
                print(f"  {what:<52} p50 {r['p50']:8.1f} us  p99 {r['p99']:8.1f} us  p999 {r['p999']:8.1f} us"
                      f"  (sent at {r['rate']:,.0f} msg/s)", flush=True)


if __name__ == "__main__":
    main()
