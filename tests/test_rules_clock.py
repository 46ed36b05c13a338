"""Issue 23, finding 2 ("a fast clock blinds the rules"): device timestamps up to GRIDWATCH_MAX_CLOCK_SKEW_S ahead are
accepted, and after one such reading every later, correctly stamped reading used to be stored but never judged:
a detector whose clock runs 5 minutes fast reported 45 %LEL and raised nothing. Now a reading whose device time
runs more than DEV-05c's bound ahead of its arrival is judged at its arrival (and the clock raises clock_wrong),
and a reading older than the device's latest is still judged for hazards (never to clear). Through the real
broker, ingest and database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from app.services import Running, start_services
from core.settings import Settings
from tests.support import Publisher, wait_for


@pytest.fixture
def ingest(loaded: Settings) -> Iterator[Running]:
    running = start_services(loaded, ("ingest",))
    wait_for(running.parts["ingest"].consumer.connected.is_set, timeout=30, what="ingest subscribed")
    try:
        yield running
    finally:
        running.stop()


def send(settings: Settings, publisher: Publisher, device: str, at: datetime, seq: int, **fields: Any) -> None:
    body = {"ts": int(at.timestamp() * 1000), "seq": seq, **fields}
    publisher.publish(f"{settings.topic_prefix}/{device}/telemetry", json.dumps(body))


def alarms(settings: Settings, device: str) -> dict[str, tuple[bool, dict[str, Any]]]:
    with psycopg.connect(settings.dsn) as conn:
        rows = conn.execute("SELECT type, active, details FROM alarm WHERE device_id = %s", (device,)).fetchall()
    return {t: (a, d) for t, a, d in rows}


def test_a_detector_clock_five_minutes_fast_cannot_blind_the_gas_rules(
    loaded: Settings, ingest: Running, publisher: Publisher
) -> None:
    now = datetime.now(UTC)
    send(loaded, publisher, "gas-1", now + timedelta(seconds=280), 1, gas_lel=0.0)  # accepted: within 300 s
    wait_for(lambda: "clock_wrong" in alarms(loaded, "gas-1"), timeout=30, what="clock_wrong raised")
    # The clock is right again: a leak, confirmed by a second sample 10 s later (GAS-02, issue 19).
    send(loaded, publisher, "gas-1", now + timedelta(seconds=2), 2, gas_lel=45.0)
    send(loaded, publisher, "gas-1", now + timedelta(seconds=12), 3, gas_lel=45.0)
    found = wait_for(lambda: alarms(loaded, "gas-1").get("gas_leak"), timeout=30, what="the 45 %LEL leak raised")
    assert found[0], "the leak is active"
    assert alarms(loaded, "gas-1")["clock_wrong"][1]["ahead_s"] > 250
    send(loaded, publisher, "gas-1", datetime.now(UTC) + timedelta(seconds=13), 4, gas_lel=46.0)
    wait_for(lambda: not alarms(loaded, "gas-1")["clock_wrong"][0], timeout=30, what="clock_wrong cleared")


def test_an_ntp_step_back_leaves_readings_judged_and_a_late_low_reading_clears_nothing(
    loaded: Settings, ingest: Running, publisher: Publisher
) -> None:
    now = datetime.now(UTC)
    send(loaded, publisher, "gas-1", now + timedelta(seconds=40), 1, gas_lel=0.0)  # 40 s fast: judged in its time
    wait_for(lambda: _stored(loaded, "gas-1"), timeout=30, what="the fast reading judged")  # (a batch sorts by time)
    # Stepped back: older than the latest, and a hazard the detector itself flags (acted on at once, GAS-02).
    send(loaded, publisher, "gas-1", now + timedelta(seconds=1), 2, gas_lel=30.0, gas=True)
    leak = wait_for(lambda: alarms(loaded, "gas-1").get("gas_leak"), timeout=30, what="the late leak raised")
    assert leak[0] and leak[1].get("late") is True
    assert "clock_wrong" not in alarms(loaded, "gas-1"), "40 s ahead is within DEV-05c's bound"
    # Clean air in two readings 130 s apart: judged in order they would clear the leak (GAS-02 clears after 60 s
    # below 20 %LEL); both are older than the device's latest reading, so they may not.
    send(loaded, publisher, "gas-1", now - timedelta(seconds=100), 3, gas_lel=0.0)
    send(loaded, publisher, "gas-1", now + timedelta(seconds=30), 4, gas_lel=0.0)
    send(loaded, publisher, "smoke-1", now, 1, battery_pct=90.0)  # a marker: the batch above has been judged
    wait_for(lambda: _stored(loaded, "smoke-1"), timeout=30, what="the marker stored")
    assert alarms(loaded, "gas-1")["gas_leak"][0], "late clean readings do not clear what newer ones set"


def _stored(settings: Settings, device: str) -> bool:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute("SELECT 1 FROM reading WHERE device_id = %s", (device,)).fetchone() is not None


def test_the_clock_bound_is_configured_by_the_rules_file_in_force(
    loaded: Settings, publisher: Publisher, tmp_path: Path
) -> None:
    """GRIDWATCH_RULES_FILE: a site that knows its detectors' clocks run up to 4 minutes fast widens DEV-05c."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "extends: defaults\noverrides:\n  - {match: {kind: gas_detector}, rule: DEV-05c, set: {max_ahead_s: 240}}\n",
        encoding="utf-8",
    )
    running = start_services(loaded.model_copy(update={"rules_file": str(rules)}), ("ingest",))
    wait_for(running.parts["ingest"].consumer.connected.is_set, timeout=30, what="ingest subscribed")
    try:
        now = datetime.now(UTC)
        send(loaded, publisher, "gas-1", now + timedelta(seconds=200), 1, gas_lel=0.0)
        send(loaded, publisher, "smoke-1", now + timedelta(seconds=200), 1, battery_pct=90.0)
        wait_for(lambda: _stored(loaded, "smoke-1") and _stored(loaded, "gas-1"), timeout=30, what="both stored")
        assert "clock_wrong" not in alarms(loaded, "gas-1"), "within the site's wider bound"
        wait_for(lambda: "clock_wrong" in alarms(loaded, "smoke-1"), timeout=30, what="the default bound elsewhere")
    finally:
        running.stop()
