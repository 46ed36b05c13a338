"""Issue 3: the rules timer is safe with several processes, escalates on time, ages charging sessions; the
`gridwatch rules check` command validates files and shows a device's effective rules."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from app.services import start_services
from core import repo as core_repo
from core.settings import Settings
from rules import service as rules_service
from rules.ruleset import default_rules
from rules.scheduler import TIMER_LOCK_KEY, run_tick
from tests.support import feed, load_registry, wait_for

REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: C}
    grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
    sites:
      - {id: s1, kind: charging_shed, micro_grid: mg1, name: Shed}
      - {id: s2, kind: shop, micro_grid: mg1, name: Hotpot}
      - {id: s3, kind: shop, micro_grid: mg1, name: Tea}
    devices:
      - {id: smoke-1, kind: smoke_detector, site: s1, location: corridor, battery: true, report_interval_s: 86400}
      - {id: port-1, kind: charging_port, site: s1, location: charging_shed, report_interval_s: 90}
      - {id: gas-1, kind: gas_detector, site: s2, location: kitchen, report_interval_s: 60}
      - {id: gas-2, kind: gas_detector, site: s2, location: kitchen, report_interval_s: 60}
      - {id: gas-3, kind: gas_detector, site: s3, location: kitchen, report_interval_s: 60}
    """)


@pytest.fixture
def db(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


def test_only_one_process_ticks_at_a_time(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now - timedelta(hours=50), smoke=False)
    with psycopg.connect(db.dsn) as holder, holder.transaction():
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (TIMER_LOCK_KEY,))  # another process mid-tick
        with psycopg.connect(db.dsn) as conn:
            assert run_tick(conn, ruleset=default_rules(), now=now) == []
    with psycopg.connect(db.dsn) as conn:
        changes = run_tick(conn, ruleset=default_rules(), now=now)
        assert [(c.device_id, c.alarm_type) for c in changes] == [("smoke-1", "offline")]
        assert run_tick(conn, ruleset=default_rules(), now=now) == [], "idempotent: the alarm is already open"


def test_low_battery_escalates_to_major_after_7_days(db: Settings) -> None:
    now = datetime.now(UTC)
    raised = feed(db, "smoke-1", now - timedelta(days=8), battery_pct=12)
    assert [(c.alarm_type, c.severity) for c in raised] == [("low_battery", 2)]
    with psycopg.connect(db.dsn) as conn:
        early = run_tick(conn, ruleset=default_rules(), now=now - timedelta(days=2))
        assert [c for c in early if c.alarm_type == "low_battery"] == []
        changes = run_tick(conn, ruleset=default_rules(), now=now)
    assert [(c.alarm_type, c.kind, c.severity) for c in changes if c.alarm_type == "low_battery"] == [
        ("low_battery", "severity_raised", 3)
    ]


def test_timer_ages_a_charging_session_and_stops_it_at_12h(db: Settings) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    feed(db, "port-1", start, power_w=180.0, relay="on")
    feed(db, "port-1", start + timedelta(seconds=60), power_w=180.0)  # a session starts on two samples (issue 19)
    with psycopg.connect(db.dsn) as conn:
        at8 = run_tick(conn, ruleset=default_rules(), now=start + timedelta(hours=8, seconds=1))
        at12 = run_tick(conn, ruleset=default_rules(), now=start + timedelta(hours=12, seconds=1))
        commands = conn.execute("SELECT action, status FROM command WHERE device_id = 'port-1'").fetchall()
    assert [(c.alarm_type, c.kind, c.severity) for c in at8 if c.alarm_type == "charging_too_long"] == [
        ("charging_too_long", "raised", 2)
    ]
    assert [(c.alarm_type, c.severity) for c in at8 if c.alarm_type == "offline"] == [("offline", 3)], (
        "EB-15: a port silent with a session open is offline at P2"
    )
    assert [(c.alarm_type, c.kind, c.severity) for c in at12 if c.alarm_type == "charging_too_long"] == [
        ("charging_too_long", "severity_raised", 3)
    ]
    assert commands == [("cut_power", "pending")]


def test_rules_check_validates_and_shows_effective_rules(
    db: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    good = tmp_path / "site.yaml"
    good.write_text(
        "extends: defaults\noverrides:\n"
        "  - {match: {device: port-1}, rule: EB-03, set: {raise_at: 60, clear_below: 50}}\n"
    )
    ok = runner.invoke(app, ["rules", "check", str(good)])
    assert ok.exit_code == 0 and "OK" in ok.output
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", db.dsn)
    shown = runner.invoke(app, ["rules", "check", str(good), "--device", "port-1"])
    assert shown.exit_code == 0, shown.output
    line = next(x for x in shown.output.splitlines() if "EB-03" in x)
    assert "raise_at=60.0" in line
    assert "GAS-02" not in shown.output, "only the rules that watch a charging port"
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n  - {id: GAS-01, type: threshold, alarm_type: gas_low, kinds: [gas_detector], "
        "severity: major, source: eng judgement, field: gas_lel}\n"
    )
    refused = runner.invoke(app, ["rules", "check", str(bad)])
    assert refused.exit_code == 2 and "GAS-01" in refused.output and "raise_at" in refused.output


def test_confirmed_smoke_alarm_cuts_the_charging_ports_of_its_site(db: Settings) -> None:
    """SMK-01 pages at once and cuts nothing; nobody cancels it within 180 s, the timer confirms the fire (SMK-02c)
    and that cuts the site's ports (issue 19: linkage on a confirmed fire, GB 50116-2013 4.1.6)."""
    now = datetime.now(UTC)
    feed(db, "port-1", now - timedelta(minutes=5), power_w=150.0, relay="on")
    raised = feed(db, "smoke-1", now, smoke=True)
    assert [(c.alarm_type, c.kind) for c in raised] == [("smoke", "raised")]
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute("SELECT device_id, action, status FROM command").fetchall() == []
        confirmed = run_tick(conn, ruleset=default_rules(), now=now + timedelta(seconds=181))
        assert ("smoke-1", "fire_confirmed", "raised") in [(c.device_id, c.alarm_type, c.kind) for c in confirmed]
        assert conn.execute("SELECT device_id, action, status FROM command").fetchall() == [
            ("port-1", "cut_power", "pending")
        ]
    # the port reports its relay off: the command is confirmed by the reading
    feed(db, "port-1", now + timedelta(seconds=185), power_w=0.0, relay="off")
    with psycopg.connect(db.dsn) as conn:
        assert conn.execute("SELECT status, confirmed_by FROM command").fetchall() == [("confirmed", "reading")]


def test_second_gas_detector_of_a_site_confirms_the_leak(db: Settings) -> None:
    now = datetime.now(UTC)
    # GAS-02: two samples >= 25 %LEL spanning 10 s each (issue 19)
    feed(db, "gas-1", now - timedelta(seconds=10), gas_lel=30.0)
    first = feed(db, "gas-1", now, gas_lel=30.0)
    assert [(c.device_id, c.alarm_type) for c in first] == [("gas-1", "gas_leak")]
    feed(db, "gas-3", now + timedelta(seconds=20), gas_lel=30.0)
    other_site = feed(db, "gas-3", now + timedelta(seconds=30), gas_lel=30.0)
    assert [(c.device_id, c.alarm_type) for c in other_site] == [("gas-3", "gas_leak")]
    feed(db, "gas-2", now + timedelta(seconds=50), gas_lel=26.0)
    second = feed(db, "gas-2", now + timedelta(seconds=60), gas_lel=26.0)
    assert [(c.device_id, c.alarm_type, c.severity) for c in second] == [
        ("gas-2", "gas_leak", 4),
        ("gas-2", "gas_confirmed", 4),
    ]


def test_serve_rules_part_runs_the_timer_and_publishes_commands(db: Settings, services: Any) -> None:
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.connect("127.0.0.1", services.mqtt_port)
    sub.subscribe(f"{db.topic_prefix}/port-1/cmd", qos=1)
    sub.loop_start()
    fast = db.model_copy(update={"rules_tick_s": 0.2})
    running = start_services(fast, ("rules",))
    try:
        wait_for(lambda: running.parts["rules"].ticks >= 2, what="timer ticking")
        with psycopg.connect(db.dsn) as conn, conn.transaction():
            port = core_repo.get_devices(conn, ids=["port-1"])["port-1"]
            cmd = rules_service.request_command(conn, device=port, action="cut_power", actor="w1", reason="test")
        wait_for(lambda: got, what="command on the wire")
        assert json.loads(got[0]) == {"id": cmd.id, "action": "cut_power", "alarm_id": None, "reason": "test"}

        def statuses() -> list[Any]:
            with psycopg.connect(db.dsn) as conn:
                return conn.execute("SELECT status FROM command").fetchall()

        wait_for(lambda: statuses() == [("sent",)], what="marked sent")
    finally:
        running.stop()
        sub.loop_stop()
        sub.disconnect()
