"""Issue 16, the TimescaleDB path: storage is what the server offers (a hypertable with compression, retention and
an hourly continuous aggregate when the extension is available; a plain table and a view otherwise), and the
Timescale jobs do what the migrations say. CI's PostgreSQL has no TimescaleDB, so the job tests run where the
test server has it (docs/operations.md, "Running the suite on TimescaleDB"); the storage test runs everywhere and
asserts what is installed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from app.services import start_services
from core import db
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env
from tests.support import Publisher, wait_for


def offers_timescale(settings: Settings) -> bool:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute(db.SELECT_TIMESCALE_AVAILABLE).fetchone() is not None


def query(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()  # type: ignore[arg-type]


def test_storage_is_what_the_server_offers(settings: Settings) -> None:
    timescale = offers_timescale(settings)
    assert query(settings, "SELECT DISTINCT timescale FROM schema_migration") == [(timescale,)]
    kinds = dict(
        query(
            settings,
            "SELECT relname, relkind::text FROM pg_class "
            "WHERE relname IN ('reading', 'reading_hourly') AND relnamespace = 'public'::regnamespace",
        )
    )
    if not timescale:
        assert kinds == {"reading": "r", "reading_hourly": "v"}
        return
    assert query(settings, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("reading",)]
    jobs = {
        row[0]
        for row in query(
            settings,
            "SELECT proc_name FROM timescaledb_information.jobs WHERE hypertable_name IN ('reading', %s)",
            _cagg_table(settings),
        )
    }
    assert {"policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"} <= jobs
    assert query(settings, "SELECT view_name FROM timescaledb_information.continuous_aggregates") == [
        ("reading_hourly",)
    ]


def _cagg_table(settings: Settings) -> str:
    rows = query(settings, "SELECT materialization_hypertable_name FROM timescaledb_information.continuous_aggregates")
    return str(rows[0][0]) if rows else ""


def run_job(settings: Settings, proc: str) -> None:
    """CALL run_job for the reading table's job of this kind (what the background scheduler would run)."""
    (job,) = query(
        settings,
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = %s AND hypertable_name IN ('reading', %s)",
        proc,
        _cagg_table(settings),
    )[0]
    with psycopg.connect(settings.dsn, autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", (job,))


def insert_readings(settings: Settings, device: str, start: datetime, count: int, step: timedelta) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reading (device_id, ts, seq, received_at, gas_lel) VALUES (%s, %s, %s, %s, %s)",
            [(device, start + i * step, i, start + i * step, float(i % 7)) for i in range(count)],
        )


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    """The API on a loaded database whose server has TimescaleDB (skipped where it has not, as in CI)."""
    if not offers_timescale(loaded):
        pytest.skip("the test server has no TimescaleDB (docs/operations.md: running the suite on it)")
    with api_env(loaded) as e:
        yield e


def test_a_compressed_chunk_answers_the_readings_api_and_takes_late_readings(env: ApiEnv, publisher: Publisher) -> None:
    settings = env.settings
    start = (datetime.now(UTC) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    insert_readings(settings, "gas-1", start, 360, timedelta(seconds=10))
    run_job(settings, "policy_compression")
    compressed = query(
        settings,
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = "
        "'reading' AND is_compressed AND range_end > %s AND range_start <= %s",
        start,
        start,
    )
    assert compressed == [(1,)], "the 10-day-old chunk is compressed by the policy's job"
    answer = env.client.get(
        "/api/v1/devices/gas-1/readings",
        headers=env.headers("w1"),
        params={
            "field": "gas_lel",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "points": 6,
        },
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["storage"] == "timescale" and [b["n"] for b in body["buckets"]] == [60] * 6

    # Late readings into the compressed range through the real ingest: within the accepted age they are stored
    # (TimescaleDB inserts into compressed chunks), a redelivery is absorbed, older ones are rejects with a reason.
    running = start_services(settings.model_copy(update={"max_reading_age_h": 15 * 24}), ("ingest",))
    try:
        wait_for(running.parts["ingest"].consumer.connected.is_set, what="the ingest subscribed")
        late = start + timedelta(minutes=30, seconds=5)
        too_old = datetime.now(UTC) - timedelta(days=20)
        topic = f"{settings.topic_prefix}/gas-1/telemetry"
        for body_ in (
            {"ts": _ms(late), "seq": 9001, "gas_lel": 3.5},
            {"ts": _ms(late), "seq": 9001, "gas_lel": 3.5},
            {"ts": _ms(too_old), "seq": 9002, "gas_lel": 1.0},
        ):
            publisher.publish(topic, json.dumps(body_))
        wait_for(
            lambda: query(settings, "SELECT count(*) FROM ingest_reject")[0][0] == 1,
            timeout=20,
            what="the too-old reading rejected",
        )
        wait_for(
            lambda: query(settings, "SELECT count(*) FROM reading WHERE seq = 9001")[0][0] == 1,
            timeout=20,
            what="the late reading stored once",
        )
    finally:
        running.stop()
    (reason,) = query(settings, "SELECT reason FROM ingest_reject")[0]
    assert "old" in reason, reason
    assert query(settings, "SELECT gas_lel FROM reading WHERE device_id = 'gas-1' AND ts = %s", late) == [(3.5,)]


def test_retention_drops_only_chunks_past_the_policy(env: ApiEnv) -> None:
    settings = env.settings
    old = datetime.now(UTC) - timedelta(days=420)
    recent = datetime.now(UTC) - timedelta(days=2)
    insert_readings(settings, "gas-1", old, 10, timedelta(minutes=1))
    insert_readings(settings, "gas-1", recent, 10, timedelta(minutes=1))
    run_job(settings, "policy_retention")
    left = query(settings, "SELECT min(ts) > now() - interval '400 days', count(*) FROM reading")
    assert left == [(True, 10)]


def test_the_continuous_aggregate_materialises_hourly_rows(env: ApiEnv) -> None:
    settings = env.settings
    hour = (datetime.now(UTC) - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    insert_readings(settings, "gas-1", hour, 60, timedelta(minutes=1))  # gas_lel = i % 7: max 6
    run_job(settings, "policy_refresh_continuous_aggregate")
    rows = query(settings, "SELECT bucket, n, gas_lel_max FROM reading_hourly WHERE device_id = 'gas-1'")
    assert rows == [(hour, 60, 6.0)]


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)
