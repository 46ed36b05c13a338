"""The escalation policy as data (notify/policy.yaml): ladder steps per severity, night uplift, quiet hours,
storm control and retry backoff, validated at load."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.configfile import read_yaml
from core.domain import Severity
from core.errors import ConfigError
from core.roster import DailyWindow

Tier = Literal["worker", "merchant", "leader", "community", "fire_station"]
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Step(_Model):
    after_s: float = Field(ge=0)
    tiers: list[Tier]


class SeverityPolicy(_Model):
    steps: list[Step] = Field(default_factory=list)
    remind_every_s: float | None = Field(default=None, gt=0)
    max_reminders: int = Field(default=0, ge=0)
    renotify_after_ack_s: float | None = Field(default=None, gt=0)

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: list[Step]) -> list[Step]:
        if any(b.after_s < a.after_s for a, b in itertools.pairwise(steps)):
            raise ValueError("steps must be in order of after_s")
        return steps


class Night(_Model):
    start: str = Field(default="22:00", pattern=_CLOCK)
    end: str = Field(default="06:00", pattern=_CLOCK)
    factor: float = Field(default=0.5, gt=0, le=1)
    severities: list[str] = Field(default_factory=lambda: ["critical"])


class QuietHours(_Model):
    start: str = Field(default="22:00", pattern=_CLOCK)
    end: str = Field(default="08:00", pattern=_CLOCK)
    severities: list[str] = Field(default_factory=lambda: ["minor", "info"])
    tiers: list[Tier] = Field(default_factory=lambda: list[Tier](["merchant"]))


class Storm(_Model):
    hold_s: float = Field(default=2.0, ge=0)
    max_hold_s: float = Field(default=20.0, ge=0)


class Retry(_Model):
    base_s: float = Field(default=2.0, gt=0)
    max_s: float = Field(default=300.0, gt=0)


class Policy(_Model):
    """Everything notify decides by configuration rather than code."""

    timezone: str = "Asia/Shanghai"
    life_safety_types: frozenset[str] = frozenset()
    offline_types: frozenset[str] = frozenset({"offline"})
    vulnerable_flags: frozenset[str] = frozenset({"elderly_living_alone"})
    night: Night = Night()
    quiet_hours: QuietHours = QuietHours()
    storm: Storm = Storm()
    retry: Retry = Retry()
    severities: dict[str, SeverityPolicy]

    @field_validator("severities")
    @classmethod
    def _known(cls, value: dict[str, SeverityPolicy]) -> dict[str, SeverityPolicy]:
        for name in value:
            Severity.parse(name)
        missing = {s.label for s in Severity} - {Severity.parse(n).label for n in value}
        if missing:
            raise ValueError(f"severities without a policy: {', '.join(sorted(missing))}")
        return value

    @cached_property
    def _by_severity(self) -> dict[int, SeverityPolicy]:
        return {int(Severity.parse(k)): v for k, v in self.severities.items()}

    @cached_property
    def _night_window(self) -> DailyWindow:
        return DailyWindow.parse(self.night.start, self.night.end)

    @cached_property
    def _quiet_window(self) -> DailyWindow:
        return DailyWindow.parse(self.quiet_hours.start, self.quiet_hours.end)

    def for_severity(self, severity: int) -> SeverityPolicy:
        """The ladder of one severity (1..4)."""
        return self._by_severity[severity]

    def is_life_safety(self, alarm_type: str) -> bool:
        return alarm_type in self.life_safety_types

    def is_immediate(self, alarm_type: str, severity: int) -> bool:
        """Life-safety and critical alarms are never held for grouping (DESIGN: notify at once)."""
        return self.is_life_safety(alarm_type) or severity >= Severity.CRITICAL

    def night_factor(self, severity: int, now: datetime) -> float:
        """Timer multiplier: halved at night for the severities the policy names (RULES-REFERENCE 7.1)."""
        if Severity(severity).label in self.night.severities and self._night_window.contains(now, self.timezone):
            return self.night.factor
        return 1.0

    def start_step(self, severity: int, site_flags: list[str]) -> int:
        """Vulnerable occupants start one step higher (when the ladder has a higher step)."""
        steps = self.for_severity(severity).steps
        if steps and self.vulnerable_flags.intersection(site_flags):
            return min(1, len(steps) - 1)
        return 0

    def step_due(
        self, severity: int, step: int, *, started_at: datetime, start_step: int, now: datetime
    ) -> datetime | None:
        """When ladder step `step` falls due, or None past the last step.

        A ladder that started higher is shifted earlier by the delay of the steps it skipped, so every later
        step comes one step sooner too.
        """
        steps = self.for_severity(severity).steps
        if step >= len(steps):
            return None
        offset = steps[step].after_s - steps[start_step].after_s
        return started_at + timedelta(seconds=max(offset, 0.0) * self.night_factor(severity, now))

    def reminder_due(self, severity: int, now: datetime, reminders_sent: int) -> datetime | None:
        sp = self.for_severity(severity)
        if sp.remind_every_s is None or reminders_sent >= sp.max_reminders:
            return None
        return now + timedelta(seconds=sp.remind_every_s * self.night_factor(severity, now))

    def renotify_due(self, severity: int, now: datetime) -> datetime | None:
        sp = self.for_severity(severity)
        if sp.renotify_after_ack_s is None:
            return None
        return now + timedelta(seconds=sp.renotify_after_ack_s)

    def deferred_until(self, severity: int, tier: str, now: datetime, alarm_type: str) -> datetime:
        """Quiet hours: P3/P4 to merchants and residents wait for the morning; life-safety never waits."""
        q = self.quiet_hours
        if self.is_life_safety(alarm_type) or Severity(severity).label not in q.severities or tier not in q.tiers:
            return now
        return self._quiet_window.end_after(now, self.timezone)

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after `attempts` failed tries."""
        return timedelta(seconds=min(self.retry.base_s * 2 ** max(attempts - 1, 0), self.retry.max_s))


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file (default: notify/policy.yaml)."""
    data, source = read_yaml(path or None, package="notify", default="policy.yaml")
    try:
        return Policy.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid notify policy: {exc}") from exc
