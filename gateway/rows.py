"""The rows the gateway publishes through the tickerplant (orders are ticks): `order`,
`execution` and `alarm` (schemas/tables.toml says what each column holds).

    rows = Rows(registry)
    rows.order(now, order_fields...); rows.execution(...); rows.alarm(now, sym, code, text)
    rows.flush(feed)          # one message per table with everything collected

The gateway collects the rows of one kernel-loop iteration and publishes them together (the
natural batching of DESIGN.md: one row alone at low rate, many per message under load).
Columns are built with one Arrow/numpy conversion per column, never per row.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

TABLES = ("order", "execution", "alarm")
NAN = math.nan


class Rows:
    def __init__(self, registry, source: str = "gateway"):
        self.schemas = {t: registry[t] for t in TABLES}
        self.source = source
        self._cols = {t: {c.name: [] for c in s.columns} for t, s in self.schemas.items()}
        self.counts = {t: 0 for t in TABLES}

    def __len__(self) -> int:
        return sum(len(c["time"]) for c in self._cols.values())

    def _add(self, table: str, values: dict) -> None:
        cols = self._cols[table]
        for name, col in cols.items():
            col.append(values[name])

    def order(self, time: int, sym: str, id: str, parent: str, tag: str, client: str, strategy: str,
              account: str, side: str, qty: int, price: float | None, type: str, tif: str, status: str,
              venue: str, cum_qty: int, avg_px: float, reason: str = "", text: str = "", orig: str = "",
              fix_seq: int = 0) -> None:
        self._add("order", dict(time=time, sym=sym, id=id, parent=parent, tag=tag, client=client,
                                strategy=strategy, account=account, side=side, qty=qty,
                                price=NAN if price is None else price, type=type, tif=tif,
                                status=status, venue=venue, cum_qty=cum_qty, avg_px=avg_px,
                                reason=reason, text=text[:1000], orig=orig, fix_seq=fix_seq))

    def execution(self, time: int, sym: str, order_id: str, exec_id: str, parent: str, side: str,
                  qty: int, price: float, venue: str, fee: float, leaves: int, status: str,
                  account: str, strategy: str, fix_seq: int = 0) -> None:
        self._add("execution", dict(time=time, sym=sym, order_id=order_id, exec_id=exec_id,
                                    parent=parent, side=side, qty=qty, price=price, venue=venue,
                                    fee=fee, leaves=leaves, status=status, account=account,
                                    strategy=strategy, fix_seq=fix_seq))

    def alarm(self, time: int, sym: str, code: str, text: str) -> None:
        self._add("alarm", dict(time=time, sym=sym, source=self.source, code=code, text=text[:1000]))

    def columns(self, table: str) -> dict | None:
        """The table's collected rows as columns (and forget them); None when there are none."""
        cols = self._cols[table]
        if not cols["time"]:
            return None
        out = {}
        for c in self.schemas[table].columns:
            values = cols[c.name]
            out[c.name] = (pa.array(values, pa.string()) if c.dtype is None
                           else np.asarray(values, dtype=c.dtype))
            cols[c.name] = []
        self.counts[table] += len(out["time"])
        return out

    def flush(self, feed) -> int:
        """Publish what was collected, one message per table; returns the rows published."""
        n = 0
        for table in TABLES:
            cols = self.columns(table)
            if cols is not None:
                feed.publish(table, cols)
                n += len(cols["time"])
        return n
