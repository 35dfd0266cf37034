"""Time helpers. Internally every instant is an integer of UTC epoch seconds."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

UTC = dt.UTC


def iso(epoch: int) -> str:
    """UTC ISO 8601 with `Z`, second precision: `2026-10-19T04:00:00Z`."""
    return dt.datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def local_naive(epoch: int, tz: ZoneInfo) -> str:
    """Site-local wall time without offset: `2026-10-19 06:00:00` (as QMS/WMS deliver it)."""
    return dt.datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%d %H:%M:%S")


def parse_iso_utc(text: str) -> int:
    """Parse ISO 8601 with `Z` or an offset into epoch seconds (fractions rounded up).

    Rounding up keeps both `>= since` and `< before` exact on whole-second data.
    Naive text (no zone) raises ValueError.
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("timestamp needs a zone: end with Z or an offset like +00:00")
    return math.ceil(value.timestamp())


def local_to_epoch(day: dt.date, hour: int, tz: ZoneInfo) -> int:
    """Epoch of local wall time `day hour:00` in `tz` (first occurrence if ambiguous)."""
    return int(dt.datetime(day.year, day.month, day.day, hour, tzinfo=tz).timestamp())
