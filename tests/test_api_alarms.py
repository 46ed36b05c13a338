"""Worker API: filters and pagination, detail with events and readings, acknowledge/resolve, validation errors
that name the field, and the live SSE stream respecting scope (driven by LISTEN on the outbox channel)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from api.app import create_app
from core.domain import Severity
from core.settings import Settings
from rules import service as rules_service
from tests.api_helpers import ApiEnv, api_env, live_server, raise_alarm
from tests.support import wait_for


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def test_filters_and_keyset_pagination(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        ids = [
            raise_alarm(conn, "gas-1", t, severity=sev)
            for t, sev in [("gas_leak", Severity.CRITICAL), ("gas_low", Severity.MAJOR), ("gas_drift", Severity.MINOR)]
        ]
        raise_alarm(conn, "gas-2", "gas_leak")
        rules_service.acknowledge(conn, alarm_id=ids[0], actor="w1")
    h = env.headers("w1")
    page1 = env.client.get("/api/v1/alarms?limit=2", headers=h).json()
    assert [a["id"] for a in page1["items"]] == [ids[2], ids[1]] and page1["next_before"] == ids[1]
    page2 = env.client.get(f"/api/v1/alarms?limit=2&before={page1['next_before']}", headers=h).json()
    assert [a["id"] for a in page2["items"]] == [ids[0]] and page2["next_before"] is None
    assert [a["id"] for a in env.client.get("/api/v1/alarms?severity=P2", headers=h).json()["items"]] == ids[1::-1]
    assert [a["id"] for a in env.client.get("/api/v1/alarms?acknowledged=false", headers=h).json()["items"]] == ids[
        :0:-1
    ]
    assert [a["type"] for a in env.client.get("/api/v1/alarms?type=gas_low", headers=h).json()["items"]] == ["gas_low"]
    assert env.client.get("/api/v1/alarms?site=s2", headers=h).json()["items"] == [], "s2 is not w1's"
    assert len(env.client.get("/api/v1/alarms", headers=env.headers("admin")).json()["items"]) == 4


BAD_QUERIES = [
    ("limit=0", "query.limit"),
    ("limit=abc", "query.limit"),
    ("status=closed", "query.status"),
    ("before=-3", "query.before"),
    ("severity=urgent", "severity"),
]


def test_validation_errors_name_the_field(env: ApiEnv) -> None:
    """One database for the whole table: each row is a request that must be refused naming its parameter."""
    for query, field in BAD_QUERIES:
        r = env.client.get(f"/api/v1/alarms?{query}", headers=env.headers("w1"))
        assert r.status_code == 422, query
        assert r.json()["detail"].startswith(field), (query, r.json())


def test_detail_ack_resolve_and_conflicts(env: ApiEnv) -> None:
    raised = datetime.now(UTC) - timedelta(minutes=5)
    with env.conn() as conn, conn.transaction():
        # seconds from the raise; the window is 10 min before it to 10 min after it was resolved (now = +5 min)
        for i, (dt, lel) in enumerate(
            [(-1200, 1.5), (-540, 3.0), (-60, 8.0), (0, 30.0), (60, 32.0), (400, 12.0), (1200, 1.0)]
        ):
            conn.execute(
                "INSERT INTO reading (device_id, ts, seq, received_at, gas_lel) VALUES (%s, %s, %s, %s, %s)",
                ("gas-1", raised + timedelta(seconds=dt), i, raised, lel),
            )
        alarm_id = raise_alarm(conn, "gas-1", at=raised)
    h = env.headers("w1")
    assert env.client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=h).json()["acknowledged_by"] == "w1"
    r = env.client.post(
        f"/api/v1/alarms/{alarm_id}/resolve",
        headers=h,
        json={"disposition": "real_hazard", "note": "hose cracked, valve closed"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["disposition"], r.json()["closed_by"]) == ("real_hazard", "w1")
    detail = env.client.get(f"/api/v1/alarms/{alarm_id}/detail", headers=h).json()
    assert [e["kind"] for e in detail["events"]] == ["raised", "acknowledged", "resolved"]
    assert detail["note"] == "hose cracked, valve closed"
    assert detail["site_name"] == "Noodle shop"
    lels = [r["values"]["gas_lel"] for r in detail["readings"]]
    assert lels == [3.0, 8.0, 30.0, 32.0, 12.0], detail["readings"]
    again = env.client.post(f"/api/v1/alarms/{alarm_id}/resolve", headers=h, json={"disposition": "test"})
    assert again.status_code == 409 and "already resolved by w1" in again.json()["detail"]
    assert env.client.post(f"/api/v1/alarms/{alarm_id}/ack", headers=h).status_code == 409
    bad = env.client.post(f"/api/v1/alarms/{alarm_id}/resolve", headers=h, json={"disposition": "fixed"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "body.disposition"
    extra = env.client.post(
        f"/api/v1/alarms/{alarm_id}/resolve", headers=h, json={"disposition": "test", "colour": "red"}
    )
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "body.colour"
    assert env.client.get("/api/v1/alarms/999999", headers=h).status_code == 404


class SseReader:
    """Reads `event: alarm` events from a live stream in a thread (plain urllib: a browser's view of SSE)."""

    def __init__(self, url: str, token: str) -> None:
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(target=self._run, args=(url, token), daemon=True)
        self._thread.start()

    def _run(self, url: str, token: str) -> None:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - http to our server
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                self._response = response
                assert response.headers["content-type"].startswith("text/event-stream")
                self.opened.set()
                event = None
                for raw in response:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "alarm":
                        self.events.append(json.loads(line[6:]))
        except (OSError, ValueError, AttributeError):  # close() from the test thread ends the read this way
            pass

    def close(self) -> None:
        if self._response is not None:
            self._response.close()


def test_live_stream_sends_changes_in_scope_only(loaded: Settings) -> None:
    with api_env(loaded) as env, live_server(create_app(loaded, env.pool)) as base:
        w1 = SseReader(f"{base}/api/v1/alarms/stream?max_s=30", env.tokens["w1"])
        m2 = SseReader(f"{base}/api/v1/alarms/stream?max_s=30", env.tokens["m2"])
        try:
            assert w1.opened.wait(5) and m2.opened.wait(5)
            with env.conn() as conn, conn.transaction():
                mine = raise_alarm(conn, "gas-1")
                theirs = raise_alarm(conn, "gas-2")  # mg2: not w1's
            got = wait_for(lambda: [e for e in w1.events if e["id"] == mine], timeout=10, what="w1 sees its alarm")
            assert got[0]["acknowledged"] is False
            with env.conn() as conn, conn.transaction():
                rules_service.acknowledge(conn, alarm_id=mine, actor="w1")
            wait_for(
                lambda: any(e["id"] == mine and e["acknowledged"] for e in w1.events),
                timeout=10,
                what="w1 sees the acknowledgement",
            )
            with env.conn() as conn, conn.transaction():
                m2_alarm = raise_alarm(conn, "gas-3")
            wait_for(lambda: [e for e in m2.events if e["id"] == m2_alarm], timeout=10, what="m2 sees its alarm")
            assert all(e["id"] != theirs for e in w1.events), "another micro-grid's alarm leaked to w1"
            assert {e["id"] for e in m2.events} == {m2_alarm}, "a merchant sees only its own sites"
        finally:
            w1.close()
            m2.close()
