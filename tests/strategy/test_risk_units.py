"""The risk libraries on their own (no processes): the book's accounting against a plain
blotter on any sequence of fills, the quote batch marking against a row-by-row one, and the
flatten child's promises (never past flat, a bounded share of the displayed size) for any
position and quote."""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from strategy.risk.book import Book
from strategy.risk.config import Limits, RiskProcessSettings
from strategy.risk.limits import breaches, child_order
from strategy.risk.var import Scenarios, ffill, var_es_of

FILL = hs.tuples(hs.sampled_from(["X", "Y"]), hs.sampled_from(["buy", "sell"]), hs.integers(1, 500),
                 hs.floats(1, 200, allow_nan=False).map(lambda p: round(p, 2)), hs.floats(0, 2).map(lambda f: round(f, 3)),
                 hs.sampled_from(["s1", "s2", ""]))


def fills_batch(fills):
    n = len(fills)
    return pa.record_batch({"time": pa.array(np.arange(n, dtype=np.int64)), "sym": [f[0] for f in fills],
                            "side": [f[1] for f in fills], "qty": pa.array([f[2] for f in fills], pa.int64()),
                            "price": [float(f[3]) for f in fills], "fee": [float(f[4]) for f in fills],
                            "account": ["a"] * n, "strategy": [f[5] for f in fills],
                            "parent": [f"p{i}" for i in range(n)]})


@given(hs.lists(FILL, min_size=1, max_size=40), hs.integers(1, 3))
def test_accounting_matches_a_blotter(fills, cut):
    book = Book("strategy")
    k = len(fills) * cut // 4                       # in two batches: the split does not matter
    for part in (fills[:k], fills[k:]):
        if part:
            book.on_fills(fills_batch(part))
    want = {}
    for sym, side, qty, px, fee, strat in fills:
        pos, avg, real = want.get((strat or "-", sym), (0, 0.0, 0.0))
        d = qty if side == "buy" else -qty
        if pos == 0 or (pos > 0) == (d > 0):
            avg = (avg * abs(pos) + px * qty) / (abs(pos) + qty)
        else:
            real += min(qty, abs(pos)) * (px - avg) * (1 if pos > 0 else -1)
            avg = px if qty > abs(pos) else (0.0 if qty == abs(pos) else avg)
        want[(strat or "-", sym)] = (pos + d, avg, real - fee)
    for (b, sym), (pos, avg, real) in want.items():
        r = book.rows[(book.book_index[b], book.sym_index[sym])]
        assert book.pos[r] == pos
        assert book.avg[r] == pytest.approx(avg, rel=1e-9, abs=1e-9)
        assert book.realized[r] == pytest.approx(real, rel=1e-9, abs=1e-6)


QUOTE = hs.tuples(hs.sampled_from(["A", "B", "C"]), hs.sampled_from([0.0, math.nan, 10.0, 10.5, 11.0]),
                  hs.sampled_from([0.0, 10.1, 10.6, 11.2]), hs.integers(0, 900))


@given(hs.lists(QUOTE, min_size=1, max_size=60))
def test_a_quote_batch_marks_each_sym_at_its_last_two_sided_row(quotes):
    book = Book()
    n = len(quotes)
    book.on_quotes(pa.record_batch({"time": pa.array(np.arange(n, dtype=np.int64)), "sym": [q[0] for q in quotes],
                                    "bid": [q[1] for q in quotes], "ask": [q[2] for q in quotes],
                                    "bsize": pa.array([q[3] for q in quotes], pa.int64()),
                                    "asize": pa.array([q[3] + 1 for q in quotes], pa.int64())}))
    last = {}
    for sym, bid, ask, size in quotes:
        if bid > 0 and ask > 0:
            last[sym] = (bid, ask, size)
    for sym, (bid, ask, size) in last.items():
        s = book.sym_index[sym]
        assert (book.bid[s], book.ask[s], book.bsize[s], book.asize[s]) == (bid, ask, size, size + 1)
    assert all(math.isnan(book.bid[book.sym_index[s]]) for s in book.sym_index if s not in last)


@given(pos=hs.integers(-10_000, 10_000), bid=hs.floats(0.01, 1000), spread=hs.floats(0, 5),
       bsize=hs.integers(0, 5000), asize=hs.integers(0, 5000), share=hs.floats(0.01, 1.0),
       bps=hs.floats(0, 100))
def test_a_flatten_child_never_crosses_flat_nor_takes_more_than_its_share(pos, bid, spread, bsize, asize,
                                                                           share, bps):
    c = child_order(pos, bid, bid + spread, bsize, asize, share, bps)
    if c is None:
        shown = bsize if pos > 0 else asize
        assert pos == 0 or int(share * shown + 1e-9) < 1
        return
    assert c.side == ("sell" if pos > 0 else "buy")
    assert 1 <= c.qty <= abs(pos)
    assert c.qty <= share * c.displayed + 1e-6 and c.displayed == (bsize if pos > 0 else asize)
    assert (c.price <= bid + 1e-6) if pos > 0 else (c.price >= bid + spread - 1e-6)


def test_breaches_name_each_limit_broken():
    lim = Limits(max_loss=100.0, max_var=50.0, max_gross=1000.0, max_net=500.0)
    assert breaches(lim, -99.0, 49.0, 999.0, -499.0) == []
    got = breaches(lim, -101.0, 51.0, 1001.0, -501.0)
    assert [k for k, _, _ in got] == ["loss", "var", "gross", "net"] and got[0][1] == 101.0
    assert breaches(Limits(max_loss=None, max_var=None, max_gross=None, max_net=None), -1e9, 1e9, 1e9, 1e9) == []
    assert breaches(lim, 0.0, math.nan, 0.0, 0.0) == []          # no VaR yet: not a breach


def test_flatten_needs_reducing():
    with pytest.raises(ValueError, match="on_breach"):
        RiskProcessSettings(on_breach="halt")
    assert RiskProcessSettings(on_breach="halt", flatten={"enabled": False}).on_breach == "halt"


def test_var_and_es_of_known_losses():
    losses = np.arange(1, 101, dtype=float)[:, None]            # 1..100
    var, es = var_es_of(losses, 0.95)
    assert var[0] == pytest.approx(np.quantile(np.arange(1, 101), 0.95))
    assert es[0] == pytest.approx(np.arange(1, 101)[np.arange(1, 101) >= var[0]].mean())
    sc = Scenarios(1, 0.95, min_scenarios=5)
    sc.add_block(["X", "Y"], np.array([[0.01, -0.02]] * 3))
    assert math.isnan(sc.var_es(np.array([100.0, 0.0]), ["X", "Y"])[0][0])     # too few scenarios
    sc.add_block(["Y"], np.array([[-0.1]] * 3))
    var, _ = sc.var_es(np.array([[100.0], [100.0]]), ["X", "Y"])
    assert var[0] == pytest.approx(10.0)                         # Y's -10% scenarios; X moves 0 there


def test_ffill_carries_each_column_down():
    a = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, 5.0]])
    np.testing.assert_array_equal(ffill(a), np.array([[np.nan, 1.0], [2.0, 1.0], [2.0, 1.0], [4.0, 5.0]]))
