"""Helpers for the API and page tests: a seeded app with tokens per role, alarms through the real rules
service, and a real uvicorn server for streams and the browser."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from api import auth
from api.app import create_app
from core import repo as core_repo
from core.domain import Severity
from core.registry import parse_registry
from core.settings import Settings
from rules import service as rules_service
from rules.engine import Transition

ROLES = ("admin", "worker", "merchant")


@dataclass
class ApiEnv:
    """A migrated, loaded database, the app on a pool, a test client and one token per principal."""

    settings: Settings
    pool: ConnectionPool
    app: FastAPI
    client: TestClient
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | None) -> dict[str, str]:
        """Authorization for 'admin', 'w1', 'w2', 'm1', 'm2' (None: no credentials)."""
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    def conn(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.dsn)


def add_second_merchant(conn: psycopg.Connection[Any]) -> None:
    """m2 with a shop s3 in mg2 and a gas detector gas-3 there (the small registry has only m1)."""
    core_repo.upsert_merchant(conn, id="m2", community_id="c1", name="Tea house", contact="", phone="", notify=[])
    core_repo.upsert_site(
        conn,
        id="s3",
        micro_grid_id="mg2",
        merchant_id="m2",
        kind="shop",
        name="Tea house",
        address="3 Lane",
        floor=1,
        flags=[],
        lpg=False,
    )
    core_repo.upsert_device(
        conn,
        id="gas-3",
        kind="gas_detector",
        site_id="s3",
        location="kitchen",
        adapter="native",
        foreign_id=None,
        battery=False,
        report_interval_s=300,
        gateway_id=None,
        model="",
        active=True,
    )


# The registry's hierarchy above the small registry (tests/conftest.py): in c1 a second grid g2 (mg3, site s4,
# gas-4) beside g1 (mg1, mg2), a leader for each grid, the duty office and the fire station; a second community
# c2 (g9, mg9, site s9 of merchant m9, gas-9) with its own worker and duty office.
HIERARCHY_C1 = """\
community: {id: c1, name: Test community}
grids:
  - id: g1
    name: Grid one
    micro_grids: [{id: mg1, name: Micro one}, {id: mg2, name: Micro two}]
  - id: g2
    name: Grid two
    micro_grids: [{id: mg3, name: Micro three}]
workers:
  - {id: lead1, name: Leader one, role: grid_leader, grids: [g1], notify: ["json://127.0.0.1:9/lead1"]}
  - {id: lead2, name: Leader two, role: grid_leader, grids: [g2], notify: ["json://127.0.0.1:9/lead2"]}
  - {id: duty1, name: Duty office, role: community_duty, notify: ["json://127.0.0.1:9/duty1"]}
  - {id: fire1, name: Fire station, role: fire_station, notify: ["json://127.0.0.1:9/fire1"]}
sites:
  - {id: s4, kind: building, micro_grid: mg3, name: Block 4, address: 4 Lane}
devices:
  - {id: gas-4, kind: gas_detector, site: s4, location: kitchen}
"""
HIERARCHY_C2 = """\
community: {id: c2, name: Other community}
grids:
  - id: g9
    name: Grid nine
    micro_grids: [{id: mg9, name: Micro nine}]
workers:
  - {id: w9, name: Zhou, role: micro_grid_worker, micro_grids: [mg9], notify: ["json://127.0.0.1:9/w9"]}
  - {id: duty2, name: Other duty office, role: community_duty, notify: ["json://127.0.0.1:9/duty2"]}
merchants:
  - {id: m9, name: Hardware shop}
sites:
  - {id: s9, kind: shop, micro_grid: mg9, merchant: m9, name: Hardware shop, address: 9 Lane}
devices:
  - {id: gas-9, kind: gas_detector, site: s9, location: storage}
"""
# Principals of the hierarchy: the admin of c1 only ("cadmin"), of c2 only, and the ladder's people.
HIERARCHY_WORKERS = ("lead1", "lead2", "duty1", "fire1", "w9", "duty2")


def add_hierarchy(conn: psycopg.Connection[Any]) -> None:
    """Grid leaders, the duty office, the fire station, a second grid and a second community (HIERARCHY_C1/C2)."""
    for text in (HIERARCHY_C1, HIERARCHY_C2):
        core_repo.upsert_registry(conn, registry=parse_registry(text))


def make_tokens(settings: Settings, *, hierarchy: bool = False) -> dict[str, str]:
    key = settings.secret_key.get_secret_value()
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        tokens = {
            "admin": auth.create_token(conn, secret_key=key, role="admin", label="test admin"),
            "w1": auth.create_token(conn, secret_key=key, role="worker", worker_id="w1"),
            "w2": auth.create_token(conn, secret_key=key, role="worker", worker_id="w2"),
            "m1": auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m1"),
            "m2": auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m2"),
        }
        if hierarchy:
            for worker in HIERARCHY_WORKERS:
                tokens[worker] = auth.create_token(conn, secret_key=key, role="worker", worker_id=worker)
            tokens["m9"] = auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m9")
            tokens["cadmin"] = auth.create_token(
                conn, secret_key=key, role="admin", label="c1 admin", communities=["c1"]
            )
            tokens["c2admin"] = auth.create_token(
                conn, secret_key=key, role="admin", label="c2 admin", communities=["c2"]
            )
        return tokens


@contextmanager
def api_env(settings: Settings, *, hierarchy: bool = False) -> Iterator[ApiEnv]:
    """The app over a pool on this test's database, with m2 added and tokens made (and, with hierarchy, the
    leaders, duty office, fire station, a second grid and a second community of add_hierarchy)."""
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        add_second_merchant(conn)
        if hierarchy:
            add_hierarchy(conn)
    tokens = make_tokens(settings, hierarchy=hierarchy)
    pool = ConnectionPool(settings.dsn, min_size=1, max_size=6, open=True, name="test-api")
    try:
        app = create_app(settings, pool)
        # https: session cookies are Secure outside the demo, and a client keeps them for HTTPS only
        with TestClient(app, base_url="https://testserver") as client:
            yield ApiEnv(settings, pool, app, client, tokens)
    finally:
        pool.close()


def raise_alarm(
    conn: psycopg.Connection[Any],
    device_id: str,
    alarm_type: str = "gas_leak",
    *,
    severity: Severity = Severity.CRITICAL,
    at: datetime | None = None,
    value: float | None = 30.0,
    rule_id: str = "GAS-02",
) -> int:
    """Open (or repeat) an alarm through the rules service, exactly as the engine's transition would."""
    device = core_repo.get_devices(conn, ids=[device_id])[device_id]
    change = rules_service.record_transition(
        conn,
        device=device,
        transition=Transition(
            rule_id=rule_id,
            alarm_type=alarm_type,
            kind="raise",
            severity=severity,
            at=at or datetime.now(UTC),
            value=value,
            message=f"{alarm_type} on {device_id}",
        ),
    )
    assert change is not None, "a new alarm is a transition"
    return change.alarm_id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn server (streams, browsers); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
