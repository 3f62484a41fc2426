"""The risk process's numbers against an independent pandas computation on a recorded day.

History: three simulated days in the HDB (hdb.eod.save_day). Today: simulated quotes and
execution rows of two books (strategies alpha and beta, with fees, longs, shorts, flips and
closes) recorded through a real tickerplant. The risk process (`python -m strategy.risk`, a
real process) reads the day from the TP; its status (the same numbers it publishes in the
`risk` table) is compared with what pandas computes from the same rows: positions, average
cost, realized PnL, unrealized PnL (longs at the bid, shorts at the ask), gross and net
exposure per book, and historical VaR/ES on 1-minute mid returns (history + today's closed
minutes) at 99%. Its control socket is fuzzed on the way (junk never stops it; every
enveloped request gets exactly one reply)."""
from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from helpers import Procs, free_port, start_tp, wait_for, write_config

pytestmark = pytest.mark.process

MINUTE = 60_000_000_000
SYMS = [f"S{i:03d}" for i in range(8)]
CONF = 0.99
HORIZON = 1


def sim_day(seed: int, start_ns: int, events: int, rate: float) -> dict:
    from feedhandlers.sim import MarketSim
    return MarketSim(SYMS, seed=seed, start_ns=start_ns, event_rate=rate).step(events)


def make_fills(quotes: dict, rng) -> dict:
    """Execution rows near the market at their time: two books, four syms."""
    t = quotes["time"]
    picks = np.sort(rng.choice(len(t), 60, replace=False))
    rows = []
    for i in picks.tolist():
        sym = str(quotes["sym"][i])
        if sym not in SYMS[:4]:
            continue
        side = "buy" if rng.random() < 0.5 else "sell"
        px = float(quotes["ask"][i] if side == "buy" else quotes["bid"][i])
        rows.append(dict(time=int(t[i]) + 1, sym=sym, order_id=f"o{i}.1", exec_id=f"e{i}", parent=f"o{i}",
                         side=side, qty=int(rng.integers(1, 30)) * 10, price=px, venue="A",
                         fee=round(float(rng.uniform(0, 0.5)), 4), leaves=0, status="FILLED",
                         account="acct", strategy="alpha" if rng.random() < 0.6 else "beta", fix_seq=0))
    return {k: np.array([r[k] for r in rows], dtype=object if isinstance(rows[0][k], str) else None)
            for k in rows[0]}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    from feedhandlers.base import Feed
    from hdb.eod import save_day
    from ops.config import load
    home = tmp_path_factory.mktemp("risknum") / "home"
    path = write_config(home, risk={"ctl": f"tcp://127.0.0.1:{free_port()}", "publish_s": 0.2},
                        **{"risk.limits": {"max_loss": 1e12, "max_gross": 1e12, "max_net": 1e12},
                           "risk.var": {"days": 3, "horizon_min": HORIZON, "confidence": CONF,
                                        "min_scenarios": 10}})
    cfg = load(path, home)
    today = dt.date.today()
    reg = cfg.registry()
    for k, d in enumerate([today - dt.timedelta(days=i) for i in (5, 3, 1)]):
        start = int(pd.Timestamp(d).value) + 14 * 3600 * 10**9
        day = sim_day(10 + k, start, 6000, 3.0)          # ~33 minutes of quotes
        save_day(cfg.hdb_dir, d, {"quote": pa.table(day["quote"])}, reg, progress=False)
    rng = np.random.default_rng(3)
    quotes = sim_day(20, time.time_ns() - 12 * MINUTE, 4000, 8.0)["quote"]   # ~8 minutes
    fills = make_fills(quotes, rng)
    procs = Procs(path, home)
    try:
        start_tp(cfg, procs)
        with Feed(cfg.tickerplant, 5, reg, batch_ms=0) as feed:
            cut = np.searchsorted(quotes["time"], fills["time"])        # quotes, then the fills after them
            last = 0
            for a, b in zip(np.r_[0, np.flatnonzero(np.diff(cut)) + 1], np.r_[np.flatnonzero(np.diff(cut)) + 1, len(cut)]):
                feed.publish("quote", {k: v[last:cut[a]] for k, v in quotes.items()}) if cut[a] > last else None
                feed.publish("execution", {k: v[a:b] for k, v in fills.items()})
                last = cut[a]
            feed.publish("quote", {k: v[last:] for k, v in quotes.items()})
            assert feed.wait_acked(30)
        procs.start("strategy.risk", name="risk")
        yield cfg, procs, quotes, fills
    finally:
        procs.stop_all()


def status(cfg, timeout=5.0) -> dict:
    from tickerplant.protocol import request
    return json.loads(request(cfg.risk.ctl, [b'{"cmd": "status"}'], timeout=timeout)[0].bytes)


def caught_up(cfg, quotes, fills) -> dict:
    def ready():
        try:
            st = status(cfg, 1.0)
        except Exception:  # noqa: BLE001 - still starting
            return None
        d = st["data"]
        return st if d["fills"] == len(fills["time"]) and d["quote_rows"] == len(quotes["time"]) else None
    first = wait_for(ready, timeout=30, what="the risk process to read the recorded day")
    # the next publish after everything was read
    return wait_for(lambda: st if (st := status(cfg))["time"] > first["time"] else None, timeout=10,
                    what="a publish after the catch-up")


# ---- the independent computation --------------------------------------------------------------
def accounting(fills: pd.DataFrame) -> pd.DataFrame:
    """Average cost, realized (after fees) per (book, sym), row by row as a blotter does it."""
    out = []
    for (book, sym), g in fills.groupby(["strategy", "sym"], sort=False):
        pos, avg, realized = 0, 0.0, 0.0
        for r in g.itertuples():
            d = r.qty if r.side == "buy" else -r.qty
            if pos == 0 or (pos > 0) == (d > 0):
                avg = (avg * abs(pos) + r.price * abs(d)) / (abs(pos) + abs(d))
            else:
                closed = min(abs(d), abs(pos))
                realized += closed * (r.price - avg) * np.sign(pos)
                avg = r.price if abs(d) > abs(pos) else (0.0 if abs(d) == abs(pos) else avg)
            pos += d
            realized -= r.fee
        out.append(dict(book=book, sym=sym, position=pos, avg_cost=avg, realized=realized))
    return pd.DataFrame(out)


def minute_closes(q: pd.DataFrame, closed_before: int | None = None) -> pd.DataFrame:
    q = q[(q.bid > 0) & (q.ask > 0)].assign(mid=lambda d: (d.bid + d.ask) / 2)
    q = q.sort_values(["time", "mid"], kind="stable").assign(minute=lambda d: d.time // MINUTE)
    last = q.groupby(["minute", "sym"]).mid.last().unstack()
    grid = range(int(q.minute.min()), int(q.minute.max()) + 1)
    wide = last.reindex(grid).ffill()
    if closed_before is not None:                                   # today: closed minutes only
        wide = wide[[(m + 1) * MINUTE <= closed_before for m in wide.index]]
    return wide


def scenario_returns(cfg, today_quotes: pd.DataFrame) -> pd.DataFrame:
    blocks = []
    for part in sorted((cfg.hdb_dir / "quote").glob("date=*")):
        q = pd.read_parquet(part)
        q["time"] = q["time"].astype("int64")
        blocks.append(minute_closes(q))
    blocks.append(minute_closes(today_quotes, closed_before=int(today_quotes.time.max())))
    rets = [(w.shift(-HORIZON) / w - 1).iloc[:-HORIZON] for w in blocks]
    return pd.concat([r.reindex(columns=SYMS) for r in rets]).fillna(0.0)


def test_pnl_and_var_match_pandas(recorded):
    cfg, procs, quotes, fills = recorded
    st = caught_up(cfg, quotes, fills)
    q = pd.DataFrame({k: (v if k != "sym" else v.astype(str)) for k, v in quotes.items()})
    f = pd.DataFrame(fills).astype({"qty": "int64", "price": "float64", "fee": "float64"})
    want = accounting(f)
    top = q[(q.bid > 0) & (q.ask > 0)].groupby("sym").last()
    want["bid"] = want.sym.map(top.bid)
    want["ask"] = want.sym.map(top.ask)
    want["mid"] = (want.bid + want.ask) / 2
    want["unrealized"] = np.where(want.position > 0, want.position * (want.bid - want.avg_cost),
                                  np.where(want.position < 0, want.position * (want.ask - want.avg_cost), 0.0))
    want["net"] = want.position * want.mid

    got = pd.DataFrame(st["positions"]).set_index(["book", "sym"]).sort_index()
    w = want.set_index(["book", "sym"]).sort_index()
    assert list(got.index) == list(w.index) and (w.position != 0).sum() >= 3
    assert (got.position == w.position).all()
    for col in ("avg_cost", "realized", "unrealized", "net"):
        np.testing.assert_allclose(got[col], w[col], rtol=1e-9, atol=1e-9, err_msg=col)

    R = scenario_returns(cfg, q)
    assert st["var"]["scenarios"] == len(R) and len(st["var"]["days"]) == 3
    books = {b["book"]: b for b in st["books"]}
    assert set(books) == {"alpha", "beta"}
    for book, g in w.reset_index().groupby("book"):
        expo = g.set_index("sym").net.reindex(SYMS).fillna(0.0)
        loss = -(R @ expo)
        var = loss.quantile(CONF)
        es = loss[loss >= var].mean()
        b = books[book]
        assert b["realized"] == pytest.approx(g.realized.sum(), rel=1e-9, abs=1e-9)
        assert b["unrealized"] == pytest.approx(g.unrealized.sum(), rel=1e-9, abs=1e-9)
        assert b["gross"] == pytest.approx(g.net.abs().sum(), rel=1e-9)
        assert b["net"] == pytest.approx(g.net.sum(), rel=1e-9)
        assert b["var"] == pytest.approx(var, rel=1e-9) and var > 0
        assert b["es"] == pytest.approx(es, rel=1e-9) and es >= var
    # the same numbers were published through the TP as `risk` rows
    from tickerplant.log import scan
    from tickerplant.protocol import control
    from schemas.codec import decode
    log = control(cfg.tickerplant.ctl, "status")["log"]
    rows = [r for _, _, p in scan(log, ("risk",), strict=False)
            for r in decode(p, cfg.registry())[1].to_pylist()]
    final = {(r["book"], r["sym"]): r for r in rows if r["time"] == max(x["time"] for x in rows)}
    assert final[("alpha", "")]["var"] == pytest.approx(books["alpha"]["var"], rel=1e-9)
    assert {k for k in final if k[1]} == set(w.index)


REQUEST = hs.one_of(hs.binary(max_size=200),
                    hs.dictionaries(hs.text(max_size=5), hs.one_of(hs.none(), hs.integers(), hs.text(max_size=8)),
                                    max_size=3).map(lambda d: json.dumps(d).encode()),
                    hs.just(b'{"cmd": "status"}'), hs.just(b"[1, 2]"), hs.just(b"\xff\xfe"))


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=hs.lists(REQUEST, min_size=1, max_size=3))
def test_every_request_on_the_control_socket_gets_one_reply(recorded, frames):
    cfg = recorded[0]
    s = zmq.Context.instance().socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(cfg.risk.ctl)
    try:
        s.send_multipart(frames)
        assert s.poll(5000), "no reply"
        (reply,) = s.recv_multipart()
        body = json.loads(reply)
        good = len(frames) == 1 and frames[0] == b'{"cmd": "status"}'
        assert ("error" not in body) == good
    finally:
        s.close(0)


def test_junk_without_an_envelope_is_dropped_and_the_process_goes_on(recorded):
    cfg, procs = recorded[0], recorded[1]
    d = zmq.Context.instance().socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 2000)
    d.connect(cfg.risk.ctl)
    for junk in ([b"x" * 100], [b"", b"", b"{}"], [b"\x00"]):
        d.send_multipart(junk)
    d.close()
    wait_for(lambda: status(cfg)["counters"].get("ctl_unenveloped", 0) >= 2, timeout=10,
             what="the junk to be counted")
    assert procs.running["risk"].poll() is None
