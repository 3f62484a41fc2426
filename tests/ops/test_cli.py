"""The tickstack CLI as a user runs it: a real process per command, real processes under it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import write_config
from ops import processes as procs
from ops.config import load

pytestmark = pytest.mark.process


@pytest.fixture
def home(tmp_path):
    h = tmp_path / "home"
    cfg_path = write_config(h, rdb={"query_timeout_s": 30.0})
    cfg = load(cfg_path, h)
    yield h, cfg_path, cfg
    from ops.supervisor import shutdown
    shutdown(cfg, timeout=5)   # first, so it does not restart what is stopped here
    procs.stop(cfg, timeout=5)
    for name in [*procs.ORDER, procs.SUPERVISOR]:  # whatever a failed test left behind: killed by pid
        pid = procs.pid_of(cfg, name)
        if pid and procs.alive(pid):
            os.kill(pid, signal.SIGKILL)


def ts(home, *args, ok=True, timeout=120):
    h, cfg_path, _ = home
    r = subprocess.run([sys.executable, "-m", "ops", "--home", str(h), "--config", str(cfg_path), *args],
                       capture_output=True, text=True, timeout=timeout)
    if ok:
        assert r.returncode == 0, r.stderr + r.stdout
    return r


def test_start_status_publish_query_eod_stop(home, tmp_path):
    ts(home, "start", "tp", "rdb", "hdb")
    st = json.loads(ts(home, "status", "--json").stdout)
    by = {r["name"]: r for r in st}
    assert by["tp"]["state"] == by["rdb"]["state"] == by["hdb"]["state"] == "running"
    assert by["feed"]["state"] == "stopped" and by["tp"]["log"].endswith(".log")
    assert all(procs.alive(by[n]["pid"]) for n in ("tp", "rdb", "hdb"))

    csv = tmp_path / "t.csv"
    csv.write_text("time,sym,price,size\n" + "".join(
        f"2026-11-20T14:30:00.{i:06d},{'AB'[i % 2]},{100 + i / 10},{i}\n" for i in range(500))
        + "2026-11-20T14:31:00,C,not-a-price,5\n")
    r = ts(home, "publish", "trade", str(csv))
    assert "published 500 rows" in r.stdout and "1 bad rows skipped" in r.stdout

    def rdb_json(sql):
        return [json.loads(x) for x in ts(home, "query", sql, "--format", "json").stdout.splitlines()]
    import time
    for _ in range(100):
        if rdb_json("select count(*) n from trade")[0]["n"] == 500:
            break
        time.sleep(0.1)
    assert rdb_json("select sym, count(*) n, sum(size)::bigint s from trade group by sym order by sym") == [
        {"sym": "A", "n": 250, "s": sum(range(0, 500, 2))}, {"sym": "B", "n": 250, "s": sum(range(1, 500, 2))}]
    out = ts(home, "query", "select * from trade order by size limit 3", "--format", "csv").stdout
    assert out.splitlines()[0].replace('"', "") == "time,sym,price,size,date"
    bad = ts(home, "query", "drop table trade", ok=False)
    assert bad.returncode != 0 and "Error" in bad.stderr

    ended = ts(home, "eod").stdout
    day = ended.split()[1].rstrip(";")
    for _ in range(100):
        h = ts(home, "query", "select count(*) n from trade", "--source", "hdb", "--format", "json").stdout
        if json.loads(h.splitlines()[0])["n"] == 500:
            break
        time.sleep(0.2)
    assert json.loads(h.splitlines()[0])["n"] == 500
    both = ts(home, "query", "select count(*) n from trade", "--source", "all", "--format", "json").stdout
    assert json.loads(both.splitlines()[0])["n"] == 500
    assert day in ts(home, "hdb", "ls").stdout

    ts(home, "stop")
    st = json.loads(ts(home, "status", "--json").stdout)
    assert all(r["state"] == "stopped" for r in st)


def test_log_commands(home, tmp_path):
    import datetime as dt
    from schemas.codec import encode
    from tickerplant.log import LogWriter, log_path
    _, _, cfg = home
    reg = cfg.registry()
    day = dt.date(2026, 11, 20)
    path = log_path(tmp_path, day)
    w = LogWriter(path, day)
    for i in range(10):
        w.append([encode(reg["trade"], {"time": [i], "sym": ["X"], "price": [1.0], "size": [i]}),
                  encode(reg["quote"], {"time": [i], "sym": ["X"], "bid": [1.0], "ask": [2.0],
                                        "bsize": [1], "asize": [1]})])
    w.close()
    good = json.loads(ts(home, "log", "check", str(path), "--json").stdout)
    assert good["ok"] and good["records"] == 20
    rows = ts(home, "log", "replay", str(path), "--table", "trade", "--first", "6").stdout.splitlines()
    assert rows[0] == "# trade" and len(rows) == 2 + 3  # records 1, 3, 5 are trades
    q = ts(home, "log", "replay", str(path), "--sql", "select sum(size) s from trade").stdout
    assert "45" in q

    raw = bytearray(path.read_bytes())
    raw[good["size"] // 2] ^= 0xFF
    path.write_bytes(raw)
    r = ts(home, "log", "check", str(path), ok=False)
    assert r.returncode == 1 and "first bad byte at offset" in r.stdout and "tickstack log repair" in r.stdout
    rep = ts(home, "log", "repair", str(path)).stdout
    assert "salvaged" in rep and path.read_bytes() == bytes(raw)
    fixed = json.loads(ts(home, "log", "check", str(path) + ".repaired", "--json").stdout)
    assert fixed["ok"] and fixed["records"] == 19


def test_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[tickerplant]\nmode = \"sometimes\"\nbogus = 1\n")
    r = subprocess.run([sys.executable, "-m", "ops", "--config", str(bad), "status"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "tickerplant.mode" in r.stderr and "tickerplant.bogus" in r.stderr


def test_run_the_main_job(home):
    r = ts(home, "run", "--seconds", "10", "--syms", "5", "--rate", "2000", timeout=180)
    logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                     for p in sorted((home[0] / "logs").glob("*.log")))
    lines = [x for x in r.stdout.splitlines() if x.startswith("rdb trades=")]
    assert lines, r.stdout + r.stderr + logs
    last = dict(kv.split("=") for kv in lines[-1].split()[1:3])
    assert int(last["trades"]) > 0 and int(last["quotes"]) > 0, r.stdout + logs
    assert "stopped" in r.stdout and "dead" not in r.stdout
    st = json.loads(ts(home, "status", "--json").stdout)
    assert all(x["state"] == "stopped" for x in st)
