"""`tickstack top`: render() lays out a snapshot's numbers (headless, into a StringIO console);
snapshot() never fails on a stack that is down; and on a real stack `tickstack top --once`
shows what `tickstack status --json`, `tickstack query` and the risk process report."""
from __future__ import annotations

import io
import json
import time

import pytest
from hypothesis import given, settings, strategies as hs
from rich.console import Console

from helpers import send, wait_for
from ops import processes
from ops.top import LOG_TAIL_BYTES, error_lines, render, snapshot, summary_line


def text(renderable, width=140) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False).print(renderable)
    return buf.getvalue()


def rdb_counts(out: str) -> dict:
    """{table: rows} from the view's rdb table (a header line of names, a line of counts)."""
    lines = out.splitlines()
    i = next(i for i, x in enumerate(lines) if x.split()[:2] == ["trade", "quote"])
    counts = lines[i + 2].split()                       # the header, a rule, the counts
    return {t: int(n.replace(",", "")) for t, n in zip(lines[i].split(), counts)}


def line_of(out: str, *words) -> str:
    """The one output line holding every word (fails if none or several)."""
    lines = [x for x in out.splitlines() if all(w in x.split() for w in words)]
    assert len(lines) == 1, (words, out)
    return lines[0]


SNAP = {
    "time": 0, "home": "/h",
    "processes": [
        {"name": "tp", "pid": 4242, "state": "running", "seq": 812, "date": "2026-11-20",
         "uptime_s": 65, "restarts": 2, "rss": 50 * 2**20, "rates": {"msgs": 1500}, "lag": {"rdb": 3}},
        {"name": "rdb", "pid": 4343, "state": "running"},
        {"name": "gateway", "pid": 4444, "state": "running", "trading": "HALTED", "orders": 7, "working": 1,
         "venues": {"A": "ready", "B": "down"}},
        {"name": "feed", "pid": 4545, "state": "dead", "last_error": "boom: feed died"},
        {"name": "hdb", "pid": None, "state": "stopped"},
    ],
    "tp": {"date": "2026-11-20", "seq": 812, "messages": 800, "rows": 123456, "rejected": 1,
           "msgs_s": 40.0, "rows_s": 2500.0},
    "rdb": {"tables": {"trade": 98765, "quote": 4321, "order": 0}},
    "risk": {"trading": "ACTIVE", "trading_reason": None,
             "books": [{"book": "pairs", "state": "ok", "realized": -1.5, "unrealized": 12.25, "pnl": 10.75,
                        "gross": 3000.0, "net": 250.0, "var": float("nan"), "breached": []}],
             "positions": [{"book": "pairs", "sym": "S007", "position": -1234, "avg_cost": 47.125,
                            "mid": 47.5, "net": -58615.0}],
             "actions": []},
    "errors": ["feed: boom: feed died", "gateway: 2026-11-20 ERROR venue B: logon refused"],
}


def test_render_lays_out_the_snapshots_numbers():
    out = text(render(SNAP))
    tp = line_of(out, "tp", "running", "4242")
    assert "1m05s" in tp and "50.0 MiB" in tp and "msgs=1,500" in tp and "rdb=3" in tp and " 2 " in tp
    rdb = line_of(out, "rdb", "running", "4343")
    assert rdb.split()[3:8] == ["-", "-", "-", "-", "-"]          # no extras: dashes, not blanks
    assert "HALTED orders=7 working=1 A:ready B:down" in line_of(out, "gateway", "4444")
    line_of(out, "feed", "dead", "4545")
    line_of(out, "hdb", "stopped")
    assert "seq 812" in out and "rows 123,456" in out and "40 msg/s, 2,500 rows/s" in out
    assert rdb_counts(out) == {"trade": 98765, "quote": 4321, "order": 0}
    book = line_of(out, "pairs", "ok")
    assert book.split()[2:] == ["-1.50", "12.25", "10.75", "3,000.00", "250.00", "-"]   # NaN VaR: '-'
    assert line_of(out, "S007").split()[2:] == ["-1,234", "47.1250", "47.5000", "-", "-", "-58,615.00"]
    assert "trading ACTIVE" in out
    assert "feed: boom: feed died" in out and "ERROR venue B: logon refused" in out
    assert "tp seq=812 40msg/s" in summary_line(SNAP) and "not running: feed,hdb" in summary_line(SNAP)


def test_render_shows_down_parts_as_down():
    snap = {**SNAP, "tp": {"down": "unresponsive"}, "rdb": {"down": "Unreachable: no answer"},
            "risk": {"down": "no answer on tcp://127.0.0.1:5050"}, "errors": []}
    out = text(render(snap))
    assert "tickerplant: down (unresponsive)" in out
    assert "rdb: down (Unreachable: no answer)" in out
    assert "risk: down (no answer on tcp://127.0.0.1:5050)" in out
    assert "last errors: none" in out
    assert "tp down  rdb down  risk down" in summary_line(snap)


def test_snapshot_of_a_stack_that_is_not_running(cli):
    s = cli()
    (s.cfg.log_dir).mkdir(parents=True, exist_ok=True)
    (s.cfg.log_dir / "rdb.log").write_text("2026-11-20 10:00:00 rdb INFO fine\n"
                                            "2026-11-20 10:00:01 rdb ERROR disk full: free space under hdb\n")
    snap = snapshot(s.cfg)
    assert {r["state"] for r in snap["processes"]} == {"stopped"}
    assert "down" in snap["tp"] and "down" in snap["rdb"] and "down" in snap["risk"]
    assert snap["errors"] == ["rdb: 2026-11-20 10:00:01 rdb ERROR disk full: free space under hdb"]
    assert "rdb ERROR disk full" in text(render(snap))


@settings(max_examples=60, deadline=None)
@given(junk=hs.binary(max_size=300), lines=hs.lists(hs.sampled_from(
    ["x INFO ok", "x ERROR disk full", "Traceback (most recent call last):", "ValueError: bad"]), max_size=20))
def test_error_lines_take_any_log_bytes(tmp_path_factory, junk, lines):
    """A process log holds whatever the process wrote (binary junk, cut UTF-8): the view reads
    it without failing and shows exactly its ERROR and traceback lines."""
    log = tmp_path_factory.mktemp("logs") / "x.log"
    log.write_bytes(junk.replace(b"ERROR", b"").replace(b"Traceback", b"").replace(b"Error:", b"")
                    + b"\n" + "\n".join(lines).encode() + b"\n")
    assert error_lines(log) == [x for x in lines if "ERROR" in x or "Traceback" in x or "Error:" in x]


def test_error_lines_read_only_the_logs_tail(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("x ERROR old\n" + "y INFO filler\n" * (LOG_TAIL_BYTES // 10) + "x ERROR new\n")
    assert error_lines(log) == ["x ERROR new"]


@pytest.mark.process
def test_top_once_shows_what_the_stack_reports(cli):
    s = cli(feed={"rate": 300.0, "syms": 4})
    processes.start(s.cfg, ["tp", "rdb", "feed", "risk"], s.config)

    def quotes():
        r = s.ts("query", "select count(*) as n from quote", "--format", "json", ok=False)
        return r.returncode == 0 and json.loads(r.stdout)["n"] > 0
    wait_for(quotes, timeout=30, every=0.5, what="quotes in the RDB")
    processes.stop(s.cfg, ["feed"])                     # counts stand still from here
    fill = {"time": [time.time_ns()], "sym": ["S001"], "order_id": ["T1.1"], "exec_id": ["E1"],
            "parent": ["T1"], "side": ["buy"], "qty": [300], "price": [50.0], "venue": ["A"], "fee": [0.5],
            "leaves": [0], "status": ["FILLED"], "account": ["acct"], "strategy": ["toptest"], "fix_seq": [1]}
    send(s.cfg, "execution", [fill], feed=99)
    wait_for(lambda: any(p["book"] == "toptest" and p["position"] == 300
                         for p in (processes.risk_status(s.cfg) or {}).get("positions", [])),
             timeout=20, every=0.3, what="the fill in the risk process's book")

    before = s.status()["tp"]["seq"]           # the risk process publishes every second: seq moves
    out = s.ts("top", "--once", "--width", "150").stdout
    st = s.status()
    for name in ("tp", "rdb", "risk"):
        assert str(st[name]["pid"]) in line_of(out, name, "running")
    line_of(out, "feed", "stopped")
    seq = int(out.split(" seq ")[1].split()[0].replace(",", ""))
    assert before <= seq <= st["tp"]["seq"]
    counts = {t: json.loads(s.ts("query", f'select count(*) as n from "{t}"', "--format", "json").stdout)["n"]
              for t in ("trade", "quote", "execution")}
    assert counts["quote"] > 0 and counts["execution"] == 1
    shown = rdb_counts(out)
    assert {t: shown[t] for t in counts} == counts
    pos = line_of(out, "toptest", "S001")
    assert pos.split()[2:4] == ["300", "50.0000"] and pos.split()[5] == "-0.50"   # realized: the fee
    book = line_of(out, "toptest", "ok")
    assert book.split()[2] == "-0.50"                       # realized: the fee
