"""The TP's log over the network (tickerplant/logserve.py): the request parser under arbitrary
input, a LogServer over a real log (ranges, tables, chunks, junk counted), and a Subscriber in
network mode against a real TP process that late-joins and fills forced gaps over the log server,
getting every row exactly once without reading the TP's file."""
from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import send, start_tp, trades
from schemas.codec import encode, peek
from schemas.registry import load_registry
from tickerplant import protocol as p
from tickerplant.log import LogWriter, is_control, scan
from tickerplant.logserve import LogClient, LogRequest, LogRequestError, LogServer, parse_request
from tickerplant.subscriber import Subscriber

REG = load_registry()
DAY = dt.date(2024, 3, 5)

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=20),
                           lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                           max_leaves=12)
near_valid = st.fixed_dictionaries({}, optional={
    "date": st.one_of(st.dates().map(dt.date.isoformat), json_values),
    "from_seq": st.one_of(st.integers(-5, 1 << 64), json_values),
    "to_seq": st.one_of(st.none(), st.integers(-5, 1 << 64), json_values),
    "tables": st.one_of(st.none(), st.lists(st.sampled_from(["trade", "quote", "nope"]), max_size=3), json_values),
    "id": st.one_of(st.integers(-3, 1 << 64), json_values),
    "after": st.one_of(st.dictionaries(st.sampled_from(["trade", "quote", "nope"]), st.integers(-3, 1 << 64)),
                       json_values),
    "extra": json_values})


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode()),
                 near_valid.map(lambda v: json.dumps(v).encode())),
       st.integers(1, 3))
def test_request_parser_takes_any_input_without_surprises(raw, nframes):
    body = [raw] * nframes
    try:
        req = parse_request(body, REG.tables)
    except LogRequestError as e:
        assert str(e)  # an error that says something
        return
    assert nframes == 1
    assert req.from_seq >= 1 and (req.to_seq is None or req.to_seq >= 1)
    assert req.tables is None or set(req.tables) <= set(REG.tables)
    assert parse_request([req.encode()], REG.tables) == req


@given(st.dates(), st.integers(1, (1 << 63) - 1), st.none() | st.integers(1, (1 << 63) - 1),
       st.none() | st.lists(st.sampled_from(["trade", "quote"]), max_size=2).map(tuple),
       st.integers(0, 1 << 40),
       st.dictionaries(st.sampled_from(["trade", "quote"]), st.integers(0, (1 << 63) - 1)))
def test_a_request_round_trips(day, first, last, tables, rid, after):
    req = LogRequest(day, first, last, tables, rid, tuple(sorted(after.items())))
    assert parse_request([req.encode()], REG.tables) == req


@pytest.fixture
def served_log(tmp_path):
    """A day's log of 300 messages alternating trade/quote, ended; a LogServer over it."""
    w = LogWriter(p.log_path(tmp_path, DAY), DAY)
    quote = {"time": np.arange(3, dtype=np.int64), "sym": np.array(["A", "B", "C"]),
             "bid": np.ones(3), "ask": np.ones(3) * 2, "bsize": np.ones(3, np.int64), "asize": np.ones(3, np.int64)}
    for i, cols in enumerate(trades(150, 4)):
        w.append([encode(REG["trade"], cols)])
        w.append([encode(REG["quote"], {k: v for k, v in quote.items() if k in REG["quote"].names})])
    w.end()
    server = LogServer(f"tcp://127.0.0.1:{_port()}", tmp_path, REG.tables, chunk_bytes=2000,
                       ctx=zmq.Context.instance()).start()
    yield server, p.log_path(tmp_path, DAY)
    server.stop()


def _port() -> int:
    from helpers import free_port
    return free_port()


def _stream(client, day, first, last, tables, after=None):
    seqs, payloads, chunks = [], [], 0
    while True:
        c = client.fetch(day, first, last, tables, after)
        chunks += 1
        seqs += c.seqs
        payloads += [bytes(x) for x in c.payloads]
        first = c.head["next"]
        if c.head["done"]:
            return seqs, payloads, chunks, c.head


def test_log_server_streams_a_range_in_chunks_as_the_file_holds_it(served_log):
    server, path = served_log
    client = LogClient(server.endpoint)
    try:
        want = {seq: bytes(pl) for seq, _, pl in scan(path, ["trade"])}
        seqs, payloads, chunks, head = _stream(client, DAY, 11, 250, ["trade"])
        assert seqs == [s for s in sorted(want) if 11 <= s <= 250]
        assert payloads == [want[s] for s in seqs]
        assert chunks > 3 and "error" not in head       # 2000-byte chunks: many replies
        # to the end: every record, the end-of-day control record last
        seqs, payloads, _, head = _stream(client, DAY, 1, None, None)
        assert seqs == list(range(1, 302)) and is_control(payloads[-1])
        assert {peek(x).table for x in payloads[:-1]} == {"trade", "quote"}
        assert client.fetch(DAY + dt.timedelta(days=1), 1).head["missing"]
        # what the client already has of a table is skipped, the rest of the range still comes
        seqs, _, _, head = _stream(client, DAY, 1, 40, None, after={"trade": 31})
        assert seqs == [s for s in range(1, 41) if s % 2 == 0 or s > 31] and head["next"] == 41
    finally:
        client.close()


def test_log_server_answers_junk_with_an_error_and_counts_it(served_log):
    server, _ = served_log
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    try:
        junk = [b"not json", b'{"date": "2024-03-05"}', b'{"date": "x", "from_seq": 1}',
                b'{"date": "2024-03-05", "from_seq": 1, "tables": ["nope"]}', b"[]"]
        for body in junk:
            s.send_multipart([b"", body])
            assert s.poll(5000), "no answer to a junk request"
            frames = s.recv_multipart()
            assert "error" in json.loads(frames[1])
        s.send(b"no envelope")                   # cannot be answered: dropped, counted
        s.send_multipart([b"", LogRequest(DAY, 1, 2, None).encode()])
        assert s.poll(5000) and json.loads(s.recv_multipart()[1])["count"] == 2  # still serving
        c = server.status()["counters"]
        assert c["bad_requests"] == len(junk) and c["dropped"] == 1 and c["served"] == 1
    finally:
        s.close(0)


@pytest.mark.process
def test_subscriber_in_network_mode_joins_late_and_fills_gaps_exactly_once(make_stack):
    # a 1 MB queue of 1 MB messages: the subscriber's SUB holds one message, the TP's PUB one
    cfg, procs = make_stack(tickerplant={"log_serve": f"tcp://127.0.0.1:{_port()}",
                                         "pub_queue_bytes": 1 << 20})
    start_tp(cfg, procs)
    n = send(cfg, "trade", trades(100, 50))                      # before the subscriber exists
    sub = Subscriber(cfg.tickerplant, ["trade"], registry=cfg.registry(), log="network").start()
    sizes = []
    try:
        n += send(cfg, "trade", trades(1500, 500, start=n), first_fseq=101)  # unread: drops
        for b in sub.batches():
            sizes.append(b.columns()[0][3])
            if sum(map(len, sizes)) >= n:
                break
        time.sleep(0.2)
        assert sub.counters["from_network"] > 0 and sub.counters["gaps"] > 0, sub.counters
        got = np.sort(np.concatenate(sizes))
        assert len(got) == n and (got == np.arange(n)).all()   # every row, exactly once
        status = p.control(cfg.tickerplant.ctl, "status")
        assert status["log_serve"]["counters"]["served"] > 0
    finally:
        sub.close()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzlog")
    w = LogWriter(p.log_path(d, DAY), DAY)
    for cols in trades(20, 3):
        w.append([encode(REG["trade"], cols)])
    w.close()
    server = LogServer(f"tcp://127.0.0.1:{_port()}", d, REG.tables, max_request_bytes=4096).start()
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(server.endpoint)
    yield server, s
    s.close(0)
    server.stop()


@settings(max_examples=150)
@given(st.lists(st.one_of(st.binary(max_size=300), near_valid.map(lambda v: json.dumps(v).encode())),
                min_size=1, max_size=3))
def test_log_server_socket_answers_every_enveloped_message_and_keeps_serving(fuzz_server, frames):
    server, s = fuzz_server
    s.send_multipart([b"", *frames])
    assert s.poll(5000), "no reply to an enveloped message"
    reply = s.recv_multipart()
    head = json.loads(reply[1])
    assert "error" in head or (len(reply[2]) == len(reply[3]) == len(reply[4]) == 8 * head["count"]
                               and len(reply[5]) >= (np.frombuffer(reply[4], "<u8")[-1] if head["count"] else 0))
    s.send_multipart([b"", LogRequest(DAY, 5, 7, ("trade",)).encode()])
    assert s.poll(5000)
    ok = s.recv_multipart()
    assert np.frombuffer(ok[2], "<u8").tolist() == [5, 6, 7]


def test_auto_mode_reads_the_file_only_when_it_is_the_tps_own(tmp_path):
    from tickerplant.config import CurveSettings, TickerplantSettings
    from tickerplant.subscriber import SubscriberError
    here = tmp_path / "tp_20240305.log"
    here.write_bytes(b"")
    st = here.stat()
    plain = TickerplantSettings(pub=f"tcp://127.0.0.1:{_port()}")
    served = plain.model_copy(update={"log_serve": f"tcp://127.0.0.1:{_port()}"})
    cases = [(plain, {"log": str(here), "log_id": [st.st_dev, st.st_ino]}, "file"),
             (served, {"log": str(here), "log_id": [st.st_dev, st.st_ino]}, "file"),
             (served, {"log": str(here), "log_id": [st.st_dev, st.st_ino + 1]}, "network"),  # a namesake
             (served, {"log": str(tmp_path / "elsewhere.log"), "log_id": [1, 2]}, "network")]
    for tp, rep, mode in cases:
        s = Subscriber(tp, ["trade"], registry=REG, curve=CurveSettings())
        s._choose_log(rep)
        assert ("network" if s.remote is not None else "file") == mode, (tp.log_serve, rep)
        s.sub.close(0)
        if s.remote is not None:
            s.remote.close()
    lost = Subscriber(plain, ["trade"], registry=REG, curve=CurveSettings())
    with pytest.raises(SubscriberError, match="log_serve"):
        lost._choose_log({"log": str(tmp_path / "elsewhere.log"), "log_id": [1, 2]})
    lost.sub.close(0)
    with pytest.raises(ValueError, match="log_serve"):
        Subscriber(plain, ["trade"], registry=REG, curve=CurveSettings(), log="network")
