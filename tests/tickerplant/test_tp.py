"""The tickerplant as a real process on loopback, driven by real feeds and subscribers."""
from __future__ import annotations

import signal
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from helpers import Flood, send, start_tp, trades, wait_for
from schemas.codec import encode
from tickerplant.protocol import control as request
from tickerplant.log import check, log_path
from tickerplant.subscriber import EndOfDay, Subscriber, Update


class Collector:
    """A Subscriber running in a thread, keeping every event."""

    def __init__(self, cfg, tables=("trade",), syms=None, slow: float = 0.0):
        self.sub = Subscriber(cfg.tickerplant, list(tables), syms=syms)
        self.events: list = []
        self.slow = slow
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.sub:
                if self.slow and isinstance(ev, Update):
                    time.sleep(self.slow)
                self.events.append(ev)
        except BaseException as e:  # surfaced by the test
            self.error = e

    @property
    def updates(self):
        return [e for e in self.events if isinstance(e, Update)]

    def sizes(self) -> np.ndarray:
        u = self.updates
        return np.concatenate([e.batch.column("size").to_numpy() for e in u]) if u else np.array([], int)

    def rows(self) -> int:
        assert self.error is None, self.error
        return sum(e.batch.num_rows for e in self.updates)

    def stop(self):
        self.sub.close()
        self.thread.join(5)




def assert_exact(c: Collector, n_rows: int):
    sizes = np.sort(c.sizes())
    assert len(sizes) == n_rows, f"{len(sizes)} rows, expected {n_rows}"
    assert (sizes == np.arange(n_rows)).all(), "rows missing or duplicated"
    seqs = [(e.date, e.seq) for e in c.updates]
    assert len(seqs) == len(set(seqs))


@pytest.mark.parametrize("mode", ["immediate", "batched"])
def test_every_tick_reaches_a_subscriber_once(make_stack, mode):
    cfg, procs = make_stack(tickerplant={"mode": mode, "batch_ms": 20})
    start_tp(cfg, procs)
    c = Collector(cfg)
    try:
        n = send(cfg, "trade", trades(500, 20))
        wait_for(lambda: c.rows() >= n, what="all rows at the subscriber")
        time.sleep(0.3)
        assert_exact(c, n)
        assert request(cfg.tickerplant.ctl, "status")["counters"]["rows"] == n
    finally:
        c.stop()


def test_mid_stream_join_at_full_rate_gets_the_whole_day(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    flood = Flood(cfg, 10)
    c = None
    try:
        wait_for(lambda: request(cfg.tickerplant.ctl, "status")["seq"] > 300, what="some ingest")
        c = Collector(cfg)  # joins while the feed runs flat out
        wait_for(lambda: c.sub.counters["live"] > 100, what="the joiner going live")
        n = flood.stop()
        wait_for(lambda: c.rows() >= n, what="the full day at the late joiner")
        time.sleep(0.3)
        assert_exact(c, n)
        assert c.sub.counters["from_log"] > 0
    finally:
        flood.running.clear()
        if c:
            c.stop()


def test_sym_filtered_subscriber_sees_only_its_syms(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    c = Collector(cfg, syms=["IBM"])
    try:
        n = send(cfg, "trade", trades(300, 9))
        expect = n // 3
        wait_for(lambda: c.rows() >= expect, what="IBM rows")
        time.sleep(0.3)
        got = {s for e in c.updates for s in e.batch.column("sym").to_pylist()}
        assert got == {"IBM"} and c.rows() == expect
    finally:
        c.stop()


def test_bad_input_is_rejected_and_good_feeds_keep_flowing(make_stack):
    cfg, procs = make_stack(tickerplant={"max_message_bytes": 65536})
    start_tp(cfg, procs)
    reg = cfg.registry()
    good = encode(reg["trade"], next(trades(1, 5)), feed=9, fseq=1)
    unknown = bytearray(good)
    unknown[24:29] = b"xrade"
    oversized = encode(reg["trade"], next(trades(1, 3000)), feed=9, fseq=2)
    bad = [b"garbage bytes", bytes(unknown), good[:-8], oversized, good[:30] + b"\xff" * (len(good) - 30)]
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.connect(cfg.tickerplant.ingest)
    c = Collector(cfg)
    try:
        errors = []
        sender = threading.Thread(target=send, args=(cfg, "trade", trades(400, 10)), kwargs={"feed": 1})
        sender.start()
        for b in bad:
            d.send(b)
            assert d.poll(5000), "no answer to a bad message"
            frames = d.recv_multipart()
            assert frames[0] == b"err"
            errors.append(frames[2].decode())
        d.send_multipart([b"two", b"frames"])
        assert d.poll(5000) and d.recv_multipart()[0] == b"err"
        sender.join()
        wait_for(lambda: c.rows() >= 4000, what="the good feed's rows")
        assert_exact(c, 4000)
        st = request(cfg.tickerplant.ctl, "status")
        assert st["counters"]["rejected"] == 6
        assert any("unknown table" in e for e in errors) and any("max_message_bytes" in e for e in errors)
        assert check(st["log"]).records == 400  # nothing bad was logged
    finally:
        c.stop()
        d.close(0)


def test_kill9_tp_restart_continues_the_log_and_loses_nothing(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    c = Collector(cfg)
    try:
        send(cfg, "trade", trades(200, 10), feed=3)
        path = request(cfg.tickerplant.ctl, "status")["log"]
        procs.kill("tp", signal.SIGKILL)
        with open(path, "ab") as f:  # the TP died mid-write: a torn last record
            f.write(struct.pack("<IIQ", 400, 0, 201) + b"TSB1" + b"\0" * 50)
        start_tp(cfg, procs)
        st = request(cfg.tickerplant.ctl, "status")
        assert st["log"] == path and st["seq"] == 200 and st["feeds"]["3"] == 200
        # the feed resends its last 20 (unacked in its view) then goes on: duplicates dropped
        send(cfg, "trade", trades(120, 10, start=1800), feed=3, first_fseq=181)
        wait_for(lambda: c.rows() >= 3000, what="rows after the restart")
        time.sleep(0.5)
        assert_exact(c, 3000)
        res = check(path)
        assert res.ok and res.records == 300
        assert request(cfg.tickerplant.ctl, "status")["counters"]["duplicates"] == 20
    finally:
        c.stop()


def test_a_stalled_subscriber_does_not_slow_the_tp_and_catches_up(make_stack):
    cfg, procs = make_stack(tickerplant={"pub_hwm": 100})
    start_tp(cfg, procs)
    stalled = zmq.Context.instance().socket(zmq.SUB)
    stalled.setsockopt(zmq.RCVHWM, 100)
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.connect(cfg.tickerplant.pub)  # never reads
    slow = Collector(cfg, slow=0.002)
    fast = Collector(cfg)
    try:
        time.sleep(0.3)
        # ~28 MB: far more than the HWMs and the kernel's socket buffers can hold, so the slow
        # subscriber must lose messages on the wire and catch up from the log
        n = send(cfg, "trade", trades(1000, 1000))  # returns once the TP acked it all
        wait_for(lambda: fast.rows() >= n, what="the fast subscriber")
        assert_exact(fast, n)
        wait_for(lambda: slow.rows() >= n, timeout=60, what="the slow subscriber catching up")
        time.sleep(0.3)
        assert_exact(slow, n)
        assert slow.sub.counters["gaps"] > 0 and slow.sub.counters["from_log"] > 0
    finally:
        slow.stop()
        fast.stop()
        stalled.close(0)


def test_end_of_day_while_ingesting_puts_each_message_in_one_day(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    c = Collector(cfg)
    flood = Flood(cfg, 5)
    try:
        wait_for(lambda: request(cfg.tickerplant.ctl, "status")["seq"] > 500, what="ingest")
        ended = request(cfg.tickerplant.ctl, "eod")  # while the feed runs flat out
        wait_for(lambda: request(cfg.tickerplant.ctl, "status")["seq"] > 500, what="ingest on the new day")
        n = flood.stop()
        wait_for(lambda: c.rows() >= n, what="all rows across the roll")
        time.sleep(0.3)
        assert_exact(c, n)
        ends = [i for i, e in enumerate(c.events) if isinstance(e, EndOfDay)]
        assert len(ends) == 1 and str(c.events[ends[0]].date) == ended["ended"]
        before, after = c.events[: ends[0]], c.events[ends[0] + 1:]
        assert {str(e.date) for e in before} == {ended["ended"]}
        assert {str(e.date) for e in after} == {ended["date"]}
        old = check(log_path(cfg.tplog_dir, c.events[ends[0]].date))
        new = check(log_path(cfg.tplog_dir, after[0].date))
        assert old.ended and (old.records - 1) * 5 + new.records * 5 == n  # - the end-of-day marker
    finally:
        flood.running.clear()
        c.stop()
