"""Zigbee2MQTT: device state, per-attribute output, availability and bridge state, mapped to native readings.

Formats are Zigbee2MQTT's documented ones (zigbee2mqtt.io "MQTT topics and messages", "Device-Availability",
and the Controller's publishEntityState). Base topic `zigbee2mqtt`, under an optional bridge topic root.

Topics we subscribe to (`topics()`), and what each becomes:
- `zigbee2mqtt/<friendly_name>` (output: json, the default): a JSON object of attributes -> one Reading.
- `zigbee2mqtt/<friendly_name>/<attribute>` (output: attribute): one attribute per message, the value as
  text (`true`, `23.5`, `ON`, ISO time; `''` for null) -> one Reading with that attribute.
  Both arrive through the filter `zigbee2mqtt/+/+`; a friendly name with one '/' (`kitchen/detector`) is
  tried as a whole first, so JSON output works for it; attribute output needs names without '/'.
- `zigbee2mqtt/<friendly_name>/availability`: `{"state":"online"}` / `{"state":"offline"}` (current form,
  `advanced.legacy_availability_payload: false`) or the legacy plain `online` / `offline` -> DeviceStatus.
- `zigbee2mqtt/bridge/state`: the same two forms -> DeviceStatus of the registry gateway whose foreign_id is
  `bridge` (Ignored when none is registered).
- Ignored (bookkeeping we never store): `zigbee2mqtt/bridge/<anything else>` (info, devices, groups,
  definitions, logging, event, response/...), `<name>/set[/...]` and `<name>/get[/...]` (commands, ours
  included), `''` on availability (a cleared retained message).

Device: the registry device with adapter `zigbee2mqtt` and foreign_id = the friendly name (or the IEEE
address when the bridge has no friendly name for it). Unregistered -> Reject "unknown zigbee2mqtt device".

Attribute mapping (Zigbee2MQTT expose -> native field; everything not listed is kept in extras as is):
| expose | native | note |
|---|---|---|
| gas (bool) | gas | detector's own alarm flag |
| gas_value (number, LEL) | gas_lel | Tuya TS0601_gas_sensor_2 documents the unit as LEL: %LEL |
| smoke (bool) | smoke | |
| smoke_density_dbm (number) | smoke_db_m | Aqara JTYJ-GD-01LM |
| smoke_concentration, smoke_density | extras | units differ per device, not dB/m |
| carbon_monoxide (bool) | extras co | the CO alarm's own flag, the extra `co` rule CO-01 watches |
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

Commands (`encode`): `zigbee2mqtt/<name>/set` with `{"state":"OFF"}` (cut_power; close_valve on valve
controllers, whose switch state OFF is closed), `{"state":"ON"}` (restore_power), `{"self_test":true}`,
`{"silence":true}`. The bridge has no command ack: the state it publishes afterwards is the confirmation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from core.domain import Adapter, Device, DeviceKind, DeviceStatus
from ingest.adapters.common import bridge_time, build_reading, is_number, join, resolve, scalar_text, unknown_device
from ingest.decode import Decoded, DeviceLookup, Ignored, Limits, Reject, parse_json_object

ADAPTER = Adapter.ZIGBEE2MQTT
BRIDGE_FOREIGN_ID = "bridge"
METERING_KINDS = frozenset({DeviceKind.SMART_SOCKET, DeviceKind.CHARGING_PORT})
DROPPED = frozenset({"device", "update", "update_available"})
# Attributes that, alone in an attribute-output message, say nothing worth a row.
ATTRIBUTE_NOISE = frozenset({"linkquality", "last_seen"}) | DROPPED
COMMAND_CHANNELS = frozenset({"set", "get"})


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


@dataclass(frozen=True, slots=True)
class Zigbee2Mqtt:
    """The Zigbee2MQTT adapter for one bridge base topic (an AdapterDecoder with `ignores`)."""

    root: str = ""
    base: str = "zigbee2mqtt"

    @property
    def prefix(self) -> str:
        return join(self.root, self.base)

    def topics(self) -> list[str]:
        """Subscriptions: JSON state, availability, attribute output and bridge/state (one filter covers both
        `<name>/availability` and `<name>/<attribute>`)."""
        return [f"{self.prefix}/+", f"{self.prefix}/+/+"]

    def source(self, topic: str) -> str | None:
        """The whole base: one bridge account publishes every name under it, so it can invent names at will."""
        return None if self._rest(topic) is None else self.prefix

    def ignores(self, topic: str) -> str | None:
        """Bridge bookkeeping and commands we subscribe to but never store."""
        rest = self._rest(topic)
        if rest is None:
            return None
        if rest.startswith("bridge/") and rest != "bridge/state":
            return f"zigbee2mqtt bridge bookkeeping ({rest})"
        parts = rest.split("/")
        if len(parts) >= 2 and (parts[-1] in COMMAND_CHANNELS or parts[-2] in COMMAND_CHANNELS):
            return "a command to a zigbee2mqtt device (ours or another client's)"
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
            return [Ignored(why)]
        if not rest:
            return [Reject(f"topic {topic!r} names no zigbee2mqtt device")]
        if rest == "bridge/state":
            return [self._bridge_state(payload, received_at, lookup)]
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

    def _bridge_state(self, payload: bytes, received_at: datetime, lookup: DeviceLookup) -> Decoded:
        online = parse_availability(payload)
        if online is None:
            return Ignored("zigbee2mqtt bridge/state cleared")
        if isinstance(online, str):
            return Reject(f"zigbee2mqtt bridge/state: {online}")
        gateway = lookup.by_foreign_id(ADAPTER, BRIDGE_FOREIGN_ID)
        if gateway is None:
            return Ignored(
                f"zigbee2mqtt bridge is {'online' if online else 'offline'}; no gateway with adapter "
                f"zigbee2mqtt and foreign_id {BRIDGE_FOREIGN_ID!r} is registered to record it"
            )
        return DeviceStatus(gateway.id, online, received_at)

    def _availability(self, name: str, payload: bytes, received_at: datetime, lookup: DeviceLookup) -> Decoded:
        device = resolve(lookup, ADAPTER, name)
        if isinstance(device, Reject):
            return device
        online = parse_availability(payload)
        if online is None:
            return Ignored("zigbee2mqtt availability cleared (empty retained message)")
        if isinstance(online, str):
            return Reject(f"zigbee2mqtt {name!r}: {online}", device.id)
        return DeviceStatus(device.id, online, received_at)

    def _state(self, device: Device, payload: bytes, received_at: datetime, limits: Limits) -> Decoded:
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
        text = scalar_text(payload, what=f"zigbee2mqtt {device.foreign_id!r}/{attribute}", device_id=device.id)
        if isinstance(text, Reject):
            return text
        if text == "":
            return Ignored(f"zigbee2mqtt attribute {attribute!r} is null")
        if attribute in ATTRIBUTE_NOISE or "-" in attribute:
            return Ignored(f"zigbee2mqtt attribute {attribute!r} alone is not stored")
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
            what=f"zigbee2mqtt {device.foreign_id!r}/{attribute}",
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
