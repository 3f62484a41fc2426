"""Pre-trade risk: each limit denies with its own code while an order just inside it passes;
trading states (REDUCING never crosses flat, HALTED admits only cancels); per-sym overrides;
quotes one at a time and in batches; positions and PnL."""
from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.model import CancelOrder, ExecReport, ExecType, NewOrder, OrdStatus, OrdType, ReplaceOrder, Side
from gateway.orders import Orders
from gateway.risk import Deny, Risk, RiskSettings, SymLimits, TradingState

MS = 1_000_000
T0 = 1_000_000 * MS
BUY, SELL = Side.BUY, Side.SELL
# every limit off, so a test turns on only the one it is about
OFF = dict(max_order_qty=None, max_order_notional=None, collar_bps=None, max_quote_age_ms=None,
           max_position=None, max_gross_exposure=None, max_net_exposure=None, max_open_orders=None,
           max_orders=None, max_messages=None, max_daily_loss=None, duplicate_window_ms=None,
           max_order_to_trade=None)
_ids = itertools.count()


def risk(**kw) -> Risk:
    r = Risk(RiskSettings(**{**OFF, **kw}))
    r.on_quote("ABC", 99.0, 101.0, T0)     # mid 100
    return r


def order(qty=100, side=BUY, price=100.0, sym="ABC", ord_type=OrdType.LIMIT):
    return NewOrder(f"o{next(_ids)}", sym, side, qty, ord_type, price)


def admit(r: Risk, o: NewOrder, now=T0):
    """Check and, when admitted, count it as open (what the gateway does through Orders)."""
    d = r.check(o, now)
    if d:
        r.on_open(o.sym, o.side, o.qty, 1)
    return d


def denied(d, code):
    return (not d) and d.code is code and d.text


def test_settings_are_typed_frozen_and_reject_unknown_keys():
    with pytest.raises(ValidationError):
        RiskSettings(max_order_qyt=5)
    with pytest.raises(ValidationError):
        RiskSettings(max_order_qty=0)
    s = RiskSettings(syms={"ABC": {"max_order_qty": 5}}, restricted=["XYZ"])
    assert s.syms["ABC"].max_order_qty == 5 and "XYZ" in s.restricted
    with pytest.raises(ValidationError):
        s.max_order_qty = 3


def test_every_default_limit_is_on():
    s = RiskSettings()
    assert all(getattr(s, k) is not None for k in OFF)


def test_max_order_qty():
    r = risk(max_order_qty=500)
    assert r.check(order(500), T0)
    assert denied(r.check(order(501), T0), Deny.MAX_ORDER_QTY)


def test_max_order_notional():
    r = risk(max_order_notional=10_000.0)
    assert r.check(order(100, price=100.0), T0)
    assert denied(r.check(order(101, price=100.0), T0), Deny.MAX_ORDER_NOTIONAL)
    # a market order is priced at the far touch: 100 x ask 101 > 10,000
    assert denied(r.check(order(100, ord_type=OrdType.MARKET, price=None), T0), Deny.MAX_ORDER_NOTIONAL)
    assert r.check(order(99, ord_type=OrdType.MARKET, price=None), T0)


def test_price_collar():
    r = risk(collar_bps=100.0)
    assert r.check(order(price=101.0), T0) and r.check(order(side=SELL, price=99.0), T0)
    assert denied(r.check(order(price=101.02), T0), Deny.PRICE_COLLAR)
    assert denied(r.check(order(side=SELL, price=98.98), T0), Deny.PRICE_COLLAR)


def test_stale_and_missing_quote():
    r = risk(max_quote_age_ms=1000.0)
    assert r.check(order(), T0 + 1000 * MS)
    assert denied(r.check(order(), T0 + 1000 * MS + 1), Deny.STALE_QUOTE)
    assert denied(r.check(order(sym="NEW"), T0), Deny.NO_QUOTE)
    r.on_quote("ABC", 99.0, 101.0, T0 + 2000 * MS)
    assert r.check(order(), T0 + 2000 * MS)
    # with every quote check off a limit order needs no quote, a market order still does
    r = risk()
    assert r.check(order(sym="NEW"), T0)
    assert denied(r.check(order(sym="NEW", ord_type=OrdType.MARKET, price=None), T0), Deny.NO_QUOTE)


def test_bad_quotes_are_counted_and_skipped():
    r = risk(collar_bps=100.0)
    assert not r.on_quote("ABC", float("nan"), 101.0, T0 + 1)
    assert not r.on_quote("ABC", 0.0, 101.0, T0 + 1)
    assert not r.on_quote("ABC", 50.0, 51.0, T0 - 1)          # older than the one held
    assert r.counts["bad_quote"] == 2 and r.counts["old_quote"] == 1
    assert r.check(order(price=100.5), T0)                    # the good quote still stands


def test_position_limit_counts_open_orders_on_the_same_side():
    r = risk(max_position=1000)
    r.set_position("ABC", 500, 100.0)
    assert admit(r, order(300))
    assert admit(r, order(200))                               # 500 + 300 + 200 = 1000
    assert denied(r.check(order(1), T0), Deny.POSITION_LIMIT)
    assert admit(r, order(1500, side=SELL))                   # 500 - 1500 = -1000
    assert denied(r.check(order(1, side=SELL), T0), Deny.POSITION_LIMIT)


def test_gross_and_net_exposure_include_open_orders():
    r = risk(max_gross_exposure=100_000.0)
    r.on_quote("XYZ", 49.0, 51.0, T0)                         # mid 50
    assert admit(r, order(500, sym="ABC"))                    # 50,000
    assert admit(r, order(1000, side=SELL, sym="XYZ", price=50.0))   # +50,000 = 100,000
    assert r.exposure()[0] == pytest.approx(100_000.0)
    assert denied(r.check(order(1, sym="ABC"), T0), Deny.GROSS_EXPOSURE)
    # a sell against the working buy adds nothing to the worst case: it passes
    assert r.check(order(500, side=SELL, sym="ABC"), T0)

    r = risk(max_net_exposure=60_000.0)
    r.on_quote("XYZ", 49.0, 51.0, T0)
    assert admit(r, order(600, sym="ABC"))                    # net long 60,000
    assert denied(r.check(order(1, sym="ABC"), T0), Deny.NET_EXPOSURE)
    assert admit(r, order(1000, side=SELL, sym="XYZ", price=50.0))
    # worst case, the buys fill and the sells do not: a working short offsets nothing
    assert denied(r.check(order(1, sym="ABC"), T0), Deny.NET_EXPOSURE)
    r.on_fill("XYZ", SELL, 1000, 50.0)
    r.on_open("XYZ", SELL, -1000, -1)                         # a filled short does offset
    assert r.exposure()[1] == pytest.approx(50_000.0)
    assert r.check(order(1, sym="ABC"), T0)


def test_net_exposure_passes_an_order_that_lowers_it():
    r = risk(max_net_exposure=50_000.0)
    r.set_position("ABC", 800, 100.0)                         # 80,000 already: over the limit
    assert denied(r.check(order(1), T0), Deny.NET_EXPOSURE)
    assert r.check(order(100, side=SELL), T0)


def test_max_open_orders():
    r = risk(max_open_orders=2)
    assert admit(r, order(1)) and admit(r, order(2))
    assert denied(r.check(order(3), T0), Deny.MAX_OPEN_ORDERS)
    r.on_open("ABC", BUY, -1, -1)                             # one is done
    assert r.check(order(4), T0)


def test_order_rate_is_a_sliding_window_and_denials_do_not_queue():
    r = risk(max_orders=3, rate_window_ms=1000.0)
    for i in range(3):
        assert r.check(order(i + 1), T0 + i * MS)
    assert denied(r.check(order(10), T0 + 500 * MS), Deny.ORDER_RATE)
    assert denied(r.check(order(11), T0 + 1000 * MS - 1), Deny.ORDER_RATE)   # first still inside
    assert r.check(order(12), T0 + 1000 * MS)                                # the first left
    assert denied(r.check(order(13), T0 + 1000 * MS + 1), Deny.ORDER_RATE)


def test_message_rate_counts_cancels_but_never_blocks_them():
    r = risk(max_messages=3, rate_window_ms=1000.0)
    cancel = CancelOrder("c", "o", "ABC", BUY, 1)
    assert r.check(order(1), T0)
    assert r.check_cancel(cancel, T0) and r.check_cancel(cancel, T0)
    assert denied(r.check(order(2), T0), Deny.MESSAGE_RATE)
    for _ in range(10):
        assert r.check_cancel(cancel, T0)                     # over the limit, still admitted
    assert r.check(order(3), T0 + 1001 * MS)


def test_daily_loss_lets_only_reducing_orders_through():
    r = risk(max_daily_loss=1_000.0)
    r.on_fill("ABC", BUY, 100, 100.0)
    r.on_quote("ABC", 90.0, 92.0, T0 + 1)                     # long marked at the bid: -1,000
    assert r.pnl() == (0.0, -1000.0)
    assert r.check(order(1, price=91.0), T0 + 1)              # a loss of exactly the limit
    r.on_quote("ABC", 89.99, 92.0, T0 + 2)
    assert denied(r.check(order(1, price=91.0), T0 + 2), Deny.DAILY_LOSS)
    assert r.check(order(100, side=SELL, price=90.0), T0 + 2)  # reduces: passes
    assert denied(r.check(order(101, side=SELL, price=90.0), T0 + 2), Deny.DAILY_LOSS)


def test_duplicate_orders_within_the_window():
    r = risk(duplicate_window_ms=500.0)
    assert r.check(order(100, price=100.0), T0)
    assert denied(r.check(order(100, price=100.0), T0 + 499 * MS), Deny.DUPLICATE_ORDER)
    assert r.check(order(100, price=100.01), T0 + 1 * MS)     # another price
    assert r.check(order(100, side=SELL, price=100.0), T0 + 1 * MS)
    assert r.check(order(100, price=100.0), T0 + 500 * MS)    # outside the window


def test_restricted_symbols():
    r = risk(restricted=["ABC"])
    assert denied(r.check(order(), T0), Deny.RESTRICTED)
    r.on_quote("XYZ", 9.0, 11.0, T0)
    assert r.check(order(sym="XYZ", price=10.0), T0)


def test_order_to_trade_ratio():
    r = risk(max_order_to_trade=3.0, order_to_trade_min_orders=5)
    for i in range(4):
        assert r.check(order(i + 1), T0)                      # under the minimum count
    assert denied(r.check(order(50), T0), Deny.ORDER_TO_TRADE)   # 5 orders, 0 fills
    r.on_fill("ABC", BUY, 1, 100.0)
    r.on_fill("ABC", SELL, 1, 100.0)                          # 2 fills: up to 6 orders
    assert r.check(order(51), T0) and r.check(order(52), T0)
    assert denied(r.check(order(53), T0), Deny.ORDER_TO_TRADE)


def test_bad_orders():
    r = risk()
    assert denied(r.check(order(0), T0), Deny.BAD_ORDER)
    assert denied(r.check(order(price=None), T0), Deny.BAD_ORDER)
    assert denied(r.check(order(price=float("nan")), T0), Deny.BAD_ORDER)
    assert r.check(order(np.int64(5)), T0)


def test_per_sym_overrides_beat_globals():
    r = risk(max_order_qty=100, max_position=1000,
             syms={"XYZ": SymLimits(max_order_qty=1000, max_position=10), "QQQ": SymLimits(max_order_qty=5)})
    r.on_quote("XYZ", 9.0, 11.0, T0)
    r.on_quote("QQQ", 9.0, 11.0, T0)
    assert denied(r.check(order(101), T0), Deny.MAX_ORDER_QTY)
    assert denied(r.check(order(11, sym="XYZ", price=10.0), T0), Deny.POSITION_LIMIT)   # looser qty
    assert r.check(order(10, sym="XYZ", price=10.0), T0)
    assert denied(r.check(order(6, sym="QQQ", price=10.0), T0), Deny.MAX_ORDER_QTY)    # tighter qty
    assert r.check(order(5, sym="QQQ", price=10.0), T0)


def test_halted_admits_only_cancels():
    r = risk(max_messages=1)
    r.set_state(TradingState.HALTED, "kill switch")
    d = r.check(order(), T0)
    assert denied(d, Deny.HALTED) and "kill switch" in d.text
    o = Orders()
    o.new(order(), "XA", T0)
    live = next(iter(o))
    rep = ReplaceOrder("r", live.cl_ord_id, "ABC", BUY, 50, 100.0)
    assert denied(r.check_replace(rep, live, T0), Deny.HALTED)
    for _ in range(5):
        assert r.check_cancel(CancelOrder("c", live.cl_ord_id, "ABC", BUY, 100), T0)
    r.set_state(TradingState.ACTIVE)
    assert r.state is TradingState.ACTIVE


def test_reducing_never_lets_two_sells_flip_a_long():
    r = risk()
    r.set_position("ABC", 100, 100.0)
    r.set_state(TradingState.REDUCING, "loss")
    assert denied(r.check(order(1, side=BUY), T0), Deny.REDUCING)
    assert denied(r.check(order(101, side=SELL), T0), Deny.REDUCING)    # would go past flat
    assert admit(r, order(60, side=SELL))
    assert denied(r.check(order(60, side=SELL), T0), Deny.REDUCING)     # together: -20
    assert admit(r, order(40, side=SELL))
    assert denied(r.check(order(1, side=SELL), T0), Deny.REDUCING)
    flat = risk()
    flat.set_state(TradingState.REDUCING)
    assert denied(flat.check(order(1, side=SELL), T0), Deny.REDUCING)  # flat: nothing reduces


@settings(max_examples=300)
@given(st.integers(-500, 500),
       st.lists(st.tuples(st.sampled_from(["order", "fill", "cancel"]), st.sampled_from([BUY, SELL]),
                          st.integers(1, 300), st.integers(0, 10**6)), max_size=40))
def test_reducing_never_crosses_flat(start, actions):
    r = risk()
    r.set_position("ABC", start, 100.0)
    r.set_state(TradingState.REDUCING)
    working: list[list] = []                  # [side, leaves]
    pos = start
    for kind, side, qty, pick in actions:
        if kind == "order":
            if admit(r, order(qty, side=side)):
                assert (side is SELL and pos > 0) or (side is BUY and pos < 0)
                working.append([side, qty])
        elif working:
            w = working[pick % len(working)]
            if kind == "fill":
                q = 1 + pick % w[1]
                r.on_fill("ABC", w[0], q, 100.0)
                r.on_open("ABC", w[0], -q, 0)
                pos += w[0].sign * q
                w[1] -= q
            else:
                r.on_open("ABC", w[0], -w[1], -1)
                w[1] = 0
            if not w[1]:
                working.remove(w)
        # worst case: every working order fills; the position never crosses flat and never grows
        worst = pos + sum(s.sign * q for s, q in working)
        assert (start >= 0 and 0 <= worst <= pos) or (start <= 0 and pos <= worst <= 0)
        assert abs(pos) <= abs(start)


def test_replace_checks_only_what_it_adds():
    r = risk(max_order_qty=500, max_position=300)
    orders = Orders()
    o = order(200)
    assert r.check(o, T0)
    r.on_change(orders.new(o, "XA", T0))
    live = orders.get(o.cl_ord_id)
    assert r.check_replace(ReplaceOrder("r1", o.cl_ord_id, "ABC", BUY, 300, 100.0), live, T0)
    assert denied(r.check_replace(ReplaceOrder("r2", o.cl_ord_id, "ABC", BUY, 301, 100.0), live, T0),
                  Deny.POSITION_LIMIT)
    r.set_position("ABC", 250, 100.0)                         # now 250 + 200 open > 300
    assert r.check_replace(ReplaceOrder("r3", o.cl_ord_id, "ABC", BUY, 100, 100.0), live, T0)
    assert denied(r.check_replace(ReplaceOrder("r4", o.cl_ord_id, "ABC", BUY, 501, 100.0), live, T0),
                  Deny.MAX_ORDER_QTY)
    r.set_state(TradingState.REDUCING)
    assert r.check_replace(ReplaceOrder("r5", o.cl_ord_id, "ABC", BUY, 100, 100.0), live, T0)  # smaller
    assert denied(r.check_replace(ReplaceOrder("r6", o.cl_ord_id, "ABC", BUY, 200, 100.5), live, T0),
                  Deny.REDUCING)                             # a buy on a long: no price change


def test_quote_batches_keep_each_syms_newest_valid_row():
    r = Risk(RiskSettings(**OFF))
    syms = np.array(["A", "B", "A", "C", "B", "A"], dtype=object)
    bids = np.array([1.0, 2.0, 1.5, np.nan, 2.5, 1.1])
    asks = bids + 0.1
    times = np.array([10, 11, 30, 13, 14, 20])                # A's newest is row 2, not the last
    assert r.on_quotes(syms, bids, asks, times) == 2
    assert r.counts["bad_quote"] == 1
    r.on_fill("A", BUY, 1, 1.0)
    r.on_fill("B", SELL, 1, 3.0)
    assert r.position("A").unrealized == pytest.approx(0.5)   # long at the bid 1.5
    assert r.position("B").unrealized == pytest.approx(0.4)   # short at the ask 2.6
    # the TP's batches: dictionary-encoded sym, timestamp time, and a null sym
    batch = pa.RecordBatch.from_pydict({
        "time": pa.array([40, 41, 42], pa.timestamp("ns")),
        "sym": pa.array(["A", None, "B"]).dictionary_encode(),
        "bid": [2.0, 9.0, 3.0], "ask": [2.2, 9.2, 3.2], "bsize": [1, 1, 1], "asize": [1, 1, 1]})
    assert r.on_quote_batch(batch) == 2 and r.counts["bad_quote"] == 2
    assert r.position("A").unrealized == pytest.approx(1.0)
    plain = pa.RecordBatch.from_pydict({"time": [50], "sym": ["C"], "bid": [5.0], "ask": [5.5]})
    assert r.on_quote_batch(plain) == 1


def test_positions_and_pnl_follow_fills():
    r = risk()
    r.on_fill("ABC", BUY, 100, 100.0)
    r.on_fill("ABC", BUY, 100, 102.0)
    assert r.position("ABC")[1:3] == (200, 101.0)
    r.on_fill("ABC", SELL, 300, 103.0, fee=5.0)               # close 200 (+400), open short 100 at 103
    p = r.position("ABC")
    assert (p.qty, p.avg_cost, p.realized) == (-100, 103.0, 395.0)
    assert p.unrealized == pytest.approx(-100 * (101.0 - 103.0))   # short marked at the ask
    assert r.pnl()[0] == 395.0 and [q.sym for q in r.positions()] == ["ABC"]


def test_risk_follows_the_order_tracker():
    r = risk(max_position=150, max_open_orders=10)
    orders = Orders()
    a = order(100)
    assert r.check(a, T0)
    r.on_change(orders.new(a, "XA", T0))
    assert r.open_qty("ABC", BUY) == 100 and r.open_orders == 1
    assert denied(r.check(order(51), T0), Deny.POSITION_LIMIT)
    fill = ExecReport(a.cl_ord_id, "V1", "e1", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, "ABC", BUY,
                      100, last_qty=40, last_px=100.0, venue="XA")
    r.on_change(orders.apply(fill))
    assert r.position("ABC").qty == 40 and r.open_qty("ABC", BUY) == 60
    r.on_change(orders.apply(fill))                           # a duplicate moves nothing
    assert r.position("ABC").qty == 40 and r.open_qty("ABC", BUY) == 60
    done = ExecReport(a.cl_ord_id, "V1", "e2", ExecType.CANCELED, OrdStatus.CANCELED, "ABC", BUY, 100,
                      cum_qty=40, venue="XA")
    r.on_change(orders.apply(done))
    assert r.open_qty("ABC", BUY) == 0 and r.open_orders == 0
    assert r.check(order(110), T0) and denied(r.check(order(111), T0), Deny.POSITION_LIMIT)
