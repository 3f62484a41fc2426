"""`tickstack start` runs the stack under a supervisor (ops/supervisor.py), as an operator meets
it: ordered start, a process killed with -9 comes back (and the RDB loses nothing), a crash loop
ends in "failed" without taking the rest down, a process stopped on purpose stays stopped, a
killed supervisor is replaced by one that adopts the live processes, and junk on its control
socket changes nothing. Real processes; the backoff is short here."""
from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import wait_for
from ops import processes as procs

FAST = {"backoff_initial_s": 0.2, "backoff_max_s": 1.0, "max_crashes": 3, "crash_window_s": 60.0,
        "healthy_after_s": 5.0}


def sup_state(s) -> dict:
    return json.loads(procs.state_file(s.cfg).read_text())


def rdb_count(s, table: str) -> int:
    from hdb.server import query
    return query(s.cfg.rdb.query, f"select count(*) n from {table}", timeout=10).table.to_pylist()[0]["n"]


def log_count(s, table: str) -> int:
    """Rows of `table` in the TP's logs (what was acked to the feed)."""
    from tickerplant.replay import replay
    reg = s.cfg.registry()
    return sum(b.num_rows for f in sorted(s.cfg.tplog_dir.glob("tp_*.log"))
               for _, _, b in replay(f, reg, [table]))


def restarted(s, name: str, old: int, restarts: int):
    def check():   # what `tickstack status --json` prints, asked in-process (polled)
        r = procs.status(s.cfg, [name])[0]
        return r if r["state"] == "running" and r["pid"] != old and r["restarts"] == restarts else None
    return wait_for(check, timeout=60, every=0.2, what=f"{name} restarted by the supervisor")


@pytest.mark.process
def test_start_in_order_kill_each_process_nothing_lost_stop_in_reverse(cli):
    s = cli(supervisor=FAST, feed={"rate": 300.0, "syms": 4})
    r = s.ts("start")
    order = procs.process_names(s.cfg)
    assert f"started: {' '.join(order)}" in r.stdout, r.stdout
    sup_pid = procs.supervisor_pid(s.cfg)
    assert sup_pid and (s.cfg.run_dir / "supervisor.pid").is_file()

    # each launched only once the one before it was ready
    st = sup_state(s)["processes"]
    for before, after in zip(order, order[1:]):
        assert st[before]["ready_at"] <= st[after]["started_at"], (before, after, st)
    rows = s.status()
    for name in order:
        row = rows[name]
        assert row["state"] == "running" and procs.alive(row["pid"], name, s.cfg.root), row
        assert row["restarts"] == 0 and row["rss"] > 0 and row["uptime_s"] >= 0, row
    text = s.ts("status").stdout
    assert re.search(r"^tp +running +\d+  up \d+s restarts 0 rss \d+M", text, re.M), text
    assert re.search(rf"^supervisor +running +{sup_pid} ", text, re.M), text

    wait_for(lambda: rdb_count(s, "trade") > 0, timeout=30, every=0.3, what="trades in the RDB")
    for name in order:                      # each killed in turn, each brought back
        old = rows[name]["pid"]
        before = rdb_count(s, "trade") if name == "rdb" else None
        os.kill(old, signal.SIGKILL)
        row = restarted(s, name, old, 1)
        assert row["last_exit"] == "signal KILL"
        if name == "rdb":                   # replayed the TP log: what was there is there, and more comes
            assert rdb_count(s, "trade") >= before
            wait_for(lambda: rdb_count(s, "trade") > before, timeout=30, every=0.3,
                     what="trades published after the RDB's restart")
    assert procs.supervisor_pid(s.cfg) == sup_pid

    assert "stopped: feed" in s.ts("stop", "feed").stdout
    for table in ("trade", "quote"):        # every row the feed got acked is in the RDB, once
        wait_for(lambda: rdb_count(s, table) == log_count(s, table), timeout=30, every=0.5,
                 what=f"the RDB's {table} rows to match the TP log's")
    assert log_count(s, "trade") > 0

    r = s.ts("stop")
    running = [n for n in order if n != "feed"]
    assert f"stopped: {' '.join(reversed(running))}" in r.stdout, r.stdout
    wait_for(lambda: not procs.alive(sup_pid, procs.SUPERVISOR, s.cfg.root), timeout=10,
             what="the supervisor to exit")
    assert not (s.cfg.run_dir / "supervisor.pid").exists()
    assert all(r["state"] == "stopped" for r in s.status().values())


@pytest.mark.process
def test_stop_on_purpose_is_not_undone_and_start_asks_the_running_supervisor(cli):
    s = cli(supervisor=FAST)
    assert "started: tp rdb" in s.ts("start", "tp", "rdb").stdout
    sup_pid = procs.supervisor_pid(s.cfg)
    assert "stopped: rdb" in s.ts("stop", "rdb").stdout
    time.sleep(2 * FAST["backoff_max_s"])   # long past any restart
    rows = s.status()
    assert rows["rdb"]["state"] == "stopped" and procs.running(s.cfg, "rdb") is None
    assert sup_state(s)["processes"]["rdb"]["state"] == "stopped"
    assert rows["tp"]["state"] == "running"

    assert "started: rdb hdb" in s.ts("start", "rdb", "hdb").stdout
    assert procs.supervisor_pid(s.cfg) == sup_pid   # the same supervisor, asked
    assert "started: nothing (already running)" in s.ts("start", "tp").stdout
    assert "log_retention" in sup_state(s)["jobs"]                         # it runs the jobs
    assert f"scheduler: the supervisor (pid {sup_pid}) runs them" in s.ts("jobs").stdout
    r = s.ts("run", "--seconds", "1", ok=False)           # would fight the supervisor
    assert r.returncode == 1 and f"under its supervisor (pid {sup_pid})" in r.stderr, r.stderr


@pytest.mark.process
def test_a_crash_loop_ends_failed_with_its_error_and_leaves_the_rest_alone(cli):
    s = cli(supervisor=FAST, strategy={"run": []})
    s.ts("start", "tp", "rdb")
    tp_pid = procs.pid_of(s.cfg, "tp")
    r = s.ts("strategy", "start", "pairs", "--param", "no_such_param=1", ok=False)
    assert r.returncode == 1 and "strategy-pairs did not start:" in r.stderr, r.stderr
    assert "no_such_param" in r.stderr and "strategy-pairs.log" in r.stderr

    def failed():
        row = s.status().get("strategy-pairs")
        return row if row and row["state"] == "failed" else None
    row = wait_for(failed, timeout=30, every=0.2, what="the crash-looping strategy to be given up")
    assert "no_such_param" in row["last_error"] and row["last_exit"] == "code 1"
    assert row["restarts"] == FAST["max_crashes"] - 1
    assert "last error: code 1:" in s.ts("status", "strategy-pairs").stdout
    rows = s.status()
    assert rows["tp"]["state"] == rows["rdb"]["state"] == "running" and rows["tp"]["pid"] == tp_pid
    assert rows["tp"]["restarts"] == 0


@pytest.mark.process
def test_a_taken_port_backs_off_then_fails_and_the_rest_comes_up(cli):
    import socket
    s = cli(supervisor=FAST, strategy={"run": []})
    taken = socket.socket()
    taken.bind(("127.0.0.1", s.cfg.venues["B"].port))
    taken.listen()
    try:
        r = s.ts("start", ok=False)
        assert r.returncode == 1 and f"venue-B did not start: tcp://127.0.0.1:{s.cfg.venues['B'].port} is in use (venues.B.port)" in r.stderr, r.stderr

        def settled():
            rows = s.status()
            others = [n for n in procs.process_names(s.cfg) if n != "venue-B"]
            ok = rows["venue-B"]["state"] == "failed" and all(rows[n]["state"] == "running" for n in others)
            return rows if ok else None
        rows = wait_for(settled, timeout=90, every=0.5, what="venue-B failed, the rest running")
        assert "is in use (venues.B.port)" in rows["venue-B"]["last_error"]
        assert rows["venue-B"]["last_exit"] == "not launched"
    finally:
        taken.close()
    assert "started: venue-B" in s.ts("start", "venue-B").stdout   # asked again, once the port is free


@pytest.mark.process
def test_a_killed_supervisor_is_replaced_and_adopts_the_live_processes(cli):
    s = cli(supervisor=FAST)
    s.ts("start", "tp", "rdb", "hdb")
    pids = {n: procs.pid_of(s.cfg, n) for n in ("tp", "rdb", "hdb")}
    old_sup = procs.supervisor_pid(s.cfg)
    os.kill(old_sup, signal.SIGKILL)
    wait_for(lambda: not procs.alive(old_sup), timeout=10, what="the supervisor to die")
    time.sleep(0.5)
    assert all(procs.alive(p, n, s.cfg.root) for n, p in pids.items())   # they ran on

    r = s.ts("start", "tp", "rdb", "hdb")
    assert "started: nothing (already running)" in r.stdout, r.stdout
    new_sup = procs.supervisor_pid(s.cfg)
    assert new_sup and new_sup != old_sup
    assert {n: procs.pid_of(s.cfg, n) for n in pids} == pids               # no duplicates
    for n in pids:
        own = [p for p in os.listdir("/proc") if p.isdigit() and procs.alive(int(p), n, s.cfg.root)]
        assert own == [str(pids[n])], (n, own)

    os.kill(pids["rdb"], signal.SIGKILL)    # supervised again
    restarted(s, "rdb", pids["rdb"], 1)

    procs.start(s.cfg, ["venue-A"], s.config)       # started beside the supervisor (the library)
    venue = procs.pid_of(s.cfg, "venue-A")
    assert "started: nothing (already running)" in s.ts("start", "venue-A").stdout
    assert sup_state(s)["processes"]["venue-A"]["pid"] == venue       # adopted, not duplicated
    os.kill(venue, signal.SIGKILL)
    restarted(s, "venue-A", venue, 1)


def _raw(endpoint: str, frames: list[bytes], kind=zmq.DEALER, wait_ms: int = 0):
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    try:
        sock.send_multipart(frames)
        return sock.recv_multipart() if wait_ms and sock.poll(wait_ms) else None
    finally:
        sock.close(0)


@pytest.fixture(scope="module")
def lone_supervisor(tmp_path_factory):
    """A supervisor with nothing to run (module-wide: hypothesis calls the test many times)."""
    from helpers import write_config
    from ops import supervisor
    from ops.config import load
    h = tmp_path_factory.mktemp("junk") / "home"
    path = write_config(h, supervisor=FAST)
    cfg = load(path, h)
    pid = supervisor.ensure(cfg, path)
    yield cfg, sup_state_of(cfg)["ctl"], pid
    supervisor.shutdown(cfg, timeout=5)
    if procs.alive(pid, procs.SUPERVISOR, cfg.root):
        os.kill(pid, signal.SIGKILL)


def sup_state_of(cfg) -> dict:
    return json.loads(procs.state_file(cfg).read_text())


@pytest.mark.process
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4), st.booleans())
def test_junk_on_the_control_socket_never_blocks_or_ends_the_supervisor(lone_supervisor, frames, as_req):
    cfg, ctl, pid = lone_supervisor
    if as_req:                              # a REQ envelope: it is answered, with an error
        reply = _raw(ctl, frames, zmq.REQ, wait_ms=5000)
        assert reply is not None, "no answer to a malformed request"
        body = json.loads(reply[0])
        assert "error" in body or body.get("ok"), body
    else:                                   # no envelope: dropped
        _raw(ctl, frames)
    from ops.supervisor import ask
    assert ask(cfg, "status", timeout=5)["state"]["pid"] == pid


@pytest.mark.process
def test_oversized_and_bad_json_requests_are_refused_and_counted(lone_supervisor):
    cfg, ctl, pid = lone_supervisor
    from ops.supervisor import ask
    before = ask(cfg, "status")["state"]["bad_requests"]
    assert _raw(ctl, [b"x" * (1 << 20)], zmq.REQ, wait_ms=300) is None      # over MAXMSGSIZE: peer dropped
    for body in (b"{", b"[]", b'{"cmd": 5}', b'{"cmd": "start", "names": "tp"}', b'{"cmd": "nosuch"}',
                 b'{"cmd": "start", "names": ["nosuch"]}', b'{"cmd": "start", "names": ["strategy-nosuch"]}',
                 b"[" * 50000):
        reply = json.loads(_raw(ctl, [body], zmq.REQ, wait_ms=5000)[0])
        assert "error" in reply, (body[:40], reply)
    assert "unknown command 'nosuch'" in json.loads(_raw(ctl, [b'{"cmd": "nosuch"}'], zmq.REQ, 5000)[0])["error"]
    assert ask(cfg, "status")["state"]["bad_requests"] >= before + 8
    assert procs.alive(pid, procs.SUPERVISOR, cfg.root)


@pytest.mark.parametrize("sup_state, live, shown", [
    ("backoff", False, "restarting"), ("failed", False, "failed"), ("starting", True, "starting"),
    ("starting", False, "starting"), ("stopped", False, "stopped"), ("running", True, "running"),
    ("running", False, "dead")])
def test_a_status_row_takes_the_supervisors_state_and_keeps_its_other_keys(sup_state, live, shown):
    """`_supervised` merges one supervisor entry into a row (a plain function: no processes)."""
    pid = os.getpid()                       # a live pid, for rss and uptime
    row = {"name": "rdb", "pid": pid, "state": "running" if live else "dead", "lag": 3}
    sup = {"pid": pid, "state": sup_state, "started_at": time.time() - 12, "restarts": 2,
           "last_exit": "signal KILL", "last_error": "boom", "next_start_at": time.time() + 5}
    out = procs._supervised(row, sup)
    assert out["state"] == shown and out["lag"] == 3 and out["restarts"] == 2 and out["supervised"]
    assert (out["last_exit"], out["last_error"]) == ("signal KILL", "boom")
    if live:
        assert out["rss"] > 0 and 11 <= out["uptime_s"] < 60
    else:
        assert out["rss"] is None and out["uptime_s"] is None
    assert ("restart_in_s" in out) == (shown == "restarting")
    assert (out["pid"] is None) == (shown == "stopped")


def test_an_unsupervised_row_gets_uptime_from_proc():
    row = procs._supervised({"name": "tp", "pid": os.getpid(), "state": "running"}, None)
    assert row["restarts"] == 0 and not row["supervised"] and row["rss"] > 0
    assert row["uptime_s"] is not None and row["uptime_s"] >= 0
