"""tickstack bench eod: rows/s of the EOD writer (hdb.eod.save_day: conform, sort by sym then
time, zstd, row groups for sym pruning, atomic partition swap, fsync) beside a raw
`pyarrow.parquet.write_table` of the same in-memory table, in the same run.

    python -m ops.bench.eod                    # 5M trades, 500 syms (about a minute)
    python -m ops.bench.eod --rows 100000000   # a big day
Runs alternate (ours, raw, ours, raw, ...) so machine noise hits both; the best of each is
reported. Target: >= 0.8x the raw write.
"""
from __future__ import annotations

import argparse
import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from ops.bench.common import report
from schemas.registry import load_registry

BLOCK = 5_000_000


def make_day(rows: int, nsyms: int, day: dt.date, seed: int = 0) -> pa.Table:
    """A day of trades as the RDB holds it: time-ordered, sym interleaved, built in numpy blocks."""
    rng = np.random.default_rng(seed)
    start = int(np.datetime64(day, "ns").astype(np.int64)) + 14 * 3600 * 10**9
    span = int(6.5 * 3600 * 10**9)
    syms = pa.array([f"S{i:05d}" for i in range(nsyms)])
    parts = []
    with tqdm(total=rows, unit="rows", unit_scale=True, desc="generating", leave=False) as bar:
        for i, lo in enumerate(range(0, rows, BLOCK)):
            n = min(BLOCK, rows - lo)
            # each block covers its own slice of the session, so the day stays time-ordered
            t0 = start + span * lo // rows
            t = np.sort(t0 + rng.integers(0, max(1, span * n // rows), n))
            parts.append(pa.record_batch({
                "time": pa.array(t, pa.timestamp("ns")),
                "sym": pa.DictionaryArray.from_arrays(pa.array(rng.integers(0, nsyms, n, dtype=np.int32)), syms),
                "price": np.round(100 + np.cumsum(rng.standard_normal(n)) * 0.01, 2),
                "size": rng.integers(1, 1000, n),
            }))
            bar.update(n)
    return pa.Table.from_batches(parts)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ops.bench.eod", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--syms", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    a = ap.parse_args(argv)
    from hdb.eod import save_day

    reg = load_registry()
    day = dt.date(2026, 1, 2)
    table = make_day(a.rows, a.syms, day)
    mb = table.nbytes / 1e6
    print(f"{a.rows:,} trades, {a.syms} syms, {mb:,.0f} MB in memory", flush=True)
    with tempfile.TemporaryDirectory(prefix="tsbench", dir=a.dir) as d:
        d = Path(d)
        ours, raw = [], []
        sizes = {}
        for i in tqdm(range(a.repeat), desc="runs", leave=False):
            t = time.perf_counter()
            save_day(d / "hdb", day, {"trade": table}, reg, progress=False)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            pq.write_table(table, d / "raw.parquet")
            raw.append(time.perf_counter() - t)
            sizes = {"tickstack": sum(f.stat().st_size for f in (d / "hdb" / "trade").rglob("*.parquet")),
                     "raw": (d / "raw.parquet").stat().st_size}
            (d / "raw.parquet").unlink()
        shutil.rmtree(d / "hdb", ignore_errors=True)
    print(f"file bytes: tickstack {sizes['tickstack'] / 1e6:,.0f} MB (sorted, zstd)  "
          f"raw {sizes['raw'] / 1e6:,.0f} MB (pyarrow defaults)")
    print(f"seconds per run: tickstack {['%.2f' % x for x in ours]}  raw {['%.2f' % x for x in raw]}")
    report("EOD write of a day (save_day)", a.rows / min(ours), a.rows / min(raw), "rows/s",
           target=">= 0.8")


if __name__ == "__main__":
    main()
