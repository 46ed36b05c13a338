"""SQL of the notify stage: outbox routing, recipients, ladders, silences, notifications and delivery attempts.

notify never imports rules: alarm state is read here with notify's own SQL, and the rows notify adds to
alarm_event and outbox (escalated, notified, reminders) are its side of "meeting in the database".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.db import OUTBOX_CHANNEL
from core.repo import Recipient

# Recipient and the query of a site's candidate workers (core.repo.get_community_workers) are core's: field routes
# resident reports, drills and overdue work orders by the same rows and the same decision (core.routing).


@dataclass(slots=True)
class OutboxRow:
    id: int
    alarm_id: int
    event_id: int | None
    kind: str
    severity: int
    created_at: datetime
    detail: dict[str, Any]


@dataclass(slots=True)
class AlarmContext:
    """What routing and a message need: the alarm, its device and where it is."""

    alarm_id: int
    type: str
    severity: int
    active: bool
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    closed_at: datetime | None
    disposition: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str
    raised_at: datetime
    device_id: str
    device_kind: str
    location: str
    gateway_id: str | None
    site_id: str
    site_name: str
    address: str
    floor: int | None
    site_flags: list[str]
    micro_grid_id: str
    micro_grid_name: str
    grid_id: str
    community_id: str
    timezone: str
    merchant_id: str | None


@dataclass(slots=True)
class Notified:
    """Someone who already got a ladder message about an alarm."""

    worker_id: str | None
    merchant_id: str | None
    tier: str
    step: int


@dataclass(slots=True)
class DueNotification:
    id: int
    alarm_id: int
    worker_id: str | None
    merchant_id: str | None
    kind: str
    tier: str
    step: int
    locale: str
    immediate: bool
    alarm_ids: list[int]
    attempts: int
    title: str
    body: str
    notify_urls: list[str]
    alarm_acknowledged: bool
    alarm_closed: bool


@dataclass(slots=True)
class Escalation:
    alarm_id: int
    severity: int
    start_step: int
    step: int
    started_at: datetime
    next_step_at: datetime | None
    reminders: int
    next_reminder_at: datetime | None
    renotify_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None
    # the alarm as it is now
    alarm_type: str = ""
    active: bool = True
    acknowledged: bool = False
    closed: bool = False
    site_flags: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Silence:
    id: int
    site_id: str | None
    device_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None
    include_life_safety: bool
    created_at: datetime


SILENCE_COLUMNS = "id, site_id, device_id, starts_at, ends_at, reason, created_by, include_life_safety, created_at"


# --- outbox -------------------------------------------------------------------------------------------------

# Only the earliest unrouted row of each alarm: a later transition (acknowledged) is routed after the earlier
# one (raised) has committed, whichever notify process takes it. The most severe first: in an alarm storm a gas
# leak is routed before the thousands of battery flaps queued ahead of it (issue 18).
CLAIM_OUTBOX = """
SELECT o.id, o.alarm_id, o.event_id, o.kind, o.severity, o.created_at, o.detail FROM outbox o
WHERE o.routed_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.alarm_id = o.alarm_id AND p.routed_at IS NULL AND p.id < o.id)
ORDER BY o.severity DESC, o.id LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK_ROUTED = "UPDATE outbox SET routed_at = now() WHERE id = ANY(%s)"
INSERT_OUTBOX = """
INSERT INTO outbox (alarm_id, event_id, kind, severity, detail) VALUES (%s, %s, %s, %s, %s) RETURNING id
"""
NOTIFY_OUTBOX = f"NOTIFY {OUTBOX_CHANNEL}"
INSERT_EVENT = """
INSERT INTO alarm_event (alarm_id, at, kind, actor, severity, details) VALUES (%s, %s, %s, 'notify', %s, %s)
RETURNING id
"""


def claim_outbox(conn: Connection[Any], *, limit: int) -> list[OutboxRow]:
    """Lock unrouted outbox rows; other notify processes skip them."""
    with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
        return cur.execute(CLAIM_OUTBOX, (limit,)).fetchall()


def mark_routed(conn: Connection[Any], *, outbox_ids: Sequence[int]) -> None:
    """The rows have been expanded into notifications."""
    conn.execute(MARK_ROUTED, (list(outbox_ids),))


def insert_event(
    conn: Connection[Any], *, alarm_id: int, kind: str, at: datetime, severity: int | None, details: dict[str, Any]
) -> int:
    """An alarm_event row written by notify (escalated, notified)."""
    with conn.cursor() as cur:
        row = cur.execute(INSERT_EVENT, (alarm_id, at, kind, severity, Jsonb(details))).fetchone()
    assert row is not None  # noqa: S101 - RETURNING always yields the row
    return int(row[0])


def insert_outbox(
    conn: Connection[Any], *, alarm_id: int, event_id: int | None, kind: str, severity: int, detail: dict[str, Any]
) -> int:
    """Queue a notify-originated transition (escalated, reminder, ack_timeout) and wake every notify process."""
    with conn.cursor() as cur:
        row = cur.execute(INSERT_OUTBOX, (alarm_id, event_id, kind, severity, Jsonb(detail))).fetchone()
        cur.execute(NOTIFY_OUTBOX)
    assert row is not None  # noqa: S101
    return int(row[0])


# --- alarm, registry ----------------------------------------------------------------------------------------

SELECT_ALARM_CONTEXT = """
SELECT a.id AS alarm_id, a.type, a.severity, a.active, a.acknowledged, a.acknowledged_by, a.acknowledged_at,
       a.closed_at, a.disposition, a.value, a.peak_value, a.count, a.message, a.raised_at,
       d.id AS device_id, d.kind AS device_kind, d.location, d.gateway_id,
       s.id AS site_id, s.name AS site_name, s.address, s.floor, s.flags AS site_flags,
       mg.id AS micro_grid_id, mg.name AS micro_grid_name, mg.grid_id, g.community_id, c.timezone, s.merchant_id
FROM alarm a JOIN device d ON d.id = a.device_id JOIN site s ON s.id = a.site_id
JOIN micro_grid mg ON mg.id = a.micro_grid_id JOIN grid g ON g.id = mg.grid_id JOIN community c ON c.id = g.community_id
WHERE a.id = ANY(%s)
"""


def get_alarm_context(conn: Connection[Any], *, alarm_id: int) -> AlarmContext | None:
    """The alarm with its device, site, micro-grid, grid and community."""
    found = get_alarm_contexts(conn, alarm_ids=[alarm_id])
    return found[0] if found else None


def get_alarm_contexts(conn: Connection[Any], *, alarm_ids: Sequence[int]) -> list[AlarmContext]:
    """Several alarms with their context, in id order."""
    with conn.cursor(row_factory=class_row(AlarmContext)) as cur:
        rows = cur.execute(SELECT_ALARM_CONTEXT, (list(alarm_ids),)).fetchall()
    return sorted(rows, key=lambda r: r.alarm_id)


SELECT_MERCHANT = """
SELECT id, name, 'merchant' AS role, 'zh-CN' AS locale, notify_urls FROM merchant WHERE id = %s
"""


def get_merchant(conn: Connection[Any], *, merchant_id: str) -> Recipient | None:
    """A merchant as a recipient (merchants read Chinese)."""
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return cur.execute(SELECT_MERCHANT, (merchant_id,)).fetchone()


SELECT_WORKER = """
SELECT id, name, role, locale, notify_urls, roster, on_call FROM worker WHERE id = %s
"""


def get_worker(conn: Connection[Any], *, worker_id: str) -> Recipient | None:
    """One worker by id."""
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return cur.execute(SELECT_WORKER, (worker_id,)).fetchone()


SELECT_NOTIFIED = """
SELECT DISTINCT n.worker_id, n.merchant_id, n.tier, n.step FROM notification n
WHERE n.alarm_ids @> ARRAY[%s]::bigint[] AND n.kind = ANY(%s) AND n.status <> 'suppressed'
ORDER BY n.step, n.worker_id NULLS LAST, n.merchant_id
"""


def get_notified(conn: Connection[Any], *, alarm_id: int, kinds: Sequence[str]) -> list[Notified]:
    """Who already had a message about this alarm (of the given transition kinds)."""
    with conn.cursor(row_factory=class_row(Notified)) as cur:
        return cur.execute(SELECT_NOTIFIED, (alarm_id, list(kinds))).fetchall()


SELECT_ACTIVE_SILENCE = f"""
SELECT {SILENCE_COLUMNS} FROM silence
WHERE (site_id = %(site)s OR device_id = %(device)s) AND starts_at <= %(now)s AND ends_at > %(now)s
ORDER BY include_life_safety DESC, ends_at DESC LIMIT 1
"""


def get_active_silence(conn: Connection[Any], *, site_id: str, device_id: str, now: datetime) -> Silence | None:
    """The silence covering a site or device now (one that includes life-safety first)."""
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        return cur.execute(SELECT_ACTIVE_SILENCE, {"site": site_id, "device": device_id, "now": now}).fetchone()


INSERT_SILENCE = f"""
INSERT INTO silence (site_id, device_id, starts_at, ends_at, reason, created_by, include_life_safety)
VALUES (%s, %s, %s, %s, %s, %s, %s)
RETURNING {SILENCE_COLUMNS}
"""
# The community a silence is in (by its site, or its device's site): an admin limited to some communities sees
# and ends only theirs.
SILENCE_IN_COMMUNITIES = """(%(communities)s::text[] IS NULL OR coalesce(
    (SELECT g.community_id FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
     WHERE s.id = silence.site_id),
    (SELECT g.community_id FROM device d JOIN site s ON s.id = d.site_id JOIN micro_grid mg ON mg.id = s.micro_grid_id
     JOIN grid g ON g.id = mg.grid_id WHERE d.id = silence.device_id)) = ANY(%(communities)s))"""
SELECT_SILENCES = f"""
SELECT {SILENCE_COLUMNS} FROM silence
WHERE (%(current)s = false OR ends_at > %(now)s) AND {SILENCE_IN_COMMUNITIES}
ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s
"""
SELECT_SILENCE = f"SELECT {SILENCE_COLUMNS} FROM silence WHERE id = %(id)s AND {SILENCE_IN_COMMUNITIES}"
# Ended, not deleted (the row stays as the record of the window); a window planned ahead is cancelled: it ends
# before it would have started.
END_SILENCE = """
UPDATE silence SET starts_at = least(starts_at, %(now)s - interval '1 microsecond'), ends_at = %(now)s
WHERE id = %(id)s AND ends_at > %(now)s
"""


def insert_silence(
    conn: Connection[Any],
    *,
    site_id: str | None,
    device_id: str | None,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    created_by: str | None,
    include_life_safety: bool,
) -> Silence:
    """A maintenance window for a site or a device."""
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        row = cur.execute(
            INSERT_SILENCE, (site_id, device_id, starts_at, ends_at, reason, created_by, include_life_safety)
        ).fetchone()
    assert row is not None  # noqa: S101
    return row


def list_silences(
    conn: Connection[Any],
    *,
    now: datetime,
    current: bool = True,
    limit: int = 1000,
    offset: int = 0,
    communities: Sequence[str] | None = None,
) -> list[Silence]:
    """Silences, newest first (current: only those not over at `now`; of some communities only, when given)."""
    params = {
        "now": now,
        "current": current,
        "limit": limit,
        "offset": offset,
        "communities": None if communities is None else list(communities),
    }
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        return cur.execute(SELECT_SILENCES, params).fetchall()


def get_silence(conn: Connection[Any], *, silence_id: int, communities: Sequence[str] | None = None) -> Silence | None:
    """One silence (None if unknown, or outside the given communities)."""
    params = {"id": silence_id, "communities": None if communities is None else list(communities)}
    with conn.cursor(row_factory=class_row(Silence)) as cur:
        return cur.execute(SELECT_SILENCE, params).fetchone()


def end_silence(conn: Connection[Any], *, silence_id: int, now: datetime) -> bool:
    """End a silence now (False if there is none, or it is over already)."""
    return conn.execute(END_SILENCE, {"now": now, "id": silence_id}).rowcount > 0


SELECT_GATEWAY_OFFLINE = """
SELECT EXISTS (SELECT 1 FROM alarm WHERE device_id = %(gw)s AND type = ANY(%(types)s) AND active
               AND closed_at IS NULL)
    OR EXISTS (SELECT 1 FROM device_state WHERE device_id = %(gw)s AND online IS FALSE)
"""


def gateway_offline(conn: Connection[Any], *, gateway_id: str, offline_types: Sequence[str]) -> bool:
    """Whether a gateway is offline (an active offline alarm, or its last status said so)."""
    row = conn.execute(SELECT_GATEWAY_OFFLINE, {"gw": gateway_id, "types": list(offline_types)}).fetchone()
    return bool(row and row[0])


SELECT_TREND = """
SELECT v FROM (
    SELECT CASE %(field)s WHEN 'gas_lel' THEN gas_lel WHEN 'co_ppm' THEN co_ppm WHEN 'smoke_db_m' THEN smoke_db_m
           WHEN 'temp_c' THEN temp_c WHEN 'current_a' THEN current_a WHEN 'power_w' THEN power_w
           WHEN 'battery_pct' THEN battery_pct END AS v, ts
    FROM reading WHERE device_id = %(device)s AND ts > %(since)s ORDER BY ts DESC LIMIT 20
) r WHERE v IS NOT NULL ORDER BY ts DESC LIMIT 3
"""


def get_recent_values(conn: Connection[Any], *, device_id: str, field_name: str, since: datetime) -> list[float]:
    """The device's latest values of one measurement, newest first (for the trend in a message)."""
    rows = conn.execute(SELECT_TREND, {"field": field_name, "device": device_id, "since": since}).fetchall()
    return [float(r[0]) for r in rows]


# --- notifications ------------------------------------------------------------------------------------------

INSERT_NOTIFICATION = """
INSERT INTO notification (outbox_id, alarm_id, worker_id, merchant_id, step, kind, tier, locale, site_id,
                          immediate, alarm_ids, title, body, status, reason, next_attempt_at, created_at)
VALUES (%(outbox_id)s, %(alarm_id)s, %(worker_id)s, %(merchant_id)s, %(step)s, %(kind)s, %(tier)s, %(locale)s,
        %(site_id)s, %(immediate)s, ARRAY[%(alarm_id)s]::bigint[], %(title)s, %(body)s, %(status)s, %(reason)s,
        %(next_at)s, %(now)s)
ON CONFLICT DO NOTHING
RETURNING id
"""


def insert_notification(
    conn: Connection[Any],
    *,
    outbox_id: int,
    alarm_id: int,
    worker_id: str | None,
    merchant_id: str | None,
    step: int,
    kind: str,
    tier: str,
    locale: str,
    site_id: str,
    immediate: bool,
    title: str,
    body: str,
    status: str,
    reason: str | None,
    next_at: datetime,
    now: datetime,
) -> int | None:
    """One message for one (transition, recipient); a second insert for the same pair is a no-op (None)."""
    row = conn.execute(
        INSERT_NOTIFICATION,
        {
            "outbox_id": outbox_id,
            "alarm_id": alarm_id,
            "worker_id": worker_id,
            "merchant_id": merchant_id,
            "step": step,
            "kind": kind,
            "tier": tier,
            "locale": locale,
            "site_id": site_id,
            "immediate": immediate,
            "title": title,
            "body": body,
            "status": status,
            "reason": reason,
            "next_at": next_at,
            "now": now,
        },
    ).fetchone()
    return int(row[0]) if row else None


FIND_OPEN_GROUP = """
SELECT id, created_at FROM notification
WHERE site_id = %(site)s AND NOT immediate AND status = 'pending' AND attempts = 0
  AND worker_id IS NOT DISTINCT FROM %(worker)s AND merchant_id IS NOT DISTINCT FROM %(merchant)s
  AND next_attempt_at > %(now)s
ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
EXTEND_GROUP = """
UPDATE notification SET alarm_ids = CASE WHEN %(alarm)s = ANY(alarm_ids) THEN alarm_ids
                                         ELSE alarm_ids || %(alarm)s::bigint END,
    next_attempt_at = CASE WHEN %(alarm)s = ANY(alarm_ids) THEN next_attempt_at ELSE %(next_at)s END,
    step = greatest(step, %(step)s)
WHERE id = %(id)s
"""


def find_open_group(
    conn: Connection[Any], *, site_id: str, worker_id: str | None, merchant_id: str | None, now: datetime
) -> tuple[int, datetime] | None:
    """A held message for this site and recipient still waiting for more alarms (locked), or None."""
    row = conn.execute(
        FIND_OPEN_GROUP, {"site": site_id, "worker": worker_id, "merchant": merchant_id, "now": now}
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def extend_group(conn: Connection[Any], *, notification_id: int, alarm_id: int, step: int, next_at: datetime) -> None:
    """Fold another alarm into a held message and move its send time."""
    conn.execute(EXTEND_GROUP, {"id": notification_id, "alarm": alarm_id, "step": step, "next_at": next_at})


CLAIM_DUE = """
SELECT n.id, n.alarm_id, n.worker_id, n.merchant_id, n.kind, n.tier, n.step, n.locale, n.immediate, n.alarm_ids,
       n.attempts, n.title, n.body, coalesce(w.notify_urls, m.notify_urls, '{}') AS notify_urls,
       a.acknowledged AS alarm_acknowledged, a.closed_at IS NOT NULL AS alarm_closed
FROM notification n LEFT JOIN worker w ON w.id = n.worker_id LEFT JOIN merchant m ON m.id = n.merchant_id
JOIN alarm a ON a.id = n.alarm_id
WHERE n.status = 'pending' AND n.next_attempt_at <= %(now)s AND (n.claimed_until IS NULL OR n.claimed_until <= %(now)s)
  AND (n.immediate OR NOT %(immediate_only)s)
ORDER BY n.immediate DESC, a.severity DESC, n.next_attempt_at, n.id LIMIT %(limit)s
FOR UPDATE OF n SKIP LOCKED
"""
LEASE = "UPDATE notification SET claimed_until = %s WHERE id = ANY(%s)"
SELECT_CLAIMS = "SELECT id, status, claimed_until FROM notification WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
RELEASE = "UPDATE notification SET claimed_until = NULL WHERE id = ANY(%s)"


def claim_due(
    conn: Connection[Any], *, now: datetime, limit: int, immediate_only: bool = False
) -> list[DueNotification]:
    """Lock notifications due for (re)delivery and not leased by another deliverer; other processes skip them.
    Immediate (life-safety, critical) ones first, the most severe first; with immediate_only, nothing else."""
    with conn.cursor(row_factory=class_row(DueNotification)) as cur:
        return cur.execute(CLAIM_DUE, {"now": now, "limit": limit, "immediate_only": immediate_only}).fetchall()


def lease(conn: Connection[Any], *, notification_ids: Sequence[int], until: datetime) -> None:
    """Claim notifications for one delivery until `until` (the claim's token: no one else sends them before)."""
    conn.execute(LEASE, (until, list(notification_ids)))


def lock_claims(conn: Connection[Any], *, notification_ids: Sequence[int]) -> dict[int, tuple[str, datetime | None]]:
    """id -> (status, claimed_until) of these notifications, locked, after their delivery."""
    rows = conn.execute(SELECT_CLAIMS, (list(notification_ids),)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def release(conn: Connection[Any], *, notification_ids: Sequence[int]) -> None:
    """End the claims on these notifications."""
    conn.execute(RELEASE, (list(notification_ids),))


INSERT_ATTEMPT = """
INSERT INTO delivery_attempt (notification_id, at, channel, ok, detail) VALUES (%s, %s, %s, %s, %s)
"""
MARK_SENT = """
UPDATE notification SET status = 'sent', attempts = attempts + 1, sent_at = %s, last_error = NULL, title = %s,
    body = %s
WHERE id = %s
"""
MARK_RETRY = """
UPDATE notification SET attempts = attempts + 1, next_attempt_at = %s, last_error = %s,
    status = CASE WHEN attempts + 1 >= %s THEN 'failed' ELSE 'pending' END
WHERE id = %s
"""
MARK_SUPPRESSED = "UPDATE notification SET status = 'suppressed', reason = %s WHERE id = %s"


def record_attempt(
    conn: Connection[Any], *, notification_id: int, at: datetime, channel: str, ok: bool, detail: str
) -> None:
    """One try on one channel, with apprise's answer."""
    conn.execute(INSERT_ATTEMPT, (notification_id, at, channel, ok, detail))


def mark_sent(conn: Connection[Any], *, notification_id: int, at: datetime, title: str, body: str) -> None:
    """Delivered on at least one channel (with the text that went out)."""
    conn.execute(MARK_SENT, (at, title, body, notification_id))


def mark_retry(
    conn: Connection[Any], *, notification_id: int, next_at: datetime, error: str, max_attempts: int
) -> None:
    """Schedule another try, or give up after max_attempts (status failed)."""
    conn.execute(MARK_RETRY, (next_at, error, max_attempts, notification_id))


def mark_suppressed(conn: Connection[Any], *, notification_id: int, reason: str) -> None:
    """Not to be sent after all (acknowledged meanwhile, silenced, inhibited)."""
    conn.execute(MARK_SUPPRESSED, (reason, notification_id))


SELECT_STEP_REACH = """
SELECT count(*) FILTER (WHERE status = 'sent') AS reached,
       count(*) FILTER (WHERE status = 'pending' AND attempts = 0) AS untried
FROM notification
WHERE alarm_ids @> ARRAY[%s]::bigint[] AND step = %s AND kind = ANY(%s) AND tier <> 'merchant'
  AND status <> 'suppressed'
"""


def get_step_reach(conn: Connection[Any], *, alarm_id: int, step: int, kinds: Sequence[str]) -> tuple[int, int]:
    """(recipients of a ladder step reached, recipients not tried yet)."""
    row = conn.execute(SELECT_STEP_REACH, (alarm_id, step, list(kinds))).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0]), int(row[1])


# --- escalation ladder --------------------------------------------------------------------------------------

START_ESCALATION = """
INSERT INTO escalation (alarm_id, severity, start_step, step, started_at, next_step_at, reminders,
                        next_reminder_at, renotify_at, stopped_at, stop_reason, updated_at)
VALUES (%(alarm)s, %(severity)s, %(start_step)s, %(start_step)s, %(now)s, %(next_step_at)s, 0,
        %(next_reminder_at)s, NULL, NULL, NULL, %(now)s)
ON CONFLICT (alarm_id) DO UPDATE SET severity = EXCLUDED.severity, start_step = EXCLUDED.start_step,
    step = EXCLUDED.step, started_at = EXCLUDED.started_at, next_step_at = EXCLUDED.next_step_at, reminders = 0,
    next_reminder_at = EXCLUDED.next_reminder_at, renotify_at = NULL, stopped_at = NULL, stop_reason = NULL,
    updated_at = EXCLUDED.updated_at
"""
ESCALATION_COLUMNS = """e.alarm_id, e.severity, e.start_step, e.step, e.started_at, e.next_step_at, e.reminders,
    e.next_reminder_at, e.renotify_at, e.stopped_at, e.stop_reason, a.type AS alarm_type, a.active,
    a.acknowledged, a.closed_at IS NOT NULL AS closed, s.flags AS site_flags"""
SELECT_ESCALATION = f"""
SELECT {ESCALATION_COLUMNS} FROM escalation e JOIN alarm a ON a.id = e.alarm_id JOIN site s ON s.id = a.site_id
WHERE e.alarm_id = %s FOR UPDATE OF e
"""
CLAIM_DUE_ESCALATIONS = f"""
SELECT {ESCALATION_COLUMNS} FROM escalation e JOIN alarm a ON a.id = e.alarm_id JOIN site s ON s.id = a.site_id
WHERE e.stopped_at IS NULL AND least(e.next_step_at, e.next_reminder_at, e.renotify_at) <= %s
ORDER BY least(e.next_step_at, e.next_reminder_at, e.renotify_at) LIMIT %s
FOR UPDATE OF e SKIP LOCKED
"""
UPDATE_ESCALATION = """
UPDATE escalation SET severity = %(severity)s, step = %(step)s, next_step_at = %(next_step_at)s,
    reminders = %(reminders)s, next_reminder_at = %(next_reminder_at)s, renotify_at = %(renotify_at)s,
    stopped_at = %(stopped_at)s, stop_reason = %(stop_reason)s, updated_at = %(now)s
WHERE alarm_id = %(alarm_id)s
"""
MOVE_ON_NOW = """
UPDATE escalation SET next_step_at = %(now)s, updated_at = %(now)s
WHERE alarm_id = %(alarm)s AND step = %(step)s AND stopped_at IS NULL AND next_step_at > %(now)s
"""


def start_escalation(
    conn: Connection[Any],
    *,
    alarm_id: int,
    severity: int,
    start_step: int,
    now: datetime,
    next_step_at: datetime | None,
    next_reminder_at: datetime | None,
) -> None:
    """Begin (or restart, on reactivation) an alarm's ladder."""
    conn.execute(
        START_ESCALATION,
        {
            "alarm": alarm_id,
            "severity": severity,
            "start_step": start_step,
            "now": now,
            "next_step_at": next_step_at,
            "next_reminder_at": next_reminder_at,
        },
    )


def lock_escalation(conn: Connection[Any], *, alarm_id: int) -> Escalation | None:
    """An alarm's ladder, locked, with the alarm's current state."""
    with conn.cursor(row_factory=class_row(Escalation)) as cur:
        return cur.execute(SELECT_ESCALATION, (alarm_id,)).fetchone()


def claim_due_escalations(conn: Connection[Any], *, now: datetime, limit: int) -> list[Escalation]:
    """Ladders with a deadline passed; other notify processes skip the locked ones."""
    with conn.cursor(row_factory=class_row(Escalation)) as cur:
        return cur.execute(CLAIM_DUE_ESCALATIONS, (now, limit)).fetchall()


def update_escalation(conn: Connection[Any], *, esc: Escalation, now: datetime) -> None:
    """Write back a ladder's step and deadlines."""
    conn.execute(
        UPDATE_ESCALATION,
        {
            "alarm_id": esc.alarm_id,
            "severity": esc.severity,
            "step": esc.step,
            "next_step_at": esc.next_step_at,
            "reminders": esc.reminders,
            "next_reminder_at": esc.next_reminder_at,
            "renotify_at": esc.renotify_at,
            "stopped_at": esc.stopped_at,
            "stop_reason": esc.stop_reason,
            "now": now,
        },
    )


def move_on_now(conn: Connection[Any], *, alarm_id: int, step: int, now: datetime) -> bool:
    """Nobody of the current step could be reached: the next step is due now."""
    return conn.execute(MOVE_ON_NOW, {"alarm": alarm_id, "step": step, "now": now}).rowcount > 0


SELECT_NEXT_DELIVERY = "SELECT min(next_attempt_at) FROM notification WHERE status = 'pending'"
SELECT_NEXT_ESCALATION = """
SELECT min(least(next_step_at, next_reminder_at, renotify_at)) FROM escalation WHERE stopped_at IS NULL
"""


def get_next_delivery_due(conn: Connection[Any]) -> datetime | None:
    """The earliest pending delivery (a retry, a held group); deliverers sleep until then at most."""
    row = conn.execute(SELECT_NEXT_DELIVERY).fetchone()
    return row[0] if row else None


def get_next_escalation_due(conn: Connection[Any]) -> datetime | None:
    """The earliest ladder deadline; the router sleeps until then at most."""
    row = conn.execute(SELECT_NEXT_ESCALATION).fetchone()
    return row[0] if row else None


SELECT_SITE_OR_DEVICE = """
SELECT (SELECT count(*) FROM site WHERE id = %s) + (SELECT count(*) FROM device WHERE id = %s)
"""


def site_or_device_exists(conn: Connection[Any], *, site_id: str | None, device_id: str | None) -> bool:
    """Whether the site (or device) a silence names is registered."""
    row = conn.execute(SELECT_SITE_OR_DEVICE, (site_id, device_id)).fetchone()
    return bool(row and row[0])
