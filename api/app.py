"""The FastAPI application: auth, alarm endpoints, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg import Connection
from psycopg_pool import ConnectionPool

from api import auth
from api import repo as api_repo
from api.schemas import AlarmPage, AlarmRead, Problem, ResolveIn
from core.domain import Severity
from core.errors import AuthError, ConflictError, NotFoundError
from core.settings import Settings
from rules import service as rules_service

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False)
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 404: {"model": Problem}}


def get_conn(request: Request) -> Iterator[Connection[Any]]:
    """A pooled connection for one request."""
    with request.app.state.pool.connection() as conn:
        yield conn


Conn = Annotated[Connection[Any], Depends(get_conn)]


def principal(request: Request, conn: Conn,
              creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> auth.Principal:
    """The caller, from the bearer token."""
    if creds is None:
        raise AuthError("send Authorization: Bearer <token> (create one with `gridwatch token create`)")
    settings: Settings = request.app.state.settings
    with conn.transaction():
        return auth.authenticate(conn, secret_key=settings.secret_key.get_secret_value(), token=creds.credentials)


Who = Annotated[auth.Principal, Depends(principal)]


def create_app(settings: Settings, pool: ConnectionPool | None = None) -> FastAPI:
    """Build the app; the pool is opened here unless one is given."""
    owned = pool is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            app.state.pool = ConnectionPool(settings.dsn, min_size=1, max_size=10, open=True, name="api")
        yield
        if owned:
            app.state.pool.close()

    app = FastAPI(title="gridwatch", version="0.1.0", lifespan=lifespan,
                  description="Safety monitoring for dense urban housing: alarms, acknowledgements, scores.")
    app.state.settings = settings
    if pool is not None:
        app.state.pool = pool

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        return JSONResponse({"detail": f"not authenticated: {exc}"}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConflictError)
    async def _conflict(_: Request, exc: ConflictError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.get("/healthz", tags=["ops"])
    def healthz(conn: Conn) -> dict[str, str]:
        """Liveness and database reachability."""
        conn.execute("SELECT 1")
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus text format."""
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/alarms", tags=["alarms"], responses=ERRORS)
    def list_alarms(
        conn: Conn, who: Who,
        status: Literal["open", "all"] = "open",
        active: bool | None = None,
        acknowledged: bool | None = None,
        severity: Annotated[str | None, Query(description="minimum: critical|major|minor|info or P1..P4")] = None,
        site: str | None = None,
        before: Annotated[int | None, Query(ge=1, description="keyset cursor from next_before")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> AlarmPage:
        """Alarms the caller may see: a worker's micro-grids, a merchant's sites, everything for an admin."""
        try:
            min_sev = Severity.parse(severity) if severity else None
        except (KeyError, ValueError):
            raise HTTPException(422, f"severity {severity!r} is not critical, major, minor, info or P1..P4") from None
        rows = api_repo.list_alarms(conn, worker_id=_worker_scope(who), merchant_id=_merchant_scope(who),
                                    open_only=status == "open", active=active, acknowledged=acknowledged,
                                    min_severity=int(min_sev) if min_sev else None, site_id=site,
                                    before_id=before, limit=limit)
        return AlarmPage(items=[AlarmRead.of(r) for r in rows],
                         next_before=rows[-1].id if len(rows) == limit else None)

    @app.get("/api/v1/alarms/{alarm_id}", tags=["alarms"], responses=ERRORS)
    def get_alarm(alarm_id: int, conn: Conn, who: Who) -> AlarmRead:
        """One alarm in the caller's scope."""
        return AlarmRead.of(_scoped(conn, who, alarm_id))

    @app.post("/api/v1/alarms/{alarm_id}/ack", tags=["alarms"], responses={**ERRORS, 409: {"model": Problem}})
    def ack_alarm(alarm_id: int, conn: Conn, who: Who) -> AlarmRead:
        """Acknowledge: I have it. Records who and when, stops escalation."""
        _require_actor(who)
        with conn.transaction():
            _scoped(conn, who, alarm_id)
            rules_service.acknowledge(conn, alarm_id=alarm_id, actor=who.actor)
        return AlarmRead.of(_scoped(conn, who, alarm_id))

    @app.post("/api/v1/alarms/{alarm_id}/resolve", tags=["alarms"], responses={**ERRORS, 409: {"model": Problem}})
    def resolve_alarm(alarm_id: int, body: ResolveIn, conn: Conn, who: Who) -> AlarmRead:
        """Close the alarm with what it turned out to be."""
        _require_actor(who)
        with conn.transaction():
            _scoped(conn, who, alarm_id)
            rules_service.resolve(conn, alarm_id=alarm_id, actor=who.actor, disposition=body.disposition,
                                  note=body.note)
        return AlarmRead.of(_scoped(conn, who, alarm_id))

    return app


def _worker_scope(who: auth.Principal) -> str | None:
    return who.worker_id if who.role == "worker" else None


def _merchant_scope(who: auth.Principal) -> str | None:
    return who.merchant_id if who.role == "merchant" else None


def _scoped(conn: Connection[Any], who: auth.Principal, alarm_id: int) -> api_repo.AlarmListRow:
    """The alarm if in scope; 404 otherwise, so existence outside one's scope is not revealed."""
    row = api_repo.get_alarm_in_scope(conn, alarm_id=alarm_id, worker_id=_worker_scope(who),
                                      merchant_id=_merchant_scope(who))
    if row is None:
        raise NotFoundError(f"alarm {alarm_id} not found")
    return row


def _require_actor(who: auth.Principal) -> None:
    if who.role == "merchant":
        raise HTTPException(403, "merchants cannot acknowledge or resolve alarms; your micro-grid worker does")
