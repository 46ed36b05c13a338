"""Issue 7, must show 2: every scenario of the library runs end to end (simulator -> real Mosquitto ->
ingest -> rules -> PostgreSQL) and produces exactly the alarms and rejects its file declares.

A scenario whose alarm types are not in the loaded rule set yet (or whose bridge adapter is not
registered yet) is a strict xfail: it starts failing as XPASS the day the rule lands, which says
"remove the mark" (here: nothing to remove, the mark is computed)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest

from app.services import Running, start_services
from core import repo as core_repo
from core.domain import Adapter, Severity
from core.registry import RegistryIn
from core.settings import Settings
from ingest import adapters
from ingest.worker import subscriptions
from rules.ruleset import load_rules
from simulators.formats import Topics
from simulators.publisher import clear_retained
from simulators.runner import RunResult, ScenarioRun
from simulators.scenario import Scenario, library, registry_document
from tests.conftest import Services
from tests.support import wait_for

SCENARIOS = library()
RULE_TYPES = {rule.alarm_type for rule in load_rules().rules}


def registered_adapters() -> set[Adapter]:
    """Bridge adapters whose decoder is wired into ingest (native always is)."""
    found = {Adapter.NATIVE}
    for decoder in adapters.DECODERS:
        module = getattr(decoder, "__module__", None) or type(decoder).__module__
        for adapter in Adapter:
            if module and module.endswith("." + adapter.value):
                found.add(adapter)
    return found


def pending_reason(scenario: Scenario) -> str | None:
    """Why this scenario cannot pass yet: a rule or an adapter that does not exist."""
    missing_rules = sorted(scenario.alarm_types - RULE_TYPES)
    missing_adapters = sorted(a.value for a in scenario.adapters - registered_adapters())
    reasons = []
    if missing_rules:
        reasons.append(f"rule {', '.join(missing_rules)} not implemented yet")
    if missing_adapters:
        reasons.append(f"adapter {', '.join(missing_adapters)} not registered in ingest yet")
    return "; ".join(reasons) or None


def scenario_params() -> list[Any]:
    params = []
    for name, scenario in SCENARIOS.items():
        reason = pending_reason(scenario)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture
def ingest(settings: Settings) -> Iterator[Running]:
    r = start_services(settings, ("ingest", "rules"))
    wait_for(r.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield r
    r.stop()


def load_scenario_registry(settings: Settings, scenario: Scenario, tag: str) -> None:
    registry = RegistryIn.model_validate(registry_document(scenario, tag=tag))
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=registry)


def expected_deliveries(result: RunResult, settings: Settings) -> int:
    """How many of the messages we published ingest subscribes to (so it must process them)."""
    subs = [s.split("/", 2)[2] if s.startswith("$share/") else s for s in subscriptions(settings)]
    return sum(n for topic, n in result.topics.items() if any(mqtt.topic_matches_sub(s, topic) for s in subs))


def alarms_of(settings: Settings) -> list[dict[str, Any]]:
    with psycopg.connect(settings.dsn) as conn:
        rows = conn.execute("SELECT id, device_id, type, severity FROM alarm ORDER BY id").fetchall()
        events = conn.execute("SELECT alarm_id, kind FROM alarm_event ORDER BY id").fetchall()
    out = []
    for alarm_id, device_id, alarm_type, severity in rows:
        out.append(
            {
                "device": device_id,
                "type": alarm_type,
                "severity": severity,
                "events": [kind for a, kind in events if a == alarm_id],
            }
        )
    return out


def rejects_of(settings: Settings) -> list[str]:
    """The rejects of invalid messages; records of messages that are not device data (e.g. a bridge/state with no
    gateway registered to record it, issue 19) are kept in ingest_reject too but are no scenario's concern."""
    with psycopg.connect(settings.dsn) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT reason FROM ingest_reject WHERE reason NOT LIKE 'not device data:%%' ORDER BY id"
            ).fetchall()
        ]


def check_alarms(scenario: Scenario, got: list[dict[str, Any]]) -> list[str]:
    """Exactly the declared alarms: every expected one present (severity, events), nothing else."""
    problems = []
    pool = list(got)
    for exp in scenario.expect.alarm_list:
        match = next(
            (a for a in pool if a["type"] == exp.alarm_type and (exp.device is None or a["device"] == exp.device)), None
        )
        if match is None:
            problems.append(f"missing alarm {exp.alarm_type} on {exp.device or 'any device'}")
            continue
        pool.remove(match)
        if exp.severity is not None and match["severity"] != int(Severity.parse(exp.severity)):
            problems.append(
                f"{exp.alarm_type} on {match['device']}: severity {Severity(match['severity']).label}, "
                f"expected {exp.severity}"
            )
        if exp.events is not None:
            kinds = [k for k in match["events"] if k in ("raised", "cleared", "reactivated")]
            if kinds != exp.events:
                problems.append(f"{exp.alarm_type} on {match['device']}: events {kinds}, expected {exp.events}")
    problems += [f"unexpected alarm {a['type']} on {a['device']}" for a in pool]
    return problems


def check_rejects(scenario: Scenario, got: list[str]) -> list[str]:
    problems = []
    pool = list(got)
    for exp in scenario.expect.reject_list:
        hits = [r for r in pool if exp.reason in r][: exp.count]
        if len(hits) < exp.count:
            problems.append(f"expected {exp.count} reject(s) with {exp.reason!r}, got {len(hits)}")
        for hit in hits:
            pool.remove(hit)
    problems += [f"unexpected reject: {r}" for r in pool]
    return problems


@pytest.mark.parametrize("name", scenario_params())
def test_scenario(name: str, services: Services, settings: Settings, ingest: Running) -> None:
    scenario = SCENARIOS[name]
    tag = uuid.uuid4().hex[:6]
    load_scenario_registry(settings, scenario, tag)
    topics = Topics(native_prefix=settings.topic_prefix)
    run = ScenarioRun(
        scenario, url=services.mqtt_url, topics=topics, tag=tag, linger_s=10.0 if scenario.expect.commands else 0.5
    )
    try:
        result = run.run()
        assert result.ok, f"publishing failed: {result.errors} errors, {result.unacked} unacknowledged"
        worker = ingest.parts["ingest"]
        target = expected_deliveries(result, settings)
        wait_for(lambda: worker.processed >= target, timeout=30, what=f"ingest to process {target} messages")
        # transitions raised by commands and their confirmations arrive a moment later
        time.sleep(0.3)
        wait_for(worker.lanes.empty, timeout=10, what="ingest lanes drained")
        problems = check_alarms(scenario, alarms_of(settings)) + check_rejects(scenario, rejects_of(settings))
        obeyed = {(d, a) for d, a, ok in result.commands if ok}
        problems += [
            f"device {c.device} never obeyed {c.action}"
            for c in scenario.expect.commands
            if (c.device, c.action) not in obeyed
        ]
        print(f"{name}: commands {result.commands}; {result.readings} readings, {result.published} messages")
    finally:
        clear_retained(services.mqtt_url, sorted(run.result.retained))
    assert not problems, f"{name}: " + "; ".join(problems)


def test_library_covers_the_issue() -> None:
    """The library holds the stories issue 7 lists, each declaring its expectations."""
    wanted = {
        "kitchen_gas_leak",
        "lpg_cylinder_leak",
        "co_charcoal_stove",
        "cooking_smoke",
        "real_fire",
        "ebike_stairwell_overnight",
        "charger_no_cutoff",
        "thermal_runaway_precursor",
        "sensor_drift",
        "flapping_threshold",
        "device_dying",
        "gateway_outage",
        "clock_skew",
        "duplicate_out_of_order",
        "malformed_messages",
    }
    assert wanted <= set(SCENARIOS)
    for scenario in SCENARIOS.values():
        assert scenario.duration <= scenario.start, scenario.name
    false_alarms = [s.name for s in SCENARIOS.values() if s.expect.alarms == "none"]
    assert {"cooking_smoke", "flapping_threshold"} <= set(false_alarms)
    speaking = {a for s in SCENARIOS.values() for a in s.adapters}
    assert speaking == set(Adapter), "every adapter format is exercised by some scenario"


def test_pending_scenarios_are_marked_by_missing_rule_or_adapter() -> None:
    """The strict-xfail mark is computed: a scenario expecting an alarm type no loaded rule raises (or
    speaking a bridge no adapter decodes) is pending; the mark vanishes when the rule or adapter lands."""
    from simulators.scenario import parse_scenario

    base = {
        "name": "p",
        "title": "t",
        "start": "1h",
        "duration": "10m",
        "devices": [{"id": "d", "kind": "gas_detector", "location": "kitchen"}],
    }
    missing = parse_scenario(
        {**base, "expect": {"alarms": [{"alarm_type": "gas_leak"}, {"alarm_type": "no_such_alarm"}]}}, "t"
    )
    assert pending_reason(missing) == "rule no_such_alarm not implemented yet"
    present = parse_scenario({**base, "expect": {"alarms": [{"alarm_type": "gas_leak"}]}}, "t")
    assert pending_reason(present) is None
    assert registered_adapters() == set(Adapter), "every bridge adapter is wired into ingest"
