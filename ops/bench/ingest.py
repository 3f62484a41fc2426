"""tickstack bench ingest: rows/s through the public API, Feed -> TP (validated, logged,
published) -> Subscriber, beside Redis Streams and NATS JetStream carrying the same rows in the
same run; then the raw-socket figures.

1. What users get. A publisher process calls `Feed.publish` with 100-row and with single-row
   batches (batch_ms=0: natural batching; batch_rows 10k by default), a TP process logs and
   publishes, a consumer process iterates `Subscriber.batches()` (as the RDB does) and reads the
   columns of every row. Beside it, a line with batch_rows = the publish size (every message on
   the wire exactly that size: the per-message cost of each hop), and the peers
   (ops/bench/peers.py: Redis Streams, AOF everysec; NATS JetStream, file storage; the same
   rows in the same message sizes, publisher -> server -> consumer, each decoding every
   message). Wall time from the publisher's first call to the consumer holding the last row
   (CLOCK_MONOTONIC, shared by processes); every run checks that each row arrived exactly once.
   A peer that is not installed is skipped with its install command.
2. Internal batched ingest (raw sockets): a raw DEALER sending pre-encoded 10k-row messages
   through the TP into an RDB store, beside raw pyzmq moving the same bytes over the same hops
   (DEALER -> ROUTER -> PUB -> SUB, no validation, no log, no decode); and the same with
   single-row messages.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import struct
import sys
import time

import numpy as np
import zmq

from ops.bench.common import Ours, free_port, report, tickerplant
from schemas.codec import encode
from schemas.registry import load_registry


def columns_of(rows: int, distinct: int = 16) -> list[dict]:
    """`distinct` trade batches of `rows` rows (numpy columns): what every bench publishes."""
    out = []
    rng = np.random.default_rng(1)
    syms = np.array([f"S{i:03d}" for i in range(100)])
    for k in range(distinct):
        out.append({"time": 1_700_000_000_000_000_000 + np.arange(rows) + k * rows,
                    "sym": syms[rng.integers(0, 100, rows)], "price": rng.random(rows) * 100,
                    "size": rng.integers(1, 1000, rows)})
    return out


def messages(rows: int, distinct: int = 16) -> list[bytes]:
    """The same batches encoded: what the peers and the raw-socket runs send."""
    schema = load_registry()["trade"]
    return [encode(schema, c) for c in columns_of(rows, distinct)]


# ---- raw sockets ---------------------------------------------------------------------------------

def _send(endpoint: str, msgs: list[bytes], count: int, t0, go) -> None:
    s = zmq.Context().socket(zmq.DEALER)
    s.setsockopt(zmq.SNDHWM, 10_000)
    s.connect(endpoint)
    go.wait()
    t0.value = time.monotonic()
    n = len(msgs)
    for i in range(count):
        s.send(msgs[i % n], copy=len(msgs[0]) < 65536)
    time.sleep(1)
    s.close(linger=5000)


def _rdb(cfg, total_rows: int, ready, go, out) -> None:
    from rdb.rdb import append_batch
    from rdb.store import Store
    from tickerplant.subscriber import Batch, Subscriber
    reg = cfg.registry()
    store = Store(reg, ["trade"], chunk_rows=1 << 20)
    sub = Subscriber(cfg.tickerplant, ["trade"], registry=reg).start()
    got = 0
    ready.set()
    for ev in sub.batches():
        if isinstance(ev, Batch):
            append_batch(store, ev)  # what the RDB does with a batch
            got += ev.rows
            if got >= total_rows:
                out.put((time.monotonic(), got, store.nbytes()))
                return


def _raw_forward(ingest: str, pub: str, stop) -> None:
    ctx = zmq.Context()
    r, p = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PUB)
    r.bind(ingest)
    p.setsockopt(zmq.SNDHWM, 100_000)
    p.bind(pub)
    while not stop.is_set():
        if r.poll(100):
            while True:
                try:
                    f = r.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                p.send_multipart([b"trade\0" + bytes(24), f[1]], copy=False)


def _raw_recv(pub: str, total_rows: int, ready, out) -> None:
    s = zmq.Context().socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.setsockopt(zmq.RCVHWM, 100_000)
    s.connect(pub)
    got = 0
    while not s.poll(10):  # wait for the subscription to reach the PUB (slow joiner)
        pass
    ready.set()
    while got < total_rows:
        f = s.recv_multipart(copy=False)
        got += struct.unpack_from("<I", f[1].buffer, 8)[0] if len(f) > 1 else 0
    out.put((time.monotonic(), got, 0))


def ours_raw(msgs, count, rows_each, mode) -> tuple[float, int]:
    """Pre-encoded messages from a raw DEALER through a TP into the RDB's store. The publish
    queue is 1 GiB (pub_queue_bytes), so that a flood the store cannot keep up with is queued,
    not dropped and read back from the log: the figure is throughput, not the slow-subscriber
    policy (the old bench did the same with pub_hwm=1M)."""
    ctx = mp.get_context("fork")
    with tickerplant(mode=mode, batch_ms=5, pub_queue_bytes=1 << 30) as cfg:
        ready, go, out, t0 = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Value("d", 0.0)
        rdb = ctx.Process(target=_rdb, args=(cfg, count * rows_each, ready, go, out))
        feed = ctx.Process(target=_send, args=(cfg.tickerplant.ingest, msgs, count, t0, go))
        rdb.start()
        feed.start()
        ready.wait(60)
        time.sleep(0.5)
        go.set()
        t1, got, nbytes = out.get(timeout=600)
        feed.join()
        rdb.join(10)
        return got / (t1 - t0.value), nbytes


def raw(msgs, count, rows_each) -> float:
    ctx = mp.get_context("fork")
    ingest, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    stop, ready, go, out, t0 = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Value("d", 0.0)
    fwd = ctx.Process(target=_raw_forward, args=(ingest, pub, stop))
    fwd.start()
    time.sleep(0.3)
    recv = ctx.Process(target=_raw_recv, args=(pub, count * rows_each, ready, out))
    recv.start()
    # the raw SUB waits for the first message to know it is subscribed: prime it
    prime = zmq.Context().socket(zmq.DEALER)
    prime.connect(ingest)
    while not ready.is_set():
        prime.send(b"\0" * 16)
        time.sleep(0.05)
    prime.close(0)
    feed = ctx.Process(target=_send, args=(ingest, msgs, count, t0, go))
    feed.start()
    time.sleep(0.3)
    go.set()
    t1, got, _ = out.get(timeout=600)
    stop.set()
    for p in (feed, recv, fwd):
        p.join(10)
        if p.is_alive():
            p.kill()
    return got / (t1 - t0.value)


# ---- the report ----------------------------------------------------------------------------------

def _peers(names: list[str], progress: bool) -> dict:
    """name -> an entered Peer, or the reason it is skipped."""
    from ops.bench import peers
    out = {}
    reasons = peers.available()
    for name in names:
        out[name] = reasons[name] or peers.Peer(name, progress=progress)
    return out


def public_api(batched: int, single: int, peer_names: list[str], api: str = "batches") -> dict:
    """Throughput through the public API beside the peers; prints as it goes. Returns
    {(rows_per_msg, who): rows/s}."""
    import contextlib
    bar = sys.stderr.isatty()
    figures: dict = {}
    ours = Ours(api=api, progress=bar)
    with contextlib.ExitStack() as stack:
        peers = {}
        for name, p in _peers(peer_names, bar).items():
            if isinstance(p, str):
                print(p, flush=True)
            else:
                peers[name] = stack.enter_context(p)
                print(f"{name}: {p.describe()}", flush=True)
        for rows, n in ((100, batched), (1, single)):
            runs = [(f"tickstack Feed -> TP -> Subscriber.{api}(), batch_rows 10k", lambda: ours.throughput(rows, n), "tickstack"),
                    (f"tickstack, batch_rows = {rows} (every message {rows} row{'s' if rows > 1 else ''})",
                     lambda: ours.throughput(rows, n, batch_rows=rows), "tickstack strict")]
            runs += [(f"{name}", (lambda p=p: p.throughput(rows, n)), name) for name, p in peers.items()]
            print(f"throughput, {rows}-row messages ({n:,} messages, {rows * n:,} rows):", flush=True)
            for what, run, key in runs:
                if not bar:
                    print(f"  running {what} ...", flush=True)
                v = figures[(rows, key)] = run()
                print(f"  {what:<68} {v:>12,.0f} rows/s", flush=True)
    return figures


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batched", type=int, default=50_000, help="100-row messages per public-API run")
    ap.add_argument("--single", type=int, default=100_000, help="single-row messages per public-API run")
    ap.add_argument("--api", choices=["batches", "updates"], default="batches",
                    help="the subscriber API the consumer iterates (default: batches)")
    ap.add_argument("--peer", action="append", choices=["redis", "nats"], help="peers to run (default: both)")
    ap.add_argument("--no-peers", action="store_true", help="skip the peer baselines")
    ap.add_argument("--rows", type=int, default=10_000, help="rows per raw batched message")
    ap.add_argument("--msgs", type=int, default=1_000, help="raw batched messages")
    ap.add_argument("--raw-single", type=int, default=200_000, help="raw single-row messages")
    ap.add_argument("--skip-raw", action="store_true", help="skip the raw-socket figures")
    a = ap.parse_args(argv)
    try:
        _main(a)
    except KeyboardInterrupt:
        sys.exit("interrupted: bench processes and servers stopped")


def _main(a) -> None:
    names = [] if a.no_peers else (a.peer or ["redis", "nats"])
    figs = public_api(a.batched, a.single, names, a.api)
    print("summary (public API, same run):", flush=True)
    for rows in (100, 1):
        ours = figs[(rows, "tickstack")]
        for name in names:
            base = figs.get((rows, name))
            if base:
                report(f"{rows}-row messages vs {name}", ours, base, "rows/s",
                       ">= 1.0x Redis" if name == "redis" else "")
    if a.skip_raw:
        return
    print(f"raw sockets: batched {a.msgs} messages x {a.rows} rows; single-row {a.raw_single} messages", flush=True)
    big = messages(a.rows)
    base = raw(big, a.msgs, a.rows)
    ours_b, nbytes = ours_raw(big, a.msgs, a.rows, "batched")
    report("batched ingest raw DEALER->TP(logged)->RDB", ours_b, base, "rows/s", ">= 10M rows/s and >= 0.5x raw pyzmq")
    raw_bytes = a.msgs * a.rows * (8 + 4 + 8 + 8)
    print(f"{'RDB memory / raw column bytes':<44} {nbytes / raw_bytes:.2f}x  target <= 1.3x", flush=True)
    one = messages(1, 256)
    base1 = raw(one, a.raw_single, 1)
    ours1, _ = ours_raw(one, a.raw_single, 1, "immediate")
    report("single-row raw DEALER->TP->RDB, immediate", ours1, base1, "msg/s")


if __name__ == "__main__":
    main()
