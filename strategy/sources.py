"""Where a backtest's market data comes from: the HDB (a day or a range of Parquet
partitions), a tickerplant log, or tables in memory. Each yields `(day, Chunk)` in dispatch
order, at most `chunk_rows` events per chunk, syms coded into the run's `Universe`.

* HDB: each day's quote and trade partitions (`<hdb>/<table>/date=D/*.parquet`, sorted by
  sym then time), only the strategy's syms (row groups pruned by the sym statistics), put in
  time order by one stable numpy sort per table, then merged by time (a quote before a trade
  stamped the same). Ties within a table keep the file's order (by sym), so the order is
  deterministic. One day of the strategy's syms is held in memory at a time, as Arrow
  columns; the strategy gets it chunk by chunk.
* TP log: `tickerplant.log.scan` of one day's log, in log order (the order a live subscriber
  sees), consecutive records gathered into chunks. A damaged tail ends the replay with the
  scan's error (run `tickstack log repair`).
* Tables: pyarrow Tables (or dicts of columns) of quotes and trades, e.g. from MarketSim.

`marks(syms)` gives each traded sym's quote mids in time order for TCA and PnL marks.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from strategy.runtime import QUOTE_COLS, TRADE_COLS, Chunk, Universe

CHUNK_ROWS = 65_536
COLS = {"quote": QUOTE_COLS, "trade": TRADE_COLS}


class SourceError(ValueError):
    """The data asked for is not there; the message says what is."""


def _table(data) -> pa.Table | dict | None:
    """A pyarrow Table, or a dict of numpy columns (kept as it is: no Arrow conversion)."""
    if data is None:
        return None
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict):
        return {k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else np.asarray(v)
                for k, v in data.items()}
    return data


def _time_col(col) -> np.ndarray:
    if isinstance(col, np.ndarray):
        return col.view(np.int64) if col.dtype.kind == "M" else col.astype(np.int64, copy=False)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ns")).cast(pa.int64())
    a = col.to_numpy(zero_copy_only=False)
    return a.view(np.int64) if a.dtype.kind == "M" else a.astype(np.int64, copy=False)


def columns(table: pa.Table | dict, kind: str, universe: Universe) -> dict[str, np.ndarray]:
    """numpy columns of a quote or trade table (Arrow, or a dict of columns): time (int64
    ns), code (int32), values."""
    def col(name):
        if isinstance(table, dict):
            if name not in table:
                raise SourceError(f"{kind} columns need {name!r}; got {sorted(table)}")
            return table[name]
        return table.column(name)
    out = {"time": _time_col(col("time")), "code": universe.codes_of(col("sym"))}
    for c in COLS[kind]:
        a = col(c)
        a = a.to_numpy() if isinstance(a, (pa.Array, pa.ChunkedArray)) else np.asarray(a)
        out[c] = a.astype(np.float64 if c in ("bid", "ask", "price") else np.int64, copy=False)
    return out


def _take(cols: dict, order: np.ndarray | None) -> dict:
    return cols if order is None else {k: v[order] for k, v in cols.items()}


def _sorted(cols: dict) -> dict:
    t = cols["time"]
    if len(t) < 2 or bool((t[1:] >= t[:-1]).all()):
        return cols
    return _take(cols, np.argsort(t, kind="stable"))


def _sym_filter(table, syms):
    if table is None or syms is None:
        return table
    if isinstance(table, dict):
        col = table["sym"]
        if isinstance(col, (pa.Array, pa.ChunkedArray)):
            keep = _in(col, syms)
        else:
            col = np.asarray(col)
            keep = np.isin(col if col.dtype.kind in "US" else col.astype(str), sorted(syms))
        if keep.all():
            return table
        return {k: (v.filter(pa.array(keep)) if isinstance(v, (pa.Array, pa.ChunkedArray))
                    else np.asarray(v)[keep]) for k, v in table.items()}
    col = table.column("sym")
    if pa.types.is_dictionary(col.type):
        keep = _in(col, syms)
        return table if keep.all() else table.filter(pa.array(keep))
    return table.filter(pc.is_in(table.column("sym").cast(pa.string()),
                                 value_set=pa.array(sorted(syms), pa.string())))


def _in(col, syms) -> np.ndarray:
    """Row mask: sym in `syms`, per distinct sym for a dictionary column."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    lut = np.isin(np.asarray(col.dictionary.to_pylist(), dtype=object), list(syms))
    return lut[col.indices.to_numpy(zero_copy_only=False)] if len(lut) else np.zeros(len(col), bool)


def merged_chunks(quotes: dict | None, trades: dict | None, chunk_rows: int = CHUNK_ROWS
                  ) -> Iterator[Chunk]:
    """Chunks of time-sorted quote and trade columns, merged by time (quotes first on ties)."""
    nq = 0 if quotes is None else len(quotes["time"])
    nt = 0 if trades is None else len(trades["time"])
    if nq and nt:
        kinds = np.concatenate([np.zeros(nq, np.int8), np.ones(nt, np.int8)])
        order = np.argsort(np.concatenate([quotes["time"], trades["time"]]), kind="stable")
        kinds = kinds[order]
        qcum = np.concatenate([[0], np.cumsum(kinds == 0)])
        for a in range(0, nq + nt, chunk_rows):
            b = min(a + chunk_rows, nq + nt)
            qa, qb = int(qcum[a]), int(qcum[b])
            ta, tb = a - qa, b - qb
            yield Chunk({k: v[qa:qb] for k, v in quotes.items()},
                        {k: v[ta:tb] for k, v in trades.items()}, kinds[a:b])
    elif nq or nt:
        cols, n = (quotes, nq) if nq else (trades, nt)
        for a in range(0, n, chunk_rows):
            part = {k: v[a:a + chunk_rows] for k, v in cols.items()}
            yield Chunk(part, None) if nq else Chunk(None, part)


class TableSource:
    """Quotes and trades in memory (pyarrow Tables, RecordBatches or dicts of columns), one day."""

    def __init__(self, quote=None, trade=None, day: dt.date | None = None, chunk_rows: int = CHUNK_ROWS):
        self.quote, self.trade = _table(quote), _table(trade)
        self.day, self.chunk_rows = day, chunk_rows
        self.universe = Universe()
        self._cols: dict[str, dict] = {}

    def _get(self, kind: str, syms) -> dict | None:
        t = self.quote if kind == "quote" else self.trade
        if t is None:
            return None
        return _sorted(columns(_sym_filter(t, syms), kind, self.universe))

    def rows(self, tables, syms=None) -> int | None:
        return sum(len(t["time"]) if isinstance(t, dict) else t.num_rows
                   for k, t in (("quote", self.quote), ("trade", self.trade))
                   if t is not None and k in tables)

    def chunks(self, tables, syms=None) -> Iterator[tuple[dt.date | None, Chunk]]:
        q = self._get("quote", syms) if "quote" in tables else None
        tr = self._get("trade", syms) if "trade" in tables else None
        for c in merged_chunks(q, tr, self.chunk_rows):
            yield self.day, c

    def marks(self, syms) -> dict:
        return _marks(self._get("quote", syms) if self.quote is not None else None, self.universe)


class HdbSource:
    """Days `start`..`end` (inclusive) of the HDB at `hdb_dir`; days without a quote partition
    are skipped (weekends, holidays), and a range with none at all is an error."""

    def __init__(self, hdb_dir: Path, start: dt.date, end: dt.date | None = None,
                 chunk_rows: int = CHUNK_ROWS):
        self.hdb = Path(hdb_dir)
        end = end or start
        if end < start:
            raise SourceError(f"--to {end} is before --date {start}")
        have = sorted(dt.date.fromisoformat(p.name[5:]) for p in (self.hdb / "quote").glob("date=*")
                      if p.is_dir()) if (self.hdb / "quote").is_dir() else []
        self.days = [d for d in have if start <= d <= end]
        if not self.days:
            near = ", ".join(map(str, have[-5:])) or "none"
            raise SourceError(f"no quote partitions in {self.hdb} from {start} to {end}; "
                              f"latest days there: {near} (`tickstack hdb ls`)")
        self.chunk_rows = chunk_rows
        self.universe = Universe()

    def _read(self, table: str, day: dt.date, syms, cols=None) -> pa.Table | None:
        files = sorted((self.hdb / table / f"date={day}").glob("*.parquet"))
        if not files or (syms is not None and not len(syms)):
            return None
        filters = [("sym", "in", sorted(syms))] if syms is not None else None
        parts = [pq.read_table(f, columns=cols, filters=filters) for f in files]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def rows(self, tables, syms=None) -> int | None:
        n = 0
        for d in self.days:
            for t in tables:
                for f in (self.hdb / t / f"date={d}").glob("*.parquet"):
                    n += pq.ParquetFile(f).metadata.num_rows
        return n if syms is None else None

    def chunks(self, tables, syms=None) -> Iterator[tuple[dt.date, Chunk]]:
        for d in self.days:
            q = self._read("quote", d, syms) if "quote" in tables else None
            tr = self._read("trade", d, syms) if "trade" in tables else None
            qc = _sorted(columns(q, "quote", self.universe)) if q is not None else None
            tc = _sorted(columns(tr, "trade", self.universe)) if tr is not None else None
            del q, tr
            for c in merged_chunks(qc, tc, self.chunk_rows):
                yield d, c

    def marks(self, syms) -> dict:
        parts = [self._read("quote", d, syms, ["time", "sym", "bid", "ask"]) for d in self.days]
        parts = [p for p in parts if p is not None and p.num_rows]
        if not parts:
            return {}
        t = pa.concat_tables([p.select(["time", "sym", "bid", "ask"]) for p in parts],
                             promote_options="permissive")
        cols = {"time": _time_col(t.column("time")), "code": self.universe.codes_of(t.column("sym")),
                "bid": t.column("bid").to_numpy(), "ask": t.column("ask").to_numpy()}
        return _marks(_sorted(cols), self.universe)


class LogSource:
    """One day's tickerplant log, replayed in log order."""

    def __init__(self, path: Path, registry=None, chunk_rows: int = CHUNK_ROWS):
        from schemas.registry import load_registry
        from tickerplant.log import LogReader
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"no tickerplant log at {self.path}")
        self.day = LogReader(self.path).date
        self.registry = registry or load_registry()
        self.chunk_rows = chunk_rows
        self.universe = Universe()
        self._quotes: list[dict] = []

    def rows(self, tables, syms=None) -> int | None:
        return None

    def chunks(self, tables, syms=None) -> Iterator[tuple[dt.date, Chunk]]:
        from schemas.codec import decode
        from tickerplant.log import scan
        wanted = [t for t in ("quote", "trade") if t in tables]
        sym_codes = None
        pending: list[tuple[str, dict]] = []
        size = 0
        for _, head, payload in scan(self.path, tables=wanted):
            if not head.nrows:
                continue
            batch = decode(payload, self.registry)[1]
            cols = columns(pa.Table.from_batches([batch]), head.table, self.universe)
            if syms is not None:
                sym_codes = np.array([self.universe.code(s) for s in syms], np.int32)
                keep = np.isin(cols["code"], sym_codes)
                if not keep.all():
                    cols = {k: v[keep] for k, v in cols.items()}
            if not len(cols["time"]):
                continue
            pending.append((head.table, cols))
            size += len(cols["time"])
            if size >= self.chunk_rows:
                yield self.day, self._chunk(pending)
                pending, size = [], 0
        if pending:
            yield self.day, self._chunk(pending)

    def _chunk(self, parts: list[tuple[str, dict]]) -> Chunk:
        def cat(kind):
            ps = [c for k, c in parts if k == kind]
            if not ps:
                return None
            return {k: np.concatenate([p[k] for p in ps]) for k in ps[0]}
        q, tr = cat("quote"), cat("trade")
        if q is not None:
            self._quotes.append({k: q[k] for k in ("time", "code", "bid", "ask")})
        kinds = None
        if q is not None and tr is not None:
            kinds = np.concatenate([np.full(len(c["time"]), 0 if k == "quote" else 1, np.int8)
                                    for k, c in parts])
        return Chunk(q, tr, kinds)

    def marks(self, syms) -> dict:
        if not self._quotes:
            return {}
        cols = {k: np.concatenate([p[k] for p in self._quotes]) for k in ("time", "code", "bid", "ask")}
        codes = [self.universe.index[s] for s in syms if s in self.universe.index]
        keep = np.isin(cols["code"], codes)
        return _marks(_sorted({k: v[keep] for k, v in cols.items()}), self.universe)


def _marks(cols: dict | None, universe: Universe) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sym -> (times, mids) in time order, from quote columns (one-sided quotes give NaN)."""
    if cols is None or not len(cols["time"]):
        return {}
    with np.errstate(invalid="ignore"):
        mid = (cols["bid"] + cols["ask"]) * 0.5
    ok = np.isfinite(mid) & (cols["bid"] > 0) & (cols["ask"] > 0)
    code = cols["code"][ok]
    # one stable O(n) radix sort by sym (16-bit codes), then a slice per sym
    order = np.argsort(code.astype(np.int16) if len(universe) < 32768 else code, kind="stable")
    counts = np.bincount(code, minlength=len(universe))
    ends = np.cumsum(counts)
    t, m = cols["time"][ok][order], mid[ok][order]
    out = {}
    for c in np.flatnonzero(counts).tolist():
        a, b = ends[c] - counts[c], ends[c]
        out[universe.names[c]] = (t[a:b], m[a:b])
    return out
