"""Issue 3, the device-health and data-quality rows through the real broker, ingest, database and timer:
DEV-03 building outage (one alarm for the building, P1 after another alarm), CO-05 data gap, DEV-05 reboot loop,
and GAS-08 detector placement checked when `gridwatch load` reads the registry."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import app
from core.settings import Settings
from ingest.worker import IngestWorker
from rules.ruleset import default_rules
from rules.scheduler import run_tick
from tests.support import Publisher, load_registry, wait_for

MAINS = ("sock-a1", "sock-a2", "sock-b1", "sock-b2", "valve-a", "gas-b")
REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: C}
    grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
    sites:
      - {id: block-1, kind: building, micro_grid: mg1, name: Block 1}
      - {id: shop-a, kind: shop, micro_grid: mg1, name: Hardware, building: block-1}
      - {id: shop-b, kind: shop, micro_grid: mg1, name: Noodles, building: block-1}
      - {id: block-2, kind: building, micro_grid: mg1, name: Block 2}
    devices:
      - {id: sock-a1, kind: smart_socket, site: shop-a, location: storage, report_interval_s: 60}
      - {id: sock-a2, kind: smart_socket, site: shop-a, location: storage, report_interval_s: 60}
      - {id: valve-a, kind: gas_valve, site: shop-a, location: kitchen, report_interval_s: 60}
      - {id: sock-b1, kind: smart_socket, site: shop-b, location: room, report_interval_s: 60}
      - {id: sock-b2, kind: smart_socket, site: shop-b, location: room, report_interval_s: 60}
      - {id: gas-b, kind: gas_detector, site: shop-b, location: kitchen, report_interval_s: 60}
      - {id: smoke-1, kind: smoke_detector, site: block-1, location: stairwell, battery: true}
      - {id: smoke-2, kind: smoke_detector, site: block-1, location: corridor, battery: true}
      - {id: co-9, kind: co_alarm, site: block-2, location: room, report_interval_s: 60}
      - {id: sock-9, kind: smart_socket, site: block-2, location: room, report_interval_s: 60}
    """)


@pytest.fixture
def site(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


@pytest.fixture
def ingest(site: Settings) -> Iterator[IngestWorker]:
    worker = IngestWorker(site)
    worker.start()
    wait_for(worker.consumer.connected.is_set, what="ingest connected")
    yield worker
    worker.stop()


def q(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def publish_all(publisher: Publisher, settings: Settings, readings: list[tuple[str, dict[str, Any]]]) -> None:
    """Publish (device, payload) and wait until every reading is stored."""
    before = q(settings, "SELECT count(*) FROM reading")[0][0]
    for device, payload in readings:
        publisher.publish(f"{settings.topic_prefix}/{device}/telemetry", payload)
    wait_for(
        lambda: q(settings, "SELECT count(*) FROM reading")[0][0] >= before + len(readings),
        timeout=20,
        what="readings stored",
    )


def tick(settings: Settings, now: datetime) -> list[tuple[str, str, str, int]]:
    with psycopg.connect(settings.dsn) as conn:
        return sorted(
            (c.device_id, c.alarm_type, c.kind, c.severity) for c in run_tick(conn, ruleset=default_rules(), now=now)
        )


def heard(settings: Settings) -> datetime:
    return max(r[0] for r in q(settings, "SELECT last_seen_at FROM device_state WHERE last_seen_at IS NOT NULL"))


def test_power_cut_in_a_building_is_one_outage_alarm_not_six_offline(
    site: Settings, ingest: IngestWorker, publisher: Publisher
) -> None:
    publish_all(
        publisher,
        site,
        [(d, {"relay": "on", "power_w": 5.0}) for d in MAINS]
        + [("smoke-1", {"battery_pct": 90}), ("smoke-2", {"battery_pct": 90}), ("sock-9", {"power_w": 3.0})],
    )
    last = heard(site)
    assert tick(site, last + timedelta(minutes=4)) == [], "mains devices are offline after 5 min, not before"
    got = tick(site, last + timedelta(minutes=6))
    outage = [c for c in got if c[1] == "building_outage"]
    assert len(outage) == 1 and outage[0][2:] == ("raised", 3), got
    assert [c for c in got if c[1] == "offline" and c[0] in MAINS] == [], "one alarm for the building"
    details = q(site, "SELECT details FROM alarm WHERE type = 'building_outage'")[0][0]
    assert details["building"] == "block-1" and details["offline"] == 6 and details["total"] == 8
    assert ("sock-9", "offline", "raised", 2) in got, "block 2's socket is a single device: its own offline alarm"
    assert tick(site, last + timedelta(minutes=8)) == [], "raised once"
    # power is back: five devices report again, one stays dead (1 of 8): the outage clears
    publish_all(publisher, site, [(d, {"relay": "on", "power_w": 5.0}) for d in MAINS[:5]])
    back = tick(site, heard(site) + timedelta(seconds=5))
    assert ("building_outage" in {c[1] for c in back}) and [c[2] for c in back if c[1] == "building_outage"] == [
        "cleared"
    ]


def test_outage_right_after_another_alarm_is_critical(
    site: Settings, ingest: IngestWorker, publisher: Publisher
) -> None:
    publish_all(publisher, site, [(d, {"relay": "on", "power_w": 5.0}) for d in MAINS])
    publish_all(publisher, site, [("smoke-2", {"smoke": True})])  # a fire, then the devices die
    got = tick(site, heard(site) + timedelta(minutes=6))
    assert [c[3] for c in got if c[1] == "building_outage"] == [4], "P1: possible fire damage"


def test_co_samples_stopping_at_an_elevated_level_raise_a_data_gap(
    site: Settings, ingest: IngestWorker, publisher: Publisher
) -> None:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    publish_all(
        publisher, site, [("co-9", {"ts": now_ms - 60_000, "co_ppm": 20.0}), ("co-9", {"ts": now_ms, "co_ppm": 45.0})]
    )
    last = heard(site)
    assert [c for c in tick(site, last + timedelta(seconds=100)) if c[1] == "co_data_gap"] == []
    assert [c for c in tick(site, last + timedelta(seconds=125)) if c[1] == "co_data_gap"] == [
        ("co-9", "co_data_gap", "raised", 2)
    ]
    publish_all(publisher, site, [("co-9", {"co_ppm": 41.0})])
    assert q(site, "SELECT active FROM alarm WHERE type = 'co_data_gap'") == [(False,)], "samples resumed"


def test_a_device_restarting_three_times_in_an_hour_is_a_reboot_loop(
    site: Settings, ingest: IngestWorker, publisher: Publisher
) -> None:
    base = int(datetime.now(UTC).timestamp() * 1000) - 3_000_000
    seqs = [812, 0, 1, 2, 0, 1, 0]
    publish_all(
        publisher, site, [("sock-9", {"ts": base + i * 300_000, "seq": s, "power_w": 2.0}) for i, s in enumerate(seqs)]
    )
    assert q(site, "SELECT type, severity, raised_at FROM alarm") == [
        ("reboot_loop", 2, datetime.fromtimestamp((base + 6 * 300_000) / 1000, tz=UTC))
    ]


def test_load_checks_gas_detector_placement(site: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", site.dsn)
    registry = tmp_path / "shop.yaml"
    text = textwrap.dedent("""\
        community: {id: c1, name: C}
        grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
        sites:
          - {id: lpg-shop, kind: shop, micro_grid: mg1, name: Hotpot, lpg: true}
          - {id: ng-flat, kind: building, micro_grid: mg1, name: Flat}
        devices:
          - {id: gas-lpg, kind: gas_detector, site: lpg-shop, location: kitchen, mounting: MOUNT}
          - {id: gas-ng, kind: gas_detector, site: ng-flat, location: kitchen, mounting: ceiling}
        """)
    registry.write_text(text.replace("MOUNT", "ceiling"))
    runner = CliRunner()
    out = runner.invoke(app, ["load", str(registry)])
    assert out.exit_code == 0, out.output
    assert "registry check: detector_misplaced raised on gas-lpg" in out.output
    assert q(site, "SELECT device_id, severity, message, active FROM alarm") == [
        ("gas-lpg", 2, "LPG site: mount the detector within 0.3 m of the floor, not at ceiling height", True)
    ]
    again = runner.invoke(app, ["load", str(registry)])
    assert "registry check" not in again.output, "idempotent: the alarm is already open"
    registry.write_text(text.replace("MOUNT", "floor"))  # the installer moved it down
    fixed = runner.invoke(app, ["load", str(registry)])
    assert "registry check: detector_misplaced cleared on gas-lpg" in fixed.output
