"""The Subscriber's state machine as a unit, in process, over real ZeroMQ sockets: late join,
gap fill, a gap at the tail revealed by a heartbeat, a missed end of day, a TP restart, sym
filtering, duplicates. Each case must end with every message delivered exactly once, in order.

The other side is `ScriptedTp`: a tickerplant driven step by step by the test. It writes a real
log (LogWriter) and speaks the real protocol (tickerplant/protocol.py) on real PUB and REP
sockets; only the order of events is the test's, so a gap or a restart happens exactly where the
test says. The TP process itself is covered by test_tp.py.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import queue
import threading
import time

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import free_port, wait_for
from schemas.codec import encode
from schemas.registry import load_registry
from tickerplant import protocol as p
from tickerplant.config import TickerplantSettings
from tickerplant.log import LogWriter
from tickerplant.subscriber import EndOfDay, Subscriber

DAY = dt.date(2024, 1, 2)
REG = load_registry()


def _bound(sock, endpoint: str) -> bool:
    try:
        sock.bind(endpoint)
        return True
    except zmq.ZMQError:
        return False


class ScriptedTp:
    """Log, publish, heartbeat, end the day and restart, each on the test's command."""

    def __init__(self, log_dir, day: dt.date = DAY):
        self.settings = TickerplantSettings(pub=f"tcp://127.0.0.1:{free_port()}",
                                            ctl=f"tcp://127.0.0.1:{free_port()}", heartbeat_ms=50)
        self.dir = log_dir
        self.ctx = zmq.Context()
        self.lock = threading.Lock()          # the PUB socket is shared with the ctl thread
        self.messages: dict[int, tuple[str, int, bytes]] = {}   # seq -> (table, prev, payload)
        self._open_day(day)
        self._bind()

    def _open_day(self, day: dt.date) -> None:
        self.day, self.last, self.messages = day, {}, {}
        self.log = LogWriter(p.log_path(self.dir, day), day)

    def _bind(self) -> None:
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        # a closed socket lets go of its port asynchronously: a restart waits for it
        wait_for(lambda: _bound(self.pub, self.settings.pub), timeout=5, what="the PUB port")
        self.running = True
        self.ctl_thread = threading.Thread(target=self._serve_ctl, daemon=True)
        self.ctl_thread.start()

    def _serve_ctl(self) -> None:
        ctl = self.ctx.socket(zmq.REP)
        ctl.setsockopt(zmq.LINGER, 0)
        wait_for(lambda: _bound(ctl, self.settings.ctl), timeout=5, what="the ctl port")
        while self.running:
            if not ctl.poll(20):
                continue
            req = json.loads(ctl.recv())
            with self.lock:
                ctl.send(json.dumps({"date": self.day.isoformat(), "log": str(self.log.path),
                                     "seq": self.log.seq, "schemas": REG.spec()}).encode())
                self.pub.send_multipart([p.HELLO_TOPIC, req["token"].encode(),
                                         p.META.pack(p.ymd(self.day), self.log.seq, 0)])
        ctl.close(0)

    def write(self, table: str, sizes: list[int], syms: list[str] | None = None) -> int:
        """Log one message (not published); its rows' `size` are `sizes`. Returns its seq."""
        n = len(sizes)
        cols = ({"time": np.arange(n), "sym": syms or ["A"] * n, "price": np.ones(n), "size": sizes}
                if table == "trade" else
                {"time": np.arange(n), "sym": syms or ["A"] * n, "bid": np.ones(n), "ask": np.ones(n),
                 "bsize": sizes, "asize": sizes})
        payload = encode(REG[table], cols)
        seq = self.log.append([payload])
        self.messages[seq] = (table, self.last.get(table, 0), payload)
        self.last[table] = seq
        return seq

    def publish(self, *seqs: int) -> None:
        with self.lock:
            for seq in seqs:
                table, prev, payload = self.messages[seq]
                self.pub.send_multipart([p.topic(table) + p.META.pack(p.ymd(self.day), seq, prev), payload])

    def send(self, table: str, sizes: list[int], syms=None) -> int:
        seq = self.write(table, sizes, syms)
        self.publish(seq)
        return seq

    def heartbeat(self) -> None:
        with self.lock:
            self.pub.send_multipart(p.news(p.HB_TOPIC, self.day, self.log.seq, self.last))

    def end_day(self, announce: bool = True) -> None:
        ended, seq, last = self.day, self.log.seq, dict(self.last)
        self.log.end()
        if announce:
            with self.lock:
                self.pub.send_multipart(p.news(p.EOD_TOPIC, ended, seq, last))
        self._open_day(ended + dt.timedelta(days=1))

    def stop_sockets(self) -> None:
        self.running = False
        self.ctl_thread.join()
        self.pub.close(0)

    def restart(self) -> None:
        """As a TP killed and started again: sockets go away and come back on the same ports;
        the log goes on."""
        self.stop_sockets()
        self._bind()

    def close(self) -> None:
        self.stop_sockets()
        self.log.close()
        self.ctx.term()


class Collector:
    """Iterates a Subscriber in a thread; `events` are (table, seq, sizes) or ("eod", date)."""

    def __init__(self, sub: Subscriber):
        self.sub = sub.start()
        self.q: queue.Queue = queue.Queue()
        self.events: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for ev in self.sub:
            if isinstance(ev, EndOfDay):
                self.q.put(("eod", ev.date))
            else:
                self.q.put((ev.table, ev.seq, ev.batch.column(
                    "size" if ev.table == "trade" else "bsize").to_pylist()))

    def wait(self, n: int, what: str = "events") -> list:
        def have():
            while not self.q.empty():
                self.events.append(self.q.get())
            return len(self.events) >= n
        wait_for(have, timeout=10, what=f"{n} {what} (have {self.events})")
        return self.events

    def stop(self) -> None:
        self.sub.close()
        self.thread.join(5)


@pytest.fixture
def tp(tmp_path):
    t = ScriptedTp(tmp_path)
    yield t
    t.close()


@pytest.fixture
def subscribe(tp):
    made = []

    def make(tables=None, syms=None) -> Collector:
        c = Collector(Subscriber(tp.settings, tables, syms, ctx=tp.ctx))
        made.append(c)
        return c
    yield make
    for c in made:
        c.stop()


def seqs(events) -> list[int]:
    return [e[1] for e in events if e[0] != "eod"]


def test_a_late_joiner_reads_the_log_then_goes_live(tp, subscribe):
    for i in range(5):
        tp.send("trade", [i])                  # nobody listens yet: only the log has them
    c = subscribe()
    for i in range(5, 8):
        tp.send("trade", [i])
    ev = c.wait(8)
    assert seqs(ev) == list(range(1, 9)) and [e[2] for e in ev] == [[i] for i in range(8)]
    assert c.sub.counters["from_log"] == 5 and c.sub.counters["live"] == 3


def test_a_gap_in_the_stream_is_filled_from_the_log_in_order(tp, subscribe):
    c = subscribe()
    tp.send("trade", [0])
    tp.send("quote", [1])
    tp.write("trade", [2])                     # logged but lost on the way (PUB dropped it)
    tp.write("quote", [3])
    tp.send("trade", [4])                      # its prev (3) says what was missed
    ev = c.wait(5)
    assert seqs(ev) == [1, 2, 3, 4, 5]
    assert c.sub.counters["gaps"] >= 1 and c.sub.counters["from_log"] == 2


def test_a_gap_at_the_tail_is_revealed_by_a_heartbeat(tp, subscribe):
    c = subscribe()
    tp.send("trade", [0])
    tp.write("trade", [1])
    tp.write("trade", [2])
    tp.heartbeat()                             # says trade is at seq 3: read up to it
    assert seqs(c.wait(3)) == [1, 2, 3]


def test_a_message_seen_twice_is_delivered_once(tp, subscribe):
    tp.send("trade", [0])
    tp.send("trade", [1])
    c = subscribe()                            # both come from the log
    tp.publish(1, 2)                           # ...and again live
    tp.send("trade", [2])
    tp.publish(3)
    tp.heartbeat()
    tp.send("trade", [3])
    assert seqs(c.wait(4)) == [1, 2, 3, 4]
    tp.heartbeat()
    tp.send("trade", [4])
    assert seqs(c.wait(5)) == [1, 2, 3, 4, 5]


def test_a_missed_end_of_day_is_closed_from_the_log(tp, subscribe):
    c = subscribe()
    tp.send("trade", [0])
    tp.write("trade", [1])                     # the day's last message never arrives live
    tp.end_day(announce=False)                 # ...nor does the !eod broadcast
    tp.send("trade", [2])                      # the next day's first message closes the old day
    ev = c.wait(4)
    assert ev == [("trade", 1, [0]), ("trade", 2, [1]), ("eod", DAY), ("trade", 1, [2])]


def test_end_of_day_comes_after_the_days_last_message(tp, subscribe):
    c = subscribe()
    tp.send("trade", [0])
    tp.write("trade", [1])
    tp.end_day(announce=True)
    tp.send("trade", [2])
    assert c.wait(4) == [("trade", 1, [0]), ("trade", 2, [1]), ("eod", DAY), ("trade", 1, [2])]


def test_a_tp_restart_loses_nothing(tp, subscribe):
    c = subscribe()
    tp.send("trade", [0])
    tp.send("trade", [1])
    c.wait(2)
    tp.restart()
    tp.write("trade", [2])                     # while the subscriber had not reconnected
    tp.write("trade", [3])
    tp.send("trade", [4])                      # may be dropped too: the SUB reconnects by itself

    def caught_up():
        tp.heartbeat()
        c.wait(0)
        return len(c.events) >= 5
    wait_for(caught_up, timeout=10, what="catch-up after the TP restart")
    assert seqs(c.events) == [1, 2, 3, 4, 5]


def test_syms_filter_whole_batches(tp, subscribe):
    c = subscribe(tables=["trade"], syms=["A"])
    tp.send("trade", [0, 1], syms=["A", "A"])           # all A: delivered whole
    tp.send("trade", [2, 3, 4], syms=["B", "A", "B"])   # mixed: only A's row
    tp.send("trade", [5], syms=["B"])                   # no A: nothing delivered
    tp.send("quote", [6], syms=["A"])                   # another table: not subscribed
    tp.send("trade", [7], syms=["A"])
    ev = c.wait(3)
    assert [e[2] for e in ev] == [[0, 1], [3], [7]] and seqs(ev) == [1, 2, 5]


# ---- the batch API: the same rows, in the same order, exactly once -------------------------------

def _publish_group(tp: ScriptedTp, seqs: list[int]) -> None:
    """Publish logged messages of one table as ONE multipart message, as the TP does with what
    one loop took: [topic + META per payload, payload, ...]."""
    table = tp.messages[seqs[0]][0]
    metas = b"".join(p.META.pack(p.ymd(tp.day), s, tp.messages[s][1]) for s in seqs)
    with tp.lock:
        tp.pub.send_multipart([p.topic(table) + metas, *(tp.messages[s][2] for s in seqs)])


class BatchCollector(Collector):
    """Iterates Subscriber.batches(); events are (table, seq, sizes) per message, rebuilt from
    each batch's seqs, counts and columns, or ("eod", date)."""

    def _run(self) -> None:
        for b in self.sub.batches():
            if isinstance(b, EndOfDay):
                self.q.put(("eod", b.date))
                continue
            col = "size" if b.table == "trade" else "bsize"
            values = b.arrow().column(col).to_pylist()
            assert len(values) == len(b) == int(b.counts.sum())
            at = 0
            for seq, k in zip(b.seqs, b.counts.tolist()):
                self.q.put((b.table, seq, values[at: at + k]))
                at += k


class TakeCollector(Collector):
    """Drives Subscriber.take() from a poll loop of its own, as a live strategy does, taking at
    most 2 events per call so that `more` (the log read in steps) is exercised too."""

    def __init__(self, sub: Subscriber):
        self.stopping = False
        super().__init__(sub)

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sub.socket, zmq.POLLIN)
        more = True
        while not self.stopping:
            poller.poll(0 if more else 20)
            for ev in self.sub.take(limit=2):
                if isinstance(ev, EndOfDay):
                    self.q.put(("eod", ev.date))
                else:
                    self.q.put((ev.table, ev.seq, ev.batch.column(
                        "size" if ev.table == "trade" else "bsize").to_pylist()))
            more = self.sub.more

    def stop(self) -> None:
        self.stopping = True               # take() runs in the collector's thread: close after it
        self.thread.join(5)
        self.sub.close()


@pytest.mark.parametrize("heartbeat_ms", [25, 50])
@pytest.mark.parametrize("how", [Collector, TakeCollector], ids=["iterated", "taken"])
def test_a_silent_tickerplant_is_warned_about_once_per_silence(tp, caplog, how, heartbeat_ms):
    """No heartbeat for 10 intervals: the subscriber logs one warning and waits on, whether it
    is iterated or taken from a caller's poll loop (which polls without waiting), and whatever
    the interval; a heartbeat ends the silence, and the next silence is warned about again."""
    caplog.set_level(logging.WARNING, logger="subscriber")
    c = how(Subscriber(tp.settings.model_copy(update={"heartbeat_ms": heartbeat_ms}), ctx=tp.ctx))

    def warnings():
        return [r for r in caplog.records if "no heartbeat from the tickerplant" in r.getMessage()]
    try:
        tp.send("trade", [1])
        c.wait(1)
        wait_for(warnings, timeout=10, what="the silence warned about")
        time.sleep(20 * heartbeat_ms / 1000)          # still silent: no second warning
        assert len(warnings()) == 1
        tp.heartbeat()
        wait_for(lambda: len(warnings()) == 2, timeout=10, what="the next silence warned about")
    finally:
        c.stop()


def _by_day(events) -> list[dict]:
    """Per day (split at each end of day), each table's messages in order: what both APIs must
    agree on (the order across tables within a poll is not part of the contract)."""
    days, cur = [], {}
    for e in events:
        if e[0] == "eod":
            days.append((e[1], cur))
            cur = {}
        else:
            cur.setdefault(e[0], []).append((e[1], e[2]))
    return days + [(None, cur)]


steps = st.lists(st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["trade", "quote"]), st.integers(0, 5)),
    st.tuples(st.just("lose"), st.sampled_from(["trade", "quote"]), st.integers(1, 3)),
    st.tuples(st.just("group"), st.sampled_from(["trade", "quote"]), st.integers(2, 6)),
    st.tuples(st.just("heartbeat")), st.tuples(st.just("eod"), st.booleans())), min_size=1, max_size=25)


@settings(max_examples=15, deadline=None)
@given(before=st.integers(0, 4), script=steps)
def test_batches_deliver_what_the_message_iterator_delivers(tmp_path_factory, before, script):
    """Whatever the mix of live messages, multipart groups, messages lost on the wire (gaps
    filled from the log), heartbeats and ends of day (announced or not): Subscriber.batches()
    and Subscriber.take() (a caller's own poll loop) hand over the same rows of the same
    messages, per table in the same order, each exactly once, with each end of day after its
    day's rows, as the per-message iterator does, and all match what was logged."""
    tp = ScriptedTp(tmp_path_factory.mktemp("batches"))
    made = []
    try:
        n = 0
        for _ in range(before):                 # in the log before anyone subscribes
            tp.send("trade", [n])
            n += 1
        per_msg = Collector(Subscriber(tp.settings, ctx=tp.ctx))
        batched = BatchCollector(Subscriber(tp.settings, ctx=tp.ctx))
        taken = TakeCollector(Subscriber(tp.settings, ctx=tp.ctx))
        made += [per_msg, batched, taken]
        logged = [("trade", i + 1, [i]) for i in range(before)]
        for step in script:
            kind = step[0]
            if kind == "send":
                _, table, k = step
                logged.append((table, tp.send(table, list(range(n, n + k))), list(range(n, n + k))))
                n += k
            elif kind == "lose":
                _, table, k = step
                for _ in range(k):              # logged, never published: a gap
                    logged.append((table, tp.write(table, [n]), [n]))
                    n += 1
            elif kind == "group":
                _, table, k = step
                seqs = []
                for _ in range(k):
                    seqs.append(tp.write(table, [n, n + 1]))
                    logged.append((table, seqs[-1], [n, n + 1]))
                    n += 2
                _publish_group(tp, seqs)
            elif kind == "heartbeat":
                tp.heartbeat()
            else:
                logged.append(("eod", tp.day))
                tp.end_day(announce=step[1])
                tp.send("trade", [n])           # a message of the new day closes the old one
                logged.append(("trade", 1, [n]))
                n += 1

        def caught_up():
            tp.heartbeat()                      # reveals gaps at the tail
            return all(len(c.wait(0)) >= len(logged) for c in made)
        wait_for(caught_up, timeout=20, what="both subscribers")
        want = _by_day(logged)
        assert _by_day(per_msg.events) == want
        assert _by_day(batched.events) == want
        assert _by_day(taken.events) == want
    finally:
        for c in made:
            c.stop()
        tp.close()
