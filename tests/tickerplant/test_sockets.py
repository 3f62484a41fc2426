"""No message on any socket the stack binds can block a process or end it (issue 7, item 1).

A real TP, RDB and HDB run as processes while a good feed flows. Whatever arrives on the TP's
ingest, control and publish sockets and on the RDB's and HDB's query endpoints (ZeroMQ frames
of any shape, raw TCP bytes, a ZMTP greeting followed by garbage, connections closed
mid-handshake), the good feed's rows arrive exactly once (TP log and RDB), its acks never stop
for longer than a heartbeat interval, every request with a REQ envelope gets exactly one reply,
and the processes keep answering.
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from hdb.server import query
from helpers import AckedFeed, Procs, tp_status, trades, wait_for, write_config
from ops.config import load
from schemas.codec import peek
from tickerplant.log import LogReader, is_control
from tickerplant.protocol import control

HEARTBEAT_MS = 1000
MAX_BYTES = 1 << 16          # ctl_max_bytes and the query endpoints' max_request_bytes here
ZMTP3_GREETING = b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" * 32


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    home = tmp_path_factory.mktemp("sockets")
    path = write_config(home, tickerplant={"heartbeat_ms": HEARTBEAT_MS, "ctl_max_bytes": MAX_BYTES},
                        rdb={"max_request_bytes": MAX_BYTES}, hdb={"max_request_bytes": MAX_BYTES})
    cfg = load(path, home)
    procs = Procs(path, home)
    try:
        procs.start("tickerplant", name="tp")
        wait_for(lambda: tp_status(cfg), what="tp")
        procs.start("rdb")
        procs.start("hdb")
        for ep in (cfg.rdb.query, cfg.hdb.query):
            wait_for(lambda: _answers(ep), what=f"query endpoint {ep}")
        yield cfg, procs
    finally:
        procs.stop_all()


def _answers(endpoint: str) -> bool:
    try:
        return query(endpoint, "select 1 as x", timeout=1).table.num_rows == 1
    except Exception:  # noqa: BLE001 - not up yet
        return False


class GoodFeed:
    """A feed (its own feed id, sizes from `start`) sending 20-row batches in a thread, a few
    hundred a second, until stop(); keeps the times of the TP's acks."""

    def __init__(self, cfg, feed: int, start: int):
        self.feed = AckedFeed(cfg, feed, window=4)
        self.start_size = start
        self.running = threading.Event()
        self.running.set()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for cols in trades(10**6, 20, start=self.start_size):
                if not self.running.is_set():
                    break
                self.feed.send(cols)
                time.sleep(0.002)
            self.feed.drain()
        except BaseException as e:  # surfaced by stop()
            self.error = e

    def stop(self) -> int:
        """Stop sending, wait for the last ack; the rows sent."""
        self.running.clear()
        self.thread.join(60)
        self.feed.close()
        assert self.error is None, self.error
        return self.feed.rows


FEED_IDS = itertools.count(1)


@pytest.fixture
def good_feed(stack):
    """good_feed() -> a running GoodFeed with a feed id (and row sizes) no other test uses."""
    cfg, _ = stack
    made = []

    def make() -> GoodFeed:
        feed = next(FEED_IDS)
        made.append(GoodFeed(cfg, feed, start=feed * 10**7))
        return made[-1]
    yield make
    for f in made:
        f.running.clear()


def assert_delivered_exactly_once(cfg, procs, good: GoodFeed) -> None:
    """The feed's rows: each of its messages logged once, each of its rows in the RDB once; its
    acks never paused longer than a heartbeat; every process still running."""
    n = good.stop()
    msgs = good.feed.fseq
    assert n > 0
    assert good.feed.largest_ack_gap() < HEARTBEAT_MS / 1000, (
        f"the good feed's acks stopped for {good.feed.largest_ack_gap():.2f}s")
    fseqs = []
    for rec in LogReader(control(cfg.tickerplant.ctl, "status")["log"]).records():
        if not is_control(rec.payload):
            head = peek(rec.payload)
            if head.feed == good.feed.feed:
                fseqs.append(head.fseq)
    assert sorted(fseqs) == list(range(1, msgs + 1)), "the TP log lost or duplicated good messages"
    lo = good.start_size
    sql = (f"select count(*) n, count(distinct size) d, min(size) lo, max(size) hi from trade "
           f"where size >= {lo} and size < {lo + 10**7}")

    def in_rdb():
        r = query(cfg.rdb.query, sql, timeout=10).table.to_pylist()[0]
        return r if r["n"] >= n else None
    r = wait_for(in_rdb, what="the good feed's rows in the RDB")
    time.sleep(0.3)
    r = query(cfg.rdb.query, sql, timeout=10).table.to_pylist()[0]
    assert r == {"n": n, "d": n, "lo": lo, "hi": lo + n - 1}, "the RDB lost or duplicated good rows"
    for name in ("tp", "rdb", "hdb"):
        assert procs.running[name].poll() is None, f"{name} died: {procs.output(name)[-2000:]}"


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _counters(cfg) -> dict:
    return control(cfg.tickerplant.ctl, "status", timeout=5)["counters"]


def _sock(kind: int, endpoint: str) -> zmq.Socket:
    s = zmq.Context.instance().socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


# -- the three control inputs of the issue, one by one ------------------------------------------

@pytest.mark.process
def test_a_control_message_without_an_envelope_is_dropped_and_counted_without_wedging(stack, good_feed):
    cfg, procs = stack
    good = good_feed()
    wait_for(lambda: good.feed.acked > 10, what="the good feed flowing")
    before = _counters(cfg).get("dropped_control", 0)
    d = _sock(zmq.DEALER, cfg.tickerplant.ctl)
    try:
        d.send(b'{"cmd":"status"}')  # a DEALER frame without the REQ envelope
        # no control request for two heartbeat intervals: a wedged TP stops acking meanwhile
        assert not d.poll(2 * HEARTBEAT_MS), "a message without an envelope cannot be answered"
        assert good.feed.largest_ack_gap() < HEARTBEAT_MS / 1000, "the TP stopped acking the feed"
        assert _counters(cfg)["dropped_control"] == before + 1
    finally:
        d.close(0)
    assert_delivered_exactly_once(cfg, procs, good)


@pytest.mark.process
def test_raw_tcp_junk_on_the_control_port_does_not_wedge_the_tp(stack, good_feed):
    cfg, procs = stack
    good = good_feed()
    wait_for(lambda: good.feed.acked > 10, what="the good feed flowing")
    before = _counters(cfg).get("dropped_control", 0)
    # not a ZMTP greeting: libzmq takes it for a ZMTP 1.0 peer (length-prefixed frames), so the
    # junk reaches the socket as a message without an envelope
    with socket.create_connection(("127.0.0.1", _port(cfg.tickerplant.ctl)), timeout=5) as s:
        s.sendall(b"\x01\x00" + b"\x05\x00junk" * 4)
        time.sleep(2 * HEARTBEAT_MS / 1000)
        assert good.feed.largest_ack_gap() < HEARTBEAT_MS / 1000, "the TP stopped acking the feed"
    assert _counters(cfg)["dropped_control"] > before
    assert_delivered_exactly_once(cfg, procs, good)


@pytest.mark.parametrize("frames, why", [
    ([b'{"cmd":"status"}', b"x"], "2 frames"),   # ended the TP with EFSM on a REP socket
    ([b"[" * 50000], "RecursionError"),          # ended the TP with an uncaught RecursionError
    ([b'{"cmd": "sub", "tables": "abc"}'], "list of table names"),
    ([b'["status"]'], "JSON object"),
    ([b'{"cmd": "sub", "tables": [["x"]]}'], "list of table names"),
    ([b'{"cmd": 5}'], "JSON object"),
    ([b"\xff\xfe"], "bad control request"),
])
@pytest.mark.process
def test_a_bad_control_request_gets_exactly_one_error_reply(stack, good_feed, frames, why):
    cfg, procs = stack
    good = good_feed()
    before = _counters(cfg).get("bad_control", 0)
    r = _sock(zmq.REQ, cfg.tickerplant.ctl)
    d = _sock(zmq.DEALER, cfg.tickerplant.ctl)
    try:
        r.send_multipart(frames)
        assert r.poll(5000), "no reply"
        reply = json.loads(r.recv())
        assert why in reply["error"] and "cmd" in reply["error"], reply
        d.send_multipart([b"", *frames])  # the same with the envelope by hand: one reply, not two
        assert d.poll(5000)
        assert d.recv_multipart()[0] == b""
        assert not d.poll(300), "a second reply to one request"
        assert _counters(cfg)["bad_control"] == before + 2
        assert control(cfg.tickerplant.ctl, "status")["pid"] == procs.running["tp"].pid
    finally:
        r.close(0)
        d.close(0)
    assert_delivered_exactly_once(cfg, procs, good)


@pytest.mark.process
def test_query_endpoints_drop_messages_without_an_envelope_and_keep_answering(stack, good_feed):
    cfg, procs = stack
    good = good_feed()
    for ep in (cfg.rdb.query, cfg.hdb.query):
        d = _sock(zmq.DEALER, ep)
        try:
            for _ in range(8):  # more than the workers: each would have been blocked in recv
                d.send(b'{"sql": "select 1"}')
            with socket.create_connection(("127.0.0.1", _port(ep)), timeout=5) as s:
                s.sendall(b"\x01\x00" + b"\x05\x00junk" * 4)
            assert not d.poll(500)
            d.send_multipart([b"", b'{"sql": "select 42 as x"}', b"extra"])
            assert d.poll(10_000) and d.recv_multipart()[1] == b"err"
            assert query(ep, "select 42 as x", timeout=10).table.to_pydict() == {"x": [42]}
        finally:
            d.close(0)
    assert_delivered_exactly_once(cfg, procs, good)


# -- anything, anywhere --------------------------------------------------------------------------

frames_ = st.lists(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda v: json.dumps(v).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(["cmd", "tables", "token", "sql", "format"]), c, max_size=3),
        max_leaves=6)),
    st.builds(lambda c, t: json.dumps({"cmd": c, "tables": t}).encode(),
              st.sampled_from(["sub", "status", "nope", ""]), st.none() | st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3)),
    st.builds(lambda sql: json.dumps({"sql": sql}).encode(), st.text(max_size=100)),
    st.integers(1, 3000).map(lambda k: b"[" * k),
    st.just(b"x" * (MAX_BYTES + 1)),  # over the limit: ZeroMQ disconnects the peer
), min_size=1, max_size=4)
targets = st.sampled_from(["ingest", "ctl", "pub", "rdb", "hdb"])
kinds = st.sampled_from(["req", "dealer_envelope", "dealer_bare", "tcp_bytes", "tcp_zmtp3_then_junk",
                         "tcp_zmtp1_frames", "tcp_half_greeting", "tcp_connect_close"])


def _zmtp1(frames: list[bytes]) -> bytes:
    """ZMTP 1.0 framing (what libzmq assumes of a peer whose first byte is not 0xff): an
    identity frame, then the frames, each as length+1, flags, body."""
    out = b"\x01\x00"
    for i, f in enumerate(frames):
        f = f[:250]
        out += bytes([len(f) + 1, 1 if i < len(frames) - 1 else 0]) + f
    return out


def _raw_tcp(endpoint: str, payload: bytes, close_early: bool = False) -> None:
    try:
        with socket.create_connection(("127.0.0.1", _port(endpoint)), timeout=2) as s:
            if payload:
                s.sendall(payload)
            if not close_early:
                time.sleep(0.01)
    except OSError:
        pass  # the peer may drop us mid-send: that is its right


@pytest.mark.process
def test_anything_on_any_socket_is_survived_while_a_good_feed_flows(stack, good_feed):
    cfg, procs = stack
    good = good_feed()
    endpoints = {"ingest": cfg.tickerplant.ingest, "ctl": cfg.tickerplant.ctl, "pub": cfg.tickerplant.pub,
                 "rdb": cfg.rdb.query, "hdb": cfg.hdb.query}
    answered = {"ctl", "rdb", "hdb"}
    replies = []

    @settings(max_examples=150, suppress_health_check=list(HealthCheck))
    @given(targets, kinds, frames_, st.binary(max_size=300), st.integers(0, len(ZMTP3_GREETING) - 1))
    def attack(target, kind, frames, junk, cut):
        ep = endpoints[target]
        if kind == "tcp_bytes":
            return _raw_tcp(ep, junk)
        if kind == "tcp_zmtp3_then_junk":
            return _raw_tcp(ep, ZMTP3_GREETING + junk)
        if kind == "tcp_zmtp1_frames":
            return _raw_tcp(ep, _zmtp1(frames))
        if kind == "tcp_half_greeting":
            return _raw_tcp(ep, ZMTP3_GREETING[:cut], close_early=True)
        if kind == "tcp_connect_close":
            return _raw_tcp(ep, b"", close_early=True)
        if any(b'"eod"' in f or b'"stop"' in f for f in frames):
            return  # real commands, not garbage
        sock_type = {"req": zmq.REQ, "dealer_envelope": zmq.DEALER, "dealer_bare": zmq.DEALER}[kind]
        if target == "pub":
            sock_type = zmq.XSUB  # the only thing that can talk to a PUB: subscriptions
        fits = all(len(f) <= MAX_BYTES for f in frames)
        if not fits:
            # alone: libzmq 4.3.5 can abort the *sending* process when the peer drops it in the
            # middle of a multipart message that is being closed (zeromq/libzmq#3442)
            frames = [max(frames, key=len)]
        elif kind == "dealer_envelope" and target != "pub":
            frames = [b"", *frames]
        s = _sock(sock_type, ep)
        try:
            s.send_multipart(frames)
            if target in answered and kind in ("req", "dealer_envelope") and fits:
                assert s.poll(10_000), f"no reply from {target} to {frames!r:.200}"
                reply = s.recv_multipart()
                replies.append(reply)
        finally:
            s.close(0)

    attack()
    assert replies, "no example asked for a reply"
    assert_delivered_exactly_once(cfg, procs, good)
    c = _counters(cfg)
    assert c.get("bad_control", 0) + c.get("dropped_control", 0) > 0
    for ep in (cfg.rdb.query, cfg.hdb.query):
        assert query(ep, "select 7 as x", timeout=10).table.to_pydict() == {"x": [7]}
