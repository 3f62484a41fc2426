"""tickstack bench latency: feed -> TP (validated, logged, published) -> subscriber latency of
single-row messages at a fixed rate, p50/p99/p999, beside raw pyzmq over the same two hops
(DEALER -> ROUTER -> PUB -> SUB, no validation, log or decode).

The feed stamps each row's `time` with the wall clock when it sends; the receiver subtracts it
from its own clock on arrival (same machine, same clock). The feed paces by spinning on the
clock: at 10k msg/s a sleep would be coarser than the thing measured.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import struct
import time

import numpy as np
import zmq

from ops.bench.common import free_port, tickerplant
from ops.bench.ingest import _raw_forward
from schemas.codec import HEADER, encode
from schemas.registry import load_registry


def _feed(endpoint: str, rate: float, count: int, go) -> None:
    schema = load_registry()["trade"]
    s = zmq.Context().socket(zmq.DEALER)
    s.connect(endpoint)
    template = bytearray(encode(schema, {"time": [0], "sym": ["S001"], "price": [1.0], "size": [1]}))
    at = HEADER.size + 8 + 8 * 4  # header, padded name "trade", 4 column lengths: the time column
    go.wait()
    period = 1.0 / rate
    t = time.perf_counter()
    for _ in range(count):
        while (wait := t - time.perf_counter()) > 0:
            if wait > 0.0002:  # sleep when far off: a spinning feed would steal a core from the TP
                time.sleep(wait - 0.0001)
        struct.pack_into("<q", template, at, time.time_ns())
        s.send(bytes(template))
        t += period
    time.sleep(0.5)
    s.close(0)


def _ours(cfg, count: int, ready, out) -> None:
    from tickerplant.subscriber import Subscriber, Update
    lat = np.empty(count, dtype=np.int64)
    n = 0
    sub = Subscriber(cfg.tickerplant, ["trade"]).start()
    ready.set()
    for ev in sub:
        if isinstance(ev, Update):
            now = time.time_ns()
            cols, k = ev.columns()  # numpy views, as the RDB takes them
            lat[n: n + k] = now - cols[0]
            n += k
            if n >= count:
                break
    out.put(lat[:n])


def _raw(pub: str, count: int, ready, out) -> None:
    s = zmq.Context().socket(zmq.SUB)
    s.setsockopt(zmq.SUBSCRIBE, b"trade")
    s.connect(pub)
    at = HEADER.size + 8 + 8 * 4
    lat = np.empty(count, dtype=np.int64)
    time.sleep(0.5)
    ready.set()
    for i in range(count):
        f = s.recv_multipart()
        lat[i] = time.time_ns() - struct.unpack_from("<q", f[1], at)[0]
    out.put(lat)


def _run(receiver, recv_args, ingest, rate, count) -> np.ndarray:
    ctx = mp.get_context("fork")
    ready, go, out = ctx.Event(), ctx.Event(), ctx.Queue()
    r = ctx.Process(target=receiver, args=(*recv_args, count, ready, out))
    r.start()
    ready.wait(60)
    time.sleep(0.5)
    f = ctx.Process(target=_feed, args=(ingest, rate, count, go))
    f.start()
    go.set()
    lat = out.get(timeout=120 + count / rate)
    f.join(10)
    r.join(10)
    return lat


def _pct(lat: np.ndarray) -> tuple[float, float, float]:
    """Percentiles in us, the first 5% of messages left out as warm-up (connections, first-call
    costs) in both runs alike."""
    return tuple(np.percentile(lat[len(lat) // 20:], [50, 99, 99.9]) / 1000)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench latency", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000, help="messages per second")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--loop-msgs", type=int, default=64, help="TP messages per loop (tickerplant.loop_msgs)")
    a = ap.parse_args(argv)
    count = int(a.rate * a.seconds)
    print(f"{count} single-row messages at {a.rate:,.0f} msg/s", flush=True)
    ctx = mp.get_context("fork")
    ingest, pub = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    stop = ctx.Event()
    fwd = ctx.Process(target=_raw_forward, args=(ingest, pub, stop))
    fwd.start()
    base = _pct(_run(_raw, (pub,), ingest, a.rate, count))
    stop.set()
    fwd.join(5)
    with tickerplant(mode="immediate", loop_msgs=a.loop_msgs) as cfg:
        ours = _pct(_run(_ours, (cfg,), cfg.tickerplant.ingest, a.rate, count))
    for name, o, b, target in zip(["p50", "p99", "p999"], ours, base, ["<= 60 us", "<= 250 us", ""]):
        print(f"latency feed->subscriber {name:<5} tickstack {o:10.1f} us   raw pyzmq {b:10.1f} us   "
              f"ratio {o / b:5.2f}{'  target ' + target if target else ''}", flush=True)


if __name__ == "__main__":
    main()
