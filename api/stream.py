"""The live alarm stream: one LISTEN connection per process, one feed per scope, fanned out to every SSE stream.

rules (and the API's own acknowledgements) NOTIFY `gridwatch_outbox` in the transaction that changes an alarm,
so the notification arrives after commit. The notification carries no payload on purpose: scope is applied by
the query, never by filtering a broadcast.

Every stream belongs to the feed of its scope (admin; a worker's micro-grids; a merchant's sites). A feed wakes on
a notification, and at least every `recheck_s` seconds without one, and then in one pass, however many streams
share it: re-checks every stream's credentials (token revoked or expired, web session ended, the worker
deactivated; scope itself is the query's, so a worker's changed coverage applies at once), ends the streams whose
credentials no longer hold, and re-reads the alarms of its scope that changed since its watermark. Each stream
sends each new version of an alarm once. So the work of a change is one query per scope, not one per stream, and
the 10-connection pool serves any number of streams (issue 23: 60 streams of one token each ran their own query
on every change and starved the API). Streams are capped per token and per client address (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from fastapi import HTTPException
from psycopg_pool import PoolTimeout
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from api import auth
from api import repo as api_repo
from api.deps import connection_gate
from api.ratelimit import client_key
from core.db import OUTBOX_CHANNEL

log = logging.getLogger(__name__)

# A change whose transaction started before the watermark but committed after it still shows: re-read this
# far back and de-duplicate by (id, updated_at).
OVERLAP = timedelta(seconds=30)
# Without a notification (listener reconnecting) feeds still re-read and re-check this often, and streams send a
# comment line so proxies keep the connection open.
RECHECK_S = 5.0
# A burst of notifications (an alarm storm) is read in passes at most this often per feed.
MIN_PASS_S = 0.2
# Batches a stream may have waiting for its client; a client that reads slower than that is cut off (it reconnects
# and its page re-reads the board) rather than holding memory.
MAX_PENDING = 64
_END = object()


@dataclass(eq=False)
class _Stream:
    """One SSE stream: who it is for, what is waiting for it, and the versions it has sent."""

    who: auth.Principal
    pending: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(maxsize=MAX_PENDING))
    sent: dict[int, datetime | None] = field(default_factory=dict)
    ended: str | None = None

    def push(self, rows: list[api_repo.AlarmInSite]) -> None:
        try:
            self.pending.put_nowait(rows)
        except asyncio.QueueFull:
            self.end("the client reads too slowly")

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            if self.pending.full():  # make room for the end marker: what is pending is not sent anyway
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.pending.get_nowait()
            self.pending.put_nowait(_END)


@dataclass(frozen=True, slots=True)
class _Scope:
    worker: str | None
    merchant: str | None
    communities: tuple[str, ...] | None = None  # an admin limited to some communities (issue 20)


class _Feed:
    """The streams of one scope: one pass (credentials, then changes) serves them all."""

    def __init__(self, hub: AlarmHub, scope: _Scope) -> None:
        self.hub = hub
        self.scope = scope
        self.streams: set[_Stream] = set()
        self.wake = asyncio.Event()
        self.watermark: datetime | None = None
        self.task: asyncio.Task[None] | None = None

    def _read(self, streams: list[_Stream]) -> tuple[datetime, set[int], set[int], list[api_repo.AlarmInSite]]:
        tokens = sorted({s.who.token_id for s in streams})
        sessions = sorted({s.who.session_id for s in streams if s.who.session_id is not None})
        with self.hub.app.state.pool.connection() as conn:
            now = api_repo.db_now(conn)
            valid_tokens, valid_sessions = api_repo.list_valid_credentials(conn, token_ids=tokens, session_ids=sessions)
            since = (self.watermark or now) - OVERLAP
            rows = api_repo.list_alarms_changed(
                conn,
                since=since,
                worker_id=self.scope.worker,
                merchant_id=self.scope.merchant,
                communities=list(self.scope.communities) if self.scope.communities is not None else None,
            )
        return now, valid_tokens, valid_sessions, rows

    async def run(self) -> None:
        try:
            while self.streams and not self.hub.closed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=self.hub.recheck_s)
                self.wake.clear()
                if not self.streams or self.hub.closed:
                    break
                await self._pass()
                await asyncio.sleep(MIN_PASS_S)
        finally:
            if self.hub.feeds.get(self.scope) is self:
                del self.hub.feeds[self.scope]
            for stream in self.streams:
                stream.end("the stream is closing")

    async def _pass(self) -> None:
        streams = list(self.streams)
        try:
            async with connection_gate(self.hub.app):
                now, tokens, sessions, rows = await run_in_threadpool(self._read, streams)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            # the database is away: keep the streams (and the watermark) and try again on the next wake-up
            log.warning("alarm stream cannot read changes (%s); retrying", exc)
            for stream in streams:
                stream.push([])
            return
        for stream in streams:
            who = stream.who
            if who.token_id not in tokens or (who.session_id is not None and who.session_id not in sessions):
                stream.end("the credentials were revoked, expired or deactivated")
                self.streams.discard(stream)
            else:
                stream.push(rows)
        self.watermark = now


def _decrement(counts: dict[Any, int], key: object) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class AlarmHub:
    """Wakes the feeds when alarms change, and holds the caps on streams."""

    def __init__(
        self,
        dsn: str,
        *,
        recheck_s: float = RECHECK_S,
        max_per_token: int = 4,
        max_per_address: int = 32,
    ) -> None:
        self.dsn = dsn
        self.recheck_s = recheck_s
        self.max_per_token = max_per_token
        self.max_per_address = max_per_address
        self.app: Any = None  # the app whose pool (and gate in front of it) the feeds read through; set on use
        self.feeds: dict[_Scope, _Feed] = {}
        self.per_token: dict[int, int] = {}
        self.per_address: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def admit(self, who: auth.Principal, address: str) -> Callable[[], None]:
        """Count a new stream against its token's and its address's caps (429 beyond); returns its release."""
        if self.per_token.get(who.token_id, 0) >= self.max_per_token:
            raise HTTPException(
                429,
                f"this token already has {self.max_per_token} live streams open: close one first",
                headers={"Retry-After": str(int(self.recheck_s))},
            )
        if self.per_address.get(address, 0) >= self.max_per_address:
            raise HTTPException(
                429,
                f"your address already has {self.max_per_address} live streams open: close one first",
                headers={"Retry-After": str(int(self.recheck_s))},
            )
        self.per_token[who.token_id] = self.per_token.get(who.token_id, 0) + 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                _decrement(self.per_token, who.token_id)
                _decrement(self.per_address, address)

        return release

    def subscribe(self, who: auth.Principal, app: Any) -> _Stream:
        """A stream in its scope's feed (starts the listener and the feed on first use)."""
        self.app = app
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="alarm-hub")
        communities = who.community_scope
        scope = _Scope(who.worker_scope, who.merchant_scope, tuple(communities) if communities is not None else None)
        feed = self.feeds.get(scope)
        if feed is None or feed.task is None or feed.task.done():
            feed = self.feeds[scope] = _Feed(self, scope)
            feed.task = asyncio.get_running_loop().create_task(feed.run(), name="alarm-feed")
        stream = _Stream(who)
        feed.streams.add(stream)
        feed.wake.set()  # the newcomer gets the last OVERLAP of changes at once
        return stream

    def unsubscribe(self, stream: _Stream) -> None:
        for feed in self.feeds.values():
            feed.streams.discard(stream)

    def _wake(self) -> None:
        for feed in self.feeds.values():
            feed.wake.set()

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
        tasks = [t for t in (self._task, *(f.task for f in self.feeds.values())) if t is not None]
        for feed in list(self.feeds.values()):
            for stream in feed.streams:
                stream.end("the server is stopping")
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def alarm_changes(
    hub: AlarmHub,
    app: Any,
    who: auth.Principal,
    is_disconnected: Callable[[], Any],
    *,
    max_s: float | None = None,
) -> AsyncIterator[api_repo.AlarmInSite | None]:
    """Yield alarms in the caller's scope as they change (None = nothing new, time for a keep-alive); ends when
    the caller's credentials no longer hold."""
    stream = hub.subscribe(who, app)
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        while not hub.closed and stream.ended is None:
            left = None if max_s is None else max_s - (loop.time() - started)
            if left is not None and left <= 0:
                return
            wait = hub.recheck_s + 1 if left is None else min(hub.recheck_s + 1, left)
            try:
                got = await asyncio.wait_for(stream.pending.get(), timeout=wait)
            except TimeoutError:
                got = []
            if got is _END or await is_disconnected():
                return
            fresh = [r for r in got if stream.sent.get(r.id) != r.updated_at]
            for row in fresh:
                stream.sent[row.id] = row.updated_at
                yield row
            if not fresh:
                yield None
            if fresh:
                horizon = max(r.updated_at for r in got if r.updated_at is not None) - 2 * OVERLAP
                for alarm_id in [i for i, at in stream.sent.items() if at is not None and at < horizon]:
                    del stream.sent[alarm_id]
    finally:
        hub.unsubscribe(stream)
        if stream.ended is not None and stream.ended != "the server is stopping":
            log.info("alarm stream of %s ended: %s", who.actor, stream.ended)


def sse(event: str, data: str, event_id: str | None = None) -> str:
    """One Server-Sent Event (data is one JSON line, so no field splitting is needed)."""
    return (f"id: {event_id}\n" if event_id else "") + f"event: {event}\ndata: {data}\n\n"


def alarm_stream(
    request: Any, who: auth.Principal, max_s: float | None, render: Callable[[api_repo.AlarmInSite], str]
) -> StreamingResponse:
    """An SSE response of the caller's alarm changes, each rendered as one `alarm` event (API JSON or a board
    row), with keep-alives while nothing changes; 429 when the caller's token or address has too many open."""
    hub: AlarmHub = request.app.state.hub
    release = hub.admit(who, client_key(request.client.host if request.client else None))

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            async for row in alarm_changes(hub, request.app, who, request.is_disconnected, max_s=max_s):
                yield ": keep-alive\n\n" if row is None else sse("alarm", render(row), str(row.id))
        finally:
            release()

    body = events()
    weakref.finalize(body, release)  # a response that never started its body still gives its slot back
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
