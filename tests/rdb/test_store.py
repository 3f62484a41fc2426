"""rdb.store.Store as a unit: whatever batches go in, in whatever sizes and dictionaries, a
snapshot is exactly their concatenation; chunk boundaries, string columns, sym recoding, and
snapshots taken while another thread appends."""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
from hypothesis import given, settings, strategies as st

from rdb.store import Store
from schemas.codec import columns, decode, encode
from schemas.registry import Registry, _parse

# every column type the registry knows, in one table
WIDE = _parse("wide", {"time": "timestamp", "sym": "symbol", "note": "string", "px": "float64",
                       "f": "float32", "n": "int64", "i": "int32", "h": "int16", "b": "int8",
                       "ok": "bool", "venue": "symbol"}, "test")
REG = Registry({"wide": WIDE})

syms = st.text(alphabet="ABCDEFGHIJ", min_size=1, max_size=3)
notes = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=5)


@st.composite
def batches(draw, max_rows=12):
    n = draw(st.integers(0, max_rows))
    ints = st.integers(-2**15, 2**15 - 1)
    return {
        "time": draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)),
        "sym": draw(st.lists(syms, min_size=n, max_size=n)),
        "note": draw(st.lists(notes, min_size=n, max_size=n)),
        "px": draw(st.lists(st.floats(allow_nan=False), min_size=n, max_size=n)),
        "f": draw(st.lists(st.floats(width=32, allow_nan=False), min_size=n, max_size=n)),
        "n": draw(st.lists(st.integers(-2**63, 2**63 - 1), min_size=n, max_size=n)),
        "i": draw(st.lists(ints, min_size=n, max_size=n)),
        "h": draw(st.lists(ints, min_size=n, max_size=n)),
        "b": draw(st.lists(st.integers(-128, 127), min_size=n, max_size=n)),
        "ok": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "venue": draw(st.lists(st.sampled_from(["X", "Y", "Z"]), min_size=n, max_size=n)),
    }


def as_rows(cols: dict) -> list[tuple]:
    return list(zip(*[cols[c] for c in WIDE.names]))


def snapshot_rows(store: Store) -> list[tuple]:
    t = store.snapshot()["wide"]
    out = {c: t.column(c).to_pylist() for c in WIDE.names}
    out["time"] = [v.value if hasattr(v, "value") else int(np.datetime64(v, "ns").astype(np.int64))
                   for v in t.column("time").cast(pa.int64()).to_pylist()]
    return as_rows(out)


def appended(store: Store, cols: dict, via: str) -> None:
    msg = encode(WIDE, {k: (np.array(v, dtype=np.int64) if k == "time" else v) for k, v in cols.items()})
    if via == "columns":
        head, _, c = columns(msg, REG)
        store.append_columns("wide", c, head.nrows)
    else:
        store.append("wide", decode(msg, REG)[1])


def expected(cols: dict) -> list[tuple]:
    exp = dict(cols)
    exp["f"] = [float(np.float32(v)) for v in cols["f"]]
    return as_rows(exp)


@settings(max_examples=60)
@given(parts=st.lists(st.tuples(batches(), st.sampled_from(["columns", "batch"])), max_size=8),
       chunk=st.integers(1, 9))
def test_a_snapshot_is_exactly_the_batches_in_order(parts, chunk):
    """Chunk boundaries anywhere (chunk_rows 1..9 against batches of 0..12 rows), both append
    paths, every column type, symbols with per-batch dictionaries recoded to the store's."""
    store = Store(REG, chunk_rows=chunk)
    want: list[tuple] = []
    for cols, via in parts:
        appended(store, cols, via)
        want += expected(cols)
    assert snapshot_rows(store) == want
    assert store.counts() == {"wide": len(want)}


def test_symbols_keep_one_code_per_name_across_batches():
    store = Store(REG, chunk_rows=4)
    for words in (["B", "A"], ["A"], ["C", "B", "A"], ["A"]):
        n = len(words)
        appended(store, {"time": list(range(n)), "sym": words, "note": [""] * n, "px": [0.0] * n,
                         "f": [0.0] * n, "n": [0] * n, "i": [0] * n, "h": [0] * n, "b": [0] * n,
                         "ok": [True] * n, "venue": ["X"] * n}, "columns")
    col = store.snapshot()["wide"].column("sym")
    assert col.to_pylist() == ["B", "A", "A", "C", "B", "A", "A"]
    # one dictionary for the whole store: a sym's code is the same in every chunk
    assert all(c.dictionary.to_pylist() == ["B", "A", "X", "C"] for c in col.chunks)


def test_clear_empties_every_table_and_keeps_the_sym_list():
    store = Store(REG, chunk_rows=3)
    cols = {"time": [1, 2], "sym": ["A", "B"], "note": ["x", "y"], "px": [1.0, 2.0], "f": [0.0, 0.0],
            "n": [1, 2], "i": [0, 0], "h": [0, 0], "b": [0, 0], "ok": [True, False], "venue": ["X", "Y"]}
    appended(store, cols, "columns")
    store.clear()
    assert store.counts() == {"wide": 0} and store.snapshot()["wide"].num_rows == 0
    appended(store, cols, "batch")
    assert snapshot_rows(store) == expected(cols)


def test_snapshots_taken_during_appends_are_whole_prefixes():
    """A reader snapshotting while another thread appends sees some prefix of the stream, never
    a torn row or a row whose columns disagree."""
    store = Store(REG, chunk_rows=5)
    rng = np.random.default_rng(7)
    stop = threading.Event()
    total = 0
    seen: list[int] = []

    def writer():
        nonlocal total
        for k in range(400):
            n = int(rng.integers(1, 9))
            idx = list(range(total, total + n))
            appended(store, {"time": idx, "sym": [f"S{i % 7}" for i in idx], "note": [str(i) for i in idx],
                             "px": [float(i) for i in idx], "f": [0.0] * n, "n": idx, "i": [0] * n,
                             "h": [0] * n, "b": [0] * n, "ok": [i % 2 == 0 for i in idx],
                             "venue": ["X"] * n}, "columns" if k % 2 else "batch")
            total += n
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    while not stop.is_set():
        snap = store.snapshot()["wide"]
        n = snap.column("n").to_pylist()
        assert n == list(range(len(n)))
        assert snap.column("note").to_pylist() == [str(i) for i in n]
        assert snap.column("sym").to_pylist() == [f"S{i % 7}" for i in n]
        assert snap.column("px").to_pylist() == [float(i) for i in n]
        seen.append(len(n))
    t.join()
    assert store.counts()["wide"] == total and seen == sorted(seen)
