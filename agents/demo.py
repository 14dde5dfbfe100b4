"""The demo's team hours: every day 09:00–21:00 Beijing time, as the demo FAQ tells customers."""

from __future__ import annotations

from datetime import time

from agents.models import DEFAULT_TIME_ZONE, HandoffSettings, WeeklyHours

__all__ = ["DEMO_CLOSES", "DEMO_OPENS", "handoff_demo_load"]

DEMO_OPENS = time(9)
DEMO_CLOSES = time(21)


def handoff_demo_load() -> bool:
    """Save the demo's handoff settings and hours unless some are saved already; returns whether it did.

    Hours someone set up (any weekly row) are kept: the demo loader never overwrites an operator's.
    """
    created = False
    if not HandoffSettings.objects.filter(pk=1).exists():
        HandoffSettings(pk=1, time_zone=DEFAULT_TIME_ZONE).save()
        created = True
    if not WeeklyHours.objects.exists():
        WeeklyHours.objects.bulk_create(
            WeeklyHours(weekday=weekday, opens=DEMO_OPENS, closes=DEMO_CLOSES) for weekday in range(7)
        )
        created = True
    return created
