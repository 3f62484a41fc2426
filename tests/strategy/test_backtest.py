"""The backtest runtime and port: timers on data time, risk denials as live, determinism,
per-event and batch callbacks fed the same way."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.config import VenueSettings
from gateway.risk import RiskSettings
from strategy.api import Strategy
from strategy.backtest import run
from strategy.config import BacktestSettings
from strategy.events import OrderEvent
from strategy.sources import TableSource

NS = 1_000_000_000
T0 = 1_704_205_800 * NS


def grid_quotes(n=50, step_ms=700, syms=("X", "Y")):
    t = T0 + np.arange(n, dtype=np.int64) * step_ms * 1_000_000
    sym = np.array([syms[i % len(syms)] for i in range(n)])
    mid = 100 + np.sin(np.arange(n) / 5.0)
    return {"time": t, "sym": sym, "bid": np.round(mid - 0.05, 2), "ask": np.round(mid + 0.05, 2),
            "bsize": np.full(n, 500), "asize": np.full(n, 500)}


class Recorder(Strategy):
    """Records what it sees; both callback forms, so it runs in either mode."""
    name = "rec"

    def on_start(self):
        self.seen = []
        self.every(2.0, "two")

    def on_quote(self, q):
        self.seen.append(("q", q.time))

    def on_quotes(self, b):
        self.seen += [("q", t) for t in b.time.tolist()]

    def on_timer(self, name, time):
        self.seen.append((name, time))


@pytest.mark.parametrize("mode", ["event", "batch"])
def test_timers_fire_on_data_time_between_the_rows_around_them(mode):
    st = Recorder()
    run(st, TableSource(grid_quotes(), chunk_rows=7), mode=mode)
    timers = [t for k, t in st.seen if k == "two"]
    assert timers and all(t % (2 * NS) == 0 for t in timers)
    assert np.all(np.diff(timers) == 2 * NS)
    for i, (k, t) in enumerate(st.seen):
        if k == "two":
            before = [x for kk, x in st.seen[:i] if kk == "q"]
            after = [x for kk, x in st.seen[i + 1:] if kk == "q"]
            assert max(before) <= t < min(after)


def test_per_event_and_batch_see_the_same_rows_and_timers():
    a, b = Recorder(), Recorder()
    run(a, TableSource(grid_quotes(), chunk_rows=9), mode="event")
    run(b, TableSource(grid_quotes(), chunk_rows=9), mode="batch")
    assert a.seen == b.seen


class Denied(Strategy):
    """Sends one order over max_order_qty and one that passes; keeps every on_order event."""
    name = "den"
    syms = ["X"]

    def on_start(self):
        self.events = []
        self.sent = False

    def on_quote(self, q):
        if not self.sent and q.sym == "X":
            self.sent = True
            self.buy("X", 5_000, q.ask)
            self.buy("X", 10, q.ask, tif="ioc")

    def on_order(self, e):
        self.events.append(e)


def test_a_risk_denial_reaches_on_order_as_the_gateway_reply_would_live():
    settings = BacktestSettings(risk=RiskSettings(max_order_qty=1000))
    st = Denied()
    res = run(st, TableSource(grid_quotes()), settings, mode="event")
    denied = [e for e in st.events if e.tag == "den-1"]
    assert len(denied) == 1
    e = denied[0]
    assert (e.status, e.code, e.cum_qty) == ("REJECTED", "max_order_qty", 0) and "max_order_qty" in e.text
    assert st.orders["den-1"].status == "REJECTED"
    # live, the gateway answers the `new` with this JSON (INTENTS.md); the strategy API turns
    # it into the same event
    live = Denied()
    live._requests["den-1"] = ("new", "den-1")
    got = []
    live.on_order = got.append
    live.now = e.time
    live.deliver({"tag": "den-1", "ok": False, "code": "max_order_qty", "text": e.text, "id": e.id})
    assert got == [e]
    # the other order went through and filled; the denial is in the orders table with its code
    assert [x.status for x in st.events if x.tag == "den-2"][-1] == "FILLED"
    rows = {r["tag"]: r for r in res.orders.to_pylist()}
    assert rows["den-1"]["code"] == "max_order_qty" and rows["den-1"]["status"] == "REJECTED"
    assert res.summary["denials"] == {"max_order_qty": 1}


class Flipper(Strategy):
    name = "flip"

    def on_start(self):
        self.n = 0

    def on_quote(self, q):
        self.n += 1
        if self.n % 7 == 0:
            if self.position(q.sym) <= 0:
                self.buy(q.sym, 100, round(q.ask + 0.02, 2), tif="day")
            else:
                self.sell(q.sym, 100, round(q.ask + 0.10, 2), tif="day")   # rests, later crossed or not

    def on_stop(self):
        self.flatten()


def test_a_backtest_is_deterministic():
    def once():
        venues = {"A": VenueSettings(name="A", latency_ms=0.3, display_fraction=0.5, taker_fee_bps=0.2),
                  "B": VenueSettings(name="B", latency_ms=1.0, price_offset_bps=1.0, maker_fee_bps=-0.1)}
        return run(Flipper(), TableSource(grid_quotes(400, 150, ("X", "Y", "Z"))),
                   BacktestSettings(venues=venues), mode="event")
    a, b = once(), once()
    assert a.fills.num_rows > 10 and a.children.num_rows > a.orders.num_rows / 2
    for name in ("fills", "orders", "children", "tca", "tca_orders", "pnl", "positions"):
        assert getattr(a, name).to_pandas().equals(getattr(b, name).to_pandas()), name  # NaN == NaN
    assert json.dumps(a.summary, sort_keys=True) == json.dumps(b.summary, sort_keys=True)


def test_working_day_orders_are_canceled_at_the_end_of_the_day():
    class Rest(Strategy):
        name = "rest"

        def on_quote(self, q):
            if not self.orders:
                self.buy(q.sym, 100, 50.0)        # far below the market: never fills
    res = run(Rest(), TableSource(grid_quotes()), BacktestSettings(risk=RiskSettings(collar_bps=None)))
    assert res.orders.column("status").to_pylist() == ["CANCELED"]


def test_on_order_events_are_delivered_after_the_callback_never_inside_it():
    class Reentry(Strategy):
        name = "re"
        syms = ["X"]

        def on_start(self):
            self.inside = False
            self.bad = 0

        def on_quote(self, q):
            self.inside = True
            if len(self.orders) < 3:
                self.buy("X", 10, tif="ioc")
            self.inside = False

        def on_order(self, e: OrderEvent):
            self.bad += self.inside

        def on_fill(self, f):
            self.bad += self.inside
    st = Reentry()
    res = run(st, TableSource(grid_quotes()), mode="event")
    assert res.fills.num_rows == 3 and st.bad == 0


class IocFlipper(Strategy):
    name = "iocflip"

    def on_start(self):
        self.n = 0

    def on_quote(self, q):
        self.n += 1
        if self.n % 5 == 0:
            if self.position(q.sym) <= 0:
                self.buy(q.sym, 700, round(q.ask + 0.01, 2), tif="ioc")
            else:
                self.sell(q.sym, self.position(q.sym), round(q.bid - 0.01, 2), tif="ioc")


@pytest.mark.parametrize("strategy_cls,venues", [
    (Flipper, None), (Flipper, {"A": VenueSettings(name="A", latency_ms=0, display_fraction=0.3)}),
    (IocFlipper, None), (IocFlipper, {"A": VenueSettings(name="A", latency_ms=5, display_fraction=0.5)})])
def test_idle_venues_fed_each_syms_last_row_end_as_if_fed_every_row(strategy_cls, venues, monkeypatch):
    """The port feeds an idle venue only what changes its state; fills, orders and every
    venue's final quote state are the same as feeding every row."""
    import strategy.backtest_port as bp
    results, states = [], []
    real = bp.BacktestPort.__init__
    for compress in (True, False):
        made = []

        def init(self, *a, **kw):
            real(self, *a, **kw)
            self.compress = compress
            made.append(self)
        monkeypatch.setattr(bp.BacktestPort, "__init__", init)
        settings = BacktestSettings(venues=venues) if venues else BacktestSettings()
        q = grid_quotes(600, 90, ("X", "Y", "Z"))
        q["bsize"] = q["asize"] = 100 * (1 + np.arange(600) % 7)       # sizes that change
        results.append(run(strategy_cls(), TableSource(q, chunk_rows=50),
                           settings, mode="event"))
        port = made[0]
        states.append({(n, s): e.quote(s) for n, e in port.engines.items() for s in ("X", "Y", "Z")})
    a, b = results
    assert a.fills.num_rows > 20
    for name in ("fills", "orders", "children"):
        assert a.__dict__[name].to_pandas().equals(b.__dict__[name].to_pandas()), name
    assert states[0] == states[1]
