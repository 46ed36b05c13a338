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


def make_tokens(settings: Settings) -> dict[str, str]:
    key = settings.secret_key.get_secret_value()
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        return {
            "admin": auth.create_token(conn, secret_key=key, role="admin", label="test admin"),
            "w1": auth.create_token(conn, secret_key=key, role="worker", worker_id="w1"),
            "w2": auth.create_token(conn, secret_key=key, role="worker", worker_id="w2"),
            "m1": auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m1"),
            "m2": auth.create_token(conn, secret_key=key, role="merchant", merchant_id="m2"),
        }


@contextmanager
def api_env(settings: Settings) -> Iterator[ApiEnv]:
    """The app over a pool on this test's database, with m2 added and tokens made."""
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        add_second_merchant(conn)
    tokens = make_tokens(settings)
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
