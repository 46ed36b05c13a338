"""Devices in the caller's scope and their readings, time-bucketed."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from psycopg import Connection

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Anyone, Conn, Staff
from api.schemas import (
    BucketRead,
    CommandIn,
    CommandRead,
    CommissionIn,
    CommissioningRead,
    CommissioningStatusRead,
    DeviceRead,
    Page,
    PortLockRead,
    Problem,
    ReadingSeries,
    UnlockIn,
)
from core import db
from core import repo as core_repo
from core.domain import Device, DeviceKind
from core.errors import ConflictError, NotFoundError
from notify import service as notify_service
from rules import service as rules_service
from rules.actuation import service as actuation
from rules.commissioning import service as commissioning
from rules.ruleset import default_rules

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=ERRORS)

NumericField = Literal[
    "gas_lel", "co_ppm", "smoke_db_m", "temp_c", "power_w", "current_a", "voltage_v", "energy_wh", "battery_pct"
]
MAX_RANGE = timedelta(days=31)
MAX_POINTS = 1000


def scoped_device(conn: Connection[Any], who: auth.Principal, device_id: str) -> api_repo.DeviceRow:
    """The device if in scope; 404 otherwise."""
    row = api_repo.get_device_in_scope(
        conn,
        device_id=device_id,
        worker_id=who.worker_scope,
        merchant_id=who.merchant_scope,
        communities=who.community_scope,
    )
    if row is None:
        raise NotFoundError(f"device {device_id!r} not found")
    return row


@router.get("")
def list_devices(
    conn: Conn,
    who: Anyone,
    site: Annotated[str | None, Query(max_length=64)] = None,
    kind: DeviceKind | None = None,
    offline: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Page[DeviceRead]:
    """Devices the caller may see, with online state and open alarms."""
    rows = api_repo.list_devices(
        conn,
        worker_id=who.worker_scope,
        merchant_id=who.merchant_scope,
        communities=who.community_scope,
        site_id=site,
        kind=kind.value if kind else None,
        offline=offline,
        limit=limit,
        offset=offset,
    )
    return Page[DeviceRead](
        items=[DeviceRead.model_validate(r) for r in rows], next_offset=offset + limit if len(rows) == limit else None
    )


@router.get("/{device_id}")
def get_device(device_id: str, conn: Conn, who: Anyone) -> DeviceRead:
    """One device in scope."""
    return DeviceRead.model_validate(scoped_device(conn, who, device_id))


def bucket_width(start: datetime, end: datetime, points: int) -> timedelta:
    """The smallest whole-second bucket that fits the range into at most `points` buckets."""
    return timedelta(seconds=max(1, math.ceil((end - start).total_seconds() / points)))


def reading_series(
    conn: Connection[Any],
    who: auth.Principal,
    device_id: str,
    *,
    field: str,
    start: datetime | None,
    end: datetime | None,
    points: int,
) -> ReadingSeries:
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
    rows = api_repo.bucket_readings(
        conn, device_id=device_id, field=field, start=start, end=end, width=width, limit=points + 1, timescale=timescale
    )
    return ReadingSeries(
        device_id=device_id,
        field=field,
        start=start,
        end=end,
        width_s=int(width.total_seconds()),
        storage="timescale" if timescale else "plain",
        buckets=[BucketRead.model_validate(r) for r in rows],
    )


@router.get("/{device_id}/readings")
def get_readings(
    device_id: str,
    conn: Conn,
    who: Anyone,
    field: NumericField = "gas_lel",
    start: datetime | None = None,
    end: datetime | None = None,
    points: Annotated[int, Query(ge=1, le=MAX_POINTS, description="at most this many buckets")] = 200,
) -> ReadingSeries:
    """A device's readings of one field, min/max/avg per time bucket (range at most 31 days)."""
    return reading_series(conn, who, device_id, field=field, start=start, end=end, points=points)


# Which device kinds can carry out which command (a command a device cannot carry out is a 409, not a queue row).
COMMAND_KINDS: dict[str, frozenset[str]] = {
    "self_test": frozenset(k.value for k in DeviceKind if k is not DeviceKind.GATEWAY),
    "silence": frozenset({"gas_detector", "co_alarm", "smoke_detector"}),
    "cut_power": frozenset({"charging_port", "smart_socket"}),
    "restore_power": frozenset({"charging_port", "smart_socket"}),
    "close_valve": frozenset({"gas_valve"}),
}


def staff_device(conn: Connection[Any], who: auth.Principal, device_id: str) -> Device:
    """The registered device if the caller is an admin or a worker covering its site; 404 otherwise."""
    scoped_device(conn, who, device_id)
    device = core_repo.get_devices(conn, ids=[device_id]).get(device_id)
    if device is None:
        raise NotFoundError(f"device {device_id!r} is not active")
    return device


def port_lock(conn: Connection[Any], device_id: str) -> PortLockRead:
    """Whether a port is locked after a safety trip (EB-10)."""
    lock = actuation.get_port_lock(conn, device_id=device_id)
    if lock is None:
        return PortLockRead(device_id=device_id, locked=False)
    return PortLockRead(device_id=device_id, locked=True, reason=lock[1], locked_at=lock[2])


def command(conn: Connection[Any], who: auth.Principal, device_id: str, *, action: str, reason: str) -> CommandRead:
    """Queue a person's command after the rules' safety policy (ConflictError: 409 with what to do instead)."""
    with conn.transaction():
        device = staff_device(conn, who, device_id)
        if action == "open_valve":
            raise ConflictError(
                "a gas valve is never reopened remotely: reopen it by hand on site after checking "
                "for gas (GB 50028 10.8.4)"
            )
        if device.kind.value not in COMMAND_KINDS[action]:
            raise ConflictError(f"{device_id} is a {device.kind.value}: it cannot {action.replace('_', ' ')}")
        row = rules_service.request_command(
            conn, device=device, action=action, actor=who.actor, reason=reason or f"requested by {who.actor}"
        )
    return CommandRead.model_validate(row)


def unlock(conn: Connection[Any], who: auth.Principal, device_id: str, *, note: str) -> PortLockRead:
    """EB-10: a worker checked the bike on site and clears the lock (ConflictError if it is not locked)."""
    with conn.transaction():
        staff_device(conn, who, device_id)
        try:
            rules_service.clear_port_lock(conn, device_id=device_id, actor=who.actor, note=note)
        except NotFoundError:
            raise ConflictError(f"port {device_id} is not locked: nothing to clear") from None
    return port_lock(conn, device_id)


@router.get("/{device_id}/lock")
def get_port_lock(device_id: str, conn: Conn, who: Anyone) -> PortLockRead:
    """Whether the port is locked after a safety trip, since when and why."""
    scoped_device(conn, who, device_id)
    return port_lock(conn, device_id)


@router.post("/{device_id}/unlock", responses={409: {"model": Problem}})
def unlock_port(device_id: str, body: UnlockIn, conn: Conn, who: Staff) -> PortLockRead:
    """Clear a port's safety lock after checking the bike on site (worker covering the site, or admin); the note
    (what was checked) goes into the lock's history. 409 if the port is not locked."""
    return unlock(conn, who, device_id, note=body.note)


@router.post("/{device_id}/commands", status_code=201, responses={409: {"model": Problem}})
def send_command(device_id: str, body: CommandIn, conn: Conn, who: Staff) -> CommandRead:
    """Queue a manual command (self_test, silence, cut_power, restore_power, close_valve). The rules' safety
    policy applies: no valve reopening, no restore_power on a locked port, no relay switching during a gas
    alarm in the site; a refusal is 409 saying what to do instead."""
    return command(conn, who, device_id, action=body.action, reason=body.reason)


SILENCE_MAX_S = 30 * 60  # RULES-REFERENCE 7.3.6: a 10-minute installer window; never longer than half an hour


def commission(
    conn: Connection[Any], who: auth.Principal, device_id: str, *, within_s: float | None, silence: bool
) -> CommissioningRead:
    """Start a commissioning check (issue 19); with `silence`, the device's notifications are held for its window
    (the installer's test press raises the detector's alarm: RULES-REFERENCE 7.3.6)."""
    now = datetime.now(UTC)
    with conn.transaction():
        device = staff_device(conn, who, device_id)
        check = commissioning.start_check(
            conn, device=device, by=who.actor, ruleset=default_rules(), now=now, within_s=within_s
        )
        if silence:
            notify_service.create_silence(
                conn,
                site_id=None,
                device_id=device_id,
                # at most the reference's installer window and a little: a worker cannot mute a detector for long
                minutes=min((check.deadline_at - now).total_seconds(), SILENCE_MAX_S) / 60,
                reason=f"commissioning check #{check.id} (installer window)",
                created_by=who.actor,
                include_life_safety=True,
                now=now,
            )
    return CommissioningRead.of(check)


def commissioning_status(conn: Connection[Any], who: auth.Principal, device_id: str) -> CommissioningStatusRead:
    """A device's commissioning: commissioned or not, and its checks."""
    scoped_device(conn, who, device_id)
    state = commissioning.states(conn, device_ids=[device_id])[device_id]
    checks = commissioning.get_checks(conn, device_id=device_id)
    return CommissioningStatusRead(
        device_id=device_id, commissioned=state.commissioned, checks=[CommissioningRead.of(c) for c in checks]
    )


@router.post("/{device_id}/commission", status_code=201, responses={409: {"model": Problem}})
def start_commissioning(device_id: str, body: CommissionIn, conn: Conn, who: Staff) -> CommissioningRead:
    """Start a commissioning check: the device must report within the window (default 10 min) and a detector must
    give its test or alarm signal (press its test button). The rules timer judges it; a device that never passes
    is "not commissioned" and raises `not_commissioned`. A check in progress is replaced."""
    return commission(conn, who, device_id, within_s=body.within_s, silence=body.silence)


@router.get("/{device_id}/commissioning")
def get_commissioning(device_id: str, conn: Conn, who: Anyone) -> CommissioningStatusRead:
    """Whether the device is commissioned, and its commissioning checks (newest first)."""
    return commissioning_status(conn, who, device_id)
