"""tickstack bench replay: rows/s loading a TP log into an RDB store (checksums verified, and
not), beside reading the same batches from an Arrow IPC file (memory-mapped) in the same run."""
from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from ops.bench.common import report
from ops.bench.ingest import messages
from rdb.store import Store
from schemas.codec import decode
from schemas.registry import load_registry
from tickerplant.log import LogWriter, log_path
from tickerplant.replay import replay_into


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench replay", description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000, help="rows per record")
    ap.add_argument("--records", type=int, default=2_000)
    a = ap.parse_args(argv)
    reg = load_registry()
    msgs = messages(a.rows)
    total = a.rows * a.records
    with tempfile.TemporaryDirectory(prefix="tsbench") as d:
        day = dt.date(2026, 1, 2)
        path = log_path(Path(d), day)
        w = LogWriter(path, day)
        for i in tqdm(range(0, a.records, 100), desc="writing log", leave=False):
            w.append([msgs[j % len(msgs)] for j in range(i, min(i + 100, a.records))])
        w.close()
        ipc = Path(d) / "same.arrow"
        with pa.OSFile(str(ipc), "wb") as f, pa.ipc.new_stream(f, decode(msgs[0], reg)[1].schema) as out:
            for j in range(a.records):
                out.write_batch(decode(msgs[j % len(msgs)], reg)[1])
        print(f"{a.records} records x {a.rows} rows = {total:,} rows, log {path.stat().st_size / 1e6:,.0f} MB",
              flush=True)

        def ours(verify):
            store = Store(reg, ["trade"], chunk_rows=1 << 20)
            t = time.perf_counter()
            n = replay_into(store, path, reg, verify=verify)
            assert n == total
            return n / (time.perf_counter() - t)

        def base():
            store = Store(reg, ["trade"], chunk_rows=1 << 20)
            t = time.perf_counter()
            with pa.memory_map(str(ipc)) as src:
                for batch in pa.ipc.open_stream(src):
                    store.append("trade", batch)
            return total / (time.perf_counter() - t)
        b = base()
        report("log replay into an RDB (crc verified)", ours(True), b, "rows/s", ">= 50M rows/s")
        report("log replay into an RDB (no crc)", ours(False), b, "rows/s", ">= 50M rows/s")


if __name__ == "__main__":
    main()
