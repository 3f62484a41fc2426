"""tickstack bench fix: orders through the gateway (pre-trade risk, routing, FIX) and a venue,
beside a bare quickfix initiator/acceptor pair measured in the same run.

    python -m ops.bench.fix                      # 3000 orders for orders/s, 1000 for latency
    python -m ops.bench.fix --orders 10000 --latency 2000 --window 100

ours      a client process (this one) -> OrderClient (DEALER, the public API) -> the gateway
          process (intents, risk, SOR, Orders, FIX initiator, rows through a TP process) ->
          the venue process (FIX acceptor, matching engine against the TP's quote) -> back.
baseline  this process's quickfix initiator -> an acceptor process whose callback answers
          each NewOrderSingle with NEW and FILL ExecutionReports (no matching, no risk, no
          publishing). Both ends validate against the same data dictionary as ours.

Figures: orders/s with up to --window orders in flight (each done when its fill is back),
and the round trip order -> ack -> fill, one order at a time, p50 and p99. Targets: >= 0.7x
the bare pair's orders/s; p50 no more than 100 us above the bare pair's. The pre-trade risk
cost per order (ops.bench.risk) is printed too (target <= 20 us/order).

Orders alternate buy and sell of 1 share at prices that cross the venue's quote (no two alike
within 20,000 orders), so every order fills at once and the position stays flat; the quote is
refreshed twice a second. Risk runs with every check on; only the rate limits are raised (a
benchmark sends thousands of orders a second on purpose).
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

from ops.bench.common import free_port, report

SYM = "BENCH"


def price(i: int) -> float:
    """Order i's limit: buys (even i) above the ask, sells below the bid, never the same twice
    within 20,000 orders (so the duplicate-order check, which stays on, does not refuse them)."""
    k = (i // 2) % 10_000
    return round(100.02 + k * 0.0001, 4) if i % 2 == 0 else round(99.99 - k * 0.0001, 4)


# -- the bare pair ------------------------------------------------------------------------------------
def _bare_acceptor(port: int, directory: str) -> None:
    """The baseline acceptor process: answers every NewOrderSingle with NEW and FILL."""
    import quickfix as fix

    from gateway.fix.session_settings import SessionSpec, acceptor_settings

    class App(fix.Application):
        n = 0

        def onCreate(self, sid): pass
        def onLogon(self, sid): pass
        def onLogout(self, sid): pass
        def toAdmin(self, msg, sid): pass
        def toApp(self, msg, sid): pass
        def fromAdmin(self, msg, sid): pass

        def fromApp(self, msg, sid):
            if msg.getHeader().getField(35) != "D":
                return
            App.n += 1
            cl, sym, side = msg.getField(11), msg.getField(55), msg.getField(54)
            qty, px = msg.getField(38), msg.getField(44)
            for exec_type, status, leaves, cum, last in (("0", "0", qty, "0", None), ("F", "2", "0", qty, qty)):
                r = fix.Message()
                r.getHeader().setField(35, "8")
                for tag, v in ((37, f"O{App.n}"), (11, cl), (17, f"E{App.n}{exec_type}"), (150, exec_type),
                               (39, status), (55, sym), (54, side), (38, qty), (151, leaves), (14, cum),
                               (6, px if last else "0")):
                    r.setField(tag, v)
                if last:
                    r.setField(32, last)
                    r.setField(31, px)
                fix.Session.sendToTarget(r, sid)

    settings = acceptor_settings([SessionSpec("BARE_VENUE", "BARE_CLIENT")], port=port, directory=Path(directory))
    app = App()
    acc = fix.ThreadedSocketAcceptor(app, fix.FileStoreFactory(settings), settings, fix.FileLogFactory(settings))
    acc.start()
    signal.sigwait({signal.SIGTERM})
    acc.stop(True)


class _BareClient:
    """The baseline initiator: sends NewOrderSingles, counts fills in its callback."""

    def __init__(self, port: int, directory: Path):
        import quickfix as fix

        from gateway.fix.session_settings import SessionSpec, initiator_settings
        self.fix = fix
        self.done: dict[str, int] = {}
        self.cv = threading.Condition()
        outer = self

        class App(fix.Application):
            def onCreate(self, sid): outer.sid = fix.SessionID(sid.getBeginString().getValue(),
                                                                sid.getSenderCompID().getValue(),
                                                                sid.getTargetCompID().getValue())
            def onLogon(self, sid): pass
            def onLogout(self, sid): pass
            def toAdmin(self, msg, sid): pass
            def toApp(self, msg, sid): pass
            def fromAdmin(self, msg, sid): pass

            def fromApp(self, msg, sid):
                if msg.getField(150) == "F":
                    t = time.perf_counter_ns()
                    with outer.cv:
                        outer.done[msg.getField(11)] = t
                        outer.cv.notify_all()

        self.settings = initiator_settings([SessionSpec("BARE_CLIENT", "BARE_VENUE", port=port)],
                                           heartbeat_s=5, reconnect_s=1, directory=directory)
        self.app = App()
        self.ini = fix.ThreadedSocketInitiator(self.app, fix.FileStoreFactory(self.settings), self.settings,
                                               fix.FileLogFactory(self.settings))
        self.ini.start()
        end = time.monotonic() + 20
        while not fix.Session.lookupSession(self.sid).isLoggedOn():
            if time.monotonic() > end:
                raise RuntimeError("the bare initiator did not log on")
            time.sleep(0.01)

    def send(self, i: int) -> str:
        fix = self.fix
        cl = f"b{i}"
        m = fix.Message()
        m.getHeader().setField(35, "D")
        for tag, v in ((11, cl), (55, SYM), (54, "2" if i % 2 else "1"), (60, _now_field()),
                       (38, "1"), (40, "2"), (44, repr(price(i)))):
            m.setField(tag, v)
        fix.Session.sendToTarget(m, self.sid)
        return cl

    def close(self) -> None:
        self.ini.stop(True)


def _now_field() -> str:
    t = time.time()
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


# -- the two measurements ------------------------------------------------------------------------------
def measure(send, done_count, wait, n_tp: int, n_lat: int, window: int, what: str):
    """(orders/s with `window` in flight, round-trip latencies in ns, one at a time).
    `done_count()` is the number of orders done so far (it may wait briefly for news)."""
    from tqdm import tqdm
    lat = np.empty(n_lat, dtype=np.int64)
    for i in tqdm(range(n_lat), desc=f"{what}: round trips", leave=False, mininterval=0.5):
        t0 = time.perf_counter_ns()
        key = send(i)
        t1 = wait(key)
        lat[i] = t1 - t0
    base = done_count()
    sent = 0
    t0 = time.perf_counter()
    with tqdm(total=n_tp, desc=f"{what}: orders/s", leave=False, mininterval=0.5) as bar:
        done = 0
        while done < n_tp:
            while sent - done < window and sent < n_tp:
                send(n_lat + sent)
                sent += 1
            now_done = done_count() - base
            bar.update(now_done - done)
            done = now_done
    return n_tp / (time.perf_counter() - t0), lat


def bare(n_tp: int, n_lat: int, window: int, tmp: Path):
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "ops.bench.fix", "--bare-acceptor", str(port), str(tmp / "bare-acc")],
                         start_new_session=True, stderr=open(tmp / "bare.err", "wb"))
    client = None
    try:
        end = time.monotonic() + 20
        while True:
            try:
                client = _BareClient(port, tmp / "bare-ini")
                break
            except RuntimeError:
                if time.monotonic() > end or p.poll() is not None:
                    raise

        def wait(cl):
            with client.cv:
                client.cv.wait_for(lambda: cl in client.done, 10)
                return client.done[cl]

        def done_count():
            with client.cv:
                n = len(client.done)
                client.cv.wait_for(lambda: len(client.done) > n, 0.01)
                return len(client.done)
        return measure(client.send, done_count, wait, n_tp, n_lat, window, "bare quickfix")
    finally:
        if client is not None:
            client.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
        p.wait()


# -- the gateway ---------------------------------------------------------------------------------------
def _config(home: Path) -> Path:
    ports = {k: f"tcp://127.0.0.1:{free_port()}" for k in ("ingest", "pub", "ctl", "intents")}
    text = f"""
[tickerplant]
ingest = "{ports['ingest']}"
pub = "{ports['pub']}"
ctl = "{ports['ctl']}"
[venues.A]
port = {free_port()}
latency_ms = 0.0
[gateway]
intents = "{ports['intents']}"
venues = ["A"]
[gateway.risk]
max_orders = 1000000000
max_messages = 1000000000
"""
    path = home / "bench.toml"
    path.write_text(text)
    return path


@contextlib.contextmanager
def trading_stack(tmp: Path):
    """TP, venue A and the gateway as processes; yields the config."""
    from gateway.client import GatewayUnavailable, OrderClient
    from ops.config import load
    from tickerplant.protocol import control
    home = tmp / "home"
    home.mkdir()
    path = _config(home)
    cfg = load(path, home)
    procs = []

    def start(*args, name):
        procs.append(subprocess.Popen([sys.executable, "-m", *args, "--config", str(path), "--home", str(home)],
                                      stdout=subprocess.DEVNULL, stderr=open(home / f"{name}.err", "wb"),
                                      start_new_session=True))

    def until(cond, what):
        end = time.monotonic() + 30
        while not cond():
            if time.monotonic() > end or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{what} did not start; see {home}/*.err")
            time.sleep(0.05)

    def ok(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - not up yet
            return None
    try:
        start("tickerplant", name="tp")
        until(lambda: ok(lambda: control(cfg.tickerplant.ctl, "status", timeout=0.5)), "the tickerplant")
        start("gateway.venue", "--name", "A", name="venue")
        from ops.processes import accepts
        until(lambda: accepts(f"tcp://127.0.0.1:{cfg.venues['A'].port}", 0.2), "the venue")
        start("gateway", name="gateway")
        until(lambda: (s := ok(lambda: OrderClient(cfg.gateway.intents, mode="req", timeout=0.5).status()))
              and not s["recovering"] and s["venues"]["A"]["ready"], "the gateway")
        yield cfg
    except GatewayUnavailable:
        raise
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


def gateway(n_tp: int, n_lat: int, window: int, tmp: Path):
    from feedhandlers.base import Feed
    from gateway.client import OrderClient
    with trading_stack(tmp) as cfg:
        feed = Feed(cfg.tickerplant, 77, cfg.registry(), batch_ms=0)
        stop = threading.Event()

        def quotes():
            k = 0
            while not stop.is_set():
                k += 1
                size = 10**9 + k % 2                    # a changed size: the venue replenishes
                feed.publish("quote", {"time": [time.time_ns()], "sym": [SYM], "bid": [100.0], "ask": [100.01],
                                       "bsize": [size], "asize": [size]})
                stop.wait(0.5)
        qt = threading.Thread(target=quotes, daemon=True)
        qt.start()
        oc = OrderClient(cfg.gateway.intents, client="bench", timeout=10)
        try:
            end = time.monotonic() + 20
            while True:                                  # the gateway and the venue have the quote
                r = oc.new(SYM, "buy", 1, 100.5, tif="ioc")
                evs = oc.events(1.0)
                if r["ok"] and any(e.get("event") == "fill" for e in evs):
                    break
                if time.monotonic() > end:
                    raise RuntimeError(f"no fill from the warm-up order: {r}")
                time.sleep(0.2)
            fills: dict[str, int] = {}

            def take(timeout=0.0):
                for e in oc.events(timeout):
                    if e.get("event") == "fill":
                        fills[e["tag"]] = time.perf_counter_ns()
                    elif "ok" in e and not e["ok"]:
                        raise RuntimeError(f"order denied: {e}")

            def send(i):
                buy = i % 2 == 0
                return oc.submit_new(SYM, "buy" if buy else "sell", 1, price(i), tag=f"o{i}")

            def wait(tag):
                while tag not in fills:
                    take(1.0)
                return fills[tag]

            def done_count():
                take(0.01)
                return len(fills)
            return measure(send, done_count, wait, n_tp, n_lat, window, "gateway")
        finally:
            stop.set()
            oc.close()
            feed.close(1)


def risk_figure() -> None:
    from ops.bench import risk
    risk.main(["--orders", "50000", "--repeat", "2"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m ops.bench.fix", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=3000, help="orders for the orders/s figure")
    ap.add_argument("--latency", type=int, default=1000, help="orders for the round-trip figure")
    ap.add_argument("--window", type=int, default=50, help="orders in flight for orders/s")
    ap.add_argument("--bare-acceptor", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.bare_acceptor:
        _bare_acceptor(int(a.bare_acceptor[0]), a.bare_acceptor[1])
        return
    with tempfile.TemporaryDirectory(prefix="tsbench-fix") as d:
        tmp = Path(d)
        print(f"{a.orders} orders ({a.window} in flight) and {a.latency} round trips each way", flush=True)
        b_rate, b_lat = bare(a.orders, a.latency, a.window, tmp)
        g_rate, g_lat = gateway(a.orders, a.latency, a.window, tmp)
    bp50, bp99 = np.percentile(b_lat, [50, 99]) / 1e3
    gp50, gp99 = np.percentile(g_lat, [50, 99]) / 1e3
    report("orders/s, order -> fill (window)", g_rate, b_rate, "orders/s", ">= 0.7x")
    print(f"{'round trip order -> ack -> fill p50':<44} tickstack {gp50:>14,.0f} us       baseline {bp50:>14,.0f} us       "
          f"+{gp50 - bp50:,.0f} us  target <= +100 us", flush=True)
    print(f"{'round trip order -> ack -> fill p99':<44} tickstack {gp99:>14,.0f} us       baseline {bp99:>14,.0f} us       "
          f"+{gp99 - bp99:,.0f} us", flush=True)
    risk_figure()


if __name__ == "__main__":
    main()
