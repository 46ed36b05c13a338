"""Readings per device, time-bucketed with limits on range and points; both bucketing paths."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from api import repo as api_repo
from api.routers.devices import bucket_width
from core import db
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def hour_of_readings(env: ApiEnv) -> datetime:
    """gas-1 every 10 s for one hour from a 10-minute boundary: value = minute of the hour (0..59)."""
    start = (datetime.now(UTC) - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    with env.conn() as conn, conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO reading (device_id, ts, seq, received_at, gas_lel) VALUES (%s, %s, %s, %s, %s)",
            [("gas-1", start + timedelta(seconds=10 * i), i, start, float((10 * i) // 60)) for i in range(360)],
        )
    return start


def test_buckets_have_min_max_avg(env: ApiEnv) -> None:
    start = hour_of_readings(env)
    r = env.client.get(
        "/api/v1/devices/gas-1/readings",
        headers=env.headers("w1"),
        params={
            "field": "gas_lel",
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
            "points": 6,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    with env.conn() as conn:
        storage = "timescale" if db.has_timescale(conn) else "plain"
    assert (body["width_s"], body["storage"]) == (600, storage)
    assert [b["n"] for b in body["buckets"]] == [60] * 6
    # bucket k holds minutes 10k..10k+9, six readings each
    assert [(b["min"], b["max"], b["avg"]) for b in body["buckets"]] == [
        (10.0 * k, 10.0 * k + 9, 10.0 * k + 4.5) for k in range(6)
    ]
    assert datetime.fromisoformat(body["buckets"][0]["bucket"]) == start
    other = env.client.get(
        "/api/v1/devices/gas-1/readings",
        headers=env.headers("w1"),
        params={"field": "temp_c", "start": start.isoformat(), "end": (start + timedelta(hours=1)).isoformat()},
    ).json()
    assert all(b["avg"] is None for b in other["buckets"]), "a field the device never sent has no values"


def test_timescale_path_runs_the_same_query_with_time_bucket(env: ApiEnv) -> None:
    """Both statements give the same buckets: on TimescaleDB with its own time_bucket, on plain PostgreSQL with a
    SQL stand-in of time_bucket's (width, ts, origin) signature (the statement is well-formed and aligned like
    date_bin, same origin)."""
    start = hour_of_readings(env)
    with env.conn() as conn, conn.transaction():
        if not db.has_timescale(conn):
            conn.execute(
                "CREATE FUNCTION time_bucket(interval, timestamptz, timestamptz) RETURNS timestamptz "
                "LANGUAGE sql IMMUTABLE AS 'SELECT date_bin($1, $2, $3)'"
            )
        args = {
            "device_id": "gas-1",
            "field": "gas_lel",
            "start": start,
            "end": start + timedelta(hours=1),
            "width": timedelta(minutes=15),
            "limit": 100,
        }
        plain = api_repo.bucket_readings(conn, timescale=False, **args)  # type: ignore[arg-type]
        ts = api_repo.bucket_readings(conn, timescale=True, **args)  # type: ignore[arg-type]
    assert len(plain) == 4 and plain == ts


BAD_RANGES: list[tuple[dict[str, object], str]] = [
    ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, "end"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "start"),
    ({"points": 1001}, "query.points"),
    ({"points": 0}, "query.points"),
    ({"field": "relay"}, "query.field"),
    ({"start": "2026-01-01T00:00:00"}, "start/end"),
]


def test_limits_name_the_parameter(env: ApiEnv) -> None:
    for params, field in BAD_RANGES:
        r = env.client.get("/api/v1/devices/gas-1/readings", headers=env.headers("admin"), params=params)
        assert r.status_code == 422, params
        assert r.json()["detail"].startswith(field), (params, r.json())


@pytest.mark.parametrize(
    ("seconds", "points", "width"),
    [
        (3600, 6, 600),
        (3600, 7, 515),
        (60, 1000, 1),
        (31 * 86400, 1000, 2679),
        (1, 1, 1),
    ],
)
def test_bucket_width(seconds: int, points: int, width: int) -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    got = bucket_width(t, t + timedelta(seconds=seconds), points)
    assert got == timedelta(seconds=width)
    assert seconds / got.total_seconds() <= points


def test_device_list_state(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        # What rules records when gas-2's retained status says offline and gas-1 reports (rules owns device_state).
        conn.execute("INSERT INTO device_state (device_id, online) VALUES ('gas-2', false)")
        conn.execute("INSERT INTO device_state (device_id, last_seen_at) VALUES ('gas-1', now())")
    devices = {d["id"]: d for d in env.client.get("/api/v1/devices", headers=env.headers("admin")).json()["items"]}
    assert (devices["gas-1"]["offline"], devices["gas-2"]["offline"], devices["smoke-1"]["offline"]) == (
        False,
        True,
        False,
    )
    offline = env.client.get("/api/v1/devices?offline=true", headers=env.headers("admin")).json()["items"]
    assert [d["id"] for d in offline] == ["gas-2"]
    mine = env.client.get("/api/v1/devices", headers=env.headers("m1")).json()["items"]
    assert sorted(d["id"] for d in mine) == ["gas-1", "smoke-1"]
