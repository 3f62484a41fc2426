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
        # (a status whose RDB query timed out under load says quiet without an age: ask again)
        quiet = wait_for(lambda: (r := procs.status(s.cfg, ["hdb"])[0]).get("quiet") and "heartbeat_age_s" in r
                         and r, timeout=20, every=0.5, what="hdb flagged quiet, with its age from the RDB")
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


def test_every_process_of_the_stack_heartbeats_into_the_rdb(cli):
    """The whole default stack (venues, gateway, risk, the pairs strategy too): each process's
    rows arrive in the RDB's heartbeat table under its name, with its pid, and status shows
    each running and not quiet, with its metrics URL."""
    from hdb.server import query
    s = cli(health={"heartbeat_s": 0.5})
    s.ts("start")
    names = procs.process_names(s.cfg)
    pids = {n: procs.pid_of(s.cfg, n) for n in names}

    def rows():
        try:
            t = query(s.cfg.rdb.query, "select sym, pid, max(msgs_in) as msgs_in, min(rss) as rss, "
                                       "count(*) as n from heartbeat group by sym, pid", timeout=2).table
        except Exception:  # noqa: BLE001 - not up yet
            return None
        got = {r["sym"]: r for r in t.to_pylist()}
        return got if set(names) <= set(got) and all(got[n]["n"] >= 2 for n in names) else None
    got = wait_for(rows, timeout=40, every=0.5, what=f"heartbeats of {names}")
    for n in names:
        assert got[n]["pid"] == pids[n] and got[n]["rss"] > 0, (n, got[n])
    assert got["rdb"]["msgs_in"] > 0 and got["tp"]["msgs_in"] > 0
    # ten processes on two cores: one can miss a 1.5 s quiet window now and then (the test box
    # is busier than a trading box), so look for a status that finds them all alive at once
    st = {}

    def all_alive():
        st.update(s.status())
        return all(st[n]["state"] == "running" and st[n]["quiet"] is False for n in names)
    wait_for(all_alive, timeout=20, every=0.5, what=lambda: "a status with every process running "
             f"and not quiet; the last: { {n: (st[n]['state'], st[n]['quiet']) for n in names} }")
    for n in names:
        assert st[n]["metrics"].startswith("http://127.0.0.1:"), st[n]
