"""Issue 5, must show 1 and 2: the merchant score through the real pipeline (real PostgreSQL, real Mosquitto,
the real ingest and rules.service), with the clock controlled through explicit `now` arguments."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from typer.testing import CliRunner

from app.services import Running, start_services
from core.domain import Device, DeviceKind, Disposition, Location, Severity
from core.errors import ConflictError, NotFoundError
from core.settings import Settings
from rules import service as rules_service
from rules.engine import Transition
from score import service as score_service
from score.worker import ScoreWorker
from tests.support import Publisher, load_registry, wait_for

REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: Score community}
    grids:
      - id: g1
        name: Grid one
        micro_grids: [{id: mg1, name: Micro one}]
    workers:
      - {id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1]}
    merchants:
      - {id: m1, name: Noodle shop}
      - {id: m2, name: Battery store}
      - {id: m3, name: Tea house}
    sites:
      - {id: s1, kind: shop, micro_grid: mg1, merchant: m1, name: Noodle shop, address: 1 Lane, floor: 1}
      - {id: s2, kind: storage, micro_grid: mg1, merchant: m2, name: Battery store, address: 3 Lane}
      - {id: s3, kind: shop, micro_grid: mg1, merchant: m3, name: Tea house, address: 5 Lane}
      - {id: b1, kind: building, micro_grid: mg1, name: Block 1, address: 2 Lane}
    devices:
      - {id: gas-m1, kind: gas_detector, site: s1, location: kitchen}
      - {id: sock-m1, kind: smart_socket, site: s1, location: corridor}
      - {id: gas-m2, kind: gas_detector, site: s2, location: storage}
      - {id: sock-m2, kind: smart_socket, site: s2, location: stairwell}
      - {id: smoke-m2, kind: smoke_detector, site: s2, location: storage, battery: true}
      - {id: gas-m3, kind: gas_detector, site: s3, location: kitchen}
      - {id: gas-b1, kind: gas_detector, site: b1, location: kitchen}
    """)


@pytest.fixture
def community(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


@pytest.fixture
def ingest(community: Settings) -> Iterator[Running]:
    r = start_services(community, ("ingest",))
    wait_for(r.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield r
    r.stop()


def q(settings: Settings, sql: str, *args: object) -> list[dict[str, Any]]:
    with psycopg.connect(settings.dsn, row_factory=dict_row) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def ledger(settings: Settings, merchant: str) -> list[tuple[str, int]]:
    return [
        (r["code"], r["points"])
        for r in q(settings, "SELECT code, points FROM score_entry WHERE merchant_id = %s ORDER BY at, id", merchant)
    ]


def standing(settings: Settings, merchant: str, now: datetime | None = None) -> score_service.MerchantScoreRead:
    with psycopg.connect(settings.dsn) as conn:
        return score_service.get_score(conn, merchant_id=merchant, now=now)


def resolve(
    settings: Settings,
    alarm_id: int,
    disposition: Disposition,
    now: datetime | None = None,
    actor: str = "w1",
    *,
    score: bool = True,
) -> None:
    """What POST /api/v1/alarms/{id}/resolve does (rules.service.resolve in one transaction), then the score part's
    pass that the resolution's NOTIFY wakes (score.service.score_resolutions, in its own transaction)."""
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        rules_service.resolve(conn, alarm_id=alarm_id, actor=actor, disposition=disposition, note="on site", now=now)
    if score:
        with psycopg.connect(settings.dsn) as conn, conn.transaction():
            score_service.score_resolutions(conn, now=now or datetime.now(UTC))


_LAST_TS: dict[str, int] = {}


def gas_alarm_through_ingest(settings: Settings, publisher: Publisher, device: str) -> int:
    """Publish a leak through the real broker and ingest, acknowledge it as the worker does, publish the gas
    going away (event time in the recent past, after the device's previous readings); return the alarm,
    cleared and ready to be resolved."""
    before = {r["id"] for r in q(settings, "SELECT id FROM alarm WHERE device_id = %s", device)}
    base = max(int(time.time() * 1000) - 10 * 60 * 1000, _LAST_TS.get(device, 0) + 11_000)
    topic = f"{settings.topic_prefix}/{device}/telemetry"
    for ts in (base - 10_000, base):  # GAS-02: two samples >= 25 %LEL spanning 10 s (issue 19)
        publisher.publish(topic, {"ts": ts, "seq": ts // 1000, "gas_lel": 30})
    rows = wait_for(
        lambda: [
            r
            for r in q(settings, "SELECT id FROM alarm WHERE device_id = %s AND type = 'gas_leak'", device)
            if r["id"] not in before
        ],
        what=f"gas alarm on {device}",
    )
    alarm_id = int(rows[0]["id"])
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor="w1")
    for offset_s, lel in [(5, 4), (40, 3), (70, 2), (90, 1)]:
        ts = base + offset_s * 1000
        publisher.publish(topic, {"ts": ts, "seq": ts // 1000, "gas_lel": lel})
    _LAST_TS[device] = base + 90_000
    wait_for(
        lambda: q(settings, "SELECT 1 FROM alarm WHERE id = %s AND NOT active", alarm_id),
        what=f"gas alarm {alarm_id} cleared",
    )
    return alarm_id


def raise_alarm(
    settings: Settings,
    device_id: str,
    kind: DeviceKind,
    location: Location,
    site: str,
    alarm_type: str,
    severity: Severity,
    at: datetime,
) -> int:
    """Create an alarm through rules.service.record_transition (the real function writing the real alarm and
    alarm_event tables) for alarm types whose rule is not driven from a reading here."""
    device = Device(id=device_id, kind=kind, site_id=site, location=location)
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        change = rules_service.record_transition(
            conn,
            device=device,
            transition=Transition(
                rule_id="EB-14a",
                alarm_type=alarm_type,
                kind="raise",
                severity=severity,
                at=at,
                value=150.0,
                message="test alarm",
            ),
        )
    assert change is not None
    return change.alarm_id


def test_gas_false_alarm_costs_nothing_real_hazard_costs_the_gas_deduction(
    community: Settings, ingest: Running, publisher: Publisher
) -> None:
    first = gas_alarm_through_ingest(community, publisher, "gas-m1")
    assert ledger(community, "m1") == [], "a raw sensor alarm never deducts by itself"
    resolve(community, first, Disposition.FALSE_ALARM)
    assert ledger(community, "m1") == []
    assert standing(community, "m1").score == 100

    second = gas_alarm_through_ingest(community, publisher, "gas-m1")
    assert second != first
    resolve(community, second, Disposition.REAL_HAZARD)
    rows = q(community, "SELECT * FROM score_entry WHERE merchant_id = 'm1'")
    assert [(r["code"], r["points"], r["alarm_id"], r["actor"], r["site_id"], r["hazard"]) for r in rows] == [
        ("M-D02", -10, second, "w1", "s1", True)
    ]
    assert "gas leak" in rows[0]["reason"].lower()
    s = standing(community, "m1")
    assert (s.score, s.tier, s.review, s.hazards_in_window) == (90, "A", False, 1)
    assert s.as_of is not None, "the standing is stored as a snapshot when the ledger changes"

    # another merchant's alarm counts against that merchant only; a building without a merchant costs nobody
    other = gas_alarm_through_ingest(community, publisher, "gas-b1")
    resolve(community, other, Disposition.REAL_HAZARD)
    assert ledger(community, "m2") == [] and ledger(community, "m3") == []
    assert q(community, "SELECT count(*) AS n FROM score_entry")[0]["n"] == 1


def test_indoor_charging_costs_nothing_until_a_worker_confirms_it(
    community: Settings, ingest: Running, publisher: Publisher
) -> None:
    """A socket in the merchant's corridor draws a charger's 150 W for 35 min (event time, an hour ago):
    the real ingest and rule EB-14a raise ebike_indoor_charging; the score moves only on confirmation."""
    topic = f"{community.topic_prefix}/sock-m1/telemetry"
    base = int(time.time() * 1000) - 60 * 60 * 1000
    for i in range(36):
        publisher.publish(topic, {"ts": base + i * 60_000, "seq": i, "power_w": 150.0, "relay": "on"})
    rows = wait_for(
        lambda: q(
            community, "SELECT id, severity FROM alarm WHERE device_id = 'sock-m1' AND type = 'ebike_indoor_charging'"
        ),
        what="indoor charging alarm",
    )
    assert rows[0]["severity"] == Severity.MAJOR
    assert ledger(community, "m1") == [], "a raw sensor alarm never deducts by itself"
    assert standing(community, "m1").score == 100
    resolve(community, int(rows[0]["id"]), Disposition.REAL_HAZARD)
    entries = q(community, "SELECT code, points, alarm_id, actor, site_id FROM score_entry")
    assert entries == [{"code": "M-D08", "points": -10, "alarm_id": rows[0]["id"], "actor": "w1", "site_id": "s1"}]
    assert (standing(community, "m1").score, standing(community, "m1").tier) == (90, "A")


def test_indoor_charging_late_acknowledgement_and_persistence(community: Settings) -> None:
    """ebike_indoor_charging is raised here through rules.service.record_transition (the real function writing
    the real alarm and alarm_event tables) so the test sets each alarm's event time; the resolution is real."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    alarm = raise_alarm(
        community,
        "sock-m2",
        DeviceKind.SMART_SOCKET,
        Location.STAIRWELL,
        "s2",
        "ebike_indoor_charging",
        Severity.MAJOR,
        t0,
    )
    assert ledger(community, "m2") == []
    assert standing(community, "m2").score == 100
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        rules_service.acknowledge(conn, alarm_id=alarm, actor="w1", now=t0 + timedelta(minutes=3))
    resolve(community, alarm, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=40))
    assert ledger(community, "m2") == [("M-D08", -10)]
    assert standing(community, "m2").score == 90

    # a second one, never acknowledged within its 15 min deadline, costs the violation and the late ack
    late = raise_alarm(
        community,
        "sock-m2",
        DeviceKind.SMART_SOCKET,
        Location.STAIRWELL,
        "s2",
        "ebike_indoor_charging",
        Severity.MAJOR,
        t0 + timedelta(minutes=50),
    )
    resolve(community, late, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=90))
    assert ledger(community, "m2") == [("M-D08", -10), ("M-D08", -10), ("M-D14", -5)]
    # the third verified violation within 90 days: persistence (M-D09) on top, and a restoration lock
    third = raise_alarm(
        community,
        "sock-m2",
        DeviceKind.SMART_SOCKET,
        Location.STAIRWELL,
        "s2",
        "ebike_indoor_charging",
        Severity.MAJOR,
        t0 + timedelta(minutes=95),
    )
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        rules_service.acknowledge(conn, alarm_id=third, actor="w1", now=t0 + timedelta(minutes=96))
    resolve(community, third, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=100))
    assert ledger(community, "m2")[-2:] == [("M-D08", -10), ("M-D09", -20)]
    s = standing(community, "m2")
    assert (s.score, s.tier, s.review) == (45, "D", True)
    assert s.locked_until == t0 + timedelta(minutes=100) + timedelta(days=90)


def test_thirty_clean_days_restore_points(community: Settings) -> None:
    t0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    alarm = raise_alarm(
        community,
        "sock-m1",
        DeviceKind.SMART_SOCKET,
        Location.CORRIDOR,
        "s1",
        "ebike_indoor_charging",
        Severity.MINOR,
        t0 - timedelta(hours=1),
    )
    resolve(community, alarm, Disposition.REAL_HAZARD, now=t0)
    # noise in between: a false alarm resolved as such keeps the period clean
    noise = raise_alarm(
        community,
        "sock-m1",
        DeviceKind.SMART_SOCKET,
        Location.CORRIDOR,
        "s1",
        "ebike_indoor_charging",
        Severity.MINOR,
        t0 + timedelta(days=10),
    )
    resolve(community, noise, Disposition.FALSE_ALARM, now=t0 + timedelta(days=10, hours=1))

    def tick(days: float) -> score_service.TickResult:
        with psycopg.connect(community.dsn) as conn, conn.transaction():
            return score_service.run_score_tick(conn, now=t0 + timedelta(days=days))

    assert tick(29.99).written == {}
    assert standing(community, "m1").score == 90
    assert tick(30).written == {"M-R01": 1}
    assert tick(30).written == {}, "the tick is idempotent"
    assert standing(community, "m1").score == 92
    assert tick(95).written == {"M-R01": 2}  # days 60 and 90
    assert ledger(community, "m1") == [("M-D08", -10), ("M-R01", 2), ("M-R01", 2), ("M-R01", 2)]
    at = [r["at"] for r in q(community, "SELECT at FROM score_entry WHERE code = 'M-R01' ORDER BY at")]
    assert at == [t0 + timedelta(days=30), t0 + timedelta(days=60), t0 + timedelta(days=90)]
    tick(400)
    s = standing(community, "m1", t0 + timedelta(days=400))
    assert s.score == 100, "restorations stop at base"
    assert sum(p for _, p in ledger(community, "m1")) == 0


def test_tier_and_review_flag_change_at_the_boundaries(community: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    seen = []

    def hazard(i: int) -> None:
        alarm = raise_alarm(
            community,
            "gas-m3",
            DeviceKind.GAS_DETECTOR,
            Location.KITCHEN,
            "s3",
            "gas_leak",
            Severity.CRITICAL,
            t0 + timedelta(hours=i),
        )
        with psycopg.connect(community.dsn) as conn, conn.transaction():
            rules_service.acknowledge(conn, alarm_id=alarm, actor="w1", now=t0 + timedelta(hours=i, minutes=1))
        resolve(community, alarm, Disposition.REAL_HAZARD, now=t0 + timedelta(hours=i, minutes=30))
        s = standing(community, "m3")
        seen.append((s.score, s.tier, s.review))

    def correct(points: int, hours: float) -> None:
        with psycopg.connect(community.dsn) as conn, conn.transaction():
            score_service.add_correction(
                conn,
                merchant_id="m3",
                actor="admin:1",
                points=points,
                reason="boundary walk for the test",
                now=t0 + timedelta(hours=hours),
            )
        s = standing(community, "m3")
        seen.append((s.score, s.tier, s.review))

    hazard(1)  # 90: still A
    correct(-1, 2)  # 89: B
    correct(+1, 3)  # 90: A again
    hazard(4)  # 80: B
    correct(-5, 5)  # 75: B
    hazard(6)  # 65: C, and the third verified hazard in 90 days: review
    correct(-5, 7)  # 60: C
    correct(-1, 8)  # 59: D
    assert seen == [
        (90, "A", False),
        (89, "B", False),
        (90, "A", False),
        (80, "B", False),
        (75, "B", False),
        (65, "C", True),
        (60, "C", True),
        (59, "D", True),
    ]
    s = standing(community, "m3")
    assert s.review_reasons == ["tier D", "3 verified hazards in 90 days"]
    correct(+30, 9)  # 89: B; the hazards still count
    assert seen[-1] == (89, "B", True)
    # 90 days after the first hazard (t0 + 1.5 h) it leaves the window and the tick clears the flag; by then
    # two clean periods since the last deduction (t0 + 8 h) restored 2 + 2
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.run_score_tick(conn, now=t0 + timedelta(days=90, hours=1))
    assert standing(community, "m3").review, "t0 + 90 d + 1 h: the first hazard is still inside the window"
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.run_score_tick(conn, now=t0 + timedelta(days=90, hours=2))
    s = standing(community, "m3")
    assert (s.score, s.tier, s.review, s.hazards_in_window) == (93, "A", False, 2)

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.add_correction(
            conn,
            merchant_id="m1",
            actor="admin:1",
            points=-30,
            reason="walk m1 into tier C",
            now=t0 + timedelta(days=90, hours=3),
        )
    listing = _community(community)
    assert [(m.merchant_id, m.score, m.tier) for m in listing.merchants] == [
        ("m1", 70, "C"),
        ("m3", 93, "A"),
        ("m2", 100, "A"),
    ]
    assert listing.tiers == {"A": 2, "B": 0, "C": 1, "D": 0}
    with psycopg.connect(community.dsn) as conn:
        only_c = score_service.list_community_scores(conn, community_id="c1", tier="C")
    assert [m.merchant_id for m in only_c.merchants] == ["m1"]


def _community(settings: Settings) -> score_service.CommunityScoresRead:
    with psycopg.connect(settings.dsn) as conn:
        return score_service.list_community_scores(conn, community_id="c1")


def test_findings_on_time_cost_less_than_late(community: Settings) -> None:
    t0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        on_time = score_service.record_finding(
            conn, site_id="s1", kind="blocked_exit", actor="w1", note="boxes in the back exit", now=t0
        )
        late = score_service.record_finding(conn, site_id="s3", kind="flammables_in_stairwell", actor="w1", now=t0)
        wiring = score_service.record_finding(conn, site_id="s2", kind="illegal_wiring", actor="w1", now=t0)
    assert on_time.due_at == t0 + timedelta(days=1) and not on_time.overdue
    assert ledger(community, "m1") == [("M-D10", -10)]
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        closed = score_service.close_finding(
            conn, finding_id=on_time.id, actor="w1", note="cleared", now=t0 + timedelta(hours=20)
        )
        score_service.close_finding(conn, finding_id=late.id, actor="w1", now=t0 + timedelta(days=1, hours=2))
    assert closed.closed_by == "w1" and not closed.overdue
    assert ledger(community, "m1") == [("M-D10", -10), ("M-R02", 5)]
    assert ledger(community, "m3") == [("M-D10", -10), ("M-D12", -5)]
    assert standing(community, "m1").score > standing(community, "m3").score

    # the tick charges a still-open finding per started week overdue; closing later adds no double charge
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.run_score_tick(conn, now=t0 + timedelta(days=3))
        items = score_service.get_open_items(conn, merchant_id="m2", now=t0 + timedelta(days=3))
    assert [(f.kind, f.overdue) for f in items.findings] == [("illegal_wiring", False)]
    assert ledger(community, "m2") == [("M-D16", -10)], "due at t0+3d: not overdue at the deadline itself"
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.run_score_tick(conn, now=t0 + timedelta(days=10, hours=1))
        score_service.close_finding(conn, finding_id=wiring.id, actor="w1", now=t0 + timedelta(days=10, hours=2))
    assert ledger(community, "m2") == [("M-D16", -10), ("M-D12", -5), ("M-D12", -5)]

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        with pytest.raises(ConflictError, match="already closed"):
            score_service.close_finding(conn, finding_id=wiring.id, actor="w1")
        with pytest.raises(score_service.InvalidScoreInput, match="unknown finding kind 'messy'"):
            score_service.record_finding(conn, site_id="s1", kind="messy", actor="w1")
        naive = datetime(2030, 1, 1)  # noqa: DTZ001 - naive on purpose
        with pytest.raises(score_service.InvalidScoreInput, match="time zone"):
            score_service.record_finding(conn, site_id="s1", kind="blocked_exit", actor="w1", due_at=naive)
        with pytest.raises(ConflictError, match="belongs to no merchant"):
            score_service.record_finding(conn, site_id="b1", kind="blocked_exit", actor="w1")
        with pytest.raises(NotFoundError):
            score_service.record_finding(conn, site_id="nope", kind="blocked_exit", actor="w1")


def test_corrections_are_compensating_entries_and_the_ledger_is_append_only(community: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    alarm = raise_alarm(
        community, "gas-m1", DeviceKind.GAS_DETECTOR, Location.KITCHEN, "s1", "tamper", Severity.MAJOR, t0
    )
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        rules_service.acknowledge(conn, alarm_id=alarm, actor="w1", now=t0 + timedelta(minutes=1))
    resolve(community, alarm, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=10))
    (entry,) = q(community, "SELECT id, points, lock_until FROM score_entry WHERE merchant_id = 'm1'")
    assert entry["points"] == -15 and entry["lock_until"] is not None
    assert standing(community, "m1").locked_until is not None

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        with pytest.raises(score_service.InvalidScoreInput, match="reason"):
            score_service.add_correction(
                conn, merchant_id="m1", actor="admin:1", reason="oops", corrects_entry_id=entry["id"]
            )
        fix = score_service.add_correction(
            conn,
            merchant_id="m1",
            actor="admin:1",
            reason="detector was moved by the landlord, not the merchant",
            corrects_entry_id=entry["id"],
            now=t0 + timedelta(days=1),
        )
    assert (fix.points, fix.code, fix.corrects_id, fix.alarm_id, fix.actor) == (
        15,
        "ADJ",
        entry["id"],
        alarm,
        "admin:1",
    )
    s = standing(community, "m1")
    assert (s.score, s.locked_until, s.hazards_in_window) == (100, None, 0)
    with (
        psycopg.connect(community.dsn) as conn,
        conn.transaction(),
        pytest.raises(ConflictError, match="already been reversed"),
    ):
        score_service.add_correction(
            conn, merchant_id="m1", actor="admin:1", reason="again, by mistake", corrects_entry_id=entry["id"]
        )
    with psycopg.connect(community.dsn) as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("UPDATE score_entry SET points = 0 WHERE id = %s", (entry["id"],))
    with psycopg.connect(community.dsn) as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        conn.execute("DELETE FROM score_entry")

    with psycopg.connect(community.dsn) as conn:
        page = score_service.get_ledger(conn, merchant_id="m1", limit=1)
        trend = score_service.get_trend(conn, merchant_id="m1", since=t0)
    assert [e.code for e in page.items] == ["ADJ"] and page.next_before == fix.id
    assert [(p.score, p.code) for p in trend] == [(100, None), (85, "M-D04"), (100, "ADJ")]


def test_upkeep_left_undone_follows_the_policy_table(community: Settings) -> None:
    """low_battery is raised through rules.service.record_transition (its rule is the rules engineer's)."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    raise_alarm(
        community, "smoke-m2", DeviceKind.SMOKE_DETECTOR, Location.STORAGE, "s2", "low_battery", Severity.MINOR, t0
    )
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        assert score_service.run_score_tick(conn, now=t0 + timedelta(days=6)).written == {}
        assert score_service.run_score_tick(conn, now=t0 + timedelta(days=8)).written == {"M-D05": 1}
        assert score_service.run_score_tick(conn, now=t0 + timedelta(days=20)).written == {}
    assert ledger(community, "m2") == [("M-D05", -5)]


def test_recomputing_every_score_from_the_ledger_gives_the_stored_scores(community: Settings) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
    for i, (device, kind, loc, site, alarm_type, sev, disposition) in enumerate(
        [
            (
                "gas-m1",
                DeviceKind.GAS_DETECTOR,
                Location.KITCHEN,
                "s1",
                "gas_leak",
                Severity.CRITICAL,
                Disposition.REAL_HAZARD,
            ),
            (
                "sock-m2",
                DeviceKind.SMART_SOCKET,
                Location.STAIRWELL,
                "s2",
                "ebike_indoor_charging",
                Severity.MAJOR,
                Disposition.REAL_HAZARD,
            ),
            (
                "sock-m2",
                DeviceKind.SMART_SOCKET,
                Location.STAIRWELL,
                "s2",
                "ebike_indoor_charging",
                Severity.MAJOR,
                Disposition.TEST,
            ),
            (
                "gas-m3",
                DeviceKind.GAS_DETECTOR,
                Location.KITCHEN,
                "s3",
                "gas_leak",
                Severity.CRITICAL,
                Disposition.REAL_HAZARD,
            ),
            (
                "sock-m2",
                DeviceKind.SMART_SOCKET,
                Location.STAIRWELL,
                "s2",
                "tamper",
                Severity.MAJOR,
                Disposition.REAL_HAZARD,
            ),
        ]
    ):
        at = t0 + timedelta(days=7 * i)
        alarm = raise_alarm(community, device, kind, loc, site, alarm_type, sev, at)
        resolve(community, alarm, disposition, now=at + timedelta(hours=2))
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        score_service.record_finding(conn, site_id="s3", kind="overnight_staff", actor="w1", now=t0)
        for days in (10, 45, 80, 130, 199):
            score_service.run_score_tick(conn, now=t0 + timedelta(days=days))
    now = t0 + timedelta(days=199)

    with psycopg.connect(community.dsn) as conn, conn.transaction():
        report = score_service.recompute_all(conn, now=now)
    assert (report.merchants, report.compared, report.mismatches) == (3, 3, [])
    # an independent check of the formula: base + sum, clamped
    sums = {
        r["merchant_id"]: max(0, min(100, 100 + r["total"]))
        for r in q(community, "SELECT merchant_id, sum(points)::int AS total FROM score_entry GROUP BY merchant_id")
    }
    stored = {r["merchant_id"]: r["score"] for r in q(community, "SELECT merchant_id, score FROM merchant_score")}
    assert stored == {"m1": sums.get("m1", 100), "m2": sums["m2"], "m3": sums["m3"]}
    assert len({*stored.values()}) > 1 and min(stored.values()) < 90, "a non-trivial ledger"

    # a snapshot edited by hand is caught and rewritten from the ledger
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        conn.execute("UPDATE merchant_score SET score = score + 7, tier = 'A' WHERE merchant_id = 'm2'")
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        report = score_service.recompute_all(conn, now=now)
    assert sorted((m.merchant_id, m.field) for m in report.mismatches) == [("m2", "score"), ("m2", "tier")]
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        assert score_service.recompute_all(conn, now=now).mismatches == []
    assert {
        r["merchant_id"]: r["score"] for r in q(community, "SELECT merchant_id, score FROM merchant_score")
    } == stored


def test_cli_score_show_and_recompute(community: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.cli import app

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    alarm = raise_alarm(
        community, "gas-m1", DeviceKind.GAS_DETECTOR, Location.KITCHEN, "s1", "gas_leak", Severity.CRITICAL, t0
    )
    resolve(community, alarm, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=3))
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", community.dsn)
    runner = CliRunner()
    shown = runner.invoke(app, ["score", "show", "m1"])
    assert shown.exit_code == 0, shown.output
    assert "m1 Noodle shop: 90 (tier A, " in shown.output
    assert "M-D02" in shown.output and f"alarm {alarm}" in shown.output
    recomputed = runner.invoke(app, ["score", "recompute"])
    assert recomputed.exit_code == 0, recomputed.output
    assert "3 merchants, 1 compared, 0 mismatches" in recomputed.output
    missing = runner.invoke(app, ["score", "show", "nobody"])
    assert missing.exit_code == 2 and "merchant nobody does not exist" in missing.output


def test_the_score_tick_runs_with_the_rules_part(community: Settings) -> None:
    """`gridwatch serve` starts the score ticker with the rules timer; it derives every merchant's standing."""
    fast = community.model_copy(update={"score_tick_s": 0.2})
    running = start_services(fast, ("rules",))
    try:
        wait_for(lambda: running.parts["score"].ticks >= 1, what="a score tick")
    finally:
        running.stop()
    assert running.parts["score"].checks()[0].detail == "not running"
    rows = q(community, "SELECT merchant_id, score, tier, review FROM merchant_score ORDER BY merchant_id")
    assert [(r["merchant_id"], r["score"], r["tier"], r["review"]) for r in rows] == [
        ("m1", 100, "A", False),
        ("m2", 100, "A", False),
        ("m3", 100, "A", False),
    ]


@pytest.mark.allow_error_logs
def test_a_scoring_failure_never_blocks_the_resolution_and_the_score_part_catches_up(
    community: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger refuses writes for a while (a trigger injected into this test's own database): the worker's
    resolution commits (rules never touch the ledger), the score part's failure is logged and retried, and once
    the ledger takes writes again the score part writes the missing entry, woken by the resolution's NOTIFY."""
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    alarm = raise_alarm(
        community, "gas-m1", DeviceKind.GAS_DETECTOR, Location.KITCHEN, "s1", "gas_leak", Severity.CRITICAL, t0
    )
    with psycopg.connect(community.dsn) as conn, conn.transaction():
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'ledger disk full (injected)'; END $$"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON score_entry FOR EACH ROW EXECUTE FUNCTION refuse()")
    worker = ScoreWorker(community.dsn, interval_s=3600, poll_s=0.2)
    worker.start()
    try:
        resolve(community, alarm, Disposition.REAL_HAZARD, now=t0 + timedelta(minutes=2), score=False)
        assert q(community, "SELECT disposition FROM alarm WHERE id = %s", alarm) == [{"disposition": "real_hazard"}]
        wait_for(
            lambda: any("score failed" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records),
            timeout=10,
            what="the score part's failure logged",
        )
        assert ledger(community, "m1") == []
        with psycopg.connect(community.dsn) as conn, conn.transaction():
            conn.execute("DROP TRIGGER refuse ON score_entry")
        wait_for(lambda: ledger(community, "m1"), timeout=20, what="the missing entry written")
        assert worker.checks()[0].ok
    finally:
        worker.stop()
    (entry,) = q(community, "SELECT code, alarm_id, actor, at FROM score_entry")
    assert (entry["code"], entry["alarm_id"], entry["actor"], entry["at"]) == (
        "M-D02",
        alarm,
        "w1",
        t0 + timedelta(minutes=2),
    )
    assert standing(community, "m1").score == 90
