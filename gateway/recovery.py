"""What a restarted gateway reads back: today's `order` and `execution` rows it published
(feed id = [gateway] feed_id) from the tickerplant's log, reduced to the last state of each
order, every execution in order, and how far each venue's messages were durably processed.

    past = read_published(log_path, registry, feed_id)
    past.parents / past.children   {id: last row} in first-seen order
    past.executions                [row, ...] in log order
    past.durable                   {venue: the venue's MsgSeqNum after the last one that left an
                                    `order` row: every row of the messages before it is logged}

The log is read with tickerplant.log.scan (per record, never per row): a damaged record ends
the read with a warning and what was before it is used. See gateway.gateway for the recovery
contract these rows serve.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("gateway")


@dataclass
class Published:
    parents: dict[str, dict] = field(default_factory=dict)
    children: dict[str, dict] = field(default_factory=dict)
    executions: list[dict] = field(default_factory=list)
    durable: dict[str, int] = field(default_factory=dict)
    rows: int = 0


def read_published(path: str | Path | None, registry, feed_id: int) -> Published:
    """The gateway's own rows in the log at `path` (None or missing: nothing)."""
    from schemas.codec import decode
    from tickerplant.log import scan
    out = Published()
    if path is None or not Path(path).exists():
        return out
    for _, head, payload in scan(path, ("order", "execution"), strict=False):
        if head.feed != feed_id:
            continue
        batch = decode(payload, registry)[1]
        cols = {}
        for name in batch.schema.names:
            col = batch.column(name)
            if name == "time":
                col = col.cast("int64")
            cols[name] = col.to_pylist()
        n = batch.num_rows
        out.rows += n
        for i in range(n):
            row = {k: v[i] for k, v in cols.items()}
            venue, seq = row.get("venue") or "", row.get("fix_seq") or 0
            if venue and seq and head.table == "order":     # see gateway.rows: order goes last
                out.durable[venue] = max(out.durable.get(venue, 0), seq + 1)
            if head.table == "execution":
                out.executions.append(row)
            elif row["parent"]:
                out.children[row["id"]] = row
            else:
                out.parents[row["id"]] = row
    return out
