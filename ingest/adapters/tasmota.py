"""Tasmota smart sockets and metering plugs, mapped to native readings and status.

Formats are Tasmota's (tasmota.github.io MQTT and Power Monitoring docs; xdrv_03_energy.ino for the
MARGINS and MaxPower messages), with the default FullTopic `%prefix%/%topic%/`, under an optional bridge
topic root.

Topics we subscribe to (`topics()`), and what each becomes:
- `tele/<topic>/SENSOR` `{"Time":..,"ENERGY":{"Total":kWh,"Today":kWh,"Power":W,"Voltage":V,"Current":A,..},
  "DS18B20":{"Temperature":..},"TempUnit":"C"}` -> power_w, voltage_v, current_a, energy_wh = Total x 1000,
  temp_c; the rest of ENERGY (Today, Yesterday, Factor, ..) in extras `energy`, other sensors in extras.
- `tele/<topic>/STATE` `{"Time":..,"POWER":"ON",..}` (POWER1 on multi-relay devices) -> relay.
- `tele/<topic>/LWT` `Online` / `Offline` (retained, the last will) -> DeviceStatus.
- `tele/<topic>/MARGINS` `{"Time":..,"PowerHigh":"ON",..}` (newer firmware nests it under "MARGINS") ->
  extras power_high, power_low, voltage_high, voltage_low, current_high, current_low (true/false),
  power_delta_w.
- `stat/<topic>/POWER`, `stat/<topic>/POWER1` `ON` / `OFF` -> relay.
- `stat/<topic>/WARNING` `{"MaxPowerReached":2500}` (older firmware `"2500W"`) -> power_w and extras
  max_power_reached; `{"MaxPowerReachedRetry":"OFF"}` -> relay off and extras max_power_retry_exhausted;
  `{"MaxEnergyReached":1.2}` -> extras max_energy_reached_kwh.
The list is tight on purpose: `stat/+/RESULT` carries every command response of every Tasmota on the broker
(relay changes also come as `stat/<topic>/POWER`), and MaxPowerReached is published to `stat/<topic>/WARNING`,
not RESULT. `tele/<topic>/INFO1..3`, `stat/<topic>/STATUS*`, `cmnd/#` are not subscribed; if one arrives it is
Ignored.

Temperature: the first sensor object with a `Temperature` key (DS18B20, AM2301, SHT3X, ANALOG
`Temperature1`, ..); the ESP chip's own (`ESP32`) is kept in extras, it is not the socket's. `TempUnit: F`
is converted to Celsius. Multi-channel devices report arrays (`"Power":[10,20]`): channel 1 is used and the
arrays kept in extras.

Time: Tasmota prints `Time` in device-local time, with its UTC offset only when SetOption52 1 is set
(`2026-11-23T20:00:05+08:00`). With the offset it is the reading's ts (event time, so a buffered or
fast-forwarded sequence is judged as it happened); without it the receive time is used and `Time` kept in
extras `device_time` (a local time without a zone is a guess). `stat/<topic>/POWER` carries no time and is
stamped on receipt. Caveat of that mix: the rules do not evaluate a reading older than the device's latest,
so a device clock running behind ours by more than the gap between a POWER and the next SENSOR would have
that SENSOR stored but not evaluated; keep Tasmota on NTP (its default). A Time ahead of our clock by more
than the skew limit falls back to the receive time; one older than the age limit is rejected as stale.

Device: the registry device with adapter `tasmota` and foreign_id = the Tasmota %topic%.

Commands (`encode`): cut_power -> `cmnd/<topic>/POWER` `OFF`; restore_power -> `ON`. Other actions are refused.
The confirmation is the `stat/<topic>/POWER` Tasmota publishes afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.domain import Adapter, Device, DeviceStatus
from ingest.adapters.common import bridge_time, build_reading, is_number, join, resolve, scalar_text
from ingest.decode import Decoded, DeviceLookup, Ignored, Limits, Reject, parse_json_object

ADAPTER = Adapter.TASMOTA
TELE = ("SENSOR", "STATE", "LWT", "MARGINS")
STAT = ("POWER", "POWER1", "WARNING")
CHIP_SENSORS = frozenset({"ESP32", "ESP8266"})
MARGIN_KEYS = {
    "PowerLow": "power_low",
    "PowerHigh": "power_high",
    "VoltageLow": "voltage_low",
    "VoltageHigh": "voltage_high",
    "CurrentLow": "current_low",
    "CurrentHigh": "current_high",
}
ENERGY_KEYS = {"Power": "power_w", "Voltage": "voltage_v", "Current": "current_a"}


def _relay(text: Any) -> str | None:
    return {"ON": "on", "OFF": "off"}.get(text.upper()) if isinstance(text, str) else None


def _channel_one(value: Any, name: str, extras: dict[str, Any]) -> Any:
    if isinstance(value, list):
        extras[name] = value
        return value[0] if value else None
    return value


def map_sensor(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """tele/<topic>/SENSOR -> (fields, extras, sources)."""
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    sources: dict[str, str] = {}
    energy = data.get("ENERGY")
    if isinstance(energy, dict):
        rest = dict(energy)
        for key, name in ENERGY_KEYS.items():
            if key in rest:
                fields[name] = _channel_one(rest.pop(key), f"energy_{key.lower()}", extras)
                sources[name] = f"ENERGY.{key}"
        if "Total" in rest:
            total = _channel_one(rest.pop("Total"), "energy_total", extras)
            fields["energy_wh"] = total * 1000 if is_number(total) else total
            sources["energy_wh"] = "ENERGY.Total"
        if rest:
            extras["energy"] = rest
    elif energy is not None:
        extras["ENERGY"] = energy
    unit = data.get("TempUnit", "C")
    for key, value in data.items():
        if key in ("Time", "ENERGY", "TempUnit"):
            continue
        temp_key = next((k for k in value if k.startswith("Temperature")), None) if isinstance(value, dict) else None
        if temp_key is not None and key not in CHIP_SENSORS and "temp_c" not in fields:
            temp = value[temp_key]
            fields["temp_c"] = round((temp - 32) * 5 / 9, 2) if unit == "F" and is_number(temp) else temp
            sources["temp_c"] = f"{key}.{temp_key}"
            others = {k: v for k, v in value.items() if k != temp_key}
            if others:
                extras[key] = others
        else:
            extras[key] = value
    if "Time" in data:
        extras["device_time"] = data["Time"]
    return fields, extras, sources


def map_margins(data: dict[str, Any]) -> dict[str, Any]:
    """tele/<topic>/MARGINS (flat, or nested under "MARGINS") -> extras."""
    nested = data.get("MARGINS")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else data
    extras: dict[str, Any] = {}
    for key, value in inner.items():
        if key in MARGIN_KEYS:
            extras[MARGIN_KEYS[key]] = value.upper() == "ON" if isinstance(value, str) else value
        elif key == "PowerDelta":
            extras["power_delta_w"] = value
    return extras


def map_warning(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """stat/<topic>/WARNING -> (fields, extras), or what was not understood."""
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    if "MaxPowerReached" in data:
        raw = data["MaxPowerReached"]
        watts = raw
        if isinstance(raw, str):  # older firmware: "2500W" or "2500 W"
            digits = raw.strip().removesuffix("W").strip()
            watts = float(digits) if digits.replace(".", "", 1).isdigit() else raw
        fields["power_w"] = watts
        extras["max_power_reached"] = True
    if "MaxPowerReachedRetry" in data:
        fields["relay"] = "off"  # retries used up: Tasmota switches the relay off and leaves it off
        extras["max_power_retry_exhausted"] = True
    if "MaxEnergyReached" in data:
        extras["max_energy_reached_kwh"] = data["MaxEnergyReached"]
    if not fields and not extras:
        keys = ", ".join(k for k in data if k != "Time") or "nothing"
        return (
            f"unrecognised Tasmota warning (carries {keys}; expected MaxPowerReached, MaxPowerReachedRetry, "
            "MaxEnergyReached)"
        )
    if "Time" in data:
        extras["device_time"] = data["Time"]
    return fields, extras


@dataclass(frozen=True, slots=True)
class Tasmota:
    """The Tasmota adapter for one topic root (an AdapterDecoder with `ignores`)."""

    root: str = ""

    def topics(self) -> list[str]:
        """Only the leaves we map (see the module docstring for why not stat/+/RESULT)."""
        return [join(self.root, "tele", "+", leaf) for leaf in TELE] + [
            join(self.root, "stat", "+", leaf) for leaf in STAT
        ]

    def _split(self, topic: str) -> tuple[str, str, str] | None:
        head = join(self.root, "")
        rest = topic[len(head) + 1 :] if self.root else topic
        if self.root and not topic.startswith(head + "/"):
            return None
        parts = rest.split("/")
        if len(parts) != 3 or parts[0] not in ("tele", "stat", "cmnd"):
            return None
        return parts[0], parts[1], parts[2]

    def source(self, topic: str) -> str | None:
        """The base one Tasmota's account publishes under (`tele|stat/<topic>`, pinned by its ACL)."""
        split = self._split(topic)
        return None if split is None else join(self.root, split[0], split[1])

    def ignores(self, topic: str) -> str | None:
        """Commands, and Tasmota messages we do not map."""
        split = self._split(topic)
        if split is None:
            return None
        prefix, _, leaf = split
        if prefix == "cmnd":
            return "a command to a Tasmota device (ours or another client's)"
        if (prefix == "tele" and leaf not in TELE) or (prefix == "stat" and leaf not in STAT):
            return f"Tasmota {prefix}/{leaf} is not stored"
        return None

    def __call__(
        self, topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> list[Decoded] | None:
        split = self._split(topic)
        if split is None:
            return None
        prefix, name, leaf = split
        why = self.ignores(topic)
        if why is not None:
            if prefix == "stat" and leaf == "RESULT":
                return [self._result(name, payload, received_at, lookup, limits)]
            return [Ignored(why)]
        device = resolve(lookup, ADAPTER, name)
        if isinstance(device, Reject):
            return [device]
        what = f"tasmota {name!r} {prefix}/{leaf}"
        if leaf == "LWT":
            return [self._lwt(device, payload, received_at, what)]
        if prefix == "stat" and leaf in ("POWER", "POWER1"):
            text = scalar_text(payload, what=what, device_id=device.id)
            if isinstance(text, Reject):
                return [text]
            relay = _relay(text)
            if relay is None:
                return [Reject(f"{what} must be ON or OFF, got {text[:40]!r}", device.id)]
            return [
                build_reading(
                    device, fields={"relay": relay}, extras={}, ts=None, received_at=received_at, limits=limits
                )
            ]
        data = parse_json_object(payload)
        if isinstance(data, Reject):
            return [Reject(f"{what}: {data.reason}", device.id)]
        return [self._json(device, leaf, data, received_at, limits, what)]

    def _json(
        self, device: Device, leaf: str, data: dict[str, Any], received_at: datetime, limits: Limits, what: str
    ) -> Decoded:
        sources: dict[str, str] = {}
        if leaf == "SENSOR":
            fields, extras, sources = map_sensor(data)
            if not fields and set(extras) <= {"device_time"}:
                return Reject(f"{what} carries neither ENERGY nor a temperature", device.id)
        elif leaf == "STATE":
            raw = data.get("POWER", data.get("POWER1"))
            if raw is None:
                return Ignored(f"{what} carries no POWER (a device without a relay)")
            relay = _relay(raw)
            if relay is None:
                return Reject(f"{what}: POWER must be ON or OFF, got {str(raw)[:40]!r}", device.id)
            fields, extras = {"relay": relay}, {"device_time": data["Time"]} if "Time" in data else {}
        elif leaf == "MARGINS":
            fields, extras = {}, map_margins(data)
            if not extras:
                return Reject(
                    f"{what} carries no PowerLow/PowerHigh/VoltageLow/VoltageHigh/CurrentLow/CurrentHigh", device.id
                )
        else:
            mapped = map_warning(data)
            if isinstance(mapped, str):
                return Reject(f"{what}: {mapped}", device.id)
            fields, extras = mapped
            sources = {"power_w": "MaxPowerReached", "relay": "MaxPowerReachedRetry"}
        ts = bridge_time(data.get("Time"), received_at, limits, extras, raw_key="device_time")
        if ts is not None:
            extras.pop("device_time", None)  # it is the ts now
        return build_reading(
            device,
            fields=fields,
            extras=extras,
            ts=ts,
            received_at=received_at,
            limits=limits,
            sources=sources,
            origin="Tasmota field",
            what=what,
        )

    def _lwt(self, device: Device, payload: bytes, received_at: datetime, what: str) -> Decoded:
        text = scalar_text(payload, what=what, device_id=device.id)
        if isinstance(text, Reject):
            return text
        if text == "":
            return Ignored("tasmota LWT cleared (empty retained message)")
        if text not in ("Online", "Offline"):
            return Reject(f"{what} must be Online or Offline, got {text[:40]!r}", device.id)
        return DeviceStatus(device.id, text == "Online", received_at)

    def _result(
        self, name: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> Decoded:
        """stat/<topic>/RESULT is not subscribed; if a broader subscription brings one, a POWER in it counts."""
        data = parse_json_object(payload)
        relay = _relay(data.get("POWER", data.get("POWER1"))) if isinstance(data, dict) else None
        if relay is None:
            return Ignored("a Tasmota command result")
        device = resolve(lookup, ADAPTER, name)
        if isinstance(device, Reject):
            return device
        return build_reading(
            device, fields={"relay": relay}, extras={}, ts=None, received_at=received_at, limits=limits
        )

    def encode(self, device: Device, action: str) -> list[tuple[str, bytes]]:
        """cmnd/<topic>/POWER for the relay actions."""
        body = {"cut_power": b"OFF", "restore_power": b"ON"}.get(action)
        if body is None:
            raise ValueError(f"a Tasmota relay cannot carry the action {action!r}")
        return [(join(self.root, "cmnd", str(device.foreign_id), "POWER"), body)]
