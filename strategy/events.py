"""What a strategy receives: market data (one row, or a batch of columns) and its own order
events, the same objects live and in backtest.

Rows. `Quote(time, sym, bid, ask, bsize, asize)` and `Trade(time, sym, price, size)` are
tuples with named fields (the columns of schemas/tables.toml); times are int ns since the
epoch (UTC). They are built in C from columns (`rows`), so a per-event strategy pays for its
own callback and nothing else.

Batches. `QuoteBatch` / `TradeBatch` hold numpy columns of consecutive rows: `time` (int64),
`code` (int32: an index into `syms`, the run's sym universe, stable for the whole run, so a
vectorised strategy can keep per-sym state in arrays), and the value columns. `sym` gives the
names as a numpy array (built on first use). Columns are views: copy what you keep.

Order events (from the gateway's replies and events, see /work/helpers/INTENTS.md):
`OrderEvent` is a state change of one of the strategy's orders (a parent, venue "") or of a
venue child (venue set), including risk denials (status "REJECTED", `code` the pre-trade
risk reason, e.g. "max_order_qty"); `Fill` is one execution of a child, named by the
strategy's tag.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import numpy as np


class Quote(NamedTuple):
    time: int
    sym: str
    bid: float
    ask: float
    bsize: int
    asize: int


class Trade(NamedTuple):
    time: int
    sym: str
    price: float
    size: int


def rows(kind: type, columns: list) -> list:
    """Row tuples of `kind` from Python lists of column values, built in C (no per-row
    Python frame: tuple.__new__ over zip)."""
    return list(map(partial(tuple.__new__, kind), zip(*columns)))


class _Batch:
    __slots__ = ("syms", "time", "code", "_names")
    _columns: tuple[str, ...] = ()

    def __init__(self, syms: list[str], time: np.ndarray, code: np.ndarray, **cols):
        self.syms, self.time, self.code, self._names = syms, time, code, None
        for k, v in cols.items():
            setattr(self, k, v)

    def __len__(self) -> int:
        return len(self.time)

    @property
    def sym(self) -> np.ndarray:
        """Sym names per row (numpy str array)."""
        if self._names is None:
            self._names = np.asarray(self.syms, dtype=object)[self.code] if len(self.syms) else \
                np.empty(0, dtype=object)
        return self._names

    def code_of(self, sym: str) -> int:
        """The code of `sym` in this run (-1: not seen yet)."""
        try:
            return self.syms.index(sym)
        except ValueError:
            return -1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rows={len(self)})"


class QuoteBatch(_Batch):
    """Consecutive quote rows as numpy columns: time, code (into `syms`), bid, ask, bsize, asize."""
    __slots__ = ("bid", "ask", "bsize", "asize")

    def rows(self) -> list[Quote]:
        names = self.syms
        return rows(Quote, [self.time.tolist(), [names[c] for c in self.code.tolist()],
                            self.bid.tolist(), self.ask.tolist(), self.bsize.tolist(),
                            self.asize.tolist()])


class TradeBatch(_Batch):
    """Consecutive trade rows as numpy columns: time, code (into `syms`), price, size."""
    __slots__ = ("price", "size")

    def rows(self) -> list[Trade]:
        names = self.syms
        return rows(Trade, [self.time.tolist(), [names[c] for c in self.code.tolist()],
                            self.price.tolist(), self.size.tolist()])


class OrderEvent(NamedTuple):
    """A state change of an order. `tag` is the strategy's tag for the parent order; `venue`
    is "" for the parent's own state and the venue's name for a child's. `code` is set on
    denials and refusals (a gateway.risk.Deny value, or a gateway reason code)."""
    tag: str
    id: str
    status: str                 # FIX OrdStatus name: NEW, PARTIALLY_FILLED, FILLED, CANCELED, ...
    cum_qty: int
    leaves_qty: int
    avg_px: float
    venue: str
    text: str
    time: int
    code: str | None = None

    @property
    def done(self) -> bool:
        return self.status in DONE


DONE = frozenset({"FILLED", "CANCELED", "REJECTED", "EXPIRED", "REPLACED"})


class Fill(NamedTuple):
    """One execution of one of the strategy's orders at a venue."""
    tag: str
    id: str
    exec_id: str
    venue: str
    sym: str
    side: str                   # "buy" / "sell"
    qty: int
    price: float
    fee: float
    time: int

    @property
    def signed_qty(self) -> int:
        return self.qty if self.side == "buy" else -self.qty
