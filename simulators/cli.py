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
    """One line per library scenario: name, title, expected alarms; then the people's field day."""
    for name, s in library().items():
        alarms = ", ".join(sorted(s.alarm_types)) or "none"
        out.write(f"{name:28} {s.title}  [expects: {alarms}]\n")
    out.write(
        f"{'--field-day':28} People over the API: a patrol round's failed item becomes a work order, a resident's QR "
        "report is followed to its outcome, a drill is acknowledged  [needs: --api URL --token ADMIN]\n"
    )


def run_field_day(
    api: str,
    token: str,
    *,
    worker_token: str | None = None,
    wait_s: float = 0.0,
    err: TextIO = sys.stderr,
    out: TextIO = sys.stdout,
) -> int:
    """`gridwatch simulate --field-day`: the field day against a running API; 0 only when every step succeeded.
    A day that cannot start (API unreachable, token refused, no shop or building) raises FieldDayError."""
    from simulators.fieldday import FieldDay

    err.write(f"[simulate] field day against {api.rstrip('/')}\n")
    err.flush()
    day = FieldDay(api, token, worker_token=worker_token, wait_s=wait_s, say=lambda line: _say(err, line))
    result = day.run()
    out.write(f"field day at {result.base}: {sum(s.ok for s in result.steps)} of {len(result.steps)} stories done\n")
    for step in result.steps:
        out.write(f"  {'ok  ' if step.ok else 'FAIL'} {step.line}\n")
    return 0 if result.ok else 1


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
            raise ConfigError(
                f"scenario {scenario.name} needs a {spec.kind.value} ({spec.location.value}); "
                "the registry has none left"
            )
        pick = min(candidates, key=rank)
        taken.add(pick.id)
        mapping[spec.id] = pick
    return mapping


def _write_scenario_registry(scenario: Scenario, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(registry_document(scenario), sort_keys=False, allow_unicode=True), encoding="utf-8")


def _say(err: TextIO, line: str) -> None:
    err.write(f"[simulate]   {line}\n")
    err.flush()


FOREVER = "forever"


class _FleetThread(threading.Thread):
    """Runs a fleet until fleet_stop is set (or its duration has passed) and keeps its summary."""

    def __init__(self, fleet: Fleet, fleet_stop: threading.Event) -> None:
        super().__init__(name="fleet", daemon=True)
        self.fleet = fleet
        self.fleet_stop = fleet_stop
        self.summary: FleetSummary | None = None

    def run(self) -> None:
        self.summary = self.fleet.run(self.fleet_stop)


def run_simulate(
    opts: SimulateOptions, *, err: TextIO = sys.stderr, out: TextIO = sys.stdout, stop: threading.Event | None = None
) -> int:
    """Do what the options say; returns the process exit code."""
    stop = stop or threading.Event()
    topics = Topics(native_prefix=opts.topic_prefix)
    scenario = get_scenario(opts.scenario) if opts.scenario else None
    # "forever": a fleet that runs until stopped (docker-compose's sim profile); default 60 s without a scenario.
    forever = opts.duration == FOREVER
    duration_s = parse_duration(opts.duration) if opts.duration and not forever else None

    fleet_devices = _select_fleet_devices(opts)
    if opts.write_registry is not None:
        _write_registry_file(opts, opts.write_registry, fleet_devices, scenario, out)
        return 0

    if scenario is None and not fleet_devices:
        raise ConfigError(
            "nothing to simulate: give --scenario NAME, --devices N or --registry FILE "
            "(gridwatch simulate --list shows the scenarios)"
        )

    picks = map_onto_registry(scenario, fleet_devices) if scenario is not None and opts.registry else {}
    scenario_ids = {d.id for d in picks.values()}
    background = [d for d in fleet_devices if d.id not in scenario_ids]
    run_fleet = bool(background) and (opts.devices is not None or scenario is None)

    fleet_thread: _FleetThread | None = None
    fleet_stop = threading.Event()
    if run_fleet:
        fleet = Fleet(
            opts.mqtt_url,
            background,
            rate=opts.rate,
            seed=opts.seed,
            topics=topics,
            connections=opts.connections,
            status=opts.status,
            progress=err,
            duration_s=duration_s if duration_s is not None or forever else (None if scenario else 60.0),
        )
        fleet.connect()  # here, so an unreachable broker is an error of the command, not of a thread
        fleet_thread = _FleetThread(fleet, fleet_stop)
        fleet_thread.start()

    result: RunResult | None = None
    try:
        if scenario is not None:
            result = _play_scenario(opts, scenario, picks, topics, err, stop)
            if fleet_thread is not None and duration_s is None:
                fleet_stop.set()
        if fleet_thread is not None:
            _wait_for_fleet(fleet_thread, stop, fleet_stop)
    finally:
        fleet_stop.set()
        if fleet_thread is not None:
            fleet_thread.join(30)

    fleet_summary = fleet_thread.summary if fleet_thread is not None else None
    ok = True
    if result is not None:
        ok = _report_scenario(result, scenario, out) and ok
    if fleet_summary is not None:
        ok = _report_fleet(fleet_summary, out) and ok
    elif run_fleet:
        ok = False  # the fleet thread died

    return 0 if ok else 1


def _select_fleet_devices(opts: SimulateOptions) -> list[FleetDevice]:
    """The fleet's devices: the registry's (the first --devices of them), else --devices synthetic ones, else none."""
    if opts.registry is not None:
        fleet_devices = devices_from_registry(opts.registry)
        if opts.devices is not None:
            fleet_devices = fleet_devices[: opts.devices]
        return fleet_devices
    if opts.devices:
        return synthetic_devices(opts.devices, seed=opts.seed)
    return []


def _write_registry_file(
    opts: SimulateOptions, path: Path, fleet_devices: list[FleetDevice], scenario: Scenario | None, out: TextIO
) -> None:
    """--write-registry: the synthetic fleet's registry, else the one the scenario needs."""
    if fleet_devices and opts.registry is None:
        write_registry(fleet_devices, path)
        out.write(
            f"wrote a registry of {len(fleet_devices)} devices to {path} (load it first: gridwatch load {path})\n"
        )
    elif scenario is not None:
        _write_scenario_registry(scenario, path)
        out.write(f"wrote the registry scenario {scenario.name} needs to {path}\n")
    else:
        raise ConfigError("--write-registry needs --devices N (synthetic fleet) or --scenario NAME")


def _play_scenario(
    opts: SimulateOptions,
    scenario: Scenario,
    picks: dict[str, FleetDevice],
    topics: Topics,
    err: TextIO,
    stop: threading.Event,
) -> RunResult:
    """Run the scenario, its devices played by the registry devices picked for them (if any)."""
    err.write(
        f"[simulate] scenario {scenario.name}: {scenario.title} ({scenario.duration / 3600:.2f} h of event time)\n"
    )
    for spec_id, d in picks.items():
        err.write(
            f"[simulate]   {spec_id} is played by {d.id} ({d.kind.value}, {d.location.value}, {d.adapter.value})\n"
        )
    run = ScenarioRun(
        scenario,
        url=opts.mqtt_url,
        topics=topics,
        seed=opts.seed,
        speed=opts.speed,
        id_map={spec_id: d.id for spec_id, d in picks.items()},
        wires={spec_id: (d.adapter, d.foreign_id) for spec_id, d in picks.items()},
        linger_s=1.0,
        say=lambda line: _say(err, line),
    )
    return run.run(stop)


def _wait_for_fleet(fleet_thread: threading.Thread, stop: threading.Event, fleet_stop: threading.Event) -> None:
    """Wait for the fleet's thread to end, passing stop on to the fleet."""
    while fleet_thread.is_alive():
        if stop.wait(0.2):
            fleet_stop.set()
        fleet_thread.join(0.1)


def _report_scenario(result: RunResult, scenario: Scenario | None, out: TextIO) -> bool:
    """The scenario run's summary; whether everything it published was acknowledged."""
    out.write(
        f"scenario {result.scenario}: {result.readings} readings, {result.published} messages in "
        f"{result.wall_s:.1f} s; errors {result.errors}, unacknowledged {result.unacked}; "
        f"commands obeyed: {', '.join(f'{d} {a}' for d, a, _ in result.commands) or 'none'}\n"
    )
    expected = ", ".join(sorted(scenario.alarm_types)) if scenario else ""
    out.write(f"  expected alarms: {expected or 'none'}\n")
    return result.ok


def _report_fleet(summary: FleetSummary, out: TextIO) -> bool:
    """The fleet's summary, with a note when it fell short of its rate; whether it published without loss."""
    for line in summary.lines():
        out.write(line + "\n")
    if summary.achieved_rate < 0.95 * summary.rate and summary.seconds > 2:
        out.write(
            f"note: the broker and this machine sustained {summary.achieved_rate:.0f} msg/s, "
            f"below the {summary.rate:g} msg/s asked for (publishing is bounded, never lossy)\n"
        )
    return summary.ok
