"""Which trading day an instant belongs to, and when that day ends.

With a roll at 17:00 New York, day D runs from D-1 17:00 to D 17:00 local time (the FX
convention); with a roll at 00:00 it is the calendar day. DST is handled by zoneinfo.
"""
from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo


class Clock:
    def __init__(self, roll: str = "17:00", tz: str = "America/New_York"):
        h, m = map(int, roll.split(":"))
        self.roll = dt.time(h, m)
        self.tz = ZoneInfo(tz)

    def day(self, ns: int | None = None) -> dt.date:
        ns = time.time_ns() if ns is None else ns
        local = dt.datetime.fromtimestamp(ns / 1e9, self.tz)
        if self.roll == dt.time(0, 0) or local.time() < self.roll:
            return local.date()
        return local.date() + dt.timedelta(days=1)

    def end(self, day: dt.date) -> int:
        """The instant (ns since epoch) at which `day` ends and the next begins."""
        d = day if self.roll != dt.time(0, 0) else day + dt.timedelta(days=1)
        return int(dt.datetime.combine(d, self.roll, self.tz).timestamp()) * 1_000_000_000
