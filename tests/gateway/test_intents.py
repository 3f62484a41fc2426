"""The intents protocol's parser and builders (gateway.intents), the gateway's ids, and the
routing view of each venue (gateway.quotes) against the venue's own matching engine."""
from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from gateway import ids, intents
from gateway.config import VenueSettings
from gateway.intents import IntentError, New
from gateway.matching import MatchingEngine
from gateway.model import Side
from gateway.quotes import QuoteView

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
field_names = st.sampled_from(["op", "tag", "client", "sym", "side", "qty", "type", "price", "tif",
                               "account", "strategy", "venue", "target", "reason", "open", "limit", "x"])
requestish = st.dictionaries(field_names, json_values | st.sampled_from(
    list(intents.OPS) + list(intents.SIDES) + list(intents.TIFS) + ["limit", "market", 1, 10.5]), max_size=8)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_intent_error(raw):
    try:
        intents.parse(raw)
    except IntentError as e:
        assert e.code in intents.CODES and e.text


@settings(max_examples=500)
@given(requestish)
def test_any_json_object_parses_to_a_valid_request_or_raises_intent_error(obj):
    frame = json.dumps(obj).encode()
    try:
        req = intents.parse(frame)
    except IntentError as e:
        assert e.code == "bad_request" and e.text
        if isinstance(obj.get("tag"), str) and 0 < len(obj["tag"]) <= 64 and obj.get("op") in intents.OPS:
            assert e.tag == obj["tag"]            # the error reply can name the request
        return
    assert req.tag == obj["tag"]
    if isinstance(req, New):
        assert type(req.qty) is int and req.qty > 0 and req.side in intents.SIDES
        assert (req.price is None) == (req.type == "market")
        assert req.price is None or (math.isfinite(req.price) and req.price > 0)


@given(st.text(min_size=1, max_size=8, alphabet="ABCDXYZ"), st.sampled_from(intents.SIDES),
       st.integers(1, 10**9), st.floats(0.01, 1e6), st.sampled_from(intents.TIFS),
       st.one_of(st.none(), st.text(min_size=1, max_size=10, alphabet="abc")))
def test_a_built_request_parses_back_to_what_was_built(sym, side, qty, price, tif, strategy):
    frame = intents.request("new", "t-1", sym=sym, side=side, qty=qty, type="limit", price=price,
                            tif=tif, strategy=strategy, client="c")
    assert intents.parse(frame) == New("t-1", sym, side, qty, "limit", price, tif, None, strategy, None, "c")


@pytest.mark.parametrize("body, says", [
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": 1.0, "price": 1.0}, "whole number"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": True, "price": 1.0}, "whole number"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": 0, "price": 1.0}, "> 0"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "hold", "qty": 1, "price": 1.0}, "side"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": 1}, "needs a price"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": 1, "type": "market", "price": 2.0}, "no price"),
    ({"op": "new", "tag": "a", "sym": "X", "side": "buy", "qty": 1, "price": 1.0, "px": 2}, "unknown fields"),
    ({"op": "new", "tag": "a" * 65, "sym": "X", "side": "buy", "qty": 1, "price": 1.0}, "at most 64"),
    ({"op": "new", "tag": "a", "sym": "X\n", "side": "buy", "qty": 1, "price": 1.0}, "control"),
    ({"op": "new", "sym": "X", "side": "buy", "qty": 1, "price": 1.0}, "tag"),
    ({"op": "fly", "tag": "a"}, "op must be"),
    ({"op": "cancel", "tag": "a"}, "target is required"),
    ([1, 2], "JSON object"),
])
def test_bad_requests_say_what_is_wrong(body, says):
    with pytest.raises(IntentError, match=says):
        intents.parse(json.dumps(body).encode())


def test_nan_infinity_and_oversize_are_refused():
    with pytest.raises(IntentError, match="not valid JSON"):
        intents.parse(b'{"op":"new","tag":"a","sym":"X","side":"buy","qty":1,"price":NaN}')
    with pytest.raises(IntentError, match="finite"):
        intents.parse(b'{"op":"new","tag":"a","sym":"X","side":"buy","qty":1,"price":1e400}')
    with pytest.raises(IntentError) as e:
        intents.parse(b"x" * 2000, max_bytes=1024)
    assert e.value.code == "too_large"


def test_encode_writes_null_for_non_finite_floats():
    assert json.loads(intents.encode({"a": math.nan, "b": [math.inf, 1.5]})) == {"a": None, "b": [None, 1.5]}


def test_envelopes():
    env, body = intents.split([b"id", b"body"])
    assert env.dealer and env.route == [b"id"] and body == [b"body"]
    env, body = intents.split([b"id", b"", b"body"])              # REQ
    assert not env.dealer and env.route == [b"id", b""] and body == [b"body"]
    env, body = intents.split([b"id", b"hop", b"", b"a", b"b"])   # via a proxy, two body frames
    assert env.route == [b"id", b"hop", b""] and body == [b"a", b"b"]
    assert intents.split([b"id", b""])[1] == []


def test_ids_are_deterministic_and_ours_are_recognised():
    day = dt.date(2026, 11, 20)
    p = ids.parent_id(day, "strat", "t1")
    assert p == ids.parent_id(day, "strat", "t1") and p.startswith("P") and len(p) == 17
    assert len({p, ids.parent_id(day, "strat", "t2"), ids.parent_id(day, "other", "t1"),
                ids.parent_id(day + dt.timedelta(days=1), "strat", "t1")}) == 4
    assert ids.parent_of(ids.child_id(p, 12)) == p and ids.child_number(ids.child_id(p, 12)) == 12
    assert ids.parent_of(p) is None and ids.parent_of("somebody-else.1") is None
    assert ids.parent_of(ids.cancel_id(ids.child_id(p, 1), "run", 3)) is None


# -- the routing view ---------------------------------------------------------------------------------
VENUES = {
    "A": VenueSettings(name="A", display_fraction=1.0, taker_fee_bps=0.3),
    "B": VenueSettings(name="B", price_offset_bps=0.5, price_offset=0.01, display_fraction=0.37,
                       taker_fee_per_share=0.002),
}


def batch(rows):
    t, s, b, a, bs, asz = zip(*rows)
    return pa.RecordBatch.from_pydict({"time": pa.array(t, pa.timestamp("ns")),
                                       "sym": pa.array(s).dictionary_encode(), "bid": list(b),
                                       "ask": list(a), "bsize": list(bs), "asize": list(asz)})


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["X", "Y"]), st.floats(1, 1000), st.floats(0.001, 5),
                          st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=20))
def test_the_view_of_a_venue_is_what_its_engine_shows(quotes):
    view = QuoteView(VENUES)
    rows = [(i + 1, s, b, b + w, bs, asz) for i, (s, b, w, bs, asz) in enumerate(quotes)]
    view.on_batch(batch(rows))
    for name, v in VENUES.items():
        eng = MatchingEngine(v.fill_model(), venue=name)
        t, s, b, a, bs, asz = (np.array(c) for c in zip(*rows))
        eng.on_quotes(t, s.astype(object), b, a, bs, asz)
        for sym in {r[1] for r in rows}:
            mine, theirs = view.quote(name, sym), eng.quote(sym)
            assert (mine.bid, mine.ask, mine.bid_size, mine.ask_size) == (
                theirs["bid"], theirs["ask"], theirs["bid_size"], theirs["ask_size"])
            assert (mine.fee_per_share, mine.fee_bps) == (v.taker_fee_per_share, v.taker_fee_bps)


def test_what_we_took_stays_taken_until_that_side_changes():
    view = QuoteView(VENUES)
    view.on_batch(batch([(1, "X", 10.0, 10.1, 500, 500)]))
    assert view.consume("A", "X", Side.BUY, 300, limit=10.2) == 300
    assert view.consume("A", "X", Side.BUY, 300, limit=10.0) == 0      # not marketable: rests, takes nothing
    assert view.quote("A", "X").ask_size == 200 and view.quote("A", "X").bid_size == 500
    view.on_batch(batch([(2, "X", 10.0, 10.1, 500, 500)]))             # the same quote again
    assert view.quote("A", "X").ask_size == 200
    view.on_batch(batch([(3, "X", 9.9, 10.1, 400, 500)]))              # only the bid changed
    assert view.quote("A", "X").ask_size == 200
    view.on_batch(batch([(4, "X", 9.9, 10.1, 400, 600)]))              # the ask's size changed
    assert view.quote("A", "X").ask_size == 600
    assert view.quote("A", "NOPE").ask_size == 0
