"""tickstack bench tick-to-trade: from a quote published to the tickerplant to the order it
triggers arriving at the venue, through the public path, beside a bare pyzmq + quickfix path
measured in the same run.

    tickstack bench tick-to-trade                    # 400 triggers per path, 10 ms apart
    python -m ops.bench.tick_to_trade --n 1000 --gap-ms 5

Ours: `Feed.publish` of one quote row (zero-latency mode) -> the TP (logged, published) ->
a strategy process (`strategy.live.run`, the per-event API: `on_quote` sends `buy`) ->
`GatewayPort` / `OrderClient` DEALER -> the gateway process (intents ROUTER, pre-trade risk,
smart order routing, order state) -> FIX NewOrderSingle -> the venue.
Bare: a raw pyzmq PUB -> SUB hop to a process whose SUB callback sends a NewOrderSingle
with a quickfix initiator (`quickfix.Session.sendToTarget` of the same message the gateway
would build) -> the same venue.

The venue is the stack's own (gateway.venue.Venue: quickfix acceptor + matching engine) in
this process, with one session per path; each NewOrderSingle is stamped (time.time_ns, the
same clock in every process of the box) as quickfix hands it to the venue's application
callback, and matched to its trigger by its limit price, which encodes the trigger number
(prices 100.000, 100.001, ...). Triggers alternate between the paths, `gap-ms` apart, so
both see the same machine load; the first `warmup` of each are dropped. Target: our p50 <=
2x the bare path's.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ops.bench.common import free_port

SYM = "TT"
BASE, STEP = 100.0, 0.001


def price_of(k: int) -> float:
    return round(BASE + k * STEP, 6)


def trigger_of(price: float) -> int:
    return int(round((price - BASE) / STEP))


# ---- the two peers (run as processes by the bench) -------------------------------------------
def run_strategy(cfg) -> None:
    """The strategy process of our path: on each TT quote, buy 100 at its ask."""
    from gateway.client import OrderClient
    from strategy import live
    from strategy.api import Strategy

    class Trigger(Strategy):
        name = "t2t"
        syms = [SYM]

        stamps: list = []

        def on_quote(self, q):
            t = time.time_ns()
            self.buy(SYM, 100, q.ask, tif="ioc")
            self.stamps.append((trigger_of(q.ask), t, time.time_ns()))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    client = OrderClient(cfg.gateway.intents, client=f"t2t@{os.getpid()}")
    ready = cfg.root / "t2t.ready"
    st = Trigger()
    live.run(st, cfg.tickerplant, live.GatewayPort(client), mode="event", stop=stop.is_set,
             poll_s=0.2, stop_timeout_s=0.5, on_ready=lambda: ready.write_text("ok"))
    client.close()
    np.save(cfg.root / "ours-stamps.npy", np.array(st.stamps, dtype=np.int64).reshape(-1, 3))


def run_bare(pub: str, port: int, home: Path) -> None:
    """The bare path's peer: SUB, then a quickfix initiator sends the NewOrderSingle."""
    import quickfix as fix
    import zmq

    from gateway.fix import Endpoint, SessionSpec, to_fix
    from gateway.model import NewOrder, OrdType, Side, TimeInForce
    ep = Endpoint.initiator([SessionSpec("BARE", "VENUE_T", host="127.0.0.1", port=port)], heartbeat_s=30,
                            reconnect_s=1, directory=home / "fix-bare").start()
    if not ep.wait_logged_on(20):
        sys.exit("bare: no logon")
    sid = ep.app.sessions[ep.sessions[0]]
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub)
    (home / "bare.ready").write_text("ok")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    n = 0
    stamps = []
    while not stopping:
        if not sub.poll(200):
            continue
        k = int(sub.recv())
        t = time.time_ns()
        n += 1
        msg = to_fix(NewOrder(f"B{n}", SYM, Side.BUY, 100, OrdType.LIMIT, price_of(k), TimeInForce.IOC))
        fix.Session.sendToTarget(msg, sid)
        stamps.append((k, t, time.time_ns()))
    ep.close()
    np.save(home / "bare-stamps.npy", np.array(stamps, dtype=np.int64).reshape(-1, 3))


# ---- the bench ----------------------------------------------------------------------------------
def _config(home: Path, venue_port: int) -> Path:
    tp = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("ingest", "pub", "ctl")}
    lines = ["[tickerplant]", *(f'{k} = "{v}"' for k, v in tp.items()),
             "[eod]", 'time = "00:00"', 'tz = "UTC"',
             "[gateway]", f'intents = "tcp://127.0.0.1:{free_port()}"', 'venues = ["T"]', "heartbeat_s = 30",
             "[gateway.risk]", "order_to_trade_min_orders = 1000000000", "max_orders = 100000",
             "max_messages = 100000",
             "[venues.T]", f"port = {venue_port}", 'target_comp_ids = ["GATEWAY", "BARE"]']
    path = home / "bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait(cond, what: str, timeout: float = 30.0, procs=()) -> None:
    end = time.monotonic() + timeout
    while not cond():
        for p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{what}: a process exited ({p.args})")
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def pct(a, q) -> float:
    return float(np.percentile(np.asarray(a, dtype=float), q)) if len(a) else float("nan")


def bench(n: int, gap_ms: float, warmup: int) -> dict:
    import zmq

    from feedhandlers.base import Feed
    from gateway.fix import Received
    from gateway.model import NewOrder
    from gateway.venue import Venue
    from ops.config import load
    from ops.processes import gateway_status
    with tempfile.TemporaryDirectory(prefix="t2t") as d:
        home = Path(d)
        vport = free_port()
        path = _config(home, vport)
        cfg = load(path, home)
        stamps: list[tuple[str, float, int]] = []
        venue = Venue(cfg.venues["T"], home / "fix" / "venue-T")
        deliver = venue.app.deliver

        def stamp(ev):
            if isinstance(ev, Received) and isinstance(ev.message, NewOrder):
                stamps.append((ev.session, ev.message.price, time.time_ns()))
            deliver(ev)
        venue.app.deliver = stamp
        venue.start()
        procs: list[subprocess.Popen] = []
        feed = pub = None
        common = ["--config", str(path), "--home", str(home)]

        def spawn(*args):
            p = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                                 stderr=open(home / f"{args[1].replace('.', '_')}-{len(procs)}.err", "wb"),
                                 start_new_session=True)
            procs.append(p)
            return p
        try:
            from tickerplant.protocol import control
            spawn("-m", "tickerplant", *common)
            _wait(lambda: _ok(lambda: control(cfg.tickerplant.ctl, "status", timeout=0.5)), "the tickerplant",
                  procs=procs)
            spawn("-m", "gateway", *common)
            _wait(lambda: (st := gateway_status(cfg)) and not st["recovering"], "the gateway", procs=procs)
            spawn("-m", "ops.bench.tick_to_trade", "strategy", *common)
            pub_ep = f"tcp://127.0.0.1:{free_port()}"
            pub = zmq.Context.instance().socket(zmq.PUB)
            pub.bind(pub_ep)
            spawn("-m", "ops.bench.tick_to_trade", "bare", "--pub", pub_ep, "--port", str(vport), "--home", str(home))
            _wait(lambda: (home / "t2t.ready").exists() and (home / "bare.ready").exists(), "the peers",
                  procs=procs)
            feed = Feed(cfg.tickerplant, 77, cfg.registry(), batch_ms=0)
            time.sleep(0.5)                         # the bare SUB's subscription reaches the PUB
            sent: dict[tuple[str, int], int] = {}
            for i in range(1, 2 * (n + warmup) + 1):
                k = i
                ask = price_of(k)
                if i % 2:
                    t = time.time_ns()
                    feed.publish("quote", {"time": np.array([t]), "sym": np.array([SYM]),
                                           "bid": np.array([round(ask - 0.02, 6)]), "ask": np.array([ask]),
                                           "bsize": np.array([100_000]), "asize": np.array([100_000])})
                    sent[("ours", k)] = t
                else:
                    t = time.time_ns()
                    pub.send(str(k).encode())
                    sent[("bare", k)] = t
                time.sleep(gap_ms / 1000)
            time.sleep(1.0)
            st = gateway_status(cfg, timeout=2.0) or {}
            diag = {"denials": st.get("denials"), "orders": st.get("orders"),
                    "counters": {k: v for k, v in (st.get("counters") or {}).items()
                                 if k in ("new", "denied", "children_sent", "quote_batches")}}
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            if feed is not None:
                feed.close(1)
            if pub is not None:
                pub.close(0)
            venue.stop()
        lat = {"ours": [], "bare": []}
        hops = {"ours": [], "bare": []}
        peer = {}
        for path_ in ("ours", "bare"):
            f = home / f"{path_}-stamps.npy"
            for k, t_in, t_out in (np.load(f).tolist() if f.exists() else []):
                peer[(path_, k)] = (t_in, t_out)
        for session, price, t in stamps:
            path_ = "bare" if "BARE" in session else "ours"
            k = trigger_of(price)
            t0 = sent.get((path_, k))
            if t0 is None or k <= 2 * warmup:
                continue
            lat[path_].append((t - t0) / 1000)
            if (path_, k) in peer:
                t_in, t_out = peer[(path_, k)]
                hops[path_].append(((t_in - t0) / 1000, (t_out - t_in) / 1000, (t - t_out) / 1000))
        lat["gateway"] = diag
        lat["hops"] = hops
        return lat


def _ok(fn) -> bool:
    try:
        fn()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "strategy":
        from schemas.process import boot
        from ops.config import Config
        cfg, _ = boot("t2t-strategy", Config, argv[1:])
        run_strategy(cfg)
        return
    if argv and argv[0] == "bare":
        ap = argparse.ArgumentParser()
        ap.add_argument("--pub")
        ap.add_argument("--port", type=int)
        ap.add_argument("--home", type=Path)
        a = ap.parse_args(argv[1:])
        run_bare(a.pub, a.port, a.home)
        return
    ap = argparse.ArgumentParser(prog="tickstack bench tick-to-trade", description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=400, help="triggers per path (default 400)")
    ap.add_argument("--gap-ms", type=float, default=10.0, help="between triggers (default 10)")
    ap.add_argument("--warmup", type=int, default=20, help="triggers per path dropped first (default 20)")
    a = ap.parse_args(argv)
    lat = bench(a.n, a.gap_ms, a.warmup)
    ours, bare = lat["ours"], lat["bare"]
    print(f"tick-to-trade, quote published -> NewOrderSingle at the venue ({len(ours)} ours, {len(bare)} bare):")
    for q in (50, 99):
        o, b = pct(ours, q), pct(bare, q)
        print(f"  p{q}: tickstack {o:8.0f} us   bare pyzmq+quickfix {b:8.0f} us   ratio {o / b:5.2f}"
              + ("   target <= 2.00" if q == 50 else ""), flush=True)
    names = {"ours": ("publish -> TP -> strategy on_quote", "on_quote -> order sent (OrderClient)",
                      "sent -> gateway (risk, SOR) -> FIX -> venue"),
             "bare": ("PUB -> SUB", "SUB -> quickfix -> venue")}
    for path_ in ("ours", "bare"):
        h = np.array(lat["hops"][path_]).reshape(-1, 3)
        if path_ == "bare":                  # sendToTarget returns after the venue has it: 2 hops
            h = np.stack([h[:, 0], h[:, 1] + h[:, 2]], axis=1) if len(h) else h
        if len(h):
            print(f"  {path_} p50 by hop: " + "; ".join(f"{n} {np.percentile(h[:, i], 50):.0f} us"
                                                       for i, n in enumerate(names[path_])), flush=True)
    if len(ours) < 0.9 * a.n or len(bare) < 0.9 * a.n:
        print(f"  note: {a.n - len(ours)} of ours and {a.n - len(bare)} bare triggers reached no order; "
              f"gateway: {lat['gateway']}", flush=True)


if __name__ == "__main__":
    main()
