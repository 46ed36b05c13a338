"""The notify process: a router thread that wakes on NOTIFY from the outbox (routes, climbs ladders) and a few
deliverer threads that send due notifications, so a slow or hanging channel never holds up routing or the
delivery of the next alarm.

Threads sleep only until the earliest pending deadline (a retry, a held group, a ladder step) or the poll
interval, whichever is sooner; the router wakes the deliverers as soon as it has created notifications.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from core.db import OUTBOX_CHANNEL
from core.settings import Settings
from notify import messages, repo, service
from notify.delivery import Sender
from notify.policy import Policy, load_policy

log = logging.getLogger(__name__)

DELIVERERS = 3
BATCH = 8  # notifications one deliverer claims at a time


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

    def __init__(self, settings: Settings, *, policy: Policy | None = None,
                 clock: service.Clock = system_clock, sender: Sender | None = None,
                 deliverers: int = DELIVERERS) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.notify_policy)
        self.clock = clock
        # One sending thread per notification a deliverer may hold, so hanging channels cannot starve the rest.
        self.sender = sender or Sender(timeout_s=settings.notify_timeout_s, redirect_url=settings.notify_redirect_url,
                                       parallel=deliverers * BATCH)
        self.deliverers = deliverers
        self._stop = threading.Event()
        self._wake = _Wake()
        self._ready = [threading.Event() for _ in range(deliverers + 1)]
        self._threads: list[threading.Thread] = []

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
        work = 0
        while not self._stop.is_set():
            done = service.route_outbox(conn, policy=self.policy, now=self.clock(),
                                        public_url=self.settings.public_url)
            done += service.run_escalations(conn, policy=self.policy, now=self.clock())
            if done:
                self._wake.signal()
            work += done
            if done == 0:
                break
        return work

    def deliver_once(self, conn: psycopg.Connection[Any]) -> int:
        """Deliver due notifications in small batches until none is due; returns how many."""
        work = 0
        while not self._stop.is_set():
            done = service.deliver_due(conn, sender=self.sender, policy=self.policy, clock=self.clock,
                                       max_attempts=self.settings.notify_max_attempts,
                                       public_url=self.settings.public_url, limit=BATCH)
            work += done
            if done == 0:
                break
        return work

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        """Route, escalate and deliver what is due now in the calling thread (tools and tests)."""
        return self.route_once(conn) + self.deliver_once(conn)

    def _timeout(self, conn: psycopg.Connection[Any], next_due: Callable[[psycopg.Connection[Any]],
                                                                         datetime | None]) -> float:
        with conn.transaction():
            due = next_due(conn)
        poll = self.settings.notify_poll_s
        if due is None:
            return poll
        return max(0.0, min(poll, (due - self.clock()).total_seconds()))

    def _route_loop(self) -> None:
        with psycopg.connect(self.settings.dsn, autocommit=True) as listen, \
                psycopg.connect(self.settings.dsn, autocommit=False) as conn:
            listen.execute(f"LISTEN {OUTBOX_CHANNEL}")
            while not self._stop.is_set():
                self.route_once(conn)
                self._ready[0].set()
                timeout = self._timeout(conn, repo.get_next_escalation_due)
                if timeout > 0:
                    for _ in listen.notifies(timeout=timeout, stop_after=1):
                        pass

    def _deliver_loop(self, index: int) -> None:
        with psycopg.connect(self.settings.dsn, autocommit=False) as conn:
            while not self._stop.is_set():
                seen = self._wake.generation
                self.deliver_once(conn)
                self._ready[index].set()
                timeout = self._timeout(conn, repo.get_next_delivery_due)
                if timeout > 0:
                    self._wake.wait(seen, timeout)

    def _supervise(self, name: str, loop: Callable[[], None]) -> None:
        while not self._stop.is_set():
            try:
                loop()
            except psycopg.OperationalError as exc:
                log.warning("notify %s lost the database (%s); retrying in 2 s", name, str(exc).strip()[:200])
                self._stop.wait(2)
            except Exception:
                log.exception("notify %s loop failed; restarting it in 2 s", name)
                self._stop.wait(2)

    def run(self) -> None:
        """Run the router and the deliverers until stop()."""
        self.start()
        self._stop.wait()
        self.stop()

    def start(self) -> None:
        self.warm_up()
        self._threads = [threading.Thread(target=self._supervise, args=("router", self._route_loop),
                                          name="notify-router", daemon=True)]
        for i in range(1, self.deliverers + 1):
            self._threads.append(threading.Thread(
                target=self._supervise, args=(f"deliverer {i}", lambda i=i: self._deliver_loop(i)),
                name=f"notify-deliver-{i}", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.signal()
        for thread in self._threads:
            thread.join(timeout=10)
        self.sender.close()
