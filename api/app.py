"""The FastAPI application: routers, error mapping, security headers, health and metrics."""

from __future__ import annotations

import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import field_pages, pages
from api import repo as api_repo
from api.deps import Admin, Conn
from api.ratelimit import FailureLimiter
from api.routers import admin, alarms, board, devices, field, merchants, reports
from api.routers import map as map_routes
from api.stream import AlarmHub
from core.actionlink import LinkError
from core.errors import AuthError, ConfigError, ConflictError, NotFoundError, RegistryError
from core.loop import Check
from core.ops import Checks, health_body
from core.settings import Settings
from field import report_service
from field import service as field_service
from notify.policy import load_policy
from score import service as score_service

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

# Pages are server-rendered with our own script and style files only: nothing inline, nothing third-party.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "geolocation=(), camera=(), microphone=()",
}
# Swagger UI and ReDoc load their own inline script; they get the headers above but not the page CSP.
NO_CSP = ("/docs", "/redoc")


def _is_page(request: Request) -> bool:
    return not request.url.path.startswith(("/api/", "/healthz", "/metrics", "/openapi.json"))


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc)


# Domain errors and the status a person gets for each (STYLE: no catch-all): pages show an error page instead.
ERROR_STATUS: dict[type[Exception], int] = {
    NotFoundError: 404,
    ConflictError: 409,
    RegistryError: 422,
    score_service.InvalidScoreInput: 422,
    field_service.FieldInputError: 422,
    report_service.ReportInputError: 422,
    ConfigError: 422,
    LinkError: 403,
}
PAGE_STATUSES = (403, 404, 409, 422)


def create_app(settings: Settings, pool: ConnectionPool | None = None, *, checks: Checks | None = None) -> FastAPI:
    """Build the app; the pool is opened here unless one is given. `checks` are the health of the other parts
    running in this process, reported by /healthz beside the API's own."""
    owned = pool is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            app.state.pool = ConnectionPool(settings.dsn, min_size=1, max_size=10, open=True, name="api")
        yield
        await app.state.hub.close()
        if owned:
            app.state.pool.close()

    # Outside the demo the API's own description (/docs, /redoc, /openapi.json) is for admins only: it maps every
    # route an attacker could try (issue 23). The demo keeps FastAPI's public pages.
    public_docs = settings.demo
    app = FastAPI(
        title="gridwatch",
        version="0.1.0",
        lifespan=lifespan,
        description="Safety monitoring for dense urban housing: alarms, acknowledgements, scores. "
        "Authenticate with `Authorization: Bearer <token>`; see docs/api.md.",
        docs_url="/docs" if public_docs else None,
        redoc_url="/redoc" if public_docs else None,
        openapi_url="/openapi.json" if public_docs else None,
    )
    app.state.settings = settings
    # The ladder notify runs with: the board shows how far each alarm has climbed (api/routers/board.py).
    app.state.policy = load_policy(settings.notify_policy)
    app.state.conn_gates = weakref.WeakKeyDictionary()  # api.deps.connection_gate
    app.state.hub = AlarmHub(
        settings.dsn,
        recheck_s=settings.stream_recheck_s,
        max_per_token=settings.stream_max_per_token,
        max_per_address=settings.stream_max_per_address,
    )
    app.state.auth_limiter = FailureLimiter()  # failed logins / bearer tokens per client address (issue 9)
    if pool is not None:
        app.state.pool = pool
    app.add_middleware(BodyLimit)
    app.middleware("http")(security_headers)  # outside BodyLimit: its refusals carry the headers too
    install_error_handlers(app)
    add_ops_routes(app, checks, public=settings.demo)
    if not public_docs:
        add_doc_routes(app)
    app.include_router(alarms.router)
    app.include_router(board.router)
    app.include_router(devices.router)
    app.include_router(merchants.router)
    app.include_router(field.router)
    admin.include(app)
    app.include_router(reports.router)
    app.include_router(map_routes.router)
    app.include_router(field_pages.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# No request body beyond this is read, whatever the route (the largest a route takes is a 5 MiB registry file or a
# 5 MiB photo in its multipart envelope): JSON is parsed before a route's dependencies, authentication included, so
# without a bound a stranger could make the API hold any amount in memory. Routes keep their own tighter bounds.
MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyLimit:
    """Refuses a body over MAX_BODY_BYTES: by its Content-Length before reading (413), or, sent without one
    (chunked), once it has grown past the bound while being read (413)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            too_big = JSONResponse({"detail": _too_big(length.decode(errors="replace"))}, status_code=413)
            await too_big(scope, receive, send)
            return
        seen = 0

        async def bounded() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise StarletteHTTPException(413, _too_big(f"over {seen}"))
            return message

        await self.app(scope, bounded if length is None else receive, send)


def _too_big(length: str) -> str:
    return f"the request body is {length} bytes; this API takes at most {MAX_BODY_BYTES} (8 MiB)"


async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """CSP, no sniffing or framing, and no caching of pages (they hold a person's alarms)."""
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.url.path.startswith(NO_CSP):
        response.headers.setdefault("Content-Security-Policy", CSP)
    if _is_page(request) and not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _problem(request: Request, status: int, detail: str, **extra: Any) -> Response:
    if _is_page(request) and status in PAGE_STATUSES:
        return pages.error_page(request, status, detail)
    return JSONResponse({"detail": detail, **extra}, status_code=status)


async def _domain_error(request: Request, exc: Exception) -> Response:
    status = next(code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind))
    return _problem(request, status, str(exc))


async def _auth_error(request: Request, exc: Exception) -> Response:
    if _is_page(request) and request.method == "GET":
        return RedirectResponse(pages.login_url(request), status_code=303)
    return JSONResponse(
        {"detail": f"not authenticated: {exc}"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = [{"field": _field(e.get("loc", ())), "message": str(e.get("msg", "invalid"))} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid request"
    return _problem(request, 422, detail, errors=errors)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    if _is_page(request) and exc.status_code in PAGE_STATUSES:
        return pages.error_page(request, exc.status_code, str(exc.detail))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every error a request can meet, mapped to a status and a sentence a person can act on."""
    for kind in ERROR_STATUS:
        app.add_exception_handler(kind, _domain_error)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def add_ops_routes(app: FastAPI, checks: Checks | None, *, public: bool = False) -> None:
    """/healthz (public: it says ok or failing and which part) and /metrics (admins only on this, the public port,
    unless `public` (the demo); Prometheus scrapes a process's GRIDWATCH_METRICS_PORT on the internal network, or
    sends an admin token)."""

    @app.get("/healthz", tags=["ops"])
    def healthz(conn: Conn) -> Response:
        """Liveness, database reachability and the health of every part in this process (503 if one fails)."""
        api_repo.ping(conn)
        status, body = health_body([Check("api", True), *(checks() if checks else [])])
        return Response(body, status_code=status, media_type="application/json")

    def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    if public:
        app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)(metrics)
        return

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def admin_metrics(_who: Admin) -> PlainTextResponse:
        """Prometheus text format (admins; or GRIDWATCH_METRICS_PORT on the internal network)."""
        return metrics()


def add_doc_routes(app: FastAPI) -> None:
    """The OpenAPI description and its viewers, for admins (a session cookie or a bearer token)."""

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_who: Admin) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def swagger(_who: Admin) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="gridwatch API")

    @app.get("/redoc", include_in_schema=False)
    def redoc(_who: Admin) -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="gridwatch API")
