"""The peer baselines (ops/bench/peers.py) against real Redis and NATS servers on loopback:
every message arrives exactly once, and the servers and bench processes are gone afterwards.
Skipped, with the install command, where a server binary or client library is missing."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ops.bench import peers, servers
from ops.bench.ingest import messages
from schemas.codec import columns, encode
from schemas.registry import load_registry

AVAILABLE = peers.available()
each_peer = pytest.mark.parametrize("name", [
    pytest.param(name, marks=pytest.mark.skipif(bool(AVAILABLE[name]), reason=AVAILABLE[name] or ""))
    for name in peers.PEERS])


def no_bench_children(name: str) -> bool:
    return not [p for p in mp.active_children() if p.name.startswith(f"{name}-")]


@each_peer
def test_throughput_runs_deliver_every_row_exactly_once_then_stop_everything(name):
    with peers.Peer(name) as peer:
        pid = peer.pid
        assert servers.alive(pid)
        for rows, n in ((100, 300), (1, 2000)):
            sent = messages(rows, 16)  # what the bench publishes, cycled
            sizes = [int(columns(m, load_registry())[2][3].sum()) for m in sent]
            d = peer.deliver(rows, n)
            assert (d.rows, d.size_sum) == (rows * n, sum(sizes[i % 16] for i in range(n)))
            assert d.exact
            assert no_bench_children(name)
        assert peer.throughput(1, 500) > 0  # exact, or it raises
    assert not servers.alive(pid)


@each_peer
def test_latency_run_gets_each_numbered_row_once_with_its_own_delay(name):
    n = 400
    with peers.Peer(name) as peer:
        pid = peer.pid
        d = peer.deliver(1, n, rate=2_000)
        figures = peer.latency(10_000, n)
    assert not servers.alive(pid)
    assert no_bench_children(name)
    assert d.rows == n and d.size_sum == n * (n + 1) // 2  # rows numbered 1..n: none lost, none twice
    assert len(d.latency_ns) == n and (d.latency_ns > 0).all()  # stamped before sending, read after
    assert figures["p50"] <= figures["p99"] <= figures["p999"]


@each_peer
def test_server_is_stopped_when_the_bench_is_interrupted(name):
    with pytest.raises(KeyboardInterrupt):
        with peers.Peer(name) as peer:
            pid = peer.pid
            raise KeyboardInterrupt
    assert not servers.alive(pid)


def test_a_figure_is_refused_when_rows_went_missing():
    short = peers.Delivery("redis", 1, 10, 10, 55, 9, 45, 1.0, 1.0)
    with pytest.raises(peers.DeliveryError, match="sent 10 rows"):
        short.check()


def test_an_unknown_peer_is_named():
    with pytest.raises(ValueError, match="peers are"):
        peers.Peer("kafka")


@settings(max_examples=40)
@given(n=st.integers(1, 120), syms=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=40),
       data=st.data())
def test_column_offset_finds_the_same_values_the_codec_decodes(n, syms, data):
    reg = load_registry()
    sizes = np.array(data.draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)), dtype="<i8")
    times = np.array(data.draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)), dtype="<i8")
    buf = encode(reg["trade"], {"time": times, "sym": [syms[i % len(syms)] for i in range(n)],
                                "price": np.zeros(n), "size": sizes})
    assert (np.frombuffer(buf, "<i8", n, peers._column_offset(buf, 3)) == sizes).all()
    assert (np.frombuffer(buf, "<i8", n, peers._column_offset(buf, 0)) == times).all()


@pytest.mark.skipif(bool(AVAILABLE["redis"]), reason=AVAILABLE["redis"] or "")
def test_redis_runs_durable_with_aof_everysec_and_no_snapshots_on_loopback():
    with peers.Peer("redis") as peer:
        r = peers._redis_client((peer.server.host, peer.server.port))
        settings_in_force = {k: r.config_get(k)[k] for k in ("appendonly", "appendfsync", "save", "bind")}
        r.close()
    assert settings_in_force == {"appendonly": "yes", "appendfsync": "everysec", "save": "", "bind": "127.0.0.1"}


@pytest.mark.skipif(bool(AVAILABLE["nats"]), reason=AVAILABLE["nats"] or "")
def test_nats_bench_streams_are_jetstream_file_storage():
    import asyncio
    from nats.js.api import StorageType

    async def storage(address):
        nc = await peers._nats_connect(address)
        info = await nc.jetstream().stream_info(peers._nats_names("probe")[0])
        await nc.close()
        return info.config.storage

    with peers.Peer("nats") as peer:
        address = (peer.server.host, peer.server.port)
        peers._nats_create(address, "probe")
        assert asyncio.run(storage(address)) == StorageType.FILE
