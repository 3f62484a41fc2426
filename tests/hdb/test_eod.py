"""EOD writer: files any reader can read back as the input sorted by (sym, time); atomic and
idempotent partitions, also under kill -9; rebuild from a tickerplant log."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hdb_testdata import DAY, make_quotes, make_trades, sorted_by_sym_time

from hdb.eod import EodError, list_partitions, rebuild_from_log, save_day

ROOT = Path(__file__).resolve().parents[2]


def part_dir(hdb, table="trade", day=DAY) -> Path:
    return Path(hdb) / table / f"date={day}"


def as_plain(t: pa.Table) -> pa.Table:
    return t.select(["time", "sym", "price", "size"]).cast(pa.schema(
        [("time", pa.timestamp("ns")), ("sym", pa.string()), ("price", pa.float64()), ("size", pa.int64())]))


@pytest.mark.parametrize("time_sorted", [True, False])
def test_readers_get_the_input_sorted(tmp_path, registry, time_sorted):
    src = make_trades(50_000, nsyms=37, time_sorted=time_sorted)
    assert save_day(tmp_path, DAY, {"trade": src}, registry, progress=False) == {"trade": 50_000}
    want = sorted_by_sym_time(src)
    glob = str(tmp_path / "trade" / "*" / "*.parquet")

    by_duck = duckdb.sql(f"SELECT time, sym, price, size, date FROM read_parquet('{glob}', "
                         "hive_partitioning=true)").to_arrow_table()
    assert set(by_duck.column("date").to_pylist()) == {DAY}
    assert as_plain(by_duck).equals(as_plain(want))

    by_arrow = pq.read_table(part_dir(tmp_path))
    assert by_arrow.schema.field("time").type == pa.timestamp("ns")
    assert pa.types.is_dictionary(by_arrow.schema.field("sym").type)
    assert as_plain(by_arrow).equals(as_plain(want))

    by_polars = pl.read_parquet(glob, hive_partitioning=True).select(["time", "sym", "price", "size"])
    assert as_plain(by_polars.to_arrow()).equals(as_plain(want))


def test_file_layout_prunes_by_sym(tmp_path, registry):
    src = make_trades(600_000, nsyms=20)
    save_day(tmp_path, DAY, {"trade": src}, registry, progress=False)
    f = pq.ParquetFile(part_dir(tmp_path) / "part-0.parquet")
    md = f.metadata
    assert md.num_row_groups > 4
    col = {md.schema.column(i).name: i for i in range(md.num_columns)}
    rg = md.row_group(0)
    assert rg.column(col["price"]).compression == "ZSTD"
    assert "RLE_DICTIONARY" in rg.column(col["sym"]).encodings or "PLAIN_DICTIONARY" in rg.column(col["sym"]).encodings
    assert [(s.column_index, s.descending) for s in rg.sorting_columns] == [(col["sym"], False), (col["time"], False)]
    # every sym is found in at most 3 row groups by the min/max statistics alone
    for sym in ["S000", "S007", "S019"]:
        hits = sum(1 for i in range(md.num_row_groups)
                   if md.row_group(i).column(col["sym"]).statistics.min <= sym
                   <= md.row_group(i).column(col["sym"]).statistics.max)
        assert 1 <= hits <= 3, (sym, hits)


def test_rerun_is_idempotent_and_replaces(tmp_path, registry):
    a = make_trades(20_000, seed=1)
    save_day(tmp_path, DAY, {"trade": a}, registry, progress=False)
    first = pq.read_table(part_dir(tmp_path))
    save_day(tmp_path, DAY, {"trade": a}, registry, progress=False)
    assert pq.read_table(part_dir(tmp_path)).equals(first)
    b = make_trades(5_000, seed=2)
    save_day(tmp_path, DAY, {"trade": b}, registry, progress=False)
    assert as_plain(pq.read_table(part_dir(tmp_path))).equals(as_plain(sorted_by_sym_time(b)))
    # nothing but the partition is left in the table directory
    assert [p.name for p in (tmp_path / "trade").iterdir()] == [f"date={DAY}"]


def test_empty_tables_write_nothing(tmp_path, registry):
    out = save_day(tmp_path, DAY, {"trade": make_trades(0), "quote": make_quotes(10)}, registry,
                   progress=False)
    assert out == {"trade": 0, "quote": 10}
    assert not (tmp_path / "trade").exists()
    assert [(p.table, p.rows) for p in list_partitions(tmp_path)] == [("quote", 10)]


def test_bad_input_is_named(tmp_path, registry):
    t = make_trades(10).drop_columns(["size"])
    with pytest.raises(EodError, match="missing columns \\['size'\\]"):
        save_day(tmp_path, DAY, {"trade": t}, registry, progress=False)
    with pytest.raises(EodError, match="unknown table 'nosuch'"):
        save_day(tmp_path, DAY, {"nosuch": t}, registry, progress=False)
    bad = make_trades(10).set_column(2, "price", pa.array(["x"] * 10))
    with pytest.raises(EodError, match="column 'price'"):
        save_day(tmp_path, DAY, {"trade": bad}, registry, progress=False)


def test_list_partitions(tmp_path, registry):
    save_day(tmp_path, DAY, {"trade": make_trades(1000), "quote": make_quotes(500)}, registry,
             progress=False)
    parts = list_partitions(tmp_path)
    assert [(p.table, p.date, p.rows) for p in parts] == [("quote", DAY, 500), ("trade", DAY, 1000)]
    assert all(p.bytes == sum(f.stat().st_size for f in part_dir(tmp_path, p.table).glob("*.parquet"))
               for p in parts)


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    from hdb_testdata import DAY, make_trades
    from schemas.registry import load_registry
    from hdb.eod import save_day
    save_day({hdb!r}, DAY, {{"trade": make_trades({n}, nsyms=50, seed=7)}}, load_registry(), progress=False)
""")


def run_writer(hdb: Path, n: int) -> subprocess.Popen:
    code = WRITER.format(root=str(ROOT), tests=str(Path(__file__).parent), hdb=str(hdb), n=n)
    return subprocess.Popen([sys.executable, "-c", code])


def kill_mid_write(hdb: Path, n: int) -> None:
    """Start a writer and kill -9 it while its temporary partition is being written."""
    p = run_writer(hdb, n)
    tdir = hdb / "trade"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmps = list(tdir.glob(".tmp-*/*.parquet")) if tdir.exists() else []
        if tmps and any(f.stat().st_size > 0 for f in tmps):
            break
        if p.poll() is not None:
            pytest.fail("writer finished before it could be killed; make n larger")
        time.sleep(0.002)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL


@pytest.mark.process
def test_kill9_during_save_day_leaves_no_partial_partition(tmp_path, registry):
    n = 3_000_000
    hdb = tmp_path / "hdb"
    # first write of the day killed: no partition at all
    kill_mid_write(hdb, n)
    assert not part_dir(hdb).exists()
    assert list_partitions(hdb) == []
    # an existing day being replaced and killed: the old day is still there, whole
    old = make_trades(1000, nsyms=5, seed=3)
    save_day(hdb, DAY, {"trade": old}, registry, progress=False)
    kill_mid_write(hdb, n)
    assert as_plain(pq.read_table(part_dir(hdb))).equals(as_plain(sorted_by_sym_time(old)))
    # re-running gives the full day, and the debris of the killed runs is gone
    p = run_writer(hdb, n)
    assert p.wait() == 0
    got = duckdb.sql(f"SELECT count(*), sum(hash(time, sym, price, size)) FROM "
                     f"read_parquet('{part_dir(hdb)}/*.parquet')").fetchall()[0]
    want_t = make_trades(n, nsyms=50, seed=7)  # noqa: F841 - read by name by DuckDB below
    want = duckdb.sql("SELECT count(*), sum(hash(time, sym::VARCHAR, price, size)) FROM want_t").fetchall()[0]
    assert got == want
    assert [x.name for x in (hdb / "trade").iterdir()] == [f"date={DAY}"]


def test_rebuild_from_log(tmp_path, registry):
    from schemas.codec import encode
    from tickerplant.log import LogWriter, log_path

    trades, quotes = make_trades(30_000, seed=4), make_quotes(20_000, seed=5)
    path = log_path(tmp_path / "tplog", DAY)
    w = LogWriter(path, DAY)
    # many small messages, interleaved, as the tickerplant logs them
    msgs = []
    for i in range(0, 30_000, 1000):
        msgs.append(encode(registry["trade"], trades.slice(i, 1000)))
        if i < 20_000:
            msgs.append(encode(registry["quote"], quotes.slice(i, 1000)))
    w.append(msgs)
    w.end()
    out = rebuild_from_log(tmp_path / "hdb", path, registry, progress=False)
    assert out == {"trade": 30_000, "quote": 20_000}
    got = pq.read_table(part_dir(tmp_path / "hdb", "trade"))
    assert as_plain(got).equals(as_plain(sorted_by_sym_time(trades)))
    gq = pq.read_table(part_dir(tmp_path / "hdb", "quote")).cast(pa.schema(
        [(f.name, pa.string() if f.name == "sym" else f.type) for f in quotes.schema]))
    assert gq.equals(sorted_by_sym_time(quotes))


def test_big_day_parts_are_sym_ranges_in_order(tmp_path, registry, monkeypatch):
    import hdb.eod as eod
    monkeypatch.setattr(eod, "PARALLEL_MIN_ROWS", 10_000)
    monkeypatch.setattr(eod.os, "cpu_count", lambda: 4)
    src = make_trades(60_000, nsyms=30, time_sorted=False)
    save_day(tmp_path, DAY, {"trade": src}, registry, progress=False)
    files = sorted(part_dir(tmp_path).glob("*.parquet"))
    assert [f.name for f in files] == [f"part-{i}.parquet" for i in range(4)]
    parts = [pq.read_table(f) for f in files]
    syms = [set(p.column("sym").cast(pa.string()).to_pylist()) for p in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(syms) for b in syms[i + 1:])
    # the files in name order are one sorted sequence equal to the input
    assert as_plain(pa.concat_tables(parts)).equals(as_plain(sorted_by_sym_time(src)))


def test_rebuild_from_a_torn_log_keeps_the_valid_records(tmp_path, registry, caplog):
    from schemas.codec import encode
    from tickerplant.log import LogWriter, log_path

    trades = make_trades(5_000, seed=6)
    path = log_path(tmp_path / "tplog", DAY)
    w = LogWriter(path, DAY)
    w.append([encode(registry["trade"], trades.slice(i, 1000)) for i in range(0, 5_000, 1000)])
    w.close()
    os.truncate(path, path.stat().st_size - 10)   # the TP died mid-write of the last record
    with caplog.at_level("WARNING"):
        out = rebuild_from_log(tmp_path / "hdb", path, registry, progress=False)
    assert out == {"trade": 4_000}
    assert as_plain(pq.read_table(part_dir(tmp_path / "hdb"))).equals(
        as_plain(sorted_by_sym_time(trades.slice(0, 4_000))))


# -- the RDB's path: save_day on Store.snapshot() (chunked, one shared sym dictionary) ----------
def wide_registry():
    from schemas.registry import Registry, _parse
    wide = _parse("wide", {"time": "timestamp", "sym": "symbol", "note": "string",
                           "px": "float64", "f": "float32", "n": "int64", "i": "int32",
                           "h": "int16", "b": "int8", "ok": "bool", "venue": "symbol"}, "test")
    return Registry({"wide": wide, "trade": load_registry()["trade"]})


def load_registry():
    from schemas.registry import load_registry as load
    return load()


def wide_batch(rng, n: int, t0: int, sorted_time: bool) -> pa.RecordBatch:
    t = t0 + rng.integers(0, 50, n)   # few distinct times: many ties within a sym
    if sorted_time:
        t.sort()
    syms = np.array(["Q", "B", "ZZ", "A", "M", "K"])
    return pa.record_batch({
        "time": pa.array(t, pa.timestamp("ns")),
        "sym": pa.array(syms[rng.integers(0, len(syms), n)]).dictionary_encode(),
        "note": pa.array([f"n{x}" for x in rng.integers(0, 1000, n)]),
        "px": np.round(rng.random(n) * 10, 1), "f": rng.random(n).astype(np.float32),
        "n": rng.integers(-2**40, 2**40, n), "i": rng.integers(-5, 5, n).astype(np.int32),
        "h": rng.integers(-5, 5, n).astype(np.int16), "b": rng.integers(-5, 5, n).astype(np.int8),
        "ok": rng.random(n) < 0.5,
        "venue": pa.array(np.array(["X", "Y"])[rng.integers(0, 2, n)]).dictionary_encode()})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), chunk_rows=st.sampled_from([5, 64, 1000]),
       sorted_time=st.booleans(), run_rows=st.sampled_from([1, 10**9]),
       parts=st.sampled_from([1, 3]))
def test_eod_of_a_chunked_snapshot_equals_eod_of_the_combined_day_file_for_file(
        seed, chunk_rows, sorted_time, run_rows, parts):
    """Rows are gathered straight from the Store's chunks (runs of one chunk, or grouped by
    chunk and scattered): the files are byte for byte those of the same day combined first,
    and read back as the day sorted by sym then time."""
    import tempfile

    import hdb.eod as eod
    from rdb.store import Store

    reg = wide_registry()
    rng = np.random.default_rng(seed)
    store = Store(reg, ["wide", "trade"], chunk_rows=chunk_rows)
    t0 = 10**18
    for _ in range(int(rng.integers(1, 12))):
        n = int(rng.integers(0, 300))
        store.append("wide", wide_batch(rng, n, t0, sorted_time))
        t0 += 50 if sorted_time else 0
    store.append("trade", make_trades(int(rng.integers(1, 400)), nsyms=7, seed=seed).to_batches()[0])
    snap = store.snapshot()
    with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
        mp.setattr(eod, "MIN_CHUNK_ROWS", 1)       # keep tiny chunks: exercise the gather
        mp.setattr(eod, "RUN_ROWS", run_rows)
        mp.setattr(eod, "PARALLEL_MIN_ROWS", 1 if parts > 1 else 10**9)
        mp.setattr(eod.os, "cpu_count", lambda: parts)
        chunked, combined = Path(d) / "chunked", Path(d) / "combined"
        rows = save_day(chunked, DAY, snap, reg, progress=False)
        assert save_day(combined, DAY, {k: t.combine_chunks() for k, t in snap.items()}, reg,
                        progress=False) == rows
        files = sorted(p.relative_to(chunked) for p in chunked.rglob("*.parquet"))
        assert files == sorted(p.relative_to(combined) for p in combined.rglob("*.parquet"))
        for f in files:
            assert (chunked / f).read_bytes() == (combined / f).read_bytes(), f
        for name, t in snap.items():
            if not t.num_rows:
                continue
            got = pq.read_table(part_dir(chunked, name))
            got = got.cast(pa.schema([(f.name, pa.string()) if pa.types.is_dictionary(f.type)
                                      else f for f in got.schema]))
            assert got.equals(sorted_by_sym_time(t).cast(got.schema)), name
