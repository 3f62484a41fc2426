"""The ITCH parser against the independent `itchfeed` implementation, the plain framing walk,
and hand-made damage with exactly known consequences."""
import struct

import numpy as np
import pytest

from feedhandlers.itch import parser as P
from feedhandlers.itch.parser import ItchError, parse, parse_file
from feedhandlers.itch.spec import DTYPES, SIZES, split_timestamps, timestamps
from feedhandlers.itch.writer import simulate, write_itch

itch_messages = pytest.importorskip("itch.messages")
itch_parser = pytest.importorskip("itch.parser")

# Our field names are the specification's; itchfeed shortens a few.
THEIRS = {
    ("R", "issue_subtype"): "issue_sub_type", ("R", "luld_reference_price_tier"): "luld_ref",
    ("V", "level1"): "level1_price", ("V", "level2"): "level2_price", ("V", "level3"): "level3_price",
    ("K", "ipo_quotation_release_time"): "ipo_release_time",
    ("K", "ipo_quotation_release_qualifier"): "ipo_release_qualifier",
    ("J", "auction_collar_extension"): "auction_collar_extention",
    ("U", "original_order_reference_number"): "order_reference_number",
    ("I", "price_variation_indicator"): "variation_indicator",
}


@pytest.fixture(scope="module")
def day() -> bytes:
    return simulate(messages=20_000, seed=7)


def test_sizes_agree_with_itchfeed():
    assert set(SIZES) == {k.decode() for k in itch_messages.messages}
    for k, cls in itch_messages.messages.items():
        assert DTYPES[k.decode()].itemsize == cls.message_size, k


def test_every_message_matches_itchfeed_field_by_field(day):
    ours = parse(day)
    assert ours.n_errors == 0
    theirs = list(itch_parser.MessageParser().parse_stream(day))
    assert len(theirs) == ours.n_messages
    assert all(ours.counts[t] > 0 for t in DTYPES), ours.counts  # every type is exercised
    # Walk our per-type arrays in file order through the message index.
    pos = {t: 0 for t in DTYPES}
    for n, m in enumerate(theirs):
        t = m.message_type.decode()
        assert ours.types[n] == ord(t)
        rec = ours.records[t][pos[t]]
        assert ours.index[t][pos[t]] == n
        pos[t] += 1
        assert rec["stock_locate"] == m.stock_locate
        assert rec["tracking_number"] == m.tracking_number
        assert timestamps(rec[None])[0] == m.timestamp
        for name in DTYPES[t].names[5:]:
            want = getattr(m, THEIRS.get((t, name), name))
            assert rec[name] == want, (n, t, name, rec[name], want)


def test_framing_matches_plain_walk_across_chunks(day, monkeypatch):
    want = P.frame_offsets_loop(day)
    assert np.array_equal(parse(day).offsets, want)
    monkeypatch.setattr(P, "CHUNK_BYTES", 997)  # many chunk edges, odd so frames straddle them
    assert np.array_equal(parse(day).offsets, want)


def test_inputs_of_every_buffer_kind(day, tmp_path):
    want = parse(day).offsets
    for buf in (bytearray(day), memoryview(day), np.frombuffer(day, np.uint8)):
        assert np.array_equal(parse(buf).offsets, want)
    path = tmp_path / "day.itch"
    write_itch(path, messages=20_000, seed=7)
    assert np.array_equal(parse_file(path).offsets, want)
    with pytest.raises(ItchError):
        parse("not bytes")
    with pytest.raises(ItchError):
        parse(np.zeros(4, dtype=np.int32))


def test_empty_and_tiny_inputs():
    for buf in (b"", b"\x00", b"\x00\x00", b"\xff\xff\xff"):
        p = parse(buf)
        assert p.n_messages == 0
    assert parse(b"").n_errors == 0
    assert parse(b"\x00").errors[P.TRUNCATED] == 1
    assert parse(b"\x00\x00").errors[P.BAD_LENGTH] == 1


def frame(t: str, locate=1, ns=123, *body) -> bytes:
    dt = DTYPES[t]
    rec = np.zeros(1, dt)
    rec["type"], rec["stock_locate"], rec["tracking_number"] = t.encode(), locate, 0
    rec["ts_hi"], rec["ts_lo"] = split_timestamps([ns])
    for name, v in zip(dt.names[5:], body):
        rec[name] = v
    return struct.pack(">H", dt.itemsize) + rec.tobytes()


def test_damage_is_counted_and_good_messages_are_kept():
    good = [frame("S", 0, 1, b"O"), frame("A", 3, 2, 11, b"B", 100, b"ABC     ", 1_000_000),
            frame("D", 3, 3, 11)]
    unknown = struct.pack(">H", 5) + b"Zabcd"
    wrong_len = struct.pack(">H", 13) + frame("S", 0, 4, b"Q")[2:] + b"x"
    tail = frame("E", 3, 5, 11, 10, 99)[:-4]
    buf = good[0] + unknown + good[1] + wrong_len + good[2] + tail
    p = parse(buf)
    assert p.errors == {P.TRUNCATED: 1, P.UNKNOWN_TYPE: 1, P.BAD_LENGTH: 1}
    assert [chr(t) for t in p.types] == ["S", "A", "D"]
    assert p["A"]["order_reference_number"][0] == 11
    assert p["A"]["stock"][0] == b"ABC     "
    assert p.timestamps("D")[0] == 3
    kinds = {pr.kind: pr for pr in p.problems}
    assert kinds[P.UNKNOWN_TYPE].offset == len(good[0]) and "Z" in kinds[P.UNKNOWN_TYPE].text
    assert "says 12" in kinds[P.BAD_LENGTH].text
    assert kinds[P.TRUNCATED].offset == len(buf) - len(tail) == p.consumed


def test_unknown_type_only_file_is_all_errors():
    buf = (struct.pack(">H", 3) + b"z12") * 50
    p = parse(buf)
    assert p.n_messages == 0 and p.errors[P.UNKNOWN_TYPE] == 50 and p.consumed == len(buf)
    assert len(p.problems) == 50
