"""ESPHome nodes (the MQTT component), mapped to native readings and statuses; most self-built detectors and
sockets run it.

Formats are ESPHome's (esphome.io/components/mqtt.html; esphome/components/mqtt: the birth and will messages, and
`get_default_topic_for_` `<topic_prefix>/<component_type>/<object_id>/state`; /work/notes/bridges.md section 4).
Entity payloads are plain text and carry no time: ts is the receive time. States are retained and re-published on
every reconnect (the rules are edge-triggered: a repeat only holds an alarm).

Base topic: a node's `mqtt: topic_prefix` must be `<base>/<node name>` (`topic_prefix: esphome/${name}` for the
default base `esphome`, GRIDWATCH_ESPHOME_BASE_TOPIC). An empty base takes ESPHome's own default (the topic prefix
is the node name at the top level), at the price of broad filters (`+/status`) on a shared broker.

Topics (under `<base>/<node>`) and what each becomes (issue 19: every message is a reading, a status, a device event
or a reject with its reason):
- `status`: `online` / `offline` (birth, last will and clean shutdown, retained) -> DeviceStatus; empty: not data
- `binary_sensor/<object_id>/state`: `ON` / `OFF` -> the flag its object id names (BINARY: gas, smoke, co, tamper,
  test, battery_low, fault, ...); another object id -> extras {object_id: true/false}
- `sensor/<object_id>/state`: a number (`21.5`; `nan` or `None` when it has no value) -> the field its object id
  names (SENSORS: gas_lel, co_ppm, temperature, power, ...); another -> extras; no value -> extras
  {object_id: null} (the node is alive, the sensor has nothing)
- `switch/<object_id>/state`: `ON` / `OFF` -> relay (object ids in RELAYS), valve open/closed on a gas_valve (object
  id `valve`); another -> extras
- `text_sensor/<object_id>/state`: text -> fault when the object id is `fault` or `problem` (`ok`, `none`, empty:
  no fault); another -> extras
- `<component>/<object_id>/command`, `debug` (the log topic), other component types -> not data (not subscribed)
Any other payload is rejected with what was expected.

Device: the registry device with adapter `esphome` and foreign_id = the node name (the topic prefix without the
base). Unregistered -> Reject "unknown esphome device".

Object ids are the entity names in snake case (ESPHome: `name: "Gas LEL"` -> `gas_lel`); name the entities after the
native fields (gas_lel, co_ppm, temp_c, power_w, relay, ...) or the common names in the tables below. Units are what
ESPHome's sensors publish by default: temperature C, power W, current A, voltage V, energy Wh (`energy_kwh` for kWh).

Commands (`encode`): cut_power / restore_power -> `<base>/<node>/switch/relay/command` `OFF` / `ON` (the node's
switch named "Relay"); close_valve on a gas_valve -> `switch/valve/command` `OFF` (never `ON`: a valve is reopened
on site); self_test -> `button/self_test/command` `PRESS`; silence -> `button/silence/command` `PRESS`. ESPHome has
no command ack: the switch's state confirms it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from core.domain import Adapter, Device, DeviceKind, DeviceStatus
from ingest.adapters.common import build_reading, join, resolve, scalar_text
from ingest.decode import Decoded, DeviceLookup, Limits, Reject, not_data

ADAPTER = Adapter.ESPHOME
ENTITY_TYPES = ("binary_sensor", "sensor", "switch", "text_sensor")
# binary_sensor object id -> native flag, or "extras:<name>" for the flags rules read from extras
BINARY = {
    "gas": "gas",
    "gas_leak": "gas",
    "gas_alarm": "gas",
    "smoke": "smoke",
    "smoke_alarm": "smoke",
    "co": "extras:co",
    "co_alarm": "extras:co",
    "carbon_monoxide": "extras:co",
    "tamper": "tamper",
    "test": "test",
    "self_test": "test",
    "battery_low": "extras:battery_low",
    "preheat": "extras:preheat",
    "silence": "extras:silence",
    "fault": "fault",
    "problem": "fault",
}
# sensor object id -> (native field, scale)
SENSORS: dict[str, tuple[str, float]] = {
    "gas_lel": ("gas_lel", 1.0),
    "lel": ("gas_lel", 1.0),
    "co_ppm": ("co_ppm", 1.0),
    "co": ("co_ppm", 1.0),
    "carbon_monoxide": ("co_ppm", 1.0),
    "smoke_db_m": ("smoke_db_m", 1.0),
    "temp_c": ("temp_c", 1.0),
    "temperature": ("temp_c", 1.0),
    "power_w": ("power_w", 1.0),
    "power": ("power_w", 1.0),
    "current_a": ("current_a", 1.0),
    "current": ("current_a", 1.0),
    "voltage_v": ("voltage_v", 1.0),
    "voltage": ("voltage_v", 1.0),
    "energy_wh": ("energy_wh", 1.0),
    "energy": ("energy_wh", 1.0),
    "energy_kwh": ("energy_wh", 1000.0),
    "battery_pct": ("battery_pct", 1.0),
    "battery": ("battery_pct", 1.0),
    "battery_level": ("battery_pct", 1.0),
}
RELAYS = frozenset({"relay", "power", "socket", "outlet", "plug", "switch", "charger"})
FAULT_TEXT = frozenset({"fault", "problem"})
NO_FAULT = frozenset({"", "ok", "none", "normal", "no fault"})
NO_VALUE = frozenset({"nan", "none", "unknown", "unavailable"})


def _on_off(text: str) -> bool | None:
    return {"ON": True, "OFF": False}.get(text.upper())


def _binary(_device: Device, object_id: str, text: str) -> tuple[dict[str, Any], dict[str, Any]] | str:
    on = _on_off(text)
    if on is None:
        return f"a binary_sensor state is ON or OFF, got {text[:40]!r}"
    target = BINARY.get(object_id)
    if target is None:
        return {}, {object_id: on}
    if target.startswith("extras:"):
        return {}, {target.removeprefix("extras:"): on}
    if target == "fault":
        return {"fault": object_id if on else None}, {}
    return {target: on}, {}


def _sensor(_device: Device, object_id: str, text: str) -> tuple[dict[str, Any], dict[str, Any]] | str:
    if text.lower() in NO_VALUE:
        return {}, {object_id: None}
    try:
        value = float(text)
    except ValueError:
        return f"a sensor state is a number (or nan), got {text[:40]!r}"
    if not math.isfinite(value):
        return {}, {object_id: None}
    found = SENSORS.get(object_id)
    if found is None:
        return {}, {object_id: value}
    name, scale = found
    return {name: round(value * scale, 6)}, {}


def _switch(device: Device, object_id: str, text: str) -> tuple[dict[str, Any], dict[str, Any]] | str:
    on = _on_off(text)
    if on is None:
        return f"a switch state is ON or OFF, got {text[:40]!r}"
    if device.kind is DeviceKind.GAS_VALVE and object_id == "valve":
        return {"valve": "open" if on else "closed"}, {}
    if object_id in RELAYS and device.kind is not DeviceKind.GAS_VALVE:
        return {"relay": "on" if on else "off"}, {}
    return {}, {f"switch_{object_id}": on}


def _text_sensor(_device: Device, object_id: str, text: str) -> tuple[dict[str, Any], dict[str, Any]] | str:
    if object_id in FAULT_TEXT:
        return {"fault": None if text.lower() in NO_FAULT else text[:200]}, {}
    return {}, {object_id: text[:200]}


MAPPERS = {"binary_sensor": _binary, "sensor": _sensor, "switch": _switch, "text_sensor": _text_sensor}


@dataclass(frozen=True, slots=True)
class Esphome:
    """The ESPHome adapter for one base topic (an AdapterDecoder with `ignores` and `owns`)."""

    root: str = ""
    base: str = "esphome"
    name: ClassVar[str] = "esphome"

    @property
    def prefix(self) -> str:
        return join(self.root, self.base)

    def topics(self) -> list[str]:
        """The status topic and the state topics of the entity types we map."""
        return [join(self.prefix, "+", "status")] + [join(self.prefix, "+", t, "+", "state") for t in ENTITY_TYPES]

    def _split(self, topic: str) -> list[str] | None:
        """[node, ...rest] when the topic is an ESPHome node's (status, debug, or <type>/<object_id>/<leaf>)."""
        if self.prefix:
            head = self.prefix + "/"
            if not topic.startswith(head):
                return None
            parts = topic[len(head) :].split("/")
        else:
            parts = topic.split("/")
            if not (len(parts) == 2 and parts[1] in ("status", "debug")) and not (
                len(parts) == 4 and parts[3] in ("state", "command")
            ):
                return None
        return parts if parts and parts[0] else None

    def owns(self, topic: str) -> bool:
        return self._split(topic) is not None

    def ignores(self, topic: str) -> str | None:
        """Commands (ours or another client's) and the log topic: not device data."""
        parts = self._split(topic)
        if parts is None:
            return None
        if len(parts) == 4 and parts[3] == "command":
            return "a command to an ESPHome node (ours or another client's), not a report from it"
        if len(parts) == 2 and parts[1] == "debug":
            return "an ESPHome node's log line (its debug topic) is not device data"
        return None

    def __call__(
        self, topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> list[Decoded] | None:
        parts = self._split(topic)
        if parts is None:
            return None
        why = self.ignores(topic)
        if why is not None:
            return [not_data(why)]
        node = parts[0]
        shape_ok = (len(parts) == 2 and parts[1] == "status") or (len(parts) == 4 and parts[3] == "state")
        if not shape_ok:
            return [Reject(f"topic {topic!r} is not <node>/status or <node>/<component>/<object_id>/state")]
        device = resolve(lookup, ADAPTER, node)
        if isinstance(device, Reject):
            return [device]
        what = f"esphome {node!r} {'/'.join(parts[1:])}"
        text = scalar_text(payload, what=what, device_id=device.id)
        if isinstance(text, Reject):
            return [text]
        if len(parts) == 2:
            return [self._status(device, text, received_at, what)]
        component, object_id = parts[1], parts[2]
        mapper = MAPPERS.get(component)
        if mapper is None:
            return [not_data(f"{what}: ESPHome {component} entities are not mapped", device.id)]
        if text == "" and component != "text_sensor":
            return [not_data(f"{what} cleared (empty retained message)", device.id)]
        mapped = mapper(device, object_id, text)
        if isinstance(mapped, str):
            return [Reject(f"{what}: {mapped}", device.id)]
        fields, extras = mapped
        return [
            build_reading(
                device,
                fields=fields,
                extras=extras,
                ts=None,
                received_at=received_at,
                limits=limits,
                sources=dict.fromkeys(fields, f"{component}/{object_id}"),
                origin="esphome entity",
                what=what,
            )
        ]

    def _status(self, device: Device, text: str, received_at: datetime, what: str) -> Decoded:
        if text == "":
            return not_data(f"{what} cleared (empty retained message)", device.id)
        if text not in ("online", "offline"):
            return Reject(f"{what} must be online or offline, got {text[:40]!r}", device.id)
        return DeviceStatus(device.id, text == "online", received_at)

    def encode(self, device: Device, action: str) -> list[tuple[str, bytes]]:
        """The switch or button command that carries a native action to this node."""
        valve = device.kind is DeviceKind.GAS_VALVE
        found = {
            "cut_power": None if valve else ("switch/relay/command", b"OFF"),
            "restore_power": None if valve else ("switch/relay/command", b"ON"),
            "close_valve": ("switch/valve/command", b"OFF") if valve else None,
            "self_test": ("button/self_test/command", b"PRESS"),
            "silence": ("button/silence/command", b"PRESS"),
        }.get(action)
        if found is None:
            raise ValueError(f"an ESPHome {device.kind.value} cannot carry the action {action!r}")
        channel, body = found
        return [(join(self.prefix, str(device.foreign_id), channel), body)]
