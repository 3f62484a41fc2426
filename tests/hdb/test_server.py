"""The query server: Arrow answers, err replies for anything malformed (counted), and it keeps
serving whatever arrives; the client's errors are clear."""
from __future__ import annotations

import json
import socket
import threading

import pyarrow as pa
import pytest
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st
from hdb_testdata import DAY, make_trades
from helpers import wait_for

from hdb.eod import save_day
from hdb.server import QueryServer, query
from hdb.sql import Engine, QueryError


@pytest.fixture(scope="module")
def server(tmp_path_factory, registry):
    hdb = tmp_path_factory.mktemp("hdb")
    save_day(hdb, DAY, {"trade": make_trades(5_000, nsyms=10)}, registry, progress=False)
    eng = Engine(hdb_dir=hdb, registry=registry, max_rows=2_000, timeout_s=5)
    srv = QueryServer("tcp://127.0.0.1:*", eng, workers=2).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def raw(server):
    """A DEALER speaking the REQ envelope by hand, so any frames can be sent."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    yield s
    s.close()


def ask(sock, frames: list[bytes], timeout_ms: int = 5000) -> list[bytes]:
    sock.send_multipart([b""] + frames)
    assert sock.poll(timeout_ms), "no reply"
    reply = sock.recv_multipart()
    assert reply[0] == b""
    return reply[1:]


def alive(server) -> None:
    r = query(server.endpoint, "SELECT count(*) AS n FROM trade", timeout=10)
    assert r.table.to_pydict() == {"n": [5_000]}


def test_query_round_trip(server):
    r = query(server.endpoint, "SELECT sym, count(*) AS n FROM trade GROUP BY sym ORDER BY sym")
    assert r.table.column("n").to_pylist() and sum(r.table.column("n").to_pylist()) == 5_000
    assert r.table.schema.field("sym").type == pa.string()
    assert not r.truncated and r.ms >= 0
    big = query(server.endpoint, "SELECT * FROM trade")
    assert big.table.num_rows == 2_000 and big.truncated


def test_reply_frames(server, raw):
    kind, body, meta = ask(raw, [json.dumps({"sql": "SELECT 1 AS x", "format": "arrow"}).encode()])
    assert kind == b"ok"
    assert pa.ipc.open_stream(body).read_all().to_pydict() == {"x": [1]}
    assert set(json.loads(meta)) == {"rows", "truncated", "ms"}


@pytest.mark.parametrize("frames", [
    [b"\xff\xfe\x00garbage"], [b"not json"], [b"[1, 2]"], [b"{}"], [b'{"sql": 5}'],
    [b'{"sql": "SELECT 1", "format": "csv"}'], [b'{"sql": "SELECT 1", "x": 1}'],
    [b'{"sql": "SELECT 1"}', b"second frame"], [b'{"sql": "DROP VIEW trade"}'],
    [b'{"sql": "SELECT * FROM read_csv(\'/etc/passwd\')"}'], [b""],
])
def test_garbage_gets_an_err_reply(server, raw, frames):
    before = server.stats["err"]
    reply = ask(raw, frames)
    assert reply[0] == b"err" and len(reply) == 2 and reply[1]
    assert server.stats["err"] == before + 1
    alive(server)


def test_a_message_without_an_envelope_is_dropped_and_counted(server):
    """A DEALER frame without the REQ envelope, or raw bytes libzmq takes for ZMTP 1.0 frames,
    cannot be answered: dropped and counted, and no worker is left blocked in recv."""
    before = server.stats["dropped"]
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    try:
        for _ in range(3):
            s.send(b'{"sql": "SELECT 1"}')
        with socket.create_connection(("127.0.0.1", int(server.endpoint.rsplit(":", 1)[1]))) as raw:
            raw.sendall(b"\x01\x00" + b"\x05\x00junk" * 2)
            wait_for(lambda: server.stats["dropped"] >= before + 4, what="the bare messages counted")
        assert not s.poll(200), "a message without an envelope cannot be answered"
    finally:
        s.close(0)
    alive(server)


def test_unanswerable_garbage_is_survived(server):
    """No REQ envelope, oversized messages: nothing to answer, but the server lives on."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    s.send(b"no envelope at all")
    s.send_multipart([b"", b"x" * (17 << 20)])   # over MAX_REQUEST: ZeroMQ drops the peer
    r = zmq.Context.instance().socket(zmq.STREAM)  # raw TCP bytes, not even ZMTP
    r.setsockopt(zmq.LINGER, 0)
    r.connect(server.endpoint)
    ident = r.getsockopt(zmq.ROUTING_ID)
    try:
        r.send_multipart([ident, b"\x00\xff" * 100], flags=zmq.NOBLOCK)
    except zmq.Again:
        pass
    s.close()
    r.close()
    alive(server)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.builds(lambda sql: json.dumps({"sql": sql}).encode(), st.text(max_size=200)),
    st.builds(lambda v: json.dumps(v).encode(),
              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)),
))
def test_any_request_gets_a_reply(server, raw, payload):
    reply = ask(raw, [payload])
    assert reply[0] in (b"ok", b"err")
    if reply[0] == b"err":
        assert len(reply) == 2 and reply[1].decode()


def test_concurrent_clients(server):
    errors = []

    def run():
        try:
            for _ in range(10):
                alive(server)
        except Exception as e:  # collected and asserted below
            errors.append(e)
    ts = [threading.Thread(target=run) for _ in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors


def test_client_errors():
    with pytest.raises(QueryError, match=r"no answer from tcp://127.0.0.1:1 .*tickstack status"):
        query("tcp://127.0.0.1:1", "SELECT 1", timeout=0.3)


def test_server_error_text_reaches_the_client(server):
    with pytest.raises(QueryError, match="COPY statements are refused.*read-only"):
        query(server.endpoint, "COPY trade TO '/tmp/x.csv'")


def test_stop_and_bind_errors(registry, tmp_path):
    eng = Engine(hdb_dir=tmp_path, registry=registry)
    a = QueryServer("tcp://127.0.0.1:*", eng).start()
    with pytest.raises(zmq.ZMQError):
        QueryServer(a.endpoint, eng).start()
    a.stop()
    with pytest.raises(QueryError):
        query(a.endpoint, "SELECT 1", timeout=0.3)
