"""Business hours as pure functions: is the team open, when does it open next, how much open time passed.

No Django and no database here: the rules are passed in (`BusinessRules`, built from the settings by
`agents.services.business_rules_get`), so every case, daylight-saving changes included, is tested with
plain values. Times are aware datetimes; openings are local wall-clock times in the rules' zone,
turned into instants by zoneinfo on each date, so a DST change moves the instant, not the hour.

A range belongs to the weekday it opens on; one that closes at or before its opening time runs past
midnight (22:00–02:00), 00:00–00:00 is the whole day. No ranges at all means open around the clock.
A holiday is closed for the whole local day, including the tail of the previous night's range.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

__all__ = [
    "BusinessRules",
    "OpeningRange",
    "business_seconds_between",
    "is_open",
    "next_opening",
]

# How far next_opening looks ahead before it gives up (a calendar of holidays with no opening left).
_LOOKAHEAD_DAYS = 400

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class OpeningRange:
    """Open on `weekday` (0 Monday … 6 Sunday) from `opens` to `closes`, local time."""

    weekday: int
    opens: time
    closes: time


@dataclass(frozen=True)
class BusinessRules:
    """The team's time zone, its weekly opening ranges (none: always open) and its closed dates."""

    time_zone: str = "Asia/Shanghai"
    ranges: tuple[OpeningRange, ...] = ()
    holidays: frozenset[date] = field(default_factory=frozenset)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("Business hours need aware datetimes (with a time zone).")
    return at


def _local_instant(day: date, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    """The parts of `intervals` outside every hole."""
    result: list[Interval] = []
    for start, end in intervals:
        pieces = [(start, end)]
        for hole_start, hole_end in holes:
            next_pieces = []
            for piece_start, piece_end in pieces:
                if hole_end <= piece_start or hole_start >= piece_end:
                    next_pieces.append((piece_start, piece_end))
                    continue
                if piece_start < hole_start:
                    next_pieces.append((piece_start, hole_start))
                if hole_end < piece_end:
                    next_pieces.append((hole_end, piece_end))
            pieces = next_pieces
        result.extend(pieces)
    return result


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _open_intervals(first_day: date, last_day: date, rules: BusinessRules) -> list[Interval]:
    """Open time (UTC instants, merged, holidays removed) of the ranges opening from first_day to last_day."""
    zone = rules.zone
    intervals: list[Interval] = []
    day = first_day
    while day <= last_day:
        if not rules.ranges:
            intervals.append(
                (_local_instant(day, time(0), zone), _local_instant(day + timedelta(days=1), time(0), zone))
            )
        for opening in rules.ranges:
            if opening.weekday != day.weekday():
                continue
            closing_day = day if opening.closes > opening.opens else day + timedelta(days=1)
            intervals.append(
                (_local_instant(day, opening.opens, zone), _local_instant(closing_day, opening.closes, zone))
            )
        day += timedelta(days=1)
    holes = [
        (_local_instant(holiday, time(0), zone), _local_instant(holiday + timedelta(days=1), time(0), zone))
        for holiday in rules.holidays
        if first_day <= holiday <= last_day + timedelta(days=1)
    ]
    return _merge(_subtract(_merge(intervals), holes))


def _local_date(at: datetime, rules: BusinessRules) -> date:
    return _aware(at).astimezone(rules.zone).date()


def is_open(at: datetime, rules: BusinessRules) -> bool:
    """Whether the team is open at this instant."""
    day = _local_date(at, rules)
    return any(start <= at < end for start, end in _open_intervals(day - timedelta(days=1), day, rules))


def next_opening(at: datetime, rules: BusinessRules) -> datetime | None:
    """When the team is next open: `at` itself while open; None if no opening within 400 days."""
    day = _local_date(at, rules) - timedelta(days=1)
    horizon = day + timedelta(days=_LOOKAHEAD_DAYS)
    while day < horizon:
        for start, end in _open_intervals(day, day + timedelta(days=13), rules):
            if end > at:
                return max(start, at).astimezone(at.tzinfo)
        day += timedelta(days=14)
    return None


def business_seconds_between(start: datetime, end: datetime, rules: BusinessRules) -> int:
    """Seconds of open time from `start` to `end` (0 when end is not after start)."""
    if _aware(end) <= _aware(start):
        return 0
    # In UTC: Python subtracts two datetimes of the same zone by wall clock, ignoring a DST change.
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    intervals = _open_intervals(_local_date(start, rules) - timedelta(days=1), _local_date(end, rules), rules)
    total = timedelta()
    for open_start, open_end in intervals:
        overlap_start, overlap_end = max(open_start, start), min(open_end, end)
        if overlap_end > overlap_start:
            total += overlap_end - overlap_start
    return int(total.total_seconds())
