"""Issue 3, RULES-REFERENCE 7.2 SMK-02 and GAS-04: every way a smoke alarm becomes a confirmed fire — a second
detector, a heat or CO co-signal, a re-alarm after a remote reset, no cancel within 180 s — and confirmations
clearing with what they confirm (so a latching fire_confirmed can be resolved once the smoke is gone).
Through the real rules service and timer on a real PostgreSQL."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from core import repo as core_repo
from core.domain import Disposition
from core.errors import ConflictError
from core.settings import Settings
from rules import service as rules_service
from rules.actuation import service as actuation
from rules.ruleset import default_rules
from rules.scheduler import run_tick
from tests import support
from tests.support import load_registry

REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: C}
    grids: [{id: g1, name: G, micro_grids: [{id: mg1, name: M}]}]
    sites:
      - {id: flat, kind: building, micro_grid: mg1, name: Flat}
      - {id: next-door, kind: building, micro_grid: mg1, name: Next door}
      - {id: shop, kind: shop, micro_grid: mg1, name: Shop}
    devices:
      - {id: smoke-1, kind: smoke_detector, site: flat, location: room, report_interval_s: 60}
      - {id: smoke-2, kind: smoke_detector, site: flat, location: corridor, report_interval_s: 60}
      - {id: co-1, kind: co_alarm, site: flat, location: room, report_interval_s: 60}
      - {id: co-x, kind: co_alarm, site: next-door, location: room, report_interval_s: 60}
      - {id: smoke-x, kind: smoke_detector, site: next-door, location: room, report_interval_s: 60}
      - {id: gas-1, kind: gas_detector, site: shop, location: kitchen, report_interval_s: 60}
      - {id: gas-2, kind: gas_detector, site: shop, location: kitchen, report_interval_s: 60}
    """)


@pytest.fixture
def db(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


def feed(settings: Settings, device: str, at: datetime, **fields: Any) -> list[tuple[str, str, str]]:
    """One reading through the rules transaction; (device, alarm type, change) of what it did."""
    return [(c.device_id, c.alarm_type, c.kind) for c in support.feed(settings, device, at, **fields)]


def tick(settings: Settings, now: datetime) -> list[tuple[str, str, str]]:
    """A timer pass; its confirmations (the detectors also go offline in these fast-forwarded clocks)."""
    with psycopg.connect(settings.dsn) as conn:
        changes = run_tick(conn, ruleset=default_rules(), now=now)
    return [(c.device_id, c.alarm_type, c.kind) for c in changes if c.alarm_type == "fire_confirmed"]


def open_alarms(settings: Settings) -> list[tuple[str, str, bool]]:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute("SELECT device_id, type, active FROM alarm WHERE closed_at IS NULL ORDER BY id").fetchall()


def test_co_after_smoke_in_the_same_site_confirms_the_fire(db: Settings) -> None:
    now = datetime.now(UTC)
    assert feed(db, "smoke-1", now, smoke=True) == [("smoke-1", "smoke", "raised")]
    assert feed(db, "co-x", now + timedelta(seconds=30), co=True) == [("co-x", "co_alarm", "raised")], (
        "CO next door confirms nothing here"
    )
    assert feed(db, "co-1", now + timedelta(seconds=60), co=True) == [
        ("co-1", "co_alarm", "raised"),
        ("smoke-1", "fire_confirmed", "raised"),
    ]


def test_smoke_after_co_in_the_same_site_confirms_the_fire(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "co-1", now, co=True)
    assert feed(db, "smoke-2", now + timedelta(seconds=120), smoke=True) == [
        ("smoke-2", "smoke", "raised"),
        ("smoke-2", "fire_confirmed", "raised"),
    ]


def test_co_long_after_the_window_does_not_confirm(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "co-1", now, co=True)
    assert feed(db, "smoke-2", now + timedelta(minutes=11), smoke=True) == [("smoke-2", "smoke", "raised")], (
        "the CO alarm was last seen 11 min earlier: outside SMK-02a's 10 min window"
    )


def test_heat_on_the_detector_itself_confirms_its_smoke(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now, smoke=True, temp_c=40.0)
    assert feed(db, "smoke-1", now + timedelta(seconds=5), smoke=True, temp_c=61.0) == []
    assert feed(db, "smoke-1", now + timedelta(seconds=16), smoke=True, temp_c=63.0) == [
        ("smoke-1", "heat", "raised"),
        ("smoke-1", "fire_confirmed", "raised"),
    ]


@pytest.mark.parametrize(
    ("temps", "raised"),
    [
        ([57.9, 57.9, 57.9], False),  # below the 58 C level
        ([58.0, 58.0, 58.0], True),  # at it, held 10 s
        ([60.0, 40.0, 60.0], False),  # not held for 10 s
    ],
)
def test_heat_threshold(db: Settings, temps: list[float], raised: bool) -> None:
    now = datetime.now(UTC)
    got = []
    for i, t in enumerate(temps):
        got += feed(db, "smoke-2", now + timedelta(seconds=6 * i), temp_c=t)
    assert (("smoke-2", "heat", "raised") in got) is raised


def test_realarm_within_60_s_of_a_remote_reset_confirms(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now, smoke=True)
    with psycopg.connect(db.dsn) as conn, conn.transaction():
        dev = core_repo.get_devices(conn, ids=["smoke-1"])["smoke-1"]
        cmd = rules_service.request_command(
            conn, device=dev, action="silence", actor="w1", reason="remote reset", now=now + timedelta(seconds=20)
        )
        actuation.mark_sent(conn, ids=[cmd.id], at=now + timedelta(seconds=20))
    feed(db, "smoke-1", now + timedelta(seconds=25), smoke=False)
    assert feed(db, "smoke-1", now + timedelta(seconds=50), smoke=True) == [("smoke-1", "fire_confirmed", "raised")], (
        "back in alarm 30 s after the reset"
    )


def test_realarm_without_a_reset_or_too_late_does_not_confirm(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now, smoke=True)
    feed(db, "smoke-1", now + timedelta(seconds=25), smoke=False)
    assert feed(db, "smoke-1", now + timedelta(seconds=50), smoke=True) == [], "no reset was sent"
    with psycopg.connect(db.dsn) as conn, conn.transaction():
        dev = core_repo.get_devices(conn, ids=["smoke-x"])["smoke-x"]
        cmd = rules_service.request_command(
            conn, device=dev, action="silence", actor="w1", reason="remote reset", now=now
        )
        actuation.mark_sent(conn, ids=[cmd.id], at=now)
    feed(db, "smoke-x", now + timedelta(seconds=1), smoke=False)
    assert feed(db, "smoke-x", now + timedelta(seconds=90), smoke=True) == [("smoke-x", "smoke", "raised")], (
        "90 s after the reset: outside the 60 s verification window"
    )


def test_smoke_not_cancelled_within_180_s_is_confirmed_by_the_timer(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now - timedelta(seconds=200), smoke=True)
    assert tick(db, now) == [], "recorded just now on the wall clock: people still have 180 s to cancel"
    assert tick(db, now + timedelta(seconds=181)) == [("smoke-1", "fire_confirmed", "raised")]
    assert tick(db, now + timedelta(seconds=190)) == [], "raised once"


def test_cancelled_or_self_clearing_smoke_is_not_confirmed(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now, smoke=True)
    with psycopg.connect(db.dsn) as conn, conn.transaction():
        alarm_id = conn.execute("SELECT id FROM alarm WHERE device_id = 'smoke-1'").fetchone()[0]  # type: ignore[index]
        rules_service.resolve(
            conn,
            alarm_id=alarm_id,
            actor="w1",
            disposition=Disposition.FALSE_ALARM,
            note="toast",
            now=now + timedelta(seconds=60),
        )
    feed(db, "smoke-2", now, smoke=True)
    feed(db, "smoke-2", now + timedelta(seconds=90), smoke=False)  # cooking smoke, gone by itself
    feed(db, "smoke-2", now + timedelta(seconds=160), smoke=False)
    assert tick(db, now + timedelta(seconds=400)) == []
    assert [a for a in open_alarms(db) if a[1] in ("smoke", "fire_confirmed")] == [("smoke-2", "smoke", False)]


def test_fire_confirmed_clears_with_the_smoke_and_can_then_be_resolved(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "smoke-1", now, smoke=True)
    feed(db, "smoke-2", now + timedelta(seconds=30), smoke=True)
    assert open_alarms(db) == [
        ("smoke-1", "smoke", True),
        ("smoke-2", "smoke", True),
        ("smoke-2", "fire_confirmed", True),
    ]
    with psycopg.connect(db.dsn) as conn, conn.transaction():
        fire = conn.execute("SELECT id FROM alarm WHERE type = 'fire_confirmed'").fetchone()[0]  # type: ignore[index]
        with pytest.raises(ConflictError, match="latches"):
            rules_service.resolve(conn, alarm_id=fire, actor="w1", disposition=Disposition.REAL_HAZARD, note=None)
    assert feed(db, "smoke-2", now + timedelta(minutes=20), smoke=False) == [], "SMK-01 clears after 60 s"
    assert feed(db, "smoke-2", now + timedelta(minutes=21), smoke=False) == [
        ("smoke-2", "smoke", "cleared"),
        ("smoke-2", "fire_confirmed", "cleared"),
    ]
    with psycopg.connect(db.dsn) as conn, conn.transaction():
        closed = rules_service.resolve(
            conn, alarm_id=fire, actor="w1", disposition=Disposition.REAL_HAZARD, note="bin fire, put out"
        )
    assert closed.closed_at is not None


def test_gas_confirmed_clears_when_the_detector_clears(db: Settings) -> None:
    now = datetime.now(UTC)
    feed(db, "gas-1", now - timedelta(seconds=10), gas_lel=30.0)  # GAS-02: two samples spanning 10 s (issue 19)
    feed(db, "gas-1", now, gas_lel=30.0)
    feed(db, "gas-2", now + timedelta(seconds=10), gas_lel=28.0)
    assert ("gas-2", "gas_confirmed", "raised") in feed(db, "gas-2", now + timedelta(seconds=20), gas_lel=28.0)
    feed(db, "gas-2", now + timedelta(seconds=100), gas_lel=2.0)
    got = feed(db, "gas-2", now + timedelta(seconds=170), gas_lel=1.0)
    assert ("gas-2", "gas_confirmed", "cleared") in got and ("gas-2", "gas_leak", "cleared") in got
