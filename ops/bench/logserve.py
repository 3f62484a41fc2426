"""tickstack bench logserve: how fast a subscriber on another host reads the TP's log over the
network (tickerplant/logserve.py: LogServer in this process, LogClient over loopback TCP, one
chunk per request), plain and with CURVE, beside reading the same records from the file as a
subscriber on the TP's host does (LogReader, read in chunks, checksums verified), same run.

The log holds `--messages` trade messages of `--rows` rows. Each variant runs `--repeat` times
after one untimed warm-up; the best is printed (the machine is shared).
"""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from ops.bench.common import free_port, report
from schemas.codec import encode
from schemas.registry import load_registry
from tickerplant.config import CurveSettings
from tickerplant.curve import make_keys
from tickerplant.log import LogReader, LogWriter, log_path
from tickerplant.logserve import LogClient, LogServer

DAY = dt.date(2026, 1, 5)


def _write(d: Path, messages: int, rows: int) -> tuple[Path, int]:
    reg = load_registry()
    i = np.arange(rows)
    cols = {"time": 1_767_600_000_000_000_000 + i, "sym": np.array(["AAPL", "MSFT", "IBM"])[i % 3],
            "price": 100.0 + i / 100, "size": i}
    payload = encode(reg["trade"], cols)
    w = LogWriter(log_path(d, DAY), DAY)
    for _ in range(0, messages, 1000):
        w.append([payload] * min(1000, messages - w.seq))
    w.close()
    return log_path(d, DAY), len(payload)


def _file(path: Path) -> int:
    n = 0
    for b in LogReader(path).blocks(mapped=False):
        n += len(b)
    return n


def _network(client: LogClient) -> int:
    n, first = 0, 1
    while True:
        c = client.fetch(DAY, first, None, ["trade"])
        n += len(c.seqs)
        first = c.head["next"]
        if c.head["done"]:
            return n


def _best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench logserve")
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        path, size = _write(d, a.messages, a.rows)
        mb = path.stat().st_size / 1e6
        print(f"log: {a.messages:,} messages of {a.rows} rows ({size} bytes each), {mb:,.0f} MB")
        t_file = _best(lambda: _file(path), a.repeat)
        keys = make_keys(d / "keys")
        for name, curve in (("plain", None), ("CURVE", CurveSettings(enabled=True, **keys))):
            ctx = zmq.Context()
            server = LogServer(f"tcp://127.0.0.1:{free_port()}", d, ["trade"], curve=curve, ctx=ctx).start()
            client = LogClient(server.endpoint, curve, timeout=60, ctx=ctx)
            try:
                assert _network(client) == a.messages
                t_net = _best(lambda: _network(client), a.repeat)
            finally:
                client.close()
                server.stop()
            report(f"log over the network ({name}), msgs/s", a.messages / t_net, a.messages / t_file,
                   "msg/s")
            report(f"log over the network ({name}), MB/s", mb / t_net, mb / t_file, "MB/s")
