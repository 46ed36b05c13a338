"""Scenarios as data: the devices a story needs, what happens to them in event time, and what the
system must make of it (the alarms it must raise, and the messages it must reject)."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.domain import Adapter, DeviceKind, Location, Severity, SiteKind
from core.errors import ConfigError

_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from 90, "90s", "15m", "8h", "1.5d"."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 15m")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration like 30s, 15m, 8h")
    return float(match.group(1)) * _UNITS[match.group(2)]


Seconds = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSpec(_Strict):
    id: str
    kind: SiteKind = SiteKind.BUILDING
    lpg: bool = False


class DeviceSpec(_Strict):
    """A registry device the scenario needs, and how its simulator behaves."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    kind: DeviceKind
    location: Location
    site: str = "site-1"
    adapter: Adapter = Adapter.NATIVE
    foreign_id: str | None = None
    gateway: str | None = None
    battery: bool | None = None
    interval: Seconds | None = None
    report_interval_s: int | None = None  # what the registry says (default: the simulated interval)
    ts_style: Literal["epoch_ms", "rfc3339"] = "epoch_ms"
    options: dict[str, Any] = Field(default_factory=dict)  # model keyword arguments
    wire: dict[str, Any] = Field(default_factory=dict)  # z2m_output, z2m_legacy_availability, z2m_last_seen

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _foreign(self) -> DeviceSpec:
        if self.adapter is not Adapter.NATIVE and not self.foreign_id:
            raise ValueError(f"device {self.id}: adapter {self.adapter} needs a foreign_id")
        return self


VERBS = (
    "set",
    "ramp",
    "flap",
    "drift",
    "plug",
    "unplug",
    "fault",
    "self_test",
    "tamper",
    "battery",
    "die",
    "offline",
    "online",
    "skew",
    "duplicate",
    "reorder",
    "raw",
    "interval",
    "report",
)


class Step(_Strict):
    """One thing that happens at an event time (seconds from the scenario start)."""

    at: float
    device: str | None = None
    say: str = ""  # one line of narration for the progress display
    set: dict[str, float] | None = None
    ramp: dict[str, float] | None = None
    over: float | None = None
    flap: dict[str, Any] | None = None  # {field, low, high, period}: a square wave across a threshold
    drift: dict[str, float] | None = None  # field -> change per hour
    plug: dict[str, Any] | None = None  # Pack fields
    unplug: bool = False
    fault: str | None = None
    self_test: bool = False
    tamper: bool | None = None
    battery: dict[str, float] | None = None  # pct, drain_pct_per_day
    die: bool = False  # stops for good; the broker publishes its last will
    offline: bool = False  # loses its connection (a gateway buffers its children's messages meanwhile)
    online: bool = False  # comes back (and flushes the buffer)
    skew: float | None = None  # device clock offset, seconds
    duplicate: int | None = None  # send every n-th message twice (0 = stop)
    reorder: int | None = None  # shuffle messages in windows of n (0 = stop)
    raw: dict[str, Any] | None = None  # {channel | topic, payload | text}: a message as-is
    interval: float | None = None
    report: bool = False  # an event-driven report right now

    @field_validator("at", "over", "interval", "skew", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _one_verb(self) -> Step:
        used = [v for v in VERBS if getattr(self, v) is not None and getattr(self, v) is not False]
        if len(used) != 1 and not (self.say and not used):
            raise ValueError(f"a step at {self.at}s does exactly one of {', '.join(VERBS)} (got {used or 'none'})")
        if self.ramp is not None and self.over is None:
            raise ValueError(f"ramp at {self.at}s needs over: (e.g. over: 10m)")
        return self


class AlarmExpect(_Strict):
    alarm_type: str
    device: str | None = None
    severity: str | None = None
    events: list[str] | None = None  # e.g. [raised, cleared]: the alarm's event kinds in order

    @field_validator("severity")
    @classmethod
    def _severity(cls, value: str | None) -> str | None:
        if value is not None:
            Severity.parse(value)
        return value


class RejectExpect(_Strict):
    reason: str  # a substring of ingest_reject.reason
    count: int = Field(default=1, ge=1)


class CommandExpect(_Strict):
    device: str
    action: str  # the native action the device obeyed (close_valve, cut_power, ...)


class Expect(_Strict):
    alarms: list[AlarmExpect] | Literal["none"]
    rejects: list[RejectExpect] | Literal["none"] = "none"
    commands: list[CommandExpect] = Field(default_factory=list)  # actuation the devices must receive and obey

    @property
    def alarm_list(self) -> list[AlarmExpect]:
        return [] if self.alarms == "none" else self.alarms

    @property
    def reject_list(self) -> list[RejectExpect]:
        return [] if self.rejects == "none" else self.rejects


class Scenario(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    title: str
    description: str = ""
    start: float = 12 * 3600  # event time starts this long before now
    # day / night: place the whole timeline inside 06:00-22:00 or 22:00-06:00 local time (the rules' EB-11 night
    # uplift judges the readings' own time), so the expected severities do not depend on when the suite runs.
    local_time: Literal["any", "day", "night"] = "any"
    # The part of the timeline that must fall in that part of the day (default: all of it), e.g. only the
    # moment a rule raises.
    local_window: tuple[float, float] | None = None
    timezone: str = "Asia/Shanghai"
    duration: float
    speed: float | None = Field(default=None, gt=0)  # event seconds per wall second; None = as fast as possible
    seed: int = 1
    sites: list[SiteSpec] = Field(default_factory=list)
    devices: list[DeviceSpec] = Field(min_length=1)
    timeline: list[Step] = Field(default_factory=list)
    expect: Expect

    @field_validator("start", "duration", mode="before")
    @classmethod
    def _durations(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("local_window", mode="before")
    @classmethod
    def _window(cls, value: Any) -> tuple[float, float] | None:
        if value is None:
            return None
        begin, end = (parse_duration(v) for v in value)
        if not 0 <= begin < end:
            raise ValueError("local_window is [from, to] with from < to")
        return begin, end

    def event_start(self, now: float) -> float:
        """When event time starts (epoch s): `start` before now, or for a day/night scenario the latest start that
        keeps the whole timeline inside that part of the local day and no older than 23 h."""
        if self.local_time == "any":
            return now - self.start
        tz = ZoneInfo(self.timezone)
        want_night = self.local_time == "night"

        begin, end = self.local_window or (0.0, self.duration)

        def fits(t0: float) -> bool:
            checks = int((end - begin) // 60) + 1
            for i in range(checks + 1):
                hour = datetime.fromtimestamp(t0 + min(begin + i * 60, end), tz).hour
                if (hour >= 22 or hour < 6) != want_night:
                    return False
            return True

        t0 = now - self.duration - 60  # a minute of slack: the last reading must not be in the future
        while t0 >= now - 23 * 3600:
            if fits(t0):
                return t0
            t0 -= 300
        raise ValueError(f"{self.name}: no {self.local_time} window of {self.duration / 3600:g} h in the last 23 h")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate device ids")
        self._check_timing()
        self._check_references(ids)
        return self

    def _check_timing(self) -> None:
        """The timeline fits its part of the day and lies between 23 h ago and now."""
        span = (self.local_window[1] - self.local_window[0]) if self.local_window else self.duration
        if (self.local_time == "day" and span > 16 * 3600) or (self.local_time == "night" and span > 8 * 3600):
            raise ValueError(f"{span}s does not fit in one {self.local_time} (day 06:00-22:00, night 22:00-06:00)")
        if self.local_window and self.local_window[1] > self.duration:
            raise ValueError("local_window ends after the scenario")
        if self.duration > self.start:
            raise ValueError(
                f"duration {self.duration}s runs past now (start {self.start}s ago): readings "
                "from the future are rejected"
            )
        if self.start > 23 * 3600:
            raise ValueError("start more than 23 h ago: ingest rejects readings older than 24 h")

    def _check_references(self, ids: list[str]) -> None:
        """Steps, expected alarms and gateways name devices of the scenario; no step is after the end."""
        for step in self.timeline:
            if step.device is not None and step.device not in ids:
                raise ValueError(f"step at {step.at}s names unknown device {step.device!r}")
            if step.at > self.duration:
                raise ValueError(f"step at {step.at}s is after the end ({self.duration}s)")
        for alarm in self.expect.alarm_list:
            if alarm.device is not None and alarm.device not in ids:
                raise ValueError(f"expected alarm names unknown device {alarm.device!r}")
        for d in self.devices:
            if d.gateway is not None and d.gateway not in ids:
                raise ValueError(f"device {d.id} names unknown gateway {d.gateway!r}")

    @property
    def alarm_types(self) -> set[str]:
        return {a.alarm_type for a in self.expect.alarm_list}

    @property
    def adapters(self) -> set[Adapter]:
        return {d.adapter for d in self.devices}


def parse_scenario(data: Any, source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{source}: {problems}") from None


def load_scenario_file(path: Path) -> Scenario:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(data, str(path))


@cache
def library() -> dict[str, Scenario]:
    """Every scenario shipped in simulators/scenarios/, by name."""
    found: dict[str, Scenario] = {}
    folder = resources.files("simulators").joinpath("scenarios")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        scenario = parse_scenario(yaml.safe_load(entry.read_text(encoding="utf-8")), f"scenarios/{entry.name}")
        if scenario.name in found:
            raise ConfigError(f"scenarios/{entry.name}: duplicate scenario name {scenario.name}")
        if entry.name != f"{scenario.name}.yaml":
            raise ConfigError(f"scenarios/{entry.name}: file name must be {scenario.name}.yaml")
        found[scenario.name] = scenario
    return found


def get_scenario(name_or_path: str) -> Scenario:
    """A library scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return load_scenario_file(path)
    scenarios = library()
    if name_or_path not in scenarios:
        raise ConfigError(f"no scenario {name_or_path!r}; choose from {', '.join(sorted(scenarios))}")
    return scenarios[name_or_path]


def foreign_name(spec: DeviceSpec, tag: str) -> str | None:
    """The foreign id used on the wire and in the registry (tagged so parallel runs do not collide)."""
    if spec.foreign_id is None:
        return None
    return f"{spec.foreign_id}-{tag}" if tag else spec.foreign_id


def registry_document(scenario: Scenario, *, notify_url: str = "json://127.0.0.1:9/", tag: str = "") -> dict[str, Any]:
    """A registry (as loaded by `gridwatch load`) holding exactly the devices the scenario needs."""
    site_specs = {s.id: s for s in scenario.sites}
    for d in scenario.devices:
        site_specs.setdefault(d.site, SiteSpec(id=d.site))
    devices = []
    for d in scenario.devices:
        entry: dict[str, Any] = {
            "id": d.id,
            "kind": d.kind.value,
            "site": d.site,
            "location": d.location.value,
            "adapter": d.adapter.value,
        }
        if d.foreign_id:
            entry["foreign_id"] = foreign_name(d, tag)
        if d.gateway:
            entry["gateway"] = d.gateway
        battery = d.battery if d.battery is not None else d.kind in (DeviceKind.SMOKE_DETECTOR, DeviceKind.CO_ALARM)
        entry["battery"] = battery
        interval = d.report_interval_s or (int(d.interval) if d.interval else None)
        if interval:
            entry["report_interval_s"] = max(1, interval)
        devices.append(entry)
    # Gateways first: the registry checks that a named gateway exists.
    devices.sort(key=lambda e: e["kind"] != DeviceKind.GATEWAY.value)
    return {
        "community": {"id": "sim", "name": f"Scenario {scenario.name}"},
        "grids": [{"id": "sim-g1", "name": "Grid 1", "micro_grids": [{"id": "sim-mg1", "name": "Micro-grid 1"}]}],
        "workers": [
            {
                "id": "sim-w1",
                "name": "Sim worker",
                "role": "micro_grid_worker",
                "micro_grids": ["sim-mg1"],
                "notify": [notify_url],
            }
        ],
        "sites": [
            {"id": s.id, "kind": s.kind.value, "micro_grid": "sim-mg1", "name": s.id, "lpg": s.lpg}
            for s in site_specs.values()
        ],
        "devices": devices,
    }
