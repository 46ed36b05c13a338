"""SQL of the rules stage: device rule state, alarms, alarm events and the notification outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from core.db import OUTBOX_CHANNEL


@dataclass(slots=True)
class DeviceStateRow:
    device_id: str
    last_ts: datetime | None
    last_seq: int | None
    last_seen_at: datetime | None
    online: bool | None
    rules: dict[str, Any]


@dataclass(slots=True)
class AlarmRow:
    id: int
    device_id: str
    site_id: str
    micro_grid_id: str
    type: str
    rule_id: str
    severity: int
    active: bool
    acknowledged: bool
    latching: bool
    raised_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    disposition: str | None
    note: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str
    details: dict[str, Any]


ALARM_COLUMNS = """id, device_id, site_id, micro_grid_id, type, rule_id, severity, active, acknowledged, latching,
    raised_at, last_seen_at, cleared_at, acknowledged_at, acknowledged_by, closed_at, closed_by, disposition, note,
    value, peak_value, count, message, details"""

ENSURE_DEVICE_STATES = """
INSERT INTO device_state (device_id) SELECT unnest(%s::text[]) ON CONFLICT (device_id) DO NOTHING
"""
LOCK_DEVICE_STATES = """
SELECT device_id, last_ts, last_seq, last_seen_at, online, rules FROM device_state
WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE
"""


def lock_device_states(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, DeviceStateRow]:
    """Lock (in id order, so two processes cannot deadlock) and return the devices' rule state."""
    ids = sorted(set(device_ids))
    with conn.cursor(row_factory=class_row(DeviceStateRow)) as cur:
        cur.execute(ENSURE_DEVICE_STATES, (ids,))
        cur.execute(LOCK_DEVICE_STATES, (ids,))
        return {row.device_id: row for row in cur.fetchall()}


SAVE_DEVICE_STATES = """
UPDATE device_state d SET last_ts = v.last_ts, last_seq = v.last_seq, last_seen_at = v.last_seen_at,
    rules = v.rules
FROM unnest(%s::text[], %s::timestamptz[], %s::bigint[], %s::timestamptz[], %s::jsonb[])
    AS v(device_id, last_ts, last_seq, last_seen_at, rules)
WHERE d.device_id = v.device_id
"""


def save_device_states(conn: Connection[Any], *, states: Sequence[DeviceStateRow]) -> None:
    """Write back the states taken by lock_device_states, in one statement."""
    if not states:
        return
    conn.execute(SAVE_DEVICE_STATES, (
        [s.device_id for s in states], [s.last_ts for s in states], [s.last_seq for s in states],
        [s.last_seen_at for s in states], [Jsonb(s.rules) for s in states],
    ))


SET_DEVICE_ONLINE = """
UPDATE device_state SET online = %s, status_at = %s WHERE device_id = %s
"""


def set_device_online(conn: Connection[Any], *, device_id: str, online: bool, at: datetime) -> None:
    """Record a device's reported availability."""
    conn.execute(SET_DEVICE_ONLINE, (online, at, device_id))


SELECT_OPEN_ALARM = f"""
SELECT {ALARM_COLUMNS} FROM alarm WHERE device_id = %s AND type = %s AND closed_at IS NULL FOR UPDATE
"""
INSERT_ALARM = f"""
INSERT INTO alarm (device_id, site_id, micro_grid_id, type, rule_id, severity, latching, raised_at, last_seen_at,
                   value, peak_value, message, details)
SELECT %(device_id)s, s.id, s.micro_grid_id, %(type)s, %(rule_id)s, %(severity)s, %(latching)s, %(at)s, %(at)s,
       %(value)s, %(value)s, %(message)s, %(details)s
FROM site s WHERE s.id = %(site_id)s
RETURNING {ALARM_COLUMNS}
"""
UPDATE_ALARM_SEEN = f"""
UPDATE alarm SET last_seen_at = greatest(last_seen_at, %(at)s), count = count + 1, value = %(value)s,
    peak_value = CASE WHEN %(value)s::float8 IS NULL THEN peak_value
                      ELSE greatest(coalesce(peak_value, %(value)s), %(value)s) END,
    severity = greatest(severity, %(severity)s), active = true,
    cleared_at = CASE WHEN active THEN cleared_at ELSE NULL END, updated_at = now()
WHERE id = %(id)s
RETURNING {ALARM_COLUMNS}
"""
CLEAR_ALARM = f"""
UPDATE alarm SET active = false, cleared_at = %(at)s, updated_at = now() WHERE id = %(id)s
RETURNING {ALARM_COLUMNS}
"""


def get_open_alarm(conn: Connection[Any], *, device_id: str, alarm_type: str) -> AlarmRow | None:
    """The open alarm of this type on this device, locked."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        return cur.execute(SELECT_OPEN_ALARM, (device_id, alarm_type)).fetchone()


def insert_alarm(conn: Connection[Any], *, device_id: str, site_id: str, alarm_type: str, rule_id: str,
                 severity: int, latching: bool, at: datetime, value: float | None, message: str,
                 details: dict[str, Any]) -> AlarmRow:
    """Open a new alarm; the partial unique index refuses a second open one."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        row = cur.execute(INSERT_ALARM, {
            "device_id": device_id, "site_id": site_id, "type": alarm_type, "rule_id": rule_id,
            "severity": severity, "latching": latching, "at": at, "value": value, "message": message,
            "details": Jsonb(details),
        }).fetchone()
    if row is None:
        raise LookupError(f"site {site_id!r} of device {device_id!r} does not exist")
    return row


def touch_alarm(conn: Connection[Any], *, alarm_id: int, at: datetime, value: float | None,
                severity: int) -> AlarmRow:
    """A repeat of an open alarm: last seen, count, peak, severity (only up), active again."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        row = cur.execute(UPDATE_ALARM_SEEN, {"id": alarm_id, "at": at, "value": value,
                                              "severity": severity}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


def clear_alarm(conn: Connection[Any], *, alarm_id: int, at: datetime) -> AlarmRow:
    """Mark an alarm's condition as gone (it stays open until resolved)."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        row = cur.execute(CLEAR_ALARM, {"id": alarm_id, "at": at}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


SELECT_ALARM_FOR_UPDATE = f"SELECT {ALARM_COLUMNS} FROM alarm WHERE id = %s FOR UPDATE"
ACK_ALARM = f"""
UPDATE alarm SET acknowledged = true, acknowledged_at = %(at)s, acknowledged_by = %(actor)s, updated_at = now()
WHERE id = %(id)s RETURNING {ALARM_COLUMNS}
"""
CLOSE_ALARM = f"""
UPDATE alarm SET closed_at = %(at)s, closed_by = %(actor)s, disposition = %(disposition)s, note = %(note)s,
    acknowledged = true, acknowledged_at = coalesce(acknowledged_at, %(at)s),
    acknowledged_by = coalesce(acknowledged_by, %(actor)s), updated_at = now()
WHERE id = %(id)s RETURNING {ALARM_COLUMNS}
"""


def lock_alarm(conn: Connection[Any], *, alarm_id: int) -> AlarmRow | None:
    """One alarm by id, locked."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        return cur.execute(SELECT_ALARM_FOR_UPDATE, (alarm_id,)).fetchone()


def acknowledge_alarm(conn: Connection[Any], *, alarm_id: int, actor: str, at: datetime) -> AlarmRow:
    """Record who acknowledged and when."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        row = cur.execute(ACK_ALARM, {"id": alarm_id, "actor": actor, "at": at}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


def close_alarm(conn: Connection[Any], *, alarm_id: int, actor: str, at: datetime, disposition: str,
                note: str | None) -> AlarmRow:
    """Resolve: close the alarm with a disposition."""
    with conn.cursor(row_factory=class_row(AlarmRow)) as cur:
        row = cur.execute(CLOSE_ALARM, {"id": alarm_id, "actor": actor, "at": at, "disposition": disposition,
                                        "note": note}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


INSERT_EVENT = """
INSERT INTO alarm_event (alarm_id, at, kind, actor, severity, details) VALUES (%s, %s, %s, %s, %s, %s)
RETURNING id
"""
INSERT_OUTBOX = """
INSERT INTO outbox (alarm_id, event_id, kind, severity) VALUES (%s, %s, %s, %s) RETURNING id
"""
NOTIFY_OUTBOX = f"NOTIFY {OUTBOX_CHANNEL}"


def insert_event(conn: Connection[Any], *, alarm_id: int, kind: str, at: datetime, actor: str | None = None,
                 severity: int | None = None, details: dict[str, Any] | None = None) -> int:
    """Append to an alarm's history."""
    row = conn.execute(INSERT_EVENT, (alarm_id, at, kind, actor, severity, Jsonb(details or {}))).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0] if isinstance(row, tuple) else row["id"])


def insert_outbox(conn: Connection[Any], *, alarm_id: int, event_id: int, kind: str, severity: int) -> None:
    """Queue a transition for notify; NOTIFY wakes it when the transaction commits."""
    conn.execute(INSERT_OUTBOX, (alarm_id, event_id, kind, severity))
    conn.execute(NOTIFY_OUTBOX)
