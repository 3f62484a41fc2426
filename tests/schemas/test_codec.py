"""The batch codec: round trips, and no input makes it do anything but return or raise CodecError."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.codec import CodecError, decode, encode, validate
from schemas.registry import SchemaError, load_registry

REG = load_registry()
syms = st.text(min_size=0, max_size=12)
i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def trade_rows(draw):
    n = draw(st.integers(0, 60))
    return {"time": draw(st.lists(i64, min_size=n, max_size=n)),
            "sym": draw(st.lists(syms, min_size=n, max_size=n)),
            "price": draw(st.lists(st.floats(allow_nan=True), min_size=n, max_size=n)),
            "size": draw(st.lists(i64, min_size=n, max_size=n))}


# values per column type, for tables whose columns are read from the registry (order)
BY_TYPE = {"timestamp": i64, "int64": i64, "symbol": syms, "string": st.text(max_size=20),
           "float64": st.floats(allow_nan=False)}


@st.composite
def order_rows(draw):
    n = draw(st.integers(0, 30))
    return {c.name: draw(st.lists(BY_TYPE[c.type], min_size=n, max_size=n)) for c in REG["order"].columns}


def _same(batch: pa.RecordBatch, cols: dict) -> None:
    for name, want in cols.items():
        got = batch.column(name)
        if pa.types.is_dictionary(got.type):
            got = got.dictionary_decode()
        if pa.types.is_timestamp(got.type):
            got = got.cast(pa.int64())
        got = got.to_pylist()
        if name == "price":
            assert np.array_equal(np.array(got, float), np.array(want, float), equal_nan=True)
        else:
            assert got == list(want), name


@given(trade_rows(), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_trade_round_trip(cols, feed, fseq):
    msg = encode(REG["trade"], cols, feed=feed, fseq=fseq)
    head = validate(msg, REG)
    assert (head.table, head.nrows, head.feed, head.fseq) == ("trade", len(cols["time"]), feed, fseq)
    _, batch = decode(msg, REG)
    _same(batch, cols)


@given(order_rows())
def test_string_columns_round_trip(cols):
    msg = encode(REG["order"], cols)
    validate(msg, REG)
    _same(decode(msg, REG)[1], cols)


def test_arrow_and_numpy_inputs_encode_the_same():
    t = np.array(["2024-01-02T10:00:00"], dtype="datetime64[ns]")
    a = encode(REG["trade"], {"time": t, "sym": np.array(["X"]), "price": np.array([1.5]), "size": [3]})
    b = encode(REG["trade"], pa.table({"time": pa.array(t), "sym": ["X"], "price": [1.5], "size": [3]}))
    assert a == b


def test_encode_names_the_problem():
    with pytest.raises(CodecError, match="missing columns"):
        encode(REG["trade"], {"time": [1], "sym": ["A"], "price": [1.0]})
    with pytest.raises(CodecError, match="unknown columns"):
        encode(REG["trade"], {"time": [1], "sym": ["A"], "price": [1.0], "size": [1], "x": [1]})
    with pytest.raises(CodecError, match="rows"):
        encode(REG["trade"], {"time": [1, 2], "sym": ["A"], "price": [1.0], "size": [1]})


def test_an_offset_that_cuts_a_character_in_two_is_refused():
    # every byte is utf-8 as a whole, but the first word would end inside "é" (c3 a9)
    import struct
    msg = encode(REG["trade"], {"time": [1, 2], "sym": ["é", "a"], "price": [1.0, 2.0], "size": [1, 2]})
    good = struct.pack("<3i", 0, 2, 3)
    assert msg.count(good) == 1
    bad = msg.replace(good, struct.pack("<3i", 0, 1, 3))
    with pytest.raises(CodecError, match="cuts a utf-8 character"):
        validate(bad, REG)
    validate(msg, REG)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(trade_rows(), st.data())
def test_mutated_messages_never_crash_the_validator(cols, data):
    msg = bytearray(encode(REG["trade"], cols))
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(msg) - 1))
            msg[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        msg = msg[: data.draw(st.integers(0, len(msg) - 1))]
    elif kind == "extend":
        msg += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(msg)))
        msg[i:i] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        head = validate(bytes(msg), REG)
    except CodecError:
        return
    _, batch = decode(bytes(msg), REG)  # whatever validates must decode to what it claims
    assert batch.num_rows == head.nrows
    batch.validate(full=True)


@given(st.binary(max_size=200))
def test_random_bytes_are_rejected_cleanly(raw):
    with pytest.raises(CodecError):
        validate(raw, REG)


def test_user_tables_extend_the_registry(tmp_path):
    (tmp_path / "fx.toml").write_text('[fxquote]\ntime = "timestamp"\nsym = "symbol"\nmid = "float64"\n')
    reg = load_registry(tmp_path)
    msg = encode(reg["fxquote"], {"time": [1], "sym": ["EURUSD"], "mid": [1.1]})
    assert validate(msg, reg).table == "fxquote"
    with pytest.raises(CodecError, match="unknown table"):
        validate(msg, REG)
    (tmp_path / "bad.toml").write_text('[oops]\nsym = "symbol"\ntime = "timestamp"\n')
    with pytest.raises(SchemaError, match="first two columns"):
        load_registry(tmp_path)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(trade_rows(), st.data())
def test_the_fast_check_accepts_exactly_what_the_full_check_accepts(cols, data):
    """`check` takes a shortcut for fixed-width + one-symbol tables: on any message, intact or
    mutated, it must agree with the column-by-column check (same verdict, same header)."""
    from schemas.codec import _validate, check
    msg = bytearray(encode(REG["trade"], cols, feed=3, fseq=9))
    for _ in range(data.draw(st.integers(0, 3))):
        i = data.draw(st.integers(0, len(msg) - 1))
        msg[i] = data.draw(st.integers(0, 255))
    try:
        want = _validate(bytes(msg), REG)
    except CodecError:
        want = None
    try:
        got = check(memoryview(bytes(msg)), REG)
    except CodecError:
        got = None
    assert got == (None if want is None else (want.table, want.nrows, want.feed, want.fseq))


@given(st.lists(syms, min_size=0, max_size=40), st.integers(0, 5))
def test_short_symbol_columns_encode_to_the_same_bytes_either_way(words, repeat):
    """Up to SMALL_ROWS numpy strings take a plain-Python path; it must give the Arrow path's
    bytes (an Arrow input always takes the Arrow path)."""
    vals = (words * (repeat + 1))[:40]
    n = len(vals)
    arr = np.array(vals, dtype=str) if vals else np.array([], "<U1")  # (numpy drops trailing NULs)
    cols = {"time": np.arange(n, dtype=np.int64), "price": np.ones(n), "size": np.arange(n)}
    fast = encode(REG["trade"], cols | {"sym": arr})
    assert fast == encode(REG["trade"], cols | {"sym": pa.array(arr.tolist(), pa.string())})


@given(st.data())
def test_a_single_row_encodes_to_the_same_bytes_on_the_struct_path(data):
    """encode_row (one struct call, the paced feed's path) gives encode's bytes, for any row
    of any fixed-width + symbol table."""
    from schemas.codec import encode_row
    for table in ("trade", "quote"):
        schema = REG[table]
        cols = {"time": np.array([data.draw(i64)], np.int64),
                "sym": np.array([data.draw(syms)], dtype=str)}
        for c in schema.columns[2:]:
            v = data.draw(st.floats(allow_nan=False, width=64) if c.type == "float64" else i64)
            cols[c.name] = np.array([v], c.dtype)
        feed, fseq = data.draw(st.integers(0, 2**32 - 1)), data.draw(st.integers(0, 2**64 - 1))
        got = encode_row(schema, cols, feed, fseq)
        assert got is not None and got == encode(schema, cols, feed=feed, fseq=fseq)
        validate(got, REG)
    assert encode_row(REG["order"], cols) is None  # string columns: not this path


@given(st.lists(syms, min_size=33, max_size=300))
def test_long_numpy_symbol_columns_encode_to_the_same_bytes_as_arrow_strings(vals):
    """A numpy str symbol column above SMALL_ROWS is hashed on its UCS-4 bytes; it must give
    the bytes the Arrow path gives for the same strings."""
    arr = np.array(vals, dtype=str)
    n = len(arr)
    cols = {"time": np.arange(n, dtype=np.int64), "price": np.ones(n), "size": np.arange(n)}
    assert encode(REG["trade"], cols | {"sym": arr}) == \
        encode(REG["trade"], cols | {"sym": pa.array(arr.tolist(), pa.string())})
