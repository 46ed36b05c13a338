"""What a device's messages look like on the wire: native v1, or as a hardware bridge publishes them.

Formats follow the bridges' documentation:
- Zigbee2MQTT (zigbee2mqtt.io, "MQTT topics and messages"): state as one JSON object on
  `zigbee2mqtt/<friendly_name>` (output: json) or one topic per attribute (output: attribute), with
  `last_seen` as ISO 8601 or epoch ms; availability on `<name>/availability` as `{"state":"online"}` or
  the legacy plain `online`; bridge state on `zigbee2mqtt/bridge/state`; commands on `<name>/set`.
- Shelly Gas Gen1 (Shelly API docs, MQTT section): `shellies/<id>/sensor/{operation,gas,concentration,
  self_test}`, `shellies/<id>/valve/0/state`, `shellies/<id>/online`; `valve/0/command` takes close.
  Shelly Gen1 messages carry no timestamp: ingest stamps them on receipt.
- Tasmota (tasmota.github.io, MQTT and power monitoring): `tele/<topic>/SENSOR` with an ENERGY object,
  `tele/<topic>/STATE` with POWER, retained `tele/<topic>/LWT` Online/Offline, `stat/<topic>/POWER` on
  change, MaxPower over-limit as `stat/<topic>/WARNING {"MaxPowerReached":...}`; commands on
  `cmnd/<topic>/POWER`. Time is shown with its UTC offset (SetOption52 1) so event time survives.
- ESPHome (esphome.io, MQTT component): a node with `topic_prefix: esphome/<name>` publishes retained `online` /
  `offline` on `<prefix>/status` and each entity's state as text on `<prefix>/<component>/<object_id>/state`
  (binary_sensor ON/OFF, sensor numbers, switch ON/OFF); commands arrive on `<prefix>/switch/<id>/command`
  (ON/OFF) and `<prefix>/button/<id>/command` (PRESS). No timestamps: ingest stamps them on receipt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from core.domain import Adapter, DeviceKind


@dataclass(frozen=True, slots=True)
class Out:
    """One MQTT message to publish."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Topics:
    """Where each dialect lives (bridges' defaults; tests may move them under a private root)."""

    native_prefix: str = "gw/v1"
    bridge_root: str = ""  # "" -> the bridges' own defaults; "x" -> x/zigbee2mqtt/..., x/tele/...
    zigbee2mqtt: str = "zigbee2mqtt"  # Zigbee2MQTT's mqtt.base_topic
    esphome: str = "esphome"  # the ESPHome nodes' topic_prefix is <this>/<node name>

    def _under(self, *parts: str) -> str:
        return "/".join(p for p in (self.bridge_root.strip("/"), *parts) if p)

    @property
    def zigbee2mqtt_base(self) -> str:
        return self._under(self.zigbee2mqtt)

    def esphome_node(self, name: str) -> str:
        return self._under(self.esphome, name)

    @property
    def shelly_base(self) -> str:
        return self._under("shellies")

    def tasmota(self, kind: str, topic: str, leaf: str) -> str:
        return self._under(kind, topic, leaf)


@dataclass(frozen=True, slots=True)
class Wire:
    """How one device speaks: its adapter, foreign id and options."""

    device_id: str
    kind: DeviceKind
    adapter: Adapter = Adapter.NATIVE
    foreign_id: str | None = None
    z2m_output: str = "json"  # json | attribute
    z2m_legacy_availability: bool = False
    z2m_last_seen: str = "ISO_8601"  # ISO_8601 | epoch

    @property
    def name(self) -> str:
        return self.foreign_id or self.device_id


def _json(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _ts_seconds(ts: int | str) -> float:
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return ts / 1000.0


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def telemetry(wire: Wire, reading: dict[str, Any], topics: Topics) -> list[Out]:
    """The messages that carry one native reading in the device's dialect."""
    if wire.adapter is Adapter.NATIVE:
        return [Out(f"{topics.native_prefix}/{wire.device_id}/telemetry", _json(reading))]
    if wire.adapter is Adapter.ZIGBEE2MQTT:
        return _z2m_state(wire, reading, topics)
    if wire.adapter is Adapter.SHELLY:
        return _shelly_gas(wire, reading, topics)
    if wire.adapter is Adapter.TASMOTA:
        return _tasmota(wire, reading, topics)
    if wire.adapter is Adapter.ESPHOME:
        return _esphome(wire, reading, topics)
    raise ValueError(f"no simulator format for adapter {wire.adapter}")


def status(wire: Wire, online: bool, topics: Topics) -> Out:
    """The retained availability message (also the device's last will when offline)."""
    if wire.adapter is Adapter.NATIVE:
        return Out(
            f"{topics.native_prefix}/{wire.device_id}/status",
            _json({"state": "online" if online else "offline"}),
            retain=True,
        )
    state = "online" if online else "offline"
    if wire.adapter is Adapter.ZIGBEE2MQTT:
        payload = state.encode() if wire.z2m_legacy_availability else _json({"state": state})
        return Out(f"{topics.zigbee2mqtt_base}/{wire.name}/availability", payload, retain=True)
    if wire.adapter is Adapter.SHELLY:
        return Out(f"{topics.shelly_base}/{wire.name}/online", b"true" if online else b"false", retain=True)
    if wire.adapter is Adapter.TASMOTA:
        return Out(topics.tasmota("tele", wire.name, "LWT"), b"Online" if online else b"Offline", retain=True)
    if wire.adapter is Adapter.ESPHOME:
        return Out(f"{topics.esphome_node(wire.name)}/status", state.encode(), retain=True)
    raise ValueError(f"no simulator format for adapter {wire.adapter}")


def command_topic(wire: Wire, topics: Topics) -> str:
    """Where the server sends this device its commands (subscribe here)."""
    if wire.adapter is Adapter.NATIVE:
        return f"{topics.native_prefix}/{wire.device_id}/cmd"
    if wire.adapter is Adapter.ZIGBEE2MQTT:
        return f"{topics.zigbee2mqtt_base}/{wire.name}/set"
    if wire.adapter is Adapter.SHELLY:
        return f"{topics.shelly_base}/{wire.name}/valve/0/command"
    if wire.adapter is Adapter.TASMOTA:
        return topics.tasmota("cmnd", wire.name, "POWER")
    if wire.adapter is Adapter.ESPHOME:
        return f"{topics.esphome_node(wire.name)}/+/+/command"  # switch/relay, switch/valve, button/self_test, ...
    raise ValueError(f"no simulator format for adapter {wire.adapter}")


def parse_command(wire: Wire, payload: bytes, topic: str = "") -> tuple[str | None, str, dict[str, Any]]:
    """(command id or None, native action, raw) from a command message in the device's dialect (ESPHome: the topic
    names the entity, so it is needed too)."""
    text = payload.decode(errors="replace").strip()
    if wire.adapter is Adapter.NATIVE:
        data = orjson.loads(payload)
        return str(data.get("id")), str(data.get("action")), data
    if wire.adapter is Adapter.ZIGBEE2MQTT:
        data = orjson.loads(payload) if text.startswith("{") else {"state": text}
        state = str(data.get("state", "")).upper()
        if state == "OFF":
            return None, "cut_power", data
        if state == "ON":
            return None, "restore_power", data
        if data.get("self_test"):
            return None, "self_test", data
        return None, "unknown", data
    if wire.adapter is Adapter.SHELLY:
        return None, {"close": "close_valve", "open": "open_valve"}.get(text.lower(), "unknown"), {"raw": text}
    if wire.adapter is Adapter.TASMOTA:
        return (
            None,
            {"OFF": "cut_power", "0": "cut_power", "ON": "restore_power", "1": "restore_power"}.get(
                text.upper(), "unknown"
            ),
            {"raw": text},
        )
    if wire.adapter is Adapter.ESPHOME:
        return None, _esphome_action(topic, text), {"raw": text, "topic": topic}
    return None, "unknown", {}


def _esphome_action(topic: str, text: str) -> str:
    """The native action an ESPHome command stands for (the topic says which entity: switch/relay, button/...)."""
    entity = "/".join(topic.split("/")[-3:-1])
    if entity == "switch/valve":
        return "close_valve" if text.upper() == "OFF" else "open_valve"
    if entity == "switch/relay":
        return {"OFF": "cut_power", "ON": "restore_power"}.get(text.upper(), "unknown")
    return {"button/self_test": "self_test", "button/silence": "silence"}.get(entity, "unknown")


def command_ack(
    wire: Wire, command_id: str | None, ok: bool, detail: str, state: dict[str, Any], topics: Topics
) -> list[Out]:
    """The device's answer: native cmd/ack, or the bridge's state echo (bridges have no ack)."""
    if wire.adapter is Adapter.NATIVE:
        return [
            Out(
                f"{topics.native_prefix}/{wire.device_id}/cmd/ack",
                _json({"id": command_id, "ok": ok, "detail": detail}),
            )
        ]
    if wire.adapter is Adapter.TASMOTA and "relay" in state:
        return [Out(topics.tasmota("stat", wire.name, "POWER"), state["relay"].upper().encode())]
    if wire.adapter is Adapter.SHELLY and "valve" in state:
        return [Out(f"{topics.shelly_base}/{wire.name}/valve/0/state", _shelly_valve(state["valve"]).encode())]
    if wire.adapter is Adapter.ZIGBEE2MQTT and "relay" in state:
        return [Out(f"{topics.zigbee2mqtt_base}/{wire.name}", _json({"state": state["relay"].upper()}))]
    if wire.adapter is Adapter.ESPHOME and ("relay" in state or "valve" in state):
        return _esphome(wire, {k: v for k, v in state.items() if k in ("relay", "valve")}, topics)
    return []


def bridge_state(online: bool, topics: Topics, *, legacy: bool = False) -> Out:
    """zigbee2mqtt/bridge/state (retained)."""
    state = "online" if online else "offline"
    return Out(
        f"{topics.zigbee2mqtt_base}/bridge/state", state.encode() if legacy else _json({"state": state}), retain=True
    )


# --- Zigbee2MQTT ---------------------------------------------------------------------------------------
def _z2m_fields(wire: Wire, r: dict[str, Any]) -> dict[str, Any]:
    """A native reading as the attributes of a Zigbee2MQTT device's state."""
    out = _convert_z2m_alarm_fields(r)
    out.update(_convert_z2m_device_fields(wire, r))
    out["linkquality"] = 120
    return out


def _convert_z2m_alarm_fields(r: dict[str, Any]) -> dict[str, Any]:
    """Gas, CO, smoke, tamper and self-test readings as Zigbee2MQTT exposes them."""
    out: dict[str, Any] = {}
    if "gas" in r:
        out["gas"] = r["gas"]
    if "gas_lel" in r:
        out["gas_value"] = r["gas_lel"]  # Tuya TS0601 gas sensors expose gas_value in %LEL
    if "co_ppm" in r:
        out["co"] = r["co_ppm"]  # ppm (Heiman / Tuya CO boxes)
    if "co" in r:
        out["carbon_monoxide"] = bool(r["co"])  # the alarm's own CO alarm output
    if "smoke" in r:
        out["smoke"] = r["smoke"]
        if "smoke_db_m" in r:
            out["smoke_density_dbm"] = r["smoke_db_m"]
    if "tamper" in r:
        out["tamper"] = r["tamper"]
    if r.get("test"):
        out["test"] = True
    return out


def _convert_z2m_device_fields(wire: Wire, r: dict[str, Any]) -> dict[str, Any]:
    """Battery, relay, metering and temperature readings as Zigbee2MQTT exposes them."""
    out: dict[str, Any] = {}
    if "battery_pct" in r:
        out["battery"] = round(r["battery_pct"])
        out["battery_low"] = r["battery_pct"] < 15
    if "relay" in r:
        out["state"] = r["relay"].upper()
    for src, dst, scale in (
        ("power_w", "power", 1.0),
        ("current_a", "current", 1.0),
        ("voltage_v", "voltage", 1.0),
        ("energy_wh", "energy", 0.001),
    ):
        if src in r:
            out[dst] = round(r[src] * scale, 3)
    if "temp_c" in r:
        out[
            "device_temperature" if wire.kind in (DeviceKind.SMART_SOCKET, DeviceKind.CHARGING_PORT) else "temperature"
        ] = r["temp_c"]
    return out


def _z2m_state(wire: Wire, r: dict[str, Any], topics: Topics) -> list[Out]:
    fields = _z2m_fields(wire, r)
    seconds = _ts_seconds(r["ts"])
    fields["last_seen"] = int(seconds * 1000) if wire.z2m_last_seen == "epoch" else _iso(seconds)
    base = f"{topics.zigbee2mqtt_base}/{wire.name}"
    if wire.z2m_output == "attribute":
        return [
            Out(
                f"{base}/{key}",
                value if isinstance(value, bytes) else (value.encode() if isinstance(value, str) else _json(value)),
            )
            for key, value in fields.items()
        ]
    return [Out(base, _json(fields))]


# --- Shelly Gas Gen1 -----------------------------------------------------------------------------------
def _shelly_valve(state: str) -> str:
    return {"open": "opened", "closed": "closed", "fault": "failure"}.get(state, state)


def _shelly_gas(wire: Wire, r: dict[str, Any], topics: Topics) -> list[Out]:
    base = f"{topics.shelly_base}/{wire.name}"
    lel = float(r.get("gas_lel", 0.0))
    # Shelly Gas's own alarm levels are reported at about 1,800 ppm ("mild") and 3,000 ppm ("heavy").
    level = "test" if r.get("test") else "heavy" if lel >= 6.0 else "mild" if lel >= 3.6 else "none"
    out = [
        Out(f"{base}/sensor/operation", b"fault" if r.get("fault") else b"normal"),
        Out(f"{base}/sensor/gas", level.encode()),
        Out(f"{base}/sensor/concentration", str(round(lel * 500)).encode()),
    ]
    if r.get("test"):
        out.append(Out(f"{base}/sensor/self_test", b"running"))
    if "valve" in r:
        out.append(Out(f"{base}/valve/0/state", _shelly_valve(r["valve"]).encode()))
    return out


# --- Tasmota -------------------------------------------------------------------------------------------
def _tasmota_time(ts: int | str) -> str:
    # Tasmota prints local time; SetOption52 1 appends the offset. Our devices keep UTC.
    return datetime.fromtimestamp(_ts_seconds(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _tasmota(wire: Wire, r: dict[str, Any], topics: Topics) -> list[Out]:
    time = _tasmota_time(r["ts"])
    out: list[Out] = []
    energy = {
        "TotalStartTime": "2026-01-01T00:00:00",
        "Total": round(r.get("energy_wh", 0.0) / 1000, 3),
        "Yesterday": 0.0,
        "Today": round(r.get("energy_wh", 0.0) / 1000, 3),
        "Period": 0,
        "Power": round(r.get("power_w", 0.0)),
        "ApparentPower": round(r.get("power_w", 0.0) / 0.95),
        "ReactivePower": round(r.get("power_w", 0.0) * 0.33),
        "Factor": 0.95,
        "Voltage": round(r.get("voltage_v", 220.0)),
        "Current": round(r.get("current_a", 0.0), 3),
    }
    sensor: dict[str, Any] = {"Time": time, "ENERGY": energy}
    if "temp_c" in r:
        sensor["ANALOG"] = {"Temperature1": r["temp_c"]}
        sensor["TempUnit"] = "C"
    out.append(Out(topics.tasmota("tele", wire.name, "SENSOR"), _json(sensor)))
    if "relay" in r:
        out.append(Out(topics.tasmota("tele", wire.name, "STATE"), _json({"Time": time, "POWER": r["relay"].upper()})))
    return out


def tasmota_max_power(wire: Wire, ts: int | str, power_w: float, topics: Topics) -> list[Out]:
    """MaxPower exceeded for MaxPowerHold: the warning, then the relay goes off (Tasmota xdrv_03_energy)."""
    return [
        Out(
            topics.tasmota("stat", wire.name, "WARNING"),
            _json({"Time": _tasmota_time(ts), "MaxPowerReached": round(power_w)}),
        ),
        Out(topics.tasmota("stat", wire.name, "POWER"), b"OFF"),
    ]


# --- ESPHome -------------------------------------------------------------------------------------------
# A native field -> (component, object_id) as an ESPHome node names its entities (ingest/adapters/esphome.py).
ESPHOME_ENTITIES: dict[str, tuple[str, str]] = {
    "gas": ("binary_sensor", "gas"),
    "smoke": ("binary_sensor", "smoke"),
    "co": ("binary_sensor", "co"),
    "tamper": ("binary_sensor", "tamper"),
    "test": ("binary_sensor", "test"),
    "gas_lel": ("sensor", "gas_lel"),
    "co_ppm": ("sensor", "co_ppm"),
    "smoke_db_m": ("sensor", "smoke_db_m"),
    "temp_c": ("sensor", "temperature"),
    "power_w": ("sensor", "power"),
    "current_a": ("sensor", "current"),
    "voltage_v": ("sensor", "voltage"),
    "energy_wh": ("sensor", "energy"),
    "battery_pct": ("sensor", "battery"),
    "relay": ("switch", "relay"),
    "valve": ("switch", "valve"),
}


def _esphome_text(field: str, value: Any) -> bytes:
    if field == "relay":
        return str(value).upper().encode()
    if field == "valve":
        return b"ON" if value == "open" else b"OFF"
    if isinstance(value, bool):
        return b"ON" if value else b"OFF"
    return f"{value:.3f}".rstrip("0").rstrip(".").encode() if isinstance(value, float) else str(value).encode()


def _esphome(wire: Wire, r: dict[str, Any], topics: Topics) -> list[Out]:
    """One retained state message per entity the reading touches (ESPHome publishes entities separately)."""
    node = topics.esphome_node(wire.name)
    out = []
    for field, value in r.items():
        entity = ESPHOME_ENTITIES.get(field)
        if entity is None or value is None:
            continue
        component, object_id = entity
        out.append(Out(f"{node}/{component}/{object_id}/state", _esphome_text(field, value), retain=True))
    return out
