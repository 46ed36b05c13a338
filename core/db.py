"""Database pool and migrations (numbered plain SQL; Timescale-only parts when the extension exists)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import psycopg.sql
from psycopg import Connection
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

MIGRATION_RE = re.compile(r"^(?P<num>\d{4})_(?P<name>[a-z0-9_]+)(?:\.(?P<variant>timescale|plain))?\.sql$")
# Any constant works as long as every gridwatch process uses the same one.
MIGRATION_LOCK = 0x6772_6964_7761_7463
# rules NOTIFYs this channel when it writes outbox rows; notify LISTENs (they meet only in the database).
OUTBOX_CHANNEL = "gridwatch_outbox"
# rules NOTIFYs this channel when a person resolves an alarm; the score part LISTENs (verified hazards).
RESOLVED_CHANNEL = "gridwatch_alarm_resolved"

CREATE_MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    timescale   boolean NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""
SELECT_APPLIED = "SELECT version FROM schema_migration"
INSERT_APPLIED = "INSERT INTO schema_migration (version, name, timescale) VALUES (%s, %s, %s)"
SELECT_TIMESCALE_AVAILABLE = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
SELECT_TIMESCALE_INSTALLED = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
CREATE_TIMESCALE = "CREATE EXTENSION IF NOT EXISTS timescaledb"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    common: str
    timescale: str | None
    plain: str | None


def load_migrations() -> list[Migration]:
    """The migrations shipped in core/migrations, in order."""
    found: dict[int, dict[str, str]] = {}
    names: dict[int, str] = {}
    for entry in resources.files("core.migrations").iterdir():
        match = MIGRATION_RE.match(entry.name)
        if not match:
            continue
        num = int(match["num"])
        names[num] = match["name"]
        found.setdefault(num, {})[match["variant"] or "common"] = entry.read_text(encoding="utf-8")
    return [
        Migration(num, names[num], parts.get("common", ""), parts.get("timescale"), parts.get("plain"))
        for num, parts in sorted(found.items())
    ]


def has_timescale(conn: Connection[Any]) -> bool:
    """Whether the timescaledb extension is installed in this database."""
    return conn.execute(SELECT_TIMESCALE_INSTALLED).fetchone() is not None


def migrate(conn: Connection[Any]) -> list[int]:
    """Apply pending migrations under an advisory lock; returns the versions applied."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(CREATE_MIGRATION_TABLE)
        timescale = False
        if conn.execute(SELECT_TIMESCALE_AVAILABLE).fetchone() is not None:
            try:
                with conn.transaction():
                    conn.execute(CREATE_TIMESCALE)
                timescale = True
            except psycopg.Error as exc:
                log.warning("timescaledb is available but could not be enabled (%s); using plain tables", exc)
        done = {row[0] for row in conn.execute(SELECT_APPLIED)}
        for m in load_migrations():
            if m.version in done:
                continue
            conn.execute(m.common)
            variant = m.timescale if timescale else m.plain
            if variant:
                conn.execute(variant)
            conn.execute(INSERT_APPLIED, (m.version, m.name, timescale))
            applied_now.append(m.version)
            log.info("applied migration %04d_%s%s", m.version, m.name, " (timescale)" if timescale else "")
    return applied_now


def connect(dsn: str) -> Connection[tuple[Any, ...]]:
    """One connection (tuple rows, autocommit off)."""
    return psycopg.connect(dsn)


def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 8, name: str = "gridwatch") -> ConnectionPool:
    """A connection pool; waits for the database to be reachable."""
    pool = ConnectionPool(
        dsn, min_size=min_size, max_size=max_size, name=name, open=False, kwargs={"autocommit": False}
    )
    pool.open(wait=True, timeout=30)
    return pool


SELECT_DATABASE = "SELECT 1 FROM pg_database WHERE datname = %s"


def ensure_database(admin_url: str, name: str, *, fresh: bool = False) -> str:
    """Create database `name` on the server of admin_url if missing (dropped first when fresh); returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if fresh:
            conn.execute(
                psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(psycopg.sql.Identifier(name))
            )
        if conn.execute(SELECT_DATABASE, (name,)).fetchone() is None:
            conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    return admin_url.rsplit("/", 1)[0] + "/" + name
