"""The notify process: wakes on NOTIFY from the outbox (or a poll), routes, delivers, retries."""

from __future__ import annotations

import logging
import threading
from typing import Any

import psycopg

from core.settings import Settings
from notify import service as notify_service
from notify.delivery import Sender
from core.db import OUTBOX_CHANNEL

log = logging.getLogger(__name__)


class NotifyWorker:
    """Runs until stop(); several of them may run against one database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sender = Sender(timeout_s=settings.notify_timeout_s, redirect_url=settings.notify_redirect_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, conn: psycopg.Connection[Any]) -> int:
        """Route and deliver what is pending now; returns the work done."""
        work = notify_service.route_outbox(conn, public_url=self.settings.public_url)
        while True:
            tried = notify_service.deliver_due(conn, sender=self.sender,
                                               max_attempts=self.settings.notify_max_attempts)
            work += tried
            if tried == 0 or self._stop.is_set():
                return work

    def run(self) -> None:
        """Loop with LISTEN for low latency and a poll for retries and missed wake-ups."""
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.settings.dsn, autocommit=True) as listen, \
                        psycopg.connect(self.settings.dsn, autocommit=False) as conn:
                    listen.execute(f"LISTEN {OUTBOX_CHANNEL}")
                    while not self._stop.is_set():
                        if self.run_once(conn):
                            continue
                        for _ in listen.notifies(timeout=self.settings.notify_poll_s, stop_after=1):
                            pass
            except psycopg.OperationalError as exc:
                log.warning("notify lost the database (%s); retrying in 2 s", str(exc).strip()[:200])
                self._stop.wait(2)
            except Exception:
                log.exception("notify loop failed; restarting it in 2 s")
                self._stop.wait(2)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
