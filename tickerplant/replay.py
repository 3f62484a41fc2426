"""Replay a tickerplant log (kdb's -11!): stream its batches out, or load them into an RDB store.

`replay` rides `log.scan` (per record, never per row). `replay_into` works a block of up to
65,536 records at a time: the log is memory-mapped, one tight loop per block finds the frames
(and re-checks every checksum with `verify`), numpy reads every record's header and column
layout at once, and each table's rows from the whole block go into the store with one
`append_columns` call, copied once, straight from the mapped file into the store's chunks.
A record that path does not handle (a bad header, an unknown table, an irregular layout, a
table with string columns) is taken on its own exactly as the one-record-at-a-time loop would,
so the store ends the same either way, and a damaged record ends the replay at the same place
with the same error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from schemas.codec import (Fields, IrregularMessages, Layouts, SymbolSpans, columns, decode,
                           headers_many, peek)
from tickerplant.log import CONTROL, FRAME, LogReader, is_control, scan, stopped

_CONTROL_U32 = int.from_bytes(CONTROL, "little")


def replay(path: str | Path, registry, tables=None, first: int | None = None, verify: bool = True,
           progress: bool = False) -> Iterator[tuple[int, str, pa.RecordBatch]]:
    """(seq, table, batch) for each batch record, in log order; `first` stops after N records.
    A damaged record ends it with LogError (a ValueError) once everything before it is out."""
    for seq, head, payload in scan(path, tables, first, verify, progress):
        yield seq, head.table, decode(payload, registry)[1]


def replay_into(store, path, registry, tables=None, first=None, verify=True, progress=False) -> int:
    """Load a log into an RDB Store; returns rows loaded (of every table replayed, held by the
    store or not). Only `tables` (None: all), only the first `first` records. A damaged record
    ends it with LogError once everything before it is in the store."""
    from tqdm import tqdm

    path = Path(path)
    reader = LogReader(path)
    names = registry.tables
    wanted = set(tables) if tables else None
    want = np.array([wanted is None or n in wanted for n in names] + [False])  # [-1]: unknown
    rows = 0
    syms = _SymbolCodes(store)
    with tqdm(total=path.stat().st_size, unit="B", unit_scale=True, leave=False,
              desc=f"reading {path.name}", disable=None if progress else True) as bar:
        # the record after the `first` is read too (and so checked), as LogReader.records does
        for b in reader.blocks(verify=verify, last_seq=None if first is None else first + 1):
            bar.update(b.base + int(b.ends[-1]) - bar.n)
            k = len(b) if first is None else min(len(b), first - b.first_seq + 1)
            if k > 0:
                rows += _load_block(store, registry, wanted, want, b, k, syms)
    if reader.error:
        stopped(path, reader.error)
    return rows


def _load_block(store, registry, wanted, want: np.ndarray, b, k: int, syms: "_SymbolCodes") -> int:
    """Append the first `k` records of block `b`; returns their rows."""
    start = b.starts[:k] + FRAME.size
    end = b.ends[:k]
    f = Fields(b.buf)
    control = (end - start >= 4) & (f.read("<u4", start) == _CONTROL_U32)
    table, nrows = headers_many(f, start, end, registry)
    fast = np.zeros(k, bool)
    layouts: dict[int, tuple[np.ndarray, Layouts]] = {}  # table -> (its records, their layouts)
    for t in np.unique(table[want[table]]).tolist():
        idx = np.flatnonzero(table == t)
        lay = Layouts(f, registry[registry.tables[t]], start[idx], end[idx], nrows[idx])
        fast[idx[lay.regular]] = True
        layouts[t] = idx, lay
    skip = control | ((table >= 0) & ~want[table])
    alone = np.flatnonzero(~(fast | skip)).tolist()
    rows, lo = 0, 0
    for hi in alone + [k]:
        if lo < hi:
            rows += _append_fast(store, registry, layouts, fast, b, lo, hi, wanted, syms)
        if hi < k:
            rows += _append_one(store, registry, wanted, b, hi)
        lo = hi + 1
    return rows


def _append_fast(store, registry, layouts, fast, b, lo: int, hi: int, wanted, syms) -> int:
    """Records lo..hi-1 of the block, none of which needs to go alone: each table's rows in
    one append_columns call (tables' rows are independent, so their order across tables is
    free; within a table it is kept)."""
    batches = []
    try:
        for t, (idx, lay) in layouts.items():
            pick = fast[idx] & (idx >= lo) & (idx < hi)
            if not pick.any():
                continue
            sel = np.flatnonzero(pick)
            name = registry.tables[t]
            if name not in store.tables:  # rows count, data is not kept
                batches.append((name, None, int(lay.nrows[sel].sum())))
            else:
                cols, n = lay.columns(sel)
                batches.append((name, [syms.recoded(c) if isinstance(c, SymbolSpans) else c
                                       for c in cols], n))
    except IrregularMessages:
        return sum(_append_one(store, registry, wanted, b, i) for i in range(lo, hi))
    rows = 0
    for name, cols, n in batches:
        if cols is not None:
            store.append_columns(name, cols, n)
        rows += n
    return rows


def _append_one(store, registry, wanted, b, i: int) -> int:
    """Record i of the block on its own, exactly as a record-at-a-time replay takes it."""
    s = int(b.starts[i]) + FRAME.size
    payload = memoryview(b.buf)[s: int(b.ends[i])]
    if is_control(payload):
        return 0
    head = peek(payload)
    if wanted is not None and head.table not in wanted:
        return 0
    _, _, cols = columns(payload, registry)
    store.append_columns(head.table, cols, head.nrows)
    return head.nrows


class _SymbolCodes:
    """Symbol keys (schemas.codec.SymbolSpans.keys) -> the store's codes, kept across a
    replay's blocks, so Python decodes each symbol once per replay, not once per block: a
    block's distinct keys are looked up with one searchsorted."""

    def __init__(self, store):
        self.store = store
        self.keys = np.zeros(0, np.uint64)
        self.codes = np.zeros(0, np.int32)
        self.wide: dict[bytes, int] = {}  # keys of words over 7 bytes

    def recoded(self, sym: SymbolSpans):
        keys = sym.keys
        if keys.ndim == 2:
            raw = [bytes(k) for k in keys.view(np.uint8).reshape(len(keys), -1)]
            miss = [i for i, r in enumerate(raw) if r not in self.wide]
            if miss:
                self.wide.update(zip((raw[i] for i in miss), self._register(sym, miss)))
            return sym.recoded(np.array([self.wide[r] for r in raw], np.int32))
        pos = np.searchsorted(self.keys, keys)
        hit = pos < len(self.keys)
        hit[hit] = self.keys[pos[hit]] == keys[hit]
        if not hit.all():
            miss = np.flatnonzero(~hit)
            k = np.concatenate([self.keys, keys[miss]])
            c = np.concatenate([self.codes, self._register(sym, miss.tolist())])
            order = np.argsort(k)
            self.keys, self.codes = k[order], c[order]
            pos = np.searchsorted(self.keys, keys)
        return sym.recoded(self.codes[pos])

    def _register(self, sym: SymbolSpans, idx: list[int]) -> np.ndarray:
        words = sym.decode(idx)  # IrregularMessages (not utf-8) before anything is appended
        with self.store.lock:
            return self.store.codes(words)
