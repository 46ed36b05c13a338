"""Issue 18, must show 3: in an alarm storm a life-safety alarm is not held back by minor transitions, on the real
database: the ingest never waits on notify's routing (and the two cannot deadlock), the router commits the most
severe rows first, one severity a transaction, and pauses between minor batches unless a severe row arrives, the
deliverers take the most severe message first, and routing reads only the workers it can pick."""

from __future__ import annotations

import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from core import repo as core_repo
from core.db import OUTBOX_CHANNEL
from core.domain import Reading
from core.settings import Settings
from notify import repo as notify_repo
from notify import service as notify_service
from notify import worker as notify_worker
from notify.policy import load_policy
from notify.worker import NotifyWorker, _Router
from rules import service as rules_service
from rules.ruleset import default_rules
from tests.support import feed, load_registry, meeting_orphans

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: Storm community}
    grids:
      - id: g1
        name: Grid one
        micro_grids:
          - {id: mg1, name: Micro one}
      - id: g2
        name: Grid two
        micro_grids:
          - {id: mg2, name: Micro two}
    workers:
      - {id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["json://127.0.0.1:9/w1"]}
      - {id: w2, name: Li, role: micro_grid_worker, micro_grids: [mg2], notify: ["json://127.0.0.1:9/w2"]}
      - {id: w3, name: Chen, role: micro_grid_worker, micro_grids: [mg2], on_call: true,
         notify: ["json://127.0.0.1:9/w3"]}
      - {id: lead1, name: Leader one, role: grid_leader, grids: [g1], notify: ["json://127.0.0.1:9/lead1"]}
      - {id: lead2, name: Leader two, role: grid_leader, grids: [g2], notify: ["json://127.0.0.1:9/lead2"]}
      - {id: duty, name: Duty office, role: community_duty, notify: ["json://127.0.0.1:9/duty"]}
    sites:
      - {id: s1, kind: building, micro_grid: mg1, name: Block 1, address: 1 Lane}
    devices:
      - {id: smk-1, kind: smoke_detector, site: s1, location: corridor, battery: true}
      - {id: smk-2, kind: smoke_detector, site: s1, location: stairwell, battery: true}
      - {id: smk-3, kind: smoke_detector, site: s1, location: room, battery: true}
      - {id: smk-4, kind: smoke_detector, site: s1, location: room, battery: true}
    """)


@pytest.fixture
def storm(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


def _outbox(settings: Settings) -> list[tuple[str, int, bool]]:
    with psycopg.connect(settings.dsn) as conn:
        rows = conn.execute(
            "SELECT a.device_id, o.severity, o.routed_at IS NOT NULL FROM outbox o JOIN alarm a ON a.id = o.alarm_id"
            " ORDER BY o.id"
        ).fetchall()
    return [(d, s, r) for d, s, r in rows]


def test_the_ingest_does_not_wait_on_an_alarm_that_notify_is_routing(storm: Settings) -> None:
    """notify's inserts (notifications, events, ladders) hold a key-share lock on their alarm until they commit;
    the ingest's lock on an open alarm must not wait for them (it waited for a whole routing batch, and the two
    deadlocked when notify then needed a row the ingest held)."""
    (raised,) = feed(storm, "smk-1", T0, battery_pct=10.0)
    with psycopg.connect(storm.dsn) as notify_conn:
        notify_conn.execute(
            "INSERT INTO alarm_event (alarm_id, at, kind, actor) VALUES (%s, now(), 'escalated', 'notify')",
            (raised.alarm_id,),
        )  # open transaction: notify's key-share lock on the alarm is held
        started = time.monotonic()
        with psycopg.connect(storm.dsn, options="-c lock_timeout=3000") as ingest_conn, ingest_conn.transaction():
            (cleared,) = feed_on(ingest_conn, "smk-1", T0 + timedelta(minutes=1), battery_pct=60.0)
        assert time.monotonic() - started < 2.0
        notify_conn.rollback()
    assert cleared.kind == "cleared" and cleared.alarm_id == raised.alarm_id


def feed_on(
    conn: psycopg.Connection[Any], device: str, at: datetime, **fields: float
) -> list[rules_service.AlarmChange]:
    """One reading through the rules transaction on a given connection (feed() opens its own)."""
    devices = core_repo.get_devices(conn, ids=[device])
    reading = Reading(device_id=device, ts=at, received_at=at, **fields)
    return rules_service.apply_readings(conn, readings=[reading], devices=devices, ruleset=default_rules())


def test_the_router_commits_the_most_severe_rows_first_one_severity_a_transaction(storm: Settings) -> None:
    for n, device in enumerate(("smk-2", "smk-3", "smk-4")):
        feed(storm, device, T0 + timedelta(seconds=n), battery_pct=10.0)  # low_battery: minor
    feed(storm, "smk-1", T0 + timedelta(seconds=5), smoke=True)  # smoke: critical, queued last
    policy = load_policy(storm.notify_policy)
    now = datetime.now(UTC)
    with psycopg.connect(storm.dsn) as conn:
        first = notify_service.route_outbox(conn, policy=policy, now=now)
    assert first == notify_service.Routed(rows=1, severity=4)
    assert [(d, routed) for d, _, routed in _outbox(storm)] == [
        ("smk-2", False),
        ("smk-3", False),
        ("smk-4", False),
        ("smk-1", True),
    ], "the smoke alarm is committed alone, before any battery row"
    with psycopg.connect(storm.dsn) as conn:
        second = notify_service.route_outbox(conn, policy=policy, now=now)
    assert second == notify_service.Routed(rows=3, severity=2)
    assert all(routed for _, _, routed in _outbox(storm))
    assert meeting_orphans(storm.dsn) == 0, "rules' and notify's events and outbox rows name their alarms and events"


def test_deliverers_take_the_most_severe_message_first(storm: Settings) -> None:
    policy = load_policy(storm.notify_policy)
    now = datetime.now(UTC)
    # A heat alarm (major, life-safety: sent at once) is routed first; a smoke alarm (critical) a second later.
    feed(storm, "smk-2", T0, temp_c=60.0)
    feed(storm, "smk-2", T0 + timedelta(seconds=11), temp_c=61.0)
    with psycopg.connect(storm.dsn) as conn:
        assert notify_service.route_outbox(conn, policy=policy, now=now).severity == 3
    feed(storm, "smk-1", T0 + timedelta(seconds=12), smoke=True)
    with psycopg.connect(storm.dsn) as conn:
        assert notify_service.route_outbox(conn, policy=policy, now=now + timedelta(seconds=1)).severity == 4
        with conn.transaction():
            (first,) = notify_repo.claim_due(conn, now=now + timedelta(seconds=2), limit=1)
        alarm_type = conn.execute("SELECT type FROM alarm WHERE id = %s", (first.alarm_id,)).fetchone()
    assert alarm_type == ("smoke",), "the critical message goes before an older major one"


def test_the_router_pauses_between_minor_batches_but_wakes_for_a_severe_row(storm: Settings) -> None:
    router = _Router(NotifyWorker(storm))
    listen, conn = router.open()
    try:

        def send_later(payload: str) -> None:
            time.sleep(0.3)
            with psycopg.connect(storm.dsn, autocommit=True) as other:
                other.execute("SELECT pg_notify(%s, %s)", (OUTBOX_CHANNEL, payload))

        for payload, woke in (("2", False), ("4", True), ("", True)):
            sender = threading.Thread(target=send_later, args=(payload,))
            started = time.monotonic()
            sender.start()
            router._pause(listen, 1.5)
            took = time.monotonic() - started
            sender.join()
            assert (took < 1.2) is woke, f"payload {payload!r}: paused {took:.2f} s"
    finally:
        router.close((listen, conn))


def test_routing_reads_only_the_workers_it_can_pick(storm: Settings) -> None:
    with psycopg.connect(storm.dsn) as conn:
        workers = core_repo.get_community_workers(conn, community_id="c1", grid_id="g1", micro_grid_id="mg1")
    by_id = {w.id: w for w in workers}
    # w2 covers another grid and is not on call, lead2 leads another grid: routing for mg1 can pick neither.
    assert sorted(by_id) == ["duty", "lead1", "w1", "w3"]
    assert by_id["w1"].covers_micro_grid and by_id["w1"].covers_grid
    assert by_id["lead1"].leads_grid and not by_id["lead1"].covers_grid
    assert not by_id["w3"].covers_grid and by_id["w3"].on_call


def test_a_batch_of_minor_rows_is_committed_once_its_time_is_up(
    storm: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n, device in enumerate(("smk-2", "smk-3", "smk-4")):
        feed(storm, device, T0 + timedelta(seconds=n), battery_pct=10.0)
    monkeypatch.setattr(notify_service, "MINOR_BATCH_S", 0.0)  # every minor row takes longer than that
    policy = load_policy(storm.notify_policy)
    with psycopg.connect(storm.dsn) as conn:
        batches = [notify_service.route_outbox(conn, policy=policy, now=datetime.now(UTC)) for _ in range(4)]
    assert batches == [(1, 2), (1, 2), (1, 2), (0, 0)], "one row a transaction; the rest are claimed next time"
    assert all(routed for _, _, routed in _outbox(storm))


def test_the_first_deliverer_takes_only_messages_sent_at_once(storm: Settings) -> None:
    policy = load_policy(storm.notify_policy)
    feed(storm, "smk-2", T0, battery_pct=10.0)  # low_battery: held for grouping, not sent at once
    now = datetime.now(UTC)
    with psycopg.connect(storm.dsn) as conn:
        notify_service.route_outbox(conn, policy=policy, now=now)
        later = now + timedelta(hours=1)  # past any grouping window
        with conn.transaction():
            assert notify_repo.claim_due(conn, now=later, limit=8, immediate_only=True) == []
            (minor,) = notify_repo.claim_due(conn, now=later, limit=8)
        assert not minor.immediate
    feed(storm, "smk-1", T0 + timedelta(seconds=5), smoke=True)
    with psycopg.connect(storm.dsn) as conn:
        notify_service.route_outbox(conn, policy=policy, now=now)
        with conn.transaction():
            urgent = notify_repo.claim_due(conn, now=later, limit=8, immediate_only=True)
    assert [n.immediate for n in urgent] == [True] * len(urgent) and urgent


def test_a_router_step_ends_while_a_backlog_is_left_and_the_next_goes_on(
    storm: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm's backlog takes minutes to route: each step must end within its budget (the loop's health sees
    steps complete) and ask for the next at once, not sleep until the poll interval."""
    for n, device in enumerate(("smk-2", "smk-3", "smk-4")):
        feed(storm, device, T0 + timedelta(seconds=n), battery_pct=10.0)
    monkeypatch.setattr(notify_service, "MINOR_BATCH_S", 0.0)  # a row a batch
    monkeypatch.setattr(notify_worker, "STEP_S", 0.0)  # a batch a step
    router = _Router(NotifyWorker(storm))
    held = router.open()
    try:
        assert router.step(held) == 0.0
        assert [routed for _, _, routed in _outbox(storm)] == [True, False, False]
        router.step(held)
        router.step(held)
        assert all(routed for _, _, routed in _outbox(storm))
    finally:
        router.close(held)
