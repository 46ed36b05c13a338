"""Routing outbox transitions to recipients and delivering due notifications, exactly once each."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from psycopg import Connection

from notify import repo, templates
from notify.delivery import Sender

log = logging.getLogger(__name__)

DELIVERIES = Counter("gridwatch_notifications_total", "Notification delivery outcomes", ["outcome"])

# Transitions a person needs to hear about (DESIGN: transitions only, never "still active").
NOTIFIED_KINDS = {"raised", "reactivated", "severity_raised", "cleared", "acknowledged", "resolved", "escalated",
                  "actuation_failed"}


def backoff(attempts: int) -> timedelta:
    """2 s, 4 s, 8 s ... capped at 5 min."""
    return timedelta(seconds=min(2 ** max(attempts, 1), 300))


def route_outbox(conn: Connection[Any], *, public_url: str = "", limit: int = 100) -> int:
    """Expand claimed outbox rows into one notification per recipient; returns rows routed."""
    with conn.transaction():
        rows = repo.claim_outbox(conn, limit=limit)
        notes: list[tuple[int, int, str, int, str, str]] = []
        for row in rows:
            if row.kind not in NOTIFIED_KINDS:
                continue
            ctx = repo.get_alarm_context(conn, alarm_id=row.alarm_id)
            if ctx is None:
                continue
            ack_url = f"{public_url.rstrip('/')}/alarms/{ctx.alarm_id}" if public_url else ""
            actor = ctx.acknowledged_by if row.kind == "acknowledged" else None
            for worker in repo.get_covering_workers(conn, micro_grid_id=ctx.micro_grid_id):
                title, body = templates.render(ctx, row.kind, worker.locale, ack_url=ack_url, actor=actor)
                notes.append((row.id, row.alarm_id, worker.id, 0, title, body))
            if not notes:
                log.warning("alarm %s in micro-grid %s has nobody to notify", ctx.alarm_id, ctx.micro_grid_id)
        repo.insert_notifications(conn, rows=notes)
        repo.mark_routed(conn, outbox_ids=[r.id for r in rows])
    return len(rows)


def deliver_due(conn: Connection[Any], *, sender: Sender, max_attempts: int, limit: int = 20,
                now: datetime | None = None) -> int:
    """Deliver notifications that are due, holding their row locks while sending; returns how many tried."""
    with conn.transaction():
        due = repo.claim_due(conn, now=now or datetime.now(UTC), limit=limit)
        for note in due:
            at = datetime.now(UTC)
            if not note.notify_urls:
                repo.mark_retry(conn, notification_id=note.id, next_at=at, error="recipient has no channel",
                                max_attempts=1)
                DELIVERIES.labels("no_channel").inc()
                continue
            results = sender.send(note.notify_urls, note.title, note.body,
                                  recipient=note.worker_id or note.merchant_id or "")
            for res in results:
                repo.record_attempt(conn, notification_id=note.id, at=at, channel=res.channel, ok=res.ok,
                                    detail=res.detail)
            if any(r.ok for r in results):
                repo.mark_sent(conn, notification_id=note.id, at=at)
                DELIVERIES.labels("sent").inc()
                log.info("notified %s of alarm %s", note.worker_id or note.merchant_id, note.alarm_id)
            else:
                error = "; ".join(f"{r.channel}: {r.detail}" for r in results)[:500]
                repo.mark_retry(conn, notification_id=note.id, next_at=at + backoff(note.attempts + 1),
                                error=error, max_attempts=max_attempts)
                DELIVERIES.labels("failed_attempt").inc()
                log.warning("delivery to %s failed (attempt %d): %s", note.worker_id or note.merchant_id,
                            note.attempts + 1, error)
    return len(due)
