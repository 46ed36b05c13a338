"""Run a scenario against a broker in simulated (event) time.

Device clocks are fast-forwarded: a scenario starts in the past (by default 12 h ago) and its readings
carry event-time timestamps, published as fast as the bounded publisher allows (or at `speed` event
seconds per wall second), so an 8-hour charge takes seconds and the rules judge it by the readings'
own timestamps (DESIGN.md data flow 3). Every device has its own MQTT connection with its last will,
except devices behind a gateway, which speak through the gateway's connection (and are buffered by it
while it is offline).
"""

from __future__ import annotations

import heapq
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from core.domain import Adapter, DeviceKind
from simulators import formats
from simulators.formats import Out, Topics, Wire
from simulators.models import ChargingPort, Command, DeviceModel, Pack, SmokeDetector, make_model
from simulators.publisher import DEFAULT_MAX_INFLIGHT, MqttLink
from simulators.scenario import DeviceSpec, Scenario, Step, foreign_name, parse_duration

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a run sent, for the summary and for tests waiting on ingest."""

    scenario: str
    event_start: float
    event_end: float
    wall_s: float = 0.0
    published: int = 0
    readings: int = 0
    errors: int = 0
    unacked: int = 0
    topics: Counter[str] = field(default_factory=Counter)
    commands: list[tuple[str, str, bool]] = field(default_factory=list)  # (device, action, ok)
    retained: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.unacked == 0


@dataclass
class SimDevice:
    spec: DeviceSpec
    model: DeviceModel
    wire: Wire
    link: MqttLink | None = None
    offline: bool = False
    duplicate_every: int = 0
    reorder_window: int = 0
    reorder_buf: list[list[Out]] = field(default_factory=list)
    buffer: list[Out] = field(default_factory=list)
    sent: int = 0
    rng: random.Random = field(default_factory=random.Random)


class ScenarioRun:
    """One execution of a scenario; `run()` blocks until the timeline is done (or stop is set)."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        url: str,
        topics: Topics | None = None,
        seed: int | None = None,
        tag: str = "",
        now: float | None = None,
        speed: float | None = None,
        say: Callable[[str], None] | None = None,
        max_inflight: int = DEFAULT_MAX_INFLIGHT,
        linger_s: float = 0.0,
        id_map: dict[str, str] | None = None,
        wires: dict[str, tuple[Adapter, str | None]] | None = None,
    ) -> None:
        self.scenario = scenario
        self.url = url
        self.topics = topics or Topics()
        self.seed = scenario.seed if seed is None else seed
        self.tag = tag
        self.speed = speed if speed is not None else scenario.speed
        self.say = say or (lambda _line: None)
        self.max_inflight = max_inflight
        self.linger_s = linger_s
        self.id_map = id_map or {}
        self.wires = wires or {}  # scenario device id -> (adapter, foreign id) of the registry device it plays
        now = time.time() if now is None else now
        self.t0 = scenario.event_start(now)
        self.t_end = self.t0 + scenario.duration
        self.t = self.t0
        self.result = RunResult(scenario.name, self.t0, self.t_end)
        self.devices: dict[str, SimDevice] = {}
        self.commands: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.command_routes: dict[str, SimDevice] = {}
        self.links: list[MqttLink] = []
        self.infra: MqttLink | None = None

    # --- setup ---------------------------------------------------------------------------------------
    def _device_id(self, spec: DeviceSpec) -> str:
        return self.id_map.get(spec.id, spec.id)

    def _build(self) -> None:
        for spec in self.scenario.devices:
            kw: dict[str, Any] = dict(spec.options)
            kw["seed"] = self.seed
            kw["ts_style"] = spec.ts_style
            if spec.interval:
                kw["interval_s"] = spec.interval
            if spec.battery is not None:
                kw["battery"] = spec.battery
            device_id = self._device_id(spec)
            model = make_model(spec.kind, device_id, **kw)
            adapter, foreign = self.wires.get(spec.id, (spec.adapter, foreign_name(spec, self.tag)))
            wire = Wire(device_id, spec.kind, adapter, foreign, **spec.wire)
            self.devices[spec.id] = SimDevice(spec, model, wire, rng=random.Random(f"{self.seed}:{device_id}:wire"))  # noqa: S311

    def _make_link(self, dev: SimDevice, *, children: list[SimDevice]) -> MqttLink:
        status_on = formats.status(dev.wire, True, self.topics)
        on_connect = [status_on] + [formats.status(c.wire, True, self.topics) for c in children]
        subs = [formats.command_topic(d.wire, self.topics) for d in (dev, *children)]
        for d in (dev, *children):
            self.command_routes[formats.command_topic(d.wire, self.topics)] = d
            self.result.retained.add(formats.status(d.wire, True, self.topics).topic)
        link = MqttLink(
            self.url,
            client_id=f"sim-{self.tag or 'x'}-{dev.wire.device_id}"[:64],
            max_inflight=self.max_inflight,
            will=formats.status(dev.wire, False, self.topics),
            on_connect_messages=on_connect,
            subscriptions=subs,
            on_message=lambda topic, payload: self.commands.put((topic, payload)),
        )
        for out in on_connect:
            self.result.topics[out.topic] += 1
        link.start()
        self.links.append(link)
        return link

    def _children(self, dev: SimDevice) -> list[SimDevice]:
        return [d for d in self.devices.values() if d.spec.gateway == dev.spec.id]

    def _connect(self, dev: SimDevice) -> None:
        dev.link = self._make_link(dev, children=self._children(dev))

    # --- delivery ------------------------------------------------------------------------------------
    def _route(self, dev: SimDevice) -> SimDevice:
        return self.devices[dev.spec.gateway] if dev.spec.gateway else dev

    def _publish(self, link: MqttLink, out: Out) -> None:
        if link.publish(out):
            self.result.topics[out.topic] += 1
        if out.retain:
            self.result.retained.add(out.topic)

    def _deliver(self, dev: SimDevice, outs: list[Out]) -> None:
        dev.sent += 1
        if dev.duplicate_every and dev.sent % dev.duplicate_every == 0:
            outs = outs + outs  # a retransmission after a lost PUBACK: same ts and seq
        if dev.reorder_window > 1:
            dev.reorder_buf.append(outs)
            if len(dev.reorder_buf) < dev.reorder_window:
                return
            groups, dev.reorder_buf = dev.reorder_buf, []
            dev.rng.shuffle(groups)
            outs = [o for g in groups for o in g]
        self._send(dev, outs)

    def _send(self, dev: SimDevice, outs: list[Out]) -> None:
        via = self._route(dev)
        if via.offline or via.link is None or dev.offline:
            via.buffer.extend(outs)  # store and forward (a gateway holds its children's messages)
            return
        for out in outs:
            self._publish(via.link, out)

    def _report(self, dev: SimDevice, t: float) -> None:
        reading = dev.model.reading(t)
        if reading is None:
            return
        self.result.readings += 1
        self._deliver(dev, formats.telemetry(dev.wire, reading, self.topics))
        if dev.model.dead:  # the battery gave out after this last message: the broker sends its last will
            self.say(f"{dev.wire.device_id}: battery exhausted, device dies")
            self._drop_link(dev, with_will=True)

    # --- steps ---------------------------------------------------------------------------------------
    def _apply(self, step: Step, t: float) -> None:
        """What a timeline step does: its narration, a raw message, or the one verb it gives its device."""
        if step.say:
            self.say(step.say)
        dev = self.devices[step.device] if step.device else None
        if step.raw is not None:
            self._raw(dev, step.raw)
            return
        if dev is None:
            return
        for verb, applies_to, action in _STEP_ACTIONS:
            value = getattr(step, verb)
            given = bool(value) if verb in _FLAG_VERBS else value is not None
            if given and (applies_to is None or isinstance(dev.model, applies_to)):
                action(self, dev, value, step, t)
                return

    def _apply_set(self, dev: SimDevice, env: dict[str, float], _step: Step, t: float) -> None:
        """Set environment values at once."""
        dev.model.set_env(t, **env)

    def _apply_ramp(self, dev: SimDevice, targets: dict[str, float], step: Step, t: float) -> None:
        """Move environment values linearly to their targets over `over`."""
        dev.model.ramp_env(t, step.over or 0.0, **targets)

    def _apply_flap(self, dev: SimDevice, flap: dict[str, Any], _step: Step, t: float) -> None:
        """Swing an environment value between low and high, a square wave across a threshold."""
        dev.model.flap_env(
            t, str(flap["field"]), float(flap["low"]), float(flap["high"]), parse_duration(flap.get("period", 10))
        )

    def _apply_drift(self, dev: SimDevice, drift: dict[str, float], _step: Step, _t: float) -> None:
        """Let environment values drift by so much an hour."""
        for name, rate in drift.items():
            dev.model.set_drift(name, rate)

    def _apply_plug(self, dev: SimDevice, pack: dict[str, Any], step: Step, t: float) -> None:
        """Plug a pack into a charging port or socket."""
        model = dev.model
        if isinstance(model, ChargingPort):
            model.plug(t, Pack(**pack))
            return
        raise ValueError(f"{step.device} is a {model.kind}, not a charging port or socket")

    def _apply_unplug(self, dev: SimDevice, _unplug: bool, _step: Step, t: float) -> None:
        """Unplug a charging port's pack (_STEP_ACTIONS picks this verb for charging ports only)."""
        cast(ChargingPort, dev.model).unplug(t)

    def _apply_fault(self, dev: SimDevice, fault: str, _step: Step, _t: float) -> None:
        """A fault: of the pack on charge, else reported by the device with its next reading."""
        model = dev.model
        if isinstance(model, ChargingPort) and model.pack is not None:
            model.pack.fault = fault
        else:
            model.pending_flags["fault"] = fault

    def _apply_self_test(self, dev: SimDevice, _self_test: bool, _step: Step, t: float) -> None:
        """Press the test button: the device reports at once."""
        dev.model.pending_flags["test"] = True
        self._report(dev, t)

    def _apply_tamper(self, dev: SimDevice, tamper: bool, _step: Step, t: float) -> None:
        """Open or close a smoke detector's case (_STEP_ACTIONS picks this verb for smoke detectors only)."""
        cast(SmokeDetector, dev.model).tamper = tamper
        self._report(dev, t)

    def _apply_battery(self, dev: SimDevice, battery: dict[str, float], _step: Step, t: float) -> None:
        """Set the battery's charge and drain."""
        model = dev.model
        model._touch(t)
        if "pct" in battery:
            model.battery_pct = battery["pct"]
        if "drain_pct_per_day" in battery:
            model.drain_pct_per_day = battery["drain_pct_per_day"]

    def _apply_die(self, dev: SimDevice, _die: bool, _step: Step, _t: float) -> None:
        """The device stops for good; the broker publishes its last will."""
        dev.model.dead = True
        self._drop_link(dev, with_will=True)

    def _apply_offline(self, dev: SimDevice, _offline: bool, _step: Step, _t: float) -> None:
        """The device loses its connection (what it sends meanwhile is buffered)."""
        dev.offline = True
        self._drop_link(dev, with_will=True)

    def _apply_online(self, dev: SimDevice, _online: bool, _step: Step, _t: float) -> None:
        """The device reconnects and sends what it buffered."""
        dev.offline = False
        self._connect(dev)
        backlog, dev.buffer = dev.buffer, []
        link = dev.link
        if link is not None:
            for out in backlog:
                self._publish(link, out)

    def _apply_skew(self, dev: SimDevice, skew: float, _step: Step, _t: float) -> None:
        """Offset the device's clock."""
        dev.model.clock_offset_s = skew

    def _apply_duplicate(self, dev: SimDevice, every: int, _step: Step, _t: float) -> None:
        """Send every n-th message twice (0: stop)."""
        dev.duplicate_every = every

    def _apply_reorder(self, dev: SimDevice, window: int, _step: Step, _t: float) -> None:
        """Shuffle messages in windows of n (0 or 1: stop, sending what the window holds)."""
        if window <= 1 and dev.reorder_buf:
            groups, dev.reorder_buf = dev.reorder_buf, []
            self._send(dev, [o for g in groups for o in g])
        dev.reorder_window = window

    def _apply_interval(self, dev: SimDevice, interval: float, _step: Step, _t: float) -> None:
        """Change the device's report interval."""
        dev.model.interval_s = interval

    def _apply_report(self, dev: SimDevice, _report: bool, _step: Step, t: float) -> None:
        """An event-driven report right now."""
        self._report(dev, t)

    def _drop_link(self, dev: SimDevice, *, with_will: bool) -> None:
        if dev.link is not None:
            if with_will:  # the broker publishes it to ingest on our behalf
                self.result.topics[formats.status(dev.wire, False, self.topics).topic] += 1
            unacked = not dev.link.close(with_will=with_will)
            self._account(dev.link, unacked)
            self.links.remove(dev.link)
            dev.link = None

    def _raw(self, dev: SimDevice | None, raw: dict[str, Any]) -> None:
        if "topic" in raw:
            topic = str(raw["topic"]).format(prefix=self.topics.native_prefix)
        else:
            if dev is None:
                raise ValueError("a raw message without a topic needs a device")
            topic = f"{self.topics.native_prefix}/{dev.wire.device_id}/{raw.get('channel', 'telemetry')}"
        if "text" in raw:
            payload = str(raw["text"]).encode()
        else:
            body = raw.get("payload")
            if isinstance(body, dict) and body.get("ts") == "now":
                body = {**body, "ts": int(self.t * 1000)}
            payload = orjson.dumps(body)
        link = self._route(dev).link if dev is not None else None
        self._publish(link or self._infra(), Out(topic, payload))

    def _infra(self) -> MqttLink:
        if self.infra is None:
            self.infra = MqttLink(
                self.url, client_id=f"sim-{self.tag or 'x'}-infra", max_inflight=self.max_inflight
            ).start()
            self.links.append(self.infra)
        return self.infra

    # --- commands ------------------------------------------------------------------------------------
    def _handle_commands(self) -> None:
        while True:
            try:
                topic, payload = self.commands.get_nowait()
            except queue.Empty:
                return
            dev = self.command_routes.get(topic) or _route(self.command_routes, topic)
            if dev is None:
                continue
            try:
                command_id, action, _raw = formats.parse_command(dev.wire, payload, topic)
            except orjson.JSONDecodeError:
                log.warning("unreadable command on %s: %r", topic, payload[:80])
                continue
            result = dev.model.handle_command(self.t, Command(command_id or "", action))
            if result.ok and action == "close_valve":
                for other in self.devices.values():  # the supply is cut: gas in the room disperses
                    if other.spec.site == dev.spec.site and other.spec.kind is DeviceKind.GAS_DETECTOR:
                        other.model.ramp_env(self.t, 600, gas_lel=0.0)
            self.result.commands.append((dev.wire.device_id, action, result.ok))
            self.say(f"{dev.wire.device_id}: command {action} -> {'ok' if result.ok else 'refused'} ({result.detail})")
            state = {"relay": getattr(dev.model, "relay", None), "valve": getattr(dev.model, "valve", None)}
            state = {k: v for k, v in state.items() if v is not None}
            self._send(dev, formats.command_ack(dev.wire, command_id, result.ok, result.detail, state, self.topics))
            self._report(dev, self.t)  # the state change is reported at once, not at the next heartbeat

    # --- main loop -----------------------------------------------------------------------------------
    def _account(self, link: MqttLink, unacked: bool) -> None:
        self.result.published += link.stats.published
        self.result.errors += link.stats.errors
        if unacked:
            self.result.unacked += link.inflight

    def run(self, stop: threading.Event | None = None) -> RunResult:
        """Play the timeline; returns what was sent."""
        stop = stop or threading.Event()
        started = time.monotonic()
        self._build()
        self._start_devices()
        heap, order = self._schedule()
        try:
            self._play(heap, order, started, stop)
            self._flush_reorder_buffers()
            self._linger(stop)
            self._handle_commands()
        finally:
            self._close_links()
        self.result.wall_s = time.monotonic() - started
        return self.result

    def _start_devices(self) -> None:
        """Announce the Zigbee2MQTT bridge if a device needs it, connect every device not behind a gateway."""
        if any(d.wire.adapter is Adapter.ZIGBEE2MQTT for d in self.devices.values()):
            out = formats.bridge_state(True, self.topics)
            self._publish(self._infra(), out)
        for dev in self.devices.values():
            if dev.spec.gateway is None:
                self._connect(dev)
            if isinstance(dev.model, DeviceModel) and dev.spec.kind is DeviceKind.GATEWAY:
                dev.model.children = len(self._children(dev))  # type: ignore[attr-defined]

    def _schedule(self) -> tuple[list[tuple[float, int, int, Any]], int]:
        """The timeline's steps and each device's first report, as a heap by event time; and the next order."""
        heap: list[tuple[float, int, int, Any]] = []
        order = 0
        for step in self.scenario.timeline:
            heapq.heappush(heap, (self.t0 + step.at, 0, order, step))
            order += 1
        for dev in self.devices.values():
            phase = dev.rng.uniform(0, min(dev.model.interval_s, 5.0))
            heapq.heappush(heap, (self.t0 + phase, 1, order, dev))
            order += 1
        return heap, order

    def _play(self, heap: list[tuple[float, int, int, Any]], order: int, started: float, stop: threading.Event) -> None:
        """Apply steps and send reports in event-time order until the end of the scenario (or stop is set)."""
        while heap and not stop.is_set():
            t, _prio, _o, item = heapq.heappop(heap)
            if t > self.t_end:
                break
            self._pace(t, started, stop)
            self.t = t
            self._handle_commands()
            if isinstance(item, Step):
                self._apply(item, t)
                continue
            dev = item
            if dev.model.dead:
                continue
            self._report(dev, t)
            jitter = dev.rng.uniform(-0.02, 0.02) * dev.model.interval_s
            heapq.heappush(heap, (t + dev.model.interval_s + jitter, 1, order, dev))
            order += 1

    def _flush_reorder_buffers(self) -> None:
        """Send whatever a reorder window still holds."""
        for dev in self.devices.values():
            if dev.reorder_buf:
                groups, dev.reorder_buf = dev.reorder_buf, []
                self._send(dev, [o for g in groups for o in g])

    def _linger(self, stop: threading.Event) -> None:
        """Commands raised by what we sent arrive a moment later: stay connected for them (up to linger_s)."""
        wanted = {(self.id_map.get(c.device, c.device), c.action) for c in self.scenario.expect.commands}
        deadline = time.monotonic() + self.linger_s
        while time.monotonic() < deadline and not stop.is_set():
            self._handle_commands()
            if wanted and wanted <= {(d, a) for d, a, _ok in self.result.commands}:
                break
            stop.wait(0.05)

    def _close_links(self) -> None:
        """Close every connection, adding up what each published and what is left unacknowledged."""
        for link in list(self.links):
            unacked = not link.close()
            self._account(link, unacked)
        self.links.clear()

    def _pace(self, t: float, started: float, stop: threading.Event) -> None:
        if self.speed is None:
            return
        due = started + (t - self.t0) / self.speed
        while not stop.is_set():
            remaining = due - time.monotonic()
            if remaining <= 0:
                return
            self._handle_commands()
            stop.wait(min(remaining, 0.05))


# A step's verbs that are flags: given when true (every other verb is given when present; tamper: false is given).
_FLAG_VERBS = frozenset({"unplug", "self_test", "die", "offline", "online", "report"})

# Verb -> what it does, in the order ScenarioRun._apply looks for them (a step has one verb; Step does not count
# tamper: false as one, so another verb may come with it). A verb for one kind of model is passed over for others.
_StepAction = Callable[[ScenarioRun, SimDevice, Any, Step, float], None]
_STEP_ACTIONS: tuple[tuple[str, type[DeviceModel] | None, _StepAction], ...] = (
    ("set", None, ScenarioRun._apply_set),
    ("ramp", None, ScenarioRun._apply_ramp),
    ("flap", None, ScenarioRun._apply_flap),
    ("drift", None, ScenarioRun._apply_drift),
    ("plug", None, ScenarioRun._apply_plug),
    ("unplug", ChargingPort, ScenarioRun._apply_unplug),
    ("fault", None, ScenarioRun._apply_fault),
    ("self_test", None, ScenarioRun._apply_self_test),
    ("tamper", SmokeDetector, ScenarioRun._apply_tamper),
    ("battery", None, ScenarioRun._apply_battery),
    ("die", None, ScenarioRun._apply_die),
    ("offline", None, ScenarioRun._apply_offline),
    ("online", None, ScenarioRun._apply_online),
    ("skew", None, ScenarioRun._apply_skew),
    ("duplicate", None, ScenarioRun._apply_duplicate),
    ("reorder", None, ScenarioRun._apply_reorder),
    ("interval", None, ScenarioRun._apply_interval),
    ("report", None, ScenarioRun._apply_report),
)


def run_scenario(scenario: Scenario, *, url: str, topics: Topics | None = None, **kw: Any) -> RunResult:
    """Convenience wrapper: build and run."""
    return ScenarioRun(scenario, url=url, topics=topics, **kw).run()


def _route(routes: dict[str, Any], topic: str) -> Any:
    """The device whose command subscription (with '+' wildcards: ESPHome's <node>/+/+/command) matches a topic."""
    parts = topic.split("/")
    for sub, dev in routes.items():
        pattern = sub.split("/")
        same = "+" in pattern and len(pattern) == len(parts)
        if same and all(p in ("+", t) for p, t in zip(pattern, parts, strict=True)):
            return dev
    return None
