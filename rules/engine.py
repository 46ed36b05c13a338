"""Rules as data, compiled into pure evaluation: (rule, state, reading) -> transition or None.

A rule's state is a small JSON-able dict owned by that rule; the service persists it per device in
device_state.rules so durations survive restarts. Every duration is measured in event time (the
readings' own timestamps); only absence rules look at the wall clock (DESIGN.md, data flow 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.domain import Device, DeviceKind, Location, Reading, Severity

State = dict[str, Any]
Action = Literal["close_valve", "cut_power"]


@dataclass(slots=True)
class Transition:
    """What a rule says happened: an alarm raised, still holding, or cleared."""

    rule_id: str
    alarm_type: str
    kind: Literal["raise", "hold", "clear"]
    severity: Severity
    at: datetime
    value: float | None = None
    message: str = ""
    latching: bool = False
    actions: tuple[Action, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Z]{2,4}-\d{2}[a-z]?$")
    alarm_type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kinds: tuple[DeviceKind, ...]
    locations: tuple[Location, ...] = ()
    severity: Severity
    latching: bool = False
    actions: tuple[Action, ...] = ()
    enabled: bool = True
    source: str = Field(min_length=3, description="standard, vendor practice, or 'engineering judgement'")
    message: str = ""

    @field_validator("severity", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Severity:
        return value if isinstance(value, Severity) else Severity.parse(value)

    def applies_to(self, device: Device) -> bool:
        """Whether this rule watches this device."""
        return self.enabled and device.kind in self.kinds and (
            not self.locations or device.location in self.locations
        )


class ThresholdRule(_RuleBase):
    """Raise when `field` >= raise_at (or the device's own `flag` is true) for `for_s` seconds; clear
    below clear_below held for clear_for_s (hysteresis, as Home Assistant's numeric_state arms and fires)."""

    type: Literal["threshold"] = "threshold"
    field: str | None = None
    raise_at: float | None = None
    clear_below: float | None = None
    for_s: float = Field(default=0, ge=0)
    clear_for_s: float = Field(default=0, ge=0)
    flag: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        if self.field is None and self.flag is None:
            raise ValueError(f"{self.id}: a threshold rule needs a field, a flag, or both")
        if self.field is not None:
            if self.raise_at is None:
                raise ValueError(f"{self.id}: field {self.field!r} needs raise_at")
            clear = self.clear_below if self.clear_below is not None else self.raise_at
            if clear > self.raise_at:
                raise ValueError(f"{self.id}: clear_below ({clear}) must not exceed raise_at ({self.raise_at})")
        return self


Rule = Annotated[ThresholdRule, Field(discriminator="type")]


def _seconds(later: datetime, earlier_iso: str) -> float:
    return (later - datetime.fromisoformat(earlier_iso)).total_seconds()


def evaluate_threshold(rule: ThresholdRule, state: State, reading: Reading) -> Transition | None:
    """Edge-triggered threshold with an arming duration and a hysteresis band; updates state in place."""
    value = reading.value(rule.field) if rule.field else None
    flag = reading.value(rule.flag) if rule.flag else None
    if value is None and flag is None:
        return None  # this reading says nothing about this rule
    numeric = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    above = bool(flag) or (numeric is not None and rule.raise_at is not None and numeric >= rule.raise_at)
    clear_level = rule.clear_below if rule.clear_below is not None else rule.raise_at
    below = not flag and (numeric is None or clear_level is None or numeric < clear_level)
    ts = reading.ts
    active = bool(state.get("active"))

    def transition(kind: Literal["raise", "hold", "clear"]) -> Transition:
        return Transition(rule_id=rule.id, alarm_type=rule.alarm_type, kind=kind, severity=rule.severity,
                          at=ts, value=numeric, message=rule.message, latching=rule.latching,
                          actions=rule.actions if kind == "raise" else (),
                          details={"field": rule.field, "flag": bool(flag)} if kind == "raise" else {})

    if not active:
        if not above:
            state.pop("since", None)
            return None
        since = state.setdefault("since", ts.isoformat())
        # A device's own alarm flag is authoritative (RULES-REFERENCE 7.2 conventions): no arming delay.
        if flag or _seconds(ts, since) >= rule.for_s:
            state.clear()
            state["active"] = True
            return transition("raise")
        return None
    if above or not below:
        state.pop("clear_since", None)
        return transition("hold") if above else None
    clear_since = state.setdefault("clear_since", ts.isoformat())
    if _seconds(ts, clear_since) >= rule.clear_for_s:
        state.clear()
        return transition("clear")
    return None


def evaluate(rule: Rule, state: State, reading: Reading) -> Transition | None:
    """Evaluate one rule against one reading, updating the rule's state in place."""
    return evaluate_threshold(rule, state, reading)
