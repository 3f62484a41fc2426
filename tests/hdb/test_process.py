"""The HDB process (python -m hdb): serves history over its query endpoint, sees a new day
without a restart, survives a bad query, stops cleanly on SIGTERM; the `hdb` CLI group."""
from __future__ import annotations

import datetime as dt
import signal

import pytest
from click.testing import CliRunner
from hdb_testdata import DAY, make_trades
from helpers import wait_for

from hdb.cli import hdb as hdb_cli
from hdb.eod import save_day
from hdb.server import query
from hdb.sql import QueryError


def count(endpoint: str) -> list:
    r = query(endpoint, "SELECT date, count(*) AS n FROM trade GROUP BY date ORDER BY date", timeout=5)
    return list(zip(r.table.column("date").to_pylist(), r.table.column("n").to_pylist()))


def test_hdb_process_serves_new_days_without_restart(stack):
    cfg, procs = stack
    reg = cfg.registry()
    save_day(cfg.hdb_dir, DAY, {"trade": make_trades(1000)}, reg, progress=False)
    p = procs.start("hdb")

    def up():
        try:
            return count(cfg.hdb.query)
        except QueryError:
            return None
    assert wait_for(up, timeout=30, what="hdb answering") == [(DAY, 1000)]
    day2 = DAY + dt.timedelta(days=1)
    save_day(cfg.hdb_dir, day2, {"trade": make_trades(300, day=day2)}, reg, progress=False)
    assert count(cfg.hdb.query) == [(DAY, 1000), (day2, 300)]
    with pytest.raises(QueryError, match="read-only"):
        query(cfg.hdb.query, "COPY trade TO 'x.csv'", timeout=5)
    assert count(cfg.hdb.query)[0] == (DAY, 1000)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=15) == 0
    procs.running.pop("hdb")
    assert "stopped" in procs.output("hdb")


def test_cli_ls_and_load(stack, tmp_path):
    cfg, _ = stack
    (tmp_path / "t.csv").write_text("time,sym,price,size\n2024-01-02T15:00:00Z,A,1.5,10\n"
                                    "2024-01-02T23:00:00Z,B,2.5,20\n")
    run = CliRunner().invoke
    r = run(hdb_cli, ["ls"], obj=cfg)
    assert r.exit_code == 0 and "no partitions" in r.output
    r = run(hdb_cli, ["load", str(tmp_path / "t.csv"), "--table", "trade"], obj=cfg)
    # the default day rule is the tickerplant's (17:00 New York): 23:00Z is the next day
    assert r.exit_code == 0, r.output
    assert "trade 2024-01-02: 1 rows" in r.output and "trade 2024-01-03: 1 rows" in r.output
    r = run(hdb_cli, ["ls"], obj=cfg)
    assert r.exit_code == 0 and "2024-01-02" in r.output and "2 partitions, 2 rows" in r.output
    (tmp_path / "bad.csv").write_text("time,sym,price,size\n1,A,oops,1\n")
    r = run(hdb_cli, ["load", str(tmp_path / "bad.csv"), "--table", "trade"], obj=cfg)
    assert r.exit_code != 0 and "column 'price'" in r.output and "'oops'" in r.output
