"""tickstack bench calls: Python function calls per message at each hop (feed producer, feed
I/O thread, TP loop, subscriber), counted with cProfile (every Python function and every
builtin/C function called from Python code), and CPU microseconds per message per hop.

All four run in this one process, one thread each (cProfile counts per thread), against real
sockets on loopback and a real log in a temp dir: the counts are exact, the times only
indicative (the threads share the GIL, and cProfile slows each call). Scenarios:
  paced   single rows at --rate msg/s, each publish going alone (the latency path)
  strict  --rows-row publishes with batch_rows = --rows (every message exactly that size)
  natural single-row publishes flat out with batch_ms=0 (natural batching at every hop)
  raw     pre-encoded --rows-row messages from a bare DEALER, flat out (the TP's and the
          subscriber's marginal cost per message when they take many per loop; no Feed)
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import zmq

from ops.bench.common import free_port


class _Counted:
    """A cProfile around a callable run in its own thread; calls and CPU time."""

    def __init__(self):
        self.prof = cProfile.Profile()
        self.cpu = 0.0

    def run(self, fn, *args):
        t = time.thread_time()
        self.prof.enable()
        try:
            return fn(*args)
        finally:
            self.prof.disable()
            self.cpu += time.thread_time() - t

    def calls(self) -> int:
        return sum(v[1] for v in pstats.Stats(self.prof).stats.values())


def measure(scenario: str, n: int, rows: int, rate: float) -> dict:
    from feedhandlers.base import Feed
    from schemas.registry import load_registry
    from tickerplant.config import EodSettings, TickerplantSettings
    from tickerplant.subscriber import Batch, Subscriber
    from tickerplant.tp import Tickerplant
    reg = load_registry()
    tps = TickerplantSettings(**{k: f"tcp://127.0.0.1:{free_port()}" for k in ("ingest", "pub", "ctl")})
    ctx = zmq.Context()
    counted = {k: _Counted() for k in ("feed publish", "feed I/O thread", "TP loop", "subscriber")}
    with tempfile.TemporaryDirectory(prefix="tscalls") as d:
        tp = Tickerplant(tps, EodSettings(time="00:00", tz="UTC"), Path(d), reg, ctx)
        taken = [0]
        real_take = tp.take

        def take():
            got = counted["TP loop"].run(real_take)
            taken[0] += got
            return got
        tp.take = take
        tp_thread = threading.Thread(target=tp.run, daemon=True)
        tp_thread.start()

        real_run = Feed._run
        Feed._run = lambda self: counted["feed I/O thread"].run(real_run, self)
        try:
            opts = {"batch_ms": 0, "buffer_msgs": 10**7}
            if scenario in ("strict", "raw"):
                opts["batch_rows"] = rows
            feed = Feed(tps, 99, registry=reg, context=ctx, **opts)
        finally:
            Feed._run = real_run
        sub = Subscriber(tps, ["trade"], registry=reg, ctx=ctx).start()
        per = rows if scenario in ("strict", "raw") else 1
        total = n * per
        got = {"rows": 0, "msgs": 0}

        def consume():
            for b in sub.batches():
                if isinstance(b, Batch):
                    cols, k = b.columns()
                    got["rows"] += k
                    got["msgs"] += len(b.seqs)
                    if got["rows"] >= total:
                        return

        sub_thread = threading.Thread(target=lambda: counted["subscriber"].run(consume), daemon=True)
        sub_thread.start()
        i = np.arange(per)
        batch = {"time": 1_700_000_000_000_000_000 + i, "sym": np.array(["S001", "S002"])[i % 2],
                 "price": np.ones(per), "size": i}

        def produce():
            for k in range(n):
                if scenario == "paced":
                    time.sleep(1 / rate)
                feed.publish("trade", batch)
            feed.flush()
        def blast():
            from schemas.codec import encode
            d = ctx.socket(zmq.DEALER)
            d.connect(tps.ingest)
            msg = encode(reg["trade"], batch)
            for _ in range(n):
                d.send(msg)
            d.close(linger=10_000)
        counted["feed publish"].run(blast if scenario == "raw" else produce)
        sub_thread.join(120)
        feed.close()
        tp.stop()
        tp_thread.join(10)
        sent = feed.stats().sent
    if scenario == "raw":
        sent = n
    msgs = {"feed publish": n, "feed I/O thread": sent, "TP loop": taken[0], "subscriber": got["msgs"]}
    return {k: (c.calls(), c.cpu, msgs[k]) for k, c in counted.items()} | {"_rows": got["rows"], "_sent": sent}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench calls", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=["paced", "strict", "natural", "raw"])
    ap.add_argument("--n", type=int, default=5000, help="publishes per scenario")
    ap.add_argument("--rows", type=int, default=100, help="rows per publish in the strict scenario")
    ap.add_argument("--rate", type=float, default=2000, help="publishes/s in the paced scenario")
    a = ap.parse_args(argv)
    for sc in a.scenario or ["paced", "strict", "natural", "raw"]:
        r = measure(sc, a.n, a.rows, a.rate)
        print(f"{sc}: {a.n:,} publishes, {r['_sent']:,} messages sent, {r['_rows']:,} rows received", flush=True)
        for hop, (calls, cpu, msgs) in ((k, v) for k, v in r.items() if not k.startswith("_")):
            unit = "publish" if hop == "feed publish" else "message"
            print(f"  {hop:<16} {calls / max(msgs, 1):8.1f} calls/{unit:<8} {cpu / max(msgs, 1) * 1e6:8.1f} us/{unit}"
                  f"   ({msgs:,} {unit}s)", flush=True)


if __name__ == "__main__":
    main()
