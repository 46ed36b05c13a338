"""Turn an MQTT message into readings, statuses, device events or command acks, or a rejection with a reason.

Every message ends in exactly one of these (issue 19): nothing is dropped without a record. A message that is valid
but not device data (a bridge's bookkeeping, a command published by us or another client, a retained message being
cleared) is a Reject of kind "not_data": recorded with its reason like any reject, its payload cut to
NOT_DATA_PAYLOAD_BYTES (it is kept to show what it was, not to be replayed).

Decoders are pure: they never touch the network or the database; device lookups come in through
a DeviceLookup so adapters can map a bridge's name to a registry device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from core.domain import Adapter, Device, DeviceStatus, Reading
from ingest.schemas import NO_CONTENT, CommandAckIn, StatusIn, TelemetryIn, lacks_content, parse_timestamp


@dataclass(slots=True)
class Message:
    """An MQTT message as received, before decoding."""

    topic: str
    payload: bytes
    received_at: datetime
    mid: int = 0
    qos: int = 1
    generation: int = 0
    retain: bool = False
    arrival: int = 0  # its place in the order messages arrived in (ingest.lanes.AckOrder)


NOT_DATA_PAYLOAD_BYTES = 1024


@dataclass(slots=True, frozen=True)
class Reject:
    """A message that could not be used, and why. kind "invalid": the message is wrong (malformed, out of range,
    an unknown device); "not_data": it is fine but carries no device data (bookkeeping, a command, a clear)."""

    reason: str
    device_id: str | None = None
    kind: Literal["invalid", "not_data"] = "invalid"


def not_data(reason: str, device_id: str | None = None) -> Reject:
    """The record of a message that is not device data (see the module docstring)."""
    return Reject(reason, device_id, "not_data")


# What a bridge reports about a device's membership of its network (issue 19: a recorded device event).
DeviceEventKind = Literal[
    "joined", "announced", "interview_started", "interview_successful", "interview_failed", "left", "removed", "booted"
]


@dataclass(slots=True, frozen=True)
class DeviceEvent:
    """A device joined, announced itself, was interviewed (or failed to be), left, was removed, or (re)booted. The
    device may not be registered yet (a new device joining): foreign_id names it, device_id only when known."""

    adapter: str
    foreign_id: str
    kind: DeviceEventKind
    at: datetime
    device_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class CommandAck:
    """A device's answer to a command."""

    device_id: str
    command_id: str
    ok: bool
    detail: str
    at: datetime


Decoded = Reading | DeviceStatus | DeviceEvent | CommandAck | Reject


class DeviceLookup(Protocol):
    def device(self, device_id: str) -> Device | None: ...

    def by_foreign_id(self, adapter: Adapter, foreign_id: str) -> Device | None: ...


@dataclass(slots=True, frozen=True)
class Limits:
    """Acceptance window for device time (DESIGN: 24 h old accepted; far future rejected)."""

    max_age: timedelta = timedelta(hours=24)
    max_skew: timedelta = timedelta(minutes=5)
    max_payload_bytes: int = 16_384


def describe_validation_error(errors: list[ErrorDetails]) -> str:
    """One line a person can act on: field, problem, offending value (ValidationError.errors())."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = (
            ""
            if err["type"] in ("missing",) or where == "message" or isinstance(value, dict)
            else (f" (got {orjson.dumps(value, default=repr).decode()[:60]})")
        )
        parts.append(f"{where}: {msg}{shown}")
    return "; ".join(parts)


def parse_json_object(payload: bytes) -> dict[str, Any] | Reject:
    """A JSON object, or a rejection saying what is wrong with the bytes."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Reject(f"malformed JSON: {exc}")
    if not isinstance(data, dict):
        return Reject(f"payload must be a JSON object, got {type(data).__name__}")
    return data


def check_time(ts: datetime, received_at: datetime, limits: Limits) -> str | None:
    """Why a device timestamp is unacceptable, or None."""
    if ts - received_at > limits.max_skew:
        ahead = (ts - received_at).total_seconds()
        return (
            f"ts {ts.isoformat()} is {ahead:.0f} s in the future (clock skew limit "
            f"{limits.max_skew.total_seconds():.0f} s): check the device clock"
        )
    if received_at - ts > limits.max_age:
        hours = (received_at - ts).total_seconds() / 3600
        return f"ts {ts.isoformat()} is {hours:.1f} h old (limit {limits.max_age.total_seconds() / 3600:.0f} h)"
    return None


def extras_problem(extras: dict[str, Any]) -> str | None:
    """Why extras cannot be stored as jsonb: nested past orjson's 255 levels, or holding a NUL character that
    PostgreSQL text and jsonb refuse. Checked at decode time so one bad message cannot fail a whole batch."""
    if not extras:
        return None
    try:
        encoded = orjson.dumps(extras)
    except TypeError:
        return "extra fields are nested more than 255 levels deep"
    if b"\\u0000" in encoded:
        return "extra fields contain a NUL character (\\u0000), which cannot be stored: fix the sender"
    return None


def validate_telemetry(data: dict[str, Any]) -> tuple[TelemetryIn, datetime | None] | list[ErrorDetails]:
    """A telemetry object (native, or an adapter's mapped fields) checked as the contract says, with its ts
    parsed; or what is wrong with it, as pydantic error details with a ts problem first."""
    errors: list[ErrorDetails] = []
    ts = None
    raw_ts = data.get("ts")
    if raw_ts is not None:
        try:
            ts = parse_timestamp(raw_ts)
        except ValueError as exc:
            errors.append({"type": "value_error", "loc": ("ts",), "msg": str(exc), "input": raw_ts})
    try:
        msg = TelemetryIn.model_validate(data)
    except ValidationError as exc:
        return errors + exc.errors()
    if errors:
        return errors
    if lacks_content(data):
        return [{"type": "value_error", "loc": (), "msg": NO_CONTENT, "input": data}]
    return msg, ts


def telemetry_to_reading(
    device_id: str, data: dict[str, Any], received_at: datetime, limits: Limits
) -> Reading | Reject:
    """Validate a v1 telemetry object into a Reading."""
    checked = validate_telemetry(data)
    if isinstance(checked, list):
        return Reject(describe_validation_error(checked), device_id)
    msg, ts = checked
    ts = ts or received_at
    problem = check_time(ts, received_at, limits)
    if problem:
        return Reject(problem, device_id)
    extras = dict(msg.model_extra or {})
    problem = extras_problem(extras)
    if problem:
        return Reject(problem, device_id)
    return Reading(
        device_id=device_id,
        ts=ts,
        received_at=received_at,
        seq=msg.seq,
        gas_lel=msg.gas_lel,
        co_ppm=msg.co_ppm,
        smoke_db_m=msg.smoke_db_m,
        temp_c=msg.temp_c,
        power_w=msg.power_w,
        current_a=msg.current_a,
        voltage_v=msg.voltage_v,
        energy_wh=msg.energy_wh,
        battery_pct=msg.battery_pct,
        gas=msg.gas,
        smoke=msg.smoke,
        tamper=msg.tamper,
        test=msg.test,
        relay=msg.relay,
        valve=msg.valve,
        fault=msg.fault,
        extras=extras,
    )


def split_native(topic: str, prefix: str) -> tuple[str, str]:
    """(device id, channel) of a topic under the native prefix: gw/v1/{device_id}/{channel}; either may be ''.
    The ingest's lanes (ingest.lanes) key on the same device id the decoder reads here."""
    device_id, _, channel = topic[len(prefix) + 1 :].partition("/")
    return device_id, channel


def decode_native(
    topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits, prefix: str
) -> list[Decoded]:
    """gw/v1/{device_id}/telemetry | status | cmd/ack."""
    device_id, channel = split_native(topic, prefix)
    if not device_id or not channel:
        return [Reject(f"topic {topic!r} is not {prefix}/<device_id>/<telemetry|status|cmd/ack>")]
    if channel == "cmd":
        return [not_data(f"a command to {device_id} (ours), not a report from it", device_id)]
    if channel not in ("telemetry", "status", "cmd/ack"):
        return [Reject(f"unknown channel {channel!r} in topic {topic!r}", device_id)]
    device = lookup.device(device_id)
    if device is None:
        return [Reject(f"unknown device {device_id!r}: not in the registry (add it with `gridwatch load`)", device_id)]
    if len(payload) == 0 and channel == "status":
        return [not_data("retained status cleared (empty message)", device_id)]
    data = parse_json_object(payload)
    if isinstance(data, Reject):
        return [Reject(data.reason, device_id)]
    if channel == "telemetry":
        return [telemetry_to_reading(device_id, data, received_at, limits)]
    if channel == "status":
        try:
            status = StatusIn.model_validate(data)
        except ValidationError as exc:
            return [Reject(describe_validation_error(exc.errors()), device_id)]
        return [DeviceStatus(device_id, status.state == "online", received_at)]
    try:
        ack = CommandAckIn.model_validate(data)
    except ValidationError as exc:
        return [Reject(describe_validation_error(exc.errors()), device_id)]
    return [CommandAck(device_id, ack.id, ack.ok, ack.detail, received_at)]


# An adapter decoder: (topic, payload, received_at, lookup, limits) -> decoded items, or None when the
# topic is not the adapter's.
AdapterDecoder = Callable[[str, bytes, datetime, DeviceLookup, Limits], list[Decoded] | None]


@dataclass
class Decoder:
    """Routes a topic to the native contract or to a bridge adapter."""

    prefix: str = "gw/v1"
    limits: Limits = field(default_factory=Limits)
    adapters: list[AdapterDecoder] = field(default_factory=list)

    def decode(self, msg: Message, lookup: DeviceLookup) -> list[Decoded]:
        """What the message is (see decode_tagged)."""
        return self.decode_tagged(msg, lookup)[1]

    def decode_tagged(self, msg: Message, lookup: DeviceLookup) -> tuple[str, list[Decoded]]:
        """(which adapter took the message: native, an adapter's name, or unknown; what it is)."""
        if len(msg.payload) > self.limits.max_payload_bytes:
            found = self.bookkeeping(msg.topic)
            if found is not None:
                return found[0], [not_data(found[1])]
            return self._adapter_of(msg.topic), [
                Reject(
                    f"payload of {len(msg.payload)} bytes exceeds the limit of {self.limits.max_payload_bytes} bytes"
                )
            ]
        if msg.topic.startswith(self.prefix + "/"):
            return "native", decode_native(msg.topic, msg.payload, msg.received_at, lookup, self.limits, self.prefix)
        for adapter in self.adapters:
            result = adapter(msg.topic, msg.payload, msg.received_at, lookup, self.limits)
            if result is not None:
                return _name(adapter), result
        return "unknown", [Reject(f"no decoder for topic {msg.topic!r}")]

    def source_of(self, topic: str) -> str:
        """The part of a topic one broker account speaks for, which a reject's rate limit is kept per when it names
        no registry device (ingest.service.reject_row): a Shelly's or Tasmota's own base, the whole Zigbee2MQTT base
        (one bridge account publishes all of it), and for native topics the prefix itself (a registry device is
        its own source; ids nobody registered, which only a prefix-wide account can publish, share one budget).
        Topics invented under one account share its budget, so rotating them cannot escape the per-source limit
        and exhaust the global one (ratelimit.py)."""
        if topic.startswith(self.prefix + "/"):
            return self.prefix
        for adapter in self.adapters:
            source = getattr(adapter, "source", None)
            found = source(topic) if source is not None else None
            if found is not None:
                return str(found)
        return topic.partition("/")[0]

    def _adapter_of(self, topic: str) -> str:
        if topic.startswith(self.prefix + "/"):
            return "native"
        for adapter in self.adapters:
            owns = getattr(adapter, "owns", None)
            if owns is not None and owns(topic):
                return _name(adapter)
        return "unknown"

    def bookkeeping(self, topic: str) -> tuple[str, str] | None:
        """(adapter, why) when a topic is a bridge's bookkeeping we never store (asked before the size limit,
        because e.g. zigbee2mqtt/bridge/devices is legitimately large); an adapter opts in with `ignores(topic)`."""
        for adapter in self.adapters:
            ignores = getattr(adapter, "ignores", None)
            why = ignores(topic) if ignores is not None else None
            if why is not None:
                return _name(adapter), str(why)
        return None


def _name(adapter: AdapterDecoder) -> str:
    return str(getattr(adapter, "name", "bridge"))
