"""Replay a tickerplant log (kdb's -11!): stream its batches out, or load them into an RDB store.

Both ride `log.scan` (per record, never per row; `verify` re-checks every checksum).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa

from schemas.codec import columns, decode
from tickerplant.log import scan


def replay(path: str | Path, registry, tables=None, first: int | None = None, verify: bool = True,
           progress: bool = False) -> Iterator[tuple[int, str, pa.RecordBatch]]:
    """(seq, table, batch) for each batch record, in log order; `first` stops after N records.
    A damaged record ends it with LogError (a ValueError) once everything before it is out."""
    for seq, head, payload in scan(path, tables, first, verify, progress):
        yield seq, head.table, decode(payload, registry)[1]


def replay_into(store, path, registry, tables=None, first=None, verify=True, progress=False) -> int:
    """Load a log into an RDB Store; returns rows loaded."""
    rows = 0
    for _, head, payload in scan(path, tables, first, verify, progress):
        _, _, cols = columns(payload, registry)
        store.append_columns(head.table, cols, head.nrows)
        rows += head.nrows
    return rows
