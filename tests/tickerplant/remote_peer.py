"""The far ends of test_remote.py, run as processes inside a network namespace:

    python remote_peer.py feed CONFIG N_MSGS ROWS START    # trades to the TP as feed 7, all acked
    python remote_peer.py sub CONFIG OUT ROWS                         # a subscriber, see below

The subscriber handshakes, writes OUT.ready, waits for OUT.go (meanwhile the TP's publishes
pile up against a one-message queue and are dropped: gaps), then reads until it has ROWS rows
and writes OUT as JSON: its counters, its log mode, each message's seq and the rows' sizes.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/helpers.py

from helpers import trades  # noqa: E402
from schemas.settings import load  # noqa: E402
from tickerplant.config import CurveSettings, TickerplantSettings  # noqa: E402
from tickerplant.subscriber import Batch, Subscriber  # noqa: E402
from schemas.settings import StackSettings  # noqa: E402


class PeerConfig(StackSettings):
    tickerplant: TickerplantSettings = TickerplantSettings()
    curve: CurveSettings = CurveSettings()


def feed(config: str, n_msgs: int, rows: int, start: int) -> None:
    from feedhandlers.base import Feed
    cfg = load(PeerConfig, config, only_own=True)
    f = Feed(cfg.tickerplant, 7, cfg.registry(), curve=cfg.curve)
    for cols in trades(n_msgs, rows, start=start):
        f.publish("trade", cols)
    ok = f.close(timeout=60)
    print(json.dumps({"acked": ok}))
    sys.exit(0 if ok else 1)


def sub(config: str, out: str, rows: int) -> None:
    cfg = load(PeerConfig, config, only_own=True)
    s = Subscriber(cfg.tickerplant, ["trade"], registry=cfg.registry(), curve=cfg.curve,
                   connect_timeout=30).start()
    Path(out + ".ready").write_text(str(os.getpid()))
    end = time.monotonic() + 60
    while not os.path.exists(out + ".go") and time.monotonic() < end:
        time.sleep(0.05)
    seqs, sizes, got = [], [], 0
    for b in s.batches():
        if isinstance(b, Batch):
            seqs += b.seqs
            sizes.append(b.columns()[0][3])
            got += len(b)
            if got >= rows:
                break
    s.close()
    Path(out).write_text(json.dumps({
        "counters": s.counters, "mode": "network" if s.remote is not None else "file",
        "seqs": seqs, "sizes": np.concatenate(sizes).tolist() if sizes else []}))


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    if what == "feed":
        feed(args[0], *map(int, args[1:]))
    else:
        sub(args[0], args[1], int(args[2]))
