"""Config tools: `config check` names every problem by its key path (and never crashes on any
input); `config show` gives each value with where it came from."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from hypothesis import given, settings, strategies as st

from helpers import free_port
from ops.configtool import check_data, check_file, check_text, effective


def keys(problems) -> list[str]:
    return [p.key for p in problems]


def by_key(problems) -> dict[str, str]:
    return {p.key: p.message for p in problems}


def test_a_good_file_has_no_problems(tmp_path):
    f = tmp_path / "ok.toml"
    f.write_text('[tickerplant]\nmode = "batched"\n[eod]\ntime = "00:00"\ntz = "UTC"\n'
                 '[venues.X]\nport = 5401\n[jobs.hdb_retention]\nenabled = true\nkeep_days = 90\n')
    assert check_file(f) == []
    assert check_text("") == []


def test_every_problem_is_listed_with_its_key_path():
    problems = check_text(textwrap.dedent("""
        [tickerplant]
        ingst = "tcp://127.0.0.1:5010"
        batch_ms = "fast"
        mode = "turbo"
        [hdb.questdb]
        retries = -1
        [eod]
        time = "5pm"
        [venues.B]
        name = "C"
        [venues.Q]
        port = 0
        [jobs.hdb_compaction]
        min_files = 1
        [jobs.log_retention]
        tz = "Europe/Londn"
        [tickerplnt]
        mode = "batched"
    """))
    got = by_key(problems)
    assert set(got) == {"tickerplant.ingst", "tickerplant.batch_ms", "tickerplant.mode",
                        "hdb.questdb.retries", "eod.time", "venues.B.name", "venues.Q.port",
                        "jobs.hdb_compaction.min_files", "jobs.log_retention.tz", "tickerplnt"}
    assert "did you mean 'ingest'" in got["tickerplant.ingst"]
    assert "'fast'" in got["tickerplant.batch_ms"]
    assert "HH:MM" in got["eod.time"] and "'5pm'" in got["eod.time"]
    assert "[venues.C]" in got["venues.B.name"]
    assert "did you mean 'Europe/London'" in got["jobs.log_retention.tz"]
    assert "unknown section" in got["tickerplnt"] and "'tickerplant'" in got["tickerplnt"]


def test_a_venue_that_is_not_a_table():
    """(The loader itself raises AttributeError here, from gateway.config.venues_by_name.)"""
    got = by_key(check_data({"venues": {"A": 5, "B": {"port": "x"}}}))
    assert set(got) == {"venues.A", "venues.B.port"} and "must be a table" in got["venues.A"]


def test_bad_toml_is_reported_with_line_and_column():
    [p] = check_text('[tickerplant]\nmode = "batched"\nbatch_ms = = 5\n')
    assert p.key == "(file)" and "line 3, column" in p.message and "batch_ms = = 5" in p.message


def test_endpoints_on_one_address_and_port_collide():
    problems = check_data({
        "tickerplant": {"pub": "tcp://127.0.0.1:6001"},
        "rdb": {"query": "tcp://127.0.0.1:6001"},                 # same as tickerplant.pub
        "hdb": {"query": "tcp://localhost:6002"},
        "venues": {"A": {"port": 6002}, "B": {"port": 6003}},     # FIX listens on every interface
        "eod": {"tz": "America/NewYork"},
    })
    got = by_key(problems)
    assert set(got) == {"rdb.query", "venues.A.port", "eod.tz"}
    assert "tickerplant.pub" in got["rdb.query"] and "another port" in got["rdb.query"]
    assert "hdb.query" in got["venues.A.port"] and "every interface" in got["venues.A.port"]
    assert "did you mean 'America/New_York'" in got["eod.tz"]
    # different addresses on one port are fine; a wildcard address is not
    assert check_data({"rdb": {"query": "tcp://127.0.0.2:5011"}}) == []
    assert keys(check_data({"rdb": {"query": "tcp://*:5011"}})) == ["rdb.query"]


def test_a_bad_value_does_not_make_a_collision_up():
    """venues.B.port = 70000 is reported once; its default (5302) standing in is not compared."""
    problems = check_data({"venues": {"A": {"port": 5302}, "B": {"port": 70000}}})
    assert keys(problems) == ["venues.B.port"]


def test_an_endpoint_that_is_not_an_address_and_missing_schema_files(tmp_path):
    got = by_key(check_data({"tickerplant": {"ctl": "tcp://127.0.0.1"},
                             "schema_files": [str(tmp_path / "none.toml")]}))
    assert "tcp://ADDRESS:PORT" in got["tickerplant.ctl"]
    assert "none.toml" in got["schema_files"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[mytable]\ncolumns = 5\n")
    assert "schema_files" in by_key(check_data({"schema_files": [str(bad)]}))


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.dates() | st.datetimes(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["tickerplant", "eod", "rdb", "hdb", "questdb", "venues", "A",
                                       "jobs", "eod", "log_retention", "port", "tz", "time", "name",
                                       "home", "schema_files", "query", "pub", "enabled"])
                      | st.text(max_size=8), inner, max_size=5),
    max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["tickerplant", "eod", "rdb", "hdb", "feed", "venues", "jobs",
                                        "home", "schema_files"]) | st.text(max_size=10), junk, max_size=6))
def test_junk_never_crashes_the_checker(data):
    problems = check_data(data)
    assert isinstance(problems, list)
    assert all(p.key and p.message for p in problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_junk_text_never_crashes_the_checker(text):
    assert isinstance(check_text(text), list)


def test_show_names_each_source(tmp_path, monkeypatch):
    monkeypatch.delenv("TICKSTACK_HOME", raising=False)
    f = tmp_path / "c.toml"
    f.write_text('home = "/from/file"\n[hdb.questdb]\nenabled = true\n[venues.X]\nport = 5401\n'
                 '[eod]\ntz = "UTC"\n')
    _, entries, where = effective(f)
    src = {e.key: (e.value, e.source) for e in entries}
    assert where == f
    assert src["home"] == (__import__("pathlib").Path("/from/file"), f"file {f}")
    assert src["hdb.questdb.enabled"] == (True, f"file {f}")
    assert src["hdb.questdb.retries"] == (3, "default")
    assert src["venues.X.port"] == (5401, f"file {f}") and "venues.A.port" not in src
    assert src["jobs.eod.tz"] == ("UTC", f"file {f}, via eod.tz")
    assert src["jobs.eod.time"] == ("17:00", "default, via eod.time")
    _, entries, _ = effective(f, home=tmp_path / "h", home_source="env TICKSTACK_HOME")
    assert {e.key: e.source for e in entries}["home"] == "env TICKSTACK_HOME"


def tickstack(*args, env=None):
    e = {k: v for k, v in os.environ.items() if not k.startswith("TICKSTACK_")}
    return subprocess.run([sys.executable, "-m", "ops", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env={**e, **(env or {})})


def test_cli_config_check_and_show(tmp_path):
    bad = tmp_path / "bad.toml"
    port = free_port()
    bad.write_text(f'[tickerplant]\npub = "tcp://127.0.0.1:{port}"\nbatch_ms = 0\n'
                   f'[rdb]\nquery = "tcp://127.0.0.1:{port}"\n[eod]\ntz = "Mars/Olympus"\n')
    r = tickstack("config", "check", bad)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert [ln.split(": ")[1] for ln in lines] == ["tickerplant.batch_ms", "rdb.query", "eod.tz"]
    assert "3 problems" in r.stderr
    # the checker works even when the bad file is the one the environment points at
    r = tickstack("config", "check", env={"TICKSTACK_CONFIG": str(bad)})
    assert r.returncode == 1 and "rdb.query" in r.stdout
    # ...while any other command refuses it and points at the checker
    r = tickstack("jobs", env={"TICKSTACK_CONFIG": str(bad)})
    assert r.returncode != 0 and "config check" in r.stderr

    good = tmp_path / "good.toml"
    good.write_text('[tickerplant]\nmode = "batched"\n')
    r = tickstack("config", "check", good)
    assert r.returncode == 0 and r.stdout.strip() == f"ok: {good}"

    r = tickstack("--config", good, "config", "show", "--json", env={"TICKSTACK_HOME": str(tmp_path)})
    out = json.loads(r.stdout)
    assert out["file"] == str(good)
    assert out["values"]["home"] == {"value": str(tmp_path), "source": "env TICKSTACK_HOME"}
    assert out["values"]["tickerplant.mode"] == {"value": "batched", "source": f"file {good}"}
    assert out["values"]["hdb.questdb.enabled"]["source"] == "default"
    r = tickstack("--home", tmp_path, "config", "show")
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("home "))
    assert line.endswith("# --home") and str(tmp_path) in line
    assert any(ln.startswith("venues.A.port ") for ln in r.stdout.splitlines())
