"""Which trading day an instant belongs to, and when that day ends.

With a roll at 17:00 New York, day D runs from D-1 17:00 to D 17:00 local time (the FX
convention); with a roll at 00:00 it is the calendar day. DST is handled by zoneinfo.

The rule is written once, vectorised (`Clock.days`: exact integer arithmetic on ns), and
`Clock.day` is the same rule for one instant. Local offsets come from zoneinfo, looked up once
per distinct hour of the input (not per row), because Arrow's own time zone conversion ignores
DST after 2037 (it stops at the last transition listed in the system's zone files).
"""
from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

import numpy as np

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


def known_zone(tz: str | None) -> str | None:
    """`tz` if zoneinfo knows it (None passes); ValueError naming the fix otherwise."""
    if tz is None:
        return tz
    try:
        ZoneInfo(tz)
    except Exception:  # noqa: BLE001 - ZoneInfoNotFoundError, ValueError for odd names, ...
        raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as "
                         "\"America/New_York\", \"Europe/London\" or \"UTC\"") from None
    return tz


class Clock:
    def __init__(self, roll: str = "17:00", tz: str = "America/New_York"):
        h, m = map(int, roll.split(":"))
        self.roll = dt.time(h, m)
        self.tz = ZoneInfo(tz)
        self._roll_ns = (h * 3600 + m * 60) * NS_PER_S

    def days(self, ns: np.ndarray) -> np.ndarray:
        """The trading day of each instant (int64 ns since the epoch, UTC), as datetime64[D]."""
        ns = np.asarray(ns, dtype=np.int64).reshape(-1)
        local = ns + self._utc_offsets(ns // NS_PER_S) * NS_PER_S
        day, time_of_day = np.divmod(local, NS_PER_DAY)
        if self._roll_ns:
            day += time_of_day >= self._roll_ns
        return day.astype("datetime64[D]")

    def day(self, ns: int | None = None) -> dt.date:
        ns = time.time_ns() if ns is None else ns
        return self.days(np.array([ns], dtype=np.int64))[0].item()

    def end(self, day: dt.date) -> int:
        """The instant (ns since epoch) at which `day` ends and the next begins."""
        d = day if self.roll != dt.time(0, 0) else day + dt.timedelta(days=1)
        return int(dt.datetime.combine(d, self.roll, self.tz).timestamp()) * NS_PER_S

    def _offset(self, s: int) -> int:
        return int(dt.datetime.fromtimestamp(s, self.tz).utcoffset().total_seconds())

    def _utc_offsets(self, sec: np.ndarray) -> np.ndarray:
        """The UTC offset (s) at each instant (whole seconds): zoneinfo at the start of each
        distinct hour and the next, and where they differ, the second of the change within
        that hour by bisection (zones change offset at most once an hour)."""
        hours, which = np.unique(sec // 3600, return_inverse=True)
        edges = hours * 3600
        known = {int(s): self._offset(int(s)) for s in np.union1d(edges, edges + 3600)}
        start = np.array([known[int(s)] for s in edges], dtype=np.int64)
        end = np.array([known[int(s) + 3600] for s in edges], dtype=np.int64)
        change = np.full(len(hours), 3600, dtype=np.int64)      # second of the hour it changes
        for k in np.flatnonzero(start != end).tolist():
            lo, hi = int(edges[k]), int(edges[k]) + 3600
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if self._offset(mid) == start[k] else (lo, mid)
            change[k] = hi - edges[k]
        into = sec - edges[which]
        return np.where(into >= change[which], end[which], start[which])
