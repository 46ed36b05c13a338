"""Real PostgreSQL and real Mosquitto for every test: private instances started here unless
GRIDWATCH_TEST_DATABASE_URL / GRIDWATCH_TEST_MQTT_URL point at running ones."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg.sql
import pytest

from core import db
from core import repo as core_repo
from core.embedded import EmbeddedMosquitto, EmbeddedPostgres
from core.registry import parse_registry
from core.settings import Settings
from tests.support import Publisher, Receiver

TEMPLATE_DB = "gridwatch_test_template"
TERMINATE_SESSIONS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
)


@dataclass
class Services:
    postgres_url: str
    mqtt_url: str
    pg: EmbeddedPostgres | None
    mosquitto: EmbeddedMosquitto | None

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    def db_url(self, name: str) -> str:
        parts = urlsplit(self.postgres_url)
        return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    pg_url = os.environ.get("GRIDWATCH_TEST_DATABASE_URL")
    mqtt_url = os.environ.get("GRIDWATCH_TEST_MQTT_URL")
    # Not tmp_path_factory: pytest prunes all but the newest 3 basetemps of a user when a session starts, which
    # would delete a concurrently running session's database under it.
    base = Path(tempfile.mkdtemp(prefix="gridwatch-test-"))
    pg = mosq = None
    if not pg_url:
        pg = EmbeddedPostgres(base / "pg")
        pg_url = pg.start()
    if not mqtt_url:
        mosq = EmbeddedMosquitto(base / "mosquitto")
        mqtt_url = mosq.start()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TEMPLATE_DB,)).fetchone():
            conn.execute(f"ALTER DATABASE {TEMPLATE_DB} WITH IS_TEMPLATE false")
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    with psycopg.connect(Services(pg_url, mqtt_url, pg, mosq).db_url(TEMPLATE_DB)) as conn:
        db.migrate(conn)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        seal_template(conn, TEMPLATE_DB)
    yield Services(pg_url, mqtt_url, pg, mosq)
    if mosq:
        mosq.stop()
    if pg:
        pg.stop("immediate")
    shutil.rmtree(base, ignore_errors=True)


def seal_template(conn: psycopg.Connection[Any], name: str) -> None:
    """Make `name` a template nobody stays connected to: CREATE DATABASE ... TEMPLATE refuses a template with
    other sessions, and on TimescaleDB the launcher starts a background-job scheduler in every database that
    has the extension. It skips databases marked as templates or closed to connections
    (src/loader/bgw_launcher.c), so mark it, then end the scheduler that started while it was being migrated."""
    conn.execute(
        psycopg.sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            psycopg.sql.Identifier(name)
        )
    )
    deadline = time.monotonic() + 30
    while conn.execute(TERMINATE_SESSIONS, (name,)).fetchall():
        if time.monotonic() > deadline:
            raise RuntimeError(f"sessions on the test template {name} do not end")
        time.sleep(0.1)


@pytest.fixture
def database_url(services: Services) -> Iterator[str]:
    """A fresh migrated database per test (copied from a migrated template)."""
    name = f"gw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(services.postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    yield services.db_url(name)
    with psycopg.connect(services.postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def settings(services: Services, database_url: str) -> Settings:
    """Settings for one test: its own database, topic prefix and client id."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=database_url,
        mqtt_url=services.mqtt_url,
        topic_prefix=f"t{tag}/gw/v1",
        mqtt_client_id=f"ingest-{tag}",
        secret_key="test-secret-key-0123456789",
        notify_poll_s=0.2,
        batch_linger_ms=5,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def publisher(services: Services) -> Iterator[Publisher]:
    p = Publisher("127.0.0.1", services.mqtt_port)
    yield p
    p.close()


def small_registry(receiver_url: str = "json://127.0.0.1:9/") -> str:
    """Two micro-grids, a worker each, a gas detector each; deliveries go to the test receiver."""
    base = receiver_url.rstrip("/")
    return textwrap.dedent(f"""\
        community: {{id: c1, name: Test community}}
        grids:
          - id: g1
            name: Grid one
            micro_grids:
              - {{id: mg1, name: Micro one}}
              - {{id: mg2, name: Micro two}}
        workers:
          - {{id: w1, name: Wang, role: micro_grid_worker, micro_grids: [mg1], notify: ["{base}/w1"]}}
          - {{id: w2, name: Li, role: micro_grid_worker, micro_grids: [mg2], notify: ["{base}/w2"], locale: en}}
        merchants:
          - {{id: m1, name: Noodle shop}}
        sites:
          - {{id: s1, kind: shop, micro_grid: mg1, merchant: m1, name: Noodle shop, address: 1 Lane, floor: 1}}
          - {{id: s2, kind: building, micro_grid: mg2, name: Block 2, address: 2 Lane}}
        devices:
          - {{id: gas-1, kind: gas_detector, site: s1, location: kitchen}}
          - {{id: gas-2, kind: gas_detector, site: s2, location: kitchen}}
          - {{id: smoke-1, kind: smoke_detector, site: s1, location: corridor, battery: true}}
        """)


@pytest.fixture
def loaded(settings: Settings, receiver: Receiver) -> Settings:
    """The small registry loaded into this test's database."""
    registry = parse_registry(small_registry(receiver.url("")))
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        core_repo.upsert_registry(conn, registry=registry)
    return settings


@pytest.fixture(autouse=True)
def fail_on_error_logs(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> Iterator[None]:
    """A test fails if an ERROR was logged that it did not expect (mark: allow_error_logs)."""
    caplog.set_level(logging.INFO)
    yield
    if request.node.get_closest_marker("allow_error_logs"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    if errors:
        pytest.fail("unexpected ERROR logged: " + "; ".join(f"{r.name}: {r.getMessage()}" for r in errors[:5]))


ROOT = Path(__file__).resolve().parent.parent
