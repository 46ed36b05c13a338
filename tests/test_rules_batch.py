"""Issue 18: a batch's alarm transitions are written set-based, with a fixed handful of statements however many
transitions it holds, and every guarantee of the row-by-row path kept: one open alarm per (device, type), events
in order per alarm, an outbox row for each transition and none for a repeat, on the real database."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
import pytest

from core import repo as core_repo
from core.domain import Reading
from core.settings import Settings
from rules import service as rules_service
from rules.ruleset import default_rules
from tests.support import load_registry, meeting_orphans

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)


def registry(devices: int) -> str:
    rows = "\n".join(
        f"  - {{id: det-{i:03d}, kind: smoke_detector, site: s1, location: corridor, battery: true}}"
        for i in range(devices)
    )
    return (
        textwrap.dedent("""\
        community: {id: c1, name: Batch community}
        grids:
          - id: g1
            name: Grid one
            micro_grids:
              - {id: mg1, name: Micro one}
        workers:
          - {id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["json://127.0.0.1:9/w1"]}
        sites:
          - {id: s1, kind: building, micro_grid: mg1, name: Block 1, address: 1 Lane}
        devices:
        """)
        + rows
        + "\n"
    )


class CountingCursor(psycopg.Cursor[Any]):
    """A real cursor that counts the statements it sends (the test's only instrument)."""

    executed: ClassVar[list[str]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        CountingCursor.executed.append(str(query)[:60])
        return super().execute(query, params, **kwargs)


def apply(settings: Settings, readings: list[Reading]) -> tuple[list[rules_service.AlarmChange], int]:
    """One batch through the rules transaction, as ingest runs it; returns its changes and statement count."""
    with psycopg.connect(settings.dsn, cursor_factory=CountingCursor) as conn, conn.transaction():
        devices = core_repo.get_devices(conn, ids=sorted({r.device_id for r in readings}))
        CountingCursor.executed.clear()
        changes = rules_service.apply_readings(conn, readings=readings, devices=devices, ruleset=default_rules())
        return changes, len(CountingCursor.executed)


def battery(device: str, pct: float, at: datetime, seq: int) -> Reading:
    return Reading(device_id=device, ts=at, received_at=at, seq=seq, battery_pct=pct)


@pytest.mark.parametrize("devices", [120])
def test_statements_per_batch_do_not_grow_with_its_transitions(settings: Settings, devices: int) -> None:
    load_registry(settings, registry(devices))
    ids = [f"det-{i:03d}" for i in range(devices)]
    # Prime every device's rule state (first messages create it), with no transition.
    apply(settings, [battery(d, 90.0, T0, 0) for d in ids])
    few, few_statements = apply(
        settings, [battery(d, 10.0 if i < 3 else 90.0, T0 + timedelta(seconds=1), 1) for i, d in enumerate(ids)]
    )
    many, many_statements = apply(settings, [battery(d, 10.0, T0 + timedelta(seconds=2), 2) for d in ids])
    assert [c.kind for c in few] == ["raised"] * 3
    assert len(many) == devices - 3 and {c.kind for c in many} == {"raised"}
    assert many_statements == few_statements, (
        f"{few_statements} statements for 3 transitions, {many_statements} for {len(many)}"
    )
    assert many_statements <= 10
    with psycopg.connect(settings.dsn) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone() == (devices,)
    assert meeting_orphans(settings.dsn) == 0, (
        "every event names its alarm, every outbox row its own transition's event"
    )


def test_a_flapping_device_keeps_one_alarm_with_its_events_in_order_and_an_outbox_row_each(settings: Settings) -> None:
    load_registry(settings, registry(2))
    flaps = [10.0, 40.0, 10.0, 40.0, 12.0, 11.0]  # raise, clear, reactivate, clear, reactivate, repeat (throttled)
    readings = [battery("det-000", pct, T0 + timedelta(seconds=i), i) for i, pct in enumerate(flaps)]
    readings += [battery("det-001", 90.0, T0 + timedelta(seconds=i), i) for i in range(len(flaps))]
    changes, _ = apply(settings, readings)
    assert [c.kind for c in changes] == ["raised", "cleared", "reactivated", "cleared", "reactivated"]
    with psycopg.connect(settings.dsn) as conn:
        alarms = conn.execute("SELECT id, active, count, peak_value, value FROM alarm").fetchall()
        events = conn.execute("SELECT alarm_id, kind FROM alarm_event ORDER BY id").fetchall()
        outbox = conn.execute("SELECT alarm_id, kind, event_id FROM outbox ORDER BY id").fetchall()
        event_ids = [r[0] for r in conn.execute("SELECT id FROM alarm_event ORDER BY id")]
    ((alarm_id, active, count, peak, value),) = alarms
    assert active and value == 12.0 and peak == 12.0
    assert count == 3, "raised once and reactivated twice; the repeat a second later waits in the rule's hold"
    assert [k for _, k in events] == [c.kind for c in changes] and {a for a, _ in events} == {alarm_id}
    assert [(k, e) for _, k, e in outbox] == list(zip([c.kind for c in changes], event_ids, strict=True)), (
        "one outbox row per transition, in order, none for the repeat"
    )


def test_a_batch_continues_an_alarm_opened_by_an_earlier_one(settings: Settings) -> None:
    load_registry(settings, registry(1))
    first, _ = apply(settings, [battery("det-000", 10.0, T0, 0)])
    second, _ = apply(
        settings,
        [battery("det-000", 8.0, T0 + timedelta(minutes=2), 1), battery("det-000", 50.0, T0 + timedelta(minutes=3), 2)],
    )
    assert [c.kind for c in first] == ["raised"] and [c.kind for c in second] == ["cleared"]
    assert second[0].alarm_id == first[0].alarm_id
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute("SELECT active, count, peak_value, cleared_at FROM alarm").fetchone()
    assert row is not None
    active, count, peak, cleared_at = row
    assert not active and count == 2 and peak == 10.0 and cleared_at == T0 + timedelta(minutes=3)
