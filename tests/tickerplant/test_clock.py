"""Which trading day an instant belongs to, across the roll time and DST."""
import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
from hypothesis import given, settings, strategies as st

from tickerplant.clock import Clock

NY = ZoneInfo("America/New_York")


def ns(y, m, d, hh, mm, tz=NY):
    return int(dt.datetime(y, m, d, hh, mm, tzinfo=tz).timestamp()) * 10**9


def test_a_17_00_new_york_roll_starts_the_next_day():
    c = Clock("17:00", "America/New_York")
    assert c.day(ns(2026, 11, 20, 16, 59)) == dt.date(2026, 11, 20)
    assert c.day(ns(2026, 11, 20, 17, 0)) == dt.date(2026, 11, 21)
    assert c.end(dt.date(2026, 11, 20)) == ns(2026, 11, 20, 17, 0)
    # every instant lies before the end of its own day and at/after the end of the previous one
    for t in range(ns(2026, 3, 7, 0, 0), ns(2026, 3, 10, 0, 0), 37 * 60 * 10**9):  # spans DST
        d = c.day(t)
        assert c.end(d - dt.timedelta(days=1)) <= t < c.end(d)


def test_midnight_utc_is_the_calendar_day():
    c = Clock("00:00", "UTC")
    utc = dt.timezone.utc
    assert c.day(ns(2026, 11, 20, 23, 59, utc)) == dt.date(2026, 11, 20)
    assert c.day(ns(2026, 11, 21, 0, 0, utc)) == dt.date(2026, 11, 21)
    assert c.end(dt.date(2026, 11, 20)) == ns(2026, 11, 21, 0, 0, utc)


def test_dst_days_are_23_and_25_hours_long():
    c = Clock("17:00", "America/New_York")
    hours = lambda d: (c.end(d) - c.end(d - dt.timedelta(days=1))) / 3.6e12  # noqa: E731
    assert hours(dt.date(2026, 3, 8)) == 23 and hours(dt.date(2026, 11, 1)) == 25


def reference_day(ns: int, roll: dt.time, tz: ZoneInfo) -> dt.date:
    """The rule written the slow, obvious way with zoneinfo, on whole seconds (the roll is a
    whole minute, so the sub-second part never decides)."""
    local = dt.datetime.fromtimestamp(ns // 10**9, tz)
    if roll == dt.time(0, 0) or local.time() < roll:
        return local.date()
    return local.date() + dt.timedelta(days=1)


ZONES = ["America/New_York", "Europe/London", "Australia/Sydney", "America/St_Johns", "Asia/Kolkata", "UTC"]


@settings(max_examples=200)
@given(tz=st.sampled_from(ZONES), hh=st.integers(0, 23), mm=st.sampled_from([0, 30, 59]),
       year=st.integers(1971, 2099), month=st.sampled_from([3, 4, 10, 11]), day=st.integers(1, 28),
       offsets=st.lists(st.integers(-3 * 86_400 * 10**9, 3 * 86_400 * 10**9), min_size=1, max_size=50))
def test_the_vectorised_rule_is_the_scalar_rule_across_dst(tz, hh, mm, year, month, day, offsets):
    """Random instants within 3 days of a DST change month's day, and every instant one ns either
    side of each local roll time in that window: `days` (one array) and `day` (one instant)
    agree with each other and with zoneinfo."""
    c = Clock(f"{hh:02d}:{mm:02d}", tz)
    zone = ZoneInfo(tz)
    mid = int(dt.datetime(year, month, day, tzinfo=zone).timestamp()) * 10**9
    rolls = [int(dt.datetime.combine(dt.date(year, month, day) + dt.timedelta(days=k), c.roll, zone)
                 .timestamp()) * 10**9 + e for k in range(-3, 4) for e in (-1, 0, 1)]
    ns = np.array([mid + o for o in offsets] + rolls, dtype=np.int64)
    got = c.days(ns)
    assert got.dtype == np.dtype("datetime64[D]")
    want = [reference_day(int(x), c.roll, zone) for x in ns]
    assert got.tolist() == want
    assert [c.day(int(x)) for x in ns[:5]] == want[:5]
