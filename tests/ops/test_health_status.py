"""`tickstack status` with health: every running process's metrics URL, rates and lag, and a
process that stops heartbeating (SIGSTOP) flagged quiet, by `processes.status` and the CLI."""
from __future__ import annotations

import json
import os
import signal
import time

import pytest

from helpers import wait_for
from ops import processes as procs

pytestmark = pytest.mark.process


def test_status_shows_health_and_flags_a_quiet_process(cli):
    s = cli(health={"heartbeat_s": 0.5})
    s.ts("start", "tp", "rdb", "hdb")

    def healthy():
        rows = {r["name"]: r for r in procs.status(s.cfg, ["tp", "rdb", "hdb"])}
        return rows if all(r.get("quiet") is False and r.get("last_heartbeat") for r in rows.values()) else None
    rows = wait_for(healthy, timeout=30, every=0.25, what="tp, rdb and hdb heartbeating")
    for name, r in rows.items():
        assert r["metrics"].startswith("http://127.0.0.1:") and r["metrics"].endswith("/metrics"), r
        assert set(r["rates"]) == {"in", "out"} and r["errors"] == 0 and r["health_error"] == ""
        assert time.time() - r["last_heartbeat"] < 30
    assert rows["tp"]["lag"] == 0 and rows["hdb"]["lag"] == -1 and rows["rdb"]["lag"] >= 0

    as_json = {r["name"]: r for r in json.loads(s.ts("status", "--json").stdout)}
    assert all(as_json[n]["metrics"] == rows[n]["metrics"] for n in rows)
    assert "feed" in as_json and "metrics" not in as_json["feed"]       # not running

    hdb = procs.pid_of(s.cfg, "hdb")
    os.kill(hdb, signal.SIGSTOP)
    try:
        # its /metrics does not answer now: judged by its last row in the RDB's heartbeat table
        quiet = wait_for(lambda: (r := procs.status(s.cfg, ["hdb"])[0]).get("quiet") and r,
                         timeout=20, every=0.5, what="hdb flagged quiet")
        assert quiet["state"] == "running" and quiet["heartbeat_age_s"] > 1.5
        assert quiet["last_heartbeat"] and time.time() - quiet["last_heartbeat"] > 1.5
        assert procs.status(s.cfg, ["rdb"])[0]["quiet"] is False
        text = s.ts("status").stdout
        line = next(x for x in text.splitlines() if x.startswith("hdb"))
        assert "quiet" in line and str(hdb) in line, text
        assert "quiet" not in next(x for x in text.splitlines() if x.startswith("rdb")), text
        assert "lag=" in next(x for x in text.splitlines() if x.startswith("tp")), text
    finally:
        os.kill(hdb, signal.SIGCONT)
    wait_for(lambda: procs.status(s.cfg, ["hdb"])[0].get("quiet") is False, timeout=20, every=0.5,
             what="hdb heartbeating again")
