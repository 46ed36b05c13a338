"""SQL of the notify stage: outbox routing, per-recipient notifications, delivery attempts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row


@dataclass(slots=True)
class OutboxRow:
    id: int
    alarm_id: int
    event_id: int | None
    kind: str
    severity: int
    created_at: datetime


@dataclass(slots=True)
class AlarmContext:
    """What a message needs to say: the alarm, its device and where it is."""

    alarm_id: int
    type: str
    severity: int
    active: bool
    acknowledged: bool
    acknowledged_by: str | None
    disposition: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str
    raised_at: datetime
    device_id: str
    device_kind: str
    location: str
    site_id: str
    site_name: str
    address: str
    floor: int | None
    site_flags: list[str]
    micro_grid_id: str
    micro_grid_name: str
    grid_id: str
    merchant_id: str | None


@dataclass(slots=True)
class Recipient:
    id: str
    name: str
    role: str
    locale: str
    notify_urls: list[str]


@dataclass(slots=True)
class DueNotification:
    id: int
    alarm_id: int
    worker_id: str | None
    merchant_id: str | None
    attempts: int
    title: str
    body: str
    notify_urls: list[str]


CLAIM_OUTBOX = """
SELECT id, alarm_id, event_id, kind, severity, created_at FROM outbox
WHERE routed_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK_ROUTED = "UPDATE outbox SET routed_at = now() WHERE id = ANY(%s)"


def claim_outbox(conn: Connection[Any], *, limit: int) -> list[OutboxRow]:
    """Lock unrouted outbox rows; other notify processes skip them."""
    with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
        return cur.execute(CLAIM_OUTBOX, (limit,)).fetchall()


def mark_routed(conn: Connection[Any], *, outbox_ids: Sequence[int]) -> None:
    """The rows have been expanded into notifications."""
    conn.execute(MARK_ROUTED, (list(outbox_ids),))


SELECT_ALARM_CONTEXT = """
SELECT a.id AS alarm_id, a.type, a.severity, a.active, a.acknowledged, a.acknowledged_by, a.disposition, a.value,
       a.peak_value, a.count, a.message, a.raised_at, d.id AS device_id, d.kind AS device_kind, d.location,
       s.id AS site_id, s.name AS site_name, s.address, s.floor, s.flags AS site_flags,
       mg.id AS micro_grid_id, mg.name AS micro_grid_name, mg.grid_id, s.merchant_id
FROM alarm a JOIN device d ON d.id = a.device_id JOIN site s ON s.id = a.site_id
JOIN micro_grid mg ON mg.id = a.micro_grid_id
WHERE a.id = %s
"""


def get_alarm_context(conn: Connection[Any], *, alarm_id: int) -> AlarmContext | None:
    """The alarm with its device, site and micro-grid."""
    with conn.cursor(row_factory=class_row(AlarmContext)) as cur:
        return cur.execute(SELECT_ALARM_CONTEXT, (alarm_id,)).fetchone()


SELECT_COVERING_WORKERS = """
SELECT w.id, w.name, w.role, w.locale, w.notify_urls FROM worker w
JOIN worker_micro_grid wm ON wm.worker_id = w.id
WHERE wm.micro_grid_id = %s AND w.active ORDER BY w.id
"""


def get_covering_workers(conn: Connection[Any], *, micro_grid_id: str) -> list[Recipient]:
    """The workers who cover a micro-grid."""
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return cur.execute(SELECT_COVERING_WORKERS, (micro_grid_id,)).fetchall()


INSERT_NOTIFICATION = """
INSERT INTO notification (outbox_id, alarm_id, worker_id, step, title, body)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (outbox_id, worker_id) WHERE worker_id IS NOT NULL DO NOTHING
"""


def insert_notifications(conn: Connection[Any], *, rows: Sequence[tuple[int, int, str, int, str, str]]) -> None:
    """(outbox_id, alarm_id, worker_id, step, title, body); a second insert for the same pair is a no-op."""
    if rows:
        with conn.cursor() as cur:
            cur.executemany(INSERT_NOTIFICATION, rows)


CLAIM_DUE = """
SELECT n.id, n.alarm_id, n.worker_id, n.merchant_id, n.attempts, n.title, n.body,
       coalesce(w.notify_urls, m.notify_urls, '{}') AS notify_urls
FROM notification n LEFT JOIN worker w ON w.id = n.worker_id LEFT JOIN merchant m ON m.id = n.merchant_id
WHERE n.status = 'pending' AND n.next_attempt_at <= %s
ORDER BY n.next_attempt_at, n.id LIMIT %s
FOR UPDATE OF n SKIP LOCKED
"""


def claim_due(conn: Connection[Any], *, now: datetime, limit: int) -> list[DueNotification]:
    """Lock notifications due for (re)delivery; other processes skip them."""
    with conn.cursor(row_factory=class_row(DueNotification)) as cur:
        return cur.execute(CLAIM_DUE, (now, limit)).fetchall()


INSERT_ATTEMPT = """
INSERT INTO delivery_attempt (notification_id, at, channel, ok, detail) VALUES (%s, %s, %s, %s, %s)
"""
MARK_SENT = "UPDATE notification SET status = 'sent', attempts = attempts + 1, sent_at = %s, last_error = NULL WHERE id = %s"
MARK_RETRY = """
UPDATE notification SET attempts = attempts + 1, next_attempt_at = %s, last_error = %s,
    status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END
WHERE id = %s
"""


def record_attempt(conn: Connection[Any], *, notification_id: int, at: datetime, channel: str, ok: bool,
                   detail: str) -> None:
    """One try on one channel, with apprise's answer."""
    conn.execute(INSERT_ATTEMPT, (notification_id, at, channel, ok, detail))


def mark_sent(conn: Connection[Any], *, notification_id: int, at: datetime) -> None:
    conn.execute(MARK_SENT, (at, notification_id))


def mark_retry(conn: Connection[Any], *, notification_id: int, next_at: datetime, error: str,
               max_attempts: int) -> None:
    """Schedule another try, or give up after max_attempts (status failed)."""
    conn.execute(MARK_RETRY, (next_at, error, max_attempts, notification_id))
