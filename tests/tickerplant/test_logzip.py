"""Compressed logs: a .log.zst checks and replays exactly as the log it came from (torn and
corrupt ones included); compression never loses the original; retention compresses and deletes
exactly the closed days it should, and never today's or the newest log."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.codec import encode
from schemas.registry import load_registry
from tickerplant.log import FILE_HEADER, LogWriter, check, log_path
from tickerplant.logzip import LogZipError, compress, open_log, plain_path, tidy
from tickerplant.replay import replay

DAY = dt.date(2026, 11, 20)
REG = load_registry()
fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def trades(n: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    return pa.RecordBatch.from_pydict({
        "time": pa.array(1_700_000_000_000_000_000 + np.arange(n), pa.timestamp("ns")),
        "sym": [f"S{i}" for i in rng.integers(0, 5, n)],
        "price": rng.random(n), "size": rng.integers(1, 100, n)})


def write_log(d, batches: list[int], ended: bool, day=DAY, seed=0):
    p = log_path(d, day)
    w = LogWriter(p, day)
    for i, n in enumerate(batches):
        w.append([encode(REG["trade"], trades(n, seed + i))])
    w.end() if ended else w.close()
    return p


def damage(p, how: str, at: float, byte: int) -> None:
    raw = bytearray(p.read_bytes())
    k = int(at * len(raw))
    if how == "torn":
        del raw[max(1, k):]
    elif how == "flip":
        raw[k] ^= byte or 1
    elif how == "garbage":
        raw += bytes([byte]) * (1 + k % 50)
    p.write_bytes(raw)


def same_check(a, b, a_name, b_name):
    fields = ("date", "records", "last_seq", "valid_bytes", "size", "ended", "ok")
    assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert (a.error or "").replace(str(a_name), "X") == (b.error or "").replace(str(b_name), "X")


@fast
@given(batches=st.lists(st.integers(1, 40), max_size=12), ended=st.booleans(),
       how=st.sampled_from(["none", "torn", "flip", "garbage"]), at=st.floats(0, 0.999),
       byte=st.integers(0, 255))
def test_a_compressed_log_checks_and_replays_like_the_original(tmp_path_factory, batches, ended, how,
                                                               at, byte):
    d = tmp_path_factory.mktemp("logs")
    p = write_log(d, batches, ended)
    damage(p, how, at, byte)
    keep = d / "copy.log"
    shutil.copy(p, keep)
    want = check(keep)
    want_rows = _replayed(keep)

    z = compress(p)
    assert z.name == "tp_20261120.log.zst" and not p.exists()
    with open_log(z) as plain:
        assert plain.read_bytes() == keep.read_bytes()
        same_check(want, check(plain), keep, plain)
        assert _replayed(plain) == want_rows
    assert sorted(x.name for x in d.iterdir()) == ["copy.log", z.name]   # the temporary is gone


def _replayed(p):
    out = []
    try:
        for seq, table, batch in replay(p, REG):
            out.append((seq, table, batch.to_pydict()))
    except ValueError as e:   # a damaged record ends the replay after everything before it
        out.append(("stopped", type(e).__name__))
    return out


def test_any_zstd_tool_reads_it_and_it_reads_theirs(tmp_path):
    if not shutil.which("zstd"):
        pytest.skip("the zstd command line tool is not installed (apt-get install -y zstd)")
    p = write_log(tmp_path, [10, 20], True)
    raw = p.read_bytes()
    z = compress(p)
    assert subprocess.run(["zstd", "-d", "-c", str(z)], capture_output=True, check=True).stdout == raw
    other = tmp_path / "tp_20261121.log"
    other.write_bytes(raw)
    subprocess.run(["zstd", "-q", "-19", "--rm", str(other)], check=True)
    with open_log(tmp_path / "tp_20261121.log.zst") as plain:
        assert plain.read_bytes() == raw


def test_damaged_zstd_data_is_an_error_naming_the_file(tmp_path):
    z = compress(write_log(tmp_path, [50] * 20, True))
    raw = bytearray(z.read_bytes())
    del raw[len(raw) // 2:]
    z.write_bytes(raw)
    with pytest.raises(LogZipError, match="tp_20261120.log.zst: damaged zstd data"):
        with open_log(z):
            pass
    assert [x.name for x in tmp_path.iterdir()] == [z.name]
    with pytest.raises(LogZipError, match="already compressed"):
        compress(z)


def test_a_crash_between_rename_and_delete_is_finished_by_the_next_run(tmp_path):
    p = write_log(tmp_path, [5, 5], True)
    raw = p.read_bytes()
    (tmp_path / "tp_20261120.log.zst").write_bytes(b"half of an old attempt")
    (tmp_path / ".tp_20261120.log.zst.1234abcd.tmp").write_bytes(b"")   # a temporary is ignored
    z = compress(p)
    with open_log(z) as plain:
        assert plain.read_bytes() == raw
    assert plain_path(z) == p


def test_open_log_removes_its_copy_when_the_reader_fails(tmp_path):
    z = compress(write_log(tmp_path, [5], True))
    with pytest.raises(RuntimeError):
        with open_log(z) as plain:
            assert plain.exists() and plain.name.startswith(".tp_20261120.log.zst.")
            raise RuntimeError("reader died")
    assert not plain.exists()
    with open_log(tmp_path / "x.log") as same:   # a plain log is given as is
        assert same == tmp_path / "x.log"


# -- retention ----------------------------------------------------------------------------------
TODAY = dt.date(2026, 3, 20)


def day(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def test_retention_compresses_and_deletes_exactly_the_closed_old_days(tmp_path):
    for age in (40, 31, 30, 9, 3, 2, 1):
        write_log(tmp_path, [3], ended=True, day=day(age))
    write_log(tmp_path, [3], ended=False, day=day(5))     # the TP died that day: no end record
    write_log(tmp_path, [3], ended=False, day=day(12))    # ...long ago
    (tmp_path / f"tp_{day(40):%Y%m%d}.log.torn-99").write_bytes(b"torn")
    (tmp_path / f"tp_{day(31):%Y%m%d}.log.repaired").write_bytes(b"x")
    write_log(tmp_path, [3], ended=False, day=TODAY)      # the TP's current log
    originals = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    dry = tidy(tmp_path, TODAY, keep_days=30, compress_after_days=1, compress_unended_after_days=7,
               dry_run=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == originals
    res = tidy(tmp_path, TODAY, keep_days=30, compress_after_days=1, compress_unended_after_days=7)
    assert [p.name for p in dry.compressed] == [p.name for p in res.compressed]
    assert sorted(p.name for p in res.deleted) == sorted(
        [f"tp_{day(40):%Y%m%d}.log", f"tp_{day(40):%Y%m%d}.log.torn-99",
         f"tp_{day(31):%Y%m%d}.log", f"tp_{day(31):%Y%m%d}.log.repaired"])
    assert sorted(p.name for p in res.compressed) == sorted(
        f"tp_{day(n):%Y%m%d}.log.zst" for n in (30, 12, 9, 3, 2))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([f"tp_{day(n):%Y%m%d}.log.zst" for n in (30, 12, 9, 3, 2)]
                           + [f"tp_{day(n):%Y%m%d}.log" for n in (5, 1, 0)])
    for n in (30, 12, 9, 3, 2):   # every compressed log holds its original bytes
        with open_log(tmp_path / f"tp_{day(n):%Y%m%d}.log.zst") as plain:
            assert plain.read_bytes() == originals[f"tp_{day(n):%Y%m%d}.log"]
    why = {p.name: w for p, w in res.kept}
    assert "no end-of-day record" in why[f"tp_{day(5):%Y%m%d}.log"]
    assert "compressed after 1" in why[f"tp_{day(1):%Y%m%d}.log"]
    assert "today" in why[f"tp_{TODAY:%Y%m%d}.log"]


def test_the_newest_log_is_never_touched_even_when_old(tmp_path):
    """The TP was down for weeks: its last log is old, but a restarting TP continues it."""
    write_log(tmp_path, [3], ended=True, day=day(50))
    write_log(tmp_path, [3], ended=False, day=day(40))
    res = tidy(tmp_path, TODAY, keep_days=10)
    assert [p.name for p in res.deleted] == [f"tp_{day(50):%Y%m%d}.log"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tp_{day(40):%Y%m%d}.log"]
    assert "newest" in dict((p.name, w) for p, w in res.kept)[f"tp_{day(40):%Y%m%d}.log"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(logs=st.dictionaries(st.integers(-2, 20), st.booleans(), min_size=1, max_size=8),
       keep=st.none() | st.integers(1, 15), after=st.none() | st.integers(1, 6),
       unended=st.integers(1, 10))
def test_retention_rules_hold_for_any_set_of_logs(tmp_path_factory, logs, keep, after, unended):
    d = tmp_path_factory.mktemp("tplog")
    for age, ended in logs.items():
        write_log(d, [2], ended, day=day(age))
    newest = min(logs)   # the smallest age is the latest day
    res = tidy(d, TODAY, keep, after, unended)
    left = {p.name for p in d.iterdir()}
    for age, ended in logs.items():
        name = f"tp_{day(age):%Y%m%d}.log"
        if age <= 0 or age == newest:
            assert name in left                                     # today's / newest: as is
        elif keep is not None and age > keep:
            assert name not in left and name + ".zst" not in left   # deleted
        elif after is not None and age > after and (ended or age > unended):
            assert name + ".zst" in left and name not in left       # compressed
        else:
            assert name in left
    assert not res.errors


# -- the CLI reads compressed logs --------------------------------------------------------------
def ts(*args):
    return subprocess.run([sys.executable, "-m", "ops", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_log_check_and_replay_read_a_compressed_log(tmp_path):
    p = write_log(tmp_path, [4, 3, 5], ended=False)
    damage(p, "torn", 0.9, 0)
    keep = tmp_path / "plain" / p.name
    keep.parent.mkdir()
    shutil.copy(p, keep)
    z = compress(p)

    a, b = ts("log", "check", keep, "--json"), ts("log", "check", z, "--json")
    assert a.returncode == b.returncode == 1                    # torn: damaged, says so
    ja, jb = json.loads(a.stdout), json.loads(b.stdout)
    assert jb.pop("file") == str(z) and ja.pop("file") == str(keep)
    assert ja == jb and ja["records"] == 2
    text = ts("log", "check", z)
    assert f"tickstack log repair {z}" in text.stdout and str(z) in text.stdout

    ra, rb = ts("log", "replay", keep), ts("log", "replay", z)
    assert ra.returncode == rb.returncode == 1
    assert ra.stdout == rb.stdout and ra.stdout.count("\n") == 2 + 4 + 3
    assert str(z) in rb.stderr and ".reading" not in rb.stderr

    rep = ts("log", "repair", z)
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "tp_20261120.log.repaired").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["plain", "tp_20261120.log.repaired", z.name]
    assert check(tmp_path / "tp_20261120.log.repaired").records == 2
    assert FILE_HEADER.size < (tmp_path / "tp_20261120.log.repaired").stat().st_size
