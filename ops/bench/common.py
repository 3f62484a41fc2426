"""What every benchmark shares: a throwaway stack on free loopback ports, processes stopped
by pid, and one report format (our figure beside the same-run baseline)."""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ops.config import Config, load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(home: Path, **tp) -> tuple[Config, Path]:
    ports = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("ingest", "pub", "ctl")}
    tp = {**ports, **tp}
    rdb = f"tcp://127.0.0.1:{free_port()}"
    lines = ["[tickerplant]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in tp.items()]
    lines += ["[rdb]", f'query = "{rdb}"', "[eod]", 'time = "00:00"', 'tz = "UTC"']
    path = home / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return load(path, home), path  # the bench reads the very file the TP process is given


@contextlib.contextmanager
def tickerplant(**tp):
    """A TP process in a temp home; yields its Config; killed by pid on the way out."""
    from tickerplant.protocol import control
    with tempfile.TemporaryDirectory(prefix="tsbench") as d:
        cfg, path = config(Path(d), **tp)
        p = subprocess.Popen([sys.executable, "-m", "tickerplant", "--config", str(path), "--home", d],
                             stdout=subprocess.DEVNULL, stderr=open(Path(d) / "tp.err", "wb"),
                             start_new_session=True)
        try:
            end = time.monotonic() + 30
            while True:
                try:
                    control(cfg.tickerplant.ctl, "status", timeout=0.5)
                    break
                except Exception:
                    if p.poll() is not None or time.monotonic() > end:
                        raise RuntimeError((Path(d) / "tp.err").read_text()[-2000:])
            yield cfg
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def report(what: str, ours: float, base: float, unit: str, target: str = "", higher_is_better=True) -> None:
    ratio = ours / base if base else float("nan")
    print(f"{what:<44} tickstack {ours:>14,.0f} {unit:<8} baseline {base:>14,.0f} {unit:<8} "
          f"ratio {ratio:5.2f}{'  target ' + target if target else ''}", flush=True)


# ---- tickstack through its public API, measured like the peers (ops/bench/peers.py) -----------
# A publisher process drives `feedhandlers.base.Feed` (natural batching: batch_ms=0) and a
# consumer process iterates `tickerplant.subscriber.Subscriber` (its batches, or its per-message
# Updates), against a fresh TP process per run (an empty log: nothing to replay at join), on
# loopback. The rows, message sizes, pacing (`peers.Pacer`), clock (CLOCK_MONOTONIC, stamped
# into `time` just before the publish) and exactness check (row count and `size` sum, 0.1 s
# read after the last row) are the peers', and the result is the peers' `Delivery`.

_LINGER_S = 0.1
_feed_ids = iter(range(1000, 2**31))


def _ours_consume(cfg, expected: int, latency: bool, api: str, ready, progress, out) -> None:
    import threading

    import numpy as np

    from tickerplant.subscriber import Batch, Subscriber, Update
    try:
        sub = Subscriber(cfg.tickerplant, ["trade"], registry=cfg.registry()).start()
        lat = np.empty(expected if latency else 0, np.int64)
        rows = size_sum = 0
        done_at = 0.0
        kind = Batch if api == "batches" else Update
        ready.set()
        for ev in (sub.batches() if api == "batches" else sub):
            if latency:
                now = time.monotonic_ns()  # when the consumer's code has the rows in hand
            if type(ev) is not kind:
                continue
            cols, n = ev.columns()
            if latency:
                k = min(n, len(lat) - rows)
                lat[rows: rows + k] = now - cols[0][:k]
            rows += n
            size_sum += int(cols[3].sum())
            progress.value = rows
            if not done_at and rows >= expected:
                done_at = time.monotonic()
                threading.Timer(_LINGER_S, sub.close).start()  # a late duplicate counts too
        out.put(("done", done_at, rows, size_sum, lat[:min(rows, len(lat))]))
    except BaseException as e:  # the parent must hear why, not wait for a stall
        out.put(("error", f"tickstack consumer: {type(e).__name__}: {e}"))


def _ours_publish(cfg, plan: tuple, feed_id: int, batch_rows: int | None, fready, go, stamps, out) -> None:
    import numpy as np

    from feedhandlers.base import Feed
    from ops.bench.peers import Pacer
    try:
        opts = dict(batch_ms=0, buffer_msgs=10**7, block_s=120.0, close_timeout_s=120.0)
        if batch_rows:
            opts["batch_rows"] = batch_rows
        feed = Feed(cfg.tickerplant, feed_id, registry=cfg.registry(), **opts)
        publish = feed.publish
        kind, *args = plan
        if kind == "burst":
            from ops.bench.ingest import columns_of
            rows_per_msg, n = args
            msgs = columns_of(rows_per_msg)
            k = len(msgs)
            fready.set()
            go.wait()
            stamps[0] = time.monotonic()
            for i in range(n):
                publish("trade", msgs[i % k])
        else:
            rate, n = args
            sym, price = np.array(["S001"]), np.array([1.0])
            number = 0
            fready.set()
            go.wait()
            stamps[0] = time.monotonic()
            pacer = Pacer(rate, n)
            while pacer.left:
                for _ in range(pacer.due()):
                    number += 1
                    publish("trade", {"time": np.array([time.monotonic_ns()]), "sym": sym,
                                      "price": price, "size": np.array([number])})
        feed.flush()
        stamps[1] = time.monotonic()
        feed.close()
        s = feed.stats()
        if s.dropped or s.rejected or s.acked_rows != s.sent_rows:
            out.put(("error", f"tickstack feed: {s}"))
    except BaseException as e:
        out.put(("error", f"tickstack feed: {type(e).__name__}: {e}"))


class Ours:
    """tickstack's public path, run like a peer: `throughput(rows_per_msg, n, batch_rows=None)`
    -> rows/s, `latency(rate, n)` -> {"p50", "p99", "p999" (us), "rate"}, `deliver(...)` ->
    `peers.Delivery`. `api` is "batches" (Subscriber.batches, as the RDB reads) or "updates"
    (one Update per message). `batch_rows` caps the feed's messages (None: the default, 10k)."""

    name = "tickstack"

    def __init__(self, api: str = "batches", progress: bool = False, **tp):
        self.api, self.progress, self.tp = api, progress, tp

    def throughput(self, rows_per_msg: int, n_msgs: int, batch_rows: int | None = None) -> float:
        return self.deliver(rows_per_msg, n_msgs, batch_rows=batch_rows).check().rows_per_second

    def latency(self, rate: float, n_msgs: int) -> dict[str, float]:
        from ops.bench.peers import percentiles_us
        d = self.deliver(1, n_msgs, rate).check()
        return dict(zip(("p50", "p99", "p999"), percentiles_us(d.latency_ns)), rate=d.send_rate)

    def deliver(self, rows_per_msg: int, n_msgs: int, rate: float | None = None,
                batch_rows: int | None = None):
        import multiprocessing as mp

        import numpy as np

        from ops.bench.peers import Delivery, DeliveryError, wait_result
        if rate is None:
            from ops.bench.ingest import columns_of
            sums = [int(np.sum(c["size"])) for c in columns_of(rows_per_msg)]
            size_sum_sent = sum(sums[i % len(sums)] for i in range(n_msgs))
            plan = ("burst", rows_per_msg, n_msgs)
        else:
            size_sum_sent = n_msgs * (n_msgs + 1) // 2
            plan = ("paced", rate, n_msgs)
        rows_sent = rows_per_msg * n_msgs
        ctx = mp.get_context("spawn")   # as peers.py: a fork copies the caller's threads
        ready, fready, go, out = ctx.Event(), ctx.Event(), ctx.Event(), ctx.Queue()
        progress, stamps = ctx.RawValue("q", 0), ctx.RawArray("d", 2)
        with tickerplant(mode="immediate", **self.tp) as cfg:
            consumer = ctx.Process(target=_ours_consume, name="tickstack-consumer",
                                   args=(cfg, rows_sent, rate is not None, self.api, ready, progress, out))
            feed = ctx.Process(target=_ours_publish, name="tickstack-feed",
                               args=(cfg, plan, next(_feed_ids), batch_rows, fready, go, stamps, out))
            bar = None
            try:
                consumer.start()
                if not ready.wait(60):
                    raise DeliveryError("tickstack consumer not ready after 60 s")
                feed.start()
                if not fready.wait(60):
                    raise DeliveryError("tickstack feed not ready after 60 s")
                time.sleep(0.2)
                if self.progress:
                    from tqdm import tqdm
                    what = "tickstack " + (f"{rows_per_msg}-row msgs" if rate is None else f"{rate:,.0f} msg/s")
                    bar = tqdm(total=rows_sent, desc=what, unit="row", unit_scale=True, leave=False)
                go.set()
                t1, rows, size_sum, lat = wait_result(out, progress, rows_sent, bar, (feed, consumer), "tickstack")
                feed.join(150)
                if feed.exitcode is None:
                    raise DeliveryError("tickstack feed did not finish (acks?)")
                try:  # an error the feed reported after the consumer finished
                    msg = out.get(timeout=0.1)
                    if msg[0] == "error":
                        raise DeliveryError(msg[1])
                except queue.Empty:
                    pass
            finally:
                if bar is not None:
                    bar.close()
                for p in (feed, consumer):
                    if p.pid is not None:
                        p.join(2)
                        if p.is_alive():
                            p.kill()
                            p.join()
        t0, t_last = stamps[0], stamps[1]
        return Delivery(self.name, rows_per_msg, n_msgs, rows_sent, size_sum_sent, rows, size_sum,
                        t1 - t0, (t_last - t0) if t_last else float("nan"), lat)
