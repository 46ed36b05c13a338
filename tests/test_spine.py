"""Issue 2, must show 2: a device message becomes a reading, an alarm, a notification and an ack."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import auth
from api.app import create_app
from app.services import Running, start_services
from core.settings import Settings
from tests.support import Publisher, Receiver, wait_for


@pytest.fixture
def running(loaded: Settings) -> Iterator[Running]:
    r = start_services(loaded, ("ingest", "notify"))
    wait_for(r.parts["ingest"].consumer.connected.is_set, what="ingest connected")
    yield r
    r.stop()


def token(settings: Settings, role: str, **kw: str) -> str:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        return auth.create_token(
            conn,
            secret_key=settings.secret_key.get_secret_value(),
            role=role,  # type: ignore[arg-type]
            **kw,
        )


def count(settings: Settings, sql: str, *args: object) -> int:
    with psycopg.connect(settings.dsn) as conn:
        row = conn.execute(sql, args).fetchone()
        assert row is not None
        return int(row[0])


def test_gas_message_to_alarm_notification_and_ack(
    loaded: Settings, running: Running, publisher: Publisher, receiver: Receiver
) -> None:
    topic = f"{loaded.topic_prefix}/gas-1/telemetry"
    # GAS-02 closes the valve on two samples >= 25 %LEL spanning 10 s (issue 19): the first was taken 10 s ago
    now_ms = int(time.time() * 1000)
    publisher.publish(topic, {"ts": now_ms - 10_000, "gas_lel": 30})
    started = time.monotonic()
    publisher.publish(topic, {"ts": now_ms, "gas_lel": 30})
    got = wait_for(lambda: receiver.for_path("w1"), timeout=5, what="notification to w1")
    assert time.monotonic() - started < 2.0, "the covering worker must hear within 2 s"
    assert "gas" in got[0]["title"].lower() or "燃气" in got[0]["title"]
    assert count(loaded, "SELECT count(*) FROM reading WHERE device_id = 'gas-1'") == 2

    with TestClient(create_app(loaded)) as client:
        w1 = {"Authorization": f"Bearer {token(loaded, 'worker', worker_id='w1')}"}
        w2 = {"Authorization": f"Bearer {token(loaded, 'worker', worker_id='w2')}"}
        alarms = client.get("/api/v1/alarms", headers=w1).json()["items"]
        assert [(a["device_id"], a["type"], a["severity"], a["active"]) for a in alarms] == [
            ("gas-1", "gas_leak", "critical", True)
        ]
        assert client.get("/api/v1/alarms", headers=w2).json()["items"] == []
        alarm_id = alarms[0]["id"]
        assert client.get(f"/api/v1/alarms/{alarm_id}", headers=w2).status_code == 404
        assert client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=w2).status_code == 404

        acked = client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=w1)
        assert acked.status_code == 200
        assert acked.json()["acknowledged_by"] == "w1"
        assert acked.json()["acknowledged_at"] is not None

        publisher.publish(topic, {"gas_lel": 32})
        wait_for(
            lambda: count(loaded, "SELECT count(*) FROM reading WHERE device_id = 'gas-1'") == 3, what="third reading"
        )
        again = client.get("/api/v1/alarms?status=all", headers=w1).json()["items"]
        assert len(again) == 1, "a repeat updates the open alarm, never a second one"
        assert again[0]["count"] == 2 and again[0]["peak_value"] == 32

    assert receiver.for_path("w2") == [], "a worker of another micro-grid hears nothing"
    # raised: one message; the acknowledgement is not told to the one who made it, and the repeat while active
    # sends none
    time.sleep(0.5)
    assert len(receiver.for_path("w1")) == 1


def test_gas_alarm_clears_with_hysteresis(loaded: Settings, running: Running, publisher: Publisher) -> None:
    topic = f"{loaded.topic_prefix}/gas-2/telemetry"
    t0 = 1_800_000_000_000  # epoch ms, event time
    now_ms = int(time.time() * 1000)
    base = now_ms - 10 * 60 * 1000
    # raised by two samples >= 25 %LEL spanning 10 s (issue 19)
    for i, (offset_s, lel) in enumerate([(0, 30), (10, 30), (40, 22), (70, 19), (100, 21), (110, 15), (180, 10)]):
        publisher.publish(topic, {"ts": base + offset_s * 1000, "seq": i, "gas_lel": lel})
    assert t0  # event time is the readings' own, not arrival time
    wait_for(lambda: count(loaded, "SELECT count(*) FROM reading WHERE device_id = 'gas-2'") == 7, what="readings")
    kinds = wait_for(
        lambda: (
            [
                r[0]
                for r in psycopg.connect(loaded.dsn)
                .execute(
                    "SELECT e.kind FROM alarm_event e JOIN alarm a ON a.id = e.alarm_id WHERE a.device_id = 'gas-2' ORDER BY e.id"
                )
                .fetchall()
            ]
            if count(loaded, "SELECT count(*) FROM alarm_event") >= 2
            else []
        ),
        what="events",
    )
    # 22 stays inside the band; 19 starts the clear timer, 21 (not below 20) stops it... 15 at +110 s and
    # 10 at +180 s complete 60 s below 20 counted from +110 s.
    assert kinds == ["raised", "cleared"]
