"""tickstack bench risk: pre-trade risk cost per order, beside a trivial Python call in the
same run (so the figure reads as a ratio on a shared, noisy machine).

    python -m ops.bench.risk                  # 200k checks over 500 syms
    python -m ops.bench.risk --orders 1000000 --syms 2000

The mix is what a gateway sees: 80% new orders (limit orders near the mid, with some that
break the collar, the order size, the restricted list or repeat an order), 10% replaces and
10% cancels, every limit on (the defaults), quotes refreshed between chunks as a feed would.
The baseline calls a function that does nothing with the same arguments in the same loop.
Target: <= 20 us per check. A second line compares quote batches as the TP publishes them
(`Risk.on_quote_batch`: one Python step per sym in the batch, not per row) with applying the
same rows one by one (`Risk.on_quote`).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np
import pyarrow as pa

from gateway.model import CancelOrder, NewOrder, OrdType, ReplaceOrder, Side
from gateway.orders import Orders
from gateway.risk import Risk, RiskSettings

MS = 1_000_000
CHUNK = 100          # orders between quote refreshes: 1 s of simulated time


def make_calls(risk: Risk, n: int, syms: list[str], mids: np.ndarray, rng, t0: int, step: int):
    """(function, args) per call, in time order, and the quote refresh per chunk."""
    orders = Orders()
    working = []
    calls = []
    ns = len(syms)
    for i in range(n):
        now = t0 + i * step
        k = int(rng.integers(ns))
        sym, mid = syms[k], float(mids[k])
        u = rng.random()
        if u < 0.8 or not working:
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            qty = int(rng.integers(1, 50)) * 100
            px = round(mid * (1 + rng.normal(0, 0.002)), 2)
            v = rng.random()
            if v < 0.03:
                px = round(mid * 1.2, 2)                 # outside the collar
            elif v < 0.05:
                qty = 20_000                             # over max_order_qty
            elif v < 0.07:
                sym = "RESTRICTED"
            elif v < 0.10 and calls:
                prev = calls[-1][1][0]
                if isinstance(prev, NewOrder):
                    side, qty, px, sym = prev.side, prev.qty, prev.price, prev.sym   # a duplicate
            o = NewOrder(f"o{i}", sym, side, qty, OrdType.LIMIT, px)
            calls.append((risk.check, (o, now)))
            if len(working) < 500 and orders.new(o, "XA", now).outcome.value == "applied":
                working.append(orders.get(o.cl_ord_id))
        elif u < 0.9:
            w = working[int(rng.integers(len(working)))]
            rep = ReplaceOrder(f"r{i}", w.cl_ord_id, w.sym, w.side, w.order_qty + 100, w.price)
            calls.append((risk.check_replace, (rep, w, now)))
        else:
            w = working.pop(int(rng.integers(len(working))))
            cancel = CancelOrder(f"c{i}", w.cl_ord_id, w.sym, w.side, w.order_qty)
            calls.append((risk.check_cancel, (cancel, now)))
    return calls


def run(calls, chunks_quotes, risk: Risk, substitute=None) -> float:
    """Seconds spent in the calls (quote refreshes between chunks are not timed)."""
    total = 0.0
    for c, (syms, bids, asks, times) in enumerate(chunks_quotes):
        risk.on_quotes(syms, bids, asks, times)
        chunk = calls[c * CHUNK:(c + 1) * CHUNK]
        if substitute is not None:
            chunk = [(substitute, a) for _, a in chunk]
        t = time.perf_counter()
        for f, a in chunk:
            f(*a)
        total += time.perf_counter() - t
    return total


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ops.bench.risk", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=200_000)
    ap.add_argument("--syms", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    syms = [f"S{i:04d}" for i in range(a.syms)]
    mids = 20 + 200 * rng.random(a.syms)
    t0, step = 1_700_000_000 * 10**9, 10 * MS           # 100 orders/s: inside the rate limits
    nchunks = (a.orders + CHUNK - 1) // CHUNK
    chunk_quotes = []
    for c in range(nchunks):
        bids = np.round(mids * (1 - 0.0005), 2)
        chunk_quotes.append((np.array(syms, dtype=object), bids, bids + 0.02,
                             np.full(a.syms, t0 + c * CHUNK * step, np.int64)))

    def fresh() -> Risk:
        r = Risk(RiskSettings(restricted=["RESTRICTED"], max_position=10**7,
                              max_gross_exposure=1e12, max_net_exposure=1e12))
        for k, s in enumerate(syms[:50]):           # some positions and fills to keep OTR sane
            r.on_fill(s, Side.BUY, 100 * (k + 1), float(mids[k]))
        for _ in range(a.orders // 50):
            r.on_fill(syms[0], Side.BUY, 1, float(mids[0]))
        return r

    def nothing(*args):
        return None

    ours, base = [], []
    mix: Counter = Counter()
    for rep in range(a.repeat):
        r = fresh()
        calls = make_calls(r, a.orders, syms, mids, np.random.default_rng(2), t0, step)
        ours.append(run(calls, chunk_quotes, r))
        base.append(run(calls, chunk_quotes, fresh(), substitute=nothing))
        if rep == 0:
            r2 = fresh()
            calls2 = make_calls(r2, a.orders, syms, mids, np.random.default_rng(2), t0, step)
            for c, q in enumerate(chunk_quotes):
                r2.on_quotes(*q)
                for f, args in calls2[c * CHUNK:(c + 1) * CHUNK]:
                    d = f(*args)
                    mix[d.code.value if d.code else "admitted"] += 1
    us, bus = min(ours) / a.orders * 1e6, min(base) / a.orders * 1e6
    print(f"{a.orders:,} calls over {a.syms} syms; outcomes: " +
          ", ".join(f"{k} {v / a.orders:.1%}" for k, v in mix.most_common()), flush=True)
    print(f"{'risk check (new/replace/cancel mix)':<44} tickstack {us:>10.2f} us/order  baseline "
          f"{bus:>8.3f} us/call (empty function)  ratio {us / bus:6.1f}  target <= 20 us/order", flush=True)

    # quotes as the TP publishes them: 1000-row batches, sym dictionary-encoded
    rows = 100_000
    k = rng.integers(a.syms, size=rows)
    qb = np.round(mids[k], 2)
    qa, qt = qb + 0.01, t0 + np.arange(rows, dtype=np.int64)
    batches = [pa.RecordBatch.from_pydict({
        "time": pa.array(qt[s:s + 1000], pa.timestamp("ns")),
        "sym": pa.DictionaryArray.from_arrays(pa.array(k[s:s + 1000].astype(np.int32)), pa.array(syms)),
        "bid": qb[s:s + 1000], "ask": qa[s:s + 1000]}) for s in range(0, rows, 1000)]
    per_row = list(zip(np.array(syms, dtype=object)[k].tolist(), qb.tolist(), qa.tolist(), qt.tolist()))
    batch, single = [], []
    for _ in range(a.repeat):
        r = fresh()
        t = time.perf_counter()
        for b in batches:
            r.on_quote_batch(b)
        batch.append(time.perf_counter() - t)
        r = fresh()
        t = time.perf_counter()
        for s, bid, ask, qtime in per_row:
            r.on_quote(s, bid, ask, qtime)
        single.append(time.perf_counter() - t)
    what = "quotes, 1000-row TP batches (on_quote_batch)"
    print(f"{what:<44} tickstack {rows / min(batch):>10,.0f} rows/s   "
          f"baseline {rows / min(single):>10,.0f} rows/s (on_quote per row)  ratio "
          f"{min(single) / min(batch):6.1f}", flush=True)


if __name__ == "__main__":
    main()
