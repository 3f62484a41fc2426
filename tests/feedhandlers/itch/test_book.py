"""Top of book and trades: a hand-checked scenario, the slow reference book on a simulated
day, streaming in chunks, time zones, and the tickstack wire codec."""
import datetime as dt
import struct
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedhandlers.itch import book
from feedhandlers.itch.book import (iter_itch_batches, itch_tables, midnight_utc_ns,
                                    reference_tables)
from feedhandlers.itch.spec import DTYPES, split_timestamps
from feedhandlers.itch.writer import simulate, write_itch
from schemas.codec import decode, encode, validate
from schemas.registry import load_registry

DATE = "2026-11-20"


def msg(t: str, locate: int, ns: int, *body) -> bytes:
    dtp = DTYPES[t]
    rec = np.zeros(1, dtp)
    rec["type"], rec["stock_locate"] = t.encode(), locate
    rec["ts_hi"], rec["ts_lo"] = split_timestamps([ns])
    for name, v in zip(dtp.names[5:], body):
        rec[name] = v
    return struct.pack(">H", dtp.itemsize) + rec.tobytes()


def directory(locate: int, sym: str) -> bytes:
    return msg("R", locate, 0, sym.ljust(8).encode(), b"Q", b"N", 100, b"N", b"C", b"Z ", b"P",
               b"N", b"N", b"1", b"N", 0, b"N")


@pytest.fixture(scope="module")
def day() -> bytes:
    return simulate(messages=30_000, seed=5)


def _equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for c in a:
        assert len(a[c]) == len(b[c]), c
        if a[c].dtype.kind == "f":
            assert np.array_equal(a[c], b[c], equal_nan=True), c
        else:
            assert np.array_equal(a[c], b[c]), c


def test_hand_checked_scenario():
    S = b"ZVZZT   "
    buf = b"".join([
        directory(7, "ZVZZT"), directory(8, "OTHER"),
        msg("A", 7, 10, 1, b"B", 100, S, 100_000),           # bid 10.00 x 100
        msg("F", 7, 11, 2, b"S", 200, S, 101_000, b"GSCO"),  # ask 10.10 x 200
        msg("A", 7, 12, 3, b"B", 300, S, 100_000),           # bid 10.00 x 400
        msg("A", 7, 13, 4, b"B", 50, S, 99_000),             # below the touch: no quote
        msg("E", 7, 14, 1, 40, 1),                           # trade 40 @ 10.00, bid x 360
        msg("C", 7, 15, 3, 10, 2, b"Y", 100_500),            # trade 10 @ 10.05, bid x 350
        msg("C", 7, 16, 3, 10, 3, b"N", 100_500),            # not printable, bid x 340
        msg("X", 7, 17, 2, 50),                              # ask x 150
        msg("U", 7, 18, 2, 5, 100, 100_900),                 # ask 10.09 x 100
        msg("P", 7, 19, 0, b"B", 25, S, 100_400, 4),         # hidden trade 25 @ 10.04
        msg("D", 7, 20, 1),                                  # bid x 280
        msg("D", 7, 21, 3),                                  # bid 9.90 x 50
        msg("D", 7, 22, 99),                                 # unknown order: ignored
        msg("D", 7, 23, 5),                                  # no ask
        msg("A", 8, 24, 6, b"S", 10, b"OTHER   ", 5_000),    # another stock
    ])
    tabs = itch_tables(buf, DATE)
    m = midnight_utc_ns(DATE)
    q = tabs["quote"]
    assert q["time"].tolist() == [m + t for t in (10, 11, 12, 14, 15, 16, 17, 18, 20, 21, 23, 24)]
    assert q["sym"].tolist() == ["ZVZZT"] * 11 + ["OTHER"]
    assert np.array_equal(q["bid"], [10, 10, 10, 10, 10, 10, 10, 10, 10, 9.9, 9.9, np.nan],
                          equal_nan=True)
    assert np.array_equal(q["ask"], [np.nan, 10.1, 10.1, 10.1, 10.1, 10.1, 10.1, 10.09, 10.09,
                                     10.09, np.nan, 0.5], equal_nan=True)
    assert q["bsize"].tolist() == [100, 100, 400, 360, 350, 340, 340, 340, 280, 50, 50, 0]
    assert q["asize"].tolist() == [0, 200, 200, 200, 200, 200, 150, 100, 100, 100, 0, 10]
    t = tabs["trade"]
    assert t["time"].tolist() == [m + 14, m + 15, m + 19]
    assert t["price"].tolist() == [10.0, 10.05, 10.04]
    assert t["size"].tolist() == [40, 10, 25]
    assert t["sym"].tolist() == ["ZVZZT"] * 3
    _equal(q, reference_tables(buf, DATE)["quote"])


def test_matches_reference_book(day):
    fast, slow = itch_tables(day, DATE), reference_tables(day, DATE)
    assert len(fast["quote"]["time"]) > 1000 and len(fast["trade"]["time"]) > 1000
    _equal(fast["quote"], slow["quote"])
    _equal(fast["trade"], slow["trade"])
    q = fast["quote"]
    both = ~np.isnan(q["bid"]) & ~np.isnan(q["ask"])
    assert (q["bid"][both] < q["ask"][both]).all()  # the simulator's book never crosses
    assert (np.diff(q["time"]) >= 0).all()


@pytest.mark.parametrize("batch", [1_000, 7_777])
def test_batches_are_the_whole_file_in_order(day, tmp_path, batch):
    path = tmp_path / "day.itch"
    path.write_bytes(day)
    whole = itch_tables(path, DATE)
    got = {"quote": [], "trade": []}
    for table, cols in iter_itch_batches(path, DATE, batch_messages=batch):
        assert len(cols["time"]) > 0
        got[table].append(cols)
    assert len(got["quote"]) > 3
    for table in got:
        cat = {c: np.concatenate([g[c] for g in got[table]]) for c in whole[table]}
        _equal(cat, whole[table])


def test_midnight_new_york():
    # EST (UTC-5) in winter, EDT (UTC-4) in summer
    assert midnight_utc_ns("2026-01-15") == int(dt.datetime(2026, 1, 15, 5, tzinfo=dt.timezone.utc)
                                                .timestamp()) * 10**9
    assert midnight_utc_ns(dt.date(2026, 7, 1)) == int(dt.datetime(2026, 7, 1, 4, tzinfo=dt.timezone.utc)
                                                       .timestamp()) * 10**9


def test_columns_encode_as_tickstack_tables(day):
    reg = load_registry()
    for table, cols in itch_tables(day, DATE).items():
        schema = reg[table]
        assert list(cols) == schema.names
        wire = encode(schema, cols)
        validate(wire, reg)
        head, batch = decode(wire, reg)
        assert head.table == table and batch.num_rows == len(cols["time"])
        assert batch.column("sym").to_pylist()[:5] == cols["sym"][:5].tolist()
        assert np.array_equal(batch.column("time").to_numpy().view(np.int64), cols["time"])
        assert np.array_equal(batch.column(schema.names[2]).to_numpy(), cols[schema.names[2]],
                              equal_nan=True)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.itch"
    path.write_bytes(b"")
    tabs = itch_tables(path, DATE)
    assert all(len(v) == 0 for t in tabs.values() for v in t.values())
    assert list(iter_itch_batches(path, DATE)) == []


def test_writer_is_deterministic_and_complete(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert write_itch(a, messages=5_000, seed=1) == write_itch(b, messages=5_000, seed=1)
    assert a.read_bytes() == b.read_bytes()
    assert simulate(messages=5_000, seed=2) != a.read_bytes()
    from feedhandlers.itch.parser import parse
    p = parse(a.read_bytes())
    assert p.n_errors == 0 and p.n_messages == 5_000
    assert all(p.counts[t] > 0 for t in DTYPES)
    assert p.records["S"]["event_code"].tolist() == [b"O", b"S", b"Q", b"M", b"E", b"C"]
    ts = np.concatenate([p.timestamps(t) for t in DTYPES])[np.argsort(np.concatenate(
        [p.index[t] for t in DTYPES]))]
    assert (np.diff(ts.astype(np.int64)) >= 0).all()


SMALL = simulate(messages=2_000, seed=13)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(SMALL) - 1), st.integers(0, 255)),
                min_size=1, max_size=40))
def test_corrupted_bytes_still_match_the_reference(flips):
    """Flipped bytes make unknown orders, oversized executions, reused references, broken
    frames...: the fast book must still agree with the plain one, whole and streamed."""
    buf = bytearray(SMALL)
    for i, v in flips:
        buf[i] = v
    buf = bytes(buf)
    fast, slow = itch_tables(buf, DATE), reference_tables(buf, DATE)
    for table in fast:
        _equal(fast[table], slow[table])
    errs: dict = {}
    with mock.patch.object(book, "MIN_WINDOW", 5_000):  # many windows, some frames cut
        parts = list(iter_itch_batches(buf, DATE, batch_messages=100, errors=errs))
    for table in fast:
        got = [c for t, c in parts if t == table]
        if got:
            _equal({c: np.concatenate([g[c] for g in got]) for c in fast[table]}, fast[table])
        else:
            assert len(fast[table]["time"]) == 0
    from feedhandlers.itch.parser import parse
    assert errs == parse(buf).errors


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), st.integers(200, 3_000))
def test_random_days_match_the_reference(seed, nsyms, messages):
    buf = simulate(syms=[f"S{i}" for i in range(nsyms)], messages=messages, seed=seed)
    fast, slow = itch_tables(buf, DATE), reference_tables(buf, DATE)
    for table in fast:
        _equal(fast[table], slow[table])
