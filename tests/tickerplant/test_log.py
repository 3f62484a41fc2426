"""Log framing: what is written reads back; damage is found at the exact record; repair keeps
every valid record; a torn tail is cut when the TP continues a day."""
from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tickerplant.log import (FILE_HEADER, FRAME, LogError, LogReader, LogWriter, check, log_path,
                             repair)

DAY = dt.date(2026, 11, 20)
payloads = st.lists(st.binary(min_size=0, max_size=300).map(lambda b: b"TSB1" + b), min_size=1, max_size=40)
fast = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, items, split=3):
    p = log_path(tmp_path, DAY)
    if p.exists():
        p.unlink()
    w = LogWriter(p, DAY)
    for i in range(0, len(items), split):
        w.append(items[i: i + split])
    w.close()
    return p


def _ends(items):
    out, pos = [], FILE_HEADER.size
    for it in items:
        pos += FRAME.size + len(it)
        out.append(pos)
    return out


@fast
@given(payloads)
def test_records_read_back_in_order(tmp_path, items):
    p = _write(tmp_path, items)
    recs = list(LogReader(p).records())
    assert [bytes(r.payload) for r in recs] == items
    assert [r.seq for r in recs] == list(range(1, len(items) + 1))
    res = check(p)
    assert res.ok and res.records == len(items) and res.valid_bytes == res.size


@fast
@given(payloads, st.data())
def test_a_damaged_byte_is_found_at_its_record_and_repair_salvages_the_rest(tmp_path, items, data):
    p = _write(tmp_path, items)
    raw = bytearray(p.read_bytes())
    at = data.draw(st.integers(FILE_HEADER.size, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    p.write_bytes(raw)
    ends = _ends(items)
    k = sum(1 for e in ends if e <= at)  # records wholly before the damage
    res = check(p)
    assert not res.ok and res.records == k
    assert res.valid_bytes == (ends[k - 1] if k else FILE_HEADER.size)
    out = repair(p)
    assert p.read_bytes() == bytes(raw)  # the original is kept as it was
    fixed = check(out.out)
    assert fixed.ok and out.kept == k
    got = [bytes(r.payload) for r in LogReader(out.out).records()]
    assert got[:k] == items[:k]
    assert got[k:] == items[k + 1:]  # every record after the damaged one is salvaged
    assert out.salvaged == len(items) - k - 1


@fast
@given(payloads, st.data())
def test_a_torn_tail_is_cut_and_the_day_continues(tmp_path, items, data):
    p = _write(tmp_path, items)
    raw = p.read_bytes()
    cut = data.draw(st.integers(FILE_HEADER.size, len(raw)))
    p.write_bytes(raw[:cut])
    k = sum(1 for e in _ends(items) if e <= cut)
    w = LogWriter(p, DAY)
    assert w.seq == k
    w.append([b"TSB1next"])
    w.close()
    res = check(p)
    assert res.ok and res.records == k + 1
    assert [bytes(r.payload) for r in LogReader(p).records()][-1] == b"TSB1next"


def test_corruption_with_good_records_after_it_is_not_truncated(tmp_path):
    items = [b"TSB1" + bytes([i]) * 20 for i in range(10)]
    p = _write(tmp_path, items)
    raw = bytearray(p.read_bytes())
    raw[FILE_HEADER.size + 3 * (FRAME.size + 25) + 20] ^= 0xFF
    p.write_bytes(raw)
    with pytest.raises(LogError, match="tickstack log repair"):
        LogWriter(p, DAY)
    assert p.read_bytes() == bytes(raw)


def test_not_a_log(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"hello world, not a log at all")
    assert "not a tickstack log" in check(p).error
    with pytest.raises(LogError):
        repair(p)


def test_end_of_day_marker(tmp_path):
    p = log_path(tmp_path, DAY)
    w = LogWriter(p, DAY)
    w.append([b"TSB1a"])
    w.end()
    assert check(p).ended and check(p).records == 2
