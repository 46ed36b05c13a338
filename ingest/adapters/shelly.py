"""Shelly Gas (Gen1, SHGS-1) over MQTT, mapped to native readings, statuses and device events.

Formats are the Shelly Gen1 API's (MQTT section of shelly-api-docs.shelly.cloud/gen1, "Shelly Gas: MQTT"; the
device's `/status`; /work/notes/bridges.md section 2). Sensor payloads are plain text and carry no time, so ts is
the receive time.

Topics (base `shellies`, under an optional bridge topic root) and what each becomes (issue 19: every message is a
reading, a status, a device event or a reject with its reason):
- `<id>/sensor/operation`: unknown, warmup, normal, fault -> fault null / "sensor_fault"; extras operation, preheat
  (warmup: GAS-07b watches it)
- `<id>/sensor/gas`: unknown, none, mild, heavy, test -> gas false / true / true; test -> test true (a self-test
  never pages); extras alarm_state
- `<id>/sensor/concentration`: whole ppm 0..65535, -1 when not valid -> gas_lel = ppm / 500 capped at 100, extras
  gas_ppm; -1 -> extras gas_ppm_valid false only
- `<id>/sensor/self_test`: not_completed, completed, running, pending -> test = running or pending; extras self_test
- `<id>/valve/0/state`: unknown, closed, opened, not_connected, failure, closing, opening, checking -> valve closed
  / open; failure and not_connected -> valve fault on a registered gas_valve (it cannot close: GAS-05 tells the
  worker and actuation skips it), extras only on a detector without one; the rest extras valve_state
- `<id>/online`: true / false (the last will) -> DeviceStatus; empty: not data
- `<id>/announce`, `announce`: `{"id","model","mac","ip","new_fw","fw_ver"}` on connect -> DeviceEvent announced
  (also of an unregistered Shelly)
- `<id>/info`: the `/status` JSON: gas_sensor {sensor_state, self_test_state, alarm_state}, concentration {ppm,
  is_valid}, valves [{state}] -> the same Readings as the topics above, for the detector and its valve
- `<id>/valve/0/command`, `<id>/sensor/{start_self_test,mute,unmute}`, `<id>/command`, `command`: commands (ours or
  another client's) -> not data (not subscribed)
`unknown` of any sensor is a reading with that state in extras (the device is alive; its state is not known yet).
Any other value is rejected with the values we expected.

Concentration: the Shelly Gas reports ppm of the gas it was built for. We convert with methane's lower
explosive limit, 5 %vol = 50,000 ppm (IEC 60079-20-1), so 1 %LEL = 500 ppm. Its own alarm levels are
reported to be about 1,800 ppm ("mild", 3.6 %LEL) and 3,000 ppm ("heavy", 6 %LEL) (TapHome's Shelly Gas
page; the Shelly docs give no figure); both set our `gas` flag, which raises GAS-02 at once, well before the
25 %LEL threshold. The LPG variant reports the same field for propane/butane (LEL about 2.1 / 1.8 %vol), for
which ppm / 500 understates %LEL by about 2.4x: rely on its alarm flag, not on gas_lel thresholds. Values at
or above 50,000 ppm are capped at 100 %LEL (over range is the worst case, never a reason to reject).

Device: the registry device with adapter `shelly` and foreign_id = the MQTT id in the topic
(`shellygas-<MAC>` by default). The valve can be registered as its own `gas_valve` device with foreign_id
`<id>/valve/0` (the rules close "the site's registered gas_valve"); `valve/0/state` then goes to it, and
otherwise to the detector.

Commands (`encode`): close_valve -> `shellies/<id>/valve/0/command` `close` (for the detector or its
`<id>/valve/0` valve device); self_test -> `shellies/<id>/sensor/start_self_test` `self_test`; silence ->
`shellies/<id>/sensor/mute` `mute`. The Shelly Gas has no relay, so cut_power / restore_power are refused.
There is no ack: `valve/0/state closed` is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from core.domain import Adapter, Device, DeviceKind, DeviceStatus
from ingest.adapters.common import as_object, build_reading, join, resolve, scalar_text
from ingest.decode import Decoded, DeviceEvent, DeviceLookup, Limits, Reject, not_data, parse_json_object

ADAPTER = Adapter.SHELLY
PPM_PER_LEL = 500.0  # methane: LEL 5 %vol = 50,000 ppm
CHANNELS = ("sensor/operation", "sensor/gas", "sensor/concentration", "sensor/self_test", "valve/0/state", "online")
EXTRA_CHANNELS = ("announce", "info")
COMMAND_CHANNELS = frozenset({"valve/0/command", "sensor/start_self_test", "sensor/mute", "sensor/unmute", "command"})

OPERATION = {"warmup": None, "normal": None, "fault": "sensor_fault"}
GAS = {"none": False, "mild": True, "heavy": True}
SELF_TEST = {"not_completed": False, "completed": False, "running": True, "pending": True}
VALVE = {"opened": "open", "closed": "closed", "failure": "fault", "failed": "fault", "not_connected": "fault"}
VALVE_UNAVAILABLE = frozenset({"failure", "failed", "not_connected"})
VALVE_MOVING = frozenset({"closing", "opening", "checking"})
VALVE_SUFFIX = "valve/0"  # foreign_id `<id>/valve/0`: the Shelly Gas valve registered as its own gas_valve
ANNOUNCE_KEYS = ("model", "mac", "ip", "new_fw", "fw_ver", "mode")


def _expected(values: Any) -> str:
    return ", ".join(values)


Mapped = tuple[dict[str, Any], dict[str, Any]] | str


def _operation(value: str, text: str, _kind: DeviceKind) -> Mapped:
    if value not in OPERATION:
        return f"operation must be one of unknown, {_expected(OPERATION)}, got {text[:40]!r}"
    # warmup: the sensor is heating and not detecting yet; GAS-07b raises when it stays so for 10 min
    return {"fault": OPERATION[value]}, {"operation": value, "preheat": value == "warmup"}


def _gas(value: str, text: str, _kind: DeviceKind) -> Mapped:
    if value == "test":
        return {"test": True}, {"alarm_state": value}
    if value not in GAS:
        return f"gas alarm state must be one of unknown, {_expected([*GAS, 'test'])}, got {text[:40]!r}"
    return {"gas": GAS[value]}, {"alarm_state": value}


def _concentration(value: str, text: str, _kind: DeviceKind) -> Mapped:
    try:
        ppm = int(value)
    except ValueError:
        return f"concentration must be whole ppm, got {text[:40]!r}"
    if ppm == -1:
        return {}, {"gas_ppm": -1, "gas_ppm_valid": False}  # not valid yet (warming up): alive, no level
    if ppm < 0:
        return f"concentration must be >= 0 ppm (or -1: not valid), got {ppm}"
    return {"gas_lel": min(round(ppm / PPM_PER_LEL, 2), 100.0)}, {"gas_ppm": ppm}


def _self_test(value: str, text: str, _kind: DeviceKind) -> Mapped:
    if value not in SELF_TEST:
        return f"self_test must be one of unknown, {_expected(SELF_TEST)}, got {text[:40]!r}"
    return {"test": SELF_TEST[value]}, {"self_test": value}


def _valve(value: str, text: str, kind: DeviceKind) -> Mapped:
    if value in VALVE_MOVING:
        return {}, {"valve_state": value}
    if value not in VALVE:
        return f"valve state must be one of unknown, {_expected([*VALVE, *sorted(VALVE_MOVING)])}, got {text[:40]!r}"
    if value in VALVE_UNAVAILABLE and kind is not DeviceKind.GAS_VALVE:
        return {}, {"valve_state": value}  # a detector without a registered valve: nothing to actuate
    return {"valve": VALVE[value]}, {"valve_state": value}


CHANNEL_MAPPERS: dict[str, Callable[[str, str, DeviceKind], Mapped]] = {
    "sensor/operation": _operation,
    "sensor/gas": _gas,
    "sensor/concentration": _concentration,
    "sensor/self_test": _self_test,
    "valve/0/state": _valve,
}
UNKNOWN_KEY = {
    "sensor/operation": "operation",
    "sensor/gas": "alarm_state",
    "sensor/concentration": "gas_ppm",
    "sensor/self_test": "self_test",
    "valve/0/state": "valve_state",
}


def map_channel(channel: str, text: str, kind: DeviceKind = DeviceKind.GAS_DETECTOR) -> Mapped:
    """(fields, extras) for one Shelly Gas message; or text saying what was wrong."""
    value = text.lower()
    mapper = CHANNEL_MAPPERS.get(channel)
    if mapper is None:
        return f"unsupported shelly channel {channel!r}"
    if value == "unknown":
        return {}, {UNKNOWN_KEY[channel]: "unknown"}  # the device is alive, the sensor's state not known yet
    return mapper(value, text, kind)


def _info_channels(data: dict[str, Any]) -> list[tuple[str, str]]:
    """`/status` (shellies/<id>/info) as the (channel, text) messages it summarises."""
    out: list[tuple[str, str]] = []
    sensor = as_object(data.get("gas_sensor"))
    for key, channel in (
        ("sensor_state", "sensor/operation"),
        ("alarm_state", "sensor/gas"),
        ("self_test_state", "sensor/self_test"),
    ):
        if isinstance(sensor.get(key), str):
            out.append((channel, sensor[key]))
    conc = as_object(data.get("concentration"))
    if isinstance(conc.get("ppm"), int) and not isinstance(conc.get("ppm"), bool):
        out.append(("sensor/concentration", str(conc["ppm"] if conc.get("is_valid", True) else -1)))
    valves = data.get("valves")
    if isinstance(valves, list) and valves and isinstance(valves[0], dict) and isinstance(valves[0].get("state"), str):
        out.append(("valve/0/state", valves[0]["state"]))
    return out


@dataclass(frozen=True, slots=True)
class Shelly:
    """The Shelly Gen1 adapter for one topic base (an AdapterDecoder with `ignores` and `owns`)."""

    root: str = ""
    base: str = "shellies"
    name: ClassVar[str] = "shelly"

    @property
    def prefix(self) -> str:
        return join(self.root, self.base)

    def topics(self) -> list[str]:
        """One filter per Shelly Gas leaf: other Shellies on the same broker stay out of the ingest."""
        return [
            *(f"{self.prefix}/+/{channel}" for channel in (*CHANNELS, *EXTRA_CHANNELS)),
            f"{self.prefix}/announce",
        ]

    def _split(self, topic: str) -> tuple[str, str] | None:
        head = self.prefix + "/"
        if not topic.startswith(head):
            return None
        shelly_id, _, channel = topic[len(head) :].partition("/")
        return shelly_id, channel

    def source(self, topic: str) -> str | None:
        """The base one Shelly's account publishes under (`shellies/<id>`, pinned by its ACL)."""
        split = self._split(topic)
        return None if split is None else f"{self.prefix}/{split[0]}"

    def owns(self, topic: str) -> bool:
        return self._split(topic) is not None

    def ignores(self, topic: str) -> str | None:
        """Commands (ours or another client's) under the Shelly base: not device data."""
        split = self._split(topic)
        if split is None:
            return None
        shelly_id, channel = split
        if channel in COMMAND_CHANNELS or shelly_id == "command":
            return "a command to a Shelly (ours or another client's), not a report from it"
        return None

    def __call__(
        self, topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> list[Decoded] | None:
        split = self._split(topic)
        if split is None:
            return None
        why = self.ignores(topic)
        if why is not None:
            return [not_data(why)]
        shelly_id, channel = split
        if shelly_id == "announce" and not channel:
            return [self._announce(None, payload, received_at, lookup)]
        if not shelly_id or channel not in (*CHANNELS, *EXTRA_CHANNELS):
            return [Reject(f"topic {topic!r} is not shellies/<id>/<{'|'.join((*CHANNELS, *EXTRA_CHANNELS))}>")]
        if channel == "announce":
            return [self._announce(shelly_id, payload, received_at, lookup)]
        device = resolve(lookup, ADAPTER, shelly_id)
        if channel == "valve/0/state":
            device = lookup.by_foreign_id(ADAPTER, f"{shelly_id}/{VALVE_SUFFIX}") or device
        if isinstance(device, Reject):
            return [device]
        text = scalar_text(payload, what=f"shelly {shelly_id!r} {channel}", device_id=device.id)
        if isinstance(text, Reject):
            return [text]
        if text == "":
            return [not_data(f"shelly {channel} cleared (empty retained message)", device.id)]
        if channel == "online":
            return [self._online(device, text, received_at)]
        if channel == "info":
            return self._info(shelly_id, device, payload, received_at, lookup, limits)
        return [self._reading(device, shelly_id, channel, text, received_at, limits)]

    def _reading(
        self, device: Device, shelly_id: str, channel: str, text: str, received_at: datetime, limits: Limits
    ) -> Decoded:
        mapped = map_channel(channel, text, device.kind)
        if isinstance(mapped, str):
            return Reject(f"shelly {shelly_id!r} {channel}: {mapped}", device.id)
        fields, extras = mapped
        return build_reading(
            device,
            fields=fields,
            extras=extras,
            ts=None,
            received_at=received_at,
            limits=limits,
            sources=dict.fromkeys(fields, channel),
            origin="shelly topic",
            what=f"shelly {shelly_id!r} {channel}",
        )

    def _online(self, device: Device, text: str, received_at: datetime) -> Decoded:
        if text.lower() not in ("true", "false"):
            return Reject(f"shelly {device.foreign_id!r} online must be true or false, got {text[:40]!r}", device.id)
        return DeviceStatus(device.id, text.lower() == "true", received_at)

    def _announce(self, shelly_id: str | None, payload: bytes, at: datetime, lookup: DeviceLookup) -> Decoded:
        """shellies/announce or shellies/<id>/announce: the device connected (its id, model, firmware)."""
        data = parse_json_object(payload)
        if isinstance(data, Reject):
            return Reject(f"shelly announce: {data.reason}")
        name = data.get("id") if isinstance(data.get("id"), str) and data.get("id") else shelly_id
        if not name:
            return Reject("shelly announce names no device (id)")
        device = lookup.by_foreign_id(ADAPTER, str(name))
        details = {k: data[k] for k in ANNOUNCE_KEYS if k in data}
        return DeviceEvent(self.name, str(name), "announced", at, device.id if device else None, details)

    def _info(
        self,
        shelly_id: str,
        device: Device,
        payload: bytes,
        received_at: datetime,
        lookup: DeviceLookup,
        limits: Limits,
    ) -> list[Decoded]:
        """shellies/<id>/info (the `/status` document): one reading for the detector, one for a registered valve."""
        data = parse_json_object(payload)
        if isinstance(data, Reject):
            return [Reject(f"shelly {shelly_id!r} info: {data.reason}", device.id)]
        valve = lookup.by_foreign_id(ADAPTER, f"{shelly_id}/{VALVE_SUFFIX}")
        merged: dict[Device, tuple[dict[str, Any], dict[str, Any]]] = {}
        for channel, text in _info_channels(data):
            target = valve if channel == "valve/0/state" and valve is not None else device
            mapped = map_channel(channel, text, target.kind)
            if isinstance(mapped, str):
                return [Reject(f"shelly {shelly_id!r} info: {mapped}", device.id)]
            fields, extras = merged.setdefault(target, ({}, {}))
            fields.update(mapped[0])
            extras.update(mapped[1])
        if not merged:
            return [Reject(f"shelly {shelly_id!r} info carries no gas_sensor, concentration or valves", device.id)]
        return [
            build_reading(
                target,
                fields=fields,
                extras=extras,
                ts=None,
                received_at=received_at,
                limits=limits,
                origin="shelly info",
                what=f"shelly {shelly_id!r} info",
            )
            for target, (fields, extras) in merged.items()
        ]

    def encode(self, device: Device, action: str) -> list[tuple[str, bytes]]:
        """The command message that carries a native action to this Shelly Gas."""
        found = {
            "close_valve": ("valve/0/command", b"close"),
            "self_test": ("sensor/start_self_test", b"self_test"),
            "silence": ("sensor/mute", b"mute"),
        }.get(action)
        if found is None:
            raise ValueError(f"a Shelly Gas cannot carry the action {action!r} (it has no relay)")
        channel, body = found
        shelly_id = str(device.foreign_id).removesuffix(f"/{VALVE_SUFFIX}")
        return [(f"{self.prefix}/{shelly_id}/{channel}", body)]
