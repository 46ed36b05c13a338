"""Shelly Gas (Gen1, SHGS-1) over MQTT, mapped to native readings and status.

Formats are the Shelly Gen1 API's (MQTT section of shelly-api-docs.shelly.cloud/gen1, the device's CoAP
description `sensorOp warmup/normal/fault`, `gas none/mild/heavy/test`, `selfTest not_completed/completed/
running/pending`, `concentration ppm (U16, -1 unknown)`, `valve closed/opened/not_connected/failure/closing/
opening/checking`). Every payload is plain text; none carries a time, so ts is the receive time.

Topics we subscribe to (`topics()`; base `shellies`, under an optional bridge topic root), and what each becomes:
- `shellies/<id>/sensor/operation`: warmup / normal / fault -> fault null (warmup, normal) or "sensor_fault";
  extras operation.
- `shellies/<id>/sensor/gas`: none / mild / heavy / test -> gas false / true / true; test -> test true (and
  no gas field: a self-test never pages); extras alarm_state.
- `shellies/<id>/sensor/concentration`: whole ppm -> gas_lel = ppm / 500, capped at 100; extras gas_ppm.
- `shellies/<id>/sensor/self_test`: not_completed / completed / running / pending -> test = running or
  pending; extras self_test.
- `shellies/<id>/valve/0/state`: opened / closed / failure (also "failed") -> valve open / closed / fault;
  closing / opening / checking -> extras valve_state only.
- `shellies/<id>/online`: true / false (retained; the device's last will) -> DeviceStatus.
`unknown` (any of them), concentration -1 (not valid yet, warming up) and valve `not_connected` are Ignored;
any other value is rejected with the values we expected.

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
otherwise to the detector (a gas_detector reporting `valve`).

Commands (`encode`): close_valve -> `shellies/<id>/valve/0/command` `close` (for the detector or its
`<id>/valve/0` valve device); self_test ->
`shellies/<id>/sensor/start_self_test` `self_test`; silence -> `shellies/<id>/sensor/mute` `mute`. The Shelly
Gas has no relay, so cut_power / restore_power are refused. There is no ack: `valve/0/state closed` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.domain import Adapter, Device, DeviceStatus
from ingest.adapters.common import build_reading, join, resolve, scalar_text
from ingest.decode import Decoded, DeviceLookup, Ignored, Limits, Reject

ADAPTER = Adapter.SHELLY
PPM_PER_LEL = 500.0  # methane: LEL 5 %vol = 50,000 ppm
CHANNELS = ("sensor/operation", "sensor/gas", "sensor/concentration", "sensor/self_test", "valve/0/state", "online")
COMMAND_CHANNELS = frozenset({"valve/0/command", "sensor/start_self_test", "sensor/mute", "sensor/unmute", "command"})

OPERATION = {"warmup": None, "normal": None, "fault": "sensor_fault"}
GAS = {"none": False, "mild": True, "heavy": True}
SELF_TEST = {"not_completed": False, "completed": False, "running": True, "pending": True}
VALVE = {"opened": "open", "closed": "closed", "failure": "fault", "failed": "fault"}
VALVE_MOVING = frozenset({"closing", "opening", "checking"})
VALVE_SUFFIX = "valve/0"  # foreign_id `<id>/valve/0`: the Shelly Gas valve registered as its own gas_valve


def _expected(values: Any) -> str:
    return ", ".join(values)


Mapped = tuple[dict[str, Any], dict[str, Any]] | Ignored | str


def _operation(value: str, text: str) -> Mapped:
    if value not in OPERATION:
        return f"operation must be one of {_expected(OPERATION)}, got {text[:40]!r}"
    return {"fault": OPERATION[value]}, {"operation": value}


def _gas(value: str, text: str) -> Mapped:
    if value == "test":
        return {"test": True}, {"alarm_state": value}
    if value not in GAS:
        return f"gas alarm state must be one of {_expected([*GAS, 'test'])}, got {text[:40]!r}"
    return {"gas": GAS[value]}, {"alarm_state": value}


def _concentration(value: str, text: str) -> Mapped:
    try:
        ppm = int(value)
    except ValueError:
        return f"concentration must be whole ppm, got {text[:40]!r}"
    if ppm == -1:
        return Ignored("shelly concentration is not valid yet (-1: warming up)")
    if ppm < 0:
        return f"concentration must be >= 0 ppm, got {ppm}"
    return {"gas_lel": min(round(ppm / PPM_PER_LEL, 2), 100.0)}, {"gas_ppm": ppm}


def _self_test(value: str, text: str) -> Mapped:
    if value not in SELF_TEST:
        return f"self_test must be one of {_expected(SELF_TEST)}, got {text[:40]!r}"
    return {"test": SELF_TEST[value]}, {"self_test": value}


def _valve(value: str, text: str) -> Mapped:
    if value == "not_connected":
        return Ignored("shelly gas has no valve connected")
    if value in VALVE_MOVING:
        return {}, {"valve_state": value}
    if value not in VALVE:
        return (
            f"valve state must be one of {_expected([*VALVE, *sorted(VALVE_MOVING), 'not_connected'])}, "
            f"got {text[:40]!r}"
        )
    return {"valve": VALVE[value]}, {"valve_state": value}


CHANNEL_MAPPERS = {
    "sensor/operation": _operation,
    "sensor/gas": _gas,
    "sensor/concentration": _concentration,
    "sensor/self_test": _self_test,
    "valve/0/state": _valve,
}


def map_channel(channel: str, text: str) -> Mapped:
    """(fields, extras) for one Shelly Gas message; Ignored; or text saying what was wrong."""
    value = text.lower()
    if value == "unknown":
        return Ignored(f"shelly {channel} is unknown (sensor not ready)")
    mapper = CHANNEL_MAPPERS.get(channel)
    if mapper is None:
        return f"unsupported shelly channel {channel!r}"
    return mapper(value, text)


@dataclass(frozen=True, slots=True)
class Shelly:
    """The Shelly Gen1 adapter for one topic base (an AdapterDecoder with `ignores`)."""

    root: str = ""
    base: str = "shellies"

    @property
    def prefix(self) -> str:
        return join(self.root, self.base)

    def topics(self) -> list[str]:
        """One filter per Shelly Gas leaf: other Shellies on the same broker stay out of the ingest."""
        return [f"{self.prefix}/+/{channel}" for channel in CHANNELS]

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

    def ignores(self, topic: str) -> str | None:
        """Commands (ours or another client's) and announcements under the Shelly base."""
        split = self._split(topic)
        if split is None:
            return None
        shelly_id, channel = split
        if channel in COMMAND_CHANNELS or shelly_id in ("announce", "command"):
            return "a command or announcement under shellies/"
        return None

    def __call__(
        self, topic: str, payload: bytes, received_at: datetime, lookup: DeviceLookup, limits: Limits
    ) -> list[Decoded] | None:
        split = self._split(topic)
        if split is None:
            return None
        why = self.ignores(topic)
        if why is not None:
            return [Ignored(why)]
        shelly_id, channel = split
        if not shelly_id or channel not in CHANNELS:
            return [Reject(f"topic {topic!r} is not shellies/<id>/<{'|'.join(CHANNELS)}>")]
        valve = lookup.by_foreign_id(ADAPTER, f"{shelly_id}/{VALVE_SUFFIX}") if channel == "valve/0/state" else None
        device = valve or resolve(lookup, ADAPTER, shelly_id)
        if isinstance(device, Reject):
            return [device]
        text = scalar_text(payload, what=f"shelly {shelly_id!r} {channel}", device_id=device.id)
        if isinstance(text, Reject):
            return [text]
        if channel == "online":
            return [self._online(device, text, received_at)]
        if text == "":
            return [Ignored(f"shelly {channel} cleared (empty retained message)")]
        mapped = map_channel(channel, text)
        if isinstance(mapped, Ignored):
            return [mapped]
        if isinstance(mapped, str):
            return [Reject(f"shelly {shelly_id!r} {channel}: {mapped}", device.id)]
        fields, extras = mapped
        return [
            build_reading(
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
        ]

    def _online(self, device: Device, text: str, received_at: datetime) -> Decoded:
        if text == "":
            return Ignored("shelly online cleared (empty retained message)")
        if text.lower() not in ("true", "false"):
            return Reject(f"shelly {device.foreign_id!r} online must be true or false, got {text[:40]!r}", device.id)
        return DeviceStatus(device.id, text.lower() == "true", received_at)

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
