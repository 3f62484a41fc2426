"""The rows the gateway publishes through the tickerplant (orders are ticks): `order`,
`execution` and `alarm` (schemas/tables.toml says what each column holds).

    rows = Rows(registry)
    rows.order(now, order_fields...); rows.execution(...); rows.alarm(now, sym, code, text)
    rows.flush(feed)          # one message per table with everything collected

The gateway collects the rows of one kernel-loop iteration and publishes them together (the
natural batching of DESIGN.md: one row alone at low rate, many per message under load).
A row is one tuple; columns are built with one Arrow/numpy conversion per column at publish
time, never per row.
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

# Publish order: a flush's `order` message goes last, so when it is in the TP's log the same
# flush's `execution` and `alarm` messages (sent before it, on the same connection) are too:
# recovery trusts the `fix_seq` of `order` rows for that reason (gateway.recovery).
TABLES = ("alarm", "execution", "order")
NAN = math.nan


class Rows:
    def __init__(self, registry, source: str = "gateway"):
        self.schemas = {t: registry[t] for t in TABLES}
        for t, names in _COLUMNS.items():
            if tuple(self.schemas[t].names) != names:
                raise ValueError(f"table {t!r} has columns {self.schemas[t].names}; the gateway writes "
                                 f"{list(names)}: update gateway/rows.py with schemas/tables.toml")
        self.source = source
        self._rows: dict[str, list[tuple]] = {t: [] for t in TABLES}
        self.counts = {t: 0 for t in TABLES}

    def __len__(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def order(self, time: int, sym: str, id: str, parent: str, tag: str, client: str, strategy: str,
              account: str, side: str, qty: int, price: float | None, type: str, tif: str, status: str,
              venue: str, cum_qty: int, avg_px: float, reason: str = "", text: str = "", orig: str = "",
              fix_seq: int = 0) -> None:
        self._rows["order"].append((time, sym, id, parent, tag, client, strategy, account, side, qty,
                                    NAN if price is None else price, type, tif, status, venue, cum_qty,
                                    avg_px, reason, text[:1000], orig, fix_seq))

    def execution(self, time: int, sym: str, order_id: str, exec_id: str, parent: str, side: str,
                  qty: int, price: float, venue: str, fee: float, leaves: int, status: str,
                  account: str, strategy: str, fix_seq: int = 0) -> None:
        self._rows["execution"].append((time, sym, order_id, exec_id, parent, side, qty, price, venue,
                                        fee, leaves, status, account, strategy, fix_seq))

    def alarm(self, time: int, sym: str, code: str, text: str) -> None:
        self._rows["alarm"].append((time, sym, self.source, code, text[:1000]))

    def columns(self, table: str) -> dict | None:
        """The table's collected rows as columns (and forget them); None when there are none."""
        rows = self._rows[table]
        if not rows:
            return None
        self._rows[table] = []
        out = {}
        for c, values in zip(self.schemas[table].columns, zip(*rows)):
            out[c.name] = (pa.array(values, pa.string()) if c.dtype is None
                           else np.array(values, dtype=c.dtype))
        self.counts[table] += len(rows)
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


# the column order each row tuple follows (checked against the registry at start)
_COLUMNS = {
    "order": ("time", "sym", "id", "parent", "tag", "client", "strategy", "account", "side", "qty",
              "price", "type", "tif", "status", "venue", "cum_qty", "avg_px", "reason", "text", "orig",
              "fix_seq"),
    "execution": ("time", "sym", "order_id", "exec_id", "parent", "side", "qty", "price", "venue", "fee",
                  "leaves", "status", "account", "strategy", "fix_seq"),
    "alarm": ("time", "sym", "source", "code", "text"),
}
