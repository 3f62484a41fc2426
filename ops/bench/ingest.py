"""tickstack bench ingest: rows/s from a feed through the TP (validated, logged, published) into
an RDB store, beside raw pyzmq moving the same bytes over the same hops (DEALER -> ROUTER ->
PUB -> SUB, no validation, no log, no decode). Two runs: batched messages, and single-row
messages with the TP in zero-latency (immediate) mode.

Three processes on two cores, as in production: feed, TP, RDB. Wall time is taken from the
feed's first send to the RDB holding the last row (CLOCK_MONOTONIC is shared by processes).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import struct
import time

import numpy as np
import zmq

from ops.bench.common import free_port, report, tickerplant
from schemas.codec import encode
from schemas.registry import load_registry


def messages(rows: int, distinct: int = 16) -> list[bytes]:
    reg = load_registry()
    out = []
    rng = np.random.default_rng(1)
    syms = np.array([f"S{i:03d}" for i in range(100)])
    for k in range(distinct):
        out.append(encode(reg["trade"], {
            "time": 1_700_000_000_000_000_000 + np.arange(rows) + k * rows,
            "sym": syms[rng.integers(0, 100, rows)], "price": rng.random(rows) * 100,
            "size": rng.integers(1, 1000, rows)}))
    return out


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
    from rdb.store import Store
    from tickerplant.subscriber import Subscriber, Update
    reg = cfg.registry()
    store = Store(reg, ["trade"], chunk_rows=1 << 20)
    sub = Subscriber(cfg.tickerplant, ["trade"], registry=reg).start()
    got = 0
    ready.set()
    for ev in sub:
        if isinstance(ev, Update):
            cols, n = ev.columns()
            store.append_columns("trade", cols, n)
            got += n
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


def ours(msgs, count, rows_each, mode) -> tuple[float, int]:
    ctx = mp.get_context("fork")
    with tickerplant(mode=mode, batch_ms=5, pub_hwm=1_000_000) as cfg:
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


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000, help="rows per batched message")
    ap.add_argument("--msgs", type=int, default=1_000, help="batched messages")
    ap.add_argument("--single", type=int, default=200_000, help="single-row messages")
    a = ap.parse_args(argv)
    print(f"batched: {a.msgs} messages x {a.rows} rows; single-row: {a.single} messages", flush=True)
    big = messages(a.rows)
    base = raw(big, a.msgs, a.rows)
    ours_b, nbytes = ours(big, a.msgs, a.rows, "batched")
    report("batched ingest feed->TP(logged)->RDB", ours_b, base, "rows/s", ">= 10M rows/s")
    raw_bytes = a.msgs * a.rows * (8 + 4 + 8 + 8)
    print(f"{'RDB memory / raw column bytes':<44} {nbytes / raw_bytes:.2f}x  target <= 1.3x", flush=True)
    one = messages(1, 256)
    base1 = raw(one, a.single, 1)
    ours1, _ = ours(one, a.single, 1, "immediate")
    report("single-row ingest, zero-latency mode", ours1, base1, "msg/s", ">= 300k msg/s")


if __name__ == "__main__":
    main()
