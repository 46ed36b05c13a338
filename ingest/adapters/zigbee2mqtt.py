"""Zigbee2MQTT: device state (JSON and attribute output), availability, bridge state and bridge events, mapped to
native readings, statuses and device events.

Formats are Zigbee2MQTT's documented ones (zigbee2mqtt.io "MQTT topics and messages", "Device-Availability", the
Controller's publishEntityState, lib/types/api.ts; /work/notes/bridges.md section 1 has the sources), for 1.x and
2.x. Base topic `zigbee2mqtt` (`mqtt.base_topic`, configurable: GRIDWATCH_ZIGBEE2MQTT_BASE_TOPIC), under an optional
bridge topic root.

Topics and what each becomes (issue 19: every message is a reading, a status, a device event or a reject with its
reason; "not data" rejects are kept with their reason and a cut payload):
- `<name>`: JSON object of attributes (output: json, the default) -> Reading
- `<name>`: empty (retained state cleared on rename/remove) -> not data
- `<name>/<attribute>`: one attribute as text (output: attribute): `true`, `23.5`, `ON`, `""` for null -> Reading
  (`""`, nested `a-b` metadata: not data)
- `<name>/availability`: `{"state":"online"}` / `{"state":"offline"}` (2.x, 1.x non-legacy) or `online` / `offline`
  (1.x legacy) -> DeviceStatus (empty: not data)
- `bridge/state`: the same two forms (the bridge's last will) -> DeviceStatus of the gateway registered with
  foreign_id `bridge` (none registered: not data)
- `bridge/event`: `{"type":"device_joined" | "device_announce" | "device_interview" | "device_leave","data":{...}}`
  -> DeviceEvent joined / announced / interview_started, _successful, _failed / left
- `bridge/log` (1.x legacy API): `{"type":"pairing","message":"interview_failed","meta":{...}}`, `device_connected`,
  `device_announced`, `device_removed` (`left_network`: left), `device_force_removed`, `device_banned` ->
  DeviceEvent; other types not data
- `bridge/response/device/remove`: `{"data":{"id":"<name>",...},"status":"ok"}` -> DeviceEvent removed (2.x has no
  removal event); `"status":"error"`: not data with the bridge's error
- `bridge/<other>` (info, devices, groups, definitions, extensions, converters, health, logging, config,
  request/..., response/...): JSON -> not data (bookkeeping; not subscribed)
- `<name>/set[/...]`, `<name>/get[/...]`: commands (ours or another client's) -> not data (not subscribed)

Subscriptions (`topics()`) are tight, because Zigbee2MQTT publishes much we never store (`bridge/logging` carries a
line per log record): `<base>/+` (JSON state), `<base>/+/availability`, the bridge topics above (bridge/state
through the `state` filter), and one filter per attribute we map for attribute output (`<base>/+/gas`,
`<base>/+/smoke`, ...; ATTRIBUTE_TOPICS). Friendly names with a '/' (`floor2/kitchen_gas`) are subscribed one by one
from the registry (`device_topics`): their JSON state is `<base>/<a>/<b>`, which `<base>/+` does not match; in
attribute output they need names without '/'.

Device: the registry device with adapter `zigbee2mqtt` and foreign_id = the friendly name (or the IEEE address when
the bridge has no friendly name for it). Unregistered -> Reject "unknown zigbee2mqtt device" (a device event of an
unregistered device is still recorded, with no device id: a new device joining is not registered yet).

Attribute mapping (Zigbee2MQTT expose -> native field; everything not listed is kept in extras as is):
| expose | native | note |
|---|---|---|
| gas (bool) | gas | detector's own alarm flag |
| gas_value (number, LEL) | gas_lel | Tuya TS0601_gas_sensor_2 documents the unit as LEL: %LEL |
| smoke (bool) | smoke | |
| smoke_density_dbm (number) | smoke_db_m | Aqara JTYJ-GD-01LM |
| smoke_concentration, smoke_density | extras | units differ per device, not dB/m |
| carbon_monoxide (bool; "ON"/"OFF" on Tuya DCR-CO) | extras co | the CO alarm's own flag, which CO-01 watches |
| carbon_monoxide (number), co (number, ppm) | co_ppm | `co2` is carbon dioxide and stays in extras |
| tamper (bool) | tamper | |
| battery (%) | battery_pct | battery_low (flag of rule SMK-06), battery_state stay in extras |
| temperature, device_temperature | temp_c | sockets/ports prefer device_temperature (internal) |
| power (W), current (A) | power_w, current_a | |
| voltage (V) | voltage_v | sockets/ports only; battery devices report mV -> extras |
| energy (kWh) | energy_wh | x 1000 |
| state ON/OFF | relay on/off | for a gas_valve: valve open/closed |
| self_test, test (bool) | test | |
| fault, fault_alarm (bool or text) | fault | true -> the attribute name, false -> no fault |
| last_seen (ISO 8601 or epoch ms) | ts | see below |
| device, update, update_available | dropped | bridge metadata, not device data |
| any attribute with value null | dropped | not known yet to the bridge's state cache |

Time: `last_seen` (advanced.last_seen: ISO_8601, ISO_8601_local or epoch) is the bridge's time of the
device's latest message and becomes the reading's ts, so a re-delivered or retained copy keeps its original
ts and is absorbed (ingest/adapters/common.py explains why that matters). Without last_seen (the bridge
default is `disable`) ts is the receive time. A last_seen that cannot be parsed (e.g. `relative`) is kept in
extras and the receive time used; one ahead of our clock by more than the skew limit is replaced by the
receive time (a bridge clock problem must not drop a gas alarm; extras `bridge_clock_ahead_s` records it);
one older than the age limit is rejected as stale, like any reading.

Commands (`encode`): `<base>/<name>/set` with `{"state":"OFF"}` (cut_power; close_valve on valve
controllers, whose switch state OFF is closed), `{"state":"ON"}` (restore_power), `{"self_test":true}`,
`{"silence":true}`. The bridge has no command ack: the state it publishes afterwards is the confirmation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import orjson

from core.domain import Adapter, Device, DeviceKind, DeviceStatus
from ingest.adapters.common import (
    as_object,
    bridge_time,
    build_reading,
    is_number,
    join,
    resolve,
    scalar_text,
    unknown_device,
)
from ingest.decode import (
    Decoded,
    DeviceEvent,
    DeviceEventKind,
    DeviceLookup,
    Limits,
    Reject,
    not_data,
    parse_json_object,
)

ADAPTER = Adapter.ZIGBEE2MQTT
BRIDGE_FOREIGN_ID = "bridge"
METERING_KINDS = frozenset({DeviceKind.SMART_SOCKET, DeviceKind.CHARGING_PORT})
DROPPED = frozenset({"device", "update", "update_available"})
COMMAND_CHANNELS = frozenset({"set", "get"})
# The bridge topics that carry device data or device events; the rest of bridge/ is bookkeeping.
BRIDGE_TOPICS = ("state", "event", "log", "response/device/remove")
EVENTS: dict[str, DeviceEventKind] = {"device_joined": "joined", "device_announce": "announced", "device_leave": "left"}
INTERVIEW: dict[str, DeviceEventKind] = {
    "started": "interview_started",
    "successful": "interview_successful",
    "failed": "interview_failed",
}
# 1.x legacy API bridge/log types that are device events (1.42.0 lib/extension/legacy/bridgeLegacy.ts).
LEGACY: dict[str, DeviceEventKind] = {
    "device_connected": "joined",
    "device_announced": "announced",
    "device_removed": "removed",
    "device_force_removed": "removed",
    "device_banned": "removed",
}


# Attributes that map one to one onto a native field.
RENAMED = {
    "gas": "gas",
    "gas_value": "gas_lel",
    "smoke": "smoke",
    "smoke_density_dbm": "smoke_db_m",
    "co": "co_ppm",
    "tamper": "tamper",
    "battery": "battery_pct",
    "power": "power_w",
    "current": "current_a",
}


@dataclass
class _Mapped:
    """What map_attributes builds: native fields, extras, and which attribute each native field came from."""

    device: Device
    fields: dict[str, Any]
    extras: dict[str, Any]
    sources: dict[str, str]

    @property
    def metering(self) -> bool:
        return self.device.kind in METERING_KINDS

    def put(self, name: str, value: Any, source: str) -> None:
        self.fields[name] = value
        self.sources[name] = source


def _carbon_monoxide(m: _Mapped, key: str, value: Any) -> None:
    if isinstance(value, bool):
        m.extras["co"] = value  # the alarm flag; a numeric Zigbee2MQTT `co` is ppm and goes to co_ppm
    elif isinstance(value, str) and value.upper() in ("ON", "OFF"):
        m.extras["co"] = value.upper() == "ON"  # Tuya DCR-CO publishes its flag as "ON"/"OFF"
    else:
        m.put("co_ppm", value, key)


def _temperature(m: _Mapped, key: str, value: Any) -> None:
    """A socket's own temperature is what overheats; a detector's ambient one is what it measures."""
    preferred = "device_temperature" if m.metering else "temperature"
    if key == preferred or "temp_c" not in m.fields:
        if "temp_c" in m.fields:
            m.extras[m.sources["temp_c"]] = m.fields["temp_c"]
        m.put("temp_c", value, key)
    else:
        m.extras[key] = value


def _voltage(m: _Mapped, key: str, value: Any) -> None:
    if m.metering:  # a battery device's `voltage` is its battery in mV, not the mains
        m.put("voltage_v", value, key)
    else:
        m.extras[key] = value


def _energy(m: _Mapped, key: str, value: Any) -> None:
    m.put("energy_wh", value * 1000 if is_number(value) else value, key)


def _state(m: _Mapped, _key: str, value: Any) -> None:
    _map_state(m.device, value, m.put)


def _test(m: _Mapped, key: str, value: Any) -> None:
    if not (m.fields.get("test") is True and value is False):  # either one running means a test
        m.put("test", value, key)


def _fault(m: _Mapped, key: str, value: Any) -> None:
    if isinstance(value, bool):
        if value or "fault" not in m.fields:
            m.put("fault", key if value else None, key)
    else:
        m.put("fault", value if value is None else str(value), key)


SPECIAL = {
    "carbon_monoxide": _carbon_monoxide,
    "temperature": _temperature,
    "device_temperature": _temperature,
    "voltage": _voltage,
    "energy": _energy,
    "state": _state,
    "self_test": _test,
    "test": _test,
    "fault": _fault,
    "fault_alarm": _fault,
}
# Attribute output: the attributes subscribed one filter each (what we map, and the extras rules read).
ATTRIBUTE_TOPICS: tuple[str, ...] = (*RENAMED, *SPECIAL, "battery_low", "silence", "preheat")


def map_attributes(device: Device, attrs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Zigbee2MQTT attributes -> (native fields, extras, native field -> source attribute)."""
    m = _Mapped(device, {}, {}, {})
    for key, value in attrs.items():
        if key in DROPPED or key == "last_seen" or value is None:
            continue  # null: the bridge's cache has no value yet (e.g. battery before the first report)
        if key in RENAMED:
            m.put(RENAMED[key], value, key)
        elif key in SPECIAL:
            SPECIAL[key](m, key, value)
        else:
            m.extras[key] = value
    return m.fields, m.extras, m.sources


def _map_state(device: Device, value: Any, put: Any) -> None:
    # Only text is mapped; anything else (a number, a list from a broken bridge) goes on as it came, for the
    # reading's validation to reject with a reason (a list here used to crash the decoder: unhashable key).
    text = value.upper() if isinstance(value, str) else None
    if device.kind is DeviceKind.GAS_VALVE:
        put("valve", {"ON": "open", "OFF": "closed"}.get(text, value) if text else value, "state")
    else:
        put("relay", {"ON": "on", "OFF": "off"}.get(text, value) if text else value, "state")


def parse_availability(payload: bytes) -> bool | str | None:
    """True/False from either availability form; None for an empty (cleared) message; text = the problem."""
    text = payload.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    state: object = text
    if text.startswith("{"):
        data = parse_json_object(payload)
        state = data.get("state") if isinstance(data, dict) else None
    if state in ("online", "offline"):
        return state == "online"
    return f'availability must be {{"state":"online"|"offline"}} or the legacy online/offline, got {text[:60]!r}'


def parse_attribute_value(payload: bytes) -> Any:
    """An attribute-output payload: JSON scalars (true, 12.5, null) as such, anything else as text."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", errors="replace")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _event_details(data: dict[str, Any]) -> dict[str, Any]:
    """What a bridge event says about the device, kept with the event (the definition's model and vendor)."""
    definition = as_object(data.get("definition"))
    model = {k: v for k, v in _pick(definition, "model", "vendor", "description").items() if isinstance(v, str)}
    return {**_pick(data, "ieee_address", "friendly_name", "status", "supported"), **model}


def _pick(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: data[k] for k in keys if k in data}


@dataclass(frozen=True, slots=True)
class Zigbee2Mqtt:
    """The Zigbee2MQTT adapter for one bridge base topic (an AdapterDecoder with `ignores` and `owns`)."""

    root: str = ""
    base: str = "zigbee2mqtt"
    name: ClassVar[str] = "zigbee2mqtt"

    @property
    def prefix(self) -> str:
        return join(self.root, self.base)

    def topics(self) -> list[str]:
        """Subscriptions: JSON state, availability, the bridge's state and device events, attribute output."""
        p = self.prefix
        return [
            f"{p}/+",
            f"{p}/+/availability",
            # bridge/state comes through the `state` attribute filter: a second, overlapping filter would have the
            # broker deliver it twice
            *(f"{p}/bridge/{leaf}" for leaf in BRIDGE_TOPICS if leaf not in ATTRIBUTE_TOPICS),
            *(f"{p}/+/{attribute}" for attribute in ATTRIBUTE_TOPICS),
        ]

    def device_topics(self, foreign_ids: Iterable[str]) -> list[str]:
        """Extra subscriptions for registered friendly names with a '/' (their JSON state and availability)."""
        return sorted({t for f in foreign_ids if "/" in f for t in (f"{self.prefix}/{f}", f"{self.prefix}/{f}/+")})

    def owns(self, topic: str) -> bool:
        return topic.startswith(self.prefix + "/")

    def source(self, topic: str) -> str | None:
        """The whole base: one bridge account publishes every name under it, so it can invent names at will."""
        return None if self._rest(topic) is None else self.prefix

    def ignores(self, topic: str) -> str | None:
        """Bridge bookkeeping and commands: not device data (asked before the size limit: bridge/devices is big)."""
        rest = self._rest(topic)
        if rest is None:
            return None
        if rest.startswith("bridge/"):
            leaf = rest.removeprefix("bridge/")
            return None if leaf in BRIDGE_TOPICS else f"zigbee2mqtt bridge/{leaf} is the bridge's bookkeeping"
        parts = rest.split("/")
        if len(parts) >= 2 and (parts[-1] in COMMAND_CHANNELS or parts[-2] in COMMAND_CHANNELS):
            return "a command to a zigbee2mqtt device (ours or another client's), not a report from it"
        return None

    def _rest(self, topic: str) -> str | None:
        head = self.prefix + "/"
        return topic[len(head) :] if topic.startswith(head) else None

    def __call__(
        self, topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> list[Decoded] | None:
        rest = self._rest(topic)
        if rest is None:
            return None
        why = self.ignores(topic)
        if why is not None:
            return [not_data(why)]
        if not rest:
            return [Reject(f"topic {topic!r} names no zigbee2mqtt device")]
        if rest.startswith("bridge/"):
            return [self._bridge(rest.removeprefix("bridge/"), payload, received_at, lookup)]
        if rest.endswith("/availability"):
            return [self._availability(rest.removesuffix("/availability"), payload, received_at, lookup)]
        device = lookup.by_foreign_id(ADAPTER, rest)
        if device is not None:
            return [self._state(device, payload, received_at, limits)]
        name, _, attribute = rest.rpartition("/")
        if name:
            device = lookup.by_foreign_id(ADAPTER, name)
            if device is not None:
                return [self._attribute(device, attribute, payload, received_at, limits)]
        unknown = rest if not name or payload.lstrip().startswith(b"{") else name
        return [unknown_device(ADAPTER, unknown)]

    # ---------------------------------------------------------------------------------------------- bridge

    def _bridge(self, leaf: str, payload: bytes, received_at: datetime, lookup: DeviceLookup) -> Decoded:
        if leaf == "state":
            return self._bridge_state(payload, received_at, lookup)
        data = parse_json_object(payload) if payload.strip() else None
        if data is None:
            return not_data(f"zigbee2mqtt bridge/{leaf} cleared (empty message)")
        if isinstance(data, Reject):
            return Reject(f"zigbee2mqtt bridge/{leaf}: {data.reason}")
        if leaf == "event":
            return self._event(data, received_at, lookup)
        if leaf == "log":
            return self._legacy_log(data, received_at, lookup)
        return self._removed(data, received_at, lookup)

    def _bridge_state(self, payload: bytes, received_at: datetime, lookup: DeviceLookup) -> Decoded:
        online = parse_availability(payload)
        if online is None:
            return not_data("zigbee2mqtt bridge/state cleared (empty retained message)")
        if isinstance(online, str):
            return Reject(f"zigbee2mqtt bridge/state: {online}")
        gateway = lookup.by_foreign_id(ADAPTER, BRIDGE_FOREIGN_ID)
        if gateway is None:
            return not_data(
                f"zigbee2mqtt bridge is {'online' if online else 'offline'}; no gateway with adapter "
                f"zigbee2mqtt and foreign_id {BRIDGE_FOREIGN_ID!r} is registered to record it"
            )
        return DeviceStatus(gateway.id, online, received_at)

    def _device_event(
        self, kind: DeviceEventKind, name: str, at: datetime, lookup: DeviceLookup, details: dict[str, Any]
    ) -> DeviceEvent:
        ieee = _text(details.get("ieee_address"))
        device = lookup.by_foreign_id(ADAPTER, name) or (lookup.by_foreign_id(ADAPTER, ieee) if ieee else None)
        return DeviceEvent(self.name, name, kind, at, device.id if device else None, details)

    def _event(self, data: dict[str, Any], at: datetime, lookup: DeviceLookup) -> Decoded:
        """bridge/event (1.17+ API, the same in 2.x): joined, announce, interview, leave."""
        kind_text, body = data.get("type"), data.get("data")
        if not isinstance(body, dict):
            return Reject(f"zigbee2mqtt bridge/event {str(kind_text)[:40]!r} has no data object")
        name = _text(body.get("friendly_name")) or _text(body.get("ieee_address"))
        kind = INTERVIEW.get(str(body.get("status"))) if kind_text == "device_interview" else EVENTS.get(str(kind_text))
        if kind is None:
            return Reject(
                f"zigbee2mqtt bridge/event type {str(kind_text)[:40]!r} (status {str(body.get('status'))[:20]!r}) is "
                "not a documented device event (device_joined, device_announce, device_interview, device_leave)"
            )
        if name is None:
            return Reject(f"zigbee2mqtt bridge/event {kind_text}: names no device (friendly_name, ieee_address)")
        return self._device_event(kind, name, at, lookup, _event_details(body))

    def _legacy_log(self, data: dict[str, Any], at: datetime, lookup: DeviceLookup) -> Decoded:
        """bridge/log of the 1.x legacy API: pairing results and removals are device events, the rest log lines."""
        kind_text, message, meta = data.get("type"), data.get("message"), as_object(data.get("meta"))
        name = _text(meta.get("friendly_name")) or (
            _text(message.get("friendly_name")) if isinstance(message, dict) else _text(message)
        )
        kind: DeviceEventKind | None
        if kind_text == "pairing":
            kind = INTERVIEW.get(str(message).removeprefix("interview_"))
            if kind is None or not str(message).startswith("interview_"):
                return not_data(f"zigbee2mqtt legacy bridge/log pairing {str(message)[:40]!r} (a log line)")
        else:
            kind = LEGACY.get(str(kind_text))
        if kind is None:
            return not_data(f"zigbee2mqtt legacy bridge/log {str(kind_text)[:40]!r} (not a device event)")
        if kind == "removed" and message == "left_network":
            kind = "left"
            name = _text(meta.get("friendly_name")) or name
        if name is None or name == "left_network":
            return Reject(f"zigbee2mqtt legacy bridge/log {kind_text}: names no device")
        details = _pick(meta, "model", "vendor", "description", "supported")
        return self._device_event(kind, name, at, lookup, {**details, "legacy": True})

    def _removed(self, data: dict[str, Any], at: datetime, lookup: DeviceLookup) -> Decoded:
        """bridge/response/device/remove: 2.x announces a removal only in the answer to the request."""
        body = as_object(data.get("data"))
        name = _text(body.get("id"))
        if data.get("status") != "ok":
            return not_data(
                f"zigbee2mqtt could not remove device {name!r}: {str(data.get('error') or 'no reason given')[:120]}"
            )
        if name is None:
            return Reject("zigbee2mqtt bridge/response/device/remove names no device (data.id)")
        return self._device_event("removed", name, at, lookup, _pick(body, "block", "force"))

    # ---------------------------------------------------------------------------------------------- devices

    def _availability(self, name: str, payload: bytes, received_at: datetime, lookup: DeviceLookup) -> Decoded:
        device = resolve(lookup, ADAPTER, name)
        if isinstance(device, Reject):
            return device
        online = parse_availability(payload)
        if online is None:
            return not_data("zigbee2mqtt availability cleared (empty retained message: renamed or removed)", device.id)
        if isinstance(online, str):
            return Reject(f"zigbee2mqtt {name!r}: {online}", device.id)
        return DeviceStatus(device.id, online, received_at)

    def _state(self, device: Device, payload: bytes, received_at: datetime, limits: Limits) -> Decoded:
        if not payload.strip():
            return not_data(
                f"zigbee2mqtt {device.foreign_id!r} state cleared (empty retained message: renamed or removed)",
                device.id,
            )
        data = parse_json_object(payload)
        if isinstance(data, Reject):
            return Reject(f"zigbee2mqtt {device.foreign_id!r} state: {data.reason}", device.id)
        if not data:
            return Reject(f"zigbee2mqtt {device.foreign_id!r} state is an empty object: nothing to record", device.id)
        fields, extras, sources = map_attributes(device, data)
        ts = bridge_time(data.get("last_seen"), received_at, limits, extras, raw_key="last_seen")
        return build_reading(
            device,
            fields=fields,
            extras=extras,
            ts=ts,
            received_at=received_at,
            limits=limits,
            sources=sources,
            origin="zigbee2mqtt attribute",
            what=f"zigbee2mqtt {device.foreign_id!r}",
        )

    def _attribute(
        self, device: Device, attribute: str, payload: bytes, received_at: datetime, limits: Limits
    ) -> Decoded:
        what = f"zigbee2mqtt {device.foreign_id!r}/{attribute}"
        text = scalar_text(payload, what=what, device_id=device.id)
        if isinstance(text, Reject):
            return text
        if text == "":
            return not_data(f"{what} is null (the bridge has no value yet)", device.id)
        if attribute in DROPPED or "-" in attribute:
            return not_data(f"{what} is the bridge's metadata, not device data", device.id)
        fields, extras, sources = map_attributes(device, {attribute: parse_attribute_value(payload)})
        return build_reading(
            device,
            fields=fields,
            extras=extras,
            ts=None,
            received_at=received_at,
            limits=limits,
            sources=sources,
            origin="zigbee2mqtt attribute",
            what=what,
        )

    def encode(self, device: Device, action: str) -> list[tuple[str, bytes]]:
        """The /set message that carries a native action to this device."""
        body = {
            "cut_power": {"state": "OFF"},
            "restore_power": {"state": "ON"},
            "close_valve": {"state": "OFF"},
            "self_test": {"self_test": True},
            "silence": {"silence": True},
        }.get(action)
        if body is None:
            raise ValueError(f"zigbee2mqtt cannot carry the action {action!r}")
        return [(f"{self.prefix}/{device.foreign_id}/set", orjson.dumps(body))]
