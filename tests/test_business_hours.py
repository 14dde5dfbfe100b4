"""Business hours as pure functions: open or not, the next opening, open seconds between two instants."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from agents.business_hours import (
    BusinessRules,
    OpeningRange,
    business_seconds_between,
    is_open,
    next_opening,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def every_day(opens: time, closes: time) -> tuple[OpeningRange, ...]:
    return tuple(OpeningRange(weekday=weekday, opens=opens, closes=closes) for weekday in range(7))


WEEKDAYS_NINE_TO_SIX = BusinessRules(
    time_zone="Asia/Shanghai",
    ranges=tuple(OpeningRange(weekday=weekday, opens=time(9), closes=time(18)) for weekday in range(5)),
)
DEMO = BusinessRules(time_zone="Asia/Shanghai", ranges=every_day(time(9), time(21)))


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


# 2026-12-04 is a Friday, 2026-12-05 a Saturday, 2026-12-07 a Monday.


def test_it_is_open_inside_a_range_and_closed_outside() -> None:
    assert is_open(shanghai(2026, 12, 4, 9, 0), WEEKDAYS_NINE_TO_SIX) is True
    assert is_open(shanghai(2026, 12, 4, 17, 59), WEEKDAYS_NINE_TO_SIX) is True
    assert is_open(shanghai(2026, 12, 4, 18, 0), WEEKDAYS_NINE_TO_SIX) is False
    assert is_open(shanghai(2026, 12, 4, 8, 59), WEEKDAYS_NINE_TO_SIX) is False


def test_it_reads_the_instant_in_the_rules_time_zone() -> None:
    # 01:00 UTC is 09:00 in Shanghai.
    assert is_open(datetime(2026, 12, 4, 1, 0, tzinfo=UTC), WEEKDAYS_NINE_TO_SIX) is True
    assert is_open(datetime(2026, 12, 4, 0, 59, tzinfo=UTC), WEEKDAYS_NINE_TO_SIX) is False


def test_it_is_closed_at_the_weekend() -> None:
    assert is_open(shanghai(2026, 12, 5, 12, 0), WEEKDAYS_NINE_TO_SIX) is False
    assert is_open(shanghai(2026, 12, 6, 12, 0), WEEKDAYS_NINE_TO_SIX) is False


def test_it_opens_next_on_monday_after_a_friday_evening() -> None:
    assert next_opening(shanghai(2026, 12, 4, 19, 30), WEEKDAYS_NINE_TO_SIX) == shanghai(2026, 12, 7, 9, 0)


def test_it_says_the_next_opening_is_now_while_open() -> None:
    at = shanghai(2026, 12, 4, 10, 15)
    assert next_opening(at, WEEKDAYS_NINE_TO_SIX) == at


def test_it_opens_later_the_same_morning() -> None:
    assert next_opening(shanghai(2026, 12, 4, 7, 0), DEMO) == shanghai(2026, 12, 4, 9, 0)


def test_it_counts_only_open_seconds_across_a_weekend() -> None:
    # Friday 17:00 → Monday 10:00: one hour on Friday, one on Monday.
    seconds = business_seconds_between(
        shanghai(2026, 12, 4, 17), shanghai(2026, 12, 7, 10), WEEKDAYS_NINE_TO_SIX
    )
    assert seconds == 2 * 3600


def test_it_counts_zero_for_a_wait_entirely_outside_hours() -> None:
    assert (
        business_seconds_between(shanghai(2026, 12, 5, 10), shanghai(2026, 12, 5, 16), WEEKDAYS_NINE_TO_SIX)
        == 0
    )


def test_it_counts_zero_when_the_end_is_not_after_the_start() -> None:
    at = shanghai(2026, 12, 4, 10)
    assert business_seconds_between(at, at, DEMO) == 0
    assert business_seconds_between(shanghai(2026, 12, 4, 11), at, DEMO) == 0


def test_it_counts_a_wait_inside_one_range_exactly() -> None:
    assert (
        business_seconds_between(shanghai(2026, 12, 4, 10, 0), shanghai(2026, 12, 4, 10, 7), DEMO) == 7 * 60
    )


def test_it_is_closed_on_a_holiday_and_skips_it() -> None:
    rules = BusinessRules(
        time_zone="Asia/Shanghai", ranges=DEMO.ranges, holidays=frozenset({date(2026, 12, 25)})
    )
    assert is_open(shanghai(2026, 12, 25, 12), rules) is False
    assert is_open(shanghai(2026, 12, 24, 12), rules) is True
    assert next_opening(shanghai(2026, 12, 24, 22), rules) == shanghai(2026, 12, 26, 9)
    # Thursday 20:00 → Saturday 10:00: an hour on the 24th and one on the 26th, none on the holiday.
    assert business_seconds_between(shanghai(2026, 12, 24, 20), shanghai(2026, 12, 26, 10), rules) == 2 * 3600


def test_it_supports_a_range_past_midnight() -> None:
    night = BusinessRules(
        time_zone="Asia/Shanghai", ranges=(OpeningRange(weekday=4, opens=time(22), closes=time(2)),)
    )
    assert is_open(shanghai(2026, 12, 4, 23), night) is True
    assert is_open(shanghai(2026, 12, 5, 1, 30), night) is True
    assert is_open(shanghai(2026, 12, 5, 2, 0), night) is False
    assert is_open(shanghai(2026, 12, 4, 21, 59), night) is False
    assert business_seconds_between(shanghai(2026, 12, 4, 20), shanghai(2026, 12, 5, 12), night) == 4 * 3600


def test_a_holiday_closes_the_tail_of_the_previous_night() -> None:
    night = BusinessRules(
        time_zone="Asia/Shanghai",
        ranges=(OpeningRange(weekday=4, opens=time(22), closes=time(2)),),
        holidays=frozenset({date(2026, 12, 5)}),
    )
    assert is_open(shanghai(2026, 12, 4, 23), night) is True
    assert is_open(shanghai(2026, 12, 5, 1), night) is False
    assert business_seconds_between(shanghai(2026, 12, 4, 20), shanghai(2026, 12, 5, 12), night) == 2 * 3600


def test_it_allows_several_ranges_a_day() -> None:
    split = BusinessRules(
        time_zone="Asia/Shanghai",
        ranges=(
            OpeningRange(weekday=4, opens=time(9), closes=time(12)),
            OpeningRange(weekday=4, opens=time(14), closes=time(18)),
        ),
    )
    assert is_open(shanghai(2026, 12, 4, 13), split) is False
    assert next_opening(shanghai(2026, 12, 4, 12, 30), split) == shanghai(2026, 12, 4, 14)
    assert business_seconds_between(shanghai(2026, 12, 4, 8), shanghai(2026, 12, 4, 20), split) == 7 * 3600


def test_without_ranges_it_is_always_open() -> None:
    always = BusinessRules(time_zone="Asia/Shanghai")
    at = shanghai(2026, 12, 5, 3)
    assert is_open(at, always) is True
    assert next_opening(at, always) == at
    assert business_seconds_between(at, shanghai(2026, 12, 6, 3), always) == 24 * 3600


def test_a_whole_day_range_is_midnight_to_midnight() -> None:
    whole = BusinessRules(
        time_zone="Asia/Shanghai", ranges=(OpeningRange(weekday=5, opens=time(0), closes=time(0)),)
    )
    assert business_seconds_between(shanghai(2026, 12, 4, 12), shanghai(2026, 12, 7, 12), whole) == 24 * 3600


def test_it_counts_wall_clock_hours_across_a_daylight_saving_change() -> None:
    # Berlin moves its clocks forward at 02:00 on Sunday 2026-03-29: that day 00:00–24:00 lasts 23 hours.
    always = BusinessRules(time_zone="Europe/Berlin")
    start = datetime(2026, 3, 29, 0, tzinfo=BERLIN)
    end = datetime(2026, 3, 30, 0, tzinfo=BERLIN)
    assert business_seconds_between(start, end, always) == 23 * 3600
    # A 09:00–17:00 day is eight hours whatever the clocks did overnight, and opens at 09:00 local.
    office = BusinessRules(time_zone="Europe/Berlin", ranges=every_day(time(9), time(17)))
    assert (
        business_seconds_between(
            datetime(2026, 3, 28, 12, tzinfo=BERLIN), datetime(2026, 3, 29, 12, tzinfo=BERLIN), office
        )
        == 8 * 3600
    )
    opening = next_opening(datetime(2026, 3, 29, 3, tzinfo=BERLIN), office)
    assert opening == datetime(2026, 3, 29, 7, tzinfo=UTC)
    assert opening is not None
    assert opening.astimezone(BERLIN).hour == 9


def test_it_gives_no_next_opening_when_every_day_is_a_holiday() -> None:
    days = frozenset(date.fromordinal(date(2026, 12, 1).toordinal() + offset) for offset in range(420))
    rules = BusinessRules(time_zone="Asia/Shanghai", ranges=DEMO.ranges, holidays=days)
    assert next_opening(shanghai(2026, 12, 1, 12), rules) is None


def test_it_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(datetime(2026, 12, 4, 10), DEMO)
