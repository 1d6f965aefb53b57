"""The budget clock's period arithmetic (``budget.Clock``), through its public methods only:
``bounds(period, day)``, ``day_of(iso)``, ``day_at(datetime)`` and ``today()``.

A period is a local day or a local month in the budget's time zone; ``bounds`` gives its first
and last day and when it resets (the ``resets_at`` a budget shows: the next period's local
midnight, as ISO 8601 with the offset in force). Month ends, leap days and daylight-saving
changes are where such arithmetic goes wrong, so each has its case here, and a walk over whole
years checks that the reset instant ``bounds`` gives is exactly where ``day_at`` turns the day.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import pytest

from llm_router.budget import Clock

ZONES = ["UTC", "Europe/Paris", "America/New_York", "America/Santiago", "Asia/Beirut", "Australia/Lord_Howe", "Asia/Kolkata"]
"""UTC; DST at 02:00 (Paris, New York); DST at local midnight, so that a day starts at 01:00 or
lasts 25 hours (Santiago, Beirut); a half-hour DST change (Lord Howe); a half-hour offset and no
DST (Kolkata)."""

TICK = timedelta(microseconds=1)


def reset_instant(clock: Clock, period: Literal["daily", "monthly"], day: date) -> datetime:
    resets = datetime.fromisoformat(clock.bounds(period, day)[2])
    assert resets.tzinfo is not None, "resets_at carries its offset"
    return resets


# -- daily --------------------------------------------------------------------------------------------


def test_a_day_is_its_own_first_and_last_day_and_resets_at_the_next_local_midnight() -> None:
    assert Clock("Europe/Paris").bounds("daily", date(2026, 6, 15)) == ("2026-06-15", "2026-06-15", "2026-06-16T00:00:00+02:00")
    assert Clock("UTC").bounds("daily", date(2026, 6, 15)) == ("2026-06-15", "2026-06-15", "2026-06-16T00:00:00+00:00")
    assert Clock("Asia/Kolkata").bounds("daily", date(2026, 6, 15))[2] == "2026-06-16T00:00:00+05:30"


@pytest.mark.parametrize(
    ("day", "resets"),
    [
        (date(2026, 1, 31), "2026-02-01T00:00:00+01:00"),  # a month's last day
        (date(2026, 2, 28), "2026-03-01T00:00:00+01:00"),  # February of a common year
        (date(2028, 2, 28), "2028-02-29T00:00:00+01:00"),  # ... and of a leap year, which goes on
        (date(2028, 2, 29), "2028-03-01T00:00:00+01:00"),
        (date(2026, 12, 31), "2027-01-01T00:00:00+01:00"),  # the year's last day
    ],
)
def test_a_day_resets_on_the_right_next_day_across_month_and_year_ends(day: date, resets: str) -> None:
    first, last, when = Clock("Europe/Paris").bounds("daily", day)
    assert (first, last, when) == (day.isoformat(), day.isoformat(), resets)


def test_a_day_before_a_dst_change_resets_with_the_offset_in_force_at_its_end() -> None:
    paris = Clock("Europe/Paris")
    # Spring: clocks go from 02:00 to 03:00 on 29 March 2026; midnight before it is still winter time.
    assert paris.bounds("daily", date(2026, 3, 28))[2] == "2026-03-29T00:00:00+01:00"
    assert paris.bounds("daily", date(2026, 3, 29))[2] == "2026-03-30T00:00:00+02:00"
    # Autumn: 03:00 back to 02:00 on 25 October 2026.
    assert paris.bounds("daily", date(2026, 10, 24))[2] == "2026-10-25T00:00:00+02:00"
    assert paris.bounds("daily", date(2026, 10, 25))[2] == "2026-10-26T00:00:00+01:00"


def test_a_day_with_a_dst_change_lasts_23_or_25_hours() -> None:
    paris = Clock("Europe/Paris")
    for day, hours in ((date(2026, 3, 29), 23), (date(2026, 10, 25), 25), (date(2026, 6, 1), 24)):
        length = reset_instant(paris, "daily", day) - reset_instant(paris, "daily", day - timedelta(days=1))
        assert length == timedelta(hours=hours), day


def test_a_day_whose_midnight_the_clocks_skip_resets_at_the_instant_that_day_begins() -> None:
    """In Santiago, clocks go from 00:00 straight to 01:00 on 6 September 2026: that local
    midnight never shows on a clock. The reset is the instant the new day begins (04:00 UTC),
    written with the offset before the change."""
    santiago = Clock("America/Santiago")
    resets = reset_instant(santiago, "daily", date(2026, 9, 5))
    assert resets.astimezone(UTC) == datetime(2026, 9, 6, 4, 0, tzinfo=UTC)
    assert santiago.day_at(resets - TICK) == "2026-09-05"
    assert santiago.day_at(resets) == "2026-09-06"
    assert resets.astimezone(ZoneInfo("America/Santiago")).hour == 1  # the day's first hour on the wall is 01:00


# -- monthly ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "first", "last", "resets"),
    [
        (date(2026, 1, 1), "2026-01-01", "2026-01-31", "2026-02-01T00:00:00-05:00"),
        (date(2026, 1, 31), "2026-01-01", "2026-01-31", "2026-02-01T00:00:00-05:00"),
        (date(2026, 2, 14), "2026-02-01", "2026-02-28", "2026-03-01T00:00:00-05:00"),
        (date(2028, 2, 14), "2028-02-01", "2028-02-29", "2028-03-01T00:00:00-05:00"),  # leap year
        (date(2100, 2, 14), "2100-02-01", "2100-02-28", "2100-03-01T00:00:00-05:00"),  # a century: not leap
        (date(2000, 2, 29), "2000-02-01", "2000-02-29", "2000-03-01T00:00:00-05:00"),  # a fourth century: leap
        (date(2026, 3, 31), "2026-03-01", "2026-03-31", "2026-04-01T00:00:00-04:00"),  # DST began in March
        (date(2026, 4, 30), "2026-04-01", "2026-04-30", "2026-05-01T00:00:00-04:00"),  # a 30-day month
        (date(2026, 11, 2), "2026-11-01", "2026-11-30", "2026-12-01T00:00:00-05:00"),  # DST ended on 1 November
        (date(2026, 12, 31), "2026-12-01", "2026-12-31", "2027-01-01T00:00:00-05:00"),  # into the next year
    ],
)
def test_a_month_runs_from_its_first_to_its_last_day_and_resets_on_the_next_first(
    day: date, first: str, last: str, resets: str
) -> None:
    assert Clock("America/New_York").bounds("monthly", day) == (first, last, resets)


@pytest.mark.parametrize("tz", ZONES)
def test_every_day_of_a_month_gives_that_months_bounds(tz: str) -> None:
    clock = Clock(tz)
    for year, month in ((2026, 2), (2028, 2), (2026, 3), (2026, 10), (2026, 12)):
        day, seen = date(year, month, 1), set()
        while day.month == month:
            seen.add(clock.bounds("monthly", day))
            day += timedelta(days=1)
        assert len(seen) == 1, (year, month)
        first, last, resets = seen.pop()
        assert date.fromisoformat(first) == date(year, month, 1)
        assert date.fromisoformat(last) == day - timedelta(days=1)
        assert datetime.fromisoformat(resets).replace(tzinfo=None) == datetime(day.year, day.month, day.day)


@pytest.mark.parametrize("tz", ZONES)
def test_a_months_reset_is_its_last_days_reset(tz: str) -> None:
    clock = Clock(tz)
    for month in range(1, 13):
        last = date.fromisoformat(clock.bounds("monthly", date(2026, month, 1))[1])
        assert clock.bounds("monthly", last)[2] == clock.bounds("daily", last)[2]


# -- where the day turns: bounds and day_at agree ----------------------------------------------------


@pytest.mark.parametrize("tz", ZONES)
def test_the_reset_instant_is_exactly_where_day_at_turns_to_the_next_day(tz: str) -> None:
    """Every day of 2026 and of leap 2028, DST changes included: a microsecond before the reset
    ``bounds`` gives is still that day for ``day_at``, the reset itself is the next day. The same
    clock is asked forwards and back, as a server asks it across midnights."""
    clock = Clock(tz)
    for start in (date(2026, 1, 1), date(2028, 1, 1)):
        days = [start + timedelta(days=k) for k in range(366)]
        resets = [reset_instant(clock, "daily", day) for day in days]
        for day, reset in [*zip(days, resets, strict=True), *reversed(list(zip(days, resets, strict=True)))]:
            assert clock.day_at(reset - TICK) == day.isoformat(), (tz, day)
            assert clock.day_at(reset) == (day + timedelta(days=1)).isoformat(), (tz, day)


@pytest.mark.parametrize("tz", ZONES)
def test_day_at_is_the_local_date_of_the_instant(tz: str) -> None:
    clock, zone = Clock(tz), ZoneInfo(tz)
    for when in (
        datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 25, 1, 30, tzinfo=UTC),
        datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
        datetime(2026, 6, 1, 12, 0, tzinfo=ZoneInfo("Pacific/Kiritimati")),  # any aware datetime, any zone
    ):
        assert clock.day_at(when) == when.astimezone(zone).date().isoformat(), when


# -- day_of: a ledger timestamp's local day ----------------------------------------------------------


@pytest.mark.parametrize(
    ("tz", "stamp", "day"),
    [
        ("America/New_York", "2026-11-24T03:00:00+00:00", "2026-11-23"),  # still the evening before in New York
        ("America/New_York", "2026-11-24T05:00:00+00:00", "2026-11-24"),
        ("Europe/Paris", "2026-03-31T23:30:00+00:00", "2026-04-01"),  # a month turns in Paris first
        ("Europe/Paris", "2026-03-31T23:30:00-05:00", "2026-04-01"),  # any offset is read as the instant it is
        ("Europe/Paris", "2026-12-31T23:00:00Z", "2027-01-01"),  # and Z for UTC, a year turning
        ("Europe/Paris", "2026-12-31T22:59:59.999999+00:00", "2026-12-31"),
        ("Asia/Kolkata", "2028-02-28T18:30:00+00:00", "2028-02-29"),  # a leap day, half an hour ahead
        ("UTC", "2028-02-29T23:59:59+00:00", "2028-02-29"),
        ("America/Santiago", "2026-09-06T03:59:59+00:00", "2026-09-05"),  # the skipped midnight
        ("America/Santiago", "2026-09-06T04:00:00+00:00", "2026-09-06"),
    ],
)
def test_day_of_a_timestamp_is_its_day_in_the_budgets_time_zone(tz: str, stamp: str, day: str) -> None:
    assert Clock(tz).day_of(stamp) == day


@pytest.mark.parametrize("tz", ZONES)
def test_day_of_and_day_at_agree(tz: str) -> None:
    clock = Clock(tz)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    while when.year == 2026:
        assert clock.day_of(when.isoformat()) == clock.day_at(when), when
        when += timedelta(hours=7, minutes=13)


# -- today -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago"])  # UTC+14 and UTC-11
def test_today_is_the_local_date_now_in_the_budgets_time_zone(tz: str) -> None:
    before = datetime.now(ZoneInfo(tz)).date()
    today = Clock(tz).today()
    after = datetime.now(ZoneInfo(tz)).date()
    assert today in (before, after)  # the local midnight may pass between the readings
    assert Clock(tz).bounds("daily", today)[0] == today.isoformat()
