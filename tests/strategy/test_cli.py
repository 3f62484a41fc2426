"""`tickstack backtest` on an HDB under the stack's home (the command the lead attaches)."""
from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
from click.testing import CliRunner

from helpers import write_config
from ops.cli import cli
from strategy.cli import backtest

if "backtest" not in cli.commands:
    cli.add_command(backtest)


def test_backtest_pairs_writes_tables_summary_and_report(sim_hdb, tmp_path):
    hdb, designed, day, _ = sim_hdb
    home = tmp_path / "home"
    path = write_config(home)
    shutil.copytree(hdb, home / "hdb")
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["--config", str(path), "--home", str(home), "backtest", "pairs",
                                 "--date", str(day), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "gross" in r.output and "report:" in r.output
    for name in ("fills", "orders", "children", "tca", "tca_orders", "pnl", "positions"):
        assert (out / f"{name}.parquet").is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "pairs" and summary["fills"] == pq.read_table(out / "fills.parquet").num_rows
    page = (out / "report.html").read_text()
    assert "<html" in page and "Plotly" in page and "PnL" in page


def test_backtest_says_what_is_wrong(sim_hdb, tmp_path):
    hdb, _, day, _ = sim_hdb
    home = tmp_path / "home"
    path = write_config(home)
    run = CliRunner().invoke
    r = run(cli, ["--config", str(path), "--home", str(home), "backtest", "pairs", "--date", str(day)])
    assert r.exit_code != 0 and "no quote partitions" in r.output and "hdb ls" in r.output
    r = run(cli, ["--config", str(path), "--home", str(home), "backtest", "nosuch", "--date", str(day)])
    assert r.exit_code != 0 and "unknown strategy" in r.output
    r = run(cli, ["--config", str(path), "--home", str(home), "backtest", "pairs", "--date", str(day),
                  "--param", "bogus=1"])
    assert r.exit_code != 0 and "bogus" in r.output
