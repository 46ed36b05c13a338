"""A short narrated tour for `gridwatch demo`: a kitchen gas leak within a few seconds, an e-bike charged
in a stairwell (fast-forwarded), and a device going offline, over background telemetry from a handful of
healthy devices. One printed line per scenario step; stops cleanly when `stop` is set.

Each story is a Scenario built here from the registry's own devices and played by ScenarioRun, so the
demo exercises exactly what the scenario tests do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import orjson

from core.domain import DeviceKind, Location
from simulators.formats import Out
from simulators.models import DeviceModel, make_model
from simulators.publisher import MqttLink, PublishError
from simulators.runner import ScenarioRun
from simulators.scenario import Scenario

log = logging.getLogger(__name__)

Say = Callable[[str], None]
DeviceRow = tuple[str, str, str]  # (device_id, kind, location)


def _pick(
    devices: Sequence[DeviceRow],
    kinds: Sequence[DeviceKind],
    locations: Sequence[Location] = (),
    taken: set[str] | None = None,
) -> str | None:
    taken = taken if taken is not None else set()
    pool = [d for d in devices if d[1] in {k.value for k in kinds} and d[0] not in taken]
    preferred = [d for d in pool if d[2] in {loc.value for loc in locations}]
    if not (preferred or pool):
        return None
    pick = (preferred or pool)[0]
    taken.add(pick[0])
    return pick[0]


def _leak(device_id: str) -> Scenario:
    # Event time runs 6x wall time, ending before now: the detector reports every 3 s of event time.
    return Scenario.model_validate(
        {
            "name": "tour_kitchen_leak",
            "title": "Kitchen gas leak",
            "start": 150,
            "duration": 120,
            "speed": 6,
            "devices": [
                {
                    "id": "leak",
                    "kind": "gas_detector",
                    "location": "kitchen",
                    "interval": 3,
                    "options": {"response_s": 3},
                }
            ],
            "timeline": [
                {
                    "at": 3,
                    "device": "leak",
                    "ramp": {"gas_lel": 40},
                    "over": 12,
                    "say": f"{device_id}: the hob is left on unlit, gas is building up in the kitchen",
                },
                {"at": 20, "say": f"{device_id}: 40 %LEL, well past the 25 %LEL alarm level"},
                {
                    "at": 60,
                    "device": "leak",
                    "ramp": {"gas_lel": 0},
                    "over": 20,
                    "say": f"{device_id}: a neighbour opens the window, the gas disperses",
                },
            ],
            "expect": {"alarms": [{"alarm_type": "gas_leak"}]},
        }
    )


def _stairwell(device_id: str, kind: str) -> Scenario:
    # 48 minutes of an evening fast-forwarded 300x (about 10 s): the readings carry their event times.
    return Scenario.model_validate(
        {
            "name": "tour_stairwell_charge",
            "title": "E-bike charged in a stairwell",
            "start": 3000,
            "duration": 2880,
            "speed": 300,
            "devices": [{"id": "socket", "kind": kind, "location": "stairwell", "interval": 60}],
            "timeline": [
                {
                    "at": 60,
                    "device": "socket",
                    "plug": {"soc": 0.2, "bulk_w": 150},
                    "say": f"{device_id}: an e-bike is plugged in on the stairs (fast-forwarding 48 minutes)",
                },
                {"at": 1860, "say": f"{device_id}: 30 minutes of ~150 W: e-bike charging in an escape route"},
            ],
            "expect": {"alarms": [{"alarm_type": "ebike_indoor_charging"}]},
        }
    )


def _offline(device_id: str, kind: str, location: str) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "tour_offline",
            "title": "A device goes offline",
            "start": 60,
            "duration": 20,
            "speed": 2,
            "devices": [{"id": "dying", "kind": kind, "location": location, "interval": 4}],
            "timeline": [
                {
                    "at": 12,
                    "device": "dying",
                    "die": True,
                    "say": f"{device_id}: loses power; the broker publishes its last will (offline)",
                },
            ],
            "expect": {"alarms": [{"alarm_type": "offline"}]},
        }
    )


class Background(threading.Thread):
    """Normal live telemetry from a few healthy devices over one shared connection (ts = now)."""

    def __init__(
        self,
        url: str,
        prefix: str,
        devices: Sequence[DeviceRow],
        stop: threading.Event,
        *,
        every_s: float = 3.0,
        seed: int = 7,
    ) -> None:
        super().__init__(name="tour-background", daemon=True)
        self.url = url
        self.prefix = prefix
        self.stop = stop
        self.every_s = every_s
        self.models: list[DeviceModel] = [
            make_model(kind, device_id, seed=seed, interval_s=every_s) for device_id, kind, _location in devices
        ]
        self.sent = 0

    def run(self) -> None:
        try:
            link = MqttLink(self.url, client_id=f"tour-bg-{int(time.time())}").start()
        except PublishError as exc:
            log.warning("background telemetry not started: %s", exc)
            return
        try:
            while not self.stop.is_set():
                for model in self.models:
                    reading = model.reading(time.time())
                    if reading is not None:
                        link.publish(Out(f"{self.prefix}/{model.device_id}/telemetry", orjson.dumps(reading)))
                        self.sent += 1
                self.stop.wait(self.every_s)
        finally:
            link.close()


def plan(devices: Sequence[DeviceRow]) -> tuple[list[tuple[Scenario, dict[str, str]]], list[DeviceRow]]:
    """The stories the registry can tell (with their device mapping), and the background devices."""
    taken: set[str] = set()
    stories: list[tuple[Scenario, dict[str, str]]] = []
    gas = _pick(devices, [DeviceKind.GAS_DETECTOR], [Location.KITCHEN], taken)
    if gas:
        stories.append((_leak(gas), {"leak": gas}))
    socket = _pick(
        devices, [DeviceKind.SMART_SOCKET, DeviceKind.CHARGING_PORT], [Location.STAIRWELL, Location.CORRIDOR], taken
    )
    if socket:
        kind = next(d[1] for d in devices if d[0] == socket)
        stories.append((_stairwell(socket, kind), {"socket": socket}))
    dying = _pick(devices, [DeviceKind.SMOKE_DETECTOR, DeviceKind.CO_ALARM, DeviceKind.GAS_DETECTOR], (), taken)
    if dying:
        row = next(d for d in devices if d[0] == dying)
        stories.append((_offline(dying, row[1], row[2]), {"dying": dying}))
    quiet = {DeviceKind.GAS_DETECTOR.value, DeviceKind.SMOKE_DETECTOR.value, DeviceKind.CO_ALARM.value}
    background = [d for d in devices if d[0] not in taken and d[1] in quiet][:5]
    return stories, background


def run_tour(
    mqtt_url: str,
    topic_prefix: str,
    devices: Sequence[DeviceRow],
    stop: threading.Event,
    *,
    say: Say = print,
    seed: int = 7,
) -> None:
    """Play the tour, then keep the background telemetry going until stop is set."""
    from simulators.formats import Topics

    stories, background = plan(devices)
    bg = Background(mqtt_url, topic_prefix, background, stop, seed=seed)
    bg.start()
    if background:
        say(
            f"  ⚙ background: {len(background)} healthy devices report every few seconds "
            f"({', '.join(d[0] for d in background)})"
        )
    topics = Topics(native_prefix=topic_prefix)
    for scenario, id_map in stories:
        if stop.is_set():
            break
        say(f"▶ {scenario.title}")
        run = ScenarioRun(
            scenario,
            url=mqtt_url,
            topics=topics,
            seed=seed,
            id_map=id_map,
            say=lambda line: say(f"  ⚙ {line}"),
            linger_s=1.0,
        )
        try:
            result = run.run(stop)
        except PublishError as exc:
            say(f"  ✗ {scenario.title}: {exc}")
            continue
        say(
            f"  ✓ {scenario.title}: {result.readings} readings sent"
            + (f"; device obeyed {', '.join(a for _d, a, _ok in result.commands)}" if result.commands else "")
        )
    if not stories:
        say("  (the registry has no native gas detector, socket or detector to tour)")
    stop.wait()
    bg.join(timeout=5)
