"""The `feed` commands end to end: `python -m feedhandlers` against a real tickerplant."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner

from feedhandlers.cli import feed
from helpers import start_tp, wait_for
from schemas.codec import decode
from tickerplant.log import LogReader, is_control

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]




def rows_by(cfg, feed_id: int) -> dict[str, int]:
    reg = cfg.registry()
    out: dict[str, int] = {}
    for path in sorted(cfg.tplog_dir.glob("tp_*.log")):
        for rec in LogReader(path).records():
            if not is_control(rec.payload):
                head, _ = decode(bytes(rec.payload), reg)
                if head.feed == feed_id:
                    out[head.table] = out.get(head.table, 0) + head.nrows
    return out


def run(cfg, *args):
    return subprocess.run([sys.executable, "-m", "feedhandlers", "--config", str(cfg.root / "tickstack.toml"),
                           "--home", str(cfg.root), *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_sim_replay_itch_commands(stack, tmp_path):
    cfg, procs = stack
    start_tp(cfg, procs)
    r = run(cfg, "sim", "--syms", "5", "--rate", "2000", "--seconds", "1", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "2000 events" in r.stdout and "dropped 0" in r.stdout
    got = rows_by(cfg, 1)
    assert got["quote"] + got["trade"] == 2000

    p = tmp_path / "t.csv"
    n = 100
    pacsv.write_csv(pa.table({"time": 1_700_000_000_000_000_000 + np.arange(n) * 1000, "sym": ["A"] * n,
                              "price": np.ones(n), "size": np.arange(n)}), p)
    with open(p, "a") as f:
        f.write("1,B,notaprice,1\n")
    r = run(cfg, "replay", str(p), "--table", "trade", "--asap", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "100 rows replayed" in r.stdout and "1 bad rows skipped" in r.stdout
    assert "line 102: column 'price': 'notaprice' is not a valid float64" in r.stderr
    assert rows_by(cfg, 2) == {"trade": 100}

    r = run(cfg, "replay", "--hdb-date", "2020-01-01", "--table", "trade")
    assert r.returncode != 0 and "no HDB partition" in r.stderr
    r = run(cfg, "replay", str(p), "--hdb-date", "2020-01-01", "--table", "trade")
    assert r.returncode != 0 and "either FILE or --hdb-date" in r.stderr

    from feedhandlers.itch.writer import write_itch
    itch = tmp_path / "s.itch"
    write_itch(itch, messages=20_000)
    r = run(cfg, "itch", str(itch), "--date", "2024-01-02", "--no-progress")
    assert r.returncode == 0, r.stderr
    got = rows_by(cfg, 3)
    assert got.get("quote", 0) > 0 and got.get("trade", 0) > 0
    assert f"{got['quote']} quotes, {got['trade']} trades" in r.stdout


def test_group_takes_the_config_from_the_context(stack):
    cfg, procs = stack
    start_tp(cfg, procs)
    res = CliRunner().invoke(feed, ["sim", "--syms", "3", "--rate", "500", "--seconds", "0.5",
                                    "--no-progress", "--feed-id", "9"], obj=cfg)
    assert res.exit_code == 0, res.output
    got = rows_by(cfg, 9)
    assert got["quote"] + got["trade"] == 250


def test_sim_stops_cleanly_on_sigterm(stack):
    """A detached sim (no --seconds) stopped with SIGTERM flushes and waits for its acks:
    every event it reports is in the log."""
    import re
    import signal
    cfg, procs = stack
    start_tp(cfg, procs)
    p = subprocess.Popen([sys.executable, "-m", "feedhandlers", "--config", str(cfg.root / "tickstack.toml"),
                          "--home", str(cfg.root), "sim", "--syms", "4", "--rate", "3000"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sum(rows_by(cfg, 1).values()) > 1000, timeout=20, what="sim rows in the log")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    events = int(re.search(r"^(\d+) events", out, re.M).group(1))
    assert sum(rows_by(cfg, 1).values()) == events
