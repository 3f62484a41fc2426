"""The feed base against the real tickerplant process: batching, numbering, the buffer-full
policies, rejects, and a TP killed with -9 and restarted while the feed keeps producing."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedhandlers.base import BufferFull, Feed, TokenBucket
from helpers import start_tp, tp_status, wait_for
from schemas.codec import decode
from schemas.registry import load_registry
from tickerplant.log import LogReader, is_control

T0 = 1_700_000_000_000_000_000




def logged(cfg, feed: int | None = None, registry=None):
    """[(feed, fseq, table, RecordBatch)] of every batch in the TP's logs, in log order."""
    reg = registry or cfg.registry()
    out = []
    for path in sorted(cfg.tplog_dir.glob("tp_*.log")):
        for rec in LogReader(path).records():
            if is_control(rec.payload):
                continue
            head, batch = decode(bytes(rec.payload), reg)
            if feed is None or head.feed == feed:
                out.append((head.feed, head.fseq, head.table, batch))
    return out


def trade_rows(start: int, n: int) -> dict:
    """n trade rows whose `size` is their global row number (so loss/duplication shows)."""
    i = np.arange(start, start + n)
    return {"time": T0 + i, "sym": np.array(["AAA", "BBB", "CCC"])[i % 3],
            "price": 100 + (i % 50) / 100, "size": i}


def sizes(batches) -> np.ndarray:
    return np.concatenate([b.column("size").to_numpy() for *_, b in batches]) if batches else np.array([])


def test_token_bucket_paces_without_spinning():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(100.0, burst_s=0.1, clock=lambda: now[0], sleep=sleep)
    for _ in range(30):
        b.take(10)                        # 300 units at 100/s: ~2.9 s after the 10-unit burst
    assert abs(now[0] - 2.9) < 1e-6
    assert all(s > 0 for s in slept)
    now[0] += 10                          # idle: the bucket refills only to its capacity
    b.take(10)
    assert abs(now[0] - 12.9) < 1e-6


def test_batching_numbering_and_hello(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    with Feed.from_config(cfg, 5, batch_rows=10, batch_ms=10_000) as f:
        assert f.stats().next_fseq == 1
        for i in range(25):               # one row per call: batched by size into 10, 10, 5
            f.publish("trade", trade_rows(i, 1))
        assert f.wait_acked(10)
        s = f.stats()
    assert (s.sent, s.acked, s.sent_rows, s.acked_rows, s.last_acked) == (3, 3, 25, 25, 3)
    got = logged(cfg, 5)
    assert [(fs, b.num_rows) for _, fs, _, b in got] == [(1, 10), (2, 10), (3, 5)]
    assert (sizes(got) == np.arange(25)).all()
    # A restarted feed with the same id continues the numbering (else the TP drops it as dupes).
    with Feed.from_config(cfg, 5, batch_rows=100) as f:
        assert f.stats().next_fseq == 4
        f.publish("trade", trade_rows(25, 5))
    got = logged(cfg, 5)
    assert [fs for _, fs, _, _ in got] == [1, 2, 3, 4]
    assert (sizes(got) == np.arange(30)).all()


def test_time_flush_and_zero_latency(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    f = Feed.from_config(cfg, 6, batch_rows=1000, batch_ms=30)
    f.publish("trade", trade_rows(0, 3))
    wait_for(lambda: f.stats().acked == 1, timeout=5, what="time-based flush")
    assert f.stats().pending_rows == 0
    f.close()
    z = Feed.from_config(cfg, 7, batch_rows=1)        # every publish is its own message at once
    for i in range(20):
        z.publish("quote", {"time": [T0 + i], "sym": ["Q"], "bid": [1.0], "ask": [1.1],
                            "bsize": [100], "asize": [200]})
    assert z.close(10)
    assert [b.num_rows for *_, b in logged(cfg, 7)] == [1] * 20


def test_rate_limits(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    f = Feed.from_config(cfg, 13, batch_rows=100, max_rows_per_s=4000)
    t = time.monotonic()
    for i in range(20):                    # 2000 rows at 4000/s, 400 of them a free burst
        f.publish("trade", trade_rows(100 * i, 100))
    assert time.monotonic() - t >= 0.35
    assert f.close(10)
    g = Feed.from_config(cfg, 14, batch_rows=10, max_msgs_per_s=50)
    t = time.monotonic()
    for i in range(30):                    # 30 messages at 50/s, 5 of them a free burst
        g.publish("trade", trade_rows(10 * i, 10))
    assert time.monotonic() - t >= 0.45
    assert g.close(10)
    assert (sizes(logged(cfg, 13)) == np.arange(2000)).all()
    assert (sizes(logged(cfg, 14)) == np.arange(300)).all()


def test_tp_down_at_start_then_up(stack):
    """Produced while the TP is down: buffered unnumbered, numbered by the hello answer."""
    cfg, procs = stack
    f = Feed.from_config(cfg, 8, batch_rows=4, hello_timeout_ms=0)
    assert f.stats().next_fseq is None
    f.publish("trade", trade_rows(0, 10))
    assert f.stats().buffered == 3 and f.stats().sent == 0
    start_tp(cfg, procs)
    assert f.wait_acked(15)
    assert f.close()
    got = logged(cfg, 8)
    assert [fs for _, fs, _, _ in got] == [1, 2, 3]
    assert (sizes(got) == np.arange(10)).all()


@pytest.mark.parametrize("policy", ["drop_oldest", "drop_newest", "error"])
def test_buffer_full_policies(stack, policy):
    cfg, procs = stack
    f = Feed.from_config(cfg, 9, batch_rows=2, buffer_msgs=3, block_s=0.2, on_full=policy, hello_timeout_ms=0)
    t = time.monotonic()
    if policy == "error":
        f.publish("trade", trade_rows(0, 6))
        with pytest.raises(BufferFull, match="unacked messages"):
            f.publish("trade", trade_rows(6, 4))
        s = f.stats()
        assert (s.buffered, s.dropped, s.pending_rows) == (3, 0, 4), "kept back, not dropped"
        kept = np.arange(10)
    else:
        f.publish("trade", trade_rows(0, 10))          # 5 messages into room for 3
        s = f.stats()
        assert (s.buffered, s.dropped, s.dropped_rows) == (3, 2, 4)
        kept = np.arange(4, 10) if policy == "drop_oldest" else np.arange(6)
    assert time.monotonic() - t >= 0.2, "the producer blocked block_s before applying the policy"
    start_tp(cfg, procs)
    assert f.close(15), f.stats()
    assert (sizes(logged(cfg, 9)) == kept).all()


def test_rejected_message_is_counted_and_not_resent(stack, tmp_path):
    cfg, procs = stack
    start_tp(cfg, procs)
    extra = tmp_path / "extra.toml"
    extra.write_text('[only_here]\ntime = "timestamp"\nsym = "symbol"\nx = "float64"\n')
    reg = load_registry(extra)            # the feed knows a table the TP does not
    f = Feed.from_config(cfg, 10, registry=reg, batch_rows=100)
    f.publish("only_here", {"time": [T0], "sym": ["A"], "x": [1.0]})
    f.flush()
    wait_for(lambda: f.stats().rejected == 1, timeout=5, what="the TP's err reply")
    assert "unknown table" in f.stats().last_error
    f.publish("trade", trade_rows(0, 3))
    assert f.close(10)
    s = f.stats()
    assert s.rejected == 1 and s.buffered == 0 and s.resent == 0
    got = logged(cfg, 10)
    assert [(fs, tb) for _, fs, tb, _ in got] == [(2, "trade")]


def test_bad_columns_raise_in_the_producer(stack):
    cfg, _ = stack
    f = Feed.from_config(cfg, 11, hello_timeout_ms=0)
    try:
        with pytest.raises(ValueError, match="missing columns"):
            f.publish("trade", {"time": [1], "sym": ["A"], "price": [1.0]})
        with pytest.raises(ValueError, match="differ in length"):
            f.publish("trade", {"time": [1, 2], "sym": ["A"], "price": [1.0], "size": [1]})
        with pytest.raises(ValueError, match="expected numbers"):
            f.publish("trade", {"time": [1], "sym": ["A"], "price": ["x"], "size": [1]})
        with pytest.raises(KeyError, match="unknown table"):
            f.publish("nope", {"time": [1], "sym": ["A"]})
    finally:
        f.close(0)


def test_tp_kill9_and_restart_loses_and_duplicates_nothing(stack):
    """The feed keeps producing at a steady rate while the TP is killed with -9 and restarted;
    afterwards the log holds every row once and every fseq once."""
    cfg, procs = stack
    start_tp(cfg, procs)
    f = Feed.from_config(cfg, 12, batch_rows=50, batch_ms=5, ack_timeout_ms=500)
    produced = [0]
    stop = threading.Event()

    def produce():
        while not stop.is_set():
            f.publish("trade", trade_rows(produced[0], 17))
            produced[0] += 17
            time.sleep(0.002)

    th = threading.Thread(target=produce)
    th.start()
    try:
        wait_for(lambda: f.stats().acked > 20, timeout=10, what="acks before the kill")
        # Freeze the TP first, so messages pile up sent-but-unlogged in its socket buffers:
        # the kill then loses them in flight, and only the feed's resend can bring them back.
        os.kill(procs.running["tp"].pid, signal.SIGSTOP)
        sent = f.stats().sent
        wait_for(lambda: f.stats().sent > sent + 10, timeout=10, what="sends into the frozen TP")
        procs.kill("tp")                                  # SIGKILL: no clean shutdown
        during = f.stats().acked_rows
        time.sleep(0.5)                                   # producing into the buffer meanwhile
        assert f.stats().connected is False
        start_tp(cfg, procs)
        wait_for(lambda: f.stats().acked_rows > during + 2000, timeout=15, what="acks after restart")
    finally:
        stop.set()
        th.join()
    assert f.close(15), f.stats()
    s = f.stats()
    assert s.reconnects >= 1 and s.dropped == 0 and s.rejected == 0
    assert s.resent >= 10, "the messages lost in flight were sent again"
    got = logged(cfg, 12)
    fseqs = [fs for _, fs, _, _ in got]
    assert fseqs == list(range(1, len(fseqs) + 1)), "each fseq exactly once, in order"
    assert (sizes(got) == np.arange(produced[0])).all(), "each row exactly once, in order"
    assert s.acked == len(fseqs)


def test_ack_timeout_resends_and_the_tp_drops_the_duplicates(stack):
    """A TP frozen past ack_timeout (no disconnect for the monitor to see): the feed resends;
    when the TP thaws it gets every message twice and logs each once."""
    cfg, procs = stack
    start_tp(cfg, procs)
    f = Feed.from_config(cfg, 15, batch_rows=10, ack_timeout_ms=300)
    pid = procs.running["tp"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        f.publish("trade", trade_rows(0, 50))
        wait_for(lambda: f.stats().ack_timeouts >= 1 and f.stats().resent >= 5, timeout=10,
                 what="an ack timeout and resend")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f.close(10)
    s = f.stats()
    assert s.reconnects == 0 and s.acked == 5
    assert [fs for _, fs, _, _ in logged(cfg, 15)] == [1, 2, 3, 4, 5]
    assert (sizes(logged(cfg, 15)) == np.arange(50)).all()
    assert tp_status(cfg)["counters"]["duplicates"] >= 5


@pytest.fixture(scope="module")
def shared_tp(tmp_path_factory):
    from helpers import Procs, write_config
    from ops.config import load
    home = tmp_path_factory.mktemp("shared") / "home"
    path = write_config(home)
    procs = Procs(path, home)
    cfg = load(path, home)
    try:
        start_tp(cfg, procs)
        yield cfg
    finally:
        procs.stop_all()


_ids = iter(range(1000, 2**31))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.integers(0, 40), min_size=1, max_size=12), batch_rows=st.integers(1, 30))
def test_batching_property(shared_tp, calls, batch_rows):
    """Whatever the call sizes and batch size: the TP log holds the rows in publish order, in
    messages of at most batch_rows, numbered 1..n."""
    cfg = shared_tp
    fid = next(_ids)
    f = Feed.from_config(cfg, fid, batch_rows=batch_rows, batch_ms=10_000)
    start = 0
    for n in calls:
        f.publish("trade", trade_rows(start, n))
        start += n
    assert f.close(10)
    got = logged(cfg, fid)
    assert [fs for _, fs, _, _ in got] == list(range(1, len(got) + 1))
    assert all(0 < b.num_rows <= batch_rows for *_, b in got)
    assert (sizes(got) == np.arange(start)).all()
    if start:
        assert len(got) >= -(-start // batch_rows)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=8), max_size=30))
def test_text_columns_convert_exactly(values):
    """The no-per-row-object path for numpy str columns gives the same strings, or declines."""
    from feedhandlers.base import _ascii_strings
    arr = np.array(values, dtype=str) if values else np.array([], dtype="<U1")
    out = _ascii_strings(arr)
    if out is not None:
        assert out.to_pylist() == arr.tolist()
    else:
        assert len(arr) == 0 or not all(v.isascii() for v in arr.tolist())


# ---------------------------------------------------------------- wake-ups
# The I/O thread sends a message as soon as it is queued: whatever the publish timing, no
# message waits for the thread's poll timeout (`FeedStats.late_sends` stays 0).

def publish_paced(feed: Feed, rate: float, seconds: float) -> int:
    """Single-row trades at a steady `rate` (sleeping to each one's due time); returns the count."""
    n, t0 = 0, time.monotonic()
    while (due := t0 + n / rate) < t0 + seconds:
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        feed.publish("trade", trade_rows(n, 1))
        n += 1
    return n


@pytest.mark.process
@pytest.mark.parametrize("fid,mode", [(101, {"batch_rows": 1}), (102, {"batch_ms": 0})],
                         ids=["batch_rows=1", "batch_ms=0"])
def test_steady_single_rows_never_wait_for_the_poll(shared_tp, fid, mode):
    """2k msg/s for 2 s: every message is sent when published, none when the poll times out
    (the lost-wake bug sent each of them ~100 ms late, on the poll cap, after a few dozen).
    batch_rows=1 sends one message per publish; batch_ms=0 may put publishes made while acks
    are outstanding into one message (natural batching), numbered like any other."""
    with Feed.from_config(shared_tp, fid, **mode) as f:
        n = publish_paced(f, rate=2000, seconds=2.0)
        assert f.wait_acked(10)
        s = f.stats()
    assert s.late_sends == 0, f"{s.late_sends} of {n} messages waited for the poll timeout"
    assert (s.sent_rows, s.acked_rows, s.resent, s.ack_timeouts, s.dropped) == (n, n, 0, 0, 0)
    assert s.acked == s.sent and (s.sent == n if mode.get("batch_rows") == 1 else 0 < s.sent <= n)
    got = logged(shared_tp, fid)
    assert [fs for _, fs, _, _ in got] == list(range(1, s.sent + 1))
    assert (sizes(got) == np.arange(n)).all()


@pytest.mark.process
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gaps_us=st.lists(st.integers(0, 2000), min_size=50, max_size=400),
       threads=st.integers(1, 3),
       mode=st.sampled_from([{"batch_rows": 1}, {"batch_ms": 0}, {"batch_rows": 3, "batch_ms": 1}]))
def test_no_message_waits_for_the_poll_whatever_the_timing(shared_tp, gaps_us, threads, mode):
    """Publishes at random gaps from 1-3 threads (rows numbered per thread slot so loss,
    duplication and reordering within a thread show): nothing is late, everything is logged."""
    fid = next(_ids)
    f = Feed.from_config(shared_tp, fid, **mode)
    per = -(-len(gaps_us) // threads)

    def produce(k: int) -> None:
        for i, gap in enumerate(gaps_us[k * per:(k + 1) * per]):
            if gap:
                time.sleep(gap / 1e6)
            f.publish("trade", trade_rows(k * per + i, 1))

    workers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert f.close(10)
    s = f.stats()
    assert s.late_sends == 0, f"{s.late_sends} messages waited for the poll timeout"
    assert s.acked_rows == len(gaps_us) and s.dropped == 0
    got = sizes(logged(shared_tp, fid))
    assert sorted(got.tolist()) == list(range(len(gaps_us)))
    for k in range(threads):                      # each thread's rows in its publish order
        mine = got[(got >= k * per) & (got < (k + 1) * per)]
        assert (np.diff(mine) == 1).all()


# ---------------------------------------------------------------- natural batching
# batch_ms=0: a publish goes out at once from the publishing thread while fewer than _WINDOW
# messages (of fewer than _WINDOW_ROWS rows) await the TP's ack; publishes made while that many
# are outstanding go out together at the next ack, one message per table (at most batch_rows
# rows), in order, numbered like any other message.

def test_publishes_made_while_acks_are_outstanding_go_as_one_message(stack):
    from feedhandlers.base import _WINDOW, _WINDOW_ROWS
    cfg, procs = stack
    start_tp(cfg, procs)
    f = Feed.from_config(cfg, 21, batch_ms=0, batch_rows=20)
    quote = {"time": [T0], "sym": ["Q"], "bid": [1.0], "ask": [1.1], "bsize": [1], "asize": [2]}
    pid = procs.running["tp"].pid
    os.kill(pid, signal.SIGSTOP)        # no ack comes back meanwhile
    try:
        for i in range(50):
            f.publish("trade", trade_rows(i, 1))
            f.publish("quote", quote)   # another table: its own messages
        assert f.stats().pending_rows > 0, "rows wait for the window"
    finally:
        os.kill(pid, signal.SIGCONT)
    assert f.wait_acked(10) and f.close(10)
    got = logged(cfg, 21)
    trades = [b.num_rows for _, _, tb, b in got if tb == "trade"]
    quotes = [b.num_rows for _, _, tb, b in got if tb == "quote"]
    # the first publishes go alone until the window is full (single rows: _WINDOW messages, or
    # _WINDOW_ROWS rows); then rows wait, and go when batch_rows fill a message (sent by the
    # producer) or at the ack (the rest)
    w = min(_WINDOW, _WINDOW_ROWS) // 2
    assert trades == [1] * w + [20, 20, 50 - w - 40] and quotes == trades
    assert [fs for _, fs, _, _ in got] == list(range(1, len(got) + 1))
    assert (sizes([g for g in got if g[2] == "trade"]) == np.arange(50)).all()
    assert f.stats().late_sends == 0


@pytest.mark.process
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.tuples(st.integers(0, 30), st.booleans()), min_size=1, max_size=40),
       batch_rows=st.integers(1, 40))
def test_natural_batching_keeps_rows_in_order_exactly_once(shared_tp, calls, batch_rows):
    """Publishes of any sizes, some made holding the feed's lock (so the I/O thread cannot
    step in): the log holds every row once, in publish order, in messages of at most
    batch_rows rows numbered 1..n."""
    fid = next(_ids)
    f = Feed.from_config(shared_tp, fid, batch_ms=0, batch_rows=batch_rows)
    start = 0
    for n, busy in calls:
        if busy:
            with f._lock:
                f.publish("trade", trade_rows(start, n))
        else:
            f.publish("trade", trade_rows(start, n))
        start += n
    assert f.close(10)
    got = logged(shared_tp, fid)
    assert [fs for _, fs, _, _ in got] == list(range(1, len(got) + 1))
    assert all(0 < b.num_rows <= batch_rows for *_, b in got)
    assert (sizes(got) == np.arange(start)).all()
    s = f.stats()
    assert (s.sent_rows, s.acked_rows, s.dropped, s.late_sends) == (start, start, 0, 0)


@pytest.mark.process
def test_text_the_codec_refuses_costs_only_its_own_publish(shared_tp):
    """A numpy str column the codec cannot encode (a lone surrogate), published among good
    rows that wait together: the good rows are logged, the bad ones counted and reported."""
    fid = next(_ids)
    f = Feed.from_config(shared_tp, fid, batch_ms=0)
    bad = trade_rows(3, 1) | {"sym": np.array(["\udc80"])}
    with f._lock:
        f.publish("trade", trade_rows(0, 3))
        f.publish("trade", bad)
        f.publish("trade", trade_rows(4, 2))
    assert f.close(10)
    s = f.stats()
    assert (s.dropped_rows, s.acked_rows) == (1, 5) and "refused by the codec" in s.last_error
    assert sizes(logged(shared_tp, fid)).tolist() == [0, 1, 2, 4, 5]
