"""A stalled subscriber costs the TP a bounded number of BYTES (not messages), and still gets
the whole day exactly once from the log when it reads again.

The bound (README, "How it behaves"): per subscriber connection, the TP holds at most
max(pub_queue_bytes, 2 M) + M bytes, M being the largest published message counting 128 bytes
per frame (the queue, and the one message its I/O thread is writing); kernel socket buffers are
not TP memory."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from helpers import AckedFeed, rss_bytes, start_tp, trades
from schemas.codec import encode
from tickerplant.subscriber import Subscriber, Update

QUEUE = 8 << 20      # pub_queue_bytes for this test
ROWS = 7000          # rows per message: ~196 KB
MSGS = 1000          # ~196 MB in all: 20 times what two bounded queues may hold


@pytest.mark.parametrize("mode", ["immediate", "batched"])
@pytest.mark.process
def test_a_stalled_subscriber_costs_the_tp_bytes_within_the_bound_and_catches_up(make_stack, mode):
    cfg, procs = make_stack(tickerplant={"pub_queue_bytes": QUEUE, "mode": mode, "batch_ms": 20})
    start_tp(cfg, procs)
    tp = procs.running["tp"]
    stalled = zmq.Context.instance().socket(zmq.SUB)  # connects, subscribes, never reads
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.setsockopt(zmq.LINGER, 0)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(cfg.tickerplant.pub)
    # a real subscriber that handshakes and then reads nothing until the flood is over; a small
    # receive queue on its side keeps this test process small (and its TP queue full)
    paused = Subscriber(cfg.tickerplant.model_copy(update={"pub_hwm": 100}), ["trade"]).start()
    feed = AckedFeed(cfg, feed=5, window=4)
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(_read(paused, ROWS * MSGS)), daemon=True)
    try:
        time.sleep(0.3)  # both subscribers connected and subscribed
        base = rss_bytes(tp.pid)
        payload = len(encode(cfg.registry()["trade"], next(trades(1, ROWS)), feed=5, fseq=1))
        # the largest published message, counting 128 bytes per frame; batched mode groups
        # payloads into messages of up to 1 MiB
        message = payload + 2 * 128 if mode == "immediate" else (1 << 20) + 128
        peak = base
        for cols in trades(MSGS, ROWS):
            feed.send(cols)
            if feed.fseq % 10 == 0:
                peak = max(peak, rss_bytes(tp.pid))
        n = feed.drain()
        peak = max(peak, rss_bytes(tp.pid))
        stalled_subscribers = 2
        bound = stalled_subscribers * (max(QUEUE, 2 * message) + message)
        slack = feed.window * payload + (16 << 20)  # the feed's unacked window; allocator and Python
        assert MSGS * payload > 4 * (bound + slack), "the flood must dwarf the bound to prove it"
        grew = peak - base
        assert grew <= bound + slack, (
            f"TP RSS grew by {grew / 2**20:.1f} MiB with a stalled subscriber; the bound is "
            f"{bound / 2**20:.1f} MiB (+{slack / 2**20:.1f} MiB slack)")
        assert stalled.poll(2000), "the stalled subscriber was not connected during the flood"
        reader.start()
        reader.join(60)
        sizes = np.sort(np.concatenate([u.batch.column("size").to_numpy() for u in got]))
        assert len(sizes) == n and (sizes == np.arange(n)).all(), "rows missing or duplicated"
        assert paused.counters["from_log"] > 0  # what the TP dropped came from the log
    finally:
        paused.close()
        if reader.is_alive():
            reader.join(5)
        feed.close()
        stalled.close(0)


def _read(sub: Subscriber, rows: int) -> list:
    out, seen = [], 0
    for ev in sub:
        if isinstance(ev, Update):
            out.append(ev)
            seen += ev.batch.num_rows
            if seen >= rows:
                break
    return out
