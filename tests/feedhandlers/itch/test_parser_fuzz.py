"""Property tests of the parser on damaged input: it never raises, it counts what is wrong,
and every good message before the damage comes out unchanged."""
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feedhandlers.itch import parser as P
from feedhandlers.itch.parser import parse
from feedhandlers.itch.writer import simulate

DAY = simulate(messages=3_000, seed=11)
GOOD = parse(DAY)
OFFS = GOOD.offsets
ENDS = OFFS + 2 + (np.frombuffer(DAY, np.uint8)[OFFS].astype(np.int64) << 8) \
    + np.frombuffer(DAY, np.uint8)[OFFS + 1]
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same_prefix(p, k: int) -> None:
    """The first k good messages of DAY are the first k messages of p, byte for byte."""
    assert p.n_messages >= k
    assert np.array_equal(p.offsets[:k], OFFS[:k])
    for t, rec in GOOD.records.items():
        keep = GOOD.index[t] < k
        assert np.array_equal(p.records[t][: keep.sum()], rec[keep]), t


def _consistent(p, n: int) -> None:
    assert sum(p.counts.values()) == p.n_messages == len(p.offsets)
    assert 0 <= p.consumed <= n
    assert set(p.errors) == set(P.ERROR_KINDS)
    assert len(p.problems) == min(p.n_errors, P.MAX_PROBLEMS)


@FAST
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise(buf):
    p = parse(buf)
    _consistent(p, len(buf))
    # whatever it found is well formed: each record has its type's length in its frame
    a = np.frombuffer(buf, np.uint8)
    for off, t in zip(p.offsets.tolist(), p.types.tolist()):
        assert (a[off] << 8 | a[off + 1]) == P._SIZE[t]


@FAST
@given(st.integers(0, len(DAY)))
def test_truncation_keeps_every_whole_message(cut):
    p = parse(DAY[:cut])
    _consistent(p, cut)
    whole = int(np.searchsorted(ENDS, cut, side="right"))
    _same_prefix(p, whole)
    assert p.n_messages == whole
    at_boundary = cut == 0 or cut in set(ENDS.tolist())
    assert p.errors == {P.TRUNCATED: 0 if at_boundary else 1, P.UNKNOWN_TYPE: 0, P.BAD_LENGTH: 0}


@FAST
@given(st.integers(0, len(OFFS) - 1), st.integers(0, 0xFFFF))
def test_mutated_length_keeps_everything_before(k, length):
    buf = bytearray(DAY)
    buf[OFFS[k]: OFFS[k] + 2] = struct.pack(">H", length)
    p = parse(bytes(buf))
    _consistent(p, len(buf))
    _same_prefix(p, k)
    if length != DAY[OFFS[k]] << 8 | DAY[OFFS[k] + 1]:
        assert p.n_errors >= 1
    else:
        assert p.n_errors == 0 and p.n_messages == len(OFFS)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(OFFS)), st.binary(min_size=1, max_size=60)),
                max_size=5))
def test_inserted_bad_frames_lose_nothing(inserts):
    """Whole frames of garbage (right length prefix, unknown type or wrong length) between
    messages: every original message survives and each insert is one error."""
    pieces, last, bad = [], 0, 0
    for k, body in sorted(inserts):
        body = b"z" + body[1:] if P._SIZE[body[0]] == len(body) else body
        at = int(OFFS[k]) if k < len(OFFS) else len(DAY)
        pieces += [DAY[last:at], struct.pack(">H", len(body)) + body]
        last = at
        bad += 1
    pieces.append(DAY[last:])
    p = parse(b"".join(pieces))
    assert p.n_errors == bad
    assert p.n_messages == len(OFFS)
    for t, rec in GOOD.records.items():
        assert np.array_equal(p.records[t], rec)
