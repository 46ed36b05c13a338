"""Report periods: a day, an ISO week or a month in the street's time zone (Settings.timezone), as the
half-open instant range [since, until) the KPI API takes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from core.errors import GridwatchError

PeriodKind = Literal["day", "week", "month"]
DAY_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$", re.ASCII)
WEEK_RE = re.compile(r"^(\d{4})-W(\d{2})$", re.ASCII)
MONTH_RE = re.compile(r"^(\d{4})-(\d{2})$", re.ASCII)


class PeriodError(GridwatchError, ValueError):
    """A period that is not a day (2026-11-05), an ISO week (2026-W45) or a month (2026-11)."""


@dataclass(frozen=True, slots=True)
class Period:
    """One reporting period: its label as written, and its local start and end dates."""

    kind: PeriodKind
    label: str
    first: date
    end: date  # exclusive
    tz: str

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), ZoneInfo(self.tz))

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end, time(), ZoneInfo(self.tz))

    def days(self) -> list[date]:
        """Every local date of the period."""
        return [self.first + timedelta(days=i) for i in range((self.end - self.first).days)]


def _month_after(d: date) -> date:
    return date(d.year + (d.month == 12), d.month % 12 + 1, 1)


def _make(kind: PeriodKind, first: date, tz: str) -> Period:
    if kind == "day":
        return Period("day", first.isoformat(), first, first + timedelta(days=1), tz)
    if kind == "week":
        iso = first.isocalendar()
        return Period("week", f"{iso.year}-W{iso.week:02d}", first, first + timedelta(days=7), tz)
    return Period("month", f"{first.year}-{first.month:02d}", first, _month_after(first), tz)


def parse_period(text: str, tz: str) -> Period:
    """'2026-11-05' (a day), '2026-W45' (an ISO week) or '2026-11' (a month), local to tz."""
    try:
        if m := DAY_RE.match(text):
            return _make("day", date(int(m[1]), int(m[2]), int(m[3])), tz)
        if m := WEEK_RE.match(text):
            return _make("week", date.fromisocalendar(int(m[1]), int(m[2]), 1), tz)
        if m := MONTH_RE.match(text):
            return _make("month", date(int(m[1]), int(m[2]), 1), tz)
    except (ValueError, OverflowError) as exc:  # 2026-02-30, 2026-W60, 9999-12-31 (its end is past year 9999)
        raise PeriodError(f"period {text!r}: {exc}") from None
    raise PeriodError(f"period {text!r}: give a day (2026-11-05), an ISO week (2026-W45) or a month (2026-11)")


def period_of(kind: PeriodKind, day: date, tz: str) -> Period:
    """The day, week or month containing this local date."""
    if kind == "week":
        return _make("week", day - timedelta(days=day.weekday()), tz)
    if kind == "month":
        return _make("month", day.replace(day=1), tz)
    return _make("day", day, tz)


def last_complete(kind: PeriodKind, now: datetime, tz: str) -> Period:
    """The latest period of this kind that has ended by `now` (yesterday, last week, last month)."""
    today = now.astimezone(ZoneInfo(tz)).date()
    current = period_of(kind, today, tz)
    return period_of(kind, current.first - timedelta(days=1), tz)


def last_days(days: int, now: datetime, tz: str) -> Period:
    """The `days` local days up to and including today (e.g. the admin overview's alarms per day)."""
    today = now.astimezone(ZoneInfo(tz)).date()
    first = today - timedelta(days=days - 1)
    return Period("day", f"{first.isoformat()}/{today.isoformat()}", first, today + timedelta(days=1), tz)
