"""Request dependencies: a pooled connection and the caller, from a bearer token or a web session cookie."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import Connection
from starlette.concurrency import run_in_threadpool

from api import auth
from api.ratelimit import FailureLimiter, client_key
from api.schemas import Problem
from core.errors import AuthError
from core.settings import Settings

SESSION_COOKIE = "gw_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
bearer = HTTPBearer(auto_error=False, description="`gridwatch token create` or POST /api/v1/admin/tokens")
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem},
    403: {"model": Problem},
    404: {"model": Problem},
    422: {"model": Problem},
    429: {"model": Problem},
}


def connection_gate(app: Any) -> asyncio.Semaphore:
    """The event loop's gate in front of the app's pool: as many places as the pool has connections.

    Requests wait for a connection here, on the event loop, not in a worker thread. Waiting in threads deadlocks
    under load (issue 23, 60 streams at once): once every thread of the pool Starlette runs sync code in waits for a
    connection, the requests holding the connections have no thread left to finish on and give them back, and all
    of them wait for the pool's timeout. One gate per event loop (a test client runs each request on its own)."""
    gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = app.state.conn_gates
    loop = asyncio.get_running_loop()
    gate = gates.get(loop)
    if gate is None:
        gate = gates[loop] = asyncio.Semaphore(app.state.pool.max_size)
    return gate


async def get_conn(request: Request) -> AsyncIterator[Connection[Any]]:
    """A pooled connection for one request (committed when the route returns, rolled back if it raises)."""
    async with connection_gate(request.app):
        context = request.app.state.pool.connection()
        conn = await run_in_threadpool(context.__enter__)
        try:
            yield conn
        except BaseException as exc:
            await run_in_threadpool(context.__exit__, type(exc), exc, exc.__traceback__)
            raise
        await run_in_threadpool(context.__exit__, None, None, None)


# Given back to the pool when the route function returns, not when the response has been sent: a live stream's
# response lasts hours, and with the default (request) scope every open stream held one of the pool's connections
# (issue 23). Routes return finished responses (pages render on return).
Conn = Annotated[Connection[Any], Depends(get_conn, scope="function")]


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


# Our pages' urlencoded forms are small (their longest fields take 2,000 characters, percent-encoded up to 9 bytes
# each); a larger body is refused before it is read, also where no login stands in front of the form (a link's).
FORM_MAX_BYTES = 64 * 1024


def check_form_size(request: Request) -> None:
    """Refuse an urlencoded form by its Content-Length before reading it (411 without one, 413 above the bound)."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
        raise HTTPException(411, "send the form with a Content-Length")
    if int(length) > FORM_MAX_BYTES:
        raise HTTPException(413, f"the form is {length} bytes; a page's form has at most {FORM_MAX_BYTES}")


async def form_field(request: Request, name: str) -> str | None:
    """One field of an urlencoded form body (pages post plain forms; no multipart parser needed)."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    check_form_size(request)
    values = parse_qs((await request.body()).decode("utf-8", "replace")).get(name)
    return values[0] if values else None


def _same_origin(request: Request) -> bool:
    """A browser's unsafe request must come from our own pages (Origin, when sent, names our host)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def same_origin(request: Request) -> bool:
    """Whether an unsafe request comes from our own pages (for forms that carry no session, as a link's)."""
    return _same_origin(request)


def principal(
    request: Request, conn: Conn, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> auth.Principal:
    """The caller: a bearer token, or a web session cookie (see csrf_checked for unsafe methods)."""
    key = settings_of(request).secret_key.get_secret_value()
    if creds is not None:
        limiter: FailureLimiter = request.app.state.auth_limiter
        client = client_key(request.client.host if request.client else None)
        wait = limiter.retry_after(client)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many failed tokens from your address: try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        try:
            with conn.transaction():
                return auth.authenticate(conn, secret_key=key, token=creds.credentials)
        except AuthError:
            limiter.fail(client)
            raise
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        raise AuthError(
            "send Authorization: Bearer <token> (create one with `gridwatch token create`) or log in at /login"
        )
    with conn.transaction():
        who = auth.authenticate_session(conn, secret_key=key, session=session)
    request.state.session = session
    return who


def scoped_principal(conn: Conn, who: Annotated[auth.Principal, Depends(principal)]) -> auth.Principal:
    """The caller with what bounds their scope beyond the token: a worker's registry role (a grid leader sees
    their grids, community duty and the fire station their community), an admin token's communities. A merchant's
    scope is its token's: no round trip (a merchant's many live streams each opened two transactions)."""
    if who.role == "merchant":
        return who
    with conn.transaction():
        return auth.with_scope(conn, who)


async def csrf_checked(request: Request, who: Annotated[auth.Principal, Depends(scoped_principal)]) -> auth.Principal:
    """A cookie-authenticated unsafe request must carry the session's CSRF token and come from our origin;
    bearer tokens are not sent by browsers on their own, so they need neither."""
    session: str | None = getattr(request.state, "session", None)
    if session is not None and request.method not in SAFE_METHODS:
        key = settings_of(request).secret_key.get_secret_value()
        presented = request.headers.get(CSRF_HEADER) or await form_field(request, CSRF_FIELD)
        if not _same_origin(request) or not auth.check_csrf(key, session, presented):
            raise HTTPException(403, "CSRF check failed: reload the page and try again")
    return who


Who = Annotated[auth.Principal, Depends(csrf_checked)]


def allow(*roles: auth.Role) -> Callable[[auth.Principal], auth.Principal]:
    """A dependency that admits only these roles (403 for the others, 401 without credentials)."""

    def check(who: Who) -> auth.Principal:
        if who.role not in roles:
            raise HTTPException(403, f"this needs the {' or '.join(roles)} role; your token is {who.role}")
        return who

    check.__name__ = "allow_" + "_".join(roles)
    return check


Admin = Annotated[auth.Principal, Depends(allow("admin"))]
Staff = Annotated[auth.Principal, Depends(allow("admin", "worker"))]
Anyone = Annotated[auth.Principal, Depends(allow("admin", "worker", "merchant"))]
