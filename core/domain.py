"""Domain types shared by every stage: readings, device kinds, severities, alarm states."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any


class DeviceKind(StrEnum):
    GAS_DETECTOR = "gas_detector"
    CO_ALARM = "co_alarm"
    SMOKE_DETECTOR = "smoke_detector"
    CHARGING_PORT = "charging_port"
    SMART_SOCKET = "smart_socket"
    GAS_VALVE = "gas_valve"
    GATEWAY = "gateway"


class Location(StrEnum):
    KITCHEN = "kitchen"
    ROOM = "room"
    CORRIDOR = "corridor"
    STAIRWELL = "stairwell"
    STORAGE = "storage"
    CHARGING_SHED = "charging_shed"
    OUTDOOR = "outdoor"


class Adapter(StrEnum):
    NATIVE = "native"
    ZIGBEE2MQTT = "zigbee2mqtt"
    SHELLY = "shelly"
    TASMOTA = "tasmota"
    ESPHOME = "esphome"


class SiteKind(StrEnum):
    BUILDING = "building"
    SHOP = "shop"
    STORAGE = "storage"
    CHARGING_SHED = "charging_shed"


class Mounting(StrEnum):
    """Where a detector is mounted (GB 50028 10.8.2: within 0.3 m of the floor or of the ceiling)."""

    FLOOR = "floor"
    CEILING = "ceiling"
    WALL = "wall"


class WorkerRole(StrEnum):
    MICRO_GRID_WORKER = "micro_grid_worker"
    GRID_LEADER = "grid_leader"
    COMMUNITY_DUTY = "community_duty"
    FIRE_STATION = "fire_station"


class Severity(IntEnum):
    """P1..P4 of RULES-REFERENCE 7.1; a larger value is more severe so max() picks the worst."""

    INFO = 1  # P4
    MINOR = 2  # P3
    MAJOR = 3  # P2
    CRITICAL = 4  # P1

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def priority(self) -> str:
        return f"P{5 - self.value}"

    @classmethod
    def parse(cls, value: str | int) -> Severity:
        """Accept 'critical', 'P1' or 4."""
        if isinstance(value, int):
            return cls(value)
        text = value.strip().lower()
        if text.startswith("p") and text[1:].isdigit():
            return cls(5 - int(text[1:]))
        return cls[text.upper()]


class Disposition(StrEnum):
    REAL_HAZARD = "real_hazard"
    FALSE_ALARM = "false_alarm"
    TEST = "test"
    DEVICE_FAULT = "device_fault"


# Telemetry measurement fields of the v1 contract (DESIGN.md), in the column order of `reading`.
MEASUREMENT_FIELDS: tuple[str, ...] = (
    "gas_lel",
    "co_ppm",
    "smoke_db_m",
    "temp_c",
    "power_w",
    "current_a",
    "voltage_v",
    "energy_wh",
    "battery_pct",
)
FLAG_FIELDS: tuple[str, ...] = ("gas", "smoke", "tamper", "test")
STATE_FIELDS: tuple[str, ...] = ("relay", "valve", "fault")


@dataclass(slots=True)
class Reading:
    """One validated device message, in event time."""

    device_id: str
    ts: datetime
    received_at: datetime
    seq: int | None = None
    gas_lel: float | None = None
    co_ppm: float | None = None
    smoke_db_m: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    current_a: float | None = None
    voltage_v: float | None = None
    energy_wh: float | None = None
    battery_pct: float | None = None
    gas: bool | None = None
    smoke: bool | None = None
    tamper: bool | None = None
    test: bool | None = None
    relay: str | None = None
    valve: str | None = None
    fault: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    # The device's own timestamp when the rules judge the reading at another time (its clock ran ahead of its
    # arrival by more than the bound: rules.service judges it at arrival instead); None otherwise.
    device_ts: datetime | None = None

    def value(self, name: str) -> Any:
        """A field by name, looking in extras for names outside the contract."""
        if name in _READING_SLOTS:
            return getattr(self, name)
        return self.extras.get(name)


_READING_SLOTS = frozenset(MEASUREMENT_FIELDS + FLAG_FIELDS + STATE_FIELDS + ("seq", "ts"))
READING_ATTRIBUTES = _READING_SLOTS  # the fields Reading.value finds as attributes (the rest are extras)


@dataclass(slots=True, frozen=True)
class DeviceStatus:
    """A device's availability as reported on its status topic (or a bridge's)."""

    device_id: str
    online: bool
    at: datetime


@dataclass(slots=True, frozen=True)
class Device:
    """The registry facts about a device that ingest and rules need on the hot path."""

    id: str
    kind: DeviceKind
    site_id: str
    location: Location
    adapter: Adapter = Adapter.NATIVE
    foreign_id: str | None = None
    report_interval_s: int = 300
    battery: bool = False
    gateway_id: str | None = None
    building_id: str | None = None  # the site's building (DEV-03), the site itself when none is named
    mounting: str | None = None  # floor | ceiling | wall: gas detector height class (GAS-08)
    lpg: bool = False  # the site burns LPG (heavier than air) rather than natural gas


@dataclass(slots=True)
class Alarm:
    """An alarm as stored (table `alarm`, written only by rules): the one shape every stage reads it in.
    severity is Severity's int (4 = critical); details holds the rule's evidence."""

    id: int
    device_id: str
    site_id: str
    micro_grid_id: str
    type: str
    rule_id: str
    severity: int
    active: bool
    acknowledged: bool
    latching: bool
    raised_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    disposition: str | None
    note: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str
    details: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None
