"""Devices in the caller's scope and their readings, time-bucketed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from psycopg import Connection

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Anyone, Conn
from api.schemas import BucketRead, DeviceRead, Page, ReadingSeries
from core import db
from core.domain import DeviceKind
from core.errors import NotFoundError

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=ERRORS)

NumericField = Literal["gas_lel", "co_ppm", "smoke_db_m", "temp_c", "power_w", "current_a", "voltage_v",
                       "energy_wh", "battery_pct"]
MAX_RANGE = timedelta(days=31)
MAX_POINTS = 1000


def scoped_device(conn: Connection[Any], who: auth.Principal, device_id: str) -> api_repo.DeviceRow:
    """The device if in scope; 404 otherwise."""
    row = api_repo.get_device_in_scope(conn, device_id=device_id, worker_id=who.worker_scope,
                                       merchant_id=who.merchant_scope)
    if row is None:
        raise NotFoundError(f"device {device_id!r} not found")
    return row


@router.get("")
def list_devices(
    conn: Conn, who: Anyone,
    site: Annotated[str | None, Query(max_length=64)] = None,
    kind: DeviceKind | None = None,
    offline: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[DeviceRead]:
    """Devices the caller may see, with online state and open alarms."""
    rows = api_repo.list_devices(conn, worker_id=who.worker_scope, merchant_id=who.merchant_scope, site_id=site,
                                 kind=kind.value if kind else None, offline=offline, limit=limit, offset=offset)
    return Page[DeviceRead](items=[DeviceRead.model_validate(r) for r in rows],
                            next_offset=offset + limit if len(rows) == limit else None)


@router.get("/{device_id}")
def get_device(device_id: str, conn: Conn, who: Anyone) -> DeviceRead:
    """One device in scope."""
    return DeviceRead.model_validate(scoped_device(conn, who, device_id))


def bucket_width(start: datetime, end: datetime, points: int) -> timedelta:
    """The smallest whole-second bucket that fits the range into at most `points` buckets."""
    return timedelta(seconds=max(1, math.ceil((end - start).total_seconds() / points)))


def reading_series(conn: Connection[Any], who: auth.Principal, device_id: str, *, field: str,
                   start: datetime | None, end: datetime | None, points: int) -> ReadingSeries:
    """Bucketed readings with the range and point limits applied."""
    scoped_device(conn, who, device_id)
    end = end or datetime.now(UTC)
    try:
        start = start or end - timedelta(hours=24)
    except OverflowError:
        raise HTTPException(422, "end: too early to take a default 24 h range before it") from None
    if end.tzinfo is None or start.tzinfo is None:
        raise HTTPException(422, "start/end: give a time zone (e.g. 2026-01-01T00:00:00Z)")
    if start >= end:
        raise HTTPException(422, "start: must be before end")
    if end - start > MAX_RANGE:
        raise HTTPException(422, f"end: the range is limited to {MAX_RANGE.days} days; narrow start/end")
    width = bucket_width(start, end, points)
    timescale = db.has_timescale(conn)
    rows = api_repo.bucket_readings(conn, device_id=device_id, field=field, start=start, end=end, width=width,
                                    limit=points + 1, timescale=timescale)
    return ReadingSeries(device_id=device_id, field=field, start=start, end=end,
                         width_s=int(width.total_seconds()), storage="timescale" if timescale else "plain",
                         buckets=[BucketRead.model_validate(r) for r in rows])


@router.get("/{device_id}/readings")
def get_readings(
    device_id: str, conn: Conn, who: Anyone,
    field: NumericField = "gas_lel",
    start: datetime | None = None,
    end: datetime | None = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS, description="at most this many buckets")] = 200,
) -> ReadingSeries:
    """A device's readings of one field, min/max/avg per time bucket (range at most 31 days)."""
    return reading_series(conn, who, device_id, field=field, start=start, end=end, points=points)
