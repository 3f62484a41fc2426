"""`tickstack start|stop|status` as an operator meets them: a restart right after kill -9, a
stale pid file, folder names, a second stack on the same ports."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from ops import processes as procs

pytestmark = pytest.mark.process


def test_restart_right_after_kill_9(cli):
    """The killed TP is a zombie until the system reaps it (1-2 s here): it is not running, so
    `start` starts a new one at once (not waiting out the supervisor's backoff, long here), and
    `status` shows the new pid."""
    s = cli(supervisor={"backoff_initial_s": 600.0})
    s.ts("start", "tp")
    old = procs.pid_of(s.cfg, "tp")
    os.kill(old, signal.SIGKILL)
    r = s.ts("start", "tp")
    assert "started: tp" in r.stdout, r.stdout
    tp = s.status()["tp"]
    assert tp["state"] == "running" and tp["pid"] != old and procs.alive(tp["pid"], "tp", s.cfg.root)
    assert tp["log"].endswith(".log")


def test_a_pid_file_naming_another_program_is_not_running(cli):
    """A pid file left behind, its pid now used by an unrelated program (`sleep`): not
    running, `start` starts the TP, and `stop` never signals the stranger."""
    s = cli()
    sleeper = subprocess.Popen(["sleep", "120"])
    s.others.append(sleeper)
    s.cfg.run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("tp", "hdb"):
        (s.cfg.run_dir / f"{name}.pid").write_text(str(sleeper.pid))

    st = s.status()
    assert st["tp"]["state"] != "running" and st["hdb"]["state"] != "running"
    r = s.ts("start", "tp")
    assert "started: tp" in r.stdout, r.stdout
    tp = s.status()["tp"]
    assert tp["state"] == "running" and tp["pid"] != sleeper.pid

    r = s.ts("stop", "hdb")
    assert "nothing was running" in r.stdout
    assert sleeper.poll() is None, "stop signalled a process that is not ours"


def test_folder_names_are_process_names(cli):
    s = cli()
    r = s.ts("start", "tickerplant")
    assert "started: tp" in r.stdout
    st = s.ts("status", "tickerplant").stdout.split()
    assert st[:2] == ["tp", "running"] and "rdb" not in st
    r = s.ts("stop", "tickerplant")
    assert "stopped: tp" in r.stdout
    assert s.status()["tp"]["state"] == "stopped"


def test_second_stack_on_the_same_ports_names_the_endpoint_and_key(cli):
    """Two homes, the second configured with the first's ports: it must not start, and must
    say which endpoint is taken and which key moves it (not take the first stack's TP for
    its own)."""
    a = cli("a")
    a.ts("start", "tp", "hdb")
    b = cli("b", tickerplant={"ingest": a.cfg.tickerplant.ingest, "pub": a.cfg.tickerplant.pub,
                              "ctl": a.cfg.tickerplant.ctl}, hdb={"query": a.cfg.hdb.query})
    r = b.ts("start", "tp", ok=False, timeout=60)
    assert r.returncode != 0
    assert f"tp did not start: {a.cfg.tickerplant.ingest} is in use (tickerplant.ingest)" in r.stderr, r.stderr
    assert "set another port" in r.stderr
    r = b.ts("start", "hdb", ok=False, timeout=60)
    assert f"hdb did not start: {a.cfg.hdb.query} is in use (hdb.query)" in r.stderr, r.stderr
    st = b.status()
    assert st["tp"]["state"] != "running" and st["hdb"]["state"] != "running"
    assert a.status()["tp"]["state"] == "running"
