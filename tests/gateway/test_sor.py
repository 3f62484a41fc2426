"""Smart order routing: venue choice by price after fees, splitting by displayed size, the
remainder by time in force, FOK, and a parent's state aggregated from its children."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.model import ExecReport, ExecType, NewOrder, OrdStatus, OrdType, Side, TimeInForce
from gateway.orders import Orders
from gateway.sor import VenueQuote, effective_price, parent_state, route

BUY, SELL = Side.BUY, Side.SELL
DAY, IOC, FOK = TimeInForce.DAY, TimeInForce.IOC, TimeInForce.FOK


def parent(qty=100, side=BUY, price=10.05, tif=DAY, ord_type=OrdType.LIMIT):
    return NewOrder("P1", "ABC", side, qty, ord_type, price, tif, "acct", 7)


def alloc(routing):
    return [(c.venue, c.order.qty) for c in routing.children]


def test_effective_price_includes_fees_both_ways():
    q = VenueQuote(10.0, 10.02, 100, 100, fee_per_share=0.003, fee_bps=1.0)
    assert effective_price(BUY, 10.02, q) == pytest.approx(10.02 + 0.003 + 10.02 * 1e-4)
    assert effective_price(SELL, 10.0, q) == pytest.approx(10.0 - 0.003 - 10.0 * 1e-4)


def test_the_better_price_after_fees_wins():
    quotes = {"A": VenueQuote(9.99, 10.00, 500, 500, fee_per_share=0.03),   # 10.03 all in
              "B": VenueQuote(9.99, 10.01, 500, 500, fee_per_share=0.001)}  # 10.011 all in
    r = route(parent(), quotes)
    assert alloc(r) == [("B", 100)] and r.unrouted == 0
    # without fees A's raw price wins
    r = route(parent(), {"A": VenueQuote(9.99, 10.00, 500, 500), "B": VenueQuote(9.99, 10.01, 500, 500)})
    assert alloc(r) == [("A", 100)]
    # selling: the highest bid after fees (bps on A make it worse)
    quotes = {"A": VenueQuote(10.02, 10.05, 500, 500, fee_bps=30.0), "B": VenueQuote(10.01, 10.05, 500, 500)}
    assert alloc(route(parent(side=SELL, price=9.9), quotes)) == [("B", 100)]


def test_split_by_displayed_size_best_first_and_rest_at_the_best_venue():
    quotes = {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.00, 50, 50),
              "C": VenueQuote(9.97, 10.03, 40, 40)}
    r = route(parent(200, price=10.02), quotes)               # C's 10.03 is beyond the limit
    assert alloc(r) == [("B", 50 + 120), ("A", 30)] and r.unrouted == 0 and "rests at B" in r.text
    for c in r.children:
        assert c.parent_id == "P1" and c.order.price == 10.02 and c.order.tif is DAY
        assert (c.order.sym, c.order.side, c.order.account, c.order.time) == ("ABC", BUY, "acct", 7)
    assert [c.order.cl_ord_id for c in r.children] == ["P1.1", "P1.2"]


def test_ioc_remainder_is_not_sent():
    quotes = {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.00, 50, 50)}
    r = route(parent(200, tif=IOC), quotes)
    assert alloc(r) == [("B", 50), ("A", 30)] and r.unrouted == 120
    assert all(c.order.tif is IOC for c in r.children)


def test_fok_routes_only_when_displayed_size_covers_it():
    quotes = {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.00, 50, 50),
              "C": VenueQuote(9.97, 10.10, 500, 500)}                # beyond the limit: not counted
    r = route(parent(100, tif=FOK), quotes)
    assert r.children == () and r.unrouted == 100 and "80 displayed" in r.text
    r = route(parent(80, tif=FOK), quotes)
    assert alloc(r) == [("B", 50), ("A", 30)] and all(c.order.tif is FOK for c in r.children)
    r = route(parent(40, tif=FOK), quotes)                     # B alone covers it: one venue
    assert alloc(r) == [("B", 40)]
    r = route(parent(45, tif=FOK),
              {"A": VenueQuote(9.99, 10.00, 30, 30), "B": VenueQuote(9.98, 10.01, 50, 50)})
    assert alloc(r) == [("B", 45)]                             # whole at one venue beats the split


def test_market_parent():
    quotes = {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.50, 50, 50)}
    r = route(parent(100, ord_type=OrdType.MARKET, price=None), quotes)
    assert alloc(r) == [("A", 30 + 20), ("B", 50)]
    assert all(c.order.ord_type is OrdType.MARKET and c.order.price is None for c in r.children)
    r = route(parent(100, ord_type=OrdType.MARKET, price=None, tif=IOC), quotes)
    assert alloc(r) == [("A", 30), ("B", 50)] and r.unrouted == 20


def test_nothing_displayed_rests_whole_at_the_cheapest_venue():
    quotes = {"A": VenueQuote(0, 0, 0, 0, fee_per_share=0.002),
              "B": VenueQuote(0, 0, 0, 0, fee_per_share=0.001)}
    assert alloc(route(parent(), quotes)) == [("B", 100)]
    assert route(parent(tif=IOC), quotes).unrouted == 100
    assert route(parent(), {}).unrouted == 100
    assert route(parent(qty=0), quotes).children == ()


def test_custom_child_ids():
    ids = iter(["x", "y"])
    r = route(parent(60), {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.00, 30, 30)},
              next_id=lambda: next(ids))
    assert [c.order.cl_ord_id for c in r.children] == ["x", "y"]


@settings(max_examples=300)
@given(st.integers(1, 1000), st.sampled_from([BUY, SELL]), st.sampled_from([DAY, IOC, FOK]),
       st.lists(st.tuples(st.integers(990, 1010), st.integers(0, 300), st.integers(0, 5)),
                min_size=1, max_size=5))
def test_routing_never_over_or_under_allocates(qty, side, tif, venues):
    quotes = {f"V{i}": VenueQuote(px / 100 - 0.01, px / 100, size, size, fee_per_share=fee / 1000)
              for i, (px, size, fee) in enumerate(venues)}
    r = route(parent(qty, side=side, price=10.0, tif=tif), quotes)
    sent = sum(c.order.qty for c in r.children)
    assert sent + r.unrouted == qty and all(c.order.qty > 0 for c in r.children)
    assert len({c.order.cl_ord_id for c in r.children}) == len(r.children)
    if tif is not DAY:
        # what is sent never exceeds what is displayed at acceptable prices at each venue
        for c in r.children:
            q = quotes[c.venue]
            assert c.order.qty <= (q.ask_size if side is BUY else q.bid_size)
    if tif is FOK:
        assert sent in (0, qty)


def test_parent_state_from_children():
    orders = Orders()
    p = parent(100)
    r = route(p, {"A": VenueQuote(9.99, 10.01, 30, 30), "B": VenueQuote(9.98, 10.00, 50, 50)})
    for c in r.children:
        orders.new(c.order, c.venue, 1, parent_id=c.parent_id)
    assert parent_state(p, orders.children("P1")).status is OrdStatus.PENDING_NEW
    kids = {c.venue: c.order.cl_ord_id for c in r.children}

    def report(venue, exec_type, last_qty=0, px=0.0, n=[0]):
        n[0] += 1
        o = orders.live(kids[venue])
        return orders.apply(ExecReport(o.cl_ord_id, "V", f"e{n[0]}", exec_type, OrdStatus.NEW, "ABC", BUY,
                                       o.order_qty, last_qty, px, venue=venue))
    report("B", ExecType.NEW)
    report("A", ExecType.NEW)
    assert parent_state(p, orders.children("P1")).status is OrdStatus.NEW
    report("B", ExecType.TRADE, 70, 10.00)
    s = parent_state(p, orders.children("P1"))
    assert (s.status, s.filled, s.working_qty) == (OrdStatus.PARTIALLY_FILLED, 70, 30)
    report("A", ExecType.TRADE, 30, 10.01)
    s = parent_state(p, orders.children("P1"))
    assert (s.status, s.filled, s.working_qty) == (OrdStatus.FILLED, 100, 0)
    assert s.avg_px == pytest.approx((70 * 10.00 + 30 * 10.01) / 100)


def test_parent_state_when_children_end_unfilled():
    orders = Orders()
    p = parent(100, tif=IOC)
    r = route(p, {"A": VenueQuote(9.99, 10.01, 30, 30)})
    c = r.children[0]
    orders.new(c.order, "A", 1, parent_id="P1")
    orders.apply(ExecReport(c.order.cl_ord_id, "V", "e1", ExecType.TRADE, OrdStatus.PARTIALLY_FILLED, "ABC",
                            BUY, 30, 10, 10.01, venue="A"))
    orders.apply(ExecReport(c.order.cl_ord_id, "V", "e2", ExecType.EXPIRED, OrdStatus.EXPIRED, "ABC", BUY, 30,
                            venue="A"))
    s = parent_state(p, orders.children("P1"))
    assert (s.status, s.filled) == (OrdStatus.EXPIRED, 10)
    assert parent_state(parent(tif=DAY), orders.children("P1")).status is OrdStatus.CANCELED
    assert parent_state(p, []).status is OrdStatus.REJECTED
