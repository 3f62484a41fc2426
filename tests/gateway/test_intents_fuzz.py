"""Junk on the gateway's intents socket (random frames and envelopes, JSON of every shape, raw
TCP bytes that are not ZeroMQ at all) while a good client trades: every good order goes
through exactly once, every junk message that can be answered is answered, and the gateway
never blocks or dies."""
from __future__ import annotations

import itertools
import json
import socket
import threading

import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import wait_for

pytestmark = pytest.mark.process

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
# near misses of real requests ("halt"/"reduce" left out: a valid one would stop the good
# client's trading; a "new" never gets a valid side, so junk never places an order)
shaped = st.fixed_dictionaries({"op": st.sampled_from(["new", "cancel", "replace", "orders", "status", "x", 3]),
                                "tag": st.one_of(st.text(max_size=70), st.integers())},
                               optional={"qty": json_values, "price": json_values, "sym": json_values,
                                         "side": json_values, "target": json_values, "zz": json_values}
                               ).map(lambda d: {**d, "side": "hold"} if d.get("side") in ("buy", "sell") else d)
junk_frames = st.lists(st.one_of(st.binary(max_size=64), st.just(b""),
                                 shaped.map(lambda d: json.dumps(d).encode()),
                                 json_values.map(lambda v: json.dumps(v).encode())), min_size=1, max_size=4)
junk = st.lists(st.tuples(st.sampled_from(["dealer", "req-envelope", "tcp"]), junk_frames), min_size=1, max_size=6)
counter = itertools.count(1)
GOOD = {"sent": 0}


def throw(endpoint, port, items):
    ctx = zmq.Context.instance()
    answered = 0
    socks = []
    for kind, frames in items:
        if kind == "tcp":
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.sendall(b"".join(frames))
            except OSError:
                pass
            continue
        d = ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(endpoint)
        socks.append(d)
        d.send_multipart(([b""] if kind == "req-envelope" else []) + frames)
    for d in socks:
        if d.poll(2000):
            d.recv_multipart()
            answered += 1
        d.close(0)
    return answered


@pytest.fixture(scope="module")
def fuzz(trading):
    trading.quote("FUZ", 10.0, 10.1, 1_000_000, 1_000_000)
    good = trading.connect("good")
    engine = trading.venues["A"].engine
    yield trading, good, engine.counters["orders"]
    good.close()


@settings(max_examples=40, suppress_health_check=list(HealthCheck))
@given(items=junk)
def test_junk_while_a_good_client_trades(fuzz, items):
    t, good, _ = fuzz
    port = int(t.cfg.gateway.intents.rsplit(":", 1)[1])
    res = {}
    th = threading.Thread(target=lambda: res.update(n=throw(t.cfg.gateway.intents, port, items)))
    th.start()
    i = next(counter)
    r = good.new("FUZ", "buy", 1 + i % 7, round(10.2 + i * 0.0001, 4), tif="ioc", tag=f"good-{i}")
    GOOD["sent"] += 1
    th.join(30)
    assert not th.is_alive(), "a junk sender hung: the gateway stopped answering"
    assert r["ok"] and r["tag"] == f"good-{i}" and len(r["children"]) == 1, r
    zmq_sent = sum(1 for kind, _ in items if kind != "tcp")
    assert res["n"] == zmq_sent        # one reply to each message (every one has an envelope)


def test_after_the_junk_every_good_order_went_through_exactly_once(fuzz):
    t, good, orders_before = fuzz
    engine = t.venues["A"].engine
    n = GOOD["sent"]
    assert n >= 10
    wait_for(lambda: engine.counters["orders"] - orders_before == n, what="the venue to have every good order once")
    mine = [o for o in good.orders()["orders"] if o["client"] == "good"]
    assert len(mine) == n and len({o["tag"] for o in mine}) == n
    wait_for(lambda: all(o["status"] == "FILLED" for o in good.orders()["orders"] if o["client"] == "good"),
             what="every good order filled")
    st = good.status()
    assert st["counters"]["bad_intents"] > 0 and not st["recovering"]
