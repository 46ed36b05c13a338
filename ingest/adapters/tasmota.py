"""Tasmota smart sockets and metering plugs, mapped to native readings and status.

Formats are Tasmota's (tasmota.github.io MQTT and Power Monitoring docs; xdrv_03_energy.ino for the
MARGINS and MaxPower messages), with the default FullTopic `%prefix%/%topic%/`, under an optional bridge
topic root.

Topics and what each becomes (issue 19: every message is a reading, a status, a device event or a reject with its
reason):
- `tele/<topic>/SENSOR`:
  `{"Time":..,"ENERGY":{"Total":kWh,"Power":W,"Voltage":V,"Current":A,..},"DS18B20":{"Temperature":..},"TempUnit":"C"}`
  -> power_w, voltage_v, current_a, energy_wh = Total x 1000, temp_c; the rest of ENERGY in extras `energy`, other
  sensors (ANALOG, MQ gas) in extras
- `tele/<topic>/STATE`: `{"Time":..,"UptimeSec":..,"POWER":"ON","Wifi":{"RSSI":..},..}` -> relay (POWER or POWER1),
  extras uptime_s, wifi_rssi; without POWER still a reading (the device is alive)
- `tele/<topic>/LWT`: `Online` / `Offline` (retained, the last will) -> DeviceStatus; empty: not data
- `tele/<topic>/MARGINS`: `{"MARGINS":{"PowerHigh":"ON","PowerDelta":123,..}}` (older: flat; ESP32 builds:
  `PowerHigh1`) -> extras power_high, power_low, voltage_high, voltage_low, current_high, current_low (true/false),
  power_delta_w; phase n > 1 as `_n`
- `tele/<topic>/INFO3`: `{"Info3":{"RestartReason":..}}` (older: flat) -> DeviceEvent booted (a restart: "a sensor
  that resets")
- `stat/<topic>/POWER`, `POWER1`: `ON` / `OFF` -> relay (POWER2.. as extras relay_2..)
- `stat/<topic>/WARNING`: `{"MaxPowerReached":2100}` (W measured; older `"2100W"`; ESP32 `MaxPowerReached1`),
  `{"MaxPowerReachedRetry":"OFF"}`, `{"MaxEnergyReached":1.2}` -> power_w and relay off (Tasmota has switched it
  off), extras max_power_reached / max_power_retry_exhausted / max_energy_reached_kwh
- `stat/<topic>/RESULT` (not subscribed): `{"POWER":"OFF"}`, `{"PowerMonitor":"ON"}` -> relay; PowerMonitor ON
  (power restored after MaxPowerWindow) relay on; any other command result not data
- `tele/<topic>/INFO1`, `INFO2`, `HASS_STATE`, `stat/<topic>/STATUS*`, `cmnd/<topic>/*`: boot info, discovery,
  status replies, commands -> not data (not subscribed)
The list is tight on purpose: `stat/+/RESULT` carries every command response of every Tasmota on the broker
(relay changes also come as `stat/<topic>/POWER`), and MaxPowerReached is published to `stat/<topic>/WARNING`,
not RESULT.

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

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from core.domain import Adapter, Device, DeviceStatus
from ingest.adapters.common import as_object, bridge_time, build_reading, is_number, join, resolve, scalar_text
from ingest.decode import Decoded, DeviceEvent, DeviceLookup, Limits, Reject, not_data, parse_json_object

ADAPTER = Adapter.TASMOTA
TELE = ("SENSOR", "STATE", "LWT", "MARGINS", "INFO3")
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
_PHASE = re.compile(r"^(?P<key>[A-Za-z]+?)(?P<phase>\d*)$")  # ESP32 energy builds number the phases: PowerHigh1


def _phase(key: str) -> tuple[str, int]:
    """("PowerHigh", 1) from "PowerHigh" or "PowerHigh1"; ("PowerHigh", 2) from "PowerHigh2"."""
    match = _PHASE.match(key)
    if match is None:
        return key, 1
    return match["key"], int(match["phase"] or 1)


# Command results: RESULT, or with SetOption4 1 one topic per command (POWERMONITOR: power restored after MaxPower).
RESULTS = ("RESULT", "POWERMONITOR")


def _relay_leaf(leaf: str) -> bool:
    """stat/<t>/POWER, POWER1, POWER2, ...: a relay's state as plain ON/OFF."""
    return leaf == "POWER" or (leaf.startswith("POWER") and leaf[5:].isdigit())


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


def map_state(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """tele/<topic>/STATE -> (fields, extras), or what was wrong with POWER."""
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    raw = data.get("POWER", data.get("POWER1"))
    if raw is not None:
        relay = _relay(raw)
        if relay is None:
            return f"POWER must be ON or OFF, got {str(raw)[:40]!r}"
        fields["relay"] = relay
    if is_number(data.get("UptimeSec")):
        extras["uptime_s"] = data["UptimeSec"]
    wifi = data.get("Wifi")
    if isinstance(wifi, dict) and is_number(wifi.get("RSSI")):
        extras["wifi_rssi"] = wifi["RSSI"]
    if "Time" in data:
        extras["device_time"] = data["Time"]
    return fields, extras


def map_margins(data: dict[str, Any]) -> dict[str, Any]:
    """tele/<topic>/MARGINS (flat, or nested under "MARGINS"; ESP32 builds number the phases) -> extras."""
    nested = data.get("MARGINS")
    inner: dict[str, Any] = nested if isinstance(nested, dict) else data
    extras: dict[str, Any] = {}
    for raw_key, value in inner.items():
        key, phase = _phase(raw_key)
        suffix = "" if phase == 1 else f"_{phase}"
        if key in MARGIN_KEYS:
            extras[MARGIN_KEYS[key] + suffix] = value.upper() == "ON" if isinstance(value, str) else value
        elif key == "PowerDelta":
            extras["power_delta_w" + suffix] = value
    return extras


def _watts(raw: Any) -> Any:
    if isinstance(raw, str):  # older firmware: "2500W" or "2500 W"
        digits = raw.strip().removesuffix("W").strip()
        return float(digits) if digits.replace(".", "", 1).isdigit() else raw
    return raw


def map_warning(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """stat/<topic>/WARNING -> (fields, extras), or what was not understood. Every one of these warnings means
    Tasmota has switched the relay off (xdrv_03_energy.ino): the state confirms a pending cut."""
    fields: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for raw_key, value in data.items():
        key, phase = _phase(raw_key)
        if phase != 1:
            extras[f"{key}_{phase}"] = value  # another phase of a multi-phase meter: kept, channel 1 is judged
        elif key == "MaxPowerReached":
            fields["power_w"] = _watts(value)
            fields["relay"] = "off"
            extras["max_power_reached"] = True
        elif key == "MaxPowerReachedRetry":
            fields["relay"] = "off"  # retries used up: Tasmota switches the relay off and leaves it off
            extras["max_power_retry_exhausted"] = True
        elif key == "MaxEnergyReached":
            fields["relay"] = "off"
            extras["max_energy_reached_kwh"] = value
    if not fields:
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
    """The Tasmota adapter for one topic root (an AdapterDecoder with `ignores` and `owns`)."""

    root: str = ""
    name: ClassVar[str] = "tasmota"

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

    def owns(self, topic: str) -> bool:
        return self._split(topic) is not None

    def ignores(self, topic: str) -> str | None:
        """Commands, and Tasmota messages that are not device data."""
        split = self._split(topic)
        if split is None:
            return None
        prefix, _, leaf = split
        if prefix == "cmnd":
            return "a command to a Tasmota device (ours or another client's, or its own empty POWER at boot)"
        if prefix == "tele" and leaf not in TELE:
            return f"Tasmota tele/{leaf} (boot or discovery information) is not device data"
        if prefix == "stat" and leaf not in (*STAT, *RESULTS) and not _relay_leaf(leaf):
            return f"Tasmota stat/{leaf} (a status reply) is not device data"
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
            return [not_data(why)]
        device = resolve(lookup, ADAPTER, name)
        if isinstance(device, Reject):
            return [device]
        what = f"tasmota {name!r} {prefix}/{leaf}"
        if leaf == "LWT":
            return [self._lwt(device, payload, received_at, what)]
        if prefix == "stat" and _relay_leaf(leaf):
            return [self._power(device, leaf, payload, received_at, limits, what)]
        if not payload.strip():
            return [not_data(f"{what} cleared (empty retained message)", device.id)]
        data = parse_json_object(payload)
        if isinstance(data, Reject):
            return [Reject(f"{what}: {data.reason}", device.id)]
        if leaf == "INFO3":
            return [self._booted(device, data, received_at)]
        if leaf in RESULTS:
            return [self._result(device, data, received_at, limits, what)]
        return [self._json(device, leaf, data, received_at, limits, what)]

    def _power(
        self, device: Device, leaf: str, payload: bytes, received_at: datetime, limits: Limits, what: str
    ) -> Decoded:
        text = scalar_text(payload, what=what, device_id=device.id)
        if isinstance(text, Reject):
            return text
        relay = _relay(text)
        if relay is None:
            return Reject(f"{what} must be ON or OFF, got {text[:40]!r}", device.id)
        channel = leaf.removeprefix("POWER") or "1"
        fields, extras = ({"relay": relay}, {}) if channel == "1" else ({}, {f"relay_{channel}": relay})
        return build_reading(
            device, fields=fields, extras=extras, ts=None, received_at=received_at, limits=limits, what=what
        )

    def _json(
        self, device: Device, leaf: str, data: dict[str, Any], received_at: datetime, limits: Limits, what: str
    ) -> Decoded:
        sources: dict[str, str] = {}
        if leaf == "SENSOR":
            fields, extras, sources = map_sensor(data)
            if not fields and set(extras) <= {"device_time"}:
                return Reject(f"{what} carries neither ENERGY nor any sensor", device.id)
        elif leaf == "STATE":
            state = map_state(data)
            if isinstance(state, str):
                return Reject(f"{what}: {state}", device.id)
            fields, extras = state
        elif leaf == "MARGINS":
            fields, extras = {}, map_margins(data)
            if not extras:
                return Reject(
                    f"{what} carries no PowerLow/PowerHigh/PowerDelta/VoltageLow/VoltageHigh/CurrentLow/CurrentHigh",
                    device.id,
                )
        else:
            mapped = map_warning(data)
            if isinstance(mapped, str):
                return Reject(f"{what}: {mapped}", device.id)
            fields, extras = mapped
            sources = {"power_w": "MaxPowerReached", "relay": "MaxPower warning"}
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
            return not_data("tasmota LWT cleared (empty retained message)", device.id)
        if text not in ("Online", "Offline"):
            return Reject(f"{what} must be Online or Offline, got {text[:40]!r}", device.id)
        return DeviceStatus(device.id, text == "Online", received_at)

    def _booted(self, device: Device, data: dict[str, Any], at: datetime) -> Decoded:
        """tele/<topic>/INFO3 after every start: the restart reason (a sensor that resets shows here)."""
        inner = as_object(data.get("Info3")) or data
        details = {"restart_reason": inner["RestartReason"]} if "RestartReason" in inner else {}
        return DeviceEvent(self.name, str(device.foreign_id), "booted", at, device.id, details)

    def _result(
        self, device: Device, data: dict[str, Any], received_at: datetime, limits: Limits, what: str
    ) -> Decoded:
        """stat/<topic>/RESULT is not subscribed; if a broader subscription brings one, a POWER in it counts, and
        PowerMonitor ON (the power restored after MaxPowerWindow) means the relay is on again."""
        relay = _relay(data.get("POWER", data.get("POWER1")))
        monitor = next((v for k, v in data.items() if _phase(k) == ("PowerMonitor", 1)), None)
        if relay is None and isinstance(monitor, str) and monitor.upper() == "ON":
            relay = "on"
        if relay is None:
            return not_data(f"{what}: a command result", device.id)
        extras = {"power_monitor": True} if monitor is not None else {}
        return build_reading(
            device, fields={"relay": relay}, extras=extras, ts=None, received_at=received_at, limits=limits, what=what
        )

    def encode(self, device: Device, action: str) -> list[tuple[str, bytes]]:
        """cmnd/<topic>/POWER for the relay actions."""
        body = {"cut_power": b"OFF", "restore_power": b"ON"}.get(action)
        if body is None:
            raise ValueError(f"a Tasmota relay cannot carry the action {action!r}")
        return [(join(self.root, "cmnd", str(device.foreign_id), "POWER"), body)]
