"""Server-rendered pages (Jinja2, zh-CN and English, no build step): login, worker board with live updates,
alarm and device pages with a chart, merchant score page, admin overview.

Pages authenticate with the web session cookie (HttpOnly, SameSite=Strict) opened by logging in with a token;
every form post carries the session's CSRF token (api/deps.py checks it).
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from psycopg import Connection

from api import auth, i18n
from api import repo as api_repo
from api.chart import svg_bars, svg_chart
from api.deps import SESSION_COOKIE, Admin, Anyone, Conn, Staff, check_form_size, same_origin, settings_of
from api.ratelimit import FailureLimiter, client_key
from api.routers import admin as admin_routes
from api.routers import alarms as alarm_routes
from api.routers import board as board_routes
from api.routers import devices as device_routes
from api.routers import merchants as merchant_routes
from api.schemas import BoardItem
from api.stream import alarm_stream
from core import actionlink, names
from core import repo as core_repo
from core.domain import Disposition, Severity
from core.errors import AuthError, NotFoundError
from report import period as report_period
from report import service as report_service
from rules import service as rules_service
from rules.commissioning import service as commissioning
from rules.engine import ThresholdRule
from rules.ruleset import rules_in_force
from score import policy as score_policy
from score import service as score_service

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
LOGIN_COOKIE = "gw_login"
UNITS = {
    "gas_lel": "%LEL",
    "co_ppm": "ppm",
    "smoke_db_m": "dB/m",
    "temp_c": "°C",
    "power_w": "W",
    "current_a": "A",
    "voltage_v": "V",
    "energy_wh": "Wh",
    "battery_pct": "%",
}


def _tz(request: Request) -> ZoneInfo:
    return ZoneInfo(settings_of(request).timezone)


def _fmt_time(value: datetime | None, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


def _fmt_secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _ctx(request: Request, who: auth.Principal | None, **extra: Any) -> dict[str, Any]:
    lang = i18n.pick_lang(request)
    tz = _tz(request)
    session = getattr(request.state, "session", None)
    key = settings_of(request).secret_key.get_secret_value()
    return {
        "t": i18n.translator(lang),
        "lang": lang,
        "who": who,
        "csrf": auth.csrf_token(key, session) if session else "",
        "time": lambda v: _fmt_time(v, tz),
        "secs": _fmt_secs,
        "sev": lambda n: Severity(n).label,
        # names, not ids (issue 22): alarm types and severities as a person reads them, in their language
        "alarm_name": lambda alarm_type: names.alarm_name(alarm_type, lang),
        "sev_name": lambda n: names.severity_name(n, lang),
        "prio": lambda n: Severity(n).priority,
        "dispositions": [d.value for d in Disposition],
        **extra,
    }


def render(
    request: Request, name: str, who: auth.Principal | None, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    """A page, with the language cookie refreshed when ?lang= chose one."""
    response = templates.TemplateResponse(request, name, _ctx(request, who, **extra), status_code=status_code)
    if request.query_params.get("lang") in i18n.LANGS:
        response.set_cookie(
            i18n.LANG_COOKIE,
            request.query_params["lang"],
            max_age=365 * 86400,
            samesite="strict",
            httponly=True,
            secure=_secure(request),
        )
    return response


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error a person can read, in their language."""
    return render(request, "error.html", None, status_code=status, status=status, message=message)


def login_url(request: Request) -> str:
    """Where an unauthenticated page visit is sent."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def _secure(request: Request) -> bool:
    """Cookies are Secure (sent over HTTPS only) everywhere but the demo, whatever the public URL says: a
    deployment serves its pages through TLS (a proxy in front of the API), and a session cookie that a browser would
    also send over plain HTTP can be read off the network (issue 23). The demo runs on http://localhost."""
    settings = settings_of(request)
    return not settings.demo or settings.public_url.startswith("https://") or request.url.scheme == "https"


def _safe_next(value: str | None) -> str:
    """Only local paths, so the login form cannot be used as an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


# -- login / logout ---------------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None) -> HTMLResponse:
    """The login form; a pre-session nonce cookie protects the form itself against login CSRF."""
    nonce = secrets.token_urlsafe(24)
    key = settings_of(request).secret_key.get_secret_value()
    response = render(
        request,
        "login.html",
        None,
        next=_safe_next(next),
        login_csrf=auth.csrf_token(key, "login:" + nonce),
        error=None,
    )
    response.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/login", max_age=3600
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    from urllib.parse import parse_qs

    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    check_form_size(request)
    return {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}


Form = Annotated[dict[str, str], Depends(_form)]


def _login_again(request: Request, next_url: str, error: str, *, status_code: int) -> HTMLResponse:
    """The login form again with the error and a fresh form nonce."""
    key = settings_of(request).secret_key.get_secret_value()
    nonce = secrets.token_urlsafe(24)
    page = render(
        request,
        "login.html",
        None,
        status_code=status_code,
        next=next_url,
        login_csrf=auth.csrf_token(key, "login:" + nonce),
        error=error,
    )
    page.set_cookie(
        LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=_secure(request), path="/login", max_age=3600
    )
    return page


@router.post("/login")
def login(request: Request, conn: Conn, form: Form) -> Response:
    """Exchange a token for a session cookie."""
    key = settings_of(request).secret_key.get_secret_value()
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    next_url = _safe_next(form.get("next"))
    if not nonce or not auth.check_csrf(key, "login:" + nonce, form.get("csrf")):
        raise HTTPException(403, "the login form expired: reload the page and try again")
    limiter: FailureLimiter = request.app.state.auth_limiter
    client = client_key(request.client.host if request.client else None)
    wait = limiter.retry_after(client)
    if wait is not None:
        page = _login_again(
            request, next_url, f"too many failed logins from your address: try again in {wait} s", status_code=429
        )
        page.headers["Retry-After"] = str(wait)
        return page
    try:
        with conn.transaction():
            session, _who = auth.create_session(conn, secret_key=key, token=form.get("token", "").strip())
    except AuthError as exc:
        limiter.fail(client)
        return _login_again(request, next_url, str(exc), status_code=401)
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/",
        max_age=int(auth.SESSION_TTL.total_seconds()),
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, conn: Conn, _who: Anyone) -> Response:
    """End the session (the token stays valid)."""
    session = getattr(request.state, "session", None)
    if session:
        with conn.transaction():
            auth.end_session(conn, secret_key=settings_of(request).secret_key.get_secret_value(), session=session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def home(who: Anyone) -> Response:
    """Each role's start page."""
    return RedirectResponse({"worker": "/board", "merchant": "/score", "admin": "/admin"}[who.role], status_code=303)


# -- worker board ----------------------------------------------------------------------------------------------------


def _row_html(request: Request, who: auth.Principal, row: api_repo.AlarmInSite, item: BoardItem | None = None) -> str:
    """One board row, rendered by the server (the page, its live stream and its one-tap actions alike)."""
    if item is None:
        item = board_routes.board_item(
            row, policy=board_routes.policy_of(request), tier=who.tier, now=datetime.now(UTC)
        )
    return templates.get_template("_alarm_row.html").render(
        _ctx(request, who, a=row, b=item, rank=board_routes.rank(item))
    )


@router.get("/board")
def board(request: Request, conn: Conn, who: Staff) -> HTMLResponse:
    """Open alarms of the caller's scope, those escalated to their tier first with how long they have waited;
    updated live."""
    rows = board_routes.board_rows(conn, who, board_routes.policy_of(request))
    return render(request, "board.html", who, rows=[_row_html(request, who, r, item) for r, item in rows])


@router.get("/board/stream")
async def board_stream(
    request: Request, who: Staff, max_s: Annotated[float | None, Query(gt=0, le=3600)] = None
) -> StreamingResponse:
    """The board's live feed: each changed alarm as its rendered row (open=false: take it off the board)."""
    return alarm_stream(
        request,
        who,
        max_s,
        lambda row: json.dumps({"id": row.id, "open": row.closed_at is None, "html": _row_html(request, who, row)}),
    )


def _after_action(request: Request, who: auth.Principal, conn: Connection[Any], alarm_id: int) -> Response:
    if request.headers.get("x-requested-with") == "fetch":
        row = alarm_routes.scoped_alarm(conn, who, alarm_id)
        return JSONResponse({"id": row.id, "open": row.closed_at is None, "html": _row_html(request, who, row)})
    return RedirectResponse("/board", status_code=303)


def _acknowledge(conn: Connection[Any], who: auth.Principal, alarm_id: int) -> None:
    with conn.transaction():
        alarm_routes.scoped_alarm(conn, who, alarm_id)
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor=who.actor)


def _disposition(form: dict[str, str]) -> tuple[Disposition, str | None]:
    """The disposition of the button pressed and the note, if any."""
    try:
        disposition = Disposition(form.get("disposition", ""))
    except ValueError:
        raise HTTPException(422, "disposition: choose real_hazard, false_alarm, test or device_fault") from None
    return disposition, (form.get("note") or "").strip()[:2000] or None


def _resolve(conn: Connection[Any], who: auth.Principal, alarm_id: int, form: dict[str, str]) -> None:
    disposition, note = _disposition(form)
    with conn.transaction():
        alarm_routes.scoped_alarm(conn, who, alarm_id)
        rules_service.resolve(conn, alarm_id=alarm_id, actor=who.actor, disposition=disposition, note=note)


@router.post("/board/alarms/{alarm_id}/ack")
def board_ack(alarm_id: int, request: Request, conn: Conn, who: Staff) -> Response:
    """One tap: acknowledge."""
    _acknowledge(conn, who, alarm_id)
    return _after_action(request, who, conn, alarm_id)


@router.post("/board/alarms/{alarm_id}/resolve")
def board_resolve(alarm_id: int, request: Request, conn: Conn, who: Staff, form: Form) -> Response:
    """One tap: resolve with the disposition of the button pressed (and the note, if any)."""
    _resolve(conn, who, alarm_id, form)
    return _after_action(request, who, conn, alarm_id)


# -- alarm and device pages -----------------------------------------------------------------------------------------


def _alarm_view(
    request: Request,
    conn: Connection[Any],
    who: auth.Principal | None,
    row: api_repo.AlarmInSite,
    *,
    acting: dict[str, str] | None,
    **extra: Any,
) -> HTMLResponse:
    """The alarm page: history, a chart of the readings around it, and (acting) the forms to act on it."""
    detail = alarm_routes.detail_of(conn, row)
    field = _alarm_field(detail.alarm.type, detail.readings)
    pts = [
        (r.ts, None, float(r.values[field]), None)
        for r in detail.readings
        if field and isinstance(r.values.get(field), int | float) and not isinstance(r.values.get(field), bool)
    ]
    chart = svg_chart(
        pts,
        title=f"{detail.alarm.device_id} {field or ''}",
        unit=UNITS.get(field or "", ""),
        tz_label=settings_of(request).timezone,
    )
    staff = who is not None and who.role != "merchant"
    kinds = [f.kind for f in score_policy.active_policies().default.findings] if staff else []
    page = render(
        request,
        "alarm.html",
        who,
        d=detail,
        chart=chart,
        field=field,
        merchant_id=row.merchant_id,
        acked_name=row.acknowledged_by_name,
        finding_kinds=kinds if row.merchant_id else [],
        acting=acting,
        done=request.query_params.get("done"),
        **extra,
    )
    # A browser posts this page's forms with Origin: null under no-referrer (Fetch: "append a request Origin
    # header"), which the CSRF check refuses; same-origin keeps our Origin on them and still sends no referrer
    # (nor a link's key) to anyone else.
    page.headers["Referrer-Policy"] = "same-origin"
    return page


@router.get("/alarms/{alarm_id}")
def alarm_page(alarm_id: int, request: Request, conn: Conn, who: Anyone) -> HTMLResponse:
    """An alarm with its history and a chart of the device's readings around it; staff whose scope includes it
    acknowledge and resolve it here."""
    row = alarm_routes.scoped_alarm(conn, who, alarm_id)
    acting = (
        {"ack": f"/alarms/{alarm_id}/ack", "resolve": f"/alarms/{alarm_id}/resolve", "csrf": _ctx(request, who)["csrf"]}
        if who.role != "merchant"
        else None
    )
    return _alarm_view(request, conn, who, row, acting=acting)


@router.post("/alarms/{alarm_id}/ack")
def alarm_ack(alarm_id: int, conn: Conn, who: Staff) -> Response:
    """The alarm page's acknowledge button."""
    _acknowledge(conn, who, alarm_id)
    return RedirectResponse(f"/alarms/{alarm_id}?done=ack", status_code=303)


@router.post("/alarms/{alarm_id}/resolve")
def alarm_resolve(alarm_id: int, conn: Conn, who: Staff, form: Form) -> Response:
    """The alarm page's resolve buttons (one per disposition, with an optional note)."""
    _resolve(conn, who, alarm_id, form)
    return RedirectResponse(f"/alarms/{alarm_id}?done=resolve", status_code=303)


# -- the signed link in every message (core/actionlink.py) ------------------------------------------------------------

LinkKey = Annotated[str, PathParam(min_length=1, max_length=200)]


def link_claim(
    request: Request, conn: Connection[Any], subject: actionlink.Subject, subject_id: int, key: str
) -> actionlink.LinkClaim:
    """The verified link to one item, or 403 saying why not; failures count against the address like failed
    tokens. The alarm links and the field's (api/field_pages.py) are checked here alike."""
    limiter: FailureLimiter = request.app.state.auth_limiter
    client = client_key(request.client.host if request.client else None)
    wait = limiter.retry_after(client)
    if wait is not None:
        raise HTTPException(
            429, f"too many invalid links from your address: try again in {wait} s", headers={"Retry-After": str(wait)}
        )
    settings = settings_of(request)
    try:
        with conn.transaction():
            return auth.verify_link(
                conn,
                secret_key=settings.secret_key.get_secret_value(),
                subject=subject,
                subject_id=subject_id,
                key=key,
                ttl=timedelta(hours=settings.link_ttl_h),
            )
    except actionlink.LinkError:
        limiter.fail(client)
        raise


def _link_alarm(conn: Connection[Any], alarm_id: int) -> api_repo.AlarmInSite:
    """The alarm a verified link names (the link is the authority: it was sent to this person about it)."""
    row = api_repo.get_alarm_in_scope(conn, alarm_id=alarm_id, worker_id=None, merchant_id=None)
    if row is None:
        raise NotFoundError(f"alarm {alarm_id} not found")
    return row


def link_form(request: Request, key: str, form: dict[str, str]) -> None:
    """A link's page has no session: its forms carry a token derived from the link and must come from our pages."""
    secret = settings_of(request).secret_key.get_secret_value()
    if not same_origin(request) or not auth.check_csrf(secret, "link:" + key, form.get("csrf")):
        raise HTTPException(403, "CSRF check failed: open the link again and try again")


def link_worker(claim: actionlink.LinkClaim, doing: str) -> str:
    """The worker a link was sent to; a merchant's link only shows its item (403 for `doing` it)."""
    if claim.recipient_kind != "worker":
        noun = actionlink.NOUNS[claim.subject]
        raise HTTPException(
            403, f"this link opens the {noun} for you to see; {doing} is for the workers it was sent to"
        )
    return claim.recipient_id


@router.get("/alarms/{alarm_id}/link/{key}")
def alarm_link(alarm_id: int, key: LinkKey, request: Request, conn: Conn) -> HTMLResponse:
    """The alarm as its message's link opens it, without a token; a worker's link offers acknowledge (one tap) and
    resolve. Opening it changes nothing: chat apps fetch links for their previews."""
    claim = link_claim(request, conn, "alarm", alarm_id, key)
    row = _link_alarm(conn, alarm_id)
    secret = settings_of(request).secret_key.get_secret_value()
    base = f"/alarms/{alarm_id}/link/{quote(key, safe='')}"
    acting = (
        {"ack": base + "/ack", "resolve": base + "/resolve", "csrf": auth.link_csrf(secret, key)}
        if claim.recipient_kind == "worker"
        else None
    )
    return _alarm_view(
        request, conn, None, row, acting=acting, link_for=claim.recipient_id, csrf=auth.link_csrf(secret, key)
    )


@router.post("/alarms/{alarm_id}/link/{key}/ack")
def alarm_link_ack(alarm_id: int, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """One tap from the message: acknowledge, recorded as the person the link was sent to."""
    link_form(request, key, form)
    actor = link_worker(link_claim(request, conn, "alarm", alarm_id, key), "acknowledging")
    with conn.transaction():
        _link_alarm(conn, alarm_id)
        rules_service.acknowledge(conn, alarm_id=alarm_id, actor=actor)
    log.info("alarm %s acknowledged by %s through their message link", alarm_id, actor)
    return RedirectResponse(f"/alarms/{alarm_id}/link/{quote(key, safe='')}?done=ack", status_code=303)


@router.post("/alarms/{alarm_id}/link/{key}/resolve")
def alarm_link_resolve(alarm_id: int, key: LinkKey, request: Request, conn: Conn, form: Form) -> Response:
    """Resolve from the message's link, recorded as the person it was sent to."""
    link_form(request, key, form)
    actor = link_worker(link_claim(request, conn, "alarm", alarm_id, key), "resolving")
    disposition, note = _disposition(form)
    with conn.transaction():
        _link_alarm(conn, alarm_id)
        rules_service.resolve(conn, alarm_id=alarm_id, actor=actor, disposition=disposition, note=note)
    log.info("alarm %s resolved by %s through their message link", alarm_id, actor)
    return RedirectResponse(f"/alarms/{alarm_id}/link/{quote(key, safe='')}?done=resolve", status_code=303)


@router.post("/alarms/{alarm_id}/finding")
def alarm_finding(alarm_id: int, conn: Conn, who: Staff, form: Form) -> Response:
    """On site after an alarm: record an inspection finding against the site's merchant (score service)."""
    with conn.transaction():
        row = alarm_routes.scoped_alarm(conn, who, alarm_id)
        note = ((form.get("note") or "").strip()[:1900] + f" (alarm {alarm_id})").strip()
        score_service.record_finding(conn, site_id=row.site_id, kind=form.get("kind", ""), actor=who.actor, note=note)
    return RedirectResponse(f"/alarms/{alarm_id}", status_code=303)


def _alarm_field(alarm_type: str, readings: list[Any]) -> str | None:
    """The measurement that best shows an alarm of this type."""
    preferred = [
        f
        for f in ("gas_lel", "co_ppm", "smoke_db_m", "temp_c", "power_w", "current_a", "battery_pct")
        if f.split("_")[0] in alarm_type
    ]
    for f in [*preferred, *UNITS]:
        if any(f in r.values for r in readings):
            return f
    return None


def _thresholds(
    conn: Connection[Any], request: Request, device_id: str, field: str, lang: str
) -> list[tuple[float, str]]:
    """The raise levels of the device's threshold rules on this field (issue 22: marked on its chart)."""
    device = core_repo.get_devices(conn, ids=[device_id]).get(device_id)
    if device is None:
        return []
    return [
        (rule.raise_at, f"{rule.id} {names.alarm_name(rule.alarm_type, lang)}")
        for rule in rules_in_force(settings_of(request).rules_file).for_device(device)
        if isinstance(rule, ThresholdRule) and rule.field == field and rule.raise_at is not None
    ]


@router.get("/devices/{device_id}")
def device_page(
    device_id: str,
    request: Request,
    conn: Conn,
    who: Anyone,
    field: device_routes.NumericField | None = None,
    hours: Annotated[int, Query(ge=1, le=31 * 24)] = 24,
) -> HTMLResponse:
    """A device with a chart of one field over the last hours."""
    device = device_routes.scoped_device(conn, who, device_id)
    default = {
        "gas_detector": "gas_lel",
        "co_alarm": "co_ppm",
        "smoke_detector": "smoke_db_m",
        "charging_port": "power_w",
        "smart_socket": "power_w",
    }.get(device.kind, "temp_c")
    chosen = field or default
    end = datetime.now(UTC)
    series = device_routes.reading_series(
        conn, who, device_id, field=chosen, start=end - timedelta(hours=hours), end=end, points=240
    )
    alarms = api_repo.list_alarms(
        conn,
        worker_id=who.worker_scope,
        merchant_id=who.merchant_scope,
        communities=who.community_scope,
        open_only=False,
        active=None,
        acknowledged=None,
        min_severity=None,
        site_id=None,
        before_id=None,
        limit=20,
        device_id=device_id,
    )
    lang = i18n.pick_lang(request)
    chart = svg_chart(
        [(b.bucket, b.min, b.avg, b.max) for b in series.buckets],
        title=f"{device_id} {chosen}",
        unit=UNITS.get(chosen, ""),
        tz_label=settings_of(request).timezone,
        thresholds=_thresholds(conn, request, device_id, chosen, lang),
        # issue 22: when each alarm of the device was active, by name
        spans=[
            (
                a.raised_at,
                a.cleared_at or a.closed_at,
                names.alarm_name(a.type, lang),
                f"sev-{Severity(a.severity).label}",
            )
            for a in alarms
        ],
    )
    lock = device_routes.port_lock(conn, device_id) if device.kind == "charging_port" else None
    commissioning = device_routes.commissioning_status(conn, who, device_id)
    actions = (
        [a for a, kinds in device_routes.COMMAND_KINDS.items() if device.kind in kinds]
        if who.role != "merchant"
        else []
    )
    return render(
        request,
        "device.html",
        who,
        device=device,
        chart=chart,
        field=chosen,
        hours=hours,
        series=series,
        fields=list(UNITS),
        alarms=alarms,
        lock=lock,
        actions=actions,
        commissioning=commissioning,
        done=request.query_params.get("done"),
    )


@router.post("/devices/{device_id}/unlock")
def device_unlock(device_id: str, conn: Conn, who: Staff, form: Form) -> Response:
    """On site: the bike is checked, clear the port's safety lock (the note says what was checked)."""
    note = (form.get("note") or "").strip()[:2000]
    if not note:
        raise HTTPException(422, "note: say what you checked on site before clearing the lock")
    device_routes.unlock(conn, who, device_id, note=note)
    return RedirectResponse(f"/devices/{quote(device_id)}?done=unlocked", status_code=303)


@router.post("/devices/{device_id}/commission")
def device_commission(device_id: str, conn: Conn, who: Staff) -> Response:
    """Start a commissioning check from the device page (issue 19); the page shows how it goes."""
    device_routes.commission(conn, who, device_id, within_s=None, silence=True)
    return RedirectResponse(f"/devices/{quote(device_id)}?done=commission_started", status_code=303)


@router.post("/devices/{device_id}/commands")
def device_command(device_id: str, conn: Conn, who: Staff, form: Form) -> Response:
    """A manual command from the device page (the rules' safety policy applies: 409 page when refused)."""
    action = form.get("action", "")
    if action not in device_routes.COMMAND_KINDS:
        raise HTTPException(422, f"action: choose one of {', '.join(device_routes.COMMAND_KINDS)}")
    device_routes.command(conn, who, device_id, action=action, reason=(form.get("reason") or "").strip()[:2000])
    return RedirectResponse(f"/devices/{quote(device_id)}?done={quote(action)}", status_code=303)


# -- merchant score page ------------------------------------------------------------


@router.get("/score")
def score_page(
    request: Request, conn: Conn, who: Anyone, merchant: Annotated[str | None, Query(max_length=64)] = None
) -> HTMLResponse:
    """A merchant's score, tier, trend, ledger, open hazards and findings (their own; staff pass ?merchant=)."""
    merchant_id = who.merchant_id if who.role == "merchant" else merchant
    if not merchant_id:
        raise HTTPException(422, "merchant: choose a merchant (?merchant=ID)")
    view = merchant_routes.merchant_view(conn, who, merchant_id)
    trend = [(p.at, None, float(p.score), None) for p in view.trend]
    chart = svg_chart(
        trend,
        title=view.merchant_name,
        unit="",
        tz_label=settings_of(request).timezone,
        events=[(e.at, f"{e.points:+d} {e.code} {e.reason}") for e in view.ledger],  # issue 22: the ledger's entries
    )
    return render(request, "score.html", who, v=view, chart=chart)


# -- admin overview ------------------------------------------------------------


@router.get("/admin")
def admin_page(
    request: Request, conn: Conn, who: Admin, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
) -> HTMLResponse:
    """KPIs per community and grid, and the device list with live state."""
    scope = who.community_scope
    communities = core_repo.list_registry(conn, table="community", limit=50, offset=0, filters={}, communities=scope)
    grids = core_repo.list_registry(conn, table="grid", limit=200, offset=0, filters={}, communities=scope)
    kpis = [admin_routes.kpis(conn, scope="community", scope_id=c["id"], since=None, until=None) for c in communities]
    kpis += [admin_routes.kpis(conn, scope="grid", scope_id=g["id"], since=None, until=None) for g in grids]
    devices = api_repo.list_devices(
        conn,
        worker_id=None,
        merchant_id=None,
        communities=scope,
        site_id=None,
        kind=None,
        offline=None,
        limit=100,
        offset=offset,
    )
    states = commissioning.states(conn, device_ids=[d.id for d in devices])
    # issue 22: alarms per local day over the last 30 days, everything the admin may see
    days = report_period.last_days(30, datetime.now(UTC), settings_of(request).timezone)
    per_day = report_service.alarms_per_day(
        conn, scope=report_service.Scope("street", None, tuple(scope) if scope is not None else None), period=days
    )
    alarms_chart = svg_bars(
        [(d.strftime("%m-%d"), n) for d, n in per_day], title=i18n.translator(i18n.pick_lang(request))("alarms_per_day")
    )
    return render(
        request,
        "admin.html",
        who,
        kpis=kpis,
        alarms_chart=alarms_chart,
        place_names={r["id"]: r["name"] for r in [*communities, *grids]},
        devices=devices,
        uncommissioned=commissioning.uncommissioned(conn, limit=200),
        commissioned={i for i, st in states.items() if st.commissioned},
        offset=offset,
        next_offset=offset + 100 if len(devices) == 100 else None,
    )
