"""Data for the HDB tests: random trades and quotes for a day, as the RDB would hold them."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa


DAY = dt.date(2024, 1, 2)


def day_ns(day: dt.date) -> int:
    return int(np.datetime64(day, "ns").astype(np.int64))


def make_trades(n: int, nsyms: int = 20, day: dt.date = DAY, seed: int = 0,
                time_sorted: bool = True) -> pa.Table:
    rng = np.random.default_rng(seed)
    t = day_ns(day) + 13 * 3600 * 10**9 + rng.integers(0, 6 * 3600 * 10**9, n)
    if time_sorted:
        t.sort()
    syms = pa.array([f"S{i:03d}" for i in range(nsyms)][::-1])  # dictionary not in sort order
    return pa.table({
        "time": pa.array(t, pa.timestamp("ns")),
        "sym": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, nsyms, n, dtype=np.int32)), syms),
        "price": np.round(100 + rng.standard_normal(n), 2),
        "size": rng.integers(1, 1000, n),
    })


def make_quotes(n: int, nsyms: int = 20, day: dt.date = DAY, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    t = np.sort(day_ns(day) + 13 * 3600 * 10**9 + rng.integers(0, 6 * 3600 * 10**9, n))
    bid = np.round(100 + rng.standard_normal(n), 2)
    return pa.table({
        "time": pa.array(t, pa.timestamp("ns")),
        "sym": pa.array([f"S{i:03d}" for i in rng.integers(0, nsyms, n)]).dictionary_encode(),
        "bid": bid, "ask": bid + 0.01,
        "bsize": rng.integers(1, 100, n), "asize": rng.integers(1, 100, n),
    })


def sorted_by_sym_time(t: pa.Table) -> pa.Table:
    """The reference order (sym, then time, stable) with plain string syms."""
    t = t.set_column(t.schema.get_field_index("sym"), "sym", t.column("sym").cast(pa.string()))
    idx = pa.compute.sort_indices(t, [("sym", "ascending"), ("time", "ascending")])
    return t.take(idx)


