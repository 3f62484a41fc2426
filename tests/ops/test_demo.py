"""`tickstack demo` as a new user runs it (a process, on a fresh home with free ports): the
whole stack starts, the pairs strategy trades, the day ends into the HDB with trades, quotes,
orders, executions and risk rows, the history queries and the backtest report come out, and
the stack is stopped. A port that is taken fails at once, naming the key, with nothing left
running."""
from __future__ import annotations

import re
import socket
from pathlib import Path

import duckdb
import pytest

from ops import processes

pytestmark = pytest.mark.process

TABLES = ("trade", "quote", "order", "execution", "risk")


def hdb_rows(hdb: Path, table: str, day: str) -> int:
    files = sorted((hdb / table / f"date={day}").glob("*.parquet"))
    if not files:
        return 0
    return duckdb.sql(f"select count(*) from read_parquet({[str(f) for f in files]!r})").fetchall()[0][0]


def test_demo_runs_the_stack_ends_a_day_and_leaves_history(cli):
    s = cli(feed={"rate": 400.0})
    r = s.ts("demo", "--seconds", "15", "--interval", "1", timeout=150)
    out = r.stdout
    for name in processes.process_names(s.cfg):
        assert re.search(rf"^  {re.escape(name)} +ready  pid \d+", out, re.M), (name, out)
    # not a terminal: plain summary lines of the live view
    assert re.search(r"^tp seq=\d+ .*rdb trade=\d+ quote=\d+", out, re.M), out
    day = re.search(r"^end of day (\d{4}-\d\d-\d\d)", out, re.M).group(1)
    counts = {t: hdb_rows(s.cfg.hdb_dir, t, day) for t in TABLES}
    assert all(counts.values()), counts
    said = dict(re.findall(r"(\w+) ([\d,]+)", re.search(rf"^HDB {day}: (.*)  \(", out, re.M).group(1)))
    assert {t: int(said[t].replace(",", "")) for t in TABLES} == counts       # what it says is there
    for section in ("1-minute bars (ohlcv)", "VWAP per sym (vwap_by_sym)", "(aj_trades)",
                    "the strategy's fills (execution)", "PnL per book", "TCA of the day's executions"):
        assert section in out, section
    assert re.search(r"^│ pairs +│", out, re.M)                                # the PnL/fills rows
    assert int(re.search(r"^  fills +(\d+)", out, re.M).group(1)) == counts["execution"]
    report = Path(re.search(r"report: (\S+report\.html)", out).group(1))
    assert report.is_file() and report.parent == s.cfg.root / "backtests" / f"pairs-{day}"
    assert "stopped: strategy-pairs risk gateway venue-B venue-A feed hdb rdb tp" in out
    assert not [x for x in s.status().values() if x["state"] == "running"]


def test_demo_with_a_port_taken_says_which_key_to_change_and_leaves_nothing_running(cli):
    s = cli()
    port = int(s.cfg.rdb.query.rsplit(":", 1)[1])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        r = s.ts("demo", "--seconds", "5", ok=False, timeout=120)
    assert r.returncode == 1
    assert "demo failed at start: rdb did not start" in r.stderr and "(rdb.query)" in r.stderr
    assert "set another port for rdb.query in your config" in r.stderr
    assert "stopped: tp" in r.stdout                       # what had started is stopped again
    assert not [x for x in s.status().values() if x["state"] == "running"]


def _demo_until_live(s, seconds: str = "60"):
    """`tickstack demo` as a child process, once its live view has begun; (process, output so far)."""
    import subprocess
    import sys
    import time
    p = subprocess.Popen([sys.executable, *s.argv("demo", "--seconds", seconds)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    s.others.append(p)
    seen = []
    end = time.monotonic() + 90
    while time.monotonic() < end:
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith("live view"):
            return p, "".join(seen)
    raise AssertionError("the demo did not reach its live view: " + "".join(seen))


def test_a_process_dying_during_the_demo_fails_it_naming_the_log_and_stops_the_rest(cli):
    import os
    import signal
    s = cli(feed={"rate": 200.0})
    p, _ = _demo_until_live(s)
    os.kill(processes.pid_of(s.cfg, "feed"), signal.SIGKILL)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 1
    assert f"demo failed at live view: feed stopped running; see {s.cfg.log_dir / 'feed.log'}" in err
    assert "stopped: strategy-pairs risk gateway venue-B venue-A hdb rdb tp" in out
    assert not [x for x in s.status().values() if x["state"] == "running"]


def test_ctrl_c_during_the_demo_stops_the_stack(cli):
    import signal
    s = cli(feed={"rate": 200.0})
    p, _ = _demo_until_live(s)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=90)
    assert p.returncode == 130, err
    assert "interrupted at live view" in out and "demo interrupted; the stack is stopped" in err
    assert "stopped: strategy-pairs risk gateway venue-B venue-A feed hdb rdb tp" in out
    assert not [x for x in s.status().values() if x["state"] == "running"]


def test_the_demo_leaves_a_running_stack_alone(cli):
    s = cli()
    processes.start(s.cfg, ["tp"], s.config)
    pid = processes.running(s.cfg, "tp")
    r = s.ts("demo", "--seconds", "5", ok=False)
    assert r.returncode == 1 and f"a stack is already running under {s.cfg.root} (tp)" in r.stderr
    assert "`tickstack stop` first, or give the demo another --home" in r.stderr
    assert processes.running(s.cfg, "tp") == pid            # neither ended nor stopped
