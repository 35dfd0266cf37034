"""Shift calendar: three shifts per local day, defined in the site's local time.

S1 06:00–14:00, S2 14:00–22:00, S3 22:00–06:00 (next day). The night shift belongs to the
production date it starts on. Shift boundaries are computed in local time, so the shift that
contains a DST change lasts 7 or 9 hours.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from plant_sim.timeutil import local_to_epoch

SHIFTS: tuple[tuple[str, int, int], ...] = (("S1", 6, 0), ("S2", 14, 0), ("S3", 22, 1))
"""(shift code, local start hour, day offset of the start hour relative to the production date)."""


@dataclass(frozen=True)
class Shift:
    """One shift of one site: `[start, end)` in UTC epoch seconds."""

    site_code: str
    production_date: dt.date
    shift_code: str
    start: int
    end: int

    @property
    def seconds(self) -> int:
        """Calendar length of the shift (7, 8 or 9 hours)."""
        return self.end - self.start


def shifts_for_day(site_code: str, day: dt.date, tz: ZoneInfo) -> list[Shift]:
    """The three shifts of production date `day`, in order."""
    bounds = [
        local_to_epoch(day, 6, tz),
        local_to_epoch(day, 14, tz),
        local_to_epoch(day, 22, tz),
        local_to_epoch(day + dt.timedelta(days=1), 6, tz),
    ]
    return [
        Shift(site_code, day, code, bounds[i], bounds[i + 1])
        for i, (code, _hour, _off) in enumerate(SHIFTS)
    ]
