"""The venue matching engine as a library: fills, consumed liquidity, priority, order types,
cancel/replace, rejects, latency, batches, and (hypothesis) the report invariants."""
from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.matching import CxlRejReason, FillModel, MatchingEngine, OrdRejReason
from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus,
                           OrdType, ReplaceOrder, Side, TimeInForce)

BUY, SELL = Side.BUY, Side.SELL
LMT, MKT = OrdType.LIMIT, OrdType.MARKET


def model(**kw) -> FillModel:
    base = dict(offset_bps=0.0, offset_abs=0.0, display_fraction=1.0, taker_fee_bps=0.0,
                taker_fee_per_share=0.0, maker_fee_bps=0.0, maker_fee_per_share=0.0, latency_ns=0)
    return FillModel(**(base | kw))


def engine(**kw) -> MatchingEngine:
    syms = kw.pop("syms", None)
    return MatchingEngine(model(**kw), venue="V", id_prefix="t-", syms=syms)


def reports(out):
    return [r.report for r in out]


def kinds(out):
    return [r.report.exec_type if isinstance(r.report, ExecReport) else "cxlrej" for r in out]


def new(cl, sym="AAPL", side=BUY, qty=100, price=10.0, ord_type=LMT, tif=TimeInForce.DAY):
    return NewOrder(cl, sym, side, qty, ord_type, price, tif)


# -- fills ------------------------------------------------------------------------------------------
def test_a_marketable_order_takes_the_venue_quote_with_offset_display_and_taker_fee():
    e = engine(offset_bps=10.0, offset_abs=0.01, display_fraction=0.5, taker_fee_bps=2.0, taker_fee_per_share=0.001)
    e.on_quote(1, "AAPL", 100.0, 100.2, 400, 300)
    q = e.quote("AAPL")
    assert q["ask"] == pytest.approx(100.2 * 1.001 + 0.01) and q["bid"] == pytest.approx(100.0 * 0.999 - 0.01)
    assert (q["ask_size"], q["bid_size"]) == (150, 200)
    out = e.submit("s", new("c1", qty=100, price=101.0), 10)
    assert kinds(out) == [ExecType.NEW, ExecType.TRADE]
    fill = out[1].report
    assert fill.last_px == q["ask"] and fill.last_qty == 100 and fill.ord_status is OrdStatus.FILLED
    assert fill.cum_qty == 100 and fill.leaves_qty == 0 and fill.avg_px == fill.last_px
    assert fill.fee == pytest.approx(100 * 0.001 + 100 * q["ask"] * 2e-4)
    assert e.quote("AAPL")["ask_avail"] == 50


def test_partial_fill_by_displayed_size_then_the_rest_fills_at_its_limit_when_a_quote_crosses_it():
    e = engine(display_fraction=0.5, maker_fee_bps=-0.2)
    e.on_quote(1, "AAPL", 9.9, 10.0, 100, 100)
    out = e.submit("s", new("c1", qty=120, price=10.05), 2)
    assert kinds(out) == [ExecType.NEW, ExecType.TRADE]
    assert (out[1].report.last_qty, out[1].report.leaves_qty, out[1].report.ord_status) == (50, 70, OrdStatus.PARTIALLY_FILLED)
    assert e.on_quote(3, "AAPL", 9.9, 10.1, 100, 100) == []           # above the limit: rests
    out = e.on_quote(4, "AAPL", 9.9, 10.02, 100, 400)                 # crosses: fills at 10.05
    (fill,) = reports(out)
    assert (fill.last_qty, fill.last_px, fill.cum_qty, fill.leaves_qty) == (70, 10.05, 120, 0)
    assert fill.avg_px == pytest.approx((50 * 10.0 + 70 * 10.05) / 120)
    assert fill.fee == pytest.approx(70 * 10.05 * -0.2e-4)             # a maker rebate
    assert fill.time == 4


def test_one_quote_never_fills_twice_and_liquidity_replenishes_only_when_the_side_changes():
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.0, 100, 100)
    a = e.submit("s1", new("a", qty=80, price=10.0), 2)
    b = e.submit("s2", new("b", qty=80, price=10.0), 3)
    assert sum(r.report.last_qty for r in a + b) == 100                 # not 160
    assert e.quote("AAPL")["ask_avail"] == 0
    assert e.on_quote(4, "AAPL", 9.8, 10.0, 100, 100) == []             # bid moved, ask repeated
    (fill,) = reports(e.on_quote(5, "AAPL", 9.8, 10.0, 100, 120))       # ask size changed
    assert (fill.cl_ord_id, fill.last_qty) == ("b", 60)
    assert e.quote("AAPL")["ask_avail"] == 60


def test_price_time_priority_across_sessions():
    e = engine()
    e.on_quote(1, "AAPL", 9.0, 11.0, 100, 100)
    e.submit("s1", new("early", qty=50, price=10.0), 2)
    e.submit("s2", new("better", qty=50, price=10.1), 3)
    e.submit("s1", new("late", qty=50, price=10.0), 4)
    out = e.on_quote(5, "AAPL", 9.0, 9.95, 100, 120)
    assert [(r.session, r.report.cl_ord_id, r.report.last_qty) for r in out] == [
        ("s2", "better", 50), ("s1", "early", 50), ("s1", "late", 20)]


def test_market_order_takes_the_quote_and_its_rest_goes_first_at_the_next_quote():
    e = engine()
    out = e.submit("s", new("m0", ord_type=MKT, price=None), 1)
    assert out[0].report.exec_type is ExecType.REJECTED and out[0].reject_reason == OrdRejReason.UNKNOWN_SYMBOL
    e.on_quote(2, "AAPL", 9.9, float("nan"), 100, 0)
    out = e.submit("s", new("m1", ord_type=MKT, price=None), 3)
    assert out[0].report.exec_type is ExecType.REJECTED and out[0].reject_reason == OrdRejReason.OTHER
    assert "no ask quote" in out[0].report.text
    e.on_quote(4, "AAPL", 9.9, 10.0, 100, 30)
    e.submit("s", new("lim", qty=100, price=10.5), 5)                     # takes 30, rests 70
    out = e.submit("s", new("mkt", ord_type=MKT, price=None, qty=50), 6)  # nothing left: rests
    assert kinds(out) == [ExecType.NEW]
    out = e.on_quote(7, "AAPL", 9.9, 10.2, 100, 60)
    assert [(r.report.cl_ord_id, r.report.last_qty, r.report.last_px) for r in out] == [("mkt", 50, 10.2), ("lim", 10, 10.5)]


def test_ioc_fills_what_is_there_and_cancels_the_rest():
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.0, 100, 40)
    out = e.submit("s", new("i", qty=100, price=10.0, tif=TimeInForce.IOC), 2)
    assert kinds(out) == [ExecType.NEW, ExecType.TRADE, ExecType.CANCELED]
    last = out[-1].report
    assert (last.ord_status, last.cum_qty, last.leaves_qty) == (OrdStatus.CANCELED, 40, 0)
    assert e.working() == []


def test_fok_fills_entirely_or_not_at_all():
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.0, 100, 100)
    out = e.submit("s", new("k", qty=101, price=10.0, tif=TimeInForce.FOK), 2)
    assert kinds(out) == [ExecType.NEW, ExecType.CANCELED] and out[-1].report.cum_qty == 0
    assert e.quote("AAPL")["ask_avail"] == 100                            # nothing consumed
    out = e.submit("s", new("f", qty=100, price=10.0, tif=TimeInForce.FOK), 3)
    assert kinds(out) == [ExecType.NEW, ExecType.TRADE] and out[-1].report.ord_status is OrdStatus.FILLED


@pytest.mark.parametrize("order, reason, words", [
    (new("x", sym="ZZZ"), OrdRejReason.UNKNOWN_SYMBOL, "unknown sym"),
    (new("x", qty=0), OrdRejReason.INCORRECT_QUANTITY, "qty 0"),
    (new("x", qty=-5), OrdRejReason.INCORRECT_QUANTITY, "qty -5"),
    (new("x", price=None), OrdRejReason.OTHER, "needs a price"),
    (new("x", price=0.0), OrdRejReason.OTHER, "needs a price"),
    (new("x", price=-1.0), OrdRejReason.OTHER, "needs a price"),
    (new("x", price=float("nan")), OrdRejReason.OTHER, "needs a price"),
    (new("x", sym="HALT"), OrdRejReason.EXCHANGE_CLOSED, "halted"),
])
def test_rejects_carry_the_fix_reason_and_say_why(order, reason, words):
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.0, 100, 100)
    e.on_quote(1, "HALT", 9.9, 10.0, 100, 100)
    e.halt("HALT", 1)
    (r,) = e.submit("s", order, 2)
    assert r.report.exec_type is ExecType.REJECTED and r.report.ord_status is OrdStatus.REJECTED
    assert r.reject_reason == reason and words in r.report.text
    assert (r.report.cum_qty, r.report.leaves_qty) == (0, 0)


def test_duplicate_clordid_and_a_fixed_universe():
    e = engine(syms=["AAPL"])
    (r,) = e.submit("s", new("c"), 1)        # in the universe: a limit order rests before any quote
    assert r.report.exec_type is ExecType.NEW
    e.on_quote(2, "AAPL", 9.9, 10.5, 100, 100)
    e.on_quote(2, "MSFT", 9.9, 10.5, 100, 100)                 # outside the universe: ignored
    assert e.quote("MSFT") is None
    assert e.submit("s", new("m", sym="MSFT"), 3)[0].reject_reason == OrdRejReason.UNKNOWN_SYMBOL
    assert e.submit("s", new("c"), 4)[0].reject_reason == OrdRejReason.DUPLICATE_ORDER
    assert e.submit("other", new("c"), 5)[0].report.exec_type is ExecType.NEW   # ids are per session


def test_halt_stops_fills_and_replaces_but_not_cancels():
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.5, 100, 100)
    e.submit("s", new("c1", price=10.0), 2)
    e.halt("AAPL", 2)
    assert e.on_quote(3, "AAPL", 9.8, 9.9, 100, 100) == []
    (r,) = e.submit("s", ReplaceOrder("c2", "c1", "AAPL", BUY, 100, 10.1), 4)
    assert isinstance(r.report, CancelReject) and r.report.reason == CxlRejReason.EXCHANGE_OPTION
    e.resume("AAPL", 4)
    (f,) = e.on_quote(5, "AAPL", 9.8, 9.95, 100, 30)
    assert f.report.last_qty == 30
    (c,) = e.submit("s", CancelOrder("c3", "c1", "AAPL", BUY, 100), 6)
    assert c.report.exec_type is ExecType.CANCELED and c.report.cum_qty == 30


# -- cancel / replace -------------------------------------------------------------------------------
def test_cancel_and_its_rejects():
    e = engine()
    e.on_quote(1, "AAPL", 9.9, 10.5, 100, 100)
    e.submit("s", new("c1"), 2)
    (r,) = e.submit("s", CancelOrder("x1", "nope", "AAPL", BUY, 100), 3)
    assert isinstance(r.report, CancelReject) and r.report.reason == CxlRejReason.UNKNOWN_ORDER
    assert r.report.ord_status is OrdStatus.REJECTED and r.report.response_to == "1"
    (r,) = e.submit("s", CancelOrder("c2", "c1", "AAPL", BUY, 100), 4)
    rep = r.report
    assert (rep.exec_type, rep.ord_status, rep.cl_ord_id, rep.orig_cl_ord_id, rep.leaves_qty) == (
        ExecType.CANCELED, OrdStatus.CANCELED, "c2", "c1", 0)
    (r,) = e.submit("s", CancelOrder("c3", "c2", "AAPL", BUY, 100), 5)
    assert r.report.reason == CxlRejReason.TOO_LATE_TO_CANCEL and r.report.ord_status is OrdStatus.CANCELED
    (r,) = e.submit("s", CancelOrder("c4", "c1", "AAPL", BUY, 100), 6)       # another session's view
    assert r.report.reason == CxlRejReason.TOO_LATE_TO_CANCEL
    (r,) = e.submit("t", CancelOrder("c5", "c2", "AAPL", BUY, 100), 7)       # not this session's order
    assert r.report.reason == CxlRejReason.UNKNOWN_ORDER


def test_replace_priority_rules():
    e = engine()
    e.on_quote(1, "AAPL", 9.0, 11.0, 100, 100)
    e.submit("s", new("a1", qty=100), 2)
    e.submit("s", new("b1", qty=100), 3)
    (r,) = e.submit("s", ReplaceOrder("a2", "a1", "AAPL", BUY, 60, 10.0), 4)    # qty down: keeps place
    assert (r.report.exec_type, r.report.ord_status, r.report.leaves_qty, r.report.orig_cl_ord_id) == (
        ExecType.REPLACED, OrdStatus.NEW, 60, "a1")
    assert [r.report.cl_ord_id for r in e.on_quote(5, "AAPL", 9.0, 9.99, 100, 10)] == ["a2"]
    e.submit("s", ReplaceOrder("a3", "a2", "AAPL", BUY, 80, 10.0), 6)           # qty up: goes behind
    assert [r.report.cl_ord_id for r in e.on_quote(7, "AAPL", 9.0, 9.98, 100, 10)] == ["b1"]
    e.submit("s", ReplaceOrder("b2", "b1", "AAPL", BUY, 100, 9.5), 8)           # price down: behind a3
    out = e.on_quote(9, "AAPL", 9.0, 9.4, 100, 200)
    assert [(r.report.cl_ord_id, r.report.last_qty) for r in out] == [("a3", 70), ("b2", 90)]


def test_replace_rejects_leave_the_order_as_it_was_and_a_marketable_replace_takes():
    e = engine()
    e.on_quote(1, "AAPL", 9.0, 10.0, 100, 30)
    e.submit("s", new("c1", qty=100, price=10.0), 2)                             # 30 filled
    for req, words in [(ReplaceOrder("c2", "c1", "AAPL", BUY, 30, 10.0), "exceed the 30"),
                       (ReplaceOrder("c2", "c1", "AAPL", BUY, 0, 10.0), "must be > 0"),
                       (ReplaceOrder("c2", "c1", "AAPL", BUY, 100, None), "needs a price"),
                       (ReplaceOrder("c2", "c1", "AAPL", BUY, 100, None, ord_type=MKT), "type cannot change"),
                       (ReplaceOrder("c2", "c1", "AAPL", SELL, 100, 10.0), "do not match"),
                       (ReplaceOrder("c2", "c1", "AAPL", BUY, 100, 10.0, tif=TimeInForce.IOC), "cannot become")]:
        (r,) = e.submit("s", req, 3)
        assert isinstance(r.report, CancelReject) and words in r.report.text, (req, r.report.text)
        assert r.report.response_to == "2" and r.report.ord_status is OrdStatus.PARTIALLY_FILLED
    assert e.order("s", "c1").qty == 100 and e.order("s", "c1").price == 10.0
    e.on_quote(4, "AAPL", 9.0, 10.2, 100, 50)
    out = e.submit("s", ReplaceOrder("c2", "c1", "AAPL", BUY, 100, 10.3), 5)
    assert kinds(out) == [ExecType.REPLACED, ExecType.TRADE]
    assert (out[1].report.cl_ord_id, out[1].report.last_px, out[1].report.cum_qty) == ("c2", 10.2, 80)
    (r,) = e.submit("s", CancelOrder("c3", "c1", "AAPL", BUY, 100), 6)           # names an old id
    assert r.report.reason == CxlRejReason.UNKNOWN_ORDER and "c2" in r.report.text


# -- latency, batches, disconnect -------------------------------------------------------------------
def test_latency_an_order_sees_the_quotes_stamped_up_to_arrival_plus_latency():
    e = engine(latency_ns=100)
    e.on_quote(0, "AAPL", 9.9, 10.0, 100, 100)
    assert e.submit("s", new("c1", qty=100, price=10.0), 1000) == []
    assert e.next_due() == 1100
    out = e.on_quotes([1050, 1100, 1150], ["AAPL"] * 3, [9.9] * 3, [10.0, 9.9, 9.8], [100] * 3, [10, 20, 40])
    assert [(r.report.exec_type, r.report.time) for r in out] == [(ExecType.NEW, 1100), (ExecType.TRADE, 1100),
                                                                  (ExecType.TRADE, 1150)]
    assert [r.report.last_px for r in out[1:]] == [9.9, 10.0]                       # taker at 9.9, then its limit
    e2 = engine(latency_ns=100)
    e2.on_quote(0, "AAPL", 9.9, 10.0, 100, 100)
    e2.submit("s", new("c1", qty=100, price=10.0), 1000)
    live = e2.on_quote(1050, "AAPL", 9.9, 10.0, 100, 10) + e2.advance(1100)
    assert [(r.report.exec_type, r.report.last_qty) for r in live] == [(ExecType.NEW, 0), (ExecType.TRADE, 10)]


@pytest.mark.parametrize("form", ["str", "codes", "arrow"])
def test_a_batch_of_many_syms_leaves_each_syms_last_quote(form):
    rng = np.random.default_rng(7)
    n, syms = 5000, np.array([f"S{i:03d}" for i in range(50)])
    codes = rng.integers(0, 50, n).astype(np.int32)
    bid = np.round(rng.uniform(10, 20, n), 2)
    ask, bs, asz = np.round(bid + 0.01, 2), rng.integers(1, 500, n), rng.integers(1, 500, n)
    col = {"str": syms[codes], "codes": (codes, list(syms)),
           "arrow": pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(syms))}[form]
    e = engine()
    assert e.on_quotes(np.arange(n), col, bid, ask, bs, asz) == []
    for k in (0, 17, 49):
        last = np.flatnonzero(codes == k)[-1]
        q = e.quote(syms[k])
        assert (q["bid"], q["ask"], q["bid_avail"], q["ask_avail"]) == (bid[last], ask[last], bs[last], asz[last])


def test_cancel_all_cancels_working_rejects_pending_and_answers_pending_cancels():
    e = engine(latency_ns=50)
    e.on_quote(0, "AAPL", 9.0, 11.0, 100, 100)
    e.submit("s", new("w1"), 10)
    e.submit("s", new("w2", side=SELL, price=12.0), 11)
    e.submit("t", new("keep"), 12)
    e.advance(100)
    e.submit("s", CancelOrder("x", "w1", "AAPL", BUY, 100), 200)
    e.submit("s", new("p1"), 201)
    out = e.cancel_all("s", 210)
    assert [(type(r.report).__name__, r.report.cl_ord_id, getattr(r.report, "exec_type", None)) for r in out] == [
        ("ExecReport", "w1", ExecType.CANCELED), ("ExecReport", "w2", ExecType.CANCELED),
        ("CancelReject", "x", None), ("ExecReport", "p1", ExecType.REJECTED)]
    assert all(r.session == "s" for r in out)
    assert [o.cl_ord_id for o in e.working()] == ["keep"] and e.next_due() is None


# -- the invariants, on random streams --------------------------------------------------------------
PRICES = [9.8, 9.9, 10.0, 10.1, 10.2]
NAN = float("nan")
SYMS = st.sampled_from(["X", "Y"])
SESSIONS = st.sampled_from(["s1", "s2"])


@st.composite
def quote_row(draw):
    bid = draw(st.sampled_from(PRICES + [NAN]))                        # now and then a one-sided quote
    ask = round((bid if bid == bid else 10.0) + draw(st.sampled_from([0.1, 0.1, 0.2, NAN])), 2)
    size = st.sampled_from([0, 50, 100, 100, 200])                     # repeats are common, as in markets
    return (draw(SYMS), bid, ask, draw(size), draw(size))


QUOTES = st.tuples(st.just("quotes"), st.lists(quote_row(), min_size=1, max_size=5))
NEW = st.tuples(st.just("new"), SESSIONS, SYMS, st.sampled_from([BUY, SELL]), st.integers(-1, 300),
                st.sampled_from([LMT, LMT, LMT, MKT]), st.sampled_from(PRICES * 3 + [None]),
                st.sampled_from([TimeInForce.DAY, TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC,
                                 TimeInForce.FOK]))
EVENT = st.one_of(   # repeated branches weight the draw toward quotes and orders
    QUOTES, QUOTES, QUOTES, NEW, NEW, NEW,
    st.tuples(st.just("cancel"), SESSIONS, st.integers(0, 3)),
    st.tuples(st.just("replace"), SESSIONS, st.integers(0, 3), st.integers(-1, 300),
              st.sampled_from(PRICES * 3 + [None])),
    st.tuples(st.just("halt"), SYMS, st.sampled_from([True, False, False])),
    st.tuples(st.just("disconnect"), SESSIONS),
)


def no_missed_fill(e: MatchingEngine, stale: set) -> None:
    """No working order crosses its venue quote while that side still has size available
    (syms halted, or resumed since their last quote, match only at their next quote)."""
    for o in e.working():
        q = e.quote(o.sym)
        if q["halted"] or o.sym in stale:
            continue
        px, avail = (q["ask"], q["ask_avail"]) if o.side is BUY else (q["bid"], q["bid_avail"])
        crosses = px == px and (o.price is None or (px <= o.price if o.side is BUY else px >= o.price))
        assert not (crosses and avail > 0), f"{o} crosses {q} and did not fill"


def run(events, fm: FillModel, rowwise: bool):
    """Drive an engine; returns (reports, quote rows fed, requests made, halt changes).
    Both syms are quoted first, so orders mostly meet a market (unknown syms are unit-tested)."""
    stale: set = set()
    e = MatchingEngine(fm, venue="V", id_prefix="h-")
    out, rows, requests, halts = [], [], [], []
    ids: dict[str, list] = defaultdict(list)          # session -> [(cl_ord_id, sym, side)]
    n = 0
    events = [("quotes", [("X", 9.9, 10.0, 100, 100), ("Y", 10.0, 10.1, 100, 100)])] + list(events)
    for i, ev in enumerate(events):
        t = (i + 1) * 10
        kind = ev[0]
        if kind == "quotes":
            batch = [(t + j, *row) for j, row in enumerate(ev[1])]
            rows += batch
            stale -= {r[1] for r in batch}
            if rowwise:
                for r in batch:
                    out += e.on_quote(*r)
            else:
                cols = list(zip(*batch))
                out += e.on_quotes(np.array(cols[0]), np.array(cols[1], object), np.array(cols[2]),
                                   np.array(cols[3]), np.array(cols[4]), np.array(cols[5]))
        elif kind == "new":
            _, s, sym, side, qty, ot, px, tif = ev
            n += 1
            cl = f"{s}-{n}"
            ids[s].append((cl, sym, side))
            req = NewOrder(cl, sym, side, qty, ot, px, tif)
            requests.append((s, req))
            out += e.submit(s, req, t)
        elif kind in ("cancel", "replace"):
            s = ev[1]
            if not ids[s]:
                continue
            orig, sym, side = ids[s][-1 - ev[2] % len(ids[s])]     # one of the latest ids
            n += 1
            cl = f"{s}-{n}"
            if kind == "cancel":
                req = CancelOrder(cl, orig, sym, side, 100)
            else:
                req = ReplaceOrder(cl, orig, sym, side, ev[3], ev[4])
                ids[s].append((cl, sym, side))
            requests.append((s, req))
            out += e.submit(s, req, t)
        elif kind == "halt":
            halts.append((t, ev[1], ev[2]))
            out += e.halt(ev[1], t) if ev[2] else e.resume(ev[1], t)
            if not ev[2]:
                stale.add(ev[1])
        else:
            out += e.cancel_all(ev[1], t)
        no_missed_fill(e, stale)
    out += e.advance(10 ** 12)
    return out, rows, requests, halts


def check_invariants(out, rows, requests, halts, fm: FillModel):
    exec_ids = [r.report.exec_id for r in out if isinstance(r.report, ExecReport)]
    assert len(exec_ids) == len(set(exec_ids)), "ExecIDs repeat"
    # every request is answered exactly once
    answers = defaultdict(int)
    for r in out:
        rep = r.report
        if isinstance(rep, CancelReject):
            answers[(r.session, rep.cl_ord_id)] += 1
        elif rep.exec_type in (ExecType.NEW, ExecType.REJECTED, ExecType.REPLACED):
            answers[(r.session, rep.cl_ord_id)] += 1
        elif rep.exec_type is ExecType.CANCELED and rep.orig_cl_ord_id:
            answers[(r.session, rep.cl_ord_id)] += 1
    for s, req in requests:
        assert answers[(s, req.cl_ord_id)] == 1, f"{req} answered {answers[(s, req.cl_ord_id)]} times"
    # quantities and prices per order
    fills = defaultdict(list)
    for r in out:
        rep = r.report
        if not isinstance(rep, ExecReport):
            continue
        assert 0 <= rep.cum_qty
        if rep.ord_status.terminal:
            assert rep.leaves_qty == 0
        else:
            assert rep.cum_qty + rep.leaves_qty == rep.order_qty and rep.cum_qty < rep.order_qty
        if rep.exec_type is ExecType.TRADE:
            assert rep.last_qty > 0 and rep.cum_qty <= rep.order_qty
            fills[rep.order_id].append((rep.last_qty, rep.last_px))
            got = fills[rep.order_id]
            assert rep.cum_qty == sum(q for q, _ in got)
            lo, hi = min(p for _, p in got), max(p for _, p in got)
            assert lo - 1e-9 * hi <= rep.avg_px <= hi + 1e-9 * hi
            assert rep.avg_px == pytest.approx(sum(q * p for q, p in got) / rep.cum_qty, rel=1e-12)
        else:
            assert rep.last_qty == 0
    # no displayed liquidity used twice; fills only at the quote or at a crossed limit; none while halted
    epoch_of = {}                    # (sym, side) -> current epoch id
    last_row = {}                    # sym -> (bid, ask, bsize, asize)
    cap, used = {}, defaultdict(int)
    state_at = []                    # (time, snapshot of epoch_of/prices) after each row
    row_times = {r[0] for r in rows}
    for t, sym, bid, ask, bs, asz in rows:
        prev = last_row.get(sym, (float("nan"), float("nan"), 0, 0))
        for side, px, size, pprev, sprev in (("bid", bid, bs, prev[0], prev[2]), ("ask", ask, asz, prev[1], prev[3])):
            same = (px == pprev or (px != px and pprev != pprev)) and size == sprev
            if not same:
                epoch_of[(sym, side)] = (sym, side, t)
                cap[(sym, side, t)] = math.floor(size * fm.display_fraction)
        last_row[sym] = (bid, ask, bs, asz)
        state_at.append((t, dict(epoch_of), dict(last_row)))
    def halted_at(sym, t):
        changes = [on for (ht, hs, on) in halts if hs == sym and ht <= t]
        return bool(changes) and changes[-1]
    for r in out:
        rep = r.report
        if not isinstance(rep, ExecReport) or rep.exec_type is not ExecType.TRADE:
            continue
        snap = [s for s in state_at if s[0] <= rep.time]
        assert snap, "a fill before any quote"
        _, epochs, prices = snap[-1]
        side = "ask" if rep.side is BUY else "bid"
        epoch = epochs[(rep.sym, side)]
        used[epoch] += rep.last_qty
        assert used[epoch] <= cap[epoch], f"displayed size of {epoch} used twice"
        assert not halted_at(rep.sym, rep.time)
        raw = prices[rep.sym][1 if rep.side is BUY else 0]
        off = raw * fm.offset_bps / 1e4 + fm.offset_abs
        venue_px = raw + off if rep.side is BUY else raw - off
        q = rep.last_qty
        if rep.time in row_times and rep.price is not None:   # a resting limit, crossed by a quote
            assert rep.last_px == rep.price, "a resting limit fills at its limit"
            assert rep.fee == pytest.approx(q * fm.maker_fee_per_share + q * rep.last_px * fm.maker_fee_bps / 1e4)
        else:                                                 # took the quote: on entry, or a resting market order
            assert rep.last_px == pytest.approx(venue_px)
            assert rep.fee == pytest.approx(q * fm.taker_fee_per_share + q * rep.last_px * fm.taker_fee_bps / 1e4)
        if rep.price is not None:
            assert (venue_px <= rep.price + 1e-9) if rep.side is BUY else (venue_px >= rep.price - 1e-9)


@settings(max_examples=200)
@given(events=st.lists(EVENT, min_size=10, max_size=80), fraction=st.sampled_from([1.0, 0.5, 0.3]),
       latency=st.sampled_from([0, 5, 15]), offset=st.sampled_from([0.0, 0.01]))
def test_random_streams_keep_every_invariant_and_batches_match_rows(events, fraction, latency, offset):
    fm = model(display_fraction=fraction, latency_ns=latency, offset_abs=offset, maker_fee_bps=-0.1,
               taker_fee_bps=0.3)
    batched = run(events, fm, rowwise=False)
    check_invariants(*batched, fm)
    rowwise = run(events, fm, rowwise=True)
    assert rowwise[0] == batched[0], "a batch and the same rows one by one gave different reports"
    assert run(events, fm, rowwise=False)[0] == batched[0], "not deterministic"
