"""Replay a tickerplant log: stream its batches out, or load them into an RDB store.

Work is per record (one batch each), never per row; `verify` re-checks every checksum.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
from tqdm import tqdm

from schemas.codec import columns, decode, peek
from tickerplant.log import LogReader, is_control


def replay(path: str | Path, registry, tables=None, first: int | None = None, verify: bool = True,
           progress: bool = False) -> Iterator[tuple[int, str, pa.RecordBatch]]:
    """(seq, table, batch) for each batch record, in log order; `first` stops after N records."""
    reader = LogReader(path)
    wanted = set(tables) if tables else None
    bar = tqdm(total=Path(path).stat().st_size, unit="B", unit_scale=True, desc="replay",
               disable=not progress, leave=False)
    last = 0
    try:
        for rec in reader.records(verify=verify):
            if first is not None and rec.seq > first:
                break
            end = reader.end_offset(rec)
            bar.update(end - last)
            last = end
            if is_control(rec.payload):
                continue
            table = peek(rec.payload).table
            if wanted is None or table in wanted:
                yield rec.seq, table, decode(rec.payload, registry)[1]
    finally:
        bar.close()
    if reader.error:
        raise ValueError(f"{path}: stopped at {reader.error}; everything before it was replayed. "
                         f"Run `tickstack log check {path}` / `tickstack log repair {path}`")


def replay_into(store, path, registry, tables=None, first=None, verify=True, progress=False) -> int:
    """Load a log into an RDB Store; returns rows loaded."""
    rows = 0
    reader = LogReader(path)
    wanted = set(tables) if tables else None
    bar = tqdm(total=Path(path).stat().st_size, unit="B", unit_scale=True, desc="replay",
               disable=not progress, leave=False)
    for rec in reader.records(verify=verify):
        if first is not None and rec.seq > first:
            break
        if not is_control(rec.payload):
            head, _, cols = columns(rec.payload, registry)
            if wanted is None or head.table in wanted:
                store.append_columns(head.table, cols, head.nrows)
                rows += head.nrows
        if progress and rec.seq % 1024 == 0:
            bar.update(reader.end_offset(rec) - bar.n)
    bar.close()
    if reader.error:
        raise ValueError(f"{path}: stopped at {reader.error}; {rows} rows before it were loaded. "
                         f"Run `tickstack log check {path}` / `tickstack log repair {path}`")
    return rows
