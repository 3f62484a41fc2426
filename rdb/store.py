"""Today's tables in memory, columnar, appended a whole batch at a time.

Fixed-width columns live in numpy chunks of `chunk_rows` rows: appends copy a batch into the
open chunk (one slice assignment per column), and nothing already stored is ever moved, so
memory stays within one chunk per column of the raw column bytes. Symbols are enumerated once
per RDB (kdb's sym list): a column holds int32 codes into it. `snapshot()` hands out Arrow
tables that point at the chunks (no copy): DuckDB scans them while ingest goes on, and rows
appended later are simply not in that snapshot.
"""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa

from schemas.codec import SymbolSpans
from schemas.registry import Registry, Schema


class _Table:
    def __init__(self, schema: Schema, chunk_rows: int, syms: "Store"):
        self.schema = schema
        self.chunk_rows = chunk_rows
        self.syms = syms
        self.n = 0
        # per column: list of chunks (np arrays for fixed/symbol, lists of pa arrays for strings)
        self.chunks: list[list] = [[] for _ in schema.columns]

    def append(self, batch: pa.RecordBatch) -> None:
        k = batch.num_rows
        cols = []
        for c, arr in zip(self.schema.columns, batch.columns):
            if c.type == "symbol":
                idx = arr.indices
                cols.append((np.frombuffer(idx.buffers()[1], "<i4", k, 4 * idx.offset), arr.dictionary.to_pylist()))
            elif c.type == "string":
                cols.append(arr)
            elif c.type == "bool":
                cols.append(arr.to_numpy(zero_copy_only=False).astype("u1"))
            else:
                cols.append(np.frombuffer(arr.buffers()[1], c.dtype, k, c.dtype.itemsize * arr.offset))
        self.append_columns(cols, k)

    def append_columns(self, cols: list, k: int) -> None:
        """Columns as schemas.codec.columns gives them: arrays, (codes, dictionary) for symbols,
        Arrow arrays for strings; or as schemas.codec.Layouts.columns gives them for many
        messages at once (Spans, SymbolSpans, or RecodedSymbols already in this store's sym
        codes), whose rows are copied straight from where they lie into the chunks."""
        if not k:
            return
        cols = [self.syms.recode(*c) if isinstance(c, tuple)
                else c.recoded(self.syms.codes(c.words)) if isinstance(c, SymbolSpans) else c
                for c in cols]
        done = 0
        while done < k:
            fill = self.n % self.chunk_rows
            take = min(k - done, self.chunk_rows - fill)
            for c, chunks, src in zip(self.schema.columns, self.chunks, cols):
                if c.type == "string":
                    if fill == 0:
                        chunks.append([])
                    chunks[-1].append(src.slice(done, take))
                    if len(chunks[-1]) > 256:  # keep few pieces: single-row messages add up
                        chunks[-1] = [pa.concat_arrays(chunks[-1])]
                    continue
                if fill == 0:
                    chunks.append(np.empty(self.chunk_rows, dtype=src.dtype))
                if isinstance(src, np.ndarray):
                    chunks[-1][fill: fill + take] = src[done: done + take]
                else:
                    src.copy_into(chunks[-1][fill: fill + take], done, done + take)
            done += take
            self.n += take  # after the data: a concurrent snapshot never sees unwritten rows

    def arrow(self) -> pa.Table:
        n = self.n
        full, rest = divmod(n, self.chunk_rows)
        arrays = []
        for c, chunks in zip(self.schema.columns, self.chunks):
            pieces = [(ch, self.chunk_rows) for ch in chunks[:full]]
            if rest:
                pieces.append((chunks[full], rest))
            if c.type == "string":
                out = [pa.concat_arrays(p) if p else pa.array([], pa.string()) for p, _ in pieces]
                arrays.append(pa.chunked_array([o.slice(0, m) for o, (_, m) in zip(out, pieces)], pa.string()))
            elif c.type == "symbol":
                d = self.syms.dictionary()
                arrays.append(pa.chunked_array(
                    [pa.DictionaryArray.from_arrays(_view(pa.int32(), ch, m), d, safe=False)
                     for ch, m in pieces], c.arrow))
            elif c.type == "bool":
                arrays.append(pa.chunked_array([pa.array(ch[:m].astype(bool)) for ch, m in pieces], pa.bool_()))
            else:
                arrays.append(pa.chunked_array([_view(c.arrow, ch, m) for ch, m in pieces], c.arrow))
        return pa.Table.from_arrays(arrays, schema=self.schema.arrow)

    def nbytes(self) -> int:
        total = 0
        for chunks in self.chunks:
            for ch in chunks:
                total += ch.nbytes if isinstance(ch, np.ndarray) else sum(a.nbytes for a in ch)
        return total


def _view(typ: pa.DataType, arr: np.ndarray, n: int) -> pa.Array:
    return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(arr)])


class Store:
    def __init__(self, registry: Registry, tables=None, chunk_rows: int = 1 << 18):
        self.registry = registry
        self.chunk_rows = chunk_rows
        self.names = list(tables) if tables else registry.tables
        self.lock = threading.Lock()
        self._symidx: dict[str, int] = {}
        self._syms: list[str] = []
        self._dict: pa.Array | None = None
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.tables = {n: _Table(self.registry[n], self.chunk_rows, self) for n in self.names}

    def recode(self, codes: np.ndarray, words: list[str]) -> np.ndarray:
        """A batch's (codes, dictionary) -> RDB sym codes (Python work per distinct sym)."""
        if len(words) == 1:
            c = self._symidx.get(words[0])
            if c is None:
                c = self.codes(words)[0]
            return np.full(len(codes), c, dtype="<i4")
        return self.codes(words)[codes]

    def codes(self, words: list[str]) -> np.ndarray:
        idx = self._symidx
        out = []
        for s in words:
            c = idx.get(s)
            if c is None:
                c = idx[s] = len(self._syms)
                self._syms.append(s)
                self._dict = None
            out.append(c)
        return np.array(out, dtype="<i4")

    def dictionary(self) -> pa.Array:
        if self._dict is None or len(self._dict) != len(self._syms):
            self._dict = pa.array(self._syms, pa.string())
        return self._dict

    def append(self, table: str, batch: pa.RecordBatch) -> None:
        t = self.tables.get(table)
        if t is None:
            return
        with self.lock:
            t.append(batch)

    def append_columns(self, table: str, cols: list, nrows: int) -> None:
        t = self.tables.get(table)
        if t is None:
            return
        with self.lock:
            t.append_columns(cols, nrows)

    def snapshot(self) -> dict[str, pa.Table]:
        with self.lock:
            return {n: t.arrow() for n, t in self.tables.items()}

    def counts(self) -> dict[str, int]:
        return {n: t.n for n, t in self.tables.items()}

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self.tables.values()) + int(self.dictionary().nbytes)
