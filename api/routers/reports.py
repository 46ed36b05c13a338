"""Reports per micro-grid, grid, community or street for a day, a week or a month, as PDF, XLSX or CSV: the API
route and the page with its form. An admin limited to some communities reports on those only."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from psycopg import Connection
from starlette.concurrency import run_in_threadpool

from api import auth, i18n
from api.deps import ERRORS, Admin, Conn, settings_of
from core import repo as core_repo
from report import render as report_render
from report import service as report_service
from report.period import PeriodError, parse_period

log = logging.getLogger(__name__)
router = APIRouter(tags=["reports"], responses=ERRORS)
ScopeKind = Literal["micro_grid", "grid", "community", "street"]
Format = Literal["pdf", "xlsx", "csv"]
Lang = Literal["zh-CN", "en"]
ScopeId = Annotated[
    str | None,
    Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$", description="the micro-grid, grid or community"),
]
PeriodText = Annotated[
    str, Query(min_length=7, max_length=10, description="a day 2026-11-05, an ISO week 2026-W45 or a month 2026-11")
]


# Files drawn at once: drawing is CPU in the API's process (seconds for a street's PDF), so more at once only slows
# each and takes the cores from the alarm stream and acknowledgements; the rest wait on the event loop.
MAX_DRAWING = 2
_DRAW_GATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def _render_gate() -> asyncio.Semaphore:
    """The running event loop's gate in front of report drawing."""
    loop = asyncio.get_running_loop()
    gate = _DRAW_GATES.get(loop)
    if gate is None:
        gate = _DRAW_GATES[loop] = asyncio.Semaphore(MAX_DRAWING)
    return gate


def produce(
    conn: Connection[Any],
    who: auth.Principal,
    *,
    tz: str,
    scope: ScopeKind,
    scope_id: str | None,
    period: str,
    fmt: Format,
    lang: str,
) -> Response:
    """The report file, or 422 naming the parameter, or 404 for a place outside the caller's communities."""
    try:
        chosen = parse_period(period, tz)
    except PeriodError as exc:
        raise HTTPException(422, f"period: {exc}") from None
    if scope != "street" and not scope_id:
        raise HTTPException(422, f"id: a {scope.replace('_', '-')} report needs the {scope.replace('_', '-')}'s id")
    if scope == "street" and scope_id:
        raise HTTPException(422, "id: a street report covers every community you may see; give no id")
    communities = tuple(who.community_scope) if who.community_scope is not None else None
    target = report_service.Scope(scope, scope_id, communities)
    with conn.transaction():
        built = report_service.build_report(conn, scope=target, period=chosen, now=datetime.now(UTC))
    if fmt == "pdf":
        report_render.cjk_font()  # no Chinese font: the error now, not in the middle of the file
    name = report_render.filename(built, fmt)

    # The file is drawn once the route has returned and its pool connection is back (Conn's scope): a street's
    # PDF takes seconds of CPU, and ten drawn at once held every connection the API has for acknowledgements.
    async def draw() -> AsyncIterator[bytes]:
        async with _render_gate():
            data = await run_in_threadpool(report_render.render, built, fmt, lang)
        log.info("report %s made for %s", name, who.actor)
        yield data

    return StreamingResponse(
        draw(),
        media_type=report_render.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"},
    )


@router.get(
    "/api/v1/admin/reports",
    response_class=Response,
    responses={
        200: {
            "content": {t: {} for t in report_render.MEDIA_TYPES.values()},
            "description": "the report file",
        }
    },
)
def get_report(
    request: Request,
    conn: Conn,
    who: Admin,
    period: PeriodText,
    scope: ScopeKind = "community",
    id: ScopeId = None,
    format: Format = "pdf",
    lang: Lang | None = None,
) -> Response:
    """A report for a day, an ISO week or a month in the street's time zone: alarms by type and severity, time to
    acknowledge and resolve per tier and person, unreached notifications, devices offline and not commissioned,
    merchant score tiers and changes. Its summary equals the KPI API's for the same period."""
    return produce(
        conn,
        who,
        tz=settings_of(request).timezone,
        scope=scope,
        scope_id=id,
        period=period,
        fmt=format,
        lang=lang or i18n.pick_lang(request),
    )


def _targets(conn: Connection[Any], who: auth.Principal) -> list[tuple[str, str]]:
    """(value, label kind, name) choices of the form: the street, then every community, grid and micro-grid the
    caller may see, by name."""
    scope = who.community_scope
    found: list[tuple[str, str]] = [("street", "")]
    for table in ("community", "grid", "micro_grid"):
        for row in core_repo.list_registry(conn, table=table, limit=500, offset=0, filters={}, communities=scope):
            found.append((f"{table}:{row['id']}", row["name"] or row["id"]))
    return found


@router.get("/reports", include_in_schema=False)
def reports_page(
    request: Request,
    conn: Conn,
    who: Admin,
    target: Annotated[str | None, Query(max_length=80)] = None,
    period: Annotated[str | None, Query(max_length=10)] = None,
    format: Format = "pdf",
) -> Response:
    """The form; with a period chosen, the report file (errors as a page in the reader's language)."""
    from api.pages import render

    if target and period:
        kind, _, scope_id = target.partition(":")
        if kind not in ("micro_grid", "grid", "community", "street"):
            raise HTTPException(422, f"target: {target!r} is not a micro-grid, grid, community or the street")
        return produce(
            conn,
            who,
            tz=settings_of(request).timezone,
            scope=kind,  # type: ignore[arg-type]
            scope_id=scope_id or None,
            period=period,
            fmt=format,
            lang=i18n.pick_lang(request),
        )
    page: HTMLResponse = render(
        request, "reports.html", who, targets=_targets(conn, who), formats=report_render.FORMATS
    )
    return page
