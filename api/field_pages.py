"""Pages of the work on foot (phone first): the work orders in one's scope with a form to open one from a
check-list item or free text, and an order's page with its photos (taken with the phone's camera), "fixed" and
the re-inspection that alone closes it. The JSON API is api/routers/field.py; the logic field/service.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

import segno
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from api import auth, i18n
from api.deps import Admin, Anyone, Conn, Staff, connection_gate, same_origin, scoped_principal, settings_of
from api.pages import Form, link_claim, link_form, link_worker, render
from api.ratelimit import client_key
from api.routers.field import ENVELOPE, read_photo, report_url, scope_of, store_photo, store_stop_photo
from core import actionlink
from field import checklists, drill_service, patrol_service, report_service, training_service
from field import service as field_service
from field.drill_service import DrillCreate
from field.photos import MAX_BYTES
from field.repo import Scope
from field.schemas import NO_CONTROLS, CheckIn, FixedIn, ReinspectIn, RoundCreate, WorkOrderCreate
from field.training_service import TrainingCreate

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
OrderId = Annotated[int, PathParam(ge=1, le=2**62)]
PARTIES = ("merchant", "landlord", "household", "community")


def _page(response: HTMLResponse) -> HTMLResponse:
    # A browser posts a page's forms with Origin: null under no-referrer, which the CSRF check refuses (see
    # api/pages.py's alarm page); same-origin keeps our Origin and still sends no referrer elsewhere.
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _label(lang: str) -> Any:
    def label(code: str) -> str:
        item = checklists.item(code)
        if item is None:
            return code
        return item.zh if lang == "zh-CN" else item.en

    return label


@router.get("/work-orders")
def work_orders_page(request: Request, conn: Conn, who: Anyone, closed: bool = False) -> HTMLResponse:
    """Open orders in one's scope, soonest deadline first (closed ones with ?closed=1); staff open new ones."""
    scope = scope_of(who)
    orders = field_service.list_work_orders(conn, scope=scope, open_only=not closed, limit=200)
    staff = who.role != "merchant"
    sites = field_service.list_sites(conn, scope=scope) if staff else []
    response = render(
        request,
        "field_orders.html",
        who,
        orders=orders,
        closed=closed,
        sites=sites,
        staff=staff,
        checklists=list(checklists.CHECKLISTS.values()),
        parties=PARTIES,
        label=_label(i18n.pick_lang(request)),
        error=request.query_params.get("error"),
    )
    return _page(response)


@router.post("/work-orders")
def open_order_form(conn: Conn, who: Staff, form: Form) -> Response:
    """The new-order form: a check-list item or free text on a site in one's scope."""
    try:
        body = WorkOrderCreate(
            site_id=form.get("site_id", ""),
            kind=form.get("kind") or "other",
            title=form.get("title", ""),
            note=form.get("note", ""),
            party=form.get("party") or None,
            party_name=form.get("party_name", ""),
            party_phone=form.get("party_phone", ""),
            severity=int(form["severity"]) if form.get("severity", "").isdigit() else None,
        )
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        order = field_service.open_work_order(conn, body=body, actor=who.actor, scope=scope_of(who))
    return RedirectResponse(f"/work-orders/{order.id}", status_code=303)


@router.get("/work-orders/{order_id}")
def work_order_page(order_id: OrderId, request: Request, conn: Conn, who: Anyone) -> HTMLResponse:
    """One order: what, where, who must fix it by when, its photos and history, and what one may do next."""
    detail = field_service.get_work_order(conn, order_id=order_id, scope=scope_of(who))
    response = render(
        request,
        "field_order.html",
        who,
        d=detail,
        o=detail.order,
        staff=who.role != "merchant",
        label=_label(i18n.pick_lang(request)),
        done=request.query_params.get("done"),
    )
    return _page(response)


@router.post("/work-orders/{order_id}/fixed")
def fixed_form(order_id: OrderId, conn: Conn, who: Anyone, form: Form) -> Response:
    """The party (a merchant on its own order) or a worker reports it fixed."""
    try:
        body = FixedIn(note=form.get("note", "")[:2000])
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        field_service.report_fixed(conn, order_id=order_id, actor=who.actor, scope=scope_of(who), note=body.note)
    return RedirectResponse(f"/work-orders/{order_id}?done=fixed", status_code=303)


@router.post("/work-orders/{order_id}/reinspection")
def reinspection_form(order_id: OrderId, conn: Conn, who: Staff, form: Form) -> Response:
    """The on-site re-inspection: pass closes the order, fail gives a new deadline."""
    passed = form.get("passed")
    if passed not in ("1", "0"):
        raise HTTPException(422, "choose pass or fail")
    try:
        body = ReinspectIn(passed=passed == "1", note=form.get("note", "")[:2000], due_at=form.get("due_at") or None)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        field_service.reinspect(conn, order_id=order_id, body=body, actor=who.actor, scope=scope_of(who))
    return RedirectResponse(f"/work-orders/{order_id}?done={'passed' if body.passed else 'failed'}", status_code=303)


@router.post("/work-orders/{order_id}/photos")
async def photo_form(
    order_id: OrderId, request: Request, who: Annotated[auth.Principal, Depends(scoped_principal)]
) -> Response:
    """A photo from the phone's camera. The form is multipart, so its CSRF token is checked here from the form."""
    data, stage = await read_photo(request)
    await _check_multipart_csrf(request)
    await store_photo(request, order_id, data, stage, who)
    return RedirectResponse(f"/work-orders/{order_id}?done=photo", status_code=303)


# -- patrol rounds -----------------------------------------------------------------------------------------------

RoundId = Annotated[int, PathParam(ge=1, le=2**62)]


@router.get("/patrols")
def patrols_page(request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """Today's rounds in one's scope with their progress, the week's coverage and the stops missed, and forms
    to start a round or a door-to-door gas campaign."""
    scope = scope_of(who)
    now = datetime.now(UTC)
    rounds = patrol_service.list_rounds(conn, scope=scope, since=now - timedelta(days=1), until=now + timedelta(days=1))
    coverage = patrol_service.coverage(conn, scope=scope, since=now - timedelta(days=7), until=now, now=now)
    sites = field_service.list_sites(conn, scope=scope)
    response = render(
        request,
        "field_patrols.html",
        who,
        rounds=rounds,
        coverage=coverage,
        micro_grids=sorted({s.micro_grid_id for s in sites}),
        buildings=[s for s in sites if s.kind == "building"],
    )
    return _page(response)


@router.post("/patrols")
def create_round_form(conn: Conn, who: Staff, form: Form) -> Response:
    """Start an ad hoc round over a micro-grid, or a gas campaign over a building's floors and units."""
    try:
        if form.get("kind") == "gas_campaign":
            body = RoundCreate(
                kind="gas_campaign",
                site_id=form.get("site_id", ""),
                floors=int(form.get("floors") or 0) or None,
                units_per_floor=int(form.get("units_per_floor") or 0) or None,
            )
        else:
            body = RoundCreate(micro_grid_id=form.get("micro_grid_id", ""))
    except (ValidationError, ValueError) as exc:
        raise HTTPException(422, f"check the form: {exc}") from None
    with conn.transaction():
        detail = patrol_service.create_round(conn, body=body, actor=who.actor, scope=scope_of(who))
    return RedirectResponse(f"/patrols/{detail.round.id}", status_code=303)


@router.get("/patrols/{round_id}")
def round_page(round_id: RoundId, request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """A round's stops in route order; at each, the check-list to answer (pass / fail) or 'nobody home'."""
    detail = patrol_service.get_round(conn, round_id=round_id, scope=scope_of(who))
    response = render(
        request,
        "field_round.html",
        who,
        d=detail,
        label=_label(i18n.pick_lang(request)),
        done=request.query_params.get("done"),
        orders=request.query_params.get("orders", ""),
    )
    return _page(response)


@router.post("/patrols/{round_id}/stops/{stop_id}")
def check_in_form(round_id: RoundId, stop_id: RoundId, conn: Conn, who: Staff, form: Form) -> Response:
    """The check-in at one stop; failed items become work orders."""
    outcome = "not_home" if form.get("outcome") == "not_home" else "checked"
    answers = {k.removeprefix("item_"): v for k, v in form.items() if k.startswith("item_")}
    try:
        body = CheckIn(outcome=outcome, answers=answers if outcome == "checked" else {}, note=form.get("note", ""))
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        result = patrol_service.check_in(
            conn, round_id=round_id, stop_id=stop_id, body=body, actor=who.actor, scope=scope_of(who)
        )
    made = ",".join(str(o.id) for o in result.work_orders)
    return RedirectResponse(f"/patrols/{round_id}?done={stop_id}&orders={made}#stop-{stop_id}", status_code=303)


# -- resident reports: the public form (no account) and the receipt --------------------------------------------

ReportId = Annotated[int, PathParam(ge=1, le=2**62)]
Code = Annotated[str, PathParam(min_length=3, max_length=200)]
Receipt = Annotated[str, PathParam(min_length=10, max_length=100, pattern=r"^[A-Za-z0-9_-]+$")]


def _secret(request: Request) -> str:
    return settings_of(request).secret_key.get_secret_value()


def _public(response: HTMLResponse) -> HTMLResponse:
    # The receipt is in the address: it must not leak to another site in a Referer (same-origin keeps our Origin on
    # the form posts, which are refused from elsewhere).
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@router.get("/r/{code}")
def resident_form(code: Code, request: Request, conn: Conn) -> HTMLResponse:
    """The report form a building's QR code opens: what, where, an optional photo and phone number; no account."""
    site = report_service.report_site(conn, secret=_secret(request), code=code)
    place = request.query_params.get("where", "")[:200]
    return _public(render(request, "field_resident_form.html", None, site=site, code=code, place=place, error=None))


@router.post("/r/{code}")
async def resident_submit(code: Code, request: Request) -> Response:
    """Take a resident's report: bounded, checked, rate-limited; answered with their receipt."""
    if not same_origin(request):
        raise HTTPException(403, "send the report from the form on this site")
    data, fields = await read_resident_form(request)
    client = client_key(request.client.host if request.client else None)

    def submit() -> report_service.Submitted:
        with request.app.state.pool.connection() as conn, conn.transaction():
            return report_service.submit_report(
                conn,
                secret=_secret(request),
                code=code,
                what=fields.get("what", ""),
                place=fields.get("place", ""),
                phone=fields.get("phone", ""),
                photo=data,
                client=client,
            )

    try:
        async with connection_gate(request.app):
            done = await run_in_threadpool(submit)
    except report_service.ReportRateLimitedError as exc:
        page = render(request, "error.html", None, status_code=429, status=429, message=str(exc))
        page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    return RedirectResponse(f"/r/receipt/{done.receipt}", status_code=303)


async def read_resident_form(request: Request) -> tuple[bytes | None, dict[str, str]]:
    """The form's fields and optional photo, refused before reading when too large."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "send the report with a Content-Length")
    if int(length) > MAX_BYTES + ENVELOPE:
        raise HTTPException(413, f"the report is {length} bytes; a photo may have at most {MAX_BYTES} (5 MiB)")
    form = await request.form(max_files=1, max_fields=8, max_part_size=ENVELOPE)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    photo = form.get("photo")
    data = await photo.read(MAX_BYTES + 1) if isinstance(photo, UploadFile) else None
    return data or None, fields


@router.get("/r/receipt/{receipt}")
def resident_receipt(receipt: Receipt, request: Request, conn: Conn) -> HTMLResponse:
    """The resident's view of their report: progress, the outcome, and the rating form once it is closed."""
    view = report_service.receipt_view(conn, secret=_secret(request), receipt=receipt)
    return _public(render(request, "field_resident_receipt.html", None, v=view, receipt=receipt))


@router.post("/r/receipt/{receipt}/rating")
def resident_rating(receipt: Receipt, request: Request, conn: Conn, form: Form) -> Response:
    """居民评事: the resident rates the outcome (once)."""
    if not same_origin(request):
        raise HTTPException(403, "rate from the page on this site")
    rating = form.get("rating", "")
    if rating not in ("1", "2", "3", "4", "5"):
        raise HTTPException(422, "choose 1 to 5 stars")
    with conn.transaction():
        report_service.rate(
            conn, secret=_secret(request), receipt=receipt, rating=int(rating), note=form.get("note", "")
        )
    return RedirectResponse(f"/r/receipt/{receipt}", status_code=303)


# -- resident reports: the workers' side ------------------------------------------------------------------------


@router.get("/resident-reports")
def resident_reports_page(request: Request, conn: Conn, who: Staff, closed: bool = False) -> HTMLResponse:
    """Residents' reports on the sites in one's scope."""
    reports = report_service.list_reports(conn, scope=scope_of(who), open_only=not closed)
    return _page(render(request, "field_resident_reports.html", who, reports=reports, closed=closed))


@router.get("/resident-reports/codes")
def resident_codes_page(request: Request, conn: Conn, who: Staff, stairwells: int = 0) -> HTMLResponse:
    """A printable page of QR codes: one per building in scope (and per stairwell, with ?stairwells=N)."""
    if not 0 <= stairwells <= 20:
        raise HTTPException(422, "stairwells: 0 to 20")
    secret = _secret(request)
    codes = []
    for site in field_service.list_sites(conn, scope=scope_of(who)):
        if site.kind != "building":
            continue
        url = report_url(request, report_service.link_code(secret, site.id))
        places = [("", url)] + [(f"{n}", f"{url}?where={n}") for n in range(1, stairwells + 1)]
        codes += [(site, n, u, segno.make_qr(u, error="m").svg_data_uri(scale=4)) for n, u in places]
    return render(request, "field_resident_codes.html", who, codes=codes)


@router.get("/resident-reports/{report_id}")
def resident_report_page(report_id: ReportId, request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """One report: what, where, photos, and taking it on, closing it with an outcome, or making it a work order."""
    report = report_service.get_report(conn, report_id=report_id, scope=scope_of(who))
    response = render(
        request,
        "field_resident_report.html",
        who,
        r=report,
        checklists=list(checklists.CHECKLISTS.values()),
        done=request.query_params.get("done"),
    )
    return _page(response)


@router.post("/resident-reports/{report_id}/take")
def take_report_form(report_id: ReportId, conn: Conn, who: Staff) -> Response:
    """Take it on."""
    with conn.transaction():
        report_service.take(conn, report_id=report_id, actor=who.actor, scope=scope_of(who))
    return RedirectResponse(f"/resident-reports/{report_id}?done=taken", status_code=303)


@router.post("/resident-reports/{report_id}/close")
def close_report_form(report_id: ReportId, conn: Conn, who: Staff, form: Form) -> Response:
    """Close it with the outcome the resident reads."""
    with conn.transaction():
        report_service.close(
            conn, report_id=report_id, actor=who.actor, outcome=form.get("outcome", ""), scope=scope_of(who)
        )
    return RedirectResponse(f"/resident-reports/{report_id}?done=closed", status_code=303)


@router.post("/resident-reports/{report_id}/work-order")
def report_order_form(report_id: ReportId, conn: Conn, who: Staff, form: Form) -> Response:
    """Make it a work order on its site."""
    kind = (form.get("kind") or "other")[:64]
    with conn.transaction():
        order = report_service.to_work_order(conn, report_id=report_id, actor=who.actor, scope=scope_of(who), kind=kind)
    return RedirectResponse(f"/work-orders/{order.id}", status_code=303)


# -- training and drill attendance -------------------------------------------------------------------------------


@router.get("/merchants/{merchant_id}/trainings")
def trainings_page(
    merchant_id: Annotated[str, PathParam(min_length=1, max_length=64, pattern=NO_CONTROLS)],
    request: Request,
    conn: Conn,
    who: Anyone,
) -> HTMLResponse:
    """A merchant's training and drill records; an inspector records one here."""
    records = training_service.list_trainings(conn, merchant_id=merchant_id, scope=scope_of(who))
    page = render(
        request,
        "field_trainings.html",
        who,
        merchant_id=merchant_id,
        records=records,
        staff=who.role != "merchant",
        done=request.query_params.get("done"),
    )
    return _page(page)


@router.post("/merchants/{merchant_id}/trainings")
def training_form(
    merchant_id: Annotated[str, PathParam(min_length=1, max_length=64, pattern=NO_CONTROLS)],
    conn: Conn,
    who: Staff,
    form: Form,
) -> Response:
    """Record attendance from the form."""
    try:
        body = TrainingCreate(
            kind="drill" if form.get("kind") == "drill" else "training",
            attendees=int(form.get("attendees") or 0),
            names=form.get("names", ""),
            note=form.get("note", ""),
        )
    except (ValidationError, ValueError) as exc:
        raise HTTPException(422, f"attendees: a number from 1 to 500 ({exc.__class__.__name__})") from None
    with conn.transaction():
        record = training_service.record_training(
            conn, merchant_id=merchant_id, body=body, actor=who.actor, scope=scope_of(who)
        )
    done = "credited" if record.ledger_entry_id else "recorded"
    return RedirectResponse(f"/merchants/{quote(merchant_id, safe='')}/trainings?done={done}", status_code=303)


# -- drills ------------------------------------------------------------------------------------------------------


@router.get("/drills")
def drills_page(request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """Drills in one's scope with their response times; an admin dispatches one here."""
    drills = drill_service.list_drills(conn, scope=scope_of(who), admin=who.role == "admin")
    micro_grids = sorted({s.micro_grid_id for s in field_service.list_sites(conn, scope=scope_of(who))})
    return _page(render(request, "field_drills.html", who, drills=drills, micro_grids=micro_grids))


@router.post("/drills")
def dispatch_form(conn: Conn, who: Admin, form: Form) -> Response:
    """Dispatch a drill (a random micro-grid unless one is chosen)."""
    try:
        body = DrillCreate(micro_grid_id=form.get("micro_grid_id") or None, scenario=form.get("scenario") or "演练")
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        drill = drill_service.dispatch(conn, body=body, actor=who.actor, communities=who.community_scope)
    return RedirectResponse(f"/drills/{drill.id}", status_code=303)


@router.get("/drills/{drill_id}")
def drill_page(
    drill_id: Annotated[int, PathParam(ge=1, le=2**62)], request: Request, conn: Conn, who: Staff
) -> HTMLResponse:
    """A drill, labelled as one: the scene, the buttons of a dispatched worker, and the response times."""
    drill = drill_service.get_drill(conn, drill_id=drill_id, scope=scope_of(who), admin=who.role == "admin")
    mine = next((r for r in drill.responders if r.worker_id == who.worker_id), None)
    return _page(render(request, "field_drill.html", who, d=drill, mine=mine, secs=_secs))


@router.post("/drills/{drill_id}/{step}")
def drill_answer_form(
    drill_id: Annotated[int, PathParam(ge=1, le=2**62)], step: Literal["ack", "arrived"], conn: Conn, who: Staff
) -> Response:
    """Acknowledge, or report arriving on site."""
    with conn.transaction():
        drill_service.respond(conn, drill_id=drill_id, worker_id=who.worker_id, step=step, scope=scope_of(who))
    return RedirectResponse(f"/drills/{drill_id}", status_code=303)


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


@router.post("/patrols/{round_id}/stops/{stop_id}/photos")
async def stop_photo_form(
    round_id: RoundId, stop_id: RoundId, request: Request, who: Annotated[auth.Principal, Depends(scoped_principal)]
) -> Response:
    """A photo at a stop, from the phone's camera (multipart: the CSRF token is checked from the form)."""
    if who.role not in ("admin", "worker"):
        raise HTTPException(403, f"this needs the admin or worker role; your token is {who.role}")
    data, _stage = await read_photo(request)
    await _check_multipart_csrf(request)
    await store_stop_photo(request, round_id, stop_id, data, who)
    return RedirectResponse(f"/patrols/{round_id}?done={stop_id}#stop-{stop_id}", status_code=303)


async def _check_multipart_csrf(request: Request) -> None:
    session = getattr(request.state, "session", None)
    if session is None:
        return
    presented = (await request.form()).get("csrf")
    key = settings_of(request).secret_key.get_secret_value()
    if not same_origin(request) or not isinstance(presented, str) or not auth.check_csrf(key, session, presented):
        raise HTTPException(403, "CSRF check failed: reload the page and try again")


# -- the signed link in field's messages (core/actionlink.py) -----------------------------------------------------
# A resident report, a drill or an overdue work order reaches the workers routing chose (field/worker.py), also an
# on-call worker of another micro-grid whose scope does not include it. Their message's link opens that one item
# without a token, as an alarm's does (api/pages.py): the link is the credential, checked by the same verifier
# (signed for this kind of item and this id, not expired, recipient active, not revoked), and it opens nothing else.

LinkKey = Annotated[str, PathParam(min_length=1, max_length=200)]
PhotoId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{32}$")]


def _link_base(subject: actionlink.Subject, item_id: int, key: str) -> str:
    return f"/{actionlink.PATHS[subject]}/{item_id}/link/{quote(key, safe='')}"


def _link_page(request: Request, name: str, claim: actionlink.LinkClaim, key: str, **extra: Any) -> HTMLResponse:
    """A link's page: no session, its forms carry the token derived from the link; the key in its address is
    neither cached nor sent to another site."""
    page = render(
        request,
        name,
        None,
        base=_link_base(claim.subject, claim.subject_id, key),
        csrf=auth.link_csrf(_secret(request), key),
        link_for=claim.recipient_id,
        done=request.query_params.get("done"),
        **extra,
    )
    page.headers["Cache-Control"] = "private, no-store"
    return _page(page)


def _worker_link(request: Request, conn: Conn, subject: actionlink.Subject, item_id: int, key: str, doing: str) -> str:
    """The worker a verified link to this item was sent to (field sends merchants links to their work orders only:
    403 for a merchant's key anywhere else)."""
    return link_worker(link_claim(request, conn, subject, item_id, key), doing)


def _photo_response(photo: Any) -> Response:
    return Response(
        photo.data,
        media_type=photo.content_type,
        headers={"Cache-Control": "private, no-store", "Content-Disposition": f'inline; filename="{photo.id}"'},
    )


@router.get("/resident-reports/{report_id}/link/{key}")
def resident_report_link(report_id: ReportId, key: LinkKey, request: Request, conn: Conn) -> HTMLResponse:
    """The report as its message's link opens it: take it on, close it, or make it a work order, as the worker it
    was sent to. Opening it changes nothing (chat apps fetch links for their previews)."""
    claim = link_claim(request, conn, "resident_report", report_id, key)
    link_worker(claim, "handling it")
    report = report_service.get_report(conn, report_id=report_id, scope=Scope())
    base = _link_base("resident_report", report_id, key)
    report.photos = [f"{base}/photos/{p.rsplit('/', 1)[1]}" for p in report.photos]
    return _link_page(
        request, "field_resident_report.html", claim, key, r=report, checklists=list(checklists.CHECKLISTS.values())
    )


@router.post("/resident-reports/{report_id}/link/{key}/take")
def resident_report_link_take(report_id: ReportId, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """Take it on from the message, recorded as the worker it was sent to (it stops climbing)."""
    link_form(request, key, form)
    actor = _worker_link(request, conn, "resident_report", report_id, key, "taking it on")
    with conn.transaction():
        report_service.take(conn, report_id=report_id, actor=actor, scope=Scope())
    log.info("resident report %s taken by %s through their message link", report_id, actor)
    return RedirectResponse(_link_base("resident_report", report_id, key) + "?done=taken", status_code=303)


@router.post("/resident-reports/{report_id}/link/{key}/close")
def resident_report_link_close(report_id: ReportId, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """Close it from the message with the outcome the resident reads."""
    link_form(request, key, form)
    actor = _worker_link(request, conn, "resident_report", report_id, key, "closing it")
    with conn.transaction():
        report_service.close(conn, report_id=report_id, actor=actor, outcome=form.get("outcome", ""), scope=Scope())
    log.info("resident report %s closed by %s through their message link", report_id, actor)
    return RedirectResponse(_link_base("resident_report", report_id, key) + "?done=closed", status_code=303)


@router.post("/resident-reports/{report_id}/link/{key}/work-order")
def resident_report_link_order(report_id: ReportId, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """Make it a work order on its site from the message; back to the report (the link opens the report only)."""
    link_form(request, key, form)
    actor = _worker_link(request, conn, "resident_report", report_id, key, "making it a work order")
    kind = (form.get("kind") or "other")[:64]
    with conn.transaction():
        order = report_service.to_work_order(conn, report_id=report_id, actor=actor, scope=Scope(), kind=kind)
    log.info("resident report %s became work order %s by %s through their message link", report_id, order.id, actor)
    return RedirectResponse(_link_base("resident_report", report_id, key) + "?done=order", status_code=303)


@router.get("/resident-reports/{report_id}/link/{key}/photos/{photo_id}", response_class=Response)
def resident_report_link_photo(
    report_id: ReportId, key: LinkKey, photo_id: PhotoId, request: Request, conn: Conn
) -> Response:
    """The resident's photo of this report, for the worker the link was sent to."""
    _worker_link(request, conn, "resident_report", report_id, key, "seeing its photos")
    return _photo_response(report_service.get_photo(conn, report_id=report_id, photo_id=photo_id, scope=Scope()))


@router.get("/drills/{drill_id}/link/{key}")
def drill_link(
    drill_id: Annotated[int, PathParam(ge=1, le=2**62)], key: LinkKey, request: Request, conn: Conn
) -> HTMLResponse:
    """The drill as its message's link opens it, with the dispatched worker's two buttons."""
    claim = link_claim(request, conn, "drill", drill_id, key)
    worker = link_worker(claim, "answering it")
    drill = drill_service.get_drill(conn, drill_id=drill_id, scope=Scope(), admin=False)
    mine = next((r for r in drill.responders if r.worker_id == worker), None)
    return _link_page(request, "field_drill.html", claim, key, d=drill, mine=mine, secs=_secs)


@router.post("/drills/{drill_id}/link/{key}/{step}")
def drill_link_answer(
    drill_id: Annotated[int, PathParam(ge=1, le=2**62)],
    key: LinkKey,
    step: Literal["ack", "arrived"],
    request: Request,
    conn: Conn,
    form: Form,
) -> Response:
    """Acknowledge, or report arriving on site, from the message: the drill report times it for its worker."""
    link_form(request, key, form)
    worker = _worker_link(request, conn, "drill", drill_id, key, "answering it")
    with conn.transaction():
        drill_service.respond(conn, drill_id=drill_id, worker_id=worker, step=step, scope=Scope())
    log.info("drill %s: %s by %s through their message link", drill_id, step, worker)
    return RedirectResponse(_link_base("drill", drill_id, key), status_code=303)


def _order_link(request: Request, conn: Conn, order_id: int, key: str) -> tuple[actionlink.LinkClaim, Scope]:
    """A verified link to an order and the scope it opens: that order for a worker; for a merchant, that order
    only if it is the merchant's to fix."""
    claim = link_claim(request, conn, "work_order", order_id, key)
    merchant = claim.recipient_id if claim.recipient_kind == "merchant" else None
    return claim, Scope(merchant=merchant)


@router.get("/work-orders/{order_id}/link/{key}")
def work_order_link(order_id: OrderId, key: LinkKey, request: Request, conn: Conn) -> HTMLResponse:
    """The order as its message's link opens it: a worker reports it fixed, re-inspects it and adds photos; the
    merchant that must fix it reports it fixed and shows its fix."""
    claim, scope = _order_link(request, conn, order_id, key)
    detail = field_service.get_work_order(conn, order_id=order_id, scope=scope)
    base = _link_base("work_order", order_id, key)
    for photo in detail.photos:
        photo.url = f"{base}/photos/{photo.id}"
    secret = _secret(request)
    return _link_page(
        request,
        "field_order.html",
        claim,
        key,
        d=detail,
        o=detail.order,
        staff=claim.recipient_kind == "worker",
        label=_label(i18n.pick_lang(request)),
        photo_query="?csrf=" + quote(auth.link_csrf(secret, key), safe=""),
    )


@router.post("/work-orders/{order_id}/link/{key}/fixed")
def work_order_link_fixed(order_id: OrderId, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """Report it fixed from the message, as whom it was sent to."""
    link_form(request, key, form)
    claim, scope = _order_link(request, conn, order_id, key)
    try:
        body = FixedIn(note=form.get("note", "")[:2000])
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        field_service.report_fixed(conn, order_id=order_id, actor=claim.recipient_id, scope=scope, note=body.note)
    return RedirectResponse(_link_base("work_order", order_id, key) + "?done=fixed", status_code=303)


@router.post("/work-orders/{order_id}/link/{key}/reinspection")
def work_order_link_reinspection(order_id: OrderId, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """The re-inspection from the message (a worker's link only): pass closes the order, fail gives a new
    deadline."""
    link_form(request, key, form)
    claim, scope = _order_link(request, conn, order_id, key)
    actor = link_worker(claim, "re-inspecting")
    passed = form.get("passed")
    if passed not in ("1", "0"):
        raise HTTPException(422, "choose pass or fail")
    try:
        body = ReinspectIn(passed=passed == "1", note=form.get("note", "")[:2000], due_at=form.get("due_at") or None)
    except ValidationError as exc:
        raise HTTPException(422, "; ".join(str(e["msg"]) for e in exc.errors())) from None
    with conn.transaction():
        field_service.reinspect(conn, order_id=order_id, body=body, actor=actor, scope=scope)
    done = "passed" if body.passed else "failed"
    return RedirectResponse(_link_base("work_order", order_id, key) + f"?done={done}", status_code=303)


@router.post("/work-orders/{order_id}/link/{key}/photos")
async def work_order_link_photo(order_id: OrderId, key: LinkKey, request: Request) -> Response:
    """A photo from the phone's camera through the message's link. The link and its form token (in the form's
    address, so a bad one is refused before the upload is read) are checked first."""
    presented = request.query_params.get("csrf")
    if not same_origin(request) or not auth.check_csrf(_secret(request), "link:" + key, presented):
        raise HTTPException(403, "CSRF check failed: open the link again and try again")

    def check() -> tuple[str, Scope]:
        with request.app.state.pool.connection() as conn:
            claim, scope = _order_link(request, conn, order_id, key)
            return claim.recipient_id, scope

    async with connection_gate(request.app):
        actor, scope = await run_in_threadpool(check)
    data, stage = await read_photo(request)

    def store() -> None:
        with request.app.state.pool.connection() as conn, conn.transaction():
            field_service.add_photo(conn, order_id=order_id, data=data, stage=stage, actor=actor, scope=scope)

    async with connection_gate(request.app):
        await run_in_threadpool(store)
    return RedirectResponse(_link_base("work_order", order_id, key) + "?done=photo", status_code=303)


@router.get("/work-orders/{order_id}/link/{key}/photos/{photo_id}", response_class=Response)
def work_order_link_photo_file(
    order_id: OrderId, key: LinkKey, photo_id: PhotoId, request: Request, conn: Conn
) -> Response:
    """A photo of this order, for whom the link was sent to."""
    _claim, scope = _order_link(request, conn, order_id, key)
    return _photo_response(field_service.get_photo(conn, order_id=order_id, photo_id=photo_id, scope=scope))
