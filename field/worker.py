"""The field part: makes the day's scheduled patrol rounds, climbs the overdue ladder of work orders and delivers
their notices, in the core.loop frame.
It runs beside notify's deliverers (`serve --only notify`), with notify's apprise sender handed in by the
composition root, so field never imports notify."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from core import actionlink
from core.loop import Check, Loop
from field import patrol_service, report_service, service
from field.service import SendFn

log = logging.getLogger(__name__)


class FieldWorker:
    """Runs until stop(); several may run (notices are claimed with SKIP LOCKED, the ladder is idempotent)."""

    def __init__(
        self,
        dsn: str,
        *,
        send: SendFn,
        tz: str = "Asia/Shanghai",
        interval_s: float = 30.0,
        links: actionlink.Signer | None = None,
    ) -> None:
        self.dsn = dsn
        # Each message's own link to its item (core/actionlink.py); without a public URL there is nothing to link.
        self.links = links
        self.tz = tz
        self._scheduled: date | None = None
        self.send = send
        self.interval_s = interval_s
        self.loop: Loop[psycopg.Connection[Any]] = Loop("field", self)

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=False)

    def step(self, held: psycopg.Connection[Any]) -> float:
        now = datetime.now(UTC)
        today = now.astimezone(ZoneInfo(self.tz)).date()
        if today != self._scheduled:  # 一日双巡: today's rounds, once a day per process (idempotent anyway)
            with held.transaction():
                patrol_service.schedule_rounds(held, day=today, tz=self.tz)
            self._scheduled = today
        with held.transaction():
            steps = service.escalate_overdue(held, now=now) + report_service.escalate_untaken(held, now=now)
        with held.transaction():
            sent = service.deliver_notices(held, send=self.send, now=now, links=self.links)
        if steps or sent:
            log.info("field: %d overdue step(s), %d notice(s) sent", steps, sent)
        return 0.0 if sent else self.interval_s

    def close(self, held: psycopg.Connection[Any]) -> None:
        held.close()

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [self.loop.check()]
