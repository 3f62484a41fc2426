"""The order state machine and tracker: every lifecycle a venue can put an order through, the
races users rely on (duplicates, fills after cancel, overfills, out-of-order reports), and a
property test over random report sequences."""
from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.model import (CancelOrder, CancelReject, ExecReport, ExecType, NewOrder, OrdStatus,
                           OrdType, ReplaceOrder, Side, TimeInForce)
from gateway.orders import TRANSITIONS, WORKING, Change, Input, Orders, Outcome
from gateway.risk import Risk, RiskSettings

S, E = OrdStatus, ExecType
VENUE = "XA"


class Reports:
    """Builds the ExecReports and CancelRejects a venue would send (fresh exec ids)."""

    def __init__(self, venue: str = VENUE):
        self.venue, self.ids = venue, itertools.count(1)

    def __call__(self, cl_ord_id, exec_type, status, *, qty=100, last_qty=0, last_px=0.0,
                 orig="", exec_id=None, price=None, fee=0.0, sym="ABC", side=Side.BUY):
        return ExecReport(cl_ord_id, "V" + cl_ord_id, exec_id or f"e{next(self.ids)}", exec_type,
                          status, sym, side, qty, last_qty, last_px, orig_cl_ord_id=orig,
                          price=price, venue=self.venue, fee=fee, time=next(self.ids))

    def reject(self, cl_ord_id, orig, response_to="1", status=S.NEW):
        return CancelReject(cl_ord_id, orig, "V" + orig, status, response_to, 0, "too late", self.venue)


def new(cl_ord_id="o1", qty=100, side=Side.BUY, price=10.0, tif=TimeInForce.DAY,
        ord_type=OrdType.LIMIT, sym="ABC", account="acct"):
    return NewOrder(cl_ord_id, sym, side, qty, ord_type, price, tif, account)


@pytest.fixture
def book():
    return Orders(), Reports()


def sent(orders, order=None, venue=VENUE, **kw):
    order = order or new()
    ch = orders.new(order, venue, 1, **kw)
    assert ch.outcome is Outcome.APPLIED and ch.status is S.PENDING_NEW
    return ch.order


def test_new_then_fill(book):
    orders, rep = book
    o = sent(orders)
    assert orders.open_qty("ABC", Side.BUY) == 100 and orders.working() == [o]
    ch = orders.apply(rep("o1", E.NEW, S.NEW))
    assert (ch.prev, ch.status, ch.outcome) == (S.PENDING_NEW, S.NEW, Outcome.APPLIED)
    ch = orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=100, last_px=10.0))
    assert ch.status is S.FILLED and (ch.fill_qty, ch.fill_px) == (100, 10.0)
    assert (o.cum_qty, o.leaves_qty, o.avg_px) == (100, 0, 10.0)
    assert ch.open_qty == -100 and ch.open_orders == -1
    assert orders.open_qty("ABC", Side.BUY) == 0 and orders.working() == []
    assert orders.position("acct", "ABC") == 100 and ch.position_delta == 100


def test_partial_then_fill_averages_the_price(book):
    orders, rep = book
    o = sent(orders, new(side=Side.SELL))
    orders.apply(rep("o1", E.NEW, S.NEW, side=Side.SELL))
    ch = orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=40, last_px=10.0, side=Side.SELL))
    assert ch.status is S.PARTIALLY_FILLED and (o.cum_qty, o.leaves_qty) == (40, 60)
    assert orders.open_qty("ABC", Side.SELL) == 60
    ch = orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=60, last_px=10.5, side=Side.SELL))
    assert ch.status is S.FILLED and o.cum_qty == 100
    assert o.avg_px == pytest.approx(10.3)
    assert orders.position("acct", "ABC") == -100


def test_cancel(book):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    ch = orders.cancel_sent(CancelOrder("c1", "o1", "ABC", Side.BUY, 100), 5)
    assert ch.status is S.PENDING_CANCEL and o.request.cl_ord_id == "c1"
    assert orders.open_qty("ABC", Side.BUY) == 100          # it can still fill until the ack
    assert orders.apply(rep("c1", E.PENDING_CANCEL, S.PENDING_CANCEL, orig="o1")).outcome is Outcome.UNCHANGED
    ch = orders.apply(rep("c1", E.CANCELED, S.CANCELED, orig="o1"))
    assert (ch.prev, ch.status) == (S.PENDING_CANCEL, S.CANCELED)
    assert ch.open_qty == -100 and ch.open_orders == -1 and o.leaves_qty == 0
    assert orders.working() == []


def test_cancel_before_the_ack_and_a_venue_cancel_without_request(book):
    orders, rep = book
    sent(orders)
    assert orders.cancel_sent(CancelOrder("c1", "o1", "ABC", Side.BUY, 100), 2).status is S.PENDING_CANCEL
    assert orders.apply(rep("o1", E.NEW, S.NEW)).status is S.PENDING_CANCEL   # ack arrives late
    assert orders.apply(rep("c1", E.CANCELED, S.CANCELED, orig="o1")).status is S.CANCELED
    sent(orders, new("o2"))
    orders.apply(rep("o2", E.NEW, S.NEW))
    assert orders.apply(rep("o2", E.CANCELED, S.CANCELED)).status is S.CANCELED   # unsolicited


def test_replace(book):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    ch = orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 150, 10.1), 5)
    assert ch.status is S.PENDING_REPLACE
    assert ch.open_qty == 50 and orders.open_qty("ABC", Side.BUY) == 150   # worst case: the larger
    orders.apply(rep("o2", E.PENDING_REPLACE, S.PENDING_REPLACE, orig="o1", qty=100))
    ch = orders.apply(rep("o2", E.REPLACED, S.NEW, orig="o1", qty=150, price=10.1))
    new_o = orders.get("o2")
    assert ch.order is new_o and ch.replaced is o and ch.prev is S.PENDING_REPLACE and ch.status is S.NEW
    assert o.status is S.REPLACED and o.replaced_by == "o2" and o.leaves_qty == 0
    assert (new_o.order_qty, new_o.price, new_o.orig_cl_ord_id, new_o.account) == (150, 10.1, "o1", "acct")
    assert orders.live("o1") is new_o and orders.working() == [new_o]
    assert ch.open_orders == 0 and orders.open_qty("ABC", Side.BUY) == 150


def test_replace_of_a_partially_filled_order(book):
    orders, rep = book
    sent(orders, parent_id="P", strategy="pairs")
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=40, last_px=10.0))
    assert orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 30, 10.0), 5).outcome is Outcome.BAD
    ch = orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 80, 10.2), 5)
    assert ch.open_qty == 0 and orders.open_qty("ABC", Side.BUY) == 60   # shrink: old qty counts
    ch = orders.apply(rep("o2", E.REPLACED, S.PARTIALLY_FILLED, orig="o1", qty=80, price=10.2))
    n = ch.order
    assert ch.status is S.PARTIALLY_FILLED and (n.cum_qty, n.leaves_qty, n.avg_px) == (40, 40, 10.0)
    assert (n.parent_id, n.strategy) == ("P", "pairs") and orders.open_qty("ABC", Side.BUY) == 40
    ch = orders.apply(rep("o2", E.TRADE, S.FILLED, last_qty=40, last_px=10.2, qty=80))
    assert ch.status is S.FILLED and n.avg_px == pytest.approx(10.1)
    assert orders.children("P") == [n] and orders.position("acct", "ABC") == 80


def test_a_fill_on_the_replacement_before_its_ack_completes_the_replace(book):
    orders, rep = book
    sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 150, 10.1), 5)
    ch = orders.apply(rep("o2", E.TRADE, S.PARTIALLY_FILLED, qty=150, last_qty=120, last_px=10.1, orig="o1"))
    assert ch.outcome is Outcome.APPLIED and ch.replaced is orders.get("o1")
    assert orders.get("o1").status is S.REPLACED and ch.order.cl_ord_id == "o2"
    assert ch.status is S.PARTIALLY_FILLED and ch.order.cum_qty == 120   # not an overfill of 100
    assert orders.counts["implied_replace"] == 1
    late = orders.apply(rep("o2", E.REPLACED, S.PARTIALLY_FILLED, orig="o1", qty=150))
    assert late.outcome is Outcome.UNCHANGED and orders.open_qty("ABC", Side.BUY) == 30


def test_a_fill_named_with_a_replaced_version_goes_to_the_live_one(book):
    orders, rep = book
    sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 150, 10.1), 5)
    orders.apply(rep("o2", E.REPLACED, S.NEW, orig="o1", qty=150))
    ch = orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=10, last_px=10.0))
    assert ch.order.cl_ord_id == "o2" and ch.order.cum_qty == 10 and orders.get("o1").cum_qty == 0


def test_venue_reject(book):
    orders, rep = book
    o = sent(orders)
    ch = orders.apply(rep("o1", E.REJECTED, S.REJECTED))
    assert ch.status is S.REJECTED and ch.open_qty == -100 and ch.open_orders == -1
    assert o.leaves_qty == 0 and orders.working() == []


def test_risk_denial_is_recorded_and_never_open(book):
    orders, _ = book
    ch = orders.deny(new(), VENUE, "max_order_qty: too big", 1)
    assert ch.status is S.REJECTED and ch.order.text == "max_order_qty: too big"
    assert ch.open_qty == 0 and ch.open_orders == 0 and orders.working() == []
    assert orders.new(new(), VENUE, 2).outcome is Outcome.INVALID           # the id is taken


@pytest.mark.parametrize("ending", [(E.EXPIRED, S.EXPIRED), (E.CANCELED, S.CANCELED)])
def test_ioc_partial_then_the_rest_expires_or_is_canceled(book, ending):
    orders, rep = book
    o = sent(orders, new(tif=TimeInForce.IOC))
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=30, last_px=10.0))
    ch = orders.apply(rep("o1", ending[0], ending[1]))
    assert ch.status is ending[1] and (o.cum_qty, o.leaves_qty) == (30, 0)
    assert ch.open_qty == -70 and orders.open_qty("ABC", Side.BUY) == 0


def test_fok_killed_or_filled(book):
    orders, rep = book
    killed = sent(orders, new("k", tif=TimeInForce.FOK))
    assert orders.apply(rep("k", E.EXPIRED, S.EXPIRED)).status is S.EXPIRED   # no ack first
    assert killed.cum_qty == 0
    filled = sent(orders, new("f", tif=TimeInForce.FOK))
    assert orders.apply(rep("f", E.TRADE, S.FILLED, last_qty=100, last_px=9.9)).status is S.FILLED
    assert filled.cum_qty == 100


def test_market_order(book):
    orders, rep = book
    o = sent(orders, new(ord_type=OrdType.MARKET, price=None))
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=50, last_px=10.01))
    assert orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=50, last_px=10.03)).status is S.FILLED
    assert o.avg_px == pytest.approx(10.02) and o.price is None


def test_cancel_reject_resumes_the_working_status(book):
    orders, rep = book
    o = sent(orders)
    orders.cancel_sent(CancelOrder("c1", "o1", "ABC", Side.BUY, 100), 2)
    ch = orders.apply(rep.reject("c1", "o1", status=S.PENDING_NEW))
    assert ch.status is S.PENDING_NEW and o.request is None              # never acknowledged
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.cancel_sent(CancelOrder("c2", "o1", "ABC", Side.BUY, 100), 3)
    assert orders.apply(rep.reject("c2", "o1")).status is S.NEW
    orders.cancel_sent(CancelOrder("c3", "o1", "ABC", Side.BUY, 100), 4)
    orders.apply(rep("c3", E.TRADE, S.PENDING_CANCEL, last_qty=10, last_px=10.0, orig="o1"))
    assert o.status is S.PENDING_CANCEL and o.cum_qty == 10              # fills while pending
    assert orders.apply(rep.reject("c3", "o1")).status is S.PARTIALLY_FILLED
    # a reject of an old request while a newer one is pending changes nothing
    orders.cancel_sent(CancelOrder("c4", "o1", "ABC", Side.BUY, 100), 5)
    assert orders.apply(rep.reject("c3", "o1")).outcome is Outcome.UNCHANGED
    assert o.status is S.PENDING_CANCEL


def test_replace_reject_releases_the_reserved_quantity(book):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.replace_sent(ReplaceOrder("o2", "o1", "ABC", Side.BUY, 300, 10.0), 2)
    assert orders.open_qty("ABC", Side.BUY) == 300
    ch = orders.apply(rep.reject("o2", "o1", response_to="2"))
    assert ch.status is S.NEW and ch.open_qty == -200 and orders.open_qty("ABC", Side.BUY) == 100
    assert o.order_qty == 100 and "o2" not in orders


def test_duplicate_report_is_ignored_and_counted(book):
    orders, rep = book
    o = sent(orders)
    fill = rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=30, last_px=10.0)
    assert orders.apply(fill).outcome is Outcome.APPLIED
    ch = orders.apply(fill)
    assert ch.outcome is Outcome.DUPLICATE and ch.fill_qty == 0 and ch.open_qty == 0
    assert o.cum_qty == 30 and orders.counts["duplicate"] == 1
    assert orders.position("acct", "ABC") == 30


def test_fill_after_cancel_ack_is_applied(book, caplog):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.NEW, S.NEW))
    orders.cancel_sent(CancelOrder("c1", "o1", "ABC", Side.BUY, 100), 2)
    orders.apply(rep("c1", E.CANCELED, S.CANCELED, orig="o1"))
    ch = orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=25, last_px=10.0))
    assert ch.outcome is Outcome.APPLIED and ch.fill_qty == 25 and not ch.alarm
    assert o.status is S.CANCELED and o.cum_qty == 25 and o.leaves_qty == 0
    assert ch.open_qty == 0 and orders.position("acct", "ABC") == 25
    assert orders.counts["late_fill"] == 1


def test_overfill_is_refused_loudly_and_changes_nothing(book, caplog):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=80, last_px=10.0))
    with caplog.at_level(logging.ERROR, logger="gateway.orders"):
        ch = orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=30, last_px=10.0))
    assert ch.outcome is Outcome.OVERFILL and ch.alarm and ch.fill_qty == 0
    assert (o.status, o.cum_qty) == (S.PARTIALLY_FILLED, 80)
    assert orders.counts["overfill"] == 1 and orders.position("acct", "ABC") == 80
    assert any(r.levelno == logging.ERROR and "overfill" in r.getMessage() for r in caplog.records)


def test_unknown_order_is_counted(book):
    orders, rep = book
    ch = orders.apply(rep("nope", E.TRADE, S.FILLED, last_qty=1, last_px=1.0))
    assert ch.outcome is Outcome.UNKNOWN and ch.order is None
    assert orders.apply(rep.reject("nope2", "nope")).outcome is Outcome.UNKNOWN
    assert orders.counts["unknown"] == 2


def test_trade_before_the_new_ack(book):
    orders, rep = book
    o = sent(orders)
    ch = orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=10, last_px=10.0))
    assert ch.status is S.PARTIALLY_FILLED
    late = orders.apply(rep("o1", E.NEW, S.NEW))
    assert late.outcome is Outcome.UNCHANGED and o.status is S.PARTIALLY_FILLED


def test_out_of_order_fills_add_up(book):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=60, last_px=11.0))      # the second fill first
    orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=40, last_px=10.0))
    assert o.status is S.FILLED and o.avg_px == pytest.approx(10.6)


def test_impossible_events_are_refused(book):
    orders, rep = book
    o = sent(orders)
    orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=100, last_px=10.0))
    ch = orders.apply(rep("o1", E.CANCELED, S.CANCELED))
    assert ch.outcome is Outcome.INVALID and ch.alarm and o.status is S.FILLED
    assert orders.cancel_sent(CancelOrder("c1", "o1", "ABC", Side.BUY, 100), 2).outcome is Outcome.INVALID
    assert orders.apply(rep.reject("c1", "o1")).outcome is Outcome.UNKNOWN    # never sent
    sent(orders, new("o2"))
    orders.cancel_sent(CancelOrder("c2", "o2", "ABC", Side.BUY, 100), 2)
    second = orders.cancel_sent(CancelOrder("c3", "o2", "ABC", Side.BUY, 100), 3)
    assert second.outcome is Outcome.INVALID and "pending" in second.text
    assert orders.apply(rep("o1", E.TRADE, S.FILLED, last_qty=0, last_px=10.0)).outcome is Outcome.BAD
    other = Reports("XB")("o2", E.NEW, S.NEW)
    assert orders.apply(other).outcome is Outcome.BAD                         # wrong venue


def test_venue_down_cancels_that_venues_orders_and_late_fills_still_count(book):
    orders, rep = book
    a = sent(orders)
    b = sent(orders, new("b1"), venue="XB")
    orders.apply(rep("o1", E.NEW, S.NEW))
    changes = orders.venue_down(VENUE, 9)
    assert [c.order for c in changes] == [a] and a.status is S.CANCELED and b.status is S.PENDING_NEW
    assert orders.working() == [b] and orders.working(venue="XB") == [b]
    ch = orders.apply(rep("o1", E.TRADE, S.PARTIALLY_FILLED, last_qty=5, last_px=10.0))
    assert ch.fill_qty == 5 and a.status is S.CANCELED


def test_working_queries(book):
    orders, _ = book
    sent(orders, new("a", side=Side.BUY, qty=10))
    sent(orders, new("b", side=Side.SELL, qty=20))
    sent(orders, new("c", side=Side.BUY, qty=30, sym="XYZ"), venue="XB")
    assert {o.cl_ord_id for o in orders.working(sym="ABC")} == {"a", "b"}
    assert [o.cl_ord_id for o in orders.working(side=Side.SELL)] == ["b"]
    assert [o.cl_ord_id for o in orders.working(venue="XB")] == ["c"]
    assert orders.open_qty("ABC", Side.BUY) == 10 and orders.open_qty("XYZ", Side.BUY) == 30


def test_the_table_only_names_real_statuses_and_inputs():
    for (st_, inp), nxt in TRANSITIONS.items():
        assert isinstance(st_, OrdStatus) and isinstance(inp, Input)
        assert nxt is WORKING or isinstance(nxt, OrdStatus)
    # nothing leaves a terminal status except to itself
    for (st_, _), nxt in TRANSITIONS.items():
        if st_.terminal:
            assert nxt is st_


# ---- property test -----------------------------------------------------------------------
ALLOWED = {}
for (_st, _inp), _nxt in TRANSITIONS.items():
    ALLOWED.setdefault(_st, set()).update(
        {S.PENDING_NEW, S.NEW, S.PARTIALLY_FILLED} if _nxt is WORKING else {_nxt})
REPORTED = ([E.PENDING_NEW] + [E.NEW] * 3 + [E.TRADE] * 6 + [E.PENDING_CANCEL, E.CANCELED,
            E.PENDING_REPLACE, E.REPLACED, E.REPLACED, E.REJECTED, E.EXPIRED, E.ORDER_STATUS])

_new = st.tuples(st.just("new"), st.integers(0, 3), st.integers(1, 50),
                 st.sampled_from([Side.BUY, Side.SELL]))
_kinds = {
    "new": _new,
    "report": st.tuples(st.just("report"), st.integers(0, 4), st.sampled_from(REPORTED),
                        st.one_of(st.integers(-1, 60), st.just("leaves")),
                        st.sampled_from(["live", "live", "live", "first", "request", "unknown"]),
                        st.integers(1, 60)),
    "cancel": st.tuples(st.just("cancel"), st.integers(0, 3)),
    "replace": st.tuples(st.just("replace"), st.integers(0, 3), st.integers(1, 60)),
    "ack_replace": st.tuples(st.just("report"), st.integers(0, 4), st.just(E.REPLACED), st.just(0),
                             st.just("request"), st.just(1)),
    "again": st.tuples(st.just("again"), st.integers(0, 1000)),
    "reject": st.tuples(st.just("reject"), st.integers(0, 3), st.booleans()),
    "down": st.tuples(st.just("down")),
}
# weighted: mostly venue reports, a disconnect now and then
_weights = ["new"] * 2 + ["report"] * 10 + ["cancel"] * 2 + ["replace"] * 2 + ["ack_replace"] * 2 + [
    "again"] * 2 + ["reject"] * 2 + ["down"]
actions = st.tuples(
    st.lists(_new, min_size=1, max_size=4),
    st.lists(st.sampled_from(_weights).flatmap(_kinds.__getitem__), min_size=3, max_size=80),
).map(lambda t: t[0] + t[1])


@settings(max_examples=600)
@given(actions)
def test_random_report_sequences_keep_every_invariant(acts):
    orders, risk = Orders(), Risk(RiskSettings())
    rep = Reports()
    firsts: list[str] = []
    requests: list[list[str]] = []
    sent_reports: list = []
    fills: dict[str, int] = {}
    ids = itertools.count()
    changes: list[Change] = []

    def record(ch: Change):
        assert isinstance(ch, Change)
        changes.append(ch)
        risk.on_change(ch)
        if ch.fill_qty:
            root = ch.order
            while root.orig_cl_ord_id:
                root = orders.get(root.orig_cl_ord_id)
            fills[root.cl_ord_id] = fills.get(root.cl_ord_id, 0) + ch.fill_qty

    for act in acts:
        kind = act[0]
        if kind == "new":
            cid = f"o{next(ids)}"
            record(orders.new(new(cid, qty=act[2], side=act[3]), VENUE, 1))
            firsts.append(cid)
            requests.append([])
        elif not firsts and kind != "report":
            continue
        elif kind == "cancel":
            i = act[1] % len(firsts)
            o = orders.live(firsts[i])
            cid = f"c{next(ids)}"
            record(orders.cancel_sent(CancelOrder(cid, o.cl_ord_id, o.sym, o.side, o.order_qty), 2))
            requests[i].append(cid)
        elif kind == "replace":
            i = act[1] % len(firsts)
            o = orders.live(firsts[i])
            cid = f"r{next(ids)}"
            record(orders.replace_sent(ReplaceOrder(cid, o.cl_ord_id, o.sym, o.side, act[2], 10.0), 3))
            requests[i].append(cid)
        elif kind == "report":
            _, i, et, q, which, px = act
            if firsts:
                i %= len(firsts)
                o = orders.live(firsts[i])
                cid = {"live": o.cl_ord_id, "first": firsts[i], "unknown": "zz",
                       "request": requests[i][-1] if requests[i] else o.cl_ord_id}[which]
                side, qty = o.side, o.order_qty
                if q == "leaves":
                    q = max(o.leaves_qty, 1)
            else:
                cid, side, qty, q = "zz", Side.BUY, 10, 1
            r = rep(cid, et, S.NEW, qty=qty + (q % 3 if et is E.REPLACED else 0), side=side,
                    last_qty=q if et is E.TRADE else 0, last_px=float(px) if et is E.TRADE else 0.0,
                    orig=firsts[i] if firsts else "")
            sent_reports.append(r)
            record(orders.apply(r))
        elif kind == "again" and sent_reports:
            ch = orders.apply(sent_reports[act[1] % len(sent_reports)])
            assert ch.outcome is Outcome.DUPLICATE and ch.fill_qty == 0 and ch.open_qty == 0
            record(ch)
        elif kind == "reject":
            i = act[1] % len(firsts)
            if requests[i]:
                cid = requests[i][-1 if act[2] else 0]
                record(orders.apply(CancelReject(cid, firsts[i], "", S.NEW, "1", venue=VENUE)))
        elif kind == "down":
            for ch in orders.venue_down(VENUE, 4):
                record(ch)

        # invariants, after every step
        for o in orders:
            assert isinstance(o.status, OrdStatus)
            assert 0 <= o.cum_qty <= o.order_qty
            if o.working:
                assert o.leaves_qty + o.cum_qty == o.order_qty and o.leaves_qty > 0
            else:
                assert o.leaves_qty == 0 and o.open_qty == 0
            assert (o.status is S.REPLACED) == bool(o.replaced_by)
        live = [orders.live(f) for f in firsts]
        assert all(not o.replaced_by for o in live)
        for side in Side:
            want = sum(o.open_qty for o in live if o.side is side)
            assert orders.open_qty("ABC", side) == want == risk.open_qty("ABC", side)
        assert risk.open_orders == len(orders.working()) == sum(o.working for o in live)
        for f, o in zip(firsts, live):
            assert o.cum_qty == fills.get(f, 0)
        assert orders.position("acct", "ABC") == risk.position("ABC").qty == sum(
            o.side.sign * o.cum_qty for o in live)
    for ch in changes:
        event(ch.outcome.value)
        if ch.status is not None and ch.prev is not ch.status:
            event(f"{ch.prev and ch.prev.name} -> {ch.status.name}")
        if ch.outcome is Outcome.APPLIED and ch.prev is not None and ch.replaced is None:
            assert ch.status in ALLOWED[ch.prev], (ch.prev, ch.status)
        if ch.outcome is not Outcome.APPLIED:
            assert ch.fill_qty == 0
