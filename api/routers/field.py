"""The work on foot (field/service.py, docs/field.md): check-lists, hazard work orders for any site and party,
their photos (checked by content, served only through here to those whose scope includes the site), "fixed"
reports and the re-inspection that alone closes an order."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api import auth
from api.deps import ERRORS, Admin, Anyone, Conn, Staff, connection_gate, settings_of
from api.schemas import Problem
from field import checklists, drill_service, patrol_service, report_service, training_service
from field import service as field_service
from field.drill_service import DrillCreate, DrillRead
from field.photos import MAX_BYTES
from field.repo import Scope
from field.report_service import ReportRead
from field.schemas import (
    NO_CONTROLS,
    CheckIn,
    CheckInResult,
    ChecklistItemRead,
    ChecklistRead,
    CoverageRead,
    FixedIn,
    Party,
    PhotoRead,
    ReinspectIn,
    RoundCreate,
    RoundDetail,
    RoundRead,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderPage,
    WorkOrderRead,
    bounded,
)
from field.training_service import TrainingCreate, TrainingRead

router = APIRouter(prefix="/api/v1", responses=ERRORS)
OrderId = Annotated[int, Path(ge=1, le=2**62)]
PhotoId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": Problem}}
# The multipart envelope around one photo: boundaries, headers and the few form fields.
ENVELOPE = 16 * 1024


def scope_of(who: auth.Principal) -> Scope:
    """What a caller may see: their micro-grids / grids / community, their own sites, or their communities."""
    return Scope(worker=who.worker_scope, merchant=who.merchant_scope, communities=who.community_scope)


@router.get("/checklists", tags=["field"])
def list_checklists(_who: Anyone) -> list[ChecklistRead]:
    """The check-lists per kind of place (an item's code is a work order's kind)."""
    return [
        ChecklistRead(
            kind=c.kind,
            zh=c.zh,
            en=c.en,
            items=[ChecklistItemRead(code=i.code, severity=i.severity, zh=i.zh, en=i.en) for i in c.items],
        )
        for c in checklists.CHECKLISTS.values()
    ]


@router.get("/work-orders", tags=["field"])
def list_work_orders(
    conn: Conn,
    who: Anyone,
    open: bool = True,
    site: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROLS)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> WorkOrderPage:
    """Orders on the sites in your scope (a merchant: the ones it must fix), open ones first by deadline."""
    items = field_service.list_work_orders(
        conn, scope=scope_of(who), open_only=open, site_id=site, offset=offset, limit=limit + 1
    )
    more = len(items) > limit
    return WorkOrderPage(items=items[:limit], next_offset=offset + limit if more else None)


@router.post("/work-orders", tags=["field"], status_code=201, responses=CONFLICT)
def open_work_order(body: WorkOrderCreate, conn: Conn, who: Staff) -> WorkOrderRead:
    """A finding on a site in your scope becomes an order with a deadline by severity; a merchant's order on a
    kind of the score policy deducts as a verified hazard."""
    with conn.transaction():
        return field_service.open_work_order(conn, body=body, actor=who.actor, scope=scope_of(who))


@router.get("/work-orders/{order_id}", tags=["field"])
def get_work_order(order_id: OrderId, conn: Conn, who: Anyone) -> WorkOrderDetail:
    """An order with its history and photos."""
    return field_service.get_work_order(conn, order_id=order_id, scope=scope_of(who))


@router.post("/work-orders/{order_id}/fixed", tags=["field"], responses=CONFLICT)
def report_fixed(order_id: OrderId, body: FixedIn, conn: Conn, who: Anyone) -> WorkOrderRead:
    """The responsible party (a merchant, on its own order) or a worker reports it fixed."""
    with conn.transaction():
        return field_service.report_fixed(conn, order_id=order_id, actor=who.actor, scope=scope_of(who), note=body.note)


@router.post("/work-orders/{order_id}/reinspection", tags=["field"], responses=CONFLICT)
def reinspect(order_id: OrderId, body: ReinspectIn, conn: Conn, who: Staff) -> WorkOrderRead:
    """The on-site re-inspection, the only way an order closes: pass closes, fail sets a new deadline."""
    with conn.transaction():
        return field_service.reinspect(conn, order_id=order_id, body=body, actor=who.actor, scope=scope_of(who))


async def read_photo(request: Request) -> tuple[bytes, str]:
    """The photo and its stage from a multipart form, refused before reading when it is too large."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "send the photo with a Content-Length")
    if int(length) > MAX_BYTES + ENVELOPE:
        raise HTTPException(413, f"the upload is {length} bytes; a photo may have at most {MAX_BYTES} (5 MiB)")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send the photo as multipart/form-data in the field 'photo'")
    form = await request.form(max_files=1, max_fields=8, max_part_size=ENVELOPE)
    photo = form.get("photo")
    stage = form.get("stage") or "found"
    if not isinstance(photo, UploadFile) or not isinstance(stage, str):
        raise HTTPException(422, "photo: attach one image file in the field 'photo'")
    data = await photo.read(MAX_BYTES + 1)
    return data, stage


@router.post("/work-orders/{order_id}/photos", tags=["field"], status_code=201, responses=CONFLICT)
async def upload_photo(order_id: OrderId, request: Request, who: Anyone) -> PhotoRead:
    """A photo from the phone (JPEG, PNG or WebP, judged by its bytes; at most 5 MiB and 20 per order)."""
    data, stage = await read_photo(request)
    return await store_photo(request, order_id, data, stage, who)


async def store_photo(request: Request, order_id: int, data: bytes, stage: str, who: auth.Principal) -> PhotoRead:
    """Check and keep the photo in its own transaction (a pool connection taken behind the app's gate)."""

    def store() -> PhotoRead:
        with request.app.state.pool.connection() as conn, conn.transaction():
            return field_service.add_photo(
                conn, order_id=order_id, data=data, stage=stage, actor=who.actor, scope=scope_of(who)
            )

    async with connection_gate(request.app):
        return await run_in_threadpool(store)


@router.get("/work-orders/{order_id}/photos/{photo_id}", tags=["field"], response_class=Response)
def get_photo(order_id: OrderId, photo_id: PhotoId, conn: Conn, who: Anyone) -> Response:
    """A photo's bytes with the type sniffed at upload; only for callers whose scope includes the order's site."""
    photo = field_service.get_photo(conn, order_id=order_id, photo_id=photo_id, scope=scope_of(who))
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "private, no-store", "Content-Disposition": f'inline; filename="{photo.id}"'},
    )


# -- patrol rounds -----------------------------------------------------------------------------------------------

RoundId = Annotated[int, Path(ge=1, le=2**62)]
StopId = Annotated[int, Path(ge=1, le=2**62)]


def _period(since: datetime | None, until: datetime | None, *, days: int = 1) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = since or now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days - 1)
    try:
        end = until or start + timedelta(days=days)
    except OverflowError:
        raise HTTPException(422, "since: a time before year 9999, please") from None
    if start.tzinfo is None or end.tzinfo is None:
        raise HTTPException(422, "give since and until with their time zone (e.g. 2026-05-01T00:00+08:00)")
    try:
        bounded(start), bounded(end)
    except ValueError as exc:
        raise HTTPException(422, f"since and until: {exc}") from None
    if end <= start or end - start > timedelta(days=366):
        raise HTTPException(422, "until must be after since, at most a year later")
    return start, end


@router.post("/patrol-rounds", tags=["field"], status_code=201)
def create_round(body: RoundCreate, conn: Conn, who: Staff) -> RoundDetail:
    """An ad hoc round over sites of a micro-grid, or a door-to-door gas campaign over a building's households."""
    with conn.transaction():
        return patrol_service.create_round(conn, body=body, actor=who.actor, scope=scope_of(who))


@router.get("/patrol-rounds", tags=["field"])
def list_rounds(
    conn: Conn,
    who: Staff,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RoundRead]:
    """Rounds in your scope overlapping the period (default: today, UTC)."""
    start, end = _period(since, until)
    return patrol_service.list_rounds(conn, scope=scope_of(who), since=start, until=end)


@router.get("/patrol-rounds/{round_id}", tags=["field"])
def get_round(round_id: RoundId, conn: Conn, who: Staff) -> RoundDetail:
    """A round with its stops and their check-lists."""
    return patrol_service.get_round(conn, round_id=round_id, scope=scope_of(who))


@router.post("/patrol-rounds/{round_id}/stops/{stop_id}/check-in", tags=["field"], responses=CONFLICT)
def check_in(round_id: RoundId, stop_id: StopId, body: CheckIn, conn: Conn, who: Staff) -> CheckInResult:
    """At a stop: the check-list's answers (or nobody home); every failed item becomes a work order."""
    with conn.transaction():
        return patrol_service.check_in(
            conn, round_id=round_id, stop_id=stop_id, body=body, actor=who.actor, scope=scope_of(who)
        )


@router.get("/patrol-coverage", tags=["field"])
def coverage(
    conn: Conn,
    who: Staff,
    since: datetime | None = None,
    until: datetime | None = None,
    micro_grid: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROLS)] = None,
) -> CoverageRead:
    """Stops due vs visited, households reached, and the stops missed, for rounds starting in the period (default:
    the last 7 days)."""
    start, end = _period(since, until, days=7)
    return patrol_service.coverage(conn, scope=scope_of(who), since=start, until=end, micro_grid_id=micro_grid)


@router.post("/admin/patrol-schedule", tags=["field"])
def schedule(request: Request, conn: Conn, who: Admin, day: date | None = None) -> dict[str, int]:
    """Make the twice-daily rounds of every micro-grid (of your communities) for a day (default today; the field
    part does it every day)."""
    tz = settings_of(request).timezone
    when = day or datetime.now(ZoneInfo(tz)).date()
    with conn.transaction():
        made = patrol_service.schedule_rounds(conn, day=when, tz=tz, communities=who.community_scope, actor=who.actor)
    return {"created": made}


# -- resident reports (staff side; the public form is in api/field_pages.py) ---------------------------------------

ReportId = Annotated[int, Path(ge=1, le=2**62)]


class ReportClose(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class ReportOrder(BaseModel):
    """The work order a report becomes (its site is the report's)."""

    model_config = ConfigDict(extra="forbid")
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_]+$")] = "other"
    title: Annotated[str, StringConstraints(max_length=200)] = ""
    party: Party | None = None
    severity: int | None = Field(None, ge=1, le=4)


class ReportLink(BaseModel):
    site_id: str
    site_name: str
    url: str


def report_url(request: Request, code: str) -> str:
    """The public address of a site's report form (GRIDWATCH_PUBLIC_URL, else the address this was asked at)."""
    base = settings_of(request).public_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{base}/r/{quote(code, safe='')}"


@router.get("/resident-reports", tags=["field"])
def list_reports(conn: Conn, who: Staff, open: bool = True) -> list[ReportRead]:
    """Residents' reports on the sites in your scope, open ones first."""
    return report_service.list_reports(conn, scope=scope_of(who), open_only=open)


@router.get("/resident-reports/{report_id}", tags=["field"])
def get_report(report_id: ReportId, conn: Conn, who: Staff) -> ReportRead:
    """One report."""
    return report_service.get_report(conn, report_id=report_id, scope=scope_of(who))


@router.post("/resident-reports/{report_id}/take", tags=["field"], responses=CONFLICT)
def take_report(report_id: ReportId, conn: Conn, who: Staff) -> ReportRead:
    """Take the report on (it stops climbing the ladder)."""
    with conn.transaction():
        return report_service.take(conn, report_id=report_id, actor=who.actor, scope=scope_of(who))


@router.post("/resident-reports/{report_id}/close", tags=["field"], responses=CONFLICT)
def close_report(report_id: ReportId, body: ReportClose, conn: Conn, who: Staff) -> ReportRead:
    """Dealt with: the outcome the resident reads through their receipt, and may rate."""
    with conn.transaction():
        return report_service.close(
            conn, report_id=report_id, actor=who.actor, outcome=body.outcome, scope=scope_of(who)
        )


@router.post("/resident-reports/{report_id}/work-order", tags=["field"], status_code=201, responses=CONFLICT)
def report_work_order(report_id: ReportId, body: ReportOrder, conn: Conn, who: Staff) -> WorkOrderRead:
    """The report is a hazard to fix: a work order on its site (the report is taken)."""
    with conn.transaction():
        return report_service.to_work_order(
            conn, report_id=report_id, actor=who.actor, scope=scope_of(who), **body.model_dump()
        )


@router.get("/resident-reports/{report_id}/photos/{photo_id}", tags=["field"], response_class=Response)
def get_report_photo(report_id: ReportId, photo_id: PhotoId, conn: Conn, who: Staff) -> Response:
    """A resident's photo, for staff whose scope includes the site."""
    photo = report_service.get_photo(conn, report_id=report_id, photo_id=photo_id, scope=scope_of(who))
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "private, no-store", "Content-Disposition": f'inline; filename="{photo.id}"'},
    )


@router.get("/resident-links", tags=["field"])
def resident_links(request: Request, conn: Conn, who: Staff) -> list[ReportLink]:
    """The report-form address of every building in your scope (what its QR code holds)."""
    secret = settings_of(request).secret_key.get_secret_value()
    return [
        ReportLink(site_id=s.id, site_name=s.name, url=report_url(request, report_service.link_code(secret, s.id)))
        for s in field_service.list_sites(conn, scope=scope_of(who))
        if s.kind == "building"
    ]


# -- training and drill attendance (M-R04) -----------------------------------------------------------------------

MerchantId = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROLS)]


@router.post("/merchants/{merchant_id}/trainings", tags=["field"], status_code=201)
def record_training(merchant_id: MerchantId, body: TrainingCreate, conn: Conn, who: Staff) -> TrainingRead:
    """An inspector records a merchant's staff training or drill attendance; it earns the policy's M-R04 credit
    when the policy still allows one (else the record says why not)."""
    with conn.transaction():
        return training_service.record_training(
            conn, merchant_id=merchant_id, body=body, actor=who.actor, scope=scope_of(who)
        )


@router.get("/merchants/{merchant_id}/trainings", tags=["field"])
def list_trainings(merchant_id: MerchantId, conn: Conn, who: Anyone) -> list[TrainingRead]:
    """A merchant's training and drill records (a merchant sees its own)."""
    return training_service.list_trainings(conn, merchant_id=merchant_id, scope=scope_of(who))


# -- drills ------------------------------------------------------------------------------------------------------

DrillId = Annotated[int, Path(ge=1, le=2**62)]


@router.post("/admin/drills", tags=["field"], status_code=201)
def dispatch_drill(body: DrillCreate, conn: Conn, who: Admin) -> DrillRead:
    """Dispatch a surprise drill (网格赶考) to a chosen or random micro-grid of your communities; labelled a drill in
    every message and page, never counted as a hazard or in any score."""
    with conn.transaction():
        return drill_service.dispatch(conn, body=body, actor=who.actor, communities=who.community_scope)


@router.get("/drills", tags=["field"])
def list_drills(conn: Conn, who: Staff) -> list[DrillRead]:
    """Drills in your scope with their response times, newest first."""
    return drill_service.list_drills(conn, scope=scope_of(who), admin=who.role == "admin")


@router.get("/drills/{drill_id}", tags=["field"])
def get_drill(drill_id: DrillId, conn: Conn, who: Staff) -> DrillRead:
    """A drill's report: who it went to, when they acknowledged and arrived."""
    return drill_service.get_drill(conn, drill_id=drill_id, scope=scope_of(who), admin=who.role == "admin")


@router.post("/drills/{drill_id}/{step}", tags=["field"], responses=CONFLICT)
def answer_drill(drill_id: DrillId, step: Literal["ack", "arrived"], conn: Conn, who: Staff) -> DrillRead:
    """A dispatched worker acknowledges the drill, then reports arriving on site."""
    with conn.transaction():
        return drill_service.respond(conn, drill_id=drill_id, worker_id=who.worker_id, step=step, scope=scope_of(who))


@router.post("/patrol-rounds/{round_id}/stops/{stop_id}/photos", tags=["field"], status_code=201, responses=CONFLICT)
async def upload_stop_photo(round_id: RoundId, stop_id: StopId, request: Request, who: Staff) -> dict[str, str]:
    """A photo taken at a stop's check-in (JPEG, PNG or WebP by its bytes; at most 5 MiB and 5 per stop)."""
    data, _stage = await read_photo(request)
    return {"url": await store_stop_photo(request, round_id, stop_id, data, who)}


async def store_stop_photo(request: Request, round_id: int, stop_id: int, data: bytes, who: auth.Principal) -> str:
    """Check and keep a stop's photo in its own transaction."""

    def store() -> str:
        with request.app.state.pool.connection() as conn, conn.transaction():
            return patrol_service.add_stop_photo(
                conn, round_id=round_id, stop_id=stop_id, data=data, actor=who.actor, scope=scope_of(who)
            )

    async with connection_gate(request.app):
        return await run_in_threadpool(store)


@router.get("/patrol-rounds/{round_id}/photos/{photo_id}", tags=["field"], response_class=Response)
def get_stop_photo(round_id: RoundId, photo_id: PhotoId, conn: Conn, who: Staff) -> Response:
    """A check-in photo, for staff whose scope includes the round."""
    photo = patrol_service.get_stop_photo(conn, round_id=round_id, photo_id=photo_id, scope=scope_of(who))
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "private, no-store", "Content-Disposition": f'inline; filename="{photo.id}"'},
    )
