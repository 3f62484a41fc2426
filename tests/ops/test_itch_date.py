"""`tickstack feed itch FILE` without --date: the date in NASDAQ's file name, else the
tickerplant's day, else the configured clock's; always said."""
from __future__ import annotations

import datetime as dt
import json

import pytest

from helpers import free_port
from tickerplant.clock import Clock


@pytest.mark.parametrize("name, day", [
    ("01302019.NASDAQ_ITCH50", "2019-01-30"),
    ("12302019.NASDAQ_ITCH50.gz", "2019-12-30"),
    ("08302019.BX_ITCH_50", "2019-08-30"),
    ("S013019-v50.txt", "2019-01-30"),
    ("S031413-v41.txt.gz", "2013-03-14"),
])
def test_date_from_nasdaq_file_names(name, day, cli):
    from feedhandlers.cli import _itch_date
    assert _itch_date(cli().cfg, f"/data/{name}") == (day, f"from the file name {name}")


def test_no_date_in_the_name_and_no_tickerplant_takes_the_clock(cli):
    from feedhandlers.cli import _itch_date
    s = cli(tickerplant={"ctl": f"tcp://127.0.0.1:{free_port()}"}, eod={"time": "17:00", "tz": "Asia/Tokyo"})
    for name in ("sample.itch", "13452019.NASDAQ_ITCH50"):   # month 13: not a date
        day, why = _itch_date(s.cfg, name)
        assert dt.date.fromisoformat(day) in {Clock("17:00", "Asia/Tokyo").day() + dt.timedelta(d) for d in (0, -1)}
        assert "clock" in why and s.cfg.tickerplant.ctl in why


@pytest.mark.process
def test_itch_without_date_uses_the_file_name_then_the_tickerplant(cli, tmp_path):
    from feedhandlers.itch.writer import write_itch
    s = cli()
    s.ts("start", "tp")
    named = tmp_path / "01302019.NASDAQ_ITCH50"
    write_itch(named, messages=5_000)
    r = s.ts("feed", "itch", str(named), "--no-progress")
    assert "trading date 2019-01-30 (from the file name 01302019.NASDAQ_ITCH50)" in r.stdout, r.stdout
    log = json.loads(s.ts("status", "--json").stdout)[0]["log"]
    rows = s.ts("log", "replay", log, "--table", "trade").stdout.splitlines()[2:]
    assert rows and all(r.split(",")[1].startswith("2019-01-30T") for r in rows)

    plain = tmp_path / "sample.itch"
    write_itch(plain, messages=2_000)
    tp_day = json.loads(s.ts("status", "--json").stdout)[0]["date"]
    r = s.ts("feed", "itch", str(plain), "--no-progress")
    assert f"trading date {tp_day} (the tickerplant's current day)" in r.stdout, r.stdout
