"""The live alarm stream: one LISTEN connection per process, fanned out to every SSE subscriber.

rules (and the API's own acknowledgements) NOTIFY `gridwatch_outbox` in the transaction that changes an alarm,
so the notification arrives after commit. A subscriber wakes on it, re-reads the alarms in its own scope that
changed since its watermark, and sends each new version once. The notification carries no payload on purpose:
scope is applied by the query, never by filtering a broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from api import auth
from api import repo as api_repo
from core.db import OUTBOX_CHANNEL

log = logging.getLogger(__name__)

# A change whose transaction started before the watermark but committed after it still shows: re-read this
# far back and de-duplicate by (id, updated_at).
OVERLAP = timedelta(seconds=30)
# Without a notification (listener reconnecting) subscribers still poll this often, and send a comment line
# so proxies keep the connection open.
POLL_S = 5.0


class AlarmHub:
    """Wakes subscribers when alarms change."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._subscribers: set[asyncio.Queue[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def subscribe(self) -> asyncio.Queue[None]:
        """A wake-up queue for one subscriber (starts the listener on first use)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="alarm-hub")
        q: asyncio.Queue[None] = asyncio.Queue(maxsize=1)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[None]) -> None:
        self._subscribers.discard(q)

    def _wake(self) -> None:
        for q in self._subscribers:
            # A pending wake-up already covers this one: subscribers re-read everything since their watermark.
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)

    async def _listen(self) -> None:
        while not self.closed:
            try:
                async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
                    await api_repo.listen_outbox(conn)
                    log.info("alarm stream listening on %s", OUTBOX_CHANNEL)
                    self._wake()  # anything missed while (re)connecting
                    async for _ in conn.notifies():
                        self._wake()
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                log.warning("alarm stream listener lost the database (%s); retrying in 1 s", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        """Stop listening and end every stream."""
        self.closed = True
        self._wake()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def alarm_changes(
    hub: AlarmHub,
    pool: ConnectionPool,
    who: auth.Principal,
    is_disconnected: Callable[[], Any],
    *,
    max_s: float | None = None,
) -> AsyncIterator[api_repo.AlarmInSite | None]:
    """Yield alarms in the caller's scope as they change (None = nothing new, time for a keep-alive)."""

    def read(since: datetime | None) -> tuple[datetime, list[api_repo.AlarmInSite]]:
        with pool.connection() as conn:
            now = api_repo.db_now(conn)
            if since is None:
                return now, []
            return now, api_repo.list_alarms_changed(
                conn,
                since=since,
                worker_id=who.worker_scope,
                merchant_id=who.merchant_scope,
                communities=who.community_scope,
            )

    queue = hub.subscribe()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        watermark, _ = await run_in_threadpool(read, None)  # an unreachable database fails the request here
        sent: dict[int, datetime | None] = {}
        while not hub.closed:
            if max_s is not None and loop.time() - started > max_s:
                return
            wait = POLL_S if max_s is None else max(0.0, min(POLL_S, max_s - (loop.time() - started)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.get(), timeout=wait)
            if hub.closed or await is_disconnected():
                return
            try:
                now, rows = await run_in_threadpool(read, watermark - OVERLAP)
            except psycopg.OperationalError as exc:
                # the database is away: keep the stream (and the watermark) and try again on the next wake-up
                log.warning("alarm stream cannot read changes (%s); retrying", exc)
                yield None
                continue
            fresh = [r for r in rows if sent.get(r.id) != r.updated_at]
            for row in fresh:
                sent[row.id] = row.updated_at
                yield row
            if not fresh:
                yield None
            watermark = now
            horizon = watermark - OVERLAP  # older versions cannot come back: the next read starts there
            for alarm_id in [i for i, at in sent.items() if at is not None and at < horizon]:
                del sent[alarm_id]
    finally:
        hub.unsubscribe(queue)


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One Server-Sent Event (data is one JSON line, so no field splitting is needed)."""
    return (f"id: {event_id}\n" if event_id else "") + f"event: {event}\ndata: {data}\n\n"


def alarm_stream(
    request: Any, who: auth.Principal, max_s: float | None, render: Callable[[api_repo.AlarmInSite], str]
) -> StreamingResponse:
    """An SSE response of the caller's alarm changes, each rendered as one `alarm` event (API JSON or a board
    row), with keep-alives while nothing changes."""

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for row in alarm_changes(
            request.app.state.hub, request.app.state.pool, who, request.is_disconnected, max_s=max_s
        ):
            yield ": keep-alive\n\n" if row is None else sse("alarm", render(row), str(row.id))

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
