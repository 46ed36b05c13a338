"""Scheduled reports: once a day, week or month has ended (and report_hour has passed, local time), its report is
sent through apprise to the configured URLs, exactly once per schedule and period however many notify processes
run it (table report_delivery); a failed delivery is recorded and retried on the next pass."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import apprise
import psycopg
from psycopg import Connection

from core.loop import Check, Loop
from core.settings import Settings
from report import render, repo, service
from report.period import PeriodKind, last_complete

log = logging.getLogger(__name__)
SCHEDULE_KINDS: dict[str, PeriodKind] = {"daily": "day", "weekly": "week", "monthly": "month"}


@dataclass(frozen=True, slots=True)
class Sent:
    """One delivery made (or failed) by a pass."""

    schedule: str
    period: str
    ok: bool
    error: str = ""


def scope_of(setting: str) -> service.Scope:
    """'street' or 'community:c1' (Settings.report_scope) as a Scope of every community."""
    if setting == "street":
        return service.Scope("street")
    kind, _, scope_id = setting.partition(":")
    return service.Scope(cast(Literal["micro_grid", "grid", "community"], kind), scope_id)


def deliver(urls: list[str], *, title: str, body: str, name: str, data: bytes) -> str:
    """Send the file to every URL; '' when all took it, else what went wrong."""
    sender = apprise.Apprise()
    bad = [u.split("://", 1)[0] + "://…" for u in urls if not sender.add(u)]
    if bad:
        return f"not an apprise URL: {', '.join(bad)}"
    with tempfile.TemporaryDirectory(prefix="gridwatch-report-") as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        ok = sender.notify(title=title, body=body, attach=apprise.AppriseAttachment(str(path)))
    return "" if ok else "a channel refused the report (see the apprise warning above)"


def send_due(conn: Connection[Any], settings: Settings, *, now: datetime) -> list[Sent]:
    """Send each scheduled report whose period has ended and that is not sent yet (one transaction each)."""
    done: list[Sent] = []
    if not settings.report_notify:
        return done
    scope = scope_of(settings.report_scope)
    for schedule in settings.report_schedule:
        period = last_complete(SCHEDULE_KINDS[schedule], now, settings.timezone)
        if now < period.until + timedelta(hours=settings.report_hour):
            continue
        key = f"{schedule}:{settings.report_scope}"
        with conn.transaction():
            delivery = repo.claim_delivery(
                conn, schedule=key, period=period.label, now=now, max_attempts=settings.notify_max_attempts
            )
            if delivery is None:
                continue
            built = service.build_report(conn, scope=scope, period=period, now=now)
            fmt = settings.report_format
            lang = settings.report_lang
            title = render.title_of(built, lang)
            error = deliver(
                settings.report_notify,
                title=title,
                body=f"{title}\n{render.filename(built, fmt)}",
                name=render.filename(built, fmt),
                data=render.render(built, fmt, lang),
            )
            repo.finish_delivery(conn, delivery_id=delivery, sent=None if error else now, error=error, now=now)
        if error:
            log.warning("report %s %s not delivered: %s (retried on the next pass)", key, period.label, error)
        else:
            log.info("report %s %s delivered", key, period.label)
        done.append(Sent(key, period.label, not error, error))
    return done


class ReportWorker:
    """The notify part's report schedule, in the shared loop frame."""

    def __init__(self, settings: Settings) -> None:
        if settings.report_format == "pdf":
            render.cjk_font()  # no Chinese font: `serve` stops at start, saying which package to install
        self.settings = settings
        self.loop: Loop[Connection[Any]] = Loop("report", self, grace_s=settings.report_check_s + 120)

    def open(self) -> Connection[Any]:
        return psycopg.connect(self.settings.dsn, autocommit=False)

    def step(self, held: Connection[Any]) -> float:
        send_due(held, self.settings, now=datetime.now().astimezone())
        return self.settings.report_check_s

    def close(self, held: Connection[Any]) -> None:
        held.close()

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [self.loop.check()]
