"""Port lockout way out and manual commands, through the real pipeline: a charging port over temperature is cut
and locked by the rules (real broker, ingest, actuator, database); a remote restore is refused with 409 until a
worker covering the site clears the lock with a note; then restore_power is queued and reaches the device."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from api import auth
from api.app import create_app
from core import repo as core_repo
from core.registry import parse_registry
from core.settings import Settings
from ingest.worker import IngestWorker
from tests.support import Publisher, make_actuator, wait_for
from tests.test_rules_scenarios import SimulatedValve, ago_ms, q, send, start_ingest

REGISTRY = textwrap.dedent("""\
    community: {id: c1, name: Test community}
    grids:
      - id: g1
        name: Grid one
        micro_grids:
          - {id: mg1, name: Micro one}
          - {id: mg2, name: Micro two}
    workers:
      - {id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["json://127.0.0.1:9/w1"]}
      - {id: w2, name: Li, role: micro_grid_worker, micro_grids: [mg2], notify: ["json://127.0.0.1:9/w2"]}
    merchants:
      - {id: m1, name: Noodle shop}
    sites:
      - {id: shed, kind: charging_shed, micro_grid: mg1, merchant: m1, name: Shed}
      - {id: kitchen, kind: shop, micro_grid: mg1, merchant: m1, name: Noodle shop}
    devices:
      - {id: port-1, kind: charging_port, site: shed, location: charging_shed, report_interval_s: 90}
      - {id: valve-k, kind: gas_valve, site: kitchen, location: kitchen, report_interval_s: 300}
      - {id: smoke-k, kind: smoke_detector, site: kitchen, location: kitchen, report_interval_s: 300}
    """)


class Env:
    def __init__(self, settings: Settings, client: TestClient, tokens: dict[str, str]) -> None:
        self.settings, self.client, self.tokens = settings, client, tokens

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@pytest.fixture
def env(settings: Settings) -> Iterator[Env]:
    key = settings.secret_key.get_secret_value()
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=parse_registry(REGISTRY))
        tokens = {
            "admin": auth.create_token(conn, secret_key=key, role="admin"),
            "w1": auth.create_token(conn, secret_key=key, role="worker", worker_id="w1"),
            "w2": auth.create_token(conn, secret_key=key, role="worker", worker_id="w2"),
            "m1": auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m1"),
        }
    pool = ConnectionPool(settings.dsn, min_size=1, max_size=4, open=True, name="test-device-actions")
    try:
        with TestClient(create_app(settings, pool), base_url="https://testserver") as client:
            yield Env(settings, client, tokens)
    finally:
        pool.close()


@pytest.fixture
def pipeline(env: Env) -> Iterator[IngestWorker]:
    worker = start_ingest(env.settings)
    actuator = make_actuator(env.settings, poll_s=0.05)
    actuator.start()
    yield worker
    actuator.stop()
    worker.stop()


def overheat(env: Env, publisher: Publisher) -> None:
    """port-1 charging at 70 C for 2 minutes (EB-03: >= 65 C for 30 s -> cut_power, lock)."""
    send(
        publisher,
        env.settings,
        "port-1",
        [(i * 10, {"power_w": 180, "temp_c": 70, "relay": "on"}) for i in range(12)],
        ago_ms(300),
    )


def test_overtemp_lock_refuses_remote_restore_until_a_worker_clears_it(
    env: Env, pipeline: IngestWorker, publisher: Publisher, services: Any
) -> None:
    port = SimulatedValve(env.settings, services.mqtt_port, "port-1")  # acks, reports relay off on cut_power
    try:
        overheat(env, publisher)
        wait_for(
            lambda: ("cut_power", "confirmed") in q(env.settings, "SELECT action, status FROM command"),
            timeout=20,
            what="cut confirmed",
        )
        assert "charging_overtemp" in [r[0] for r in q(env.settings, "SELECT type FROM alarm")]
        c = env.client
        lock = c.get("/api/v1/devices/port-1/lock", headers=env.h("m1")).json()
        assert lock["locked"] is True and lock["reason"] and lock["locked_at"], lock

        # remote restore refused for everyone while locked, with what to do
        for who in ("w1", "admin"):
            r = c.post(
                "/api/v1/devices/port-1/commands",
                headers=env.h(who),
                json={"action": "restore_power", "reason": "owner asked by phone"},
            )
            assert r.status_code == 409, r.text
            assert "locked" in r.json()["detail"] and "clear the lock on site" in r.json()["detail"]
        assert (
            c.post("/api/v1/devices/port-1/commands", headers=env.h("m1"), json={"action": "restore_power"}).status_code
            == 403
        )
        # a worker of another micro-grid cannot tell the port exists; a merchant may not unlock
        assert c.post("/api/v1/devices/port-1/unlock", headers=env.h("w2"), json={"note": "x"}).status_code == 404
        assert c.post("/api/v1/devices/port-1/unlock", headers=env.h("m1"), json={"note": "x"}).status_code == 403
        assert c.post("/api/v1/devices/port-1/unlock", headers=env.h("w1"), json={}).status_code == 422
        assert q(env.settings, "SELECT count(*) FROM command WHERE action = 'restore_power'") == [(0,)]

        r = c.post("/api/v1/devices/port-1/unlock", headers=env.h("w1"), json={"note": "bike checked, battery removed"})
        assert r.status_code == 200 and r.json()["locked"] is False, r.text
        assert q(env.settings, "SELECT cleared_by, note FROM port_lock") == [("w1", "bike checked, battery removed")]
        again = c.post("/api/v1/devices/port-1/unlock", headers=env.h("w1"), json={"note": "again"})
        assert again.status_code == 409 and "not locked" in again.json()["detail"]

        r = c.post(
            "/api/v1/devices/port-1/commands",
            headers=env.h("w1"),
            json={"action": "restore_power", "reason": "cleared on site"},
        )
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "pending" and r.json()["requested_by"] == "w1"
        wait_for(
            lambda: "restore_power" in [cmd["action"] for cmd in port.commands],
            timeout=10,
            what="restore_power published to the port",
        )
    finally:
        port.close()


def test_command_policy_refusals_are_409_with_a_reason(env: Env) -> None:
    c = env.client
    r = c.post("/api/v1/devices/valve-k/commands", headers=env.h("admin"), json={"action": "open_valve"})
    assert r.status_code == 409 and "by hand on site" in r.json()["detail"]
    r = c.post("/api/v1/devices/smoke-k/commands", headers=env.h("w1"), json={"action": "cut_power"})
    assert r.status_code == 409 and "smoke_detector" in r.json()["detail"]
    r = c.post("/api/v1/devices/valve-k/commands", headers=env.h("w1"), json={"action": "reopen"})
    assert r.status_code == 422
    ok = c.post("/api/v1/devices/smoke-k/commands", headers=env.h("w1"), json={"action": "silence"})
    assert ok.status_code == 201 and ok.json()["action"] == "silence"
    ok = c.post("/api/v1/devices/valve-k/commands", headers=env.h("w1"), json={"action": "close_valve"})
    assert ok.status_code == 201
    assert (
        c.post("/api/v1/devices/smoke-k/commands", headers=env.h("w2"), json={"action": "self_test"}).status_code == 404
    )
    assert sorted(q(env.settings, "SELECT action, requested_by FROM command")) == [
        ("close_valve", "w1"),
        ("silence", "w1"),
    ]


def _login(client: TestClient, token: str) -> str:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post(
        "/login", data={"token": token, "csrf": csrf.group(1), "next": "/devices/port-1"}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    page = client.get("/devices/port-1")
    meta = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
    assert meta
    return meta.group(1)


def test_device_page_unlock_button_with_csrf(env: Env) -> None:
    with psycopg.connect(env.settings.dsn) as conn, conn.transaction():
        conn.execute("INSERT INTO port_lock (device_id, reason, locked_at) VALUES ('port-1', 'EB-03 test', now())")
    c = env.client
    csrf = _login(c, env.tokens["w1"])
    page = c.get("/devices/port-1").text
    assert 'id="unlock-form"' in page and 'id="command-form"' in page and 'value="restore_power"' in page
    # without the CSRF token the form is refused and the lock stays
    assert c.post("/devices/port-1/unlock", data={"note": "checked"}, follow_redirects=False).status_code == 403
    refused = c.post("/devices/port-1/commands", data={"csrf": csrf, "action": "restore_power"}, follow_redirects=False)
    assert refused.status_code == 409 and "locked" in refused.text
    r = c.post("/devices/port-1/unlock", data={"csrf": csrf, "note": "battery removed"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/devices/port-1?done=unlocked"
    assert 'id="unlock-form"' not in c.get("/devices/port-1").text
    r = c.post("/devices/port-1/commands", data={"csrf": csrf, "action": "restore_power"}, follow_redirects=False)
    assert r.status_code == 303
    assert q(env.settings, "SELECT action, requested_by FROM command") == [("restore_power", "w1")]
    # a merchant sees the device page but no buttons
    m = TestClient(c.app, base_url="https://testserver")
    _login(m, env.tokens["m1"])
    assert 'id="command-form"' not in m.get("/devices/port-1").text
