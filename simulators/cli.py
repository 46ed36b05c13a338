"""`gridwatch simulate`: run a library scenario in simulated time, a live fleet, or both at once.

core/cli.py declares the options and calls run_simulate lazily (nothing imports simulators otherwise).
Progress goes to stderr, the summary to stdout; the exit code is 1 when anything failed to publish.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.errors import ConfigError
from simulators.fleet import Fleet, FleetDevice, FleetSummary, devices_from_registry, synthetic_devices, write_registry
from simulators.formats import Topics
from simulators.runner import RunResult, ScenarioRun
from simulators.scenario import DeviceSpec, Scenario, get_scenario, library, parse_duration, registry_document


@dataclass
class SimulateOptions:
    mqtt_url: str
    topic_prefix: str = "gw/v1"
    registry: Path | None = None
    devices: int | None = None
    rate: float = 100.0
    scenario: str | None = None
    seed: int = 1
    duration: str | None = None
    write_registry: Path | None = None
    connections: int | None = None
    speed: float | None = None
    status: bool | None = None


def list_scenarios(out: TextIO = sys.stdout) -> None:
    """One line per library scenario: name, title, expected alarms."""
    for name, s in library().items():
        alarms = ", ".join(sorted(s.alarm_types)) or "none"
        out.write(f"{name:28} {s.title}  [expects: {alarms}]\n")


def map_onto_registry(scenario: Scenario, devices: list[FleetDevice]) -> dict[str, FleetDevice]:
    """Scenario device id -> a registry device of the same kind: same adapter and location if possible,
    else any location, else any adapter (the device then speaks its own dialect)."""
    taken: set[str] = set()
    mapping: dict[str, FleetDevice] = {}
    for spec in scenario.devices:
        candidates = [d for d in devices if d.kind is spec.kind and d.id not in taken]

        def rank(d: FleetDevice, spec: DeviceSpec = spec) -> tuple[bool, bool]:
            return (d.adapter is not spec.adapter, d.location is not spec.location)

        if not candidates:
            raise ConfigError(f"scenario {scenario.name} needs a {spec.kind.value} ({spec.location.value}); "
                              "the registry has none left")
        pick = min(candidates, key=rank)
        taken.add(pick.id)
        mapping[spec.id] = pick
    return mapping


def _write_scenario_registry(scenario: Scenario, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(registry_document(scenario), sort_keys=False, allow_unicode=True),
                    encoding="utf-8")


def _say(err: TextIO, line: str) -> None:
    err.write(f"[simulate]   {line}\n")
    err.flush()


FOREVER = "forever"


def run_simulate(opts: SimulateOptions, *, err: TextIO = sys.stderr, out: TextIO = sys.stdout,
                 stop: threading.Event | None = None) -> int:
    """Do what the options say; returns the process exit code."""
    stop = stop or threading.Event()
    topics = Topics(native_prefix=opts.topic_prefix)
    scenario = get_scenario(opts.scenario) if opts.scenario else None
    # "forever": a fleet that runs until stopped (docker-compose's sim profile); default 60 s without a scenario.
    forever = opts.duration == FOREVER
    duration_s = parse_duration(opts.duration) if opts.duration and not forever else None

    fleet_devices: list[FleetDevice] = []
    if opts.registry is not None:
        fleet_devices = devices_from_registry(opts.registry)
        if opts.devices is not None:
            fleet_devices = fleet_devices[: opts.devices]
    elif opts.devices:
        fleet_devices = synthetic_devices(opts.devices, seed=opts.seed)

    if opts.write_registry is not None:
        if fleet_devices and opts.registry is None:
            write_registry(fleet_devices, opts.write_registry)
            out.write(f"wrote a registry of {len(fleet_devices)} devices to {opts.write_registry} "
                      f"(load it first: gridwatch load {opts.write_registry})\n")
        elif scenario is not None:
            _write_scenario_registry(scenario, opts.write_registry)
            out.write(f"wrote the registry scenario {scenario.name} needs to {opts.write_registry}\n")
        else:
            raise ConfigError("--write-registry needs --devices N (synthetic fleet) or --scenario NAME")
        return 0

    if scenario is None and not fleet_devices:
        raise ConfigError("nothing to simulate: give --scenario NAME, --devices N or --registry FILE "
                          "(gridwatch simulate --list shows the scenarios)")

    picks = map_onto_registry(scenario, fleet_devices) if scenario is not None and opts.registry else {}
    id_map = {spec_id: d.id for spec_id, d in picks.items()}
    wires = {spec_id: (d.adapter, d.foreign_id) for spec_id, d in picks.items()}
    scenario_ids = set(id_map.values())
    background = [d for d in fleet_devices if d.id not in scenario_ids]
    run_fleet = bool(background) and (opts.devices is not None or scenario is None)

    fleet_summary: FleetSummary | None = None
    fleet_thread: threading.Thread | None = None
    fleet_stop = threading.Event()
    if run_fleet:
        fleet = Fleet(opts.mqtt_url, background, rate=opts.rate, seed=opts.seed, topics=topics,
                      connections=opts.connections, status=opts.status, progress=err,
                      duration_s=duration_s if duration_s is not None or forever else (None if scenario else 60.0))
        fleet.connect()  # here, so an unreachable broker is an error of the command, not of a thread

        def _fleet() -> None:
            nonlocal fleet_summary
            fleet_summary = fleet.run(fleet_stop)

        fleet_thread = threading.Thread(target=_fleet, name="fleet", daemon=True)
        fleet_thread.start()

    result: RunResult | None = None
    try:
        if scenario is not None:
            err.write(f"[simulate] scenario {scenario.name}: {scenario.title} "
                      f"({scenario.duration / 3600:.2f} h of event time)\n")
            for spec_id, d in picks.items():
                err.write(f"[simulate]   {spec_id} is played by {d.id} ({d.kind.value}, {d.location.value}, "
                          f"{d.adapter.value})\n")
            run = ScenarioRun(scenario, url=opts.mqtt_url, topics=topics, seed=opts.seed, speed=opts.speed,
                              id_map=id_map, wires=wires, linger_s=1.0,
                              say=lambda line: _say(err, line))
            result = run.run(stop)
            if fleet_thread is not None and duration_s is None:
                fleet_stop.set()
        if fleet_thread is not None:
            while fleet_thread.is_alive():
                if stop.wait(0.2):
                    fleet_stop.set()
                fleet_thread.join(0.1)
    finally:
        fleet_stop.set()
        if fleet_thread is not None:
            fleet_thread.join(30)

    ok = True
    if result is not None:
        out.write(f"scenario {result.scenario}: {result.readings} readings, {result.published} messages in "
                  f"{result.wall_s:.1f} s; errors {result.errors}, unacknowledged {result.unacked}; "
                  f"commands obeyed: {', '.join(f'{d} {a}' for d, a, _ in result.commands) or 'none'}\n")
        expected = ", ".join(sorted(scenario.alarm_types)) if scenario else ""
        out.write(f"  expected alarms: {expected or 'none'}\n")
        ok = ok and result.ok
    if fleet_summary is not None:
        for line in fleet_summary.lines():
            out.write(line + "\n")
        if fleet_summary.achieved_rate < 0.95 * fleet_summary.rate and fleet_summary.seconds > 2:
            out.write(f"note: the broker and this machine sustained {fleet_summary.achieved_rate:.0f} msg/s, "
                      f"below the {fleet_summary.rate:g} msg/s asked for (publishing is bounded, never lossy)\n")
        ok = ok and fleet_summary.ok
    elif run_fleet:
        ok = False  # the fleet thread died

    return 0 if ok else 1

