"""Bridge adapters, pure: documented Zigbee2MQTT, Shelly Gas Gen1, Tasmota and ESPHome payloads in, native readings,
statuses, device events and rejects (invalid, or not device data) out: every message one of them (issue 19). Fixtures follow the bridges' documentation (cited per table); the
simulators publish the same shapes (simulators/formats.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from core.domain import (
    FLAG_FIELDS,
    MEASUREMENT_FIELDS,
    STATE_FIELDS,
    Adapter,
    Device,
    DeviceKind,
    DeviceStatus,
    Location,
    Reading,
)
from ingest import adapters
from ingest.adapters.common import content_seq
from ingest.decode import Decoded, Decoder, DeviceEvent, Limits, Message, Reject

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
LIMITS = Limits()


def dev(device_id: str, kind: DeviceKind, adapter: Adapter, foreign_id: str) -> Device:
    return Device(
        id=device_id, kind=kind, site_id="s1", location=Location.KITCHEN, adapter=adapter, foreign_id=foreign_id
    )


DEVICES = [
    dev("gas-z1", DeviceKind.GAS_DETECTOR, Adapter.ZIGBEE2MQTT, "kitchen_gas"),
    dev("gas-z2", DeviceKind.GAS_DETECTOR, Adapter.ZIGBEE2MQTT, "floor2/kitchen_gas"),
    dev("co-z1", DeviceKind.CO_ALARM, Adapter.ZIGBEE2MQTT, "co_box"),
    dev("smoke-z1", DeviceKind.SMOKE_DETECTOR, Adapter.ZIGBEE2MQTT, "hall_smoke"),
    dev("smoke-z2", DeviceKind.SMOKE_DETECTOR, Adapter.ZIGBEE2MQTT, "0x00158d0001d2a2b3"),
    dev("plug-z1", DeviceKind.SMART_SOCKET, Adapter.ZIGBEE2MQTT, "plug_1"),
    dev("valve-z1", DeviceKind.GAS_VALVE, Adapter.ZIGBEE2MQTT, "gas_valve"),
    dev("gw-z1", DeviceKind.GATEWAY, Adapter.ZIGBEE2MQTT, "bridge"),
    dev("gas-s1", DeviceKind.GAS_DETECTOR, Adapter.SHELLY, "shellygas-E868E7C6E54A"),
    dev("port-t1", DeviceKind.CHARGING_PORT, Adapter.TASMOTA, "shed_port_3"),
    dev("gas-s2", DeviceKind.GAS_DETECTOR, Adapter.SHELLY, "shellygas-A1B2C3D4E5F6"),
    dev("valve-s2", DeviceKind.GAS_VALVE, Adapter.SHELLY, "shellygas-A1B2C3D4E5F6/valve/0"),
    dev("gas-e1", DeviceKind.GAS_DETECTOR, Adapter.ESPHOME, "kitchen-node"),
    dev("socket-e1", DeviceKind.SMART_SOCKET, Adapter.ESPHOME, "corridor-socket"),
    dev("valve-e1", DeviceKind.GAS_VALVE, Adapter.ESPHOME, "valve-node"),
]


@dataclass
class Registry:
    """The DeviceLookup a decoder gets (ingest passes its DeviceCache); here a dict, as the decoders are pure."""

    devices: list[Device] = field(default_factory=lambda: list(DEVICES))

    def device(self, device_id: str) -> Device | None:
        return next((d for d in self.devices if d.id == device_id), None)

    def by_foreign_id(self, adapter: Adapter, foreign_id: str) -> Device | None:
        return next((d for d in self.devices if d.adapter is adapter and d.foreign_id == foreign_id), None)


def decode(
    topic: str,
    payload: bytes | str | dict[str, Any] | list[Any],
    *,
    registry: Registry | None = None,
    received_at: datetime = NOW,
    root: str = "",
) -> list[Decoded]:
    body = (
        orjson.dumps(payload)
        if isinstance(payload, dict | list)
        else (payload.encode() if isinstance(payload, str) else payload)
    )
    decoder = Decoder(limits=LIMITS, adapters=adapters.decoders(root))
    return decoder.decode(Message(topic=topic, payload=body, received_at=received_at), registry or Registry())


def one(topic: str, payload: Any, **kw: Any) -> Decoded:
    items = decode(topic, payload, **kw)
    assert len(items) == 1, items
    return items[0]


def reading(topic: str, payload: Any, **kw: Any) -> Reading:
    item = one(topic, payload, **kw)
    assert isinstance(item, Reading), item
    return item


def fields_of(r: Reading) -> dict[str, Any]:
    names = MEASUREMENT_FIELDS + FLAG_FIELDS + STATE_FIELDS
    return {n: getattr(r, n) for n in names if getattr(r, n) is not None}


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- Zigbee2MQTT, output: json -------------------------------------------------------------------------
# Exposes from the device pages on zigbee2mqtt.io: TS0601_gas_sensor_2, TS0601_smart_CO_air_box,
# TS0601_smoke_5, Aqara JTYJ-GD-01LM, metering plugs; last_seen formats from advanced.last_seen.
Z2M_JSON = [
    pytest.param(
        "kitchen_gas",
        {
            "gas": True,
            "gas_value": 30,
            "preheat": False,
            "self_test_result": "success",
            "linkquality": 120,
            "last_seen": iso(NOW - timedelta(seconds=2)),
        },
        {"gas": True, "gas_lel": 30.0},
        {"preheat": False, "self_test_result": "success", "linkquality": 120},
        NOW - timedelta(seconds=2),
        id="tuya-gas-iso-last-seen",
    ),
    pytest.param(
        "kitchen_gas",
        {"gas": False, "gas_value": 1.5, "last_seen": int((NOW - timedelta(seconds=5)).timestamp() * 1000)},
        {"gas": False, "gas_lel": 1.5},
        {},
        NOW - timedelta(seconds=5),
        id="epoch-ms-last-seen",
    ),
    pytest.param(
        "kitchen_gas",
        {"gas": False, "last_seen": "2026-11-23T19:59:50+08:00"},
        {"gas": False},
        {},
        NOW - timedelta(seconds=10),
        id="iso-local-with-offset",
    ),
    pytest.param(
        "kitchen_gas",
        {"gas": False, "last_seen": "5 minutes ago"},
        {"gas": False},
        {"last_seen": "5 minutes ago"},
        NOW,
        id="relative-last-seen-kept-receive-time",
    ),
    pytest.param(
        "kitchen_gas",
        {"gas": True, "last_seen": iso(NOW + timedelta(minutes=10))},
        {"gas": True},
        {"bridge_clock_ahead_s": 600.0},
        NOW,
        id="bridge-clock-ahead-never-drops-alarm",
    ),
    pytest.param("kitchen_gas", {"gas": False}, {"gas": False}, {}, NOW, id="no-last-seen-receive-time"),
    pytest.param("floor2/kitchen_gas", {"gas": True}, {"gas": True}, {}, NOW, id="friendly-name-with-slash"),
    pytest.param(
        "co_box",
        {"carbon_monoxide": True, "co": 120, "linkquality": 90},
        {"co_ppm": 120.0},
        {"co": True, "linkquality": 90},
        NOW,
        id="co-flag-and-ppm",
    ),
    pytest.param(
        "co_box",
        {"carbon_monoxide": 35, "co2": 800},
        {"co_ppm": 35.0},
        {"co2": 800},
        NOW,
        id="numeric-carbon-monoxide-is-ppm-co2-is-not-co",
    ),
    pytest.param(
        "hall_smoke",
        {
            "smoke": True,
            "tamper": False,
            "battery": 85,
            "battery_state": "high",
            "fault_alarm": False,
            "self_test": False,
            "smoke_concentration": 3.2,
            "silence": False,
        },
        {"smoke": True, "tamper": False, "battery_pct": 85.0, "test": False},
        {"battery_state": "high", "smoke_concentration": 3.2, "silence": False},
        NOW,
        id="tuya-smoke-5",
    ),
    pytest.param(
        "0x00158d0001d2a2b3",
        {
            "smoke": False,
            "smoke_density": 0,
            "smoke_density_dbm": 0.1,
            "test": True,
            "battery": 100,
            "voltage": 3100,
            "battery_low": False,
        },
        {"smoke": False, "smoke_db_m": 0.1, "test": True, "battery_pct": 100.0},
        {"smoke_density": 0, "voltage": 3100, "battery_low": False},
        NOW,
        id="aqara-smoke-ieee-name-battery-voltage-mv-to-extras",
    ),
    pytest.param(
        "hall_smoke",
        {"smoke": False, "fault_alarm": True},
        {"smoke": False, "fault": "fault_alarm"},
        {},
        NOW,
        id="fault-flag",
    ),
    pytest.param(
        "hall_smoke",
        {"smoke": False, "fault": "sensor_dirty"},
        {"smoke": False, "fault": "sensor_dirty"},
        {},
        NOW,
        id="fault-text",
    ),
    pytest.param(
        "plug_1",
        {
            "state": "ON",
            "power": 180.5,
            "current": 0.82,
            "voltage": 221,
            "energy": 1.25,
            "device_temperature": 41,
            "temperature": 30,
            "power_outage_memory": True,
        },
        {"relay": "on", "power_w": 180.5, "current_a": 0.82, "voltage_v": 221.0, "energy_wh": 1250.0, "temp_c": 41.0},
        {"temperature": 30, "power_outage_memory": True},
        NOW,
        id="metering-plug",
    ),
    pytest.param("gas_valve", {"state": "OFF"}, {"valve": "closed"}, {}, NOW, id="valve-state-off-is-closed"),
    pytest.param(
        "kitchen_gas",
        {
            "gas": False,
            "device": {"friendlyName": "kitchen_gas", "model": "TS0601"},
            "update": {"state": "idle"},
            "update_available": False,
        },
        {"gas": False},
        {},
        NOW,
        id="bridge-metadata-dropped",
    ),
    pytest.param("kitchen_gas", {"linkquality": 80}, {}, {"linkquality": 80}, NOW, id="heartbeat-extras-only"),
    pytest.param(
        "hall_smoke",
        {"battery": None, "smoke": None, "tamper": False, "linkquality": 60},
        {"tamper": False},
        {"linkquality": 60},
        NOW,
        id="null-attributes-not-known-yet",
    ),
    pytest.param(
        "hall_smoke", {"battery": None, "linkquality": 60}, {}, {"linkquality": 60}, NOW, id="only-nulls-and-heartbeat"
    ),
]


@pytest.mark.parametrize(("name", "payload", "fields", "extras", "ts"), Z2M_JSON)
def test_zigbee2mqtt_json_state(
    name: str, payload: dict[str, Any], fields: dict[str, Any], extras: dict[str, Any], ts: datetime
) -> None:
    r = reading(f"zigbee2mqtt/{name}", payload)
    assert fields_of(r) == fields
    assert r.extras == extras
    assert r.ts == ts
    assert r.received_at == NOW
    assert r.seq is not None and r.seq <= -2


Z2M_REJECTS = [
    pytest.param(
        "zigbee2mqtt/kitchen_gas",
        {"gas": "yes"},
        "zigbee2mqtt 'kitchen_gas': gas: Input should be a valid boolean",
        id="wrong-type",
    ),
    pytest.param(
        "zigbee2mqtt/kitchen_gas",
        {"gas_value": 130},
        "gas_lel (from zigbee2mqtt attribute 'gas_value'): Input should be less than or equal to 100",
        id="out-of-range-names-source",
    ),
    pytest.param(
        "zigbee2mqtt/plug_1", {"state": "TOGGLE"}, "relay (from zigbee2mqtt attribute 'state')", id="unknown-state"
    ),
    pytest.param(
        "zigbee2mqtt/plug_1", {"state": []}, "relay (from zigbee2mqtt attribute 'state')", id="state-a-list"
    ),  # found by the fuzz test: crashed the decoder (unhashable) instead
    pytest.param(
        "zigbee2mqtt/kitchen_gas",
        {"state": {"a": 1}},
        "relay (from zigbee2mqtt attribute 'state')",
        id="state-an-object",
    ),
    pytest.param(
        "zigbee2mqtt/plug_1",
        {"energy": "lots"},
        "energy_wh (from zigbee2mqtt attribute 'energy')",
        id="energy-not-number",
    ),
    pytest.param("zigbee2mqtt/kitchen_gas", b'{"gas": tru', "malformed JSON", id="malformed"),
    pytest.param("zigbee2mqtt/kitchen_gas", [1, 2], "payload must be a JSON object", id="array"),
    pytest.param("zigbee2mqtt/kitchen_gas", {}, "empty object", id="empty-object"),
    pytest.param(
        "zigbee2mqtt/kitchen_gas",
        {"gas": True, "last_seen": iso(NOW - timedelta(hours=30))},
        "h old (limit 24 h)",
        id="stale-last-seen",
    ),
    pytest.param(
        "zigbee2mqtt/ghost",
        {"gas": True},
        "unknown zigbee2mqtt device 'ghost': no registry device has "
        "adapter zigbee2mqtt and foreign_id 'ghost' (add it with `gridwatch load`)",
        id="unknown-device",
    ),
    pytest.param("zigbee2mqtt/ghost/gas", "true", "unknown zigbee2mqtt device 'ghost'", id="unknown-attribute-device"),
    pytest.param(
        "zigbee2mqtt/floor3/ghost", {"gas": True}, "unknown zigbee2mqtt device 'floor3/ghost'", id="unknown-slash-name"
    ),
    pytest.param(
        "zigbee2mqtt/kitchen_gas/gas",
        "maybe",
        "zigbee2mqtt 'kitchen_gas'/gas: gas: Input should be a valid boolean (got \"maybe\")",
        id="attribute-wrong-type",
    ),
    pytest.param("zigbee2mqtt/kitchen_gas/availability", "away", "availability must be", id="availability-garbage"),
    pytest.param(
        "zigbee2mqtt/kitchen_gas/availability",
        {"state": "sleeping"},
        "availability must be",
        id="availability-json-garbage",
    ),
    pytest.param(
        "zigbee2mqtt/ghost/availability",
        "online",
        "unknown zigbee2mqtt device 'ghost'",
        id="availability-unknown-device",
    ),
    pytest.param(
        "zigbee2mqtt/bridge/state",
        "restarting",
        "zigbee2mqtt bridge/state: availability must be",
        id="bridge-state-garbage",
    ),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), Z2M_REJECTS)
def test_zigbee2mqtt_rejects_say_why(topic: str, payload: Any, reason: str) -> None:
    item = one(topic, payload)
    assert isinstance(item, Reject), item
    assert reason in item.reason


Z2M_ATTRIBUTES = [
    pytest.param("kitchen_gas/gas", "true", {"gas": True}, {}, id="bool"),
    pytest.param("kitchen_gas/gas_value", "12.5", {"gas_lel": 12.5}, {}, id="number"),
    pytest.param("plug_1/state", "OFF", {"relay": "off"}, {}, id="unquoted-text"),
    pytest.param("plug_1/energy", "2.5", {"energy_wh": 2500.0}, {}, id="kwh"),
    pytest.param("co_box/carbon_monoxide", "true", {}, {"co": True}, id="co-flag-extras-only-still-stored"),
    pytest.param("hall_smoke/battery_low", "true", {}, {"battery_low": True}, id="unmapped-kept"),
    pytest.param("kitchen_gas/linkquality", "99", {}, {"linkquality": 99}, id="linkquality-alone-proves-alive"),
]


@pytest.mark.parametrize(("path", "payload", "fields", "extras"), Z2M_ATTRIBUTES)
def test_zigbee2mqtt_attribute_output(path: str, payload: str, fields: dict[str, Any], extras: dict[str, Any]) -> None:
    r = reading(f"zigbee2mqtt/{path}", payload)
    assert fields_of(r) == fields
    assert r.extras == extras
    assert r.ts == NOW


Z2M_NOT_DATA = [
    pytest.param("zigbee2mqtt/kitchen_gas/last_seen", "2026-11-23T11:59:00.000Z", id="last-seen-alone"),
    pytest.param("zigbee2mqtt/plug_1/update-state", "idle", id="nested-object-attribute"),
    pytest.param("zigbee2mqtt/hall_smoke/battery", "", id="null-attribute"),
    pytest.param("zigbee2mqtt/kitchen_gas/availability", "", id="availability-cleared"),
    pytest.param("zigbee2mqtt/plug_1/set", {"state": "OFF"}, id="our-command"),
    pytest.param("zigbee2mqtt/plug_1/set/state", "OFF", id="our-command-attribute-form"),
    pytest.param("zigbee2mqtt/plug_1/get", {"state": ""}, id="get"),
    pytest.param("zigbee2mqtt/bridge/logging", {"level": "info", "message": "MQTT publish"}, id="bridge-logging"),
    pytest.param("zigbee2mqtt/bridge/info", {"version": "2.1.0", "permit_join": False}, id="bridge-info"),
    pytest.param("zigbee2mqtt/bridge/request/permit_join", {"time": 254}, id="bridge-request"),
    pytest.param("zigbee2mqtt/kitchen_gas", "", id="state-cleared-on-rename"),
    pytest.param("zigbee2mqtt/bridge/log", {"type": "devices", "message": []}, id="legacy-log-devices-list"),
    pytest.param(
        "zigbee2mqtt/bridge/response/device/remove",
        {"data": {"id": "plug_1"}, "status": "error", "error": "Device 'plug_1' does not exist"},
        id="remove-failed",
    ),
    pytest.param(
        "zigbee2mqtt/bridge/devices",
        [{"ieee_address": "0x" + "0" * 16, "definition": {"exposes": [{"name": "x" * 200}] * 200}}],
        id="bridge-devices-larger-than-payload-limit",
    ),
]


@pytest.mark.parametrize(("topic", "payload"), Z2M_NOT_DATA)
def test_zigbee2mqtt_bookkeeping_is_recorded_as_not_data(topic: str, payload: Any) -> None:
    item = one(topic, payload)
    assert isinstance(item, Reject) and item.kind == "not_data", item


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        pytest.param({"state": "online"}, True, id="json-online"),
        pytest.param({"state": "offline"}, False, id="json-offline"),
        pytest.param("online", True, id="legacy-online"),
        pytest.param("offline", False, id="legacy-offline"),
    ],
)
def test_zigbee2mqtt_availability_both_forms(payload: Any, online: bool) -> None:
    assert one("zigbee2mqtt/kitchen_gas/availability", payload) == DeviceStatus("gas-z1", online, NOW)
    assert one("zigbee2mqtt/floor2/kitchen_gas/availability", payload) == DeviceStatus("gas-z2", online, NOW)
    assert one("zigbee2mqtt/bridge/state", payload) == DeviceStatus("gw-z1", online, NOW)


def test_zigbee2mqtt_bridge_state_without_registered_gateway_is_recorded() -> None:
    registry = Registry([d for d in DEVICES if d.foreign_id != "bridge"])
    item = one("zigbee2mqtt/bridge/state", "offline", registry=registry)
    assert isinstance(item, Reject) and item.kind == "not_data" and "foreign_id 'bridge'" in item.reason


# --- content-addressed seq: what (device, ts, seq) dedupe absorbs and what it keeps --------------------
def test_identical_copies_share_a_key_and_different_messages_never_do() -> None:
    seen = iso(NOW - timedelta(seconds=3))
    first = reading("zigbee2mqtt/hall_smoke", {"battery": 90, "last_seen": seen})
    replay = reading(
        "zigbee2mqtt/hall_smoke", {"battery": 90, "last_seen": seen}, received_at=NOW + timedelta(minutes=5)
    )
    same_frame = reading("zigbee2mqtt/hall_smoke", {"battery": 90, "smoke": True, "last_seen": seen})
    assert (replay.ts, replay.seq) == (first.ts, first.seq), "a retained/redelivered copy is absorbed"
    assert same_frame.ts == first.ts and same_frame.seq != first.seq, "a second message of one frame still counts"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"gas": True}, {"gas": False}),
        ({"gas_lel": 1.0}, {"gas_lel": 1.5}),
        ({}, {"x": 1}),
    ],
)
def test_content_seq_distinguishes_content(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert content_seq(a, {}) != content_seq(b, {})
    assert content_seq(a, {}) == content_seq(dict(a), {})
    assert content_seq(a, {}) <= -2


# --- Shelly Gas Gen1 -----------------------------------------------------------------------------------
# MQTT section of the Shelly Gen1 API and the SHGS-1 CoAP description.
SHELLY = "shellies/shellygas-E868E7C6E54A"
SHELLY_READINGS = [
    pytest.param("sensor/operation", "warmup", {}, {"operation": "warmup", "preheat": True}, id="warmup-no-fault"),
    pytest.param("sensor/operation", "normal", {}, {"operation": "normal", "preheat": False}, id="normal"),
    pytest.param(
        "sensor/operation", "fault", {"fault": "sensor_fault"}, {"operation": "fault", "preheat": False}, id="fault"
    ),
    pytest.param("sensor/operation", "unknown", {}, {"operation": "unknown"}, id="operation-unknown-alive"),
    pytest.param("sensor/gas", "unknown", {}, {"alarm_state": "unknown"}, id="gas-unknown-alive"),
    pytest.param(
        "sensor/concentration", "-1", {}, {"gas_ppm": -1, "gas_ppm_valid": False}, id="concentration-not-valid-yet"
    ),
    pytest.param(
        "sensor/self_test", "not_completed", {"test": False}, {"self_test": "not_completed"}, id="st-not-done"
    ),
    pytest.param("sensor/gas", "none", {"gas": False}, {"alarm_state": "none"}, id="gas-none"),
    pytest.param("sensor/gas", "mild", {"gas": True}, {"alarm_state": "mild"}, id="gas-mild"),
    pytest.param("sensor/gas", "heavy", {"gas": True}, {"alarm_state": "heavy"}, id="gas-heavy"),
    pytest.param("sensor/gas", "test", {"test": True}, {"alarm_state": "test"}, id="gas-test-never-pages"),
    pytest.param("sensor/concentration", "0", {"gas_lel": 0.0}, {"gas_ppm": 0}, id="ppm-zero"),
    pytest.param("sensor/concentration", "1800", {"gas_lel": 3.6}, {"gas_ppm": 1800}, id="ppm-mild-level"),
    pytest.param("sensor/concentration", "12500", {"gas_lel": 25.0}, {"gas_ppm": 12500}, id="ppm-25-lel"),
    pytest.param("sensor/concentration", "65535", {"gas_lel": 100.0}, {"gas_ppm": 65535}, id="over-range-capped"),
    pytest.param("sensor/self_test", "running", {"test": True}, {"self_test": "running"}, id="self-test-running"),
    pytest.param("sensor/self_test", "pending", {"test": True}, {"self_test": "pending"}, id="self-test-pending"),
    pytest.param("sensor/self_test", "completed", {"test": False}, {"self_test": "completed"}, id="self-test-done"),
    pytest.param("valve/0/state", "opened", {"valve": "open"}, {"valve_state": "opened"}, id="valve-opened"),
    pytest.param("valve/0/state", "closed", {"valve": "closed"}, {"valve_state": "closed"}, id="valve-closed"),
    # the detector has no valve registered: its valve's failure is kept, there is nothing to actuate
    pytest.param("valve/0/state", "failure", {}, {"valve_state": "failure"}, id="valve-failure-no-valve-device"),
    pytest.param("valve/0/state", "not_connected", {}, {"valve_state": "not_connected"}, id="no-valve-connected"),
    pytest.param("valve/0/state", "closing", {}, {"valve_state": "closing"}, id="valve-moving"),
    pytest.param("valve/0/state", "opening", {}, {"valve_state": "opening"}, id="valve-opening"),
    pytest.param("valve/0/state", "checking", {}, {"valve_state": "checking"}, id="valve-checking"),
    pytest.param("valve/0/state", "unknown", {}, {"valve_state": "unknown"}, id="valve-unknown"),
]


@pytest.mark.parametrize(("channel", "payload", "fields", "extras"), SHELLY_READINGS)
def test_shelly_gas(channel: str, payload: str, fields: dict[str, Any], extras: dict[str, Any]) -> None:
    r = reading(f"{SHELLY}/{channel}", payload)
    assert r.device_id == "gas-s1"
    assert fields_of(r) == fields
    assert r.extras == extras
    assert r.ts == NOW, "Shelly Gen1 messages carry no time"


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        pytest.param(f"{SHELLY}/online", "true", DeviceStatus("gas-s1", True, NOW), id="online"),
        pytest.param(f"{SHELLY}/online", "false", DeviceStatus("gas-s1", False, NOW), id="offline-last-will"),
        pytest.param(f"{SHELLY}/online", "", "not_data", id="online-cleared"),
        pytest.param(f"{SHELLY}/valve/0/command", "close", "not_data", id="our-command"),
        pytest.param(f"{SHELLY}/sensor/mute", "mute", "not_data", id="our-mute"),
        pytest.param("shellies/command", "announce", "not_data", id="announce-request"),
        pytest.param(
            f"{SHELLY}/sensor/gas", "leak!", "gas alarm state must be one of unknown, none, mild", id="gas-garbage"
        ),
        pytest.param(f"{SHELLY}/sensor/concentration", "12.5ppm", "concentration must be whole ppm", id="ppm-garbage"),
        pytest.param(f"{SHELLY}/sensor/concentration", "-7", "concentration must be >= 0 ppm", id="ppm-negative"),
        pytest.param(
            f"{SHELLY}/sensor/operation",
            "booting",
            "operation must be one of unknown, warmup, normal, fault",
            id="operation-garbage",
        ),
        pytest.param(f"{SHELLY}/valve/0/state", "stuck", "valve state must be one of", id="valve-garbage"),
        pytest.param(f"{SHELLY}/online", "yes", "online must be true or false", id="online-garbage"),
        pytest.param(f"{SHELLY}/sensor/gas", b"\xff\xfe", "payload is not UTF-8 text", id="binary"),
        pytest.param(
            "shellies/shellygas-000000000000/sensor/gas",
            "heavy",
            "unknown shelly device 'shellygas-000000000000'",
            id="unknown-device",
        ),
        pytest.param("shellies/shelly1-ABC/relay/0", "on", "is not shellies/<id>/<", id="other-shelly-topic"),
    ],
)
def test_shelly_status_and_rejects(topic: str, payload: Any, expected: Any) -> None:
    check_outcome(one(topic, payload), expected)


def check_outcome(item: Decoded, expected: Any) -> None:
    """expected: "not_data" (a recorded not-device-data reject), a reason fragment (an invalid reject), or the item."""
    if expected == "not_data":
        assert isinstance(item, Reject) and item.kind == "not_data", item
    elif isinstance(expected, str):
        assert isinstance(item, Reject) and item.kind == "invalid", item
        assert expected in item.reason
    else:
        assert item == expected


def test_shelly_valve_registered_as_its_own_device() -> None:
    valve = reading("shellies/shellygas-A1B2C3D4E5F6/valve/0/state", "closed")
    assert (valve.device_id, valve.valve) == ("valve-s2", "closed")
    assert reading("shellies/shellygas-A1B2C3D4E5F6/sensor/gas", "heavy").device_id == "gas-s2"
    assert reading(f"{SHELLY}/valve/0/state", "closed").device_id == "gas-s1", "no valve device: the detector"


# --- Tasmota -------------------------------------------------------------------------------------------
# EnergyMqttShow's own example (xdrv_03_energy.ino) and the Power Monitoring docs.
TASMOTA = "shed_port_3"
DOC_ENERGY = {
    "Total": 0.212,
    "Yesterday": 0.000,
    "Today": 0.014,
    "Period": 2.0,
    "Power": 22.0,
    "Factor": 1.00,
    "Voltage": 213.6,
    "Current": 0.100,
}
TASMOTA_READINGS = [
    pytest.param(
        "tele/{t}/SENSOR",
        {"Time": "2017-12-16T11:48:55", "ENERGY": DOC_ENERGY},
        {"power_w": 22.0, "voltage_v": 213.6, "current_a": 0.1, "energy_wh": 212.0},
        {
            "energy": {"Yesterday": 0.0, "Today": 0.014, "Period": 2.0, "Factor": 1.0},
            "device_time": "2017-12-16T11:48:55",
        },
        id="documented-energy",
    ),
    pytest.param(
        "tele/{t}/SENSOR",
        {
            "Time": "2026-11-23T20:00:00+08:00",
            "ENERGY": {"Power": 150, "Total": 3.5},
            "DS18B20": {"Id": "01144A0CB2AA", "Temperature": 48.5},
            "ESP32": {"Temperature": 61.2},
            "TempUnit": "C",
        },
        {"power_w": 150.0, "energy_wh": 3500.0, "temp_c": 48.5},
        {"DS18B20": {"Id": "01144A0CB2AA"}, "ESP32": {"Temperature": 61.2}},
        id="ds18b20-chip-temp-not-socket-temp-time-with-offset-is-ts",
    ),
    pytest.param(
        "tele/{t}/SENSOR",
        {"AM2301": {"Temperature": 104.0, "Humidity": 30.0}, "TempUnit": "F"},
        {"temp_c": 40.0},
        {"AM2301": {"Humidity": 30.0}},
        id="fahrenheit",
    ),
    pytest.param(
        "tele/{t}/SENSOR",
        {"ANALOG": {"Temperature1": 52.0}, "TempUnit": "C"},
        {"temp_c": 52.0},
        {},
        id="ntc-analog-temperature1",
    ),
    pytest.param(
        "tele/{t}/SENSOR",
        {"ENERGY": {"Power": [10, 20], "Voltage": 220, "Current": [0.05, 0.1]}},
        {"power_w": 10.0, "voltage_v": 220.0, "current_a": 0.05},
        {"energy_power": [10, 20], "energy_current": [0.05, 0.1]},
        id="multi-channel-arrays",
    ),
    pytest.param(
        "tele/{t}/STATE",
        {"Time": "2026-11-23T20:00:00", "Uptime": "0T01:00:00", "UptimeSec": 3600, "POWER": "ON", "Wifi": {"RSSI": 80}},
        {"relay": "on"},
        {"device_time": "2026-11-23T20:00:00", "uptime_s": 3600, "wifi_rssi": 80},
        id="state-power",
    ),
    pytest.param("tele/{t}/STATE", {"UptimeSec": 60}, {}, {"uptime_s": 60}, id="state-without-relay-proves-alive"),
    pytest.param("stat/{t}/POWER2", "ON", {}, {"relay_2": "on"}, id="second-relay-kept"),
    pytest.param("tele/{t}/STATE", {"POWER1": "OFF"}, {"relay": "off"}, {}, id="state-power1"),
    pytest.param("stat/{t}/POWER", "OFF", {"relay": "off"}, {}, id="stat-power"),
    pytest.param("stat/{t}/POWER1", "ON", {"relay": "on"}, {}, id="stat-power1"),
    pytest.param(
        "tele/{t}/MARGINS",
        {"Time": "2026-11-23T20:00:00", "PowerHigh": "ON", "PowerDelta": 120},
        {},
        {"power_high": True, "power_delta_w": 120, "device_time": "2026-11-23T20:00:00"},
        id="margins-flat",
    ),
    pytest.param(
        "tele/{t}/MARGINS",
        {"Time": "2026-11-23T20:00:00", "MARGINS": {"PowerLow": "OFF", "VoltageHigh": "ON"}},
        {},
        {"power_low": False, "voltage_high": True, "device_time": "2026-11-23T20:00:00"},
        id="margins-nested",
    ),
    pytest.param(
        "stat/{t}/WARNING",
        {"Time": "2026-11-23T20:00:00", "MaxPowerReached": 2650},
        {"power_w": 2650.0, "relay": "off"},
        {"max_power_reached": True, "device_time": "2026-11-23T20:00:00"},
        id="max-power-reached-relay-forced-off",
    ),
    pytest.param(
        "stat/{t}/WARNING",
        {"MaxPowerReached": "2650W"},
        {"power_w": 2650.0, "relay": "off"},
        {"max_power_reached": True},
        id="max-power-reached-old-firmware-units",
    ),
    pytest.param(
        "stat/{t}/WARNING",
        {"MaxPowerReached1": 2100},
        {"power_w": 2100.0, "relay": "off"},
        {"max_power_reached": True},
        id="max-power-reached-esp32-phase-suffix",
    ),
    pytest.param(
        "tele/{t}/MARGINS",
        {"MARGINS": {"PowerHigh1": "ON", "PowerHigh2": "OFF"}},
        {},
        {"power_high": True, "power_high_2": False},
        id="margins-esp32-phases",
    ),
    pytest.param(
        "stat/{t}/WARNING",
        {"MaxPowerReachedRetry": "OFF"},
        {"relay": "off"},
        {"max_power_retry_exhausted": True},
        id="max-power-retries-exhausted",
    ),
    pytest.param(
        "stat/{t}/WARNING",
        {"MaxEnergyReached": 1.2},
        {"relay": "off"},
        {"max_energy_reached_kwh": 1.2},
        id="max-energy",
    ),
    pytest.param("stat/{t}/RESULT", {"POWER": "OFF"}, {"relay": "off"}, {}, id="result-power-if-it-arrives"),
    pytest.param(
        "stat/{t}/RESULT",
        {"Time": "2026-11-23T20:00:00", "PowerMonitor": "ON"},
        {"relay": "on"},
        {"power_monitor": True},
        id="power-restored-after-max-power-window",
    ),
]


@pytest.mark.parametrize(("topic", "payload", "fields", "extras"), TASMOTA_READINGS)
def test_tasmota(topic: str, payload: Any, fields: dict[str, Any], extras: dict[str, Any]) -> None:
    r = reading(topic.format(t=TASMOTA), payload)
    assert r.device_id == "port-t1"
    assert fields_of(r) == fields
    assert r.extras == extras
    assert r.ts == NOW, "receive time, or a Time with offset that equals it"


@pytest.mark.parametrize(
    ("time", "ts", "extras"),
    [
        pytest.param(
            "2026-11-23T19:59:30+08:00", NOW - timedelta(seconds=30), {}, id="setoption52-offset-is-event-time"
        ),
        pytest.param("2026-11-23T11:59:30Z", NOW - timedelta(seconds=30), {}, id="utc"),
        pytest.param("2026-11-23T19:59:30", NOW, {"device_time": "2026-11-23T19:59:30"}, id="local-without-offset"),
        pytest.param(
            "2026-11-23T20:30:00+08:00",
            NOW,
            {"device_time": "2026-11-23T20:30:00+08:00", "bridge_clock_ahead_s": 1800.0},
            id="device-clock-ahead",
        ),
    ],
)
def test_tasmota_time(time: str, ts: datetime, extras: dict[str, Any]) -> None:
    r = reading(f"tele/{TASMOTA}/SENSOR", {"Time": time, "ENERGY": {"Power": 100}})
    assert (r.ts, r.extras) == (ts, extras)


def test_tasmota_stale_time_is_rejected() -> None:
    item = one(f"tele/{TASMOTA}/SENSOR", {"Time": "2026-11-21T20:00:00+08:00", "ENERGY": {"Power": 100}})
    assert isinstance(item, Reject) and "48.0 h old" in item.reason


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        pytest.param("tele/{t}/LWT", "Online", DeviceStatus("port-t1", True, NOW), id="lwt-online"),
        pytest.param("tele/{t}/LWT", "Offline", DeviceStatus("port-t1", False, NOW), id="lwt-offline"),
        pytest.param("tele/{t}/LWT", "", "not_data", id="lwt-cleared"),
        pytest.param("tele/{t}/STATE", {"Uptime": "0T00:01:00"}, "not_data", id="state-with-nothing-we-keep"),
        pytest.param("cmnd/{t}/POWER", "OFF", "not_data", id="our-command"),
        pytest.param("cmnd/{t}/POWER", "", "not_data", id="its-own-empty-power-at-boot"),
        pytest.param("tele/{t}/INFO1", {"Info1": {"Module": "Sonoff Pow R2"}}, "not_data", id="info1"),
        pytest.param("tele/{t}/HASS_STATE", {"Version": "x"}, "not_data", id="hass-state"),
        pytest.param("stat/{t}/STATUS8", {"StatusSNS": {}}, "not_data", id="status-reply"),
        pytest.param("stat/{t}/RESULT", {"MaxPower": 2500}, "not_data", id="result-other-command"),
        pytest.param("tele/{t}/LWT", "online", "must be Online or Offline", id="lwt-garbage"),
        pytest.param(
            "tele/{t}/SENSOR",
            {"Time": "2026-11-23T20:00:00"},
            "carries neither ENERGY nor any sensor",
            id="sensor-empty",
        ),
        pytest.param("tele/{t}/SENSOR", b'{"ENERGY":', "malformed JSON", id="sensor-malformed"),
        pytest.param(
            "tele/{t}/SENSOR",
            {"ENERGY": {"Power": -5}},
            "power_w (from Tasmota field 'ENERGY.Power')",
            id="negative-power",
        ),
        pytest.param(
            "tele/{t}/SENSOR",
            {"ENERGY": {"Power": "high"}},
            "power_w (from Tasmota field 'ENERGY.Power')",
            id="power-not-number",
        ),
        pytest.param("tele/{t}/STATE", {"POWER": "BLINK"}, "POWER must be ON or OFF", id="state-garbage"),
        pytest.param("stat/{t}/POWER", "2", "must be ON or OFF", id="stat-power-garbage"),
        pytest.param("tele/{t}/MARGINS", {"Time": "x"}, "carries no PowerLow", id="margins-empty"),
        pytest.param(
            "stat/{t}/WARNING",
            {"Time": "x", "Overtemp": 1},
            "unrecognised Tasmota warning (carries Overtemp",
            id="warning-unknown",
        ),
        pytest.param(
            "tele/tasmota_5A9AE8/SENSOR",
            {"ENERGY": {"Power": 1}},
            "unknown tasmota device 'tasmota_5A9AE8'",
            id="unknown-device",
        ),
    ],
)
def test_tasmota_status_and_rejects(topic: str, payload: Any, expected: Any) -> None:
    check_outcome(one(topic.format(t=TASMOTA), payload), expected)


# --- routing, roots and subscriptions ------------------------------------------------------------------
def test_topics_are_tight_and_follow_the_root() -> None:
    assert adapters.topics("") == adapters.TOPICS
    assert "zigbee2mqtt/#" not in adapters.TOPICS and "stat/+/RESULT" not in adapters.TOPICS
    assert "tele/+/SENSOR" in adapters.TOPICS and "shellies/+/sensor/gas" in adapters.TOPICS
    rooted = adapters.topics("t1/bridges")
    assert all(t.startswith("t1/bridges/") for t in rooted) and len(rooted) == len(adapters.TOPICS)


def test_a_root_moves_every_adapter() -> None:
    assert isinstance(one("r9/zigbee2mqtt/kitchen_gas", {"gas": True}, root="r9"), Reading)
    assert isinstance(one("r9/shellies/shellygas-E868E7C6E54A/sensor/gas", "mild", root="r9"), Reading)
    assert isinstance(one("r9/tele/shed_port_3/LWT", "Online", root="r9"), DeviceStatus)
    item = one("zigbee2mqtt/kitchen_gas", {"gas": True}, root="r9")
    assert isinstance(item, Reject) and "no decoder for topic" in item.reason


def test_oversize_device_message_is_still_rejected() -> None:
    item = one("zigbee2mqtt/kitchen_gas", {"gas": True, "blob": "x" * 20_000})
    assert isinstance(item, Reject) and "exceeds the limit" in item.reason


# --- commands back to the bridges ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device_id", "action", "topic", "payload"),
    [
        pytest.param("plug-z1", "cut_power", "zigbee2mqtt/plug_1/set", {"state": "OFF"}, id="z2m-cut-power"),
        pytest.param("plug-z1", "restore_power", "zigbee2mqtt/plug_1/set", {"state": "ON"}, id="z2m-restore"),
        pytest.param("valve-z1", "close_valve", "zigbee2mqtt/gas_valve/set", {"state": "OFF"}, id="z2m-valve"),
        pytest.param("gas-z1", "self_test", "zigbee2mqtt/kitchen_gas/set", {"self_test": True}, id="z2m-self-test"),
        pytest.param("gas-z1", "silence", "zigbee2mqtt/kitchen_gas/set", {"silence": True}, id="z2m-silence"),
        pytest.param("gas-s1", "close_valve", f"{SHELLY}/valve/0/command", "close", id="shelly-close-valve"),
        pytest.param("gas-s1", "self_test", f"{SHELLY}/sensor/start_self_test", "self_test", id="shelly-self-test"),
        pytest.param("gas-s1", "silence", f"{SHELLY}/sensor/mute", "mute", id="shelly-mute"),
        pytest.param(
            "valve-s2",
            "close_valve",
            "shellies/shellygas-A1B2C3D4E5F6/valve/0/command",
            "close",
            id="shelly-valve-device",
        ),
        pytest.param("port-t1", "cut_power", "cmnd/shed_port_3/POWER", "OFF", id="tasmota-cut-power"),
        pytest.param("port-t1", "restore_power", "cmnd/shed_port_3/POWER", "ON", id="tasmota-restore"),
    ],
)
def test_encode_command(device_id: str, action: str, topic: str, payload: Any) -> None:
    device = Registry().device(device_id)
    assert device is not None
    ((got_topic, got_payload),) = adapters.encode_command(
        device, action=action, command_id="c1", alarm_id=7, reason="test"
    )
    assert got_topic == topic
    assert (orjson.loads(got_payload) if isinstance(payload, dict) else got_payload.decode()) == payload


@pytest.mark.parametrize(
    ("device_id", "action", "reason"),
    [
        pytest.param("gas-s1", "cut_power", "has no relay", id="shelly-has-no-relay"),
        pytest.param("port-t1", "close_valve", "cannot carry the action 'close_valve'", id="tasmota-has-no-valve"),
        pytest.param("plug-z1", "reboot", "cannot carry the action 'reboot'", id="z2m-unknown-action"),
    ],
)
def test_encode_command_refuses_what_a_bridge_cannot_do(device_id: str, action: str, reason: str) -> None:
    device = Registry().device(device_id)
    assert device is not None
    with pytest.raises(adapters.CommandNotSupportedError, match=reason):
        adapters.encode_command(device, action=action, command_id="c1", alarm_id=None, reason="")


def test_encode_command_needs_a_foreign_id() -> None:
    device = dev("plug-x", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "")
    with pytest.raises(adapters.CommandNotSupportedError, match="no foreign_id"):
        adapters.encode_command(device, action="cut_power", command_id="c1", alarm_id=None, reason="")


def test_encode_command_native_unchanged() -> None:
    device = dev("gas-1", DeviceKind.GAS_DETECTOR, Adapter.NATIVE, "")
    ((topic, payload),) = adapters.encode_command(
        device, action="close_valve", command_id="c9", alarm_id=3, reason="GAS-02"
    )
    assert topic == "gw/v1/gas-1/cmd"
    assert orjson.loads(payload) == {"id": "c9", "action": "close_valve", "alarm_id": 3, "reason": "GAS-02"}


# --- bridges that publish one attribute per message, against the shipped rules -------------------------
def run_rules(device_id: str, messages: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
    """(topic, payload, seconds after NOW) through the decoder and the default rules: (alarm_type, kind)."""
    from rules.engine import evaluate
    from rules.ruleset import default_rules

    device = Registry().device(device_id)
    assert device is not None
    states: dict[str, dict[str, Any]] = {}
    out = []
    for topic, payload, offset in messages:
        at = NOW + timedelta(seconds=offset)
        r = reading(topic, payload, received_at=at)
        for rule in default_rules().for_device(device):
            t = evaluate(rule, states.setdefault(rule.id, {}), r)
            if t is not None and t.kind != "hold":
                out.append((t.alarm_type, t.kind))
    return out


def test_shelly_periodic_republish_of_unchanged_state_does_not_retrigger() -> None:
    # Shelly Gen1 re-publishes every sensor topic periodically; unchanged "none" and concentration repeats
    # must stay quiet, and an unchanged "heavy" repeat only holds the alarm.
    quiet = [(f"{SHELLY}/sensor/gas", "none", 0), (f"{SHELLY}/sensor/concentration", "0", 1)] * 3
    assert run_rules("gas-s1", quiet) == []
    leak = [
        (f"{SHELLY}/sensor/gas", "heavy", 0),
        (f"{SHELLY}/sensor/gas", "heavy", 30),
        (f"{SHELLY}/sensor/gas", "heavy", 60),
    ]
    assert run_rules("gas-s1", leak) == [("gas_leak", "raise")]


def test_shelly_concentration_topic_does_not_clear_the_devices_own_alarm() -> None:
    # Shelly Gas in its own alarm at ~3000 ppm (6 %LEL): `gas heavy` is re-published only every update
    # period (here 120 s), the changing concentration every 15 s. While the device says heavy, gas_leak must
    # neither clear nor re-raise. (With the topics interleaved within 60 s it holds; see the test above.)
    messages = [(f"{SHELLY}/sensor/gas", "heavy", 0)]
    messages += [(f"{SHELLY}/sensor/concentration", str(3000 + 10 * i), 15 * i) for i in range(1, 8)]
    messages += [(f"{SHELLY}/sensor/gas", "heavy", 120)]
    assert run_rules("gas-s1", messages) == [("gas_leak", "raise")]


def test_shelly_fault_is_not_cleared_by_other_topics() -> None:
    period = [(f"{SHELLY}/sensor/operation", "fault", 0), (f"{SHELLY}/sensor/gas", "none", 1)]
    messages = [(t, p, s + 30 * i) for i in range(3) for t, p, s in period]
    assert run_rules("gas-s1", messages) == [("device_fault", "raise")]


# --- Zigbee2MQTT device events (issue 19): bridge/event, the 1.x legacy bridge/log, removal ---------------
# zigbee2mqtt.io "MQTT topics and messages" (verbatim examples) and 1.42.0 lib/extension/legacy/bridgeLegacy.ts.
IEEE = "0x90fd9ffffe6494fc"
Z2M_EVENTS = [
    pytest.param(
        "bridge/event",
        {"type": "device_joined", "data": {"friendly_name": IEEE, "ieee_address": IEEE}},
        ("joined", IEEE, None),
        id="joined-new-device",
    ),
    pytest.param(
        "bridge/event",
        {"type": "device_announce", "data": {"friendly_name": "kitchen_gas", "ieee_address": IEEE}},
        ("announced", "kitchen_gas", "gas-z1"),
        id="announce",
    ),
    pytest.param(
        "bridge/event",
        {"type": "device_interview", "data": {"friendly_name": IEEE, "status": "started", "ieee_address": IEEE}},
        ("interview_started", IEEE, None),
        id="interview-started",
    ),
    pytest.param(
        "bridge/event",
        {
            "type": "device_interview",
            "data": {
                "friendly_name": "hall_smoke",
                "status": "successful",
                "ieee_address": IEEE,
                "supported": True,
                "definition": {"model": "HS1SA-E", "vendor": "HEIMAN", "description": "Smoke detector"},
            },
        },
        ("interview_successful", "hall_smoke", "smoke-z1"),
        id="interview-successful",
    ),
    pytest.param(
        "bridge/event",
        {"type": "device_interview", "data": {"friendly_name": "co_box", "status": "failed", "ieee_address": IEEE}},
        ("interview_failed", "co_box", "co-z1"),
        id="interview-failed",
    ),
    pytest.param(
        "bridge/event",
        {"type": "device_leave", "data": {"ieee_address": IEEE, "friendly_name": "plug_1"}},
        ("left", "plug_1", "plug-z1"),
        id="leave",
    ),
    pytest.param(
        "bridge/event",
        {"type": "device_leave", "data": {"ieee_address": "0x00158d0001d2a2b3"}},
        ("left", "0x00158d0001d2a2b3", "smoke-z2"),
        id="leave-by-ieee-only",
    ),
    pytest.param(
        "bridge/response/device/remove",
        {"data": {"id": "plug_1", "block": False, "force": False}, "status": "ok", "transaction": 3},
        ("removed", "plug_1", "plug-z1"),
        id="removed-2x",
    ),
    pytest.param(
        "bridge/log",
        {"type": "pairing", "message": "interview_failed", "meta": {"friendly_name": "co_box"}},
        ("interview_failed", "co_box", "co-z1"),
        id="legacy-pairing-failed",
    ),
    pytest.param(
        "bridge/log",
        {"type": "device_removed", "message": "left_network", "meta": {"friendly_name": "plug_1"}},
        ("left", "plug_1", "plug-z1"),
        id="legacy-left-network",
    ),
    pytest.param(
        "bridge/log",
        {"type": "device_force_removed", "message": "plug_1"},
        ("removed", "plug_1", "plug-z1"),
        id="legacy-force-removed",
    ),
    pytest.param(
        "bridge/log",
        {"type": "device_banned", "message": "plug_1"},
        ("removed", "plug_1", "plug-z1"),
        id="legacy-banned",
    ),
    pytest.param(
        "bridge/log",
        {"type": "device_connected", "message": {"friendly_name": IEEE}},
        ("joined", IEEE, None),
        id="legacy-connected",
    ),
]


@pytest.mark.parametrize(("leaf", "payload", "expected"), Z2M_EVENTS)
def test_zigbee2mqtt_device_events(leaf: str, payload: dict[str, Any], expected: tuple[str, str, str | None]) -> None:
    item = one(f"zigbee2mqtt/{leaf}", payload)
    assert isinstance(item, DeviceEvent), item
    assert (item.kind, item.foreign_id, item.device_id) == expected
    assert item.adapter == "zigbee2mqtt" and item.at == NOW


def test_zigbee2mqtt_interview_keeps_the_model() -> None:
    item = one("zigbee2mqtt/bridge/event", Z2M_EVENTS[3].values[1])
    assert isinstance(item, DeviceEvent)
    assert item.details == {
        "ieee_address": IEEE,
        "friendly_name": "hall_smoke",
        "status": "successful",
        "supported": True,
        "model": "HS1SA-E",
        "vendor": "HEIMAN",
        "description": "Smoke detector",
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param({"type": "device_renamed", "data": {"from": "a", "to": "b"}}, "not a documented device event", id="unknown-type"),
        pytest.param({"type": "device_interview", "data": {"friendly_name": "x", "status": "pending"}}, "not a documented", id="unknown-status"),
        pytest.param({"type": "device_joined", "data": {}}, "names no device", id="no-name"),
        pytest.param({"type": "device_joined"}, "has no data object", id="no-data"),
        pytest.param(b"{not json", "malformed JSON", id="malformed"),
    ],
)  # fmt: skip
def test_zigbee2mqtt_bad_events_are_rejected_with_a_reason(payload: Any, reason: str) -> None:
    check_outcome(one("zigbee2mqtt/bridge/event", payload), reason)


def test_zigbee2mqtt_base_topic_is_configurable() -> None:
    bases = adapters.Bases(zigbee2mqtt="z2m-home")
    topics = adapters.topics(bases)
    assert "z2m-home/+" in topics and "z2m-home/bridge/event" in topics and "z2m-home/+/availability" in topics
    assert not [t for t in topics if t.startswith("zigbee2mqtt/")]
    decoder = Decoder(limits=LIMITS, adapters=adapters.decoders(bases))
    got = decoder.decode(Message("z2m-home/kitchen_gas", orjson.dumps({"gas": True}), NOW), Registry())
    assert isinstance(got[0], Reading) and got[0].gas is True
    ((topic, _),) = adapters.encode_command(
        Registry().device("plug-z1"), action="cut_power", command_id="c", alarm_id=None, reason="", bridge_root=bases
    )  # type: ignore[arg-type]
    assert topic == "z2m-home/plug_1/set"


def test_zigbee2mqtt_subscriptions_cover_attribute_output_without_commands_or_logging() -> None:
    topics = adapters.topics("")
    assert {"zigbee2mqtt/+/gas", "zigbee2mqtt/+/smoke", "zigbee2mqtt/+/gas_value", "zigbee2mqtt/+/battery_low"} <= set(
        topics
    )
    assert "zigbee2mqtt/+/+" not in topics, "would bring bridge/logging (a line per log record) and our own /set"
    assert adapters.device_topics(DEVICES) == ["zigbee2mqtt/floor2/kitchen_gas", "zigbee2mqtt/floor2/kitchen_gas/+"]


# --- Shelly Gas: announce, info, the valve's unavailable states (issue 19) -------------------------------
def test_shelly_announce_is_a_device_event() -> None:
    body = {"id": "shellygas-E868E7C6E54A", "model": "SHGS-1", "mac": "E868E7C6E54A", "ip": "192.168.1.50",
            "new_fw": False, "fw_ver": "20230913-114244/v1.14.0-gcb84623"}  # fmt: skip
    for topic in ("shellies/announce", f"{SHELLY}/announce"):
        item = one(topic, body)
        assert isinstance(item, DeviceEvent) and (item.kind, item.device_id) == ("announced", "gas-s1")
        assert item.details["model"] == "SHGS-1"
    new = one("shellies/announce", {**body, "id": "shellygas-FFFFFFFFFFFF"})
    assert isinstance(new, DeviceEvent) and new.device_id is None, "an unregistered Shelly is still recorded"


@pytest.mark.parametrize(
    ("state", "fields"),
    [
        pytest.param("not_connected", {"valve": "fault"}, id="not-connected-is-unavailable"),
        pytest.param("failure", {"valve": "fault"}, id="failure-is-unavailable"),
        pytest.param("opened", {"valve": "open"}, id="opened"),
        pytest.param("closed", {"valve": "closed"}, id="closed"),
        pytest.param("closing", {}, id="closing"),
    ],
)
def test_shelly_valve_device_states(state: str, fields: dict[str, Any]) -> None:
    r = reading("shellies/shellygas-A1B2C3D4E5F6/valve/0/state", state)
    assert r.device_id == "valve-s2" and fields_of(r) == fields and r.extras == {"valve_state": state}


def test_shelly_info_is_the_detector_and_its_valve() -> None:
    status = {
        "gas_sensor": {"sensor_state": "normal", "self_test_state": "completed", "alarm_state": "mild"},
        "concentration": {"ppm": 1900, "is_valid": True},
        "valves": [{"state": "not_connected"}],
    }
    items = decode("shellies/shellygas-A1B2C3D4E5F6/info", status)
    assert [type(i) for i in items] == [Reading, Reading]
    detector, valve = items
    assert isinstance(detector, Reading) and isinstance(valve, Reading)
    assert (detector.device_id, fields_of(detector)) == ("gas-s2", {"gas": True, "test": False, "gas_lel": 3.8})
    assert detector.extras == {
        "operation": "normal",
        "preheat": False,
        "alarm_state": "mild",
        "self_test": "completed",
        "gas_ppm": 1900,
    }
    assert (valve.device_id, fields_of(valve)) == ("valve-s2", {"valve": "fault"})
    invalid = one(f"{SHELLY}/info", {"concentration": {"ppm": 0, "is_valid": False}})
    assert isinstance(invalid, Reading) and invalid.extras == {"gas_ppm": -1, "gas_ppm_valid": False}
    check_outcome(one(f"{SHELLY}/info", {"wifi_sta": {}}), "carries no gas_sensor")


# --- Tasmota boot information (issue 19) -------------------------------------------------------------
def test_tasmota_restart_is_a_device_event() -> None:
    for body in ({"Info3": {"RestartReason": "Power On"}}, {"RestartReason": "Power On"}):
        item = one(f"tele/{TASMOTA}/INFO3", body)
        assert isinstance(item, DeviceEvent)
        assert (item.kind, item.device_id, item.details) == ("booted", "port-t1", {"restart_reason": "Power On"})


# --- ESPHome (issue 19) --------------------------------------------------------------------------------
# esphome.io/components/mqtt.html: <topic_prefix>/status online/offline, <prefix>/<component>/<object_id>/state.
ESPHOME_READINGS = [
    pytest.param("kitchen-node/binary_sensor/gas/state", "ON", {"gas": True}, {}, id="gas-flag-on"),
    pytest.param("kitchen-node/binary_sensor/gas_leak/state", "OFF", {"gas": False}, {}, id="gas-leak-off"),
    pytest.param("kitchen-node/binary_sensor/co/state", "ON", {}, {"co": True}, id="co-flag-extras"),
    pytest.param("kitchen-node/binary_sensor/tamper/state", "ON", {"tamper": True}, {}, id="tamper"),
    pytest.param("kitchen-node/binary_sensor/battery_low/state", "ON", {}, {"battery_low": True}, id="battery-low"),
    pytest.param("kitchen-node/binary_sensor/fault/state", "ON", {"fault": "fault"}, {}, id="fault-binary"),
    pytest.param("kitchen-node/binary_sensor/motion/state", "ON", {}, {"motion": True}, id="other-binary-kept"),
    pytest.param("kitchen-node/sensor/gas_lel/state", "12.5", {"gas_lel": 12.5}, {}, id="gas-lel"),
    pytest.param("kitchen-node/sensor/co_ppm/state", "35", {"co_ppm": 35.0}, {}, id="co-ppm"),
    pytest.param("kitchen-node/sensor/temperature/state", "21.50", {"temp_c": 21.5}, {}, id="temperature"),
    pytest.param("kitchen-node/sensor/gas_lel/state", "nan", {}, {"gas_lel": None}, id="nan-no-value"),
    pytest.param("kitchen-node/sensor/gas_lel/state", "None", {}, {"gas_lel": None}, id="publish-nan-as-none"),
    pytest.param("kitchen-node/sensor/humidity/state", "44", {}, {"humidity": 44.0}, id="other-sensor-kept"),
    pytest.param("kitchen-node/text_sensor/fault/state", "sensor_end_of_life", {"fault": "sensor_end_of_life"}, {}, id="fault-text"),
    pytest.param("kitchen-node/text_sensor/fault/state", "ok", {}, {}, id="fault-text-ok-is-no-fault"),
    pytest.param("kitchen-node/text_sensor/firmware/state", "2024.10.0", {}, {"firmware": "2024.10.0"}, id="text-kept"),
    pytest.param("corridor-socket/switch/relay/state", "ON", {"relay": "on"}, {}, id="relay"),
    pytest.param("corridor-socket/sensor/power/state", "180.4", {"power_w": 180.4}, {}, id="power"),
    pytest.param("corridor-socket/sensor/current/state", "0.82", {"current_a": 0.82}, {}, id="current"),
    pytest.param("corridor-socket/sensor/voltage/state", "229.9", {"voltage_v": 229.9}, {}, id="voltage"),
    pytest.param("corridor-socket/sensor/energy_kwh/state", "1.25", {"energy_wh": 1250.0}, {}, id="energy-kwh"),
    pytest.param("corridor-socket/switch/usb/state", "OFF", {}, {"switch_usb": False}, id="other-switch-kept"),
    pytest.param("valve-node/switch/valve/state", "OFF", {"valve": "closed"}, {}, id="valve-closed"),
    pytest.param("valve-node/switch/valve/state", "ON", {"valve": "open"}, {}, id="valve-open"),
]  # fmt: skip


@pytest.mark.parametrize(("path", "payload", "fields", "extras"), ESPHOME_READINGS)
def test_esphome_states(path: str, payload: str, fields: dict[str, Any], extras: dict[str, Any]) -> None:
    r = reading(f"esphome/{path}", payload)
    assert fields_of(r) == fields and r.extras == extras and r.ts == NOW


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        pytest.param("kitchen-node/status", "online", DeviceStatus("gas-e1", True, NOW), id="birth"),
        pytest.param("kitchen-node/status", "offline", DeviceStatus("gas-e1", False, NOW), id="last-will"),
        pytest.param("kitchen-node/status", "", "not_data", id="status-cleared"),
        pytest.param("kitchen-node/status", "rebooting", "must be online or offline", id="status-garbage"),
        pytest.param("kitchen-node/binary_sensor/gas/state", "maybe", "is ON or OFF", id="binary-garbage"),
        pytest.param("kitchen-node/sensor/gas_lel/state", "lots", "is a number", id="sensor-garbage"),
        pytest.param("kitchen-node/sensor/gas_lel/state", "250", "gas_lel (from esphome entity", id="out-of-range"),
        pytest.param("corridor-socket/switch/relay/command", "OFF", "not_data", id="our-command"),
        pytest.param("kitchen-node/debug", "[D][sensor:093]: 'Gas': Sending state", "not_data", id="log-line"),
        pytest.param("kitchen-node/number/sensitivity/state", "3", "not_data", id="unmapped-component"),
        pytest.param("kitchen-node/binary_sensor/gas/state", "", "not_data", id="state-cleared"),
        pytest.param("ghost-node/status", "online", "unknown esphome device 'ghost-node'", id="unknown-node"),
        pytest.param("kitchen-node/binary_sensor/gas", "ON", "is not <node>/status", id="bad-shape"),
    ],
)
def test_esphome_status_and_rejects(path: str, payload: str, expected: Any) -> None:
    check_outcome(one(f"esphome/{path}", payload), expected)


def test_esphome_topics_and_an_empty_base() -> None:
    assert "esphome/+/status" in adapters.TOPICS and "esphome/+/binary_sensor/+/state" in adapters.TOPICS
    bare = adapters.Bases(esphome="")
    assert "+/status" in adapters.topics(bare)
    decoder = Decoder(limits=LIMITS, adapters=adapters.decoders(bare))
    got = decoder.decode(Message("kitchen-node/sensor/gas_lel/state", b"30", NOW), Registry())
    assert isinstance(got[0], Reading) and got[0].gas_lel == 30.0
    assert decoder.decode_tagged(Message("kitchen-node/status", b"online", NOW), Registry())[0] == "esphome"


@pytest.mark.parametrize(
    ("device_id", "action", "topic", "payload"),
    [
        pytest.param("socket-e1", "cut_power", "esphome/corridor-socket/switch/relay/command", "OFF", id="cut"),
        pytest.param("socket-e1", "restore_power", "esphome/corridor-socket/switch/relay/command", "ON", id="restore"),
        pytest.param("valve-e1", "close_valve", "esphome/valve-node/switch/valve/command", "OFF", id="close-valve"),
        pytest.param("gas-e1", "self_test", "esphome/kitchen-node/button/self_test/command", "PRESS", id="self-test"),
        pytest.param("gas-e1", "silence", "esphome/kitchen-node/button/silence/command", "PRESS", id="silence"),
    ],
)
def test_esphome_commands(device_id: str, action: str, topic: str, payload: str) -> None:
    device = Registry().device(device_id)
    assert device is not None
    assert adapters.encode_command(device, action=action, command_id="c", alarm_id=None, reason="") == [
        (topic, payload.encode())
    ]


@pytest.mark.parametrize(
    ("device_id", "action"), [("valve-e1", "restore_power"), ("valve-e1", "cut_power"), ("gas-e1", "close_valve")]
)
def test_esphome_refuses_what_the_node_cannot_do(device_id: str, action: str) -> None:
    device = Registry().device(device_id)
    assert device is not None
    with pytest.raises(adapters.CommandNotSupportedError, match="cannot carry"):
        adapters.encode_command(device, action=action, command_id="c", alarm_id=None, reason="")


# --- every documented topic of every bridge ends in exactly one outcome (issue 19) -----------------------
# /work/notes/bridges.md's summary tables, one documented example each: what each becomes.
DOCUMENTED = [
    ("zigbee2mqtt/bridge/state", {"state": "online"}, "status"),
    ("zigbee2mqtt/bridge/state", "offline", "status"),
    ("zigbee2mqtt/bridge/info", {"version": "2.1.0"}, "not_data"),
    ("zigbee2mqtt/bridge/devices", [{"ieee_address": IEEE, "friendly_name": "kitchen_gas"}], "not_data"),
    ("zigbee2mqtt/bridge/groups", [{"id": 1, "friendly_name": "g", "members": []}], "not_data"),
    ("zigbee2mqtt/bridge/definitions", {"clusters": {}}, "not_data"),
    ("zigbee2mqtt/bridge/extensions", [], "not_data"),
    ("zigbee2mqtt/bridge/converters", [], "not_data"),
    ("zigbee2mqtt/bridge/health", {"response_time": 1}, "not_data"),
    ("zigbee2mqtt/bridge/logging", {"level": "info", "message": "x", "namespace": "z2m"}, "not_data"),
    ("zigbee2mqtt/bridge/event", {"type": "device_leave", "data": {"ieee_address": IEEE, "friendly_name": "plug_1"}}, "event"),
    ("zigbee2mqtt/bridge/response/permit_join", {"data": {"value": True}, "status": "ok"}, "not_data"),
    ("zigbee2mqtt/bridge/response/device/remove", {"data": {"id": "plug_1"}, "status": "ok"}, "event"),
    ("zigbee2mqtt/bridge/request/permit_join", {"time": 254}, "not_data"),
    ("zigbee2mqtt/bridge/config", {"version": "1.42.0"}, "not_data"),
    ("zigbee2mqtt/bridge/log", {"type": "pairing", "message": "interview_successful", "meta": {"friendly_name": "co_box"}}, "event"),
    ("zigbee2mqtt/kitchen_gas", {"gas": False, "tamper": False, "battery_low": False, "linkquality": 87}, "reading"),
    ("zigbee2mqtt/kitchen_gas/gas", "true", "reading"),
    ("zigbee2mqtt/kitchen_gas/availability", {"state": "offline"}, "status"),
    ("zigbee2mqtt/kitchen_gas/availability", "", "not_data"),
    ("zigbee2mqtt/plug_1/action", "single", "reading"),
    ("zigbee2mqtt/plug_1/l1", {"state": "ON"}, "reading"),
    ("zigbee2mqtt/plug_1/set", {"state": "ON"}, "not_data"),
    ("zigbee2mqtt/plug_1/set/state", "ON", "not_data"),
    ("zigbee2mqtt/plug_1/get", {"state": ""}, "not_data"),
    ("zigbee2mqtt/plug_1/l1/set", {"state": "ON"}, "not_data"),
    (f"{SHELLY}/online", "true", "status"),
    ("shellies/announce", {"id": "shellygas-E868E7C6E54A", "model": "SHGS-1"}, "event"),
    (f"{SHELLY}/announce", {"id": "shellygas-E868E7C6E54A", "model": "SHGS-1"}, "event"),
    (f"{SHELLY}/info", {"gas_sensor": {"sensor_state": "normal", "self_test_state": "completed", "alarm_state": "none"}, "concentration": {"ppm": 100, "is_valid": True}, "valves": [{"state": "not_connected"}]}, "reading"),
    *((f"{SHELLY}/sensor/operation", v, "reading") for v in ("unknown", "warmup", "normal", "fault")),
    *((f"{SHELLY}/sensor/gas", v, "reading") for v in ("unknown", "none", "mild", "heavy", "test")),
    *((f"{SHELLY}/sensor/self_test", v, "reading") for v in ("not_completed", "completed", "running", "pending")),
    *((f"{SHELLY}/sensor/concentration", v, "reading") for v in ("0", "120", "65535", "-1")),
    *((f"{SHELLY}/valve/0/state", v, "reading") for v in ("unknown", "closed", "opened", "not_connected", "failure", "closing", "opening", "checking")),
    *((f"{SHELLY}/sensor/{c}", "x", "not_data") for c in ("start_self_test", "mute", "unmute")),
    (f"{SHELLY}/valve/0/command", "close", "not_data"),
    (f"{SHELLY}/command", "announce", "not_data"),
    ("shellies/command", "update", "not_data"),
    (f"tele/{TASMOTA}/LWT", "Online", "status"),
    (f"tele/{TASMOTA}/INFO1", {"Info1": {"Module": "Generic", "Version": "7.0.0.3"}}, "not_data"),
    (f"tele/{TASMOTA}/INFO2", {"Info2": {"Hostname": "wemos2"}}, "not_data"),
    (f"tele/{TASMOTA}/INFO3", {"Info3": {"RestartReason": "Software/System restart"}}, "event"),
    (f"tele/{TASMOTA}/STATE", {"Time": "2019-10-31T11:14:59", "UptimeSec": 66972, "POWER": "OFF", "Wifi": {"RSSI": 100}}, "reading"),
    (f"tele/{TASMOTA}/SENSOR", {"Time": "2018-02-15T17:37:10", "ENERGY": {"Total": 6.294, "Power": 263, "Voltage": 227, "Current": 1.161}}, "reading"),
    (f"tele/{TASMOTA}/SENSOR", {"ANALOG": {"A0": 512}}, "reading"),
    (f"tele/{TASMOTA}/MARGINS", {"MARGINS": {"PowerDelta": 123}}, "reading"),
    (f"tele/{TASMOTA}/MARGINS", {"MARGINS": {"PowerHigh": "ON"}}, "reading"),
    (f"stat/{TASMOTA}/WARNING", {"Time": "2026-11-23T20:00:00", "MaxPowerReached": 2100}, "reading"),
    (f"stat/{TASMOTA}/WARNING", {"MaxPowerReachedRetry": "OFF"}, "reading"),
    (f"stat/{TASMOTA}/WARNING", {"MaxEnergyReached": 1.234}, "reading"),
    (f"stat/{TASMOTA}/RESULT", {"POWER": "OFF"}, "reading"),
    (f"stat/{TASMOTA}/RESULT", {"Time": "x", "PowerMonitor": "ON"}, "reading"),
    (f"stat/{TASMOTA}/RESULT", {"Time": "x", "EnergyMonitor": "ON"}, "not_data"),
    (f"stat/{TASMOTA}/POWER", "ON", "reading"),
    (f"stat/{TASMOTA}/POWERMONITOR", {"Time": "x", "PowerMonitor": "ON"}, "reading"),
    (f"stat/{TASMOTA}/POWER1", "OFF", "reading"),
    (f"stat/{TASMOTA}/STATUS8", {"StatusSNS": {}}, "not_data"),
    (f"tele/{TASMOTA}/RESULT", {"IrReceived": {}}, "not_data"),
    (f"tele/{TASMOTA}/HASS_STATE", {}, "not_data"),
    (f"cmnd/{TASMOTA}/POWER", "", "not_data"),
    ("esphome/kitchen-node/status", "online", "status"),
    ("esphome/kitchen-node/binary_sensor/gas/state", "ON", "reading"),
    ("esphome/kitchen-node/sensor/gas_lel/state", "21.5", "reading"),
    ("esphome/kitchen-node/sensor/gas_lel/state", "nan", "reading"),
    ("esphome/corridor-socket/switch/relay/state", "ON", "reading"),
    ("esphome/corridor-socket/switch/relay/command", "TOGGLE", "not_data"),
    ("esphome/kitchen-node/text_sensor/fault/state", "normal", "reading"),
    ("esphome/kitchen-node/debug", "[D][sensor:093]: 'Gas': Sending state 512.00000", "not_data"),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "payload", "outcome"), DOCUMENTED, ids=lambda v: v if isinstance(v, str) else "")
def test_every_documented_topic_ends_in_one_outcome(topic: str, payload: Any, outcome: str) -> None:
    items = decode(topic, payload)
    assert items, "nothing is dropped"
    kinds = {
        "reading" if isinstance(i, Reading)
        else "status" if isinstance(i, DeviceStatus)
        else "event" if isinstance(i, DeviceEvent)
        else i.kind.replace("invalid", "rejected") if isinstance(i, Reject)
        else type(i).__name__
        for i in items
    }  # fmt: skip
    assert kinds == {outcome}, items


def _overlap(a: str, b: str) -> bool:
    """Whether one topic can match both filters (ours hold no '#')."""
    pa, pb = a.split("/"), b.split("/")
    return len(pa) == len(pb) and all(x == y or "+" in (x, y) for x, y in zip(pa, pb, strict=True))


@pytest.mark.parametrize("bases", [adapters.Bases(), adapters.Bases("root9")], ids=["defaults", "rooted"])
def test_no_two_subscriptions_overlap(bases: adapters.Bases) -> None:
    """A message matching two of our filters is delivered twice by Mosquitto (seen: zigbee2mqtt/bridge/state under
    both bridge/state and the `+/state` attribute filter), and counted twice."""
    topics = [*adapters.topics(bases), *adapters.device_topics(DEVICES, bases)]
    clashes = [(a, b) for i, a in enumerate(topics) for b in topics[i + 1 :] if _overlap(a, b)]
    assert clashes == []
