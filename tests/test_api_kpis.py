"""Issue 6, must show 4: KPIs computed on a seeded history match a hand-computed expectation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from core import repo as core_repo
from core.domain import Disposition, Severity
from core.settings import Settings
from rules import service as rules_service
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.support import set_device_state


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def seed_history(env: ApiEnv) -> datetime:
    """Grid g1 (mg1, mg2) and a second grid g2 (mg3) of community c1; returns T0, the window start."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    t0 = midnight - timedelta(days=40)
    day = timedelta(days=1)
    s = timedelta(seconds=1)
    with env.conn() as conn, conn.transaction():
        core_repo.upsert_grid(conn, id="g2", community_id="c1", name="Grid two")
        core_repo.upsert_micro_grid(conn, id="mg3", grid_id="g2", name="Micro three")
        core_repo.upsert_site(
            conn,
            id="s4",
            micro_grid_id="mg3",
            merchant_id=None,
            kind="building",
            name="Block 4",
            address="4 Lane",
            floor=None,
            flags=[],
            lpg=False,
        )
        core_repo.upsert_device(
            conn,
            id="gas-4",
            kind="gas_detector",
            site_id="s4",
            location="kitchen",
            adapter="native",
            foreign_id=None,
            battery=False,
            report_interval_s=300,
            gateway_id=None,
            model="",
            active=True,
        )

        def alarm(
            device: str,
            kind: str,
            at: datetime,
            ack_s: int | None,
            resolve_s: int | None,
            disposition: Disposition = Disposition.REAL_HAZARD,
        ) -> int:
            alarm_id = raise_alarm(conn, device, kind, severity=Severity.CRITICAL, at=at)
            if ack_s is not None:
                rules_service.acknowledge(conn, alarm_id=alarm_id, actor="w1", now=at + ack_s * s)
            if resolve_s is not None:
                rules_service.resolve(
                    conn, alarm_id=alarm_id, actor="w1", disposition=disposition, note=None, now=at + resolve_s * s
                )
            return alarm_id

        a1 = alarm("gas-1", "gas_leak", t0 + 1 * day, 60, 600)  # g1, real hazard
        a2 = alarm("gas-2", "gas_leak", t0 + 2 * day, 120, 1200, Disposition.FALSE_ALARM)  # g1
        alarm("smoke-1", "smoke", t0 + 3 * day, 300, None)  # g1, still open
        alarm("gas-1", "gas_low", t0 + 4 * day, None, None)  # g1, nobody acted
        a5 = alarm("gas-2", "gas_low", t0 - 1 * day, 10, None)  # before the window
        alarm("gas-4", "gas_leak", t0 + 5 * day, 30, 60)  # g2, real hazard

        def notification(alarm_id: int, worker: str, status: str) -> None:
            outbox = conn.execute("SELECT min(id) FROM outbox WHERE alarm_id = %s", (alarm_id,)).fetchone()
            assert outbox is not None and outbox[0] is not None
            conn.execute(
                "INSERT INTO notification (outbox_id, alarm_id, worker_id, status) VALUES (%s, %s, %s, %s)",
                (outbox[0], alarm_id, worker, status),
            )

        notification(a1, "w1", "failed")
        notification(a1, "w2", "failed")
        notification(a2, "w2", "sent")
        notification(a5, "w1", "failed")  # its alarm was raised before the window
        now = datetime.now(UTC)
        set_device_state(conn, "gas-1", online=False, status_at=now)
        set_device_state(conn, "gas-2", last_seen_at=now - timedelta(hours=1))
        # battery: 24 h interval, so an hour of silence is fine
        set_device_state(conn, "smoke-1", last_seen_at=now - timedelta(hours=1))
        set_device_state(conn, "gas-4", online=True, last_seen_at=now)
        # gas-3 (m2's shop in mg2) has never reported
    return t0


def test_kpis_match_the_hand_computed_history(env: ApiEnv) -> None:
    t0 = seed_history(env)
    window = {"since": t0.isoformat(), "until": (t0 + timedelta(days=30)).isoformat()}
    g1 = env.client.get("/api/v1/admin/kpis/grids/g1", params=window, headers=env.headers("admin"))
    assert g1.status_code == 200, g1.text
    k = g1.json()
    assert k["alarms"] == 4
    assert k["alarms_by_type"] == {"gas_leak": 2, "gas_low": 1, "smoke": 1}
    assert (k["acknowledged"], k["resolved"]) == (3, 2)
    # ack times 60, 120, 300 s: median 120; p90 at rank 0.9*(3-1)=1.8 -> 120 + 0.8*(300-120) = 264
    assert k["time_to_acknowledge"] == {"p50_s": pytest.approx(120), "p90_s": pytest.approx(264)}
    # resolve times 600, 1200 s: median 900; p90 at rank 0.9 -> 600 + 0.9*600 = 1140
    assert k["time_to_resolve"] == {"p50_s": pytest.approx(900), "p90_s": pytest.approx(1140)}
    assert k["unreached_notifications"] == 2
    # gas-1 said offline, gas-2 silent 1 h > 2 x 300 s; smoke-1 (battery, 24 h) fine; gas-3 never seen
    assert (k["devices"], k["devices_offline"], k["devices_never_seen"]) == (4, 2, 1)
    assert k["days_without_real_hazard"] == 39  # a1 was raised at T0 + 1 day = 39 days before today 00:00

    c1 = env.client.get("/api/v1/admin/kpis/communities/c1", params=window, headers=env.headers("admin")).json()
    assert c1["alarms"] == 5
    assert c1["alarms_by_type"] == {"gas_leak": 3, "gas_low": 1, "smoke": 1}
    # ack 30, 60, 120, 300: median 90; p90 rank 2.7 -> 120 + 0.7*180 = 246
    assert c1["time_to_acknowledge"] == {"p50_s": pytest.approx(90), "p90_s": pytest.approx(246)}
    # resolve 60, 600, 1200: median 600; p90 rank 1.8 -> 600 + 0.8*600 = 1080
    assert c1["time_to_resolve"] == {"p50_s": pytest.approx(600), "p90_s": pytest.approx(1080)}
    assert (c1["devices"], c1["devices_offline"], c1["devices_never_seen"]) == (5, 2, 1)
    assert c1["days_without_real_hazard"] == 35  # the g2 hazard at T0 + 5 days

    g2 = env.client.get("/api/v1/admin/kpis/grids/g2", params=window, headers=env.headers("admin")).json()
    assert (g2["alarms"], g2["unreached_notifications"], g2["time_to_resolve"]["p50_s"]) == (1, 0, 60)


def test_kpi_errors_name_the_parameter(env: ApiEnv) -> None:
    h = env.headers("admin")
    r = env.client.get(
        "/api/v1/admin/kpis/grids/g1",
        params={"since": "2026-01-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("since")
    r = env.client.get(
        "/api/v1/admin/kpis/grids/g1",
        params={"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
        headers=h,
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("until")
    r = env.client.get("/api/v1/admin/kpis/grids/g1", params={"since": "yesterday"}, headers=h)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.since"
    assert env.client.get("/api/v1/admin/kpis/grids/nope", headers=h).status_code == 404
    empty = env.client.get("/api/v1/admin/kpis/grids/g1", headers=h).json()
    assert empty["alarms"] == 0 and empty["time_to_acknowledge"] == {"p50_s": None, "p90_s": None}
    assert empty["days_without_real_hazard"] is None
