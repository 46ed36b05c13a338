"""API models (XRead for responses, XWrite/XIn for requests)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from core import registry
from core.domain import Adapter, Alarm, DeviceKind, Disposition, Location, Mounting, Severity, SiteKind, WorkerRole
from core.readmodel import RowRead
from notify.repo import Silence
from rules.actuation.repo import CommandRow
from rules.commissioning.repo import CheckRow
from score.schemas import MerchantScoreRead

T = TypeVar("T")
Id = registry.Id


class AlarmRead(RowRead):
    """An alarm as the API shows it: the stored row, its severity as a word and a priority."""

    ROW = Alarm
    DERIVED = frozenset({"severity", "priority"})

    id: int
    device_id: str
    site_id: str
    micro_grid_id: str
    type: str
    rule_id: str
    severity: str = Field(description="critical | major | minor | info")
    priority: str = Field(description="P1..P4")
    active: bool
    acknowledged: bool
    raised_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    disposition: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str

    @classmethod
    def of(cls, row: Any) -> Self:
        sev = Severity(row.severity)
        data = {k: getattr(row, k) for k in cls.model_fields if k not in cls.DERIVED}
        return cls(severity=sev.label, priority=sev.priority, **data)


class BoardItem(BaseModel):
    alarm: AlarmRead
    site_name: str
    site_address: str
    ladder_step: int | None = Field(description="the escalation ladder's highest step told; null: no ladder")
    tiers_reached: list[str] = Field(description="every tier the ladder has told so far, in ladder order")
    escalated: bool = Field(description="unacknowledged and climbed past the first step")
    escalated_to: list[str] = Field(description="the tiers of the step it has climbed to (when escalated)")
    escalated_at: datetime | None = Field(description="when it last climbed (when escalated)")
    reached_you: bool = Field(description="escalated to your tier (for an admin: escalated at all)")
    waiting_s: float | None = Field(description="seconds since it was raised, while nobody has acknowledged it")


class BoardRead(BaseModel):
    tier: str | None = Field(description="your tier on the ladder (worker, leader, community, fire_station)")
    items: list[BoardItem]


class AlarmPage(BaseModel):
    items: list[AlarmRead]
    next_before: int | None = Field(description="pass as ?before= for the next page; null when done")


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disposition: Disposition
    note: str | None = Field(default=None, max_length=2000)


class FieldError(BaseModel):
    field: str = Field(description="where: body.name, query.limit, path.alarm_id")
    message: str


class Problem(BaseModel):
    detail: str
    errors: list[FieldError] | None = None


class AlarmEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    kind: str
    actor: str | None
    severity: int | None
    details: dict[str, Any]


class ReadingRead(BaseModel):
    ts: datetime
    seq: int
    values: dict[str, float | bool | str] = Field(description="only the fields the device sent")


class AlarmDetail(BaseModel):
    alarm: AlarmRead
    note: str | None
    site_name: str
    site_address: str
    events: list[AlarmEventRead]
    readings: list[ReadingRead] = Field(
        description="the device's readings from 10 min before the alarm to 10 min after it ended (at most 500)"
    )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_offset: int | None = Field(description="pass as ?offset= for the next page; null when done")


# -- auth ------------------------------------------------------------------------------------------------------


class Me(BaseModel):
    token_id: int
    role: Literal["admin", "worker", "merchant"]
    worker_id: str | None
    merchant_id: str | None
    worker_role: str | None = Field(default=None, description="a worker's registry role, which sets their scope")
    communities: list[str] | None = Field(default=None, description="an admin token's communities; null: all")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "worker", "merchant"]
    worker_id: Id | None = None
    merchant_id: Id | None = None
    label: str = Field(default="", max_length=200)
    days: int = Field(default=90, ge=1, le=3660, description="expires after this many days (every token expires)")
    communities: list[Id] | None = Field(
        default=None,
        max_length=100,
        description="admin only: limit the token to these communities (a community's admin); "
        "omit for an admin of every community (a street office)",
    )

    @model_validator(mode="after")
    def _subject(self) -> TokenCreate:
        if self.role == "worker" and not self.worker_id:
            raise ValueError("a worker token needs worker_id")
        if self.role == "merchant" and not self.merchant_id:
            raise ValueError("a merchant token needs merchant_id")
        if self.communities is not None and self.role != "admin":
            raise ValueError("communities limit admin tokens only (a worker's or merchant's scope is their own)")
        if self.communities is not None and not self.communities:
            raise ValueError("communities: give at least one, or omit it for every community")
        return self


class TokenRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    role: str
    worker_id: str | None
    merchant_id: str | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    communities: list[str] | None = Field(default=None, description="an admin token's communities; null: all")


class LinksRevoked(BaseModel):
    recipient_kind: Literal["worker", "merchant"]
    recipient_id: str
    not_before: datetime = Field(description="alarm links sent to them before this instant are refused")


class TokenCreated(BaseModel):
    id: int
    token: str = Field(description="shown once; only its hash is stored")
    role: str
    expires_at: datetime | None
    communities: list[str] | None = None


# -- devices and readings ------------------------------------------------------------------------------------------


class DeviceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    site_id: str
    site_name: str
    micro_grid_id: str
    merchant_id: str | None
    location: str
    adapter: str
    battery: bool
    report_interval_s: int
    model: str
    active: bool
    online: bool | None = Field(description="last reported status; null if never reported")
    last_seen_at: datetime | None
    offline: bool = Field(description="reported offline, or silent for over twice its report interval")
    open_alarms: int


class BucketRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    bucket: datetime
    n: int
    min: float | None
    max: float | None
    avg: float | None


class ReadingSeries(BaseModel):
    device_id: str
    field: str
    start: datetime
    end: datetime
    width_s: int = Field(description="bucket width in seconds")
    storage: Literal["timescale", "plain"]
    buckets: list[BucketRead]


# -- registry -----------------------------------------------------------------------------------------------------


class _Write(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommunityWrite(_Write):
    name: str = Field(min_length=1, max_length=200)
    timezone: str = "Asia/Shanghai"
    address: str = ""


class CommunityRead(CommunityWrite):
    id: str


class GridWrite(_Write):
    community_id: Id
    name: str = Field(min_length=1, max_length=200)


class GridRead(GridWrite):
    id: str


class MicroGridWrite(_Write):
    grid_id: Id
    name: str = Field(min_length=1, max_length=200)


class MicroGridRead(MicroGridWrite):
    id: str


class WorkerWrite(_Write):
    community_id: Id
    name: str = Field(min_length=1, max_length=200)
    role: WorkerRole
    phone: str = ""
    locale: Literal["zh-CN", "en"] = "zh-CN"
    notify: list[str] = Field(default_factory=list, description="apprise URLs")
    micro_grids: list[Id] = Field(default_factory=list)
    grids: list[Id] = Field(default_factory=list)
    roster: str | None = Field(default=None, description='e.g. "Mon-Fri 09:00-17:00"; none = always')
    on_call: bool = False
    active: bool = True

    @model_validator(mode="after")
    def _like_the_registry_file(self) -> WorkerWrite:
        """Roster and URL rules are the registry file's (core/registry.py), not a second copy."""
        try:
            registry.WorkerIn(id="x", name=self.name, role=self.role, notify=self.notify, roster=self.roster)
        except ValidationError as exc:
            raise ValueError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
        return self


class WorkerRead(WorkerWrite):
    id: str


class MerchantWrite(_Write):
    community_id: Id
    name: str = Field(min_length=1, max_length=200)
    contact: str = ""
    phone: str = ""
    notify: list[str] = Field(default_factory=list, description="apprise URLs")


class MerchantRead(MerchantWrite):
    id: str


class SiteWrite(_Write):
    micro_grid_id: Id
    merchant_id: Id | None = None
    kind: SiteKind
    name: str = ""
    address: str = ""
    floor: int | None = Field(default=None, ge=-10, le=200)
    flags: list[str] = Field(default_factory=list)
    lpg: bool = False
    building: Id | None = Field(default=None, description="the building a shop or storage unit is in (DEV-03)")
    lat: float | None = Field(default=None, ge=-90, le=90, description="WGS-84 latitude, for the map (issue 22)")
    lon: float | None = Field(default=None, ge=-180, le=180, description="WGS-84 longitude; both or neither")

    @model_validator(mode="after")
    def _both_coordinates(self) -> SiteWrite:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("give both lat and lon, or neither")
        return self


class SiteRead(SiteWrite):
    id: str


class DeviceWrite(_Write):
    kind: DeviceKind
    site_id: Id
    location: Location
    adapter: Adapter = Adapter.NATIVE
    foreign_id: str | None = Field(default=None, max_length=200)
    battery: bool = False
    report_interval_s: int | None = Field(
        default=None, ge=1, le=7 * 24 * 3600, description="default: 300 s mains, 24 h battery"
    )
    gateway_id: Id | None = None
    model: str = ""
    mounting: Mounting | None = Field(default=None, description="floor | ceiling | wall (gas detectors, GAS-08)")
    active: bool = True

    @model_validator(mode="after")
    def _foreign(self) -> DeviceWrite:
        if self.adapter is not Adapter.NATIVE and not self.foreign_id:
            raise ValueError(f"adapter {self.adapter.value} needs foreign_id (the bridge's name for the device)")
        return self


class DeviceRegistryRead(DeviceWrite):
    id: str


class ImportResult(BaseModel):
    community: str
    counts: dict[str, int]


# -- KPIs and rules ----------------------------------------------------------------------------------------------------


class Percentiles(BaseModel):
    p50_s: float | None
    p90_s: float | None


class KpiRead(BaseModel):
    scope: Literal["community", "grid"]
    id: str
    since: datetime
    until: datetime
    alarms: int
    alarms_by_type: dict[str, int]
    acknowledged: int
    resolved: int
    time_to_acknowledge: Percentiles
    time_to_resolve: Percentiles
    unreached_notifications: int = Field(description="notifications that failed for good")
    devices: int
    devices_offline: int
    devices_never_seen: int
    devices_not_commissioned: int = Field(description="active devices that never passed a commissioning check (now)")
    last_real_hazard_at: datetime | None
    days_without_real_hazard: int | None = Field(
        description="whole days since the last alarm resolved as a real hazard was raised; null if there never was one"
    )


class RulesRead(BaseModel):
    rules: list[dict[str, Any]]
    score_policy: dict[str, Any] | None = Field(description="the merchant score policy in force, when available")


class SilenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: Id | None = None
    device_id: Id | None = None
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime
    reason: str = Field(default="", max_length=500)
    include_life_safety: bool = Field(default=False, description="also silence gas, CO and smoke (explicit)")

    @model_validator(mode="after")
    def _target(self) -> SilenceCreate:
        if (self.site_id is None) == (self.device_id is None):
            raise ValueError("give exactly one of site_id or device_id")
        if self.ends_at.tzinfo is None or (self.starts_at is not None and self.starts_at.tzinfo is None):
            raise ValueError("give times with a time zone (e.g. 2026-01-01T08:00:00+08:00)")
        if self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class SilenceRead(RowRead):
    ROW = Silence

    id: int
    site_id: str | None
    device_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None
    include_life_safety: bool
    created_at: datetime


class FindingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    site_id: Id
    kind: str = Field(
        min_length=1,
        max_length=64,
        description="a finding kind of the score policy, e.g. blocked_exit (GET /api/v1/admin/rules lists them)",
    )
    note: str = Field(default="", max_length=2000)
    due_at: datetime | None = Field(default=None, description="rectification deadline; default from the policy")
    alarm_id: int | None = Field(default=None, ge=1, le=2**62, description="the alarm that led to the visit, if any")


class FindingClose(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class CorrectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=5, max_length=2000, description="shown to the merchant")
    points: int | None = Field(default=None, ge=-100, le=100, description="omit to reverse corrects_entry_id in full")
    corrects_entry_id: int | None = Field(default=None, ge=1, le=2**62)


class CommunityScoresPage(BaseModel):
    community_id: str | None
    tiers: dict[str, int]
    review: int
    items: list[MerchantScoreRead]
    next_offset: int | None


CommandAction = Literal["self_test", "silence", "cut_power", "restore_power", "close_valve", "open_valve"]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: CommandAction = Field(
        description="open_valve is always refused (reopen a gas valve by hand on site); "
        "restore_power is refused while the port is locked after a safety trip"
    )
    reason: str = Field(default="", max_length=2000)


class CommandRead(RowRead):
    ROW = CommandRow

    id: str
    device_id: str
    action: str
    alarm_id: int | None
    reason: str
    requested_by: str | None
    status: str
    created_at: datetime
    deadline_at: datetime


class CommissionIn(BaseModel):
    """Start a commissioning check (issue 19)."""

    model_config = ConfigDict(extra="forbid")

    within_s: float | None = Field(
        default=None, gt=0, le=24 * 3600, description="the window to report (and test) in; default the rule's 600 s"
    )
    silence: bool = Field(
        default=True,
        description="silence the device's notifications for the window, life-safety included: the installer is on "
        "site and the test press raises its alarm (RULES-REFERENCE 7.3.6 installer window)",
    )


class CommissioningRead(RowRead):
    """One commissioning check."""

    ROW = CheckRow

    id: int
    device_id: str
    started_at: datetime
    started_by: str
    deadline_at: datetime
    needs_test: bool
    status: str
    reported_at: datetime | None
    tested_at: datetime | None
    test_signal: str | None
    finished_at: datetime | None
    reason: str


class CommissioningStatusRead(BaseModel):
    """Whether a device is commissioned (it passed a check), and its checks, newest first."""

    device_id: str
    commissioned: bool
    checks: list[CommissioningRead]


class UnlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000, description="what was checked on site")


class PortLockRead(BaseModel):
    device_id: str
    locked: bool
    reason: str | None = None
    locked_at: datetime | None = None
