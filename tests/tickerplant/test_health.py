"""Heartbeats through the TP and /metrics per process (tickerplant/health.py): the rows land
in the RDB like any table, every process's metrics endpoint tells the same story as the
process, survives junk, and a heartbeat sender never holds its process up while the TP is down."""
from __future__ import annotations

import os
import socket
import time
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from helpers import free_port, start_tp, wait_for
from schemas import codec
from schemas.registry import load_registry
from tickerplant.config import HealthSettings, TickerplantSettings
from tickerplant.health import IngestSender, Monitor, heartbeat_row, lag_of

HB = {"heartbeat_s": 0.5}


# -- units ---------------------------------------------------------------------------------------
def test_a_heartbeat_row_is_a_valid_message_of_the_heartbeat_table():
    reg = load_registry()
    h = {"pid": 42, "msgs_in": 7, "msgs_out": 5, "in_rate": 1.5, "out_rate": 0.5, "lag": -1,
         "rss": 1 << 20, "errors": 2, "last_error": "bad things"}
    buf = heartbeat_row(reg, "venue-A", 123, h)
    assert codec.check(buf, reg)[:2] == ("heartbeat", 1)
    row = codec.decode(buf, reg)[1].to_pylist()[0]
    assert row["sym"] == "venue-A" and row["pid"] == 42 and row["last_error"] == "bad things"
    assert (row["msgs_in"], row["msgs_out"], row["lag"], row["errors"]) == (7, 5, -1, 2)


@given(st.dictionaries(st.sampled_from("abcde"), st.integers(0, 10**6)),
       st.dictionaries(st.sampled_from("abcde"), st.integers(0, 10**6)),
       st.one_of(st.none(), st.sets(st.sampled_from("abcde"))))
def test_lag_is_how_far_the_most_behind_subscribed_table_is(position, tp_tables, tables):
    lag = lag_of(position, tables, tp_tables)
    wanted = [t for t in tp_tables if tables is None or t in tables]
    assert lag >= 0
    assert all(tp_tables[t] - position.get(t, 0) <= lag for t in wanted)
    assert lag == 0 or any(tp_tables[t] - position.get(t, 0) == lag for t in wanted)


def test_health_settings_are_strict():
    with pytest.raises(ValueError):
        HealthSettings(heartbeat_s=0)
    with pytest.raises(ValueError):
        HealthSettings(metrics_ports={"tp": 70000})
    with pytest.raises(ValueError):
        HealthSettings(heartbeats=1)
    assert HealthSettings().metrics_host == "127.0.0.1"


def test_with_no_tp_a_heartbeat_is_dropped_at_once_and_counted(tmp_path):
    """Nothing listens on the TP's ingest: each beat returns at once, dropped, and the
    process's counters are still served on /metrics."""
    tp = TickerplantSettings(ingest=f"tcp://127.0.0.1:{free_port()}", ctl=f"tcp://127.0.0.1:{free_port()}")
    counts = {"msgs_in": 0, "msgs_out": 0, "errors": 0, "last_error": "", "lag": -1}
    sender = IngestSender(tp)
    m = Monitor("unit", HealthSettings(heartbeat_s=60), lambda: dict(counts), tmp_path, tp,
                send=sender).start(beating=False)
    try:
        t0 = time.monotonic()
        prev = None
        for i in range(20):
            counts["msgs_in"] += 10
            prev = m.beat(prev)
        assert time.monotonic() - t0 < 5      # generous: 20 beats, none waiting for the TP
        assert m.dropped == 20 and m.sent == 0
        fams = scrape((tmp_path / "unit.metrics").read_text().strip())
        assert fams["tickstack_heartbeats_dropped_total"] == 20
        assert fams["tickstack_messages_in_total"] == 200
        assert fams["tickstack_process_id"] == os.getpid()
    finally:
        m.close()
        sender.close()
    assert not (tmp_path / "unit.metrics").exists()


def test_a_metrics_port_in_use_leaves_the_process_running_without_metrics(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "busy.metrics").write_text("http://127.0.0.1:1/metrics\n")   # a stale one
        tp = TickerplantSettings(ingest=f"tcp://127.0.0.1:{free_port()}")
        m = Monitor("busy", HealthSettings(heartbeat_s=60, metrics_ports={"busy": port}),
                    lambda: {"msgs_in": 1}, tmp_path, tp).start(beating=False)
        m.close()
    assert m.url is None and not (tmp_path / "busy.metrics").exists()


# -- processes -----------------------------------------------------------------------------------
def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """{sample name: value} of a /metrics page (one process per endpoint)."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def metrics_url(cfg, name: str) -> str:
    return wait_for(lambda: (cfg.run_dir / f"{name}.metrics").is_file()
                    and (cfg.run_dir / f"{name}.metrics").read_text().strip(), timeout=20,
                    what=f"{name}.metrics")


def heartbeats(cfg):
    from hdb.server import query
    return query(cfg.rdb.query, "select * from heartbeat order by time", timeout=5).table.to_pylist()


@pytest.mark.process
def test_heartbeats_and_metrics_of_tp_rdb_and_feed(make_stack):
    cfg, procs = make_stack(health=HB)
    start_tp(cfg, procs)
    rdb = procs.start("rdb")
    feed = procs.start("feedhandlers", "sim", "--rate", "200", name="feed")
    pids = {"tp": procs.running["tp"].pid, "rdb": rdb.pid, "feed": feed.pid}

    def grown():
        try:
            rows = heartbeats(cfg)
        except Exception:  # noqa: BLE001 - the RDB is still starting
            return None
        by = {n: [r for r in rows if r["sym"] == n] for n in pids}
        ok = all(len(v) >= 3 and v[-1]["msgs_in"] > v[0]["msgs_in"] for v in by.values())
        return by if ok else None
    by = wait_for(grown, timeout=40, every=0.25, what="3 growing heartbeats of tp, rdb and feed")
    for name, rows in by.items():
        assert {r["pid"] for r in rows} == {pids[name]}, name
        assert all(r["rss"] > 0 and r["msgs_out"] >= 0 and r["errors"] == 0 for r in rows), rows
        assert [r["msgs_in"] for r in rows] == sorted(r["msgs_in"] for r in rows)
    assert by["rdb"][-1]["lag"] >= 0 and by["tp"][-1]["lag"] == 0 and by["feed"][-1]["lag"] == -1

    # every endpoint: its own process, consistent with the others (the feed first: counts grow)
    got = {}
    for name in ("feed", "rdb", "tp"):
        got[name] = m = scrape(metrics_url(cfg, name))
        assert m["tickstack_process_id"] == pids[name]
        assert m["tickstack_resident_memory_bytes"] > 0
        assert m["tickstack_heartbeats_sent_total"] >= 3
        assert time.time() - m["tickstack_heartbeat_time_seconds"] < 30
    assert got["feed"]["tickstack_acked_rows"] > 0
    assert got["tp"]["tickstack_rows_in"] >= got["feed"]["tickstack_acked_rows"]
    assert got["tp"]["tickstack_messages_in_total"] >= got["feed"]["tickstack_messages_in_total"]
    assert got["tp"]["tickstack_messages_out_total"] >= got["rdb"]["tickstack_messages_in_total"] > 0
    assert got["rdb"]["tickstack_rows"] > 0

    # junk on the metrics port costs its own connection only
    url = metrics_url(cfg, "tp")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /%%%\x01 HTTP/9.9\r\nHost: \xff\r\n\r\n", b"POST"):
        send_junk(port, junk)
    assert scrape(url)["tickstack_process_id"] == pids["tp"]


@pytest.mark.process
def test_with_the_tp_down_heartbeats_are_dropped_and_the_rdb_still_answers(make_stack):
    """Kill the TP: the RDB keeps answering queries and its heartbeats are dropped, counted."""
    from hdb.server import query
    cfg, procs = make_stack(health=HB)
    start_tp(cfg, procs)
    procs.start("rdb")
    wait_for(lambda: any(r["sym"] == "rdb" for r in _try(heartbeats, cfg) or []), timeout=30,
             what="an rdb heartbeat")
    url = metrics_url(cfg, "rdb")
    procs.kill("tp")
    before = scrape(url)["tickstack_heartbeats_dropped_total"]
    end = time.monotonic() + 2.5          # five heartbeat intervals with the TP down
    while time.monotonic() < end:
        assert query(cfg.rdb.query, "select count(*) as n from heartbeat", timeout=2).table.num_rows == 1
        time.sleep(0.1)
    m = scrape(url)
    assert m["tickstack_heartbeats_dropped_total"] >= before + 3
    assert m["tickstack_lag_messages"] == -1       # no TP to measure against


def send_junk(port: int, junk: bytes) -> None:
    """Send `junk` on a fresh connection, close our side, read whatever answer comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(junk)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        try:
            s.recv(4096)
        except OSError:
            pass


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - not up yet
        return None


@pytest.fixture(scope="module")
def junk_target(tmp_path_factory):
    """One metrics endpoint for every example (its server takes 0.5 s to shut down)."""
    tp = TickerplantSettings(ingest=f"tcp://127.0.0.1:{free_port()}")
    with Monitor("junk", HealthSettings(heartbeat_s=60), lambda: {"msgs_in": 1},
                 tmp_path_factory.mktemp("junk"), tp).start(beating=False) as m:
        yield m


@settings(max_examples=40)
@given(junk=st.one_of(st.binary(min_size=1, max_size=300),
                      st.builds(lambda m, p, v: b" ".join([m, p, v]) + b"\r\n\r\n",
                                st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"\xff"]),
                                st.binary(max_size=50), st.sampled_from([b"HTTP/1.1", b"HTTP/9", b""]))))
def test_any_bytes_on_a_metrics_port_leave_it_serving(junk_target, junk):
    m = junk_target
    send_junk(int(m.url.rsplit(":", 1)[1].split("/")[0]), junk)
    assert scrape(m.url)["tickstack_messages_in_total"] == 1

