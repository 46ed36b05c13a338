"""Duty rosters ("Mon-Fri 09:00-17:00; Sat 10:00-12:00") and daily time windows, evaluated in local time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from core.registry import ROSTER_RE

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True, slots=True)
class Shift:
    """Days of the week (0 = Monday) on which a shift starts, and its start and end time of day."""

    days: frozenset[int]
    start: time
    end: time

    def covers(self, local: datetime) -> bool:
        """Whether a local wall-clock instant falls inside this shift (an end before the start runs past midnight)."""
        t = local.time().replace(tzinfo=None)
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        if self.start == self.end:  # "00:00-00:00": the whole day
            return day in self.days
        # Overnight: the shift belongs to the day it starts on.
        return (day in self.days and t >= self.start) or (((day - 1) % 7) in self.days and t < self.end)


def _parse_time(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    if hours == 24 and minutes == 0:
        return time(0, 0)
    return time(hours, minutes)


def _parse_days(text: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        a = DAYS.index(first)
        b = DAYS.index(last) if last else a
        i = a
        while True:
            days.add(i)
            if i == b:
                break
            i = (i + 1) % 7
    return frozenset(days)


@lru_cache(maxsize=1024)
def parse_roster(text: str) -> tuple[Shift, ...]:
    """Parse a roster string; the registry has already validated it with ROSTER_RE."""
    shifts = []
    for part in text.split(";"):
        match = ROSTER_RE.match(part.strip())
        if match is None:
            raise ValueError(f'roster {part.strip()!r} is not like "Mon-Fri 09:00-17:00"')
        shifts.append(Shift(_parse_days(match["days"]), _parse_time(match["start"]), _parse_time(match["end"])))
    return tuple(shifts)


def on_duty(roster: str | None, now: datetime, tz: str) -> bool:
    """Whether a worker with this roster is on duty at an aware instant; no roster means always."""
    if not roster:
        return True
    local = now.astimezone(ZoneInfo(tz))
    return any(shift.covers(local) for shift in parse_roster(roster))


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """A time-of-day window such as night 22:00-06:00 (it may run past midnight)."""

    start: time
    end: time

    @classmethod
    def parse(cls, start: str, end: str) -> DailyWindow:
        return cls(_parse_time(start), _parse_time(end))

    def contains(self, now: datetime, tz: str) -> bool:
        t = now.astimezone(ZoneInfo(tz)).time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def end_after(self, now: datetime, tz: str) -> datetime:
        """The next instant the window ends, at or after now (now itself when outside the window)."""
        if not self.contains(now, tz):
            return now
        zone = ZoneInfo(tz)
        local = now.astimezone(zone)
        end = datetime.combine(local.date(), self.end, tzinfo=zone)
        if end <= local:
            end += timedelta(days=1)
        return end
