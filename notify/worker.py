"""The notify process: wakes on NOTIFY from the outbox, routes, climbs ladders, delivers, retries.

Between wake-ups it sleeps until the earliest pending deadline (a retry, a held group, a ladder step) or
the poll interval, whichever is sooner, so nothing on the hot path waits for a timer.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg

from core.db import OUTBOX_CHANNEL
from core.settings import Settings
from notify import messages, repo, service
from notify.delivery import Sender
from notify.policy import Policy, load_policy

log = logging.getLogger(__name__)


def system_clock() -> datetime:
    return datetime.now(UTC)


class NotifyWorker:
    """Runs until stop(); several of them may run against one database."""

    def __init__(self, settings: Settings, *, policy: Policy | None = None,
                 clock: service.Clock = system_clock, sender: Sender | None = None) -> None:
        self.settings = settings
        self.policy = policy or load_policy(settings.notify_policy)
        self.clock = clock
        self.sender = sender or Sender(timeout_s=settings.notify_timeout_s,
                                       redirect_url=settings.notify_redirect_url)
        self._stop = threading.Event()
        self.ready = threading.Event()  # listening, caught up and warmed up
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        """Compile the templates and load apprise's plugins now, not on the first alarm."""
        messages.render_test(name="-", worker_id="-", role="-", channels=0, locale="zh-CN", at=self.clock())
        messages.render_test(name="-", worker_id="-", role="-", channels=0, locale="en", at=self.clock())
        Sender.warm_up()

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        """Route, escalate and deliver what is due now; returns the work done."""
        work = 0
        while not self._stop.is_set():
            done = service.route_outbox(conn, policy=self.policy, now=self.clock(),
                                        public_url=self.settings.public_url)
            done += service.run_escalations(conn, policy=self.policy, now=self.clock())
            done += service.deliver_due(conn, sender=self.sender, policy=self.policy, clock=self.clock,
                                        max_attempts=self.settings.notify_max_attempts,
                                        public_url=self.settings.public_url)
            work += done
            if done == 0:
                break
        return work

    def _sleep_s(self, conn: psycopg.Connection[Any]) -> float:
        with conn.transaction():
            due = repo.get_next_due(conn)
        poll = self.settings.notify_poll_s
        if due is None:
            return poll
        return max(0.0, min(poll, (due - self.clock()).total_seconds()))

    def run(self) -> None:
        """Loop with LISTEN for low latency and a bounded sleep until the next deadline."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.settings.dsn, autocommit=True) as listen, \
                        psycopg.connect(self.settings.dsn, autocommit=False) as conn:
                    listen.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    while not self._stop.is_set():
                        self.run_once(conn)
                        self.ready.set()
                        timeout = self._sleep_s(conn)
                        if timeout > 0:
                            for _ in listen.notifies(timeout=timeout, stop_after=1):
                                pass
            except psycopg.OperationalError as exc:
                log.warning("notify lost the database (%s); retrying in 2 s", str(exc).strip()[:200])
                self._stop.wait(2)
            except Exception:
                log.exception("notify loop failed; restarting it in 2 s")
                self._stop.wait(2)

    def start(self) -> None:
        self.warm_up()
        self._thread = threading.Thread(target=self.run, name="notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        self.sender.close()
