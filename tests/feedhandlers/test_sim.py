"""The simulator's statistics are the designed ones, its quotes/trades are sane, and it is
deterministic for a seed. Statistical tests use fixed seeds, so they are reproducible."""
import numpy as np
import pytest

from feedhandlers.sim import DEFAULT_START, SESSION_S, MarketSim, _u
from schemas.registry import load_registry

# Engle-Granger critical values (2 variables, constant, asymptotic; MacKinnon 2010).
EG_5PCT = -3.34
EG_1PCT = -3.90


def adf_t(e: np.ndarray, lags: int = 2) -> float:
    """t-statistic of gamma in  de_t = c + gamma e_{t-1} + sum phi_i de_{t-i} + eps  (OLS)."""
    de = np.diff(e)
    y = de[lags:]
    cols = [np.ones(len(y)), e[lags:-1]] + [de[lags - i: -i] for i in range(1, lags + 1)]
    x = np.column_stack(cols)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    s2 = resid @ resid / (len(y) - x.shape[1])
    cov = s2 * np.linalg.inv(x.T @ x)
    return float(beta[1] / np.sqrt(cov[1, 1]))


def engle_granger_t(y: np.ndarray, x: np.ndarray) -> float:
    a = np.column_stack([np.ones(len(x)), x])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return adf_t(y - a @ coef)


def sampled_log_mids(q: dict, syms: list[str], step_s: float) -> np.ndarray:
    """Last quote mid of each sym at every grid point (rows: grid, cols: syms), in logs."""
    t = q["time"]
    grid = np.arange(t.min() + int(step_s * 1e9) * 2, t.max(), int(step_s * 1e9))
    out = np.empty((len(grid), len(syms)))
    mid = (q["bid"] + q["ask"]) / 2
    for j, s in enumerate(syms):
        m = q["sym"] == s
        idx = np.searchsorted(t[m], grid, side="right") - 1
        assert (idx >= 0).all(), f"{s} has no quote before the first grid point"
        out[:, j] = np.log(mid[m][idx])
    return out


@pytest.fixture(scope="module")
def long_run():
    sim = MarketSim(20, seed=7, event_rate=20.0)
    return sim, sim.step(500_000)          # ~25000 s of simulated time: ~200 pair half-lives


def test_columns_match_the_schema(long_run):
    sim, out = long_run
    reg = load_registry()
    assert set(out) == {"quote", "trade"}
    for table, cols in out.items():
        schema = reg[table]
        assert list(cols) == schema.names
        n = {len(v) for v in cols.values()}
        assert len(n) == 1 and n.pop() > 1000
        for c in schema.columns:
            v = cols[c.name]
            if c.dtype is not None:
                assert v.dtype == c.dtype, (table, c.name, v.dtype)
            else:
                assert v.dtype.kind == "U"
        assert (np.diff(cols["time"]) >= 0).all()
        assert set(np.unique(cols["sym"])) <= set(sim.syms)


def test_quotes_and_trades_are_sane(long_run):
    sim, out = long_run
    q, t = out["quote"], out["trade"]
    assert (q["bid"] < q["ask"]).all()
    assert (q["bid"] > 0).all()
    ticks = np.round((q["ask"] - q["bid"]) / sim.tick, 6)
    assert np.allclose(ticks, np.round(ticks)), "spreads are whole ticks"
    assert np.allclose(np.round(q["bid"] / sim.tick, 6) % 1, 0), "prices on the tick grid"
    assert (q["bsize"] > 0).all() and (q["asize"] > 0).all()
    assert (q["bsize"] % 100 == 0).all(), "quotes are round lots"
    assert (t["size"] > 0).all() and (t["price"] > 0).all()
    assert 0.5 < (t["size"] % 100 == 0).mean() < 0.95, "trades mostly, not all, round lots"
    share = len(t["time"]) / (len(t["time"]) + len(q["time"]))
    assert 0.18 < share < 0.22


def test_trades_print_at_or_inside_the_quote(long_run):
    sim, out = long_run
    q, t = out["quote"], out["trade"]
    # The trade's own quote is not published (the event was a trade), but the latest quote of
    # the sym is near it: trades are never far outside the market.
    for s in sim.syms[:5]:
        qm, tm = q["sym"] == s, t["sym"] == s
        idx = np.searchsorted(q["time"][qm], t["time"][tm], side="right") - 1
        ok = idx >= 0
        mid = ((q["bid"][qm] + q["ask"][qm]) / 2)[idx[ok]]
        assert np.median(np.abs(t["price"][tm][ok] / mid - 1)) < 0.002


def test_spread_widens_with_volatility(long_run):
    sim, out = long_run
    q = out["quote"]
    x = ((q["time"] - q["time"][0]) / 1e9 / SESSION_S) % 1
    rel = (q["ask"] - q["bid"]) / ((q["ask"] + q["bid"]) / 2)
    ends = (x < 0.1) | (x > 0.9)
    middle = (x > 0.4) & (x < 0.6)
    assert rel[ends].mean() > 1.3 * rel[middle].mean()


def test_activity_is_u_shaped(long_run):
    _, out = long_run
    t = np.concatenate([out["quote"]["time"], out["trade"]["time"]])
    x = (t - DEFAULT_START) / 1e9 / SESSION_S
    counts, _ = np.histogram(x[x < 1], bins=10, range=(0, 1))   # one whole session
    assert counts[0] > 2 * counts[5] and counts[-1] > 2 * counts[4]
    # and it matches the designed intensity profile
    expect = _u(np.linspace(0.05, 0.95, 10))
    assert np.allclose(counts / counts.mean(), expect / expect.mean(), rtol=0.1)


def test_return_correlation_is_the_designed_one(long_run):
    sim, out = long_run
    legs_b = {p.b for p in sim.pairs}
    idx = [i for i, s in enumerate(sim.syms) if s not in legs_b]
    lm = sampled_log_mids(out["quote"], [sim.syms[i] for i in idx], 120.0)
    measured = np.corrcoef(np.diff(lm, axis=0).T)
    designed = sim.return_corr[np.ix_(idx, idx)]
    off = ~np.eye(len(idx), dtype=bool)
    assert designed[off].mean() > 0.2, "the design has a real common factor"
    assert abs(measured[off].mean() - designed[off].mean()) < 0.05
    assert np.abs(measured[off] - designed[off]).mean() < 0.12


def test_designed_pairs_are_cointegrated_and_others_are_not(long_run):
    sim, out = long_run
    assert len(sim.pairs) == 4
    syms = sorted({s for p in sim.pairs for s in (p.a, p.b)})
    lm = sampled_log_mids(out["quote"], syms, 30.0)
    col = {s: i for i, s in enumerate(syms)}
    for p in sim.pairs:
        t = engle_granger_t(lm[:, col[p.b]], lm[:, col[p.a]])
        assert t < EG_1PCT, (p, t)
        # the designed spread log B - beta log A is the stationary one, with the designed size
        spread = lm[:, col[p.b]] - p.beta * lm[:, col[p.a]]
        assert adf_t(spread - spread.mean()) < EG_1PCT
        assert 0.7 * 0.004 < spread.std() < 1.3 * 0.004, spread.std()
    # Legs of different pairs share only the market factor: no cointegration.
    a0, a1 = sim.pairs[0].a, sim.pairs[1].a
    t = engle_granger_t(lm[:, col[a1]], lm[:, col[a0]])
    assert t > EG_5PCT, t


def test_deterministic_for_a_seed():
    a = MarketSim(8, seed=3).step(5000)
    b = MarketSim(8, seed=3).step(5000)
    c = MarketSim(8, seed=4).step(5000)
    for table in a:
        for col in a[table]:
            assert np.array_equal(a[table][col], b[table][col])
    assert not np.array_equal(a["quote"]["bid"], c["quote"]["bid"])


def test_block_size_does_not_change_the_path():
    # Same seed, different step sizes: still sane and continuous (no jumps at block edges).
    sim = MarketSim(["AAA", "BBB"], seed=1, n_pairs=1)
    parts = [sim.step(n) for n in (1, 10, 1000, 70_000)]
    q = {c: np.concatenate([p["quote"][c] for p in parts]) for c in parts[0]["quote"]}
    assert (np.diff(q["time"]) >= 0).all()
    for s in ("AAA", "BBB"):
        mid = np.log((q["bid"] + q["ask"])[q["sym"] == s] / 2)
        assert np.abs(np.diff(mid)).max() < 0.01


def test_wall_clock_mode_spreads_events_over_the_interval():
    sim = MarketSim(5, seed=2, start_ns=1_000 * 10**9)
    out = sim.step(1000, until=1_001 * 10**9)
    t = np.concatenate([out["quote"]["time"], out["trade"]["time"]])
    assert len(t) == 1000
    assert t.min() > 1_000 * 10**9 and t.max() <= 1_001 * 10**9
    out2 = sim.step(10, until=1_002 * 10**9)
    assert out2["quote"]["time"].min() > t.max() - 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        MarketSim(["A", "A"])
    with pytest.raises(ValueError):
        MarketSim(3, n_pairs=2)
    assert MarketSim(1).pairs == []
    out = MarketSim(3).step(0)
    assert len(out["quote"]["time"]) == 0 and len(out["trade"]["time"]) == 0


def test_run_sim_into_the_tickerplant(stack):
    """run_sim at a low and an unlimited rate: every event logged once, stamped with now."""
    import math
    import time

    from feedhandlers.base import Feed
    from feedhandlers.sim import run_sim
    from helpers import wait_for
    from schemas.codec import decode
    from tickerplant.protocol import control as request
    from tickerplant.log import LogReader, is_control

    cfg, procs = stack
    procs.start("tickerplant", name="tp")

    def alive():
        try:
            return request(cfg.tickerplant.ctl, "status", timeout=0.5)
        except Exception:
            return None
    wait_for(alive, timeout=20, what="tickerplant")
    before = time.time_ns()
    slow = run_sim(cfg, 3, 8.0, 1.0, feed_id=31)                  # a few ticks a second
    fast_feed = Feed.from_config(cfg, 32)
    fast = run_sim(cfg, 10, math.inf, 0.5, feed=fast_feed)        # as fast as the TP takes them
    assert fast_feed.close(20)
    after = time.time_ns()
    assert slow["events"] == 8 and fast["events"] > 20_000
    reg = cfg.registry()
    got = {31: 0, 32: 0}
    times = []
    for path in sorted(cfg.tplog_dir.glob("tp_*.log")):
        for rec in LogReader(path).records():
            if not is_control(rec.payload):
                head, b = decode(bytes(rec.payload), reg)
                got[head.feed] += head.nrows
                times.append(b.column("time").cast("int64").to_numpy())
    assert got == {31: 8, 32: fast["events"]}
    t = np.concatenate(times)
    assert before <= t.min() and t.max() <= after
