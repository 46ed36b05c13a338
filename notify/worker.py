"""The notify process: a router thread that wakes on NOTIFY from the outbox (routes, climbs ladders) and a few
deliverer threads that send due notifications, so a slow or hanging channel never holds up routing or the
delivery of the next alarm.

Threads sleep only until the earliest pending deadline (a retry, a held group, a ladder step) or the poll
interval, whichever is sooner; the router wakes the deliverers as soon as it has created notifications.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from core import actionlink
from core.db import OUTBOX_CHANNEL
from core.domain import Severity
from core.loop import Check, Loop
from core.settings import Settings
from notify import messages, repo, service
from notify.delivery import Sender
from notify.policy import Policy, load_policy

log = logging.getLogger(__name__)

DELIVERERS = 3
BATCH = 8  # notifications one deliverer claims at a time
# In an alarm storm the router works through thousands of minor transitions (battery flaps, devices going offline)
# that cannot all be routed or sent as fast as they come. After each batch of them the router and the deliverers
# pause for this many times as long as the batch took, so the ingest (and the next gas leak in it) keeps the CPU it
# needs; a severe transition (MAJOR or worse: every life-safety type) wakes the router at once, and the first
# deliverer, which sends only immediate messages, never pauses (issue 18).
MINOR_PAUSE = 3.0
STEP_S = 5.0  # the router's longest step: it starts another at once while work is left


def system_clock() -> datetime:
    return datetime.now(UTC)


class _Wake:
    """A generation counter with a condition: a waiter never misses a wake-up that came after it looked."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.generation = 0

    def signal(self) -> None:
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> None:
        with self._cond:
            if self.generation == seen:
                self._cond.wait(timeout)


class NotifyWorker:
    """Runs until stop(); several of them may run against one database."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: Policy | None = None,
        clock: service.Clock = system_clock,
        sender: Sender | None = None,
        deliverers: int = DELIVERERS,
    ) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.notify_policy)
        self.clock = clock
        # One sending thread per notification a deliverer may hold, so hanging channels cannot starve the rest.
        self.sender = sender or Sender(
            timeout_s=settings.notify_timeout_s,
            deadline_s=settings.notify_deadline_s,
            redirect_url=settings.notify_redirect_url,
            parallel=deliverers * BATCH,
        )
        self.deliverers = deliverers
        # Each message's own link to its alarm (core/actionlink.py); without a public URL there is nothing to link.
        self.links = (
            actionlink.Signer(settings.secret_key.get_secret_value(), settings.public_url)
            if settings.public_url
            else None
        )
        self._stop = threading.Event()
        self._wake = _Wake()
        self._ready = [threading.Event() for _ in range(deliverers + 1)]
        self.loops: list[Loop[Any]] = []

    def is_ready(self) -> bool:
        """Whether the router listens and every thread has done a first pass (tests wait for it)."""
        return all(e.is_set() for e in self._ready)

    def warm_up(self) -> None:
        """Compile the templates and load apprise's plugins now, not on the first alarm."""
        for locale in ("zh-CN", "en"):
            messages.render_test(name="-", worker_id="-", role="-", channels=0, locale=locale, at=self.clock())
        Sender.warm_up()

    def route_once(self, conn: psycopg.Connection[Any]) -> int:
        """Route the outbox and climb due ladders until nothing is left; returns the work done."""
        return self._route(conn)[0]

    def _route(
        self,
        conn: psycopg.Connection[Any],
        *,
        pause: Callable[[float], None] | None = None,
        budget_s: float | None = None,
    ) -> tuple[int, bool]:
        """Route and climb ladders until nothing is left or `budget_s` has passed; returns the work done and whether
        work is left. With `pause`, it is called after each batch of minor rows with the seconds it took."""
        work = 0
        ends = time.monotonic() + budget_s if budget_s is not None else None
        while not self._stop.is_set():
            started = time.monotonic()
            routed = service.route_outbox(
                conn, policy=self.policy, now=self.clock(), public_url=self.settings.public_url
            )
            done = routed.rows + service.run_escalations(conn, policy=self.policy, now=self.clock())
            if done:
                self._wake.signal()
            work += done
            if done == 0:
                return work, False
            if pause is not None and routed.rows and routed.severity < Severity.MAJOR:
                pause(time.monotonic() - started)
            if ends is not None and time.monotonic() > ends:
                return work, True
        return work, False

    def deliver_once(
        self,
        conn: psycopg.Connection[Any],
        *,
        immediate_only: bool = False,
        pause: Callable[[float], None] | None = None,
    ) -> int:
        """Deliver due notifications in small batches until none is due; returns how many. With `pause`, it is
        called after each batch that held no immediate message with the seconds the batch took."""
        work = 0
        while not self._stop.is_set():
            started = time.monotonic()
            done = service.deliver_due(
                conn,
                sender=self.sender,
                policy=self.policy,
                clock=self.clock,
                max_attempts=self.settings.notify_max_attempts,
                public_url=self.settings.public_url,
                limit=BATCH,
                links=self.links,
                immediate_only=immediate_only,
            )
            work += done.handled
            if done.handled == 0:
                break
            if pause is not None and done.immediate == 0:
                pause(time.monotonic() - started)
        return work

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        """Route, escalate and deliver what is due now in the calling thread (tools and tests)."""
        return self.route_once(conn) + self.deliver_once(conn)

    def _timeout(
        self, conn: psycopg.Connection[Any], next_due: Callable[[psycopg.Connection[Any]], datetime | None]
    ) -> float:
        with conn.transaction():
            due = next_due(conn)
        poll = self.settings.notify_poll_s
        if due is None:
            return poll
        return max(0.0, min(poll, (due - self.clock()).total_seconds()))

    def start(self) -> None:
        self.warm_up()
        self.loops = [Loop("notify-router", _Router(self), stopping=self._stop)]
        self.loops += [
            Loop(f"notify-deliver-{i}", _Deliverer(self, i), stopping=self._stop) for i in range(1, self.deliverers + 1)
        ]
        for loop in self.loops:
            loop.start()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [loop.check() for loop in self.loops]

    def stop(self) -> None:
        self._stop.set()
        self._wake.signal()
        for loop in self.loops:
            loop.stop()
        self.sender.close()


class _Router:
    """Routes the outbox and climbs ladders; sleeps on LISTEN until the next deadline or the poll interval."""

    def __init__(self, worker: NotifyWorker) -> None:
        self.worker = worker

    def open(self) -> tuple[psycopg.Connection[Any], psycopg.Connection[Any]]:
        listen = psycopg.connect(self.worker.settings.dsn, autocommit=True)
        try:
            listen.execute(f"LISTEN {OUTBOX_CHANNEL}")
            return listen, psycopg.connect(self.worker.settings.dsn, autocommit=False)
        except BaseException:
            listen.close()
            raise

    def step(self, held: tuple[psycopg.Connection[Any], psycopg.Connection[Any]]) -> float:
        listen, conn = held
        # A storm's backlog takes minutes: a step ends every few seconds (and the loop's health sees it working).
        _, more = self.worker._route(conn, pause=lambda took: self._pause(listen, took * MINOR_PAUSE), budget_s=STEP_S)
        self.worker._ready[0].set()
        if more:
            return 0.0
        timeout = self.worker._timeout(conn, repo.get_next_escalation_due)
        if timeout > 0:
            for _ in listen.notifies(timeout=timeout, stop_after=1):
                pass
        return 0.0

    def _pause(self, listen: psycopg.Connection[Any], seconds: float) -> None:
        """Sleep up to `seconds`, unless a severe transition is queued meanwhile (its NOTIFY carries the severity;
        one without a payload, from notify itself, wakes too)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self.worker._stop.is_set():
            for note in listen.notifies(timeout=left, stop_after=1):
                if not note.payload.isdigit() or int(note.payload) >= Severity.MAJOR:
                    return

    def close(self, held: tuple[psycopg.Connection[Any], psycopg.Connection[Any]]) -> None:
        for conn in held:
            conn.close()


class _Deliverer:
    """Delivers due notifications; sleeps until the next retry, the poll interval or the router's wake-up."""

    def __init__(self, worker: NotifyWorker, index: int) -> None:
        self.worker = worker
        self.index = index

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.worker.settings.dsn, autocommit=False)

    def step(self, conn: psycopg.Connection[Any]) -> float:
        seen = self.worker._wake.generation
        # The first deliverer is a lane of its own for messages sent at once (life-safety, critical): in an alarm
        # storm the others may all be busy with minor ones when a gas leak's message becomes due (issue 18). They
        # pause after a batch of minor ones as the router does (MINOR_PAUSE); the lane never waits for them.
        if self.index == 1:
            self.worker.deliver_once(conn, immediate_only=True)
        else:
            self.worker.deliver_once(conn, pause=self._pause)
        self.worker._ready[self.index].set()
        timeout = self.worker._timeout(conn, repo.get_next_delivery_due)
        if timeout > 0:
            self.worker._wake.wait(seen, timeout)
        return 0.0

    def _pause(self, seconds: float) -> None:
        self.worker._stop.wait(seconds * MINOR_PAUSE)

    def close(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()
