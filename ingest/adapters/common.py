"""What the bridge adapters share: device resolution, payload parsing, and turning mapped fields into a Reading.

Event time and duplicates (read this before changing how an adapter stamps a reading)
-----------------------------------------------------------------------------------
A reading's identity is (device_id, ts, seq); ingest drops a second row with the same key (ON CONFLICT DO
NOTHING) and the rules never see it. Bridges have no per-device counter, so:

- ts is the bridge's own time of the data when the bridge gives one (Zigbee2MQTT `last_seen`), otherwise the
  time ingest received the message. Adapters never invent a fresh ts for old data: a retained or redelivered
  copy of a Zigbee2MQTT state then keeps its original ts and is absorbed as a duplicate (or, being older than
  the device's latest reading, is stored but not evaluated), so it cannot re-open an alarm that has cleared.
- seq is a digest of the mapped content, always <= -2 (native devices send seq >= 0; -1 means "none"). Two
  *different* messages with the same ts (Zigbee2MQTT can publish twice for one Zigbee frame, both carrying the
  same `last_seen`) therefore get different keys and both count; only an identical copy is absorbed. With a
  constant seq the second message, e.g. the one carrying `smoke: true`, would be silently dropped.

A bridge's state cache re-sending unchanged attributes (Zigbee2MQTT `cache_state`, Shelly's periodic
re-publish) does reach the rules as a new reading when its ts differs; the rules are edge-triggered, so a
repeat while an alarm is active only updates that alarm (last seen, count) and notifies nobody.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from pydantic_core import ErrorDetails

from core.domain import FLAG_FIELDS, MEASUREMENT_FIELDS, STATE_FIELDS, Adapter, Device, Reading
from ingest.decode import DeviceLookup, Limits, Reject, check_time, extras_problem, not_data, validate_telemetry
from ingest.schemas import parse_timestamp

READING_FIELDS = MEASUREMENT_FIELDS + FLAG_FIELDS + STATE_FIELDS


def join(root: str, *parts: str) -> str:
    """A topic under an optional root ("" for the bridges' defaults)."""
    return "/".join(p for p in (root.strip("/"), *parts) if p)


def unknown_device(adapter: Adapter, foreign_id: str) -> Reject:
    """The rejection for a bridge device that is not in the registry."""
    return Reject(
        f"unknown {adapter.value} device {foreign_id!r}: no registry device has adapter "
        f"{adapter.value} and foreign_id {foreign_id!r} (add it with `gridwatch load`)"
    )


def resolve(lookup: DeviceLookup, adapter: Adapter, foreign_id: str) -> Device | Reject:
    """The registry device behind a bridge name, or the rejection that says how to register it."""
    device = lookup.by_foreign_id(adapter, foreign_id)
    return device if device is not None else unknown_device(adapter, foreign_id)


def scalar_text(payload: bytes, *, what: str, device_id: str | None = None) -> str | Reject:
    """A plain-text payload (Shelly, Tasmota, Zigbee2MQTT attribute output), stripped."""
    try:
        return payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Reject(f"{what}: payload is not UTF-8 text", device_id)


def content_seq(fields: Mapping[str, Any], extras: Mapping[str, Any]) -> int:
    """A stable seq for a bridge reading: a 62-bit digest of its content, as a number <= -2."""
    data = orjson.dumps([fields, extras], option=orjson.OPT_SORT_KEYS, default=str)
    digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 2
    return -2 - digest


def describe_field_errors(errors: list[ErrorDetails], sources: Mapping[str, str], origin: str) -> str:
    """Validation errors naming both our field and the bridge attribute it came from."""
    parts = []
    for err in errors[:5]:
        field = str(err["loc"][0]) if err["loc"] else "message"
        msg = err["msg"].removeprefix("Value error, ")
        source = sources.get(field)
        where = f"{field} (from {origin} {source!r})" if source and source != field else field
        value = err.get("input")
        shown = (
            ""
            if field == "message" or isinstance(value, dict)
            else (f" (got {orjson.dumps(value, default=repr).decode()[:60]})")
        )
        parts.append(f"{where}: {msg}{shown}")
    return "; ".join(parts)


def build_reading(
    device: Device,
    *,
    fields: dict[str, Any],
    extras: dict[str, Any],
    ts: datetime | None,
    received_at: datetime,
    limits: Limits,
    sources: Mapping[str, str] | None = None,
    origin: str = "bridge attribute",
    what: str = "",
) -> Reading | Reject:
    """Validate mapped native fields (same types and ranges as v1 telemetry) and build the Reading.

    `fields` uses native names (gas_lel, relay, ...); `extras` keeps what has no native field. A message with
    extras only (a heartbeat with link quality, a Tasmota margin flag) is still a reading: it proves the
    device is alive and keeps the flag for rules that look in extras. `what` names the message in rejections.
    """
    values: dict[str, Any] = {}
    if fields:
        checked = validate_telemetry(fields)
        if isinstance(checked, list):
            details = describe_field_errors(checked, sources or {}, origin)
            return Reject(f"{what}: {details}" if what else details, device.id)
        msg = checked[0]
        values = {name: getattr(msg, name) for name in READING_FIELDS if name in fields}
    elif not extras:
        return not_data(f"{what}: carries nothing to store" if what else "carries nothing to store", device.id)
    stamp = ts or received_at
    problem = check_time(stamp, received_at, limits) or extras_problem(extras)
    if problem:
        return Reject(problem, device.id)
    return Reading(
        device_id=device.id, ts=stamp, received_at=received_at, seq=content_seq(fields, extras), extras=extras, **values
    )


def as_object(value: Any) -> dict[str, Any]:
    """A JSON object as a dict, anything else as an empty one (a bridge's optional nested objects)."""
    return value if isinstance(value, dict) else {}


def is_number(value: Any) -> bool:
    """A JSON number (bool is not one, although Python says it is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def bridge_time(
    value: Any, received_at: datetime, limits: Limits, extras: dict[str, Any], *, raw_key: str
) -> datetime | None:
    """A bridge-supplied time (RFC 3339 with offset, or epoch ms) as the reading's ts; None means "use the
    receive time". Unparseable (no offset, `relative`): kept in extras[raw_key]. Ahead of our clock by more
    than the skew limit: the receive time, noted in extras `bridge_clock_ahead_s` (a bridge clock problem must
    not drop an alarm). Older than the age limit: returned as is, and build_reading rejects it as stale."""
    if value is None:
        return None
    try:
        ts = parse_timestamp(value)
    except ValueError:
        extras[raw_key] = value
        return None
    ahead = (ts - received_at).total_seconds()
    if ahead > limits.max_skew.total_seconds():
        extras["bridge_clock_ahead_s"] = round(ahead, 1)
        return None
    return ts
