"""HDB housekeeping: retention deletes exactly the partitions older than keep_days (never
today's), a whole partition at a time; compaction keeps every row, writes the EOD writer's
sorted layout, and leaves what it must not touch alone."""
from __future__ import annotations

import datetime as dt
import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hdb_testdata import make_trades, sorted_by_sym_time
from hypothesis import HealthCheck, given, settings, strategies as st

from hdb.eod import list_partitions, save_day
from hdb.housekeeping import BUSY_S, compact, drop_old

TODAY = dt.date(2026, 3, 10)
few = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def tiny_day(hdb, table, day, registry):
    save_day(hdb, day, {table: make_trades(5, nsyms=2, day=day)}, registry, progress=False)


def plain(t: pa.Table) -> pa.Table:
    """Comparable form: plain string syms, columns in the table's order."""
    t = t.select(["time", "sym", "price", "size"])
    return t.set_column(1, "sym", t.column("sym").cast(pa.string()))


@few
@given(offsets=st.sets(st.integers(-12, 3), min_size=1, max_size=10), keep=st.integers(1, 8))
def test_retention_deletes_exactly_the_partitions_older_than_keep_days(tmp_path_factory, registry,
                                                                       offsets, keep):
    hdb = tmp_path_factory.mktemp("hdb")
    days = {TODAY + dt.timedelta(days=o) for o in offsets}
    for d in days:
        tiny_day(hdb, "trade", d, registry)
    gone = drop_old(hdb, TODAY, keep)
    want_gone = {d for d in days if d < TODAY and (TODAY - d).days > keep}
    assert {g.date for g in gone} == want_gone
    assert {p.date for p in list_partitions(hdb)} == days - want_gone
    assert TODAY not in want_gone
    assert not [p for p in (hdb / "trade").iterdir() if p.name.startswith(".")]   # no leftovers


def test_retention_across_tables_and_dry_run(tmp_path, registry):
    for d in (TODAY, TODAY - dt.timedelta(days=1), TODAY - dt.timedelta(days=3)):
        tiny_day(tmp_path, "trade", d, registry)
    save_day(tmp_path, TODAY - dt.timedelta(days=5),
             {"quote": pa.table({"time": pa.array([1], pa.timestamp("ns")), "sym": ["A"], "bid": [1.0],
                                 "ask": [1.1], "bsize": [1], "asize": [1]})}, registry, progress=False)
    before = list_partitions(tmp_path)
    would = drop_old(tmp_path, TODAY, 2, dry_run=True)
    assert list_partitions(tmp_path) == before          # a dry run changes nothing
    assert sorted((g.table, g.date) for g in would) == [("quote", TODAY - dt.timedelta(days=5)),
                                                       ("trade", TODAY - dt.timedelta(days=3))]
    assert all(g.files == 1 and g.bytes > 0 for g in would)
    assert drop_old(tmp_path, TODAY, 2) == would
    assert sorted(p.date for p in list_partitions(tmp_path)) == [TODAY - dt.timedelta(days=1), TODAY]
    # a query over what is left sees no trace of the deleted days
    got = duckdb.sql(f"select distinct date from read_parquet('{tmp_path}/*/*/*.parquet', "
                     "hive_partitioning=true) order by 1").fetchall()
    assert [r[0] for r in got] == [TODAY - dt.timedelta(days=1), TODAY]
    with pytest.raises(ValueError, match="at least 1"):
        drop_old(tmp_path, TODAY, 0)


def test_a_crashed_deletion_leaves_a_hidden_directory_the_next_run_removes(tmp_path, registry):
    tiny_day(tmp_path, "trade", TODAY - dt.timedelta(days=1), registry)
    # what a kill -9 between the rename and the rmtree leaves: hidden from readers' date=* glob
    tdir = tmp_path / "trade"
    (tdir / ".del-date=2026-01-01-deadbeef").mkdir()
    (tdir / ".del-date=2026-01-01-deadbeef" / "part-0.parquet").write_bytes(b"x")
    assert [p.date for p in list_partitions(tmp_path)] == [TODAY - dt.timedelta(days=1)]
    assert drop_old(tmp_path, TODAY, 30) == []
    assert sorted(p.name for p in tdir.iterdir()) == [f"date={TODAY - dt.timedelta(days=1)}"]


def write_backfill(hdb, day, table: pa.Table, nfiles: int, seed: int = 0) -> None:
    """A day as an outside tool leaves it: many small files, rows in no particular order,
    syms as plain strings in some files and dictionaries in others."""
    part = hdb / "trade" / f"date={day}"
    part.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shuffled = table.take(pa.array(rng.permutation(table.num_rows)))
    cuts = np.sort(rng.choice(np.arange(1, table.num_rows), nfiles - 1, replace=False)) if nfiles > 1 else []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, table.num_rows])):
        chunk = shuffled.slice(a, b - a)
        if i % 2:
            chunk = chunk.set_column(1, "sym", chunk.column("sym").cast(pa.string()))
        pq.write_table(chunk, part / f"backfill-{i:03d}.parquet")


@few
@given(rows=st.integers(20, 3000), nfiles=st.integers(4, 12), nsyms=st.integers(1, 30),
       seed=st.integers(0, 1000))
def test_compaction_keeps_every_row_in_the_eod_writers_order(tmp_path_factory, registry, rows, nfiles,
                                                             nsyms, seed):
    hdb = tmp_path_factory.mktemp("hdb")
    day = TODAY - dt.timedelta(days=2)
    src = make_trades(rows, nsyms=nsyms, day=day, seed=seed, time_sorted=bool(seed % 2))
    write_backfill(hdb, day, src, nfiles, seed)
    res = compact(hdb, registry, min_files=4, today=TODAY)
    assert [(c.table, c.date, c.files_before, c.rows) for c in res.compacted] == [("trade", day, nfiles, rows)]
    part = hdb / "trade" / f"date={day}"
    files = sorted(part.glob("*.parquet"))
    assert [f.name for f in files] == ["part-0.parquet"] and res.compacted[0].files_after == 1
    got = pq.read_table(part)
    assert plain(got).equals(plain(sorted_by_sym_time(src)))   # every row, sorted by sym then time
    meta = pq.ParquetFile(files[0]).metadata.row_group(0)
    assert [c.column_index for c in meta.sorting_columns] == [1, 0]
    # the layout EOD writes for the same rows (same file names, schema, sort, compression)
    ref = tmp_path_factory.mktemp("ref")
    save_day(ref, day, {"trade": src}, registry, progress=False)
    ref_file = pq.ParquetFile(ref / "trade" / f"date={day}" / "part-0.parquet")
    assert pq.ParquetFile(files[0]).schema_arrow == ref_file.schema_arrow
    assert plain(got).equals(plain(ref_file.read()))
    assert compact(hdb, registry, min_files=4, today=TODAY).compacted == []   # once is enough


def test_compaction_leaves_alone_what_it_must(tmp_path, registry):
    old, today = TODAY - dt.timedelta(days=3), TODAY
    write_backfill(tmp_path, old, make_trades(200, day=old), 3)                  # too few files
    write_backfill(tmp_path, today, make_trades(200, day=today), 6)              # today: EOD's job
    busy = TODAY - dt.timedelta(days=4)
    write_backfill(tmp_path, busy, make_trades(200, day=busy), 6)
    (tmp_path / "trade" / f".tmp-date={busy}-abcd1234").mkdir()                # a writer at work
    (tmp_path / "mystery" / f"date={old}").mkdir(parents=True)
    for i in range(6):
        pq.write_table(pa.table({"x": [i]}), tmp_path / "mystery" / f"date={old}" / f"f{i}.parquet")
    stale = TODAY - dt.timedelta(days=5)
    write_backfill(tmp_path, stale, make_trades(200, day=stale), 6)
    crashed = tmp_path / "trade" / f".tmp-date={stale}-00000000"               # a crash's leftover
    crashed.mkdir()
    os.utime(crashed, (0, 0))
    before = {p: sorted(p.glob("*")) for p in (tmp_path / "trade").glob("date=*")}

    res = compact(tmp_path, registry, min_files=5, today=TODAY)
    assert [(c.table, c.date) for c in res.compacted] == [("trade", stale)]
    assert not crashed.exists()
    why = {(t, d): w for t, d, w in res.skipped}
    assert "another writer" in why[("trade", busy)]
    assert "not defined" in why[("mystery", old)]
    for d in (old, today, busy):
        p = tmp_path / "trade" / f"date={d}"
        assert sorted(p.glob("*")) == before[p]
    assert BUSY_S >= 60


def test_compaction_dry_run_and_a_file_that_does_not_fit(tmp_path, registry):
    day = TODAY - dt.timedelta(days=1)
    write_backfill(tmp_path, day, make_trades(100, day=day), 5)
    would = compact(tmp_path, registry, min_files=5, today=TODAY, dry_run=True)
    assert [(c.date, c.files_before, c.rows) for c in would.compacted] == [(day, 5, 100)]
    assert len(list((tmp_path / "trade" / f"date={day}").glob("*.parquet"))) == 5
    pq.write_table(pa.table({"time": [1], "sym": ["A"], "colour": ["red"]}),
                   tmp_path / "trade" / f"date={day}" / "odd.parquet")
    res = compact(tmp_path, registry, min_files=5, today=TODAY)
    assert res.compacted == [] and "odd.parquet" in res.skipped[0][2]
    assert len(list((tmp_path / "trade" / f"date={day}").glob("*.parquet"))) == 6   # untouched
