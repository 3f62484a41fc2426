"""Fuzzing the TP's sockets that take outside input: whatever arrives, the TP answers, stays up,
and logs exactly the messages that validate."""
from __future__ import annotations

import json

import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import Procs, tp_status, trades, wait_for, write_config
from ops.config import load
from schemas.codec import CodecError, encode, validate
from tickerplant.protocol import control as request
from tickerplant.log import check

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def tp(tmp_path_factory):
    home = tmp_path_factory.mktemp("fuzz")
    path = write_config(home, tickerplant={"max_message_bytes": 1 << 16})
    cfg = load(path, home)
    procs = Procs(path, home)
    procs.start("tickerplant", name="tp")
    wait_for(lambda: tp_status(cfg), what="tp")
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.connect(cfg.tickerplant.ingest)
    yield cfg, d, {"good": 0}  # "good": messages the TP must have logged; feed id -> last fseq
    d.close(0)
    procs.stop_all()


GOOD = [encode(load(None).registry()["trade"], b) for b in trades(4, 7)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.data())
def test_ingest_survives_anything_and_logs_only_valid_messages(tp, data):
    cfg, d, seen = tp
    base = bytearray(data.draw(st.sampled_from(GOOD)))
    how = data.draw(st.sampled_from(["random", "flip", "truncate", "extend", "frames"]))
    if how == "random":
        frames = [data.draw(st.binary(max_size=300))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 3))):
            base[data.draw(st.integers(0, len(base) - 1))] = data.draw(st.integers(0, 255))
        frames = [bytes(base)]
    elif how == "truncate":
        frames = [bytes(base[: data.draw(st.integers(0, len(base) - 1))])]
    elif how == "extend":
        frames = [bytes(base) + data.draw(st.binary(min_size=1, max_size=64))]
    else:
        frames = data.draw(st.lists(st.binary(max_size=40), min_size=2, max_size=4))
    d.send_multipart(frames)
    hello = len(frames) == 2 and frames[0] == b"hello" and len(frames[1]) == 4
    try:
        head = validate(frames[0], cfg.registry()) if len(frames) == 1 else None
    except CodecError:
        head = None
    logged = head is not None
    if head is not None and head.feed:  # the TP's dedup rule: a feed's fseq must grow
        logged = head.fseq > seen.get(head.feed, 0)
        if logged:
            seen[head.feed] = head.fseq
    if head is None and not hello:
        while True:  # acks for earlier messages may come first
            assert d.poll(5000), "the TP must answer a rejected message"
            if d.recv_multipart()[0] == b"err":
                break
    seen["good"] += logged
    st_ = request(cfg.tickerplant.ctl, "status", timeout=5)
    def fed():  # what the TP logged, less its own heartbeat rows (tickerplant/health.py)
        s = request(cfg.tickerplant.ctl, "status")
        return s["seq"] - s["counters"].get("heartbeats", 0)
    wait_for(lambda: fed() == seen["good"], timeout=5, what="the TP to log exactly the valid messages")
    assert check(st_["log"]).ok


@given(st.binary(max_size=200))
@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_control_socket_answers_garbage_with_an_error(tp, raw):
    cfg = tp[0]
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cfg.tickerplant.ctl)
    try:
        s.send(raw)
        assert s.poll(5000)
        reply = json.loads(s.recv())
        try:
            cmd = json.loads(raw).get("cmd")
        except Exception:
            cmd = None
        if cmd not in ("sub", "status", "eod", "stop"):
            assert "error" in reply
    finally:
        s.close(0)
    assert tp_status(cfg) is not None
