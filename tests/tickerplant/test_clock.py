"""Which trading day an instant belongs to, across the roll time and DST."""
import datetime as dt
from zoneinfo import ZoneInfo

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
