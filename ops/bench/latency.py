"""tickstack bench latency: feed -> subscriber latency of single-row messages at fixed rates
(2k and 10k msg/s by default), p50/p99/p999, through the public API (Feed.publish -> TP
validated, logged, published -> Subscriber.batches()), beside Redis Streams and NATS JetStream
carrying the same rows at the same rates in the same run, and beside raw pyzmq over the same
two hops (DEALER -> ROUTER -> PUB -> SUB, no validation, log or decode).

Every run paces its publisher with `peers.Pacer` (sleeps to each slot, never spins; messages
whose slot passed go together, so the rate holds) and stamps CLOCK_MONOTONIC into the row's
`time` just before it publishes; the consumer subtracts it from the same clock when its code has
the rows in hand. The first 5% of messages are left out as warm-up. Each run checks every row
arrived exactly once. A peer that is not installed is skipped with its install command.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import struct
import sys
import time

import numpy as np
import zmq

from ops.bench.common import Ours, free_port
from ops.bench.ingest import _peers, _raw_forward
from ops.bench.peers import Pacer, _column_offset, _single_row_template, percentiles_us


def _raw_feed(endpoint: str, rate: float, count: int, go) -> None:
    s = zmq.Context().socket(zmq.DEALER)
    s.connect(endpoint)
    buf, at_time, at_size = _single_row_template()
    go.wait()
    pacer = Pacer(rate, count)
    number = 0
    while pacer.left:
        for _ in range(pacer.due()):
            number += 1
            struct.pack_into("<q", buf, at_size, number)
            struct.pack_into("<q", buf, at_time, time.monotonic_ns())
            s.send(bytes(buf))
    time.sleep(0.5)
    s.close(0)


def _raw_recv(pub: str, count: int, ready, out) -> None:
    s = zmq.Context().socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"trade")
    s.connect(pub)
    at = _column_offset(_single_row_template()[0], 0)
    lat = np.empty(count, dtype=np.int64)
    time.sleep(0.5)
    ready.set()
    for i in range(count):
        f = s.recv_multipart()
        lat[i] = time.monotonic_ns() - struct.unpack_from("<q", f[1], at)[0]
    out.put(lat)


def raw(rate: float, count: int) -> dict[str, float]:
    """Raw pyzmq over the same hops, paced and clocked like every other run."""
    ctx = mp.get_context("fork")
    ingest, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    stop, ready, go, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
    fwd = ctx.Process(target=_raw_forward, args=(ingest, pub, stop))
    fwd.start()
    r = ctx.Process(target=_raw_recv, args=(pub, count, ready, out))
    r.start()
    try:
        ready.wait(60)
        time.sleep(0.5)
        f = ctx.Process(target=_raw_feed, args=(ingest, rate, count, go))
        f.start()
        go.set()
        lat = out.get(timeout=120 + count / rate)
        f.join(10)
    finally:
        stop.set()
        for p in (r, fwd):
            p.join(5)
            if p.is_alive():
                p.kill()
    return dict(zip(("p50", "p99", "p999"), percentiles_us(lat)), rate=rate)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, action="append", help="msg/s (default: 2000 and 10000)")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    ap.add_argument("--api", choices=["batches", "updates"], default="batches",
                    help="the subscriber API the consumer iterates (default: batches)")
    ap.add_argument("--peer", action="append", choices=["redis", "nats"], help="peers to run (default: both)")
    ap.add_argument("--no-peers", action="store_true", help="skip the peer baselines")
    ap.add_argument("--skip-raw", action="store_true", help="skip raw pyzmq")
    a = ap.parse_args(argv)
    try:
        _main(a)
    except KeyboardInterrupt:
        sys.exit("interrupted: bench processes and servers stopped")


def _main(a) -> None:
    rates = a.rate or [2_000.0, 10_000.0]
    names = [] if a.no_peers else (a.peer or ["redis", "nats"])
    bar = sys.stderr.isatty()
    ours = Ours(api=a.api, progress=bar)
    results: dict = {}
    with contextlib.ExitStack() as stack:
        peers = {}
        for name, p in _peers(names, bar).items():
            if isinstance(p, str):
                print(p, flush=True)
            else:
                peers[name] = stack.enter_context(p)
                print(f"{name}: {p.describe()}", flush=True)
        for rate in rates:
            n = int(rate * a.seconds)
            print(f"latency, single rows at {rate:,.0f} msg/s ({n:,} messages):", flush=True)
            runs = [(f"tickstack Feed -> TP -> Subscriber.{a.api}()", lambda: ours.latency(rate, n), "tickstack")]
            runs += [(name, (lambda p=p: p.latency(rate, n)), name) for name, p in peers.items()]
            if not a.skip_raw:
                runs.append(("raw pyzmq, same hops", lambda: raw(rate, n), "raw"))
            for what, run, key in runs:
                if not bar:
                    print(f"  running {what} ...", flush=True)
                r = results[(rate, key)] = run()
                print(f"  {what:<44} p50 {r['p50']:9.1f} us  p99 {r['p99']:9.1f} us  p999 {r['p999']:9.1f} us"
                      f"  (sent at {r['rate']:,.0f} msg/s)", flush=True)
    print("summary (same run):", flush=True)
    for rate in rates:
        o = results[(rate, "tickstack")]
        for name in [*peers, *([] if a.skip_raw else ["raw"])]:
            b = results[(rate, name)]
            targets = {"p50": "<= 2x", "p99": "<= 5x"} if name == "redis" else {}
            parts = [f"{q} {o[q] / b[q]:5.2f}x" + (f" (target {targets[q]})" if q in targets else "")
                     for q in ("p50", "p99", "p999")]
            print(f"  {rate:>7,.0f} msg/s  tickstack / {name:<6} " + "   ".join(parts), flush=True)


if __name__ == "__main__":
    main()
