"""Rules as data, compiled into pure evaluation: (rule, state, reading) -> transition or None.

A rule's state is a small JSON-able dict owned by that rule; the service persists it per device in
device_state.rules so durations survive restarts. Every duration is measured in event time (the
readings' own timestamps, kept in state as epoch seconds); only absence and session-length rules look
at the wall clock, through tick() called by the timer (DESIGN.md, data flow 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, ClassVar, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.domain import Device, DeviceKind, Location, Mounting, Reading, Severity

State = dict[str, Any]
Action = Literal["close_valve", "cut_power", "cut_site_ports"]  # cut_site_ports: cut_power on the site's charging ports
Kind = Literal["raise", "hold", "clear"]


@dataclass(slots=True)
class Transition:
    """What a rule says happened: an alarm raised, still holding, or cleared."""

    rule_id: str
    alarm_type: str
    kind: Kind
    severity: Severity
    at: datetime
    value: float | None = None
    message: str = ""
    latching: bool = False
    actions: tuple[Action, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)
    lockout: bool = False


def _sev(value: Any) -> Severity:
    return value if isinstance(value, Severity) else Severity.parse(value)


ConfirmBy = Literal["second_sample", "duration", "co_signal", "device"]


class Confirm(BaseModel):
    """How a rule that actuates or latches confirms its condition before it does so (issue 19: no single glitch
    may close a valve, cut a port or latch an alarm). `by` names the kind of evidence its source asks for:
    - second_sample: `samples` consecutive samples meet the condition (a spike is one sample; its neighbours
      contradict it);
    - duration: as second_sample, and the rule's own duration (`for_s`, a session's hours) runs over them;
    - co_signal: another signal confirms it (a second detector, heat or CO: GB 50116 4.1.6 AND logic);
    - device: the device's own alarm output, which its standard already delays and confirms (a certified CO
      alarm, a gas detector's 15-60 s, a charger's fuse detection), is taken as it comes.
    Consecutive means each within max_gap_s of the one before (event time): a dropout or a device clock that
    went back starts the count again. `flag` says how a device flag next to a measurement is taken (threshold
    rules such as GAS-02): `device` trusts it at once, `samples` counts its reports like a measurement
    (GB 16808-2025 5.5.1.8's optional two-signal confirmation, per site)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    by: ConfirmBy
    samples: int = Field(default=2, ge=1, le=10)
    max_gap_s: float = Field(default=120, gt=0)
    flag: Literal["device", "samples"] = "device"
    source: str = Field(min_length=3, description="the standard or practice the confirmation follows")


class _RuleBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Z]{2,4}-\d{2}[a-z]?$")
    alarm_type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kinds: tuple[DeviceKind, ...]
    locations: tuple[Location, ...] = ()
    severity: Severity
    latching: bool = False
    actions: tuple[Action, ...] = ()
    # After a safety trip (cut_power) the port stays locked until a worker clears it on site (EB-10).
    lockout: bool = False
    # Do not raise while one of these rules is active on the same device (a higher level of the same family).
    inhibited_by: tuple[str, ...] = ()
    # Raised while one of these rules is active on the same device -> at least severity_if_active (EB-06: P1
    # with EB-03/EB-04). Applied by the service, which sees the device's other rules.
    if_active: tuple[str, ...] = ()
    severity_if_active: Severity | None = None
    # Severity rises to escalate_to once the alarm has been active this long (timer; e.g. low battery 7 days).
    escalate_after_s: float | None = Field(default=None, gt=0)
    escalate_to: Severity | None = None
    # EB-11: raised between 22:00 and 06:00 local time -> one severity level higher (night fire deaths).
    night_uplift: bool = False
    night_tz: str = "Asia/Shanghai"
    enabled: bool = True
    source: str = Field(min_length=3, description="standard, vendor practice, or 'engineering judgement'")
    message: str = ""
    # Required when the rule actuates or latches (issue 19); validated against what the rule type can confirm by.
    confirm: Confirm | None = None

    # The kinds of confirmation each rule type carries out (its evaluator, or the service for cross-device ones).
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"duration"})

    @field_validator("severity", "escalate_to", "severity_if_active", mode="before")
    @classmethod
    def _severity(cls, value: Any) -> Severity | None:
        return None if value is None else _sev(value)

    @model_validator(mode="after")
    def _confirmed(self) -> Self:
        if self.confirm is None:
            if self.actions or self.latching:
                what = "actuates" if self.actions else "latches"
                raise ValueError(
                    f"{self.id} {what}: say how its condition is confirmed "
                    "(confirm: {by: second_sample | duration | co_signal | device, source: ...})"
                )
            return self
        by = self.confirm.by
        if by not in self.CONFIRMS_BY:
            raise ValueError(
                f"{self.id}: a {self.type_name} rule cannot confirm by {by} "
                f"(it can by {', '.join(sorted(self.CONFIRMS_BY))})"
            )
        if by in ("second_sample", "duration") and self.confirm.samples < 2:
            raise ValueError(f"{self.id}: confirm by {by} needs samples >= 2")
        if by == "duration" and not self.has_duration():
            raise ValueError(f"{self.id}: confirm by duration needs a duration of its own (for_s > 0)")
        return self

    @property
    def type_name(self) -> str:
        return str(getattr(self, "type", "?"))

    def has_duration(self) -> bool:
        """Whether the rule's condition must hold for a time of its own (confirm by duration)."""
        return float(getattr(self, "for_s", 1)) > 0

    @property
    def confirm_samples_for_flag(self) -> int:
        """Consecutive reports a device flag needs when confirm.flag is `samples`."""
        return self.confirm.samples if self.confirm is not None and self.confirm.flag == "samples" else 1

    @property
    def confirm_samples(self) -> int:
        """Consecutive samples a measurement needs before the rule raises (1: as it comes)."""
        c = self.confirm
        return c.samples if c is not None and c.by in ("second_sample", "duration") else 1

    def applies_to(self, device: Device) -> bool:
        """Whether this rule watches this device."""
        return self.enabled and device.kind in self.kinds and (not self.locations or device.location in self.locations)

    def transition(
        self,
        kind: Kind,
        at: datetime,
        value: float | None = None,
        *,
        severity: Severity | None = None,
        details: dict[str, Any] | None = None,
    ) -> Transition:
        raising = kind == "raise"
        severity = severity or self.severity
        if self.night_uplift and kind != "clear" and is_night(at, self.night_tz):
            severity = Severity(min(int(Severity.CRITICAL), int(severity) + 1))
        return Transition(
            rule_id=self.id,
            alarm_type=self.alarm_type,
            kind=kind,
            severity=severity,
            at=at,
            value=value,
            message=self.message,
            latching=self.latching,
            actions=self.actions if raising else (),
            details=details or {},
            lockout=self.lockout and raising,
        )


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def is_night(at: datetime, tz: str = "Asia/Shanghai") -> bool:
    """22:00-06:00 local time (RULES-REFERENCE EB-11: 52.7 % of fire deaths at 22:00-08:00)."""
    hour = at.astimezone(_zone(tz)).hour
    return hour >= 22 or hour < 6


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class ThresholdRule(_RuleBase):
    """Raise when `field` crosses raise_at (or the device's own `flag` is true) for `for_s` seconds; clear
    past the hysteresis level held for clear_for_s (as Home Assistant's numeric_state arms and fires).
    direction=below watches for low values (battery): raise at <= raise_at, clear above clear_above."""

    type: Literal["threshold"] = "threshold"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"second_sample", "duration", "device"})
    field: str | None = None
    direction: Literal["above", "below"] = "above"
    raise_at: float | None = None
    clear_below: float | None = None
    clear_above: float | None = None
    for_s: float = Field(default=0, ge=0)
    clear_for_s: float = Field(default=0, ge=0)
    flag: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        if self.field is None and self.flag is None:
            raise ValueError(f"{self.id}: a threshold rule needs a field, a flag, or both")
        if self.confirm is not None and self.confirm.by == "device" and self.field is not None:
            raise ValueError(
                f"{self.id}: a measurement ({self.field}) cannot be confirmed by the device: confirm it by "
                "second_sample or duration (the device's own flag is taken per confirm.flag)"
            )
        if self.field is not None:
            if self.raise_at is None:
                raise ValueError(f"{self.id}: field {self.field!r} needs raise_at")
            if self.direction == "above":
                clear = self.clear_below if self.clear_below is not None else self.raise_at
                if clear > self.raise_at:
                    raise ValueError(f"{self.id}: clear_below ({clear}) must not exceed raise_at ({self.raise_at})")
            else:
                clear = self.clear_above if self.clear_above is not None else self.raise_at
                if clear < self.raise_at:
                    raise ValueError(f"{self.id}: clear_above ({clear}) must not be below raise_at ({self.raise_at})")
        return self


class DurationRule(_RuleBase):
    """Raise when `field` stays inside [min, max) for for_s (sub-alarm drift, an e-bike charging band);
    clear once it has been outside the band for clear_for_s."""

    type: Literal["duration"] = "duration"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"duration"})
    field: str
    min: float = -math.inf
    max: float = math.inf
    for_s: float = Field(ge=0)
    clear_for_s: float = Field(default=0, ge=0)


class FlagRule(_RuleBase):
    """A device-reported condition: `field` truthy (or equal to `equals`). Clears on the first reading that
    carries the field without the condition; with clear_on_absent, on any reading without it (fault codes
    are repeated by the device while they last)."""

    type: Literal["flag"] = "flag"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"device", "second_sample", "duration"})
    field: str
    equals: str | bool | None = None
    clear_on_absent: bool = False
    # Clear only once the condition has not been reported for this long (event time): bridges such as
    # Shelly publish the fault and the measurements on separate topics, so a reading without the field
    # says nothing about the fault.
    clear_for_s: float = Field(default=0, ge=0)
    # Raise only once the condition has been reported for this long (GAS-07: stuck in preheat > 10 min).
    for_s: float = Field(default=0, ge=0)


class HushRule(_RuleBase):
    """A detector silenced (hush) while its alarm flag persists (SMK-07): `field` and `hush_field` both truthy
    for `for_s` in event time re-raises. The last reported value of each is remembered (they may come in
    separate readings); clears as soon as either is reported off."""

    type: Literal["hush"] = "hush"
    field: str
    hush_field: str
    for_s: float = Field(ge=0)


class DoseRule(_RuleBase):
    """Time-weighted CO exposure (RULES-REFERENCE 2.2): a first-order COHb-equivalent integrator
    E += (c - E)(1 - exp(-dt/tau)), alarm at E >= r, plus the EN 50291 300 ppm override; clears when
    c < clear_below for clear_for_s and E < clear_dose_frac * r. A gap longer than max_gap_s holds E."""

    type: Literal["dose"] = "dose"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"second_sample"})
    field: str = "co_ppm"
    r: float = Field(gt=0)
    tau_s: float = Field(gt=0)
    override_at: float | None = None
    override_for_s: float = 60
    clear_below: float = 30
    clear_for_s: float = 600
    clear_dose_frac: float = Field(default=0.5, gt=0, le=1)
    max_gap_s: float = Field(default=900, gt=0)


class GapRule(_RuleBase):
    """CO-05: samples missing while an exposure is being judged. Armed while the last sample of `field` was at or
    above arm_at; raised by the timer once no sample has arrived for factor x the device's sampling interval
    (capped at max_interval_s, the dose rule's own sampling requirement); the next sample clears it. Judged on
    the wall clock of arrival, like absence."""

    type: Literal["gap"] = "gap"
    field: str = "co_ppm"
    arm_at: float = 30
    factor: float = Field(default=2, gt=0)
    max_interval_s: float = Field(default=300, gt=0)

    def gap_after_s(self, device: Device) -> float:
        """How long this device may go without a sample while armed."""
        return self.factor * min(float(device.report_interval_s), self.max_interval_s)


class RateOfRiseRule(_RuleBase):
    """Temperature runaway precursor (RULES-REFERENCE 4.4, EB-04): slope >= per_s_rise sustained for more
    than per_s_for_s, or a rise >= window_rise within window_s while above window_floor, or >= absolute_at.
    Clears below clear_below held for clear_for_s."""

    type: Literal["rate_of_rise"] = "rate_of_rise"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"second_sample"})
    field: str = "temp_c"
    per_s_rise: float | None = 1.0
    per_s_for_s: float = 3
    window_rise: float | None = 10
    window_s: float = 300
    window_floor: float = 45
    absolute_at: float | None = 80
    clear_below: float = 45
    clear_for_s: float = 60


class AbsenceRule(_RuleBase):
    """Offline: no message for offline_after (RULES-REFERENCE 5 formula from the device's expected interval,
    battery or mains) — judged by the timer on the wall clock; one good message clears it."""

    type: Literal["absence"] = "absence"
    battery_factor: float = 2
    battery_extra_s: float = 3600
    mains_factor: float = 3
    mains_min_s: float = 300

    def offline_after_s(self, device: Device) -> float:
        """How long this device may stay silent."""
        interval = float(device.report_interval_s)
        if device.battery:
            # RULES-REFERENCE 5's table (24 h heartbeat -> 49 h, Huawei IoTDA), not its formula's 3x term,
            # which would give 72 h and contradict the table.
            return self.battery_factor * interval + self.battery_extra_s
        return max(self.mains_factor * interval, self.mains_min_s)


class SessionRule(_RuleBase):
    """An e-bike charging session on a port or socket (power >= start_w starts it, < end_w for end_s ends it):
    check too_long (levels of session age), no_taper (power >= taper_frac of the bulk median for taper_s),
    energy (delivered Wh above max_wh), full (power < max(full_floor_w, full_frac of the bulk median) for
    full_s, then a top-up of topup_s, then the stop: EB-08), or rerise (once tapered below rerise_taper_frac of
    the bulk median, power >= the taper's minimum x (1 + rerise_frac) and + rerise_min_w for rerise_s: EB-06)."""

    type: Literal["session"] = "session"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"duration", "second_sample"})
    check: Literal["too_long", "no_taper", "energy", "full", "rerise"]
    field: str = "power_w"
    start_w: float = 30
    end_w: float = 3
    end_s: float = 300
    levels: tuple[tuple[float, Severity], ...] = ()  # (session age s, severity) for too_long
    taper_frac: float = 0.8
    taper_s: float = 6 * 3600
    bulk_s: float = 1800
    max_wh: float = 1500
    # no_taper: the alarm raises at taper_s without actions; still not tapering at stop_after_s (same clock)
    # the rule's actions (and lockout) run then (EB-05: 6 h alarm, 8 h cut and lock). None: actions at raise.
    stop_after_s: float | None = Field(default=None, gt=0)
    # full (EB-08): "full" is power below max(full_floor_w, full_frac x bulk median) for full_s; the stop
    # (the rule's actions) comes topup_s later. The 30 % floor keeps a lead-acid stage 2 (~60 W) charging.
    full_floor_w: float = Field(default=45, gt=0)
    full_frac: float = Field(default=0.3, gt=0, lt=1)
    full_s: float = Field(default=600, ge=0)
    topup_s: float = Field(default=2700, ge=0)
    # rerise (EB-06): after the taper (power < rerise_taper_frac x bulk median) a sustained rise of rerise_frac
    # above the taper's minimum, and at least rerise_min_w (so standby noise of a few watts is no rise).
    rerise_taper_frac: float = Field(default=0.5, gt=0, lt=1)
    rerise_frac: float = Field(default=0.3, gt=0)
    rerise_min_w: float = Field(default=10, ge=0)
    rerise_s: float = Field(default=600, ge=0)

    @field_validator("levels", mode="before")
    @classmethod
    def _levels(cls, value: Any) -> Any:
        return tuple((float(a), _sev(s)) for a, s in value) if value else ()


class RebootRule(_RuleBase):
    """DEV-05 (reboot loop): the device's sequence counter went back (it restarted) `count` times within window_s
    of event time; clears once window_s has passed without a restart."""

    type: Literal["reboot"] = "reboot"
    field: str = "seq"
    count: int = Field(default=3, ge=1)
    window_s: float = Field(default=3600, gt=0)


class DriftRule(_RuleBase):
    """DEV-05 (clock drift): every message for for_s (by arrival) carries a device time at least max_lag_s behind
    its arrival, and that lag stays within spread_s — a clock that is off, not a backlog: a buffered backlog
    drains with the lag shrinking reading by reading, which restarts the run. Clears below clear_below_s."""

    type: Literal["drift"] = "drift"
    max_lag_s: float = Field(default=300, gt=0)
    for_s: float = Field(default=600, ge=0)
    spread_s: float = Field(default=60, gt=0)
    clear_below_s: float = Field(default=120, ge=0)


class ClockRule(_RuleBase):
    """DEV-05c: the device's clock runs ahead of the reading's arrival by more than max_ahead_s. The ingest accepts
    device times up to GRIDWATCH_MAX_CLOCK_SKEW_S ahead, but judging readings in a clock that runs ahead would
    make the later, correctly stamped ones look old: past max_ahead_s the rules judge a reading at its arrival
    (rules.service) and this alarm says the clock is wrong. Clears once a reading is within clear_within_s."""

    type: Literal["clock"] = "clock"
    max_ahead_s: float = Field(default=60, gt=0)
    clear_within_s: float = Field(default=30, ge=0)


class OutageRule(_RuleBase):
    """DEV-03: at least `frac` of a building's devices (and min_devices) went silent, each past its own offline
    limit, within window_s of each other: a power or network loss, or fire damage. One alarm per building,
    judged by the timer; severity_if_recent when another alarm was raised in the building within recent_s
    before the devices went quiet. Devices silent behind a down gateway count as the gateway alone."""

    type: Literal["outage"] = "outage"
    frac: float = Field(default=0.3, gt=0, le=1)
    window_s: float = Field(default=600, gt=0)
    min_devices: int = Field(default=2, ge=1)
    recent_s: float = Field(default=600, ge=0)
    severity_if_recent: Severity = Severity.CRITICAL
    ignore_types: tuple[str, ...] = ("offline", "building_outage")  # not "an alarm before the outage"

    @field_validator("severity_if_recent", mode="before")
    @classmethod
    def _recent_severity(cls, value: Any) -> Severity:
        return _sev(value)


def outage_cluster(rule: OutageRule, *, total: int, silent: list[tuple[float, str]]) -> list[str] | None:
    """The largest group of devices that went silent (epoch s, id) within window_s of each other, when it
    reaches frac of the building's `total` devices and min_devices; else None."""
    need = max(rule.min_devices, math.ceil(rule.frac * total - 1e-9))
    if len(silent) < need:
        return None
    pts = sorted(silent)
    lo = best_lo = best_hi = 0
    for hi in range(len(pts)):
        while pts[hi][0] - pts[lo][0] > rule.window_s:
            lo += 1
        if hi + 1 - lo > best_hi - best_lo:
            best_lo, best_hi = lo, hi + 1
    group = pts[best_lo:best_hi]
    return [d for _, d in group] if len(group) >= need else None


class PlacementRule(_RuleBase):
    """GAS-08, a configuration check: a gas detector must be mounted where the gas collects — LPG (heavier than
    air) within 0.3 m of the floor, natural gas (lighter) within 0.3 m of the ceiling (GB 50028 10.8.2). Judged
    on the registry, not on readings; a detector whose mounting is not registered is not judged."""

    type: Literal["placement"] = "placement"
    lpg: Mounting = Mounting.FLOOR
    natural_gas: Mounting | None = Mounting.CEILING


def misplacement(rule: PlacementRule, device: Device) -> str | None:
    """Why this detector is mounted at the wrong height for its site's gas, or None."""
    if not rule.applies_to(device) or device.mounting is None:
        return None
    gas, wanted = ("LPG", rule.lpg) if device.lpg else ("natural gas", rule.natural_gas)
    if wanted is None or device.mounting == wanted.value:
        return None
    where = {"floor": "within 0.3 m of the floor", "ceiling": "within 0.3 m of the ceiling"}
    return f"{gas} site: mount the detector {where.get(wanted.value, wanted.value)}, not at {device.mounting} height"


class StuckRule(_RuleBase):
    """A detector whose watched fields never changed and that never passed a self-test (`test`) within
    window_s (event time): it may be dead while still reporting."""

    type: Literal["stuck"] = "stuck"
    fields: tuple[str, ...]
    window_s: float = 30 * 86400


class CommissioningRule(_RuleBase):
    """Issue 19, commissioning: installing a device is not done until it has proved itself. A worker or installer
    starts a check; the device must report within within_s, and a device of test_kinds (a detector) must also give
    its test or alarm signal (a test press) within it. A device that never passes raises alarm_type when its check
    fails, or when it has said nothing for grace_s since it was registered (its silence is an alarm of its own:
    offline is judged only for devices that have reported). Judged by the timer; a passing check clears it."""

    type: Literal["commissioning"] = "commissioning"
    within_s: float = Field(default=600, gt=0)
    grace_s: float = Field(default=86400, gt=0)
    test_kinds: tuple[DeviceKind, ...] = (DeviceKind.GAS_DETECTOR, DeviceKind.CO_ALARM, DeviceKind.SMOKE_DETECTOR)

    def needs_test(self, device: Device) -> bool:
        """Whether the check needs the device's test or alarm signal besides a message."""
        return device.kind in self.test_kinds


@dataclass(frozen=True, slots=True)
class CheckEvidence:
    """What a device did since its commissioning check began: its first message, and its first test or alarm
    signal (which one)."""

    reported_at: datetime | None = None
    tested_at: datetime | None = None
    signal: str | None = None


def judge_commissioning(
    *, needs_test: bool, deadline: datetime, evidence: CheckEvidence, now: datetime
) -> tuple[Literal["passed", "failed"], str] | None:
    """A check's verdict with its reason, or None while it may still pass."""
    if evidence.reported_at is not None and (not needs_test or evidence.tested_at is not None):
        proof = f"; test signal: {evidence.signal}" if needs_test else ""
        return "passed", f"reported at {evidence.reported_at.isoformat(timespec='seconds')}{proof}"
    if now < deadline:
        return None
    if evidence.reported_at is None:
        return "failed", f"no message from the device by {deadline.isoformat(timespec='seconds')}"
    return "failed", (
        f"the device reported, but no test or alarm signal came by {deadline.isoformat(timespec='seconds')}: "
        "its test press did not reach us (check the detector and its bridge)"
    )


class CorroborateRule(_RuleBase):
    """An alarm of `of` on this device is confirmed by an alarm of `by` (default: `of` again) active on another
    device of the same site within window_s — or on this device too with same_device (a multi-sensor detector's
    own heat or CO channel). GAS-04, SMK-02 (second detector) and SMK-02a (heat/CO co-signal). Cross-device, so
    the service evaluates it whenever an alarm of `of` or `by` is raised; it clears when this device's `of`
    alarms have all cleared."""

    type: Literal["corroborate"] = "corroborate"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"co_signal"})
    of: tuple[str, ...] = Field(min_length=1)
    by: tuple[str, ...] = ()
    same_device: bool = False
    window_s: float = Field(gt=0)

    @property
    def confirming(self) -> tuple[str, ...]:
        """The alarm types that confirm."""
        return self.by or self.of


class RealarmRule(_RuleBase):
    """SMK-02b: the detector's own alarm `field` comes on again within window_s after a remote reset (an
    `after` command sent to it): alarm verification as NFPA 72 does it. The pure part sees the flag's rising
    edge; the service checks the command history (raised only when a reset preceded the edge)."""

    type: Literal["realarm"] = "realarm"
    CONFIRMS_BY: ClassVar[frozenset[str]] = frozenset({"second_sample"})
    field: str = "smoke"
    of: tuple[str, ...] = ("smoke",)  # the alarms it confirms (it clears when they have all cleared)
    after: Literal["silence", "self_test"] = "silence"
    window_s: float = Field(default=60, gt=0)


class NoCancelRule(_RuleBase):
    """SMK-02c, positive alarm sequence: an alarm of `of` still active and not cancelled (resolved) after_s after
    it reached us is taken as confirmed. Judged by the timer on the wall clock (people cancel in real time)."""

    type: Literal["no_cancel"] = "no_cancel"
    of: tuple[str, ...] = Field(min_length=1)
    after_s: float = Field(default=180, gt=0)


class RepeatRule(_RuleBase):
    """SMK-08: `count` alarms of `of` on one device, raised within window_s and resolved with `disposition`
    (e.g. three false alarms in 7 days) -> a maintenance alarm. Needs the people's dispositions, so the
    service evaluates it when an alarm is resolved; a person resolves it (no automatic clear)."""

    type: Literal["repeat"] = "repeat"
    of: tuple[str, ...] = Field(min_length=1)
    disposition: Literal["real_hazard", "false_alarm", "test", "device_fault"] = "false_alarm"
    count: int = Field(default=3, ge=2)
    window_s: float = Field(gt=0)


AnyRule = (
    ThresholdRule
    | DurationRule
    | FlagRule
    | HushRule
    | DoseRule
    | GapRule
    | RateOfRiseRule
    | AbsenceRule
    | SessionRule
    | RebootRule
    | DriftRule
    | ClockRule
    | StuckRule
    | CorroborateRule
    | RepeatRule
    | RealarmRule
    | NoCancelRule
    | OutageRule
    | PlacementRule
    | CommissioningRule
)
Rule = Annotated[AnyRule, Field(discriminator="type")]


def watched_fields(rule: AnyRule) -> frozenset[str]:
    """The reading fields a rule reads (a reading with none of them is skipped without evaluation)."""
    if isinstance(rule, ThresholdRule):
        return frozenset(f for f in (rule.field, rule.flag) if f)
    if isinstance(rule, HushRule):
        return frozenset((rule.field, rule.hush_field))
    if isinstance(rule, StuckRule):
        return frozenset((*rule.fields, "test"))
    if isinstance(rule, AbsenceRule | DriftRule | ClockRule):
        return frozenset()  # every message counts
    if isinstance(rule, CorroborateRule | RepeatRule | NoCancelRule | OutageRule | PlacementRule | CommissioningRule):
        return frozenset({"-"})  # never per reading
    return frozenset((rule.field,))


def _activate(state: State) -> None:
    state.clear()
    state["active"] = True


# Confirmation (issue 19). A rule's run of consecutive samples that meet its raise condition lives in its state:
# "since" (event time the run began; the rule's own for_s counts from there), "n" (samples in it) and "last" (the
# newest). Rules without `confirm` keep only "since", as before.


def _arm(state: State, now: float, confirm: Confirm | None) -> tuple[int, float]:
    """One more sample meets the raise condition: (samples in the run, when the run began). A dropout longer than
    confirm.max_gap_s, or a device clock that went back, starts the run again at this sample."""
    since = state.get("since")
    if confirm is None:
        if since is None or now < since:
            state["since"] = since = now
        return 1, float(since)
    last = state.get("last", since)
    if since is None or last is None or now < last or now - last > confirm.max_gap_s:
        state["since"], state["n"] = now, 1
    else:
        state["n"] = int(state.get("n", 1)) + 1
    state["last"] = now
    return int(state["n"]), float(state["since"])


def _disarm(state: State) -> None:
    """A sample that does not meet the raise condition ends the run."""
    state.pop("since", None)
    state.pop("n", None)
    state.pop("last", None)


def _window(
    state: State, key: str, value: float, now: float, confirm: Confirm | None
) -> tuple[float, float, float] | None:
    """(lowest, highest, first sample's time) of the last `samples` values of a measurement, each within max_gap_s of
    the one before: the level every one of them reached and the level none of them passed. A single spike or dropout
    moves neither (its neighbour holds the pair). None until enough samples have come (after a dropout, the count
    restarts). On every sample of the hot path: the common pair is kept flat, [time, value] of the one before."""
    if confirm is None or confirm.samples < 2:
        return value, value, now
    if confirm.samples == 2:
        prev = state.get(key)
        state[key] = [now, value]
        if prev and isinstance(prev[0], list):  # kept as a list of points (a samples > 2 window before an override)
            prev = prev[-1]
        if prev is None or not 0 <= now - prev[0] <= confirm.max_gap_s:
            return None
        pv = prev[1]
        return (pv, value, prev[0]) if pv < value else (value, pv, prev[0])
    points: list[list[float]] = state.get(key) or []
    if points and not (0 <= now - points[-1][0] <= confirm.max_gap_s):
        points = []
    points.append([now, value])
    del points[: -confirm.samples]
    state[key] = points
    if len(points) < confirm.samples:
        return None
    values = [v for _, v in points]
    return min(values), max(values), points[0][0]


def _flag_confirmed(rule: ThresholdRule, state: State, reported: Any, now: float) -> bool:
    """The device's own flag, held until the device reports it off (a reading with only the measurement, e.g. a
    bridge's separate concentration topic, does not turn it off); per confirm.flag taken at once or counted."""
    counted = rule.confirm if rule.confirm is not None and rule.confirm.flag == "samples" else None
    if reported is not None:
        if not reported:
            state.pop("flag", None)
            state.pop("fn", None)
            return False
        state["flag"] = True
        if counted is not None:
            prev = state.get("fn") or [0, -math.inf]
            fresh = 0 <= now - prev[1] <= counted.max_gap_s
            state["fn"] = [prev[0] + 1 if fresh else 1, now]
    if not state.get("flag"):
        return False
    return counted is None or int(state.get("fn", [0])[0]) >= rule.confirm_samples_for_flag


def evaluate_threshold(rule: ThresholdRule, state: State, reading: Reading) -> Transition | None:
    """Edge-triggered threshold with an arming duration and a hysteresis band; updates state in place. With
    `confirm`, the measurement must meet raise_at on consecutive samples (and for_s must run over them)."""
    value = reading.value(rule.field) if rule.field else None
    reported = reading.value(rule.flag) if rule.flag else None
    if value is None and reported is None:
        return None  # this reading says nothing about this rule
    numeric = _num(value)
    sign = 1.0 if rule.direction == "above" else -1.0
    measured = numeric is not None and rule.raise_at is not None and sign * numeric >= sign * rule.raise_at
    if not state and not measured and not reported:
        return None  # the hot path: quiet device, nothing armed, no flag held
    ts = reading.ts
    now = ts.timestamp()
    flag = _flag_confirmed(rule, state, reported, now) if rule.flag else False
    above = flag or measured
    active = state.get("active")
    if not active:
        return _arm_threshold(rule, state, ts, numeric, flag=flag, measured=measured)
    clear_level = rule.clear_below if rule.direction == "above" else rule.clear_above
    if clear_level is None:
        clear_level = rule.raise_at
    held = bool(state.get("flag"))
    below = not held and (numeric is None or clear_level is None or sign * numeric < sign * clear_level)
    if above or not below:
        state.pop("clear_since", None)
        return rule.transition("hold", ts, numeric) if above else None
    clear_since = state.setdefault("clear_since", now)
    if now - clear_since >= rule.clear_for_s:
        state.clear()
        return rule.transition("clear", ts, numeric)
    return None


def _arm_threshold(
    rule: ThresholdRule, state: State, ts: datetime, numeric: float | None, *, flag: bool, measured: bool
) -> Transition | None:
    """Not active yet: the device's confirmed flag raises at once (RULES-REFERENCE 7.2: a device flag is
    authoritative); a measurement raises once its run of samples is confirmed and for_s has passed."""
    if flag:
        held = bool(state.get("flag"))
        _activate(state)
        if held:
            state["flag"] = True
        return rule.transition("raise", ts, numeric, details={"field": rule.field, "flag": True})
    if not measured:
        if numeric is not None:
            _disarm(state)
        return None
    now = ts.timestamp()
    n, since = _arm(state, now, rule.confirm if rule.confirm_samples > 1 else None)
    if n < rule.confirm_samples or now - since < rule.for_s:
        return None
    held = bool(state.get("flag"))
    _activate(state)
    if held:
        state["flag"] = True
    details: dict[str, Any] = {"field": rule.field, "flag": False}
    if rule.confirm_samples > 1:
        details["confirmed_by"] = {"samples": n, "over_s": round(now - since, 1)}
    return rule.transition("raise", ts, numeric, details=details)


def evaluate_duration(rule: DurationRule, state: State, reading: Reading) -> Transition | None:
    """Inside the band for for_s raises; outside it for clear_for_s clears."""
    value = _num(reading.value(rule.field))
    if value is None:
        return None
    inside = rule.min <= value < rule.max
    if not inside and not state:
        return None
    ts, now = reading.ts, reading.ts.timestamp()
    if not state.get("active"):
        if not inside:
            _disarm(state)
            return None
        n, since = _arm(state, now, rule.confirm if rule.confirm_samples > 1 else None)
        if n >= rule.confirm_samples and now - since >= rule.for_s:
            _activate(state)
            return rule.transition("raise", ts, value, details={"field": rule.field, "held_s": now - since})
        return None
    if inside:
        state.pop("clear_since", None)
        return rule.transition("hold", ts, value)
    clear_since = state.setdefault("clear_since", now)
    if now - clear_since >= rule.clear_for_s:
        state.clear()
        return rule.transition("clear", ts, value)
    return None


def evaluate_flag(rule: FlagRule, state: State, reading: Reading) -> Transition | None:
    """The device says so: raise at once, clear when it stops saying so."""
    value = reading.value(rule.field)
    on = bool(value) if rule.equals is None else value == rule.equals
    if value is None and not (rule.clear_on_absent and state.get("active")):
        return None
    detail = value if isinstance(value, str | bool | int | float) else None
    now = reading.ts.timestamp()
    if on:
        if state.get("active"):
            state["on"] = now
            return rule.transition("hold", reading.ts)
        n, since = _arm(state, now, rule.confirm if rule.confirm_samples > 1 else None)
        if n < rule.confirm_samples or now - since < rule.for_s:
            return None
        _activate(state)
        state["on"] = now
        details: dict[str, Any] = {"field": rule.field, "reported": detail}
        own = reading.extras.get(f"{rule.field}_state")  # the device's own word for it (Shelly: not_connected)
        if isinstance(own, str):
            details["state"] = own
        return rule.transition("raise", reading.ts, details=details)
    _disarm(state)
    if state.get("active") and now - state.get("on", now) >= rule.clear_for_s:
        state.clear()
        return rule.transition("clear", reading.ts)
    return None


def evaluate_hush(rule: HushRule, state: State, reading: Reading) -> Transition | None:
    for name, key in ((rule.field, "on"), (rule.hush_field, "hush")):
        value = reading.value(name)
        if value is not None:
            state[key] = bool(value)
    ts = reading.ts
    if not (state.get("on") and state.get("hush")):
        state.pop("since", None)
        if state.pop("active", None):
            return rule.transition("clear", ts)
        return None
    state["since"] = state.get("since") or ts.timestamp()
    held = ts.timestamp() - state["since"]
    if state.get("active"):
        return rule.transition("hold", ts)
    if held >= rule.for_s:
        state["active"] = True
        return rule.transition("raise", ts, round(held), details={"silenced_s": round(held)})
    return None


def evaluate_dose(rule: DoseRule, state: State, reading: Reading) -> Transition | None:
    """EN 50291 / UL 2034 exposure integrator with the high-level override (RULES-REFERENCE 2.2)."""
    c = _num(reading.value(rule.field))
    if c is None:
        return None
    ts, now = reading.ts, reading.ts.timestamp()
    last = state.get("t")
    e = float(state.get("e", 0.0))
    # With confirm, the level integrated is the lower of the last samples (a CO spike of one sample is not an
    # exposure; two samples at the level are): one sample later, a small share of tau (see docs/rules.md).
    pair = _window(state, "w", c, now, rule.confirm)
    level = None if pair is None else pair[0]
    if last is not None and level is not None:
        dt = now - last
        # Samples more than max_gap_s apart: hold E rather than integrate a level nobody measured (CO-05).
        if 0 < dt <= rule.max_gap_s:
            e += (level - e) * (1 - math.exp(-dt / rule.tau_s))
    state["t"], state["e"] = now, round(e, 4)
    if rule.override_at is not None and c >= rule.override_at:
        # The override's samples must be consecutive: a dropout longer than max_gap_s, or a device clock that
        # jumped (either way), starts its 60 s again.
        gap = rule.confirm.max_gap_s if rule.confirm is not None else rule.max_gap_s
        over_last = state.get("over_last", state.get("over_since"))
        if over_last is None or not 0 <= now - over_last <= gap:
            state["over_since"] = now
        state["over_last"] = now
    else:
        state.pop("over_since", None)
        state.pop("over_last", None)
    over = "over_since" in state and now - state["over_since"] >= rule.override_for_s
    alarm = e >= rule.r or over
    if not state.get("active"):
        if alarm:
            state["active"] = True
            state.pop("clear_since", None)
            return rule.transition("raise", ts, c, details={"dose": round(e, 2), "override": over and e < rule.r})
        return None
    if c < rule.clear_below and e < rule.clear_dose_frac * rule.r:
        clear_since = state.setdefault("clear_since", now)
        if now - clear_since >= rule.clear_for_s:
            state.pop("active", None)
            state.pop("clear_since", None)
            return rule.transition("clear", ts, c, details={"dose": round(e, 2)})
        return None
    state.pop("clear_since", None)
    return rule.transition("hold", ts, c) if alarm else None


def evaluate_gap(rule: GapRule, state: State, reading: Reading) -> Transition | None:
    """A sample arrived: a data-gap alarm clears; the rule arms (or disarms) on the sample's level."""
    c = _num(reading.value(rule.field))
    if c is None:
        return None
    was_active = bool(state.get("active"))
    state.clear()
    if c >= rule.arm_at:
        state["rx"], state["c"] = reading.received_at.timestamp(), c
    if was_active:
        return rule.transition("clear", reading.ts, c, details={"samples": "resumed"})
    return None


def tick_gap(rule: GapRule, state: State, device: Device, *, now: datetime) -> Transition | None:
    """The timer's view: armed and no sample for gap_after_s raises once."""
    rx = state.get("rx")
    if rx is None or state.get("active"):
        return None
    silent = now.timestamp() - float(rx)
    limit = rule.gap_after_s(device)
    if silent < limit:
        return None
    state["active"] = True
    return rule.transition(
        "raise",
        now,
        state.get("c"),
        details={"silent_s": round(silent), "gap_after_s": limit, "last_value": state.get("c")},
    )


def _rise_trigger(rule: RateOfRiseRule, state: State, v: float, now: float) -> tuple[str | None, bool]:
    """EB-04's criteria for one sample: (the one it meets, or None; whether it rises at the slope rate at all)."""
    why = None
    rising = False
    prev = state.get("pv")  # the previous sample: the slope is between consecutive samples
    state["pv"] = [now, v]
    if prev is not None and rule.per_s_rise is not None:
        pt, pv = prev
        if now > pt and (v - pv) / (now - pt) >= rule.per_s_rise:
            rising = True
            since = state.setdefault("slope_since", pt)
            if now - since > rule.per_s_for_s:
                why = "slope"
        else:
            state.pop("slope_since", None)
    # With confirm, the history keeps the higher of each pair of samples: a single dropout (a sensor reading 0
    # once) must not become the window's minimum, from which every normal sample would look like a 10 C rise.
    hist: list[list[float]] = state.setdefault("h", [])
    pair = _window(state, "w", v, now, rule.confirm)
    if pair is not None:
        level = pair[1]
        # At most one point per 10 s (the lowest): the window minimum is all the windowed check needs, and the
        # history is persisted with the device state on every batch.
        if hist and 0 <= now - hist[-1][0] < 10:
            hist[-1][1] = min(hist[-1][1], level)
        else:
            hist.append([now, level])
    while hist and (now - hist[0][0] > rule.window_s or now < hist[0][0]):
        hist.pop(0)
    if (
        why is None
        and rule.window_rise is not None
        and hist
        and v > rule.window_floor
        and v - min(p[1] for p in hist) >= rule.window_rise
    ):
        why = "window"
    if why is None and rule.absolute_at is not None and v >= rule.absolute_at:
        why = "absolute"
    return why, rising


def evaluate_rate_of_rise(rule: RateOfRiseRule, state: State, reading: Reading) -> Transition | None:
    """Slope, windowed rise and absolute level of a temperature (RULES-REFERENCE 4.4, EB-04). With confirm, a
    criterion must be met after `samples` consecutive samples that each rose at the slope rate or met one."""
    v = _num(reading.value(rule.field))
    if v is None:
        return None
    ts, now = reading.ts, reading.ts.timestamp()
    why, rising = _rise_trigger(rule, state, v, now)
    if not state.get("active"):
        if why is None and not rising:
            _disarm(state)
            return None
        n, since = _arm(state, now, rule.confirm)
        if why is None or n < rule.confirm_samples:
            return None
        _disarm(state)
        state["active"] = True
        details: dict[str, Any] = {"trigger": why}
        if rule.confirm_samples > 1:
            details["confirmed_by"] = {"samples": n, "over_s": round(now - since, 1)}
        return rule.transition("raise", ts, v, details=details)
    if v < rule.clear_below:
        clear_since = state.setdefault("clear_since", now)
        if now - clear_since >= rule.clear_for_s:
            state.clear()
            return rule.transition("clear", ts, v)
        return None
    state.pop("clear_since", None)
    return rule.transition("hold", ts, v) if why else None


def evaluate_absence(rule: AbsenceRule, state: State, reading: Reading) -> Transition | None:
    """A message arrived: the device is back (DEV-01 'back online after 1 good message')."""
    if state.get("active"):
        state.clear()
        return rule.transition("clear", reading.ts)
    return None


def tick_absence(
    rule: AbsenceRule,
    state: State,
    device: Device,
    *,
    last_seen: datetime,
    now: datetime,
    inhibited: bool = False,
    floor: Severity | None = None,
) -> Transition | None:
    """The timer's view: silent longer than offline_after raises (unless the gateway is down); severity
    rises after escalate_after_s of silence, and is at least `floor` (EB-15: a port offline mid-session)."""
    silent = (now - last_seen).total_seconds()
    limit = rule.offline_after_s(device)
    if silent < limit:
        return None
    sev = max(rule.severity, floor) if floor is not None else rule.severity
    if rule.escalate_after_s is not None and rule.escalate_to is not None and silent >= rule.escalate_after_s:
        sev = max(sev, rule.escalate_to)
    details = {"silent_s": round(silent), "offline_after_s": limit, "last_seen_at": last_seen.isoformat()}
    if not state.get("active"):
        if inhibited:
            return None
        _activate(state)
        state["sev"] = int(sev)
        return rule.transition("raise", now, severity=sev, details=details)
    if int(sev) > int(state.get("sev", 0)):
        state["sev"] = int(sev)
        return rule.transition("hold", now, severity=sev, details=details)
    return None


def _session_step(rule: SessionRule, state: State, reading: Reading) -> tuple[dict[str, Any] | None, bool]:
    """Advance the charging session in state; returns (session, ended_now). With confirm, the session sees the
    power of consecutive sample pairs: "p" the lower (what both reached: starts, energy, rises) and "ph" the
    higher (what neither passed: ends, tapers, full), so one spike or dropout changes no phase and adds no energy."""
    p = _num(reading.value(rule.field))
    s: dict[str, Any] | None = state.get("s")
    if p is None:
        return s, False
    now = reading.ts.timestamp()
    if s is None and p < rule.start_w:
        state.pop("w", None)  # an idle port keeps no state (no pair with this sample can start a session)
        return None, False
    pair = _window(state, "w", p, now, rule.confirm)
    if pair is None:
        return s, False
    lo, hi, first = pair
    if s is None:
        if lo < rule.start_w:
            return None, False
        start = first  # the session began with the first sample of the pair
        s = state["s"] = {
            "start": start,
            "t": start,
            "p": lo,
            "ph": hi,
            "wh": 0.0,
            "bulk": [],
            "low_since": None,
            "high_since": None,
        }
    dt = max(0.0, now - s["t"])
    if rule.confirm is None or dt <= rule.confirm.max_gap_s:  # a longer gap (or a clock jump) adds no energy
        s["wh"] = round(s["wh"] + s["p"] * dt / 3600, 3)
    s["t"], s["p"], s["ph"] = now, lo, hi
    # The bulk-phase median needs only a few samples; the state is written back on every batch, so keep it small.
    if rule.check in ("no_taper", "full", "rerise") and now - s["start"] <= rule.bulk_s and len(s["bulk"]) < 15:
        s["bulk"].append(lo)
    if hi < rule.end_w:
        s["low_since"] = s["low_since"] or now
        if now - s["low_since"] >= rule.end_s:
            state.pop("s", None)
            return s, True
    else:
        s["low_since"] = None
    return s, False


def evaluate_session(rule: SessionRule, state: State, reading: Reading) -> Transition | None:
    """Charging-session checks in event time (EB-05, EB-07, EB-08, EB-09)."""
    s, ended = _session_step(rule, state, reading)
    ts, now = reading.ts, reading.ts.timestamp()
    if ended:
        if state.get("active"):
            state.pop("active", None)
            state.pop("sev", None)
            state.pop("stopped", None)
            return rule.transition("clear", ts, details={"session_end": True})
        return None
    if s is None:
        return None
    if rule.check == "too_long":
        return _session_age(rule, state, now, ts)
    if rule.check == "energy":
        if s["wh"] > rule.max_wh and not state.get("active"):
            state["active"] = True
            return rule.transition("raise", ts, s["wh"], details={"energy_wh": s["wh"]})
        return None
    if rule.check == "full":
        return _session_full(rule, state, s, ts)
    if rule.check == "rerise":
        return _session_rerise(rule, state, s, ts)
    return _session_no_taper(rule, state, s, ts)


def _session_no_taper(rule: SessionRule, state: State, s: dict[str, Any], ts: datetime) -> Transition | None:
    """EB-05: power stays near the bulk-phase median for taper_s (VRLA runaway / shorted cell signature); the
    rule's actions at stop_after_s."""
    now, p = ts.timestamp(), s["p"]
    bulk = sorted(s["bulk"])
    if now - s["start"] <= rule.bulk_s or not bulk:
        return None
    median = bulk[len(bulk) // 2]
    if s.get("ph", p) < rule.taper_frac * median:
        s["high_since"], s["tapered"] = None, True
        return None
    # The high phase runs from the session's start; after a taper, a new one from the sample that ended it.
    s["high_since"] = s["high_since"] or (now if s.get("tapered") else s["start"])
    high = now - s["high_since"]
    stop = rule.stop_after_s is None or high >= rule.stop_after_s
    active = state.get("active")
    if high < rule.taper_s and not active:
        return None  # the hot path: a session in its high phase, not yet long enough
    details = {"bulk_median_w": median, "hours": round(high / 3600, 2)}
    if not active:
        t = rule.transition("raise", ts, p, details=details)
        state["active"], state["sev"] = True, int(t.severity)
        if stop:
            state["stopped"] = True
        else:
            t.actions, t.lockout = (), False  # the stop comes at stop_after_s
        return t
    if stop and not state.get("stopped"):
        state["stopped"] = True
        t = rule.transition("hold", ts, p, details={**details, "stopped": True})
        t.actions, t.lockout = rule.actions, rule.lockout
        t.severity = Severity(state.get("sev", int(t.severity)))  # the stop does not re-judge night uplift
        return t
    return None


def _session_full(rule: SessionRule, state: State, s: dict[str, Any], ts: datetime) -> Transition | None:
    """EB-08: full when power stays below max(floor, frac x bulk median) for full_s; stop topup_s later."""
    now, p = ts.timestamp(), s["p"]
    bulk = sorted(s["bulk"])
    if state.get("active") or now - s["start"] <= rule.bulk_s or not bulk:
        return None
    median = bulk[len(bulk) // 2]
    limit = max(rule.full_floor_w, rule.full_frac * median)
    if s.get("full_at") is None:
        if s.get("ph", p) >= limit:
            s["full_low"] = None
            return None
        s["full_low"] = s.get("full_low") or now
        if now - s["full_low"] < rule.full_s:
            return None
        s["full_at"] = s["full_low"] + rule.full_s  # the top-up starts; it runs its course whatever the power
    if now - s["full_at"] < rule.topup_s:
        return None
    state["active"] = True
    return rule.transition(
        "raise",
        ts,
        p,
        details={"bulk_median_w": median, "full_below_w": round(limit, 1), "topup_min": round(rule.topup_s / 60)},
    )


def _session_rerise(rule: SessionRule, state: State, s: dict[str, Any], ts: datetime) -> Transition | None:
    """EB-06: after the taper, power rising again (BMS/cell failure signature) for rerise_s."""
    now, p = ts.timestamp(), s["p"]
    bulk = sorted(s["bulk"])
    if state.get("active") or now - s["start"] <= rule.bulk_s or not bulk:
        return None
    median = bulk[len(bulk) // 2]
    low = s.get("taper_min")
    ph = s.get("ph", p)  # the taper and its minimum are judged on confirmed lows: a dropout to 0 is no taper minimum
    if low is None:
        if ph < rule.rerise_taper_frac * median:
            s["taper_min"] = ph
        return None
    if ph < low:
        s["taper_min"], s["rise_since"] = ph, None
        return None
    if p < max(low * (1 + rule.rerise_frac), low + rule.rerise_min_w):
        s["rise_since"] = None
        return None
    s["rise_since"] = s.get("rise_since") or now
    if now - s["rise_since"] < rule.rerise_s:
        return None
    state["active"] = True
    return rule.transition("raise", ts, p, details={"bulk_median_w": median, "taper_min_w": low})


def _session_age(rule: SessionRule, state: State, now: float, at: datetime) -> Transition | None:
    s = state.get("s")
    if s is None or not rule.levels:
        return None
    age = now - s["start"]
    reached = [sev for after, sev in rule.levels if age >= after]
    if not reached:
        return None
    sev = max(reached)
    details = {"session_h": round(age / 3600, 2)}
    if not state.get("active"):
        state["active"], state["sev"] = True, int(sev)
        t = rule.transition("raise", at, round(age / 3600, 2), severity=sev, details=details)
        if sev < max(level for _, level in rule.levels):
            t.actions = ()  # only the top level (12 h) stops the session
        return t
    if int(sev) > int(state.get("sev", 0)):
        state["sev"] = int(sev)
        t = rule.transition("hold", at, round(age / 3600, 2), severity=sev, details=details)
        t.actions = rule.actions  # the higher level (12 h) stops the session
        t.lockout = False
        return t
    return None


def tick_session(rule: SessionRule, state: State, *, now: datetime) -> Transition | None:
    """The timer's view of a session's length: a port that went quiet mid-session still ages."""
    if rule.check != "too_long":
        return None
    return _session_age(rule, state, now.timestamp(), now)


def evaluate_reboot(rule: RebootRule, state: State, reading: Reading) -> Transition | None:
    """Count counter restarts (seq lower than the last one) within the window."""
    seq = reading.value(rule.field)
    # Only a device's own counter (>= 0): bridges' readings carry a content digest (< 0) as their seq.
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return None
    now = reading.ts.timestamp()
    last = state.get("seq")
    state["seq"] = seq
    resets: list[float] = [t for t in state.get("r", []) if now - t < rule.window_s]
    if last is not None and seq < last:
        resets.append(now)
    if resets:
        state["r"] = resets
    else:
        state.pop("r", None)
    if not state.get("active"):
        if len(resets) >= rule.count:
            state["active"] = True
            return rule.transition(
                "raise",
                reading.ts,
                float(len(resets)),
                details={"restarts": len(resets), "window_s": rule.window_s, "seq": seq, "previous_seq": last},
            )
        return None
    if not resets:
        state.pop("active", None)
        return rule.transition("clear", reading.ts, 0.0)
    return None


def evaluate_drift(rule: DriftRule, state: State, reading: Reading) -> Transition | None:
    """A steady lag between device time and arrival raises; a shrinking one is a backlog draining."""
    rx = reading.received_at.timestamp()
    lag = rx - reading.ts.timestamp()
    if lag < rule.max_lag_s:
        if state.get("active") and lag < rule.clear_below_s:
            state.clear()
            return rule.transition("clear", reading.ts, round(lag, 1))
        if not state.get("active"):
            state.clear()
        return None
    lo, hi = min(lag, state.get("lo", lag)), max(lag, state.get("hi", lag))
    if "since" not in state or hi - lo > rule.spread_s:
        state.update(since=rx, lo=lag, hi=lag)
        return None
    state["lo"], state["hi"] = lo, hi
    if not state.get("active") and rx - state["since"] >= rule.for_s:
        state["active"] = True
        return rule.transition(
            "raise",
            reading.ts,
            round(lag, 1),
            details={"lag_s": round(lag, 1), "spread_s": round(hi - lo, 1), "held_s": round(rx - state["since"])},
        )
    return None


def evaluate_clock(rule: ClockRule, state: State, reading: Reading) -> Transition | None:
    """A device time ahead of arrival by more than max_ahead_s raises; one within clear_within_s clears."""
    device_ts = reading.device_ts or reading.ts
    ahead = device_ts.timestamp() - reading.received_at.timestamp()
    if ahead > rule.max_ahead_s:
        if state.get("active"):
            return None
        state["active"] = True
        return rule.transition("raise", reading.ts, round(ahead, 1), details={"ahead_s": round(ahead, 1)})
    if state.get("active") and ahead <= rule.clear_within_s:
        state.clear()
        return rule.transition("clear", reading.ts, round(ahead, 1))
    return None


def evaluate_stuck(rule: StuckRule, state: State, reading: Reading) -> Transition | None:
    """No change in the watched fields and no passed self-test for window_s."""
    now = reading.ts.timestamp()
    if reading.test:
        state["ok"] = now
        if state.get("active"):
            state.pop("active")
            return rule.transition("clear", reading.ts, details={"self_test": True})
        return None
    sig = [reading.value(f) for f in rule.fields]
    if sig == state.get("sig") and not state.get("active"):
        if now - state["ok"] < rule.window_s:
            return None  # the hot path: unchanged, within the window
    elif all(v is None for v in sig):
        return None
    if "ok" not in state:
        state["ok"], state["sig"] = now, sig
        return None
    if sig != state.get("sig"):
        state["sig"], state["ok"] = sig, now
        if state.get("active"):
            state.pop("active")
            return rule.transition("clear", reading.ts, details={"changed": True})
        return None
    if now - state["ok"] >= rule.window_s and not state.get("active"):
        state["active"] = True
        return rule.transition("raise", reading.ts, details={"unchanged_days": round((now - state["ok"]) / 86400)})
    return None


def evaluate_realarm(rule: RealarmRule, state: State, reading: Reading) -> Transition | None:
    """The flag's rising edge (off -> on) is a candidate; the service keeps it only after a reset command."""
    value = reading.value(rule.field)
    if value is None:
        return None
    was = bool(state.pop("on", False))
    if value:
        state["on"] = True
        if not was:
            return rule.transition("raise", reading.ts, details={"realarm": True, "after": rule.after})
    return None


_EVALUATORS: dict[type, Any] = {
    ThresholdRule: evaluate_threshold,
    DurationRule: evaluate_duration,
    FlagRule: evaluate_flag,
    HushRule: evaluate_hush,
    DoseRule: evaluate_dose,
    GapRule: evaluate_gap,
    RateOfRiseRule: evaluate_rate_of_rise,
    AbsenceRule: evaluate_absence,
    SessionRule: evaluate_session,
    StuckRule: evaluate_stuck,
    RebootRule: evaluate_reboot,
    DriftRule: evaluate_drift,
    ClockRule: evaluate_clock,
    CorroborateRule: lambda _rule, _state, _reading: None,
    RepeatRule: lambda _rule, _state, _reading: None,
    RealarmRule: evaluate_realarm,
    NoCancelRule: lambda _rule, _state, _reading: None,
    OutageRule: lambda _rule, _state, _reading: None,
    PlacementRule: lambda _rule, _state, _reading: None,
    CommissioningRule: lambda _rule, _state, _reading: None,
}


Evaluator = Callable[[Any, State, Reading], Transition | None]


def evaluator(rule: AnyRule) -> Evaluator:
    """The function evaluate() calls for this rule (the hot path looks it up once per rule, not per reading)."""
    found: Evaluator = _EVALUATORS[type(rule)]
    return found


def evaluate(rule: AnyRule, state: State, reading: Reading) -> Transition | None:
    """Evaluate one rule against one reading, updating the rule's state in place."""
    return evaluator(rule)(rule, state, reading)


def repeat_due(rule: RepeatRule, *, alarm_type: str, disposition: str, resolved_count: int) -> bool:
    """Whether resolving an alarm of `alarm_type` with `disposition` makes `resolved_count` such alarms
    (this one included) in the window reach the rule's count."""
    return rule.enabled and alarm_type in rule.of and disposition == rule.disposition and resolved_count >= rule.count


def utcnow() -> datetime:
    """The wall clock (absence only)."""
    return datetime.now(UTC)
