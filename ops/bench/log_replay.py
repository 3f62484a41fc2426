"""tickstack bench replay: rows/s loading a TP log into an RDB store through the public call
(`tickerplant.replay.replay_into`, what `tickstack log replay` runs), checksums verified (the
default) and not, beside reading the same rows from Arrow IPC files (memory-mapped) into the
same kind of store (`Store.append` per batch), in the same run.

Two logs, reported apart: trades and quotes as a feed sends them at full rate (10,000-row
messages), and small messages (100 rows), where per-message work dominates. Symbols come from a
500-name universe with a few names far busier than the rest, as on a real tape. Each variant
runs `--repeat` times, round robin after one untimed warm-up round; the best and the median
are printed (the machine is shared: the best is the cost without neighbours). Every variant
runs twice over: with the store's memory fresh from the kernel, as in a new RDB process (page
faults and zeroing, which this VM does at ~1-2 GB/s, cap every variant alike: the time to take
and write the store's bytes alone is printed beside), and with malloc keeping freed memory, so
the store reuses it and the figure is the replay's own work.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from ops.bench.common import report
from rdb.store import Store
from schemas.codec import decode, encode
from schemas.registry import load_registry
from tickerplant.log import LogWriter, log_path
from tickerplant.replay import replay_into

TABLES = ["trade", "quote"]
T0 = 1_767_600_000_000_000_000  # 2026-01-05 08:00 UTC in ns


def messages(reg, rows: int, total: int, seed: int = 7) -> list[tuple[str, bytes]]:
    """(table, payload) in time order: a third of the rows trades, two thirds quotes, each
    message `rows` rows of one table."""
    rng = np.random.default_rng(seed)
    universe = np.array([f"S{i:03d}" for i in range(500)])
    weight = 1 / np.arange(1, 501) ** 0.8
    weight /= weight.sum()
    mid = 20 + 480 * rng.random(500)
    out = []
    t = T0
    nmsg = max(total // rows, 1)
    for m in tqdm(range(nmsg), desc="encoding messages", leave=False):
        table = "trade" if m % 3 == 0 else "quote"
        idx = rng.choice(500, rows, p=weight)
        times = t + np.cumsum(rng.integers(1, 2_000, rows))
        t = int(times[-1])
        px = np.round(mid[idx] * (1 + rng.normal(0, 2e-4, rows)), 2)
        if table == "trade":
            data = {"time": times, "sym": universe[idx], "price": px, "size": rng.integers(1, 50, rows) * 100}
        else:
            spread = np.maximum(np.round(px * 1e-4, 2), 0.01)
            data = {"time": times, "sym": universe[idx], "bid": px - spread, "ask": px + spread,
                    "bsize": rng.integers(1, 20, rows) * 100, "asize": rng.integers(1, 20, rows) * 100}
        out.append((table, encode(reg[table], data)))
    return out


def write(reg, msgs, d: Path) -> tuple[Path, dict[str, Path]]:
    """The log, and one Arrow IPC stream per table holding the same batches."""
    day = dt.date(2026, 1, 5)
    path = log_path(d, day)
    w = LogWriter(path, day)
    for i in range(0, len(msgs), 100):
        w.append([p for _, p in msgs[i: i + 100]])
    w.close()
    ipc = {t: d / f"{t}.arrow" for t in TABLES}
    writers = {t: pa.ipc.new_stream(str(ipc[t]), reg[t].arrow) for t in TABLES}
    for t, payload in msgs:
        writers[t].write_batch(decode(payload, reg)[1])
    for w_ in writers.values():
        w_.close()
    return path, ipc


def _keep_freed_memory() -> None:
    """glibc malloc: keep freed memory for reuse instead of handing large blocks back to the
    kernel (its default). A store built after another was freed then reuses its pages, and a
    run measures the replay's own work. (This disables glibc's adaptive thresholds for the rest
    of the process, so it comes after every fresh-memory run.)"""
    libc = ctypes.CDLL(None)
    m_trim, m_mmap = -1, -3
    libc.mallopt(m_mmap, 32 << 20)  # glibc's maximum
    libc.mallopt(m_trim, 2**31 - 1)


def _touch(nbytes: int, chunk: int = 2 << 20) -> float:
    """Seconds to take `nbytes` of fresh memory in store-sized chunks and write it once."""
    t = time.perf_counter()
    parts = [np.empty(chunk, np.uint8) for _ in range(nbytes // chunk + 1)]
    for x in parts:
        x.fill(1)
    el = time.perf_counter() - t
    del parts
    return el


class Case:
    """One log and the same rows as Arrow IPC files, and the runs over them."""

    def __init__(self, reg, rows: int, total: int, d: Path):
        d.mkdir()
        self.reg, self.rows = reg, rows
        msgs = messages(reg, rows, total)
        self.path, self.ipc = write(reg, msgs, d)
        self.total = sum(int.from_bytes(p[8:12], "little") for _, p in msgs)
        self.size = self.path.stat().st_size
        self.ipc_size = sum(p.stat().st_size for p in self.ipc.values())
        self.held = 0
        self.results: list[tuple[str, dict, dict, float | None]] = []

    def ours(self, verify: bool) -> float:
        store = Store(self.reg, TABLES)
        t = time.perf_counter()
        n = replay_into(store, self.path, self.reg, verify=verify)
        el = time.perf_counter() - t
        assert n == self.total and sum(store.counts().values()) == self.total
        self.held = store.nbytes()
        return el

    def base(self) -> float:
        store = Store(self.reg, TABLES)
        t = time.perf_counter()
        for table, file in self.ipc.items():
            with pa.memory_map(str(file)) as src:
                for batch in pa.ipc.open_stream(src):
                    store.append(table, batch)
        el = time.perf_counter() - t
        assert sum(store.counts().values()) == self.total
        return el

    def measure(self, memory: str, repeat: int) -> None:
        runs = {"crc": lambda: self.ours(True), "no crc": lambda: self.ours(False), "base": self.base}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for i in range(repeat + 1):  # round 0 warms caches (and the allocator), untimed
            for k, fn in runs.items():
                el = fn()
                gc.collect()  # a Store and its tables form a cycle: free it now
                if i:
                    times[k].append(el)
        floor = min(_touch(self.held) for _ in range(repeat)) if memory == "fresh" else None
        self.results.append((memory, {k: self.total / min(v) for k, v in times.items()},
                             {k: self.total / statistics.median(v) for k, v in times.items()}, floor))

    def print(self) -> None:
        print(f"\n{self.total:,} rows in messages of {self.rows:,} rows (a third trades, two thirds "
              f"quotes); log {self.size / 1e6:,.0f} MB, Arrow IPC {self.ipc_size / 1e6:,.0f} MB")
        for memory, best, median, floor in self.results:
            if floor is None:
                print("  store memory reused (freed memory kept by malloc): the replay's own work")
            else:
                print(f"  store memory fresh from the kernel, as in a new RDB process (taking and "
                      f"writing the store's {self.held / 1e6:,.0f} MB alone: {floor:.2f} s = "
                      f"{self.total / floor / 1e6:.0f}M rows/s)")
            for k, what in (("crc", "crc on (default)"), ("no crc", "crc off")):
                report(f"replay {self.rows:,}-row msgs, {what}, {memory} mem",
                       best[k], best["base"], "rows/s", ">= 50M rows/s")
                print(f"{'':48} = {best[k] * self.size / self.total / 1e9:4.2f} GB/s of log; median "
                      f"{median[k] / 1e6:.1f}M rows/s; baseline "
                      f"{best['base'] * self.ipc_size / self.total / 1e9:.2f} GB/s of IPC, median "
                      f"{median['base'] / 1e6:.1f}M rows/s", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="tickstack bench replay", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000, help="rows in the big-message log")
    ap.add_argument("--small-rows", type=int, default=5_000_000, help="rows in the small-message log")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    reg = load_registry()
    with tempfile.TemporaryDirectory(prefix="tsbench") as tmp:
        cases = [Case(reg, 10_000, a.rows, Path(tmp) / "big"), Case(reg, 100, a.small_rows, Path(tmp) / "small")]
        for c in cases:  # malloc as a new process has it first, then keeping freed memory
            c.measure("fresh", a.repeat)
        _keep_freed_memory()
        for c in cases:
            c.measure("reused", a.repeat)
        for c in cases:
            c.print()


if __name__ == "__main__":
    main()
