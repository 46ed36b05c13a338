"""Simulator device models, formats and scenario files: pure logic, table-driven, no network."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import orjson
import pytest

from core.domain import Adapter, DeviceKind, Location
from core.errors import ConfigError
from core.registry import RegistryIn
from ingest.schemas import TelemetryIn
from simulators import formats
from simulators.formats import Topics, Wire
from simulators.models import (
    ChargingPort,
    CoAlarm,
    Command,
    GasDetector,
    Pack,
    SmokeDetector,
    format_ts,
    make_model,
)
from simulators.scenario import get_scenario, library, parse_duration, parse_scenario, registry_document

T0 = 1_790_000_000.0  # an event time (epoch seconds)


def charge(port: ChargingPort, hours: float, step_s: float = 60.0) -> list[dict[str, float]]:
    """Readings every step_s for hours, with the time since plug-in."""
    out = []
    t = T0
    while t <= T0 + hours * 3600:
        r = port.reading(t)
        assert r is not None
        out.append({"h": (t - T0) / 3600, **{k: v for k, v in r.items() if isinstance(v, int | float)}})
        t += step_s
    return out


def test_cc_cv_curve_shape() -> None:
    """Bulk (constant power), then a monotone CV taper, then the charger cuts off to standby."""
    port = ChargingPort("p1", seed=3)
    port.reading(T0)
    port.plug(T0, Pack(soc=0.2, bulk_w=150))
    rows = charge(port, 10)
    bulk = [r for r in rows if 0.1 < r["h"] < 3.0]
    assert all(140 <= r["power_w"] <= 160 for r in bulk), "CC phase draws about the bulk power"
    # CV starts at 80 % SoC: 0.6 x 960 Wh / (150 W x 0.85) = 4.5 h
    cv_start = next(r["h"] for r in rows if r["h"] > 1 and r["power_w"] < 135)
    assert 4.0 < cv_start < 5.0
    full_at = next(r["h"] for r in rows if r["h"] > cv_start and r["power_w"] < 5)
    assert 5.5 < full_at < 9.0, "a 48 V 20 Ah pack from 20 % is full after an overnight charge"
    taper = [r["power_w"] for r in rows if cv_start <= r["h"] <= full_at - 0.05]
    smoothed = [sum(taper[i : i + 5]) / 5 for i in range(0, len(taper) - 5, 5)]
    assert all(a >= b for a, b in itertools.pairwise(smoothed)), "the CV taper only goes down"
    assert all(r["power_w"] < 5 for r in rows if r["h"] > full_at + 0.1), "cut off at full: standby only"
    energy = rows[-1]["energy_wh"]
    assert 600 < energy < 800, "0.8 x 960 Wh into the pack at 85 % efficiency is about 700 Wh from the wall"
    assert all(20 < r["temp_c"] < 40 for r in rows), "a healthy charge stays warm, not hot"
    assert all(r["current_a"] < 1.0 for r in rows), "150 W at 220 V is about 0.7 A"


def test_charger_without_cutoff_never_tapers() -> None:
    port = ChargingPort("p2", seed=1)
    port.reading(T0)
    port.plug(T0, Pack(soc=0.3, bulk_w=150, fault="no_cutoff"))
    rows = charge(port, 9)
    assert min(r["power_w"] for r in rows if r["h"] > 0.1) >= 0.8 * 150


def test_thermal_runaway_precursor_heats_fast() -> None:
    port = ChargingPort("p3", seed=1)
    port.reading(T0)
    port.plug(T0, Pack(soc=0.7, bulk_w=160, fault="thermal_runaway"))
    rows = charge(port, 4, step_s=30)
    hot = next(i for i, r in enumerate(rows) if r["temp_c"] > 45)
    # +10 C within 5 min while above 45 C (RULES-REFERENCE 4.4, EB-04)
    assert any(rows[i + 10]["temp_c"] - rows[i]["temp_c"] >= 10 for i in range(hot, len(rows) - 10))
    assert max(r["temp_c"] for r in rows) >= 80
    taper_low = min(r["power_w"] for r in rows[hot - 60 : hot])
    assert max(r["power_w"] for r in rows[hot:]) > 2 * taper_low + 10, "power re-rises after the taper"


@pytest.mark.parametrize(
    ("action", "relay", "power_zero"), [("cut_power", "off", True), ("restore_power", "on", False)]
)
def test_port_relay_obeys(action: str, relay: str, power_zero: bool) -> None:
    port = ChargingPort("p4", seed=1)
    port.reading(T0)
    port.plug(T0, Pack(soc=0.3))
    port.reading(T0 + 600)
    result = port.handle_command(T0 + 600, Command("c1", action))
    assert result.ok
    r = port.reading(T0 + 660)
    assert r is not None
    assert r["relay"] == relay
    assert (r["power_w"] == 0) is power_zero


@pytest.mark.parametrize(("valve", "ok", "reported"), [(True, True, "closed"), (False, False, None)])
def test_gas_detector_valve_obeys_close_valve(valve: bool, ok: bool, reported: str | None) -> None:
    gas = GasDetector("g1", seed=1, valve=valve)
    gas.set_env(T0, gas_lel=40)
    gas.reading(T0)
    result = gas.handle_command(T0 + 1, Command("c1", "close_valve"))
    assert result.ok is ok
    nxt = gas.reading(T0 + 30)
    assert nxt is not None
    assert nxt.get("valve") == reported
    if ok:  # the supply is cut, so the gas disperses
        later = gas.reading(T0 + 1200)
        assert later is not None
        assert later["gas_lel"] < 2


@pytest.mark.parametrize(
    ("kind", "days", "drain", "start", "expected"),
    [
        (DeviceKind.SMOKE_DETECTOR, 10, 0.5, 90.0, 85.0),
        (DeviceKind.CO_ALARM, 30, 0.1, 50.0, 47.0),
        (DeviceKind.SMOKE_DETECTOR, 3, 10.0, 20.0, 0.0),
    ],
)
def test_battery_drains_in_event_time(
    kind: DeviceKind, days: float, drain: float, start: float, expected: float
) -> None:
    model = make_model(kind, "b1", seed=1, battery=True, battery_pct=start, drain_pct_per_day=drain)
    model.reading(T0)
    last = None
    t = T0
    while t < T0 + days * 86400 and not model.dead:
        t += 3600
        last = model.reading(t)
    assert last is not None
    assert last["battery_pct"] == pytest.approx(expected, abs=0.2)
    assert model.dead is (expected == 0.0), "an empty battery is the last message"


def test_battery_device_heartbeat_and_seq() -> None:
    smoke = SmokeDetector("s1", seed=1)
    assert smoke.interval_s == 300
    readings = [smoke.reading(T0 + i * 300) for i in range(5)]
    assert [r["seq"] for r in readings if r] == [0, 1, 2, 3, 4]
    assert [r["ts"] for r in readings if r] == [round((T0 + i * 300) * 1000) for i in range(5)]


@pytest.mark.parametrize(
    ("kind", "env", "minutes"),
    [
        (DeviceKind.GAS_DETECTOR, {"gas_lel": 12.0}, 60),
        (DeviceKind.CO_ALARM, {"co_ppm": 80.0}, 60),
        (DeviceKind.SMOKE_DETECTOR, {"smoke_db_m": 0.05}, 60),
        (DeviceKind.CHARGING_PORT, {}, 60),
        (DeviceKind.GATEWAY, {}, 60),
    ],
)
def test_same_seed_same_readings(kind: DeviceKind, env: dict[str, float], minutes: int) -> None:
    def run(seed: int) -> list[dict[str, object]]:
        model = make_model(kind, "d1", seed=seed)
        if env:
            model.set_env(T0, **env)
        if isinstance(model, ChargingPort):
            model.plug(T0, Pack(soc=0.4))
        return [r for i in range(minutes) if (r := model.reading(T0 + i * 60)) is not None]

    assert run(7) == run(7)
    assert run(7) != run(8), "the seed drives the noise"


def test_readings_are_valid_v1_telemetry() -> None:
    """Every model's output passes the ingest wire schema (so a reject is always deliberate)."""
    for kind in DeviceKind:
        model = make_model(kind, f"x-{kind.value}", seed=2)
        for i in range(3):
            reading = model.reading(T0 + i * 600)
            assert reading is not None
            TelemetryIn.model_validate(orjson.loads(orjson.dumps(reading)))


@pytest.mark.parametrize(
    ("ppm", "alarm_within_min", "quiet_for_min"),
    [
        (300, 3, None),  # EN 50291: 300 ppm alarms in under 3 min
        (100, 40, 10),  # 100 ppm: 10-40 min
        (50, 90, 60),  # 50 ppm: 60-90 min
        (30, None, 120),  # 30 ppm: no alarm for 120 min
    ],
)
def test_co_alarm_own_flag_follows_en50291(
    ppm: float, alarm_within_min: float | None, quiet_for_min: float | None
) -> None:
    co = CoAlarm("co1", seed=1, interval_s=30)
    co.set_env(T0, co_ppm=ppm)
    flags = [(i * 0.5, bool(r["co"])) for i in range(0, 300) if (r := co.reading(T0 + i * 30)) is not None]
    first = next((m for m, on in flags if on), None)
    if alarm_within_min is not None:
        assert first is not None
        assert first <= alarm_within_min + 2  # the sensor's own response lag
    if quiet_for_min is not None:
        assert first is None or first >= quiet_for_min


def test_flap_is_a_square_wave() -> None:
    gas = GasDetector("f1", seed=1, response_s=0)
    gas.flap_env(T0, "gas_lel", 8.5, 11.0, 10)
    values = [r["gas_lel"] for i in range(8) if (r := gas.reading(T0 + i * 5))]
    assert [v > 10 for v in values] == [True, False] * 4


@pytest.mark.parametrize(
    ("style", "expected"), [("epoch_ms", 1_790_000_000_500), ("rfc3339", "2026-09-21T14:13:20.500Z")]
)
def test_device_timestamps(style: str, expected: object) -> None:
    assert format_ts(T0 + 0.5, style) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90s", 90.0), ("15m", 900.0), ("8h", 28800.0), ("1.5d", 129600.0), ("-3m", -180.0), ("250ms", 0.25)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "5 weeks", True])
def test_parse_duration_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


# --- wire formats --------------------------------------------------------------------------------------
READING = {"ts": 1_790_000_000_000, "seq": 4, "gas_lel": 30.0, "gas": True, "temp_c": 24.0, "valve": "open"}
SOCKET = {
    "ts": 1_790_000_000_000,
    "seq": 1,
    "power_w": 150.0,
    "current_a": 0.7,
    "voltage_v": 221.0,
    "energy_wh": 1234.0,
    "relay": "on",
    "temp_c": 31.0,
}


@pytest.mark.parametrize(
    ("wire", "reading", "expected"),
    [
        (Wire("g1", DeviceKind.GAS_DETECTOR), READING, [("gw/v1/g1/telemetry", READING)]),
        (
            Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.ZIGBEE2MQTT, "kitchen_gas"),
            READING,
            [
                (
                    "zigbee2mqtt/kitchen_gas",
                    {
                        "gas": True,
                        "gas_value": 30.0,
                        "temperature": 24.0,
                        "linkquality": 120,
                        "last_seen": "2026-09-21T14:13:20.000Z",
                    },
                )
            ],
        ),
        (
            Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.SHELLY, "shellygas-1"),
            READING,
            [
                ("shellies/shellygas-1/sensor/operation", "normal"),
                ("shellies/shellygas-1/sensor/gas", "heavy"),
                ("shellies/shellygas-1/sensor/concentration", "15000"),
                ("shellies/shellygas-1/valve/0/state", "opened"),
            ],
        ),
        (
            Wire("s1", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "plug7"),
            SOCKET,
            [
                (
                    "tele/plug7/SENSOR",
                    {
                        "Time": "2026-09-21T14:13:20+00:00",
                        "ENERGY": {
                            "TotalStartTime": "2026-01-01T00:00:00",
                            "Total": 1.234,
                            "Yesterday": 0.0,
                            "Today": 1.234,
                            "Period": 0,
                            "Power": 150,
                            "ApparentPower": 158,
                            "ReactivePower": 50,
                            "Factor": 0.95,
                            "Voltage": 221,
                            "Current": 0.7,
                        },
                        "ANALOG": {"Temperature1": 31.0},
                        "TempUnit": "C",
                    },
                ),
                ("tele/plug7/STATE", {"Time": "2026-09-21T14:13:20+00:00", "POWER": "ON"}),
            ],
        ),
    ],
)
def test_telemetry_formats(wire: Wire, reading: dict[str, object], expected: list[tuple[str, object]]) -> None:
    outs = formats.telemetry(wire, dict(reading), Topics())
    got = []
    for out in outs:
        try:
            body: object = orjson.loads(out.payload)
        except orjson.JSONDecodeError:
            body = out.payload.decode()
        got.append((out.topic, body if not isinstance(body, int) else str(body)))
    assert got == expected


def test_z2m_attribute_output_and_epoch_last_seen() -> None:
    wire = Wire(
        "s1", DeviceKind.SMOKE_DETECTOR, Adapter.ZIGBEE2MQTT, "smoke1", z2m_output="attribute", z2m_last_seen="epoch"
    )
    outs = formats.telemetry(wire, {"ts": 1_790_000_000_000, "smoke": True, "battery_pct": 80.0}, Topics())
    by_topic = {o.topic: o.payload for o in outs}
    assert by_topic["zigbee2mqtt/smoke1/smoke"] == b"true"
    assert by_topic["zigbee2mqtt/smoke1/battery"] == b"80"
    assert by_topic["zigbee2mqtt/smoke1/last_seen"] == b"1790000000000"


@pytest.mark.parametrize(
    ("wire", "online", "topic", "payload"),
    [
        (Wire("g1", DeviceKind.GAS_DETECTOR), False, "gw/v1/g1/status", b'{"state":"offline"}'),
        (
            Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.ZIGBEE2MQTT, "n"),
            True,
            "zigbee2mqtt/n/availability",
            b'{"state":"online"}',
        ),
        (
            Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.ZIGBEE2MQTT, "n", z2m_legacy_availability=True),
            False,
            "zigbee2mqtt/n/availability",
            b"offline",
        ),
        (Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.SHELLY, "sg"), False, "shellies/sg/online", b"false"),
        (Wire("p1", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "t"), True, "tele/t/LWT", b"Online"),
        (Wire("g1", DeviceKind.GAS_DETECTOR, Adapter.ESPHOME, "node1"), False, "esphome/node1/status", b"offline"),
    ],
)
def test_status_is_retained_per_dialect(wire: Wire, online: bool, topic: str, payload: bytes) -> None:
    out = formats.status(wire, online, Topics())
    assert (out.topic, out.payload, out.retain) == (topic, payload, True)


@pytest.mark.parametrize(
    ("wire", "payload", "action"),
    [
        (Wire("g1", DeviceKind.GAS_DETECTOR), b'{"id":"x","action":"close_valve"}', "close_valve"),
        (Wire("p", DeviceKind.SMART_SOCKET, Adapter.ZIGBEE2MQTT, "p"), b'{"state":"OFF"}', "cut_power"),
        (Wire("g", DeviceKind.GAS_DETECTOR, Adapter.SHELLY, "g"), b"close", "close_valve"),
        (Wire("p", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "p"), b"OFF", "cut_power"),
        (Wire("p", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "p"), b"ON", "restore_power"),
    ],
)
def test_commands_parsed_per_dialect(wire: Wire, payload: bytes, action: str) -> None:
    assert formats.parse_command(wire, payload)[1] == action


@pytest.mark.parametrize(
    ("topic", "payload", "action"),
    [
        ("esphome/n/switch/relay/command", b"OFF", "cut_power"),
        ("esphome/n/switch/relay/command", b"ON", "restore_power"),
        ("esphome/n/switch/valve/command", b"OFF", "close_valve"),
        ("esphome/n/button/self_test/command", b"PRESS", "self_test"),
        ("esphome/n/button/silence/command", b"PRESS", "silence"),
    ],
)
def test_esphome_commands_parsed_from_their_topic(topic: str, payload: bytes, action: str) -> None:
    wire = Wire("p", DeviceKind.SMART_SOCKET, Adapter.ESPHOME, "n")
    assert formats.command_topic(wire, Topics()) == "esphome/n/+/+/command"
    assert formats.parse_command(wire, payload, topic)[1] == action


def test_esphome_telemetry_is_what_the_ingest_adapter_reads() -> None:
    """The simulator speaks ESPHome as ingest/adapters/esphome.py reads it: one retained state per entity."""
    from core.domain import Device, Location
    from ingest import adapters
    from ingest.decode import Decoder, Message

    wire = Wire("sock", DeviceKind.SMART_SOCKET, Adapter.ESPHOME, "sock-node")
    reading = {"ts": 1_790_000_000_000, "power_w": 182.5, "current_a": 0.8, "temp_c": 31.0, "relay": "on"}
    outs = formats.telemetry(wire, reading, Topics())
    assert {o.topic: o.payload for o in outs} == {
        "esphome/sock-node/sensor/power/state": b"182.5",
        "esphome/sock-node/sensor/current/state": b"0.8",
        "esphome/sock-node/sensor/temperature/state": b"31",
        "esphome/sock-node/switch/relay/state": b"ON",
    }
    assert all(o.retain for o in outs)
    device = Device("sock", DeviceKind.SMART_SOCKET, "s1", Location.CORRIDOR, Adapter.ESPHOME, "sock-node")

    class Lookup:
        def device(self, device_id: str) -> Device | None:
            return device if device_id == "sock" else None

        def by_foreign_id(self, adapter: Adapter, foreign_id: str) -> Device | None:
            return device if (adapter, foreign_id) == (Adapter.ESPHOME, "sock-node") else None

    decoder = Decoder(adapters=adapters.decoders())
    got: dict[str, object] = {}
    for o in outs:
        (item,) = decoder.decode(Message(o.topic, o.payload, datetime.now(UTC)), Lookup())
        got.update({k: getattr(item, k) for k in ("power_w", "current_a", "temp_c", "relay") if getattr(item, k)})
    assert got == {"power_w": 182.5, "current_a": 0.8, "temp_c": 31.0, "relay": "on"}


def test_bridge_root_moves_every_bridge_topic() -> None:
    topics = Topics(bridge_root="site7")
    wire = Wire("p", DeviceKind.SMART_SOCKET, Adapter.TASMOTA, "p")
    assert formats.command_topic(wire, topics) == "site7/cmnd/p/POWER"
    assert formats.bridge_state(True, topics).topic == "site7/zigbee2mqtt/bridge/state"


# --- scenario files ------------------------------------------------------------------------------------
def test_every_library_scenario_builds_a_valid_registry() -> None:
    for scenario in library().values():
        registry = RegistryIn.model_validate(registry_document(scenario, tag="t1"))
        assert {d.id for d in registry.devices} == {d.id for d in scenario.devices}


def test_scenario_lookup_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="kitchen_gas_leak"):
        get_scenario("no_such_story")


BASE = {
    "name": "s",
    "title": "t",
    "start": "1h",
    "duration": "30m",
    "devices": [{"id": "d", "kind": "gas_detector", "location": "kitchen"}],
    "expect": {"alarms": "none"},
}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"duration": "2h"}, "runs past now"),
        ({"start": "30h", "duration": "1h"}, "older than 24 h"),
        ({"timeline": [{"at": "1m", "device": "d", "set": {"gas_lel": 1}, "die": True}]}, "exactly one"),
        ({"timeline": [{"at": "1m", "device": "nope", "die": True}]}, "unknown device"),
        ({"timeline": [{"at": "1m", "device": "d", "ramp": {"gas_lel": 30}}]}, "needs over"),
        (
            {"devices": [{"id": "d", "kind": "gas_detector", "location": "kitchen", "adapter": "shelly"}]},
            "needs a foreign_id",
        ),
    ],
)
def test_scenario_validation(change: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_scenario({**BASE, **change}, "test.yaml")


def test_scenario_mapped_onto_registry_devices() -> None:
    """--registry with --scenario: same kind; same adapter and location first, then location, then adapter."""
    from simulators.cli import map_onto_registry
    from simulators.fleet import FleetDevice

    registry = [
        FleetDevice("z-gas", DeviceKind.GAS_DETECTOR, Location.KITCHEN, Adapter.ZIGBEE2MQTT, "zg"),
        FleetDevice("n-gas-room", DeviceKind.GAS_DETECTOR, Location.ROOM),
        FleetDevice("n-gas-kit", DeviceKind.GAS_DETECTOR, Location.KITCHEN),
        FleetDevice("smoke", DeviceKind.SMOKE_DETECTOR, Location.CORRIDOR),
    ]
    scenario = parse_scenario(
        {
            **BASE,
            "devices": [
                {"id": "a", "kind": "gas_detector", "location": "kitchen"},
                {"id": "b", "kind": "gas_detector", "location": "kitchen"},
                {"id": "c", "kind": "gas_detector", "location": "kitchen"},
            ],
        },
        "t",
    )
    picks = map_onto_registry(scenario, registry)
    assert {k: v.id for k, v in picks.items()} == {"a": "n-gas-kit", "b": "n-gas-room", "c": "z-gas"}
    too_many = parse_scenario({**BASE, "devices": [{"id": "s", "kind": "co_alarm", "location": "room"}]}, "t")
    with pytest.raises(ConfigError, match="needs a co_alarm"):
        map_onto_registry(too_many, registry)


def test_tasmota_max_power_warning_then_relay_off() -> None:
    """MaxPower exceeded for MaxPowerHold: stat/<t>/WARNING {"MaxPowerReached": W}, then POWER OFF."""
    wire = Wire("p", DeviceKind.CHARGING_PORT, Adapter.TASMOTA, "shed1")
    outs = formats.tasmota_max_power(wire, 1_790_000_000_000, 1312.4, Topics())
    assert [(o.topic, o.payload) for o in outs] == [
        ("stat/shed1/WARNING", b'{"Time":"2026-09-21T14:13:20+00:00","MaxPowerReached":1312}'),
        ("stat/shed1/POWER", b"OFF"),
    ]


@pytest.mark.parametrize("local_hour", range(24))
@pytest.mark.parametrize(("name", "part"), [("charger_no_cutoff", "day"), ("thermal_runaway_precursor", "day")])
def test_day_scenarios_run_in_daytime_whenever_the_suite_runs(local_hour: int, name: str, part: str) -> None:
    """EB-11 uplifts severities at night by the readings' own time, so a day scenario is placed in a daytime window
    of the last 23 h whatever the wall clock says (this suite runs at any hour)."""
    from datetime import datetime as dt
    from zoneinfo import ZoneInfo

    from simulators.scenario import library

    scenario = library()[name]
    assert scenario.local_time == part
    tz = ZoneInfo("Asia/Shanghai")
    now = dt(2026, 11, 23, local_hour, 17, tzinfo=tz).timestamp()
    t0 = scenario.event_start(now)
    assert now - 23 * 3600 <= t0 and t0 + scenario.duration <= now - 60
    begin, end = scenario.local_window or (0, scenario.duration)
    for minute in range(int(begin // 60), int(end // 60) + 1):
        hour = dt.fromtimestamp(t0 + minute * 60, tz).hour
        assert 6 <= hour < 22, (local_hour, minute)
