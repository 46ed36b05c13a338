"""Alarms: list, detail with events and readings, acknowledge, resolve, findings, live stream."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from psycopg import Connection

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Anyone, Conn, Staff
from api.schemas import AlarmDetail, AlarmEventRead, AlarmPage, AlarmRead, Problem, ReadingRead, ResolveIn
from api.stream import alarm_stream
from core.domain import Severity
from core.errors import NotFoundError
from rules import service as rules_service

router = APIRouter(prefix="/api/v1/alarms", tags=["alarms"], responses=ERRORS)
AROUND = timedelta(minutes=10)
MAX_AROUND_READINGS = 500


def scoped_alarm(conn: Connection[Any], who: auth.Principal, alarm_id: int) -> api_repo.AlarmInSite:
    """The alarm if in scope; 404 otherwise, so existence outside one's scope is not revealed."""
    row = api_repo.get_alarm_in_scope(
        conn,
        alarm_id=alarm_id,
        worker_id=who.worker_scope,
        merchant_id=who.merchant_scope,
        communities=who.community_scope,
    )
    if row is None:
        raise NotFoundError(f"alarm {alarm_id} not found")
    return row


def parse_severity(severity: str | None) -> int | None:
    """'critical' / 'P1' / None -> the stored severity number; 422 naming the parameter otherwise."""
    if not severity:
        return None
    try:
        return int(Severity.parse(severity))
    except (KeyError, ValueError):
        raise HTTPException(422, f"severity: {severity!r} is not critical, major, minor, info or P1..P4") from None


@router.get("")
def list_alarms(
    conn: Conn,
    who: Anyone,
    status: Literal["open", "all"] = "open",
    active: bool | None = None,
    acknowledged: bool | None = None,
    severity: Annotated[str | None, Query(description="minimum: critical|major|minor|info or P1..P4")] = None,
    site: Annotated[str | None, Query(max_length=64)] = None,
    device: Annotated[str | None, Query(max_length=64)] = None,
    type: Annotated[str | None, Query(max_length=64, description="alarm type, e.g. gas_leak")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="keyset cursor from next_before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlarmPage:
    """Alarms the caller may see: a worker's micro-grids, a merchant's sites, everything for an admin."""
    rows = api_repo.list_alarms(
        conn,
        worker_id=who.worker_scope,
        merchant_id=who.merchant_scope,
        communities=who.community_scope,
        open_only=status == "open",
        active=active,
        acknowledged=acknowledged,
        min_severity=parse_severity(severity),
        site_id=site,
        before_id=before,
        limit=limit,
        device_id=device,
        alarm_type=type,
    )
    return AlarmPage(items=[AlarmRead.of(r) for r in rows], next_before=rows[-1].id if len(rows) == limit else None)


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: alarm` with an AlarmRead as data, per change",
        }
    },
)
async def stream_alarms(
    request: Request,
    who: Anyone,
    max_s: Annotated[float | None, Query(gt=0, le=3600, description="end the stream after this long")] = None,
) -> StreamingResponse:
    """Server-Sent Events: every new or changed alarm in the caller's scope, as it happens."""
    return alarm_stream(request, who, max_s, lambda row: AlarmRead.of(row).model_dump_json())


@router.get("/{alarm_id}")
def get_alarm(alarm_id: int, conn: Conn, who: Anyone) -> AlarmRead:
    """One alarm in the caller's scope."""
    return AlarmRead.of(scoped_alarm(conn, who, alarm_id))


def alarm_detail(conn: Connection[Any], who: auth.Principal, alarm_id: int) -> AlarmDetail:
    """An alarm with its history and the device's readings around it."""
    return detail_of(conn, scoped_alarm(conn, who, alarm_id))


def detail_of(conn: Connection[Any], row: api_repo.AlarmInSite) -> AlarmDetail:
    """The detail of an alarm the caller may see (its scope, or a link for it, was checked already)."""
    alarm_id = row.id
    end = (row.closed_at or row.cleared_at or row.last_seen_at) + AROUND
    end = max(end, row.last_seen_at + AROUND)
    readings = api_repo.list_readings_raw(
        conn, device_id=row.device_id, start=row.raised_at - AROUND, end=end, limit=MAX_AROUND_READINGS
    )
    return AlarmDetail(
        alarm=AlarmRead.of(row),
        note=row.note,
        site_name=row.site_name,
        site_address=row.site_address,
        events=[AlarmEventRead.model_validate(e) for e in api_repo.list_alarm_events(conn, alarm_id=alarm_id)],
        readings=[
            ReadingRead(
                ts=r["ts"],
                seq=r["seq"],
                values={k: v for k, v in r.items() if k not in ("ts", "seq") and v is not None},
            )
            for r in readings
        ],
    )


@router.get("/{alarm_id}/detail")
def get_alarm_detail(alarm_id: int, conn: Conn, who: Anyone) -> AlarmDetail:
    """The alarm, every event in its history, and the device's readings from 10 min before to 10 min after."""
    return alarm_detail(conn, who, alarm_id)


@router.post("/{alarm_id}/ack", responses={409: {"model": Problem}})
def ack_alarm(alarm_id: int, conn: Conn, who: Staff) -> AlarmRead:
    """Acknowledge: I have it. Records who and when, stops escalation."""
    with conn.transaction():
        scoped_alarm(conn, who, alarm_id)
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor=who.actor)
    return AlarmRead.of(scoped_alarm(conn, who, alarm_id))


@router.post("/{alarm_id}/resolve", responses={409: {"model": Problem}})
def resolve_alarm(alarm_id: int, body: ResolveIn, conn: Conn, who: Staff) -> AlarmRead:
    """Close the alarm with what it turned out to be (real_hazard, false_alarm, test, device_fault) and a note."""
    with conn.transaction():
        scoped_alarm(conn, who, alarm_id)
        rules_service.resolve(conn, alarm_id=alarm_id, actor=who.actor, disposition=body.disposition, note=body.note)
    return AlarmRead.of(scoped_alarm(conn, who, alarm_id))
