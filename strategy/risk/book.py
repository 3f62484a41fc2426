"""Positions, PnL and exposure per book and sym, from `execution` rows and `quote` batches.

    b = Book("strategy")
    b.on_quotes(quote_batch)          # pyarrow RecordBatch of the quote table (or columns)
    b.on_fills(execution_batch)       # pyarrow RecordBatch of the execution table
    snap = b.snapshot()               # numpy columns per (book, sym) and per book

Accounting (the same as the gateway's pre-trade risk, gateway.risk): average cost; a fill that
reduces a position realizes (price - avg) x closed qty (sign of the position); one that flips
opens the rest at its price; fees reduce realized PnL. Unrealized PnL marks longs at the bid
and shorts at the ask (before a sym's first two-sided quote: its last fill price). Exposure is
marked at the mid: gross = sum |position x mid|, net = sum position x mid, per book.

Books. A fill's book is its `strategy` (book_by "strategy"), its `account` ("account"), or
"account/strategy" ("account_strategy"); an empty name is "-".

Batches. A quote batch is applied as each sym's last two-sided row in it (numpy: one pass
over the codes, Python work per distinct sym only); a sym's quote older than the one held is
skipped and counted. Fills are applied row by row (average cost is sequential; executions
are rare beside quotes). `minute_closes(batch)` gives the mids at each minute boundary the
batch's data time crosses (for today's VaR scenarios).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

NAN = math.nan
MINUTE = 60_000_000_000


def _sym_codes(col) -> tuple[np.ndarray, list[str]]:
    """(codes per row, -1 for null; the words) of a sym column: Arrow's hash encoding does
    the per-row work in C."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not isinstance(col, pa.Array):
        col = pa.array(np.asarray(col, dtype=object), pa.string())
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    codes = col.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, col.dictionary.to_pylist()


def _num(col, dtype) -> np.ndarray:
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        col = col.to_numpy(zero_copy_only=False)
    return np.asarray(col, dtype=dtype)


def last_rows(codes: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct codes, the index of each one's last row) among the rows where `ok`."""
    idx = np.flatnonzero(ok)
    if not len(idx):
        return np.zeros(0, np.int64), idx
    rev = idx[::-1]
    u, first = np.unique(codes[rev], return_index=True)
    return u, rev[first]


class Snapshot(NamedTuple):
    """Per position row (a (book, sym) with a position or realized PnL) and per book."""
    book: np.ndarray          # book index per row
    sym: np.ndarray           # sym index per row
    position: np.ndarray
    avg_cost: np.ndarray
    realized: np.ndarray
    unrealized: np.ndarray
    gross: np.ndarray
    net: np.ndarray
    mid: np.ndarray
    book_realized: np.ndarray     # per book (index = book index)
    book_unrealized: np.ndarray
    book_gross: np.ndarray
    book_net: np.ndarray


class Book:
    def __init__(self, book_by: str = "strategy"):
        if book_by not in ("strategy", "account", "account_strategy"):
            raise ValueError(f"book_by must be strategy, account or account_strategy, not {book_by!r}")
        self.book_by = book_by
        self.syms: list[str] = []
        self.sym_index: dict[str, int] = {}
        self.books: list[str] = []
        self.book_index: dict[str, int] = {}
        n = 64
        self.bid = np.full(n, NAN)
        self.ask = np.full(n, NAN)
        self.bsize = np.zeros(n, np.int64)
        self.asize = np.zeros(n, np.int64)
        self.qtime = np.full(n, -1, np.int64)
        self.last_px = np.full(n, NAN)
        self.rows: dict[tuple[int, int], int] = {}
        self.pb = np.zeros(n, np.int64)
        self.ps = np.zeros(n, np.int64)
        self.pos = np.zeros(n, np.int64)
        self.avg = np.zeros(n)
        self.realized = np.zeros(n)
        self.fees = np.zeros(n)
        self.filled_by_parent: dict[str, int] = defaultdict(int)
        self.counts: Counter[str] = Counter()
        self.last_fill_time = 0
        self.last_quote_time = 0

    # ---- names --------------------------------------------------------------------------
    def sym(self, name: str) -> int:
        i = self.sym_index.get(name)
        if i is None:
            i = self.sym_index[name] = len(self.syms)
            self.syms.append(name)
            if i >= len(self.bid):
                grow = len(self.bid)
                self.bid = np.concatenate([self.bid, np.full(grow, NAN)])
                self.ask = np.concatenate([self.ask, np.full(grow, NAN)])
                self.bsize = np.concatenate([self.bsize, np.zeros(grow, np.int64)])
                self.asize = np.concatenate([self.asize, np.zeros(grow, np.int64)])
                self.qtime = np.concatenate([self.qtime, np.full(grow, -1, np.int64)])
                self.last_px = np.concatenate([self.last_px, np.full(grow, NAN)])
        return i

    def book(self, name: str) -> int:
        i = self.book_index.get(name)
        if i is None:
            i = self.book_index[name] = len(self.books)
            self.books.append(name)
        return i

    def book_name(self, account: str, strategy: str) -> str:
        if self.book_by == "strategy":
            return strategy or "-"
        if self.book_by == "account":
            return account or "-"
        return f"{account or '-'}/{strategy or '-'}"

    def _row(self, b: int, s: int) -> int:
        r = self.rows.get((b, s))
        if r is None:
            r = self.rows[(b, s)] = len(self.rows)
            if r >= len(self.pos):
                grow = len(self.pos)
                self.pb = np.concatenate([self.pb, np.zeros(grow, np.int64)])
                self.ps = np.concatenate([self.ps, np.zeros(grow, np.int64)])
                self.pos = np.concatenate([self.pos, np.zeros(grow, np.int64)])
                self.avg = np.concatenate([self.avg, np.zeros(grow)])
                self.realized = np.concatenate([self.realized, np.zeros(grow)])
                self.fees = np.concatenate([self.fees, np.zeros(grow)])
            self.pb[r], self.ps[r] = b, s
        return r

    # ---- market data --------------------------------------------------------------------
    def on_quotes(self, batch=None, *, time=None, sym=None, bid=None, ask=None, bsize=None,
                  asize=None) -> int:
        """Apply a quote batch (a RecordBatch of the quote table, or its columns): each sym's
        last two-sided row. Returns the number of syms updated."""
        if batch is not None:
            time, sym, bid, ask = (batch.column(c) for c in ("time", "sym", "bid", "ask"))
            bsize, asize = batch.column("bsize"), batch.column("asize")
        codes, words = _sym_codes(sym)
        t, b, a = _num(time, np.int64), _num(bid, np.float64), _num(ask, np.float64)
        bs, as_ = _num(bsize, np.int64), _num(asize, np.int64)
        if not len(t):
            return 0
        self.counts["quote_rows"] += len(t)
        self.last_quote_time = max(self.last_quote_time, int(t.max()))
        with np.errstate(invalid="ignore"):
            ok = (codes >= 0) & np.isfinite(b) & np.isfinite(a) & (b > 0) & (a > 0)
        bad = len(t) - int(ok.sum())
        if bad:
            self.counts["bad_quotes"] += bad
        u, rows = last_rows(codes, ok)
        if not len(u):
            return 0
        lut = np.fromiter((self.sym(w) for w in words), np.int64, len(words))
        s = lut[u]
        newer = t[rows] >= self.qtime[s]
        if not newer.all():
            self.counts["old_quotes"] += int((~newer).sum())
            s, rows = s[newer], rows[newer]
        self.bid[s], self.ask[s] = b[rows], a[rows]
        self.bsize[s], self.asize[s], self.qtime[s] = bs[rows], as_[rows], t[rows]
        return len(s)

    def mids(self) -> np.ndarray:
        """Each sym's mid now (NaN before its first two-sided quote)."""
        n = len(self.syms)
        return (self.bid[:n] + self.ask[:n]) * 0.5

    # ---- executions ---------------------------------------------------------------------
    def on_fills(self, batch) -> int:
        """Apply a batch of `execution` rows (a RecordBatch or a dict of columns). Returns
        the number of fills applied; a row without a positive qty or finite price is counted
        (bad_fills) and skipped."""
        col = batch.column if hasattr(batch, "column") else batch.__getitem__

        def strs(name):
            c = col(name)
            return c.to_pylist() if isinstance(c, (pa.Array, pa.ChunkedArray)) else list(c)
        syms, sides, accounts, strategies = strs("sym"), strs("side"), strs("account"), strs("strategy")
        parents = strs("parent")
        qty = _num(col("qty"), np.int64).tolist()
        px = _num(col("price"), np.float64).tolist()
        fee = _num(col("fee"), np.float64).tolist()
        times = _num(col("time"), np.int64)
        n = 0
        for sym, side, acct, strat, parent, q, p, f in zip(syms, sides, accounts, strategies, parents,
                                                           qty, px, fee):
            if not (q > 0 and math.isfinite(p) and p > 0 and side in ("buy", "sell") and sym):
                self.counts["bad_fills"] += 1
                continue
            if not math.isfinite(f):
                f = 0.0
            s = self.sym(sym)
            r = self._row(self.book(self.book_name(acct or "", strat or "")), s)
            self._fill(r, q if side == "buy" else -q, p, f)
            self.last_px[s] = p
            if parent:
                self.filled_by_parent[parent] += q
            n += 1
        if len(times):
            self.last_fill_time = max(self.last_fill_time, int(times.max()))
        self.counts["fills"] += n
        return n

    def _fill(self, r: int, d: int, px: float, fee: float) -> None:
        pos = int(self.pos[r])
        if pos == 0 or (pos > 0) == (d > 0):
            self.avg[r] = (self.avg[r] * abs(pos) + px * abs(d)) / (abs(pos) + abs(d))
        else:
            closed = min(abs(d), abs(pos))
            self.realized[r] += closed * (px - self.avg[r]) * (1 if pos > 0 else -1)
            if abs(d) > abs(pos):
                self.avg[r] = px
            elif abs(d) == abs(pos):
                self.avg[r] = 0.0
        self.pos[r] = pos + d
        self.realized[r] -= fee
        self.fees[r] += fee

    def new_day(self) -> None:
        """The day rolled: positions and their average cost carry over; realized PnL and
        fees start again from 0."""
        n = len(self.rows)
        self.realized[:n] = 0.0
        self.fees[:n] = 0.0
        self.filled_by_parent.clear()

    # ---- views --------------------------------------------------------------------------
    def position(self, book: str, sym: str) -> int:
        b, s = self.book_index.get(book), self.sym_index.get(sym)
        r = self.rows.get((b, s)) if b is not None and s is not None else None
        return 0 if r is None else int(self.pos[r])

    def snapshot(self) -> Snapshot:
        n, nb = len(self.rows), len(self.books)
        pb, ps, pos = self.pb[:n], self.ps[:n], self.pos[:n]
        bid, ask, last = self.bid[ps], self.ask[ps], self.last_px[ps]
        quoted = np.isfinite(bid) & np.isfinite(ask)
        mid = np.where(quoted, (bid + ask) * 0.5, last)
        mark = np.where(quoted, np.where(pos > 0, bid, ask), last)
        fpos = pos.astype(np.float64)
        unreal = np.where(pos != 0, fpos * (mark - self.avg[:n]), 0.0)
        net = np.where(pos != 0, fpos * mid, 0.0)
        gross = np.abs(net)
        realized = self.realized[:n].copy()
        return Snapshot(pb.copy(), ps.copy(), pos.copy(), self.avg[:n].copy(), realized, unreal, gross,
                        net, mid, np.bincount(pb, realized, nb), np.bincount(pb, unreal, nb),
                        np.bincount(pb, gross, nb), np.bincount(pb, net, nb))
