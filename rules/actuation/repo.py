"""SQL of actuation: the commands rules send to devices (close a valve, cut a port) and the port lockout (EB-10).

One writer: everything that changes `command` or `port_lock` goes through rules.actuation.service.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection
from psycopg.rows import class_row, tuple_row


def _one(conn: Connection[Any], query: str, params: Any) -> tuple[Any, ...] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


# --------------------------------------------------------------------------- commands (actuation)


@dataclass(slots=True)
class CommandRow:
    id: str
    device_id: str
    action: str
    alarm_id: int | None
    reason: str
    requested_by: str | None
    status: str
    created_at: datetime
    deadline_at: datetime
    sent_at: datetime | None
    done_at: datetime | None
    confirmed_by: str | None
    detail: str
    retry_of: str | None = None  # GAS-05: the command this one repeats


COMMAND_COLUMNS = """id, device_id, action, alarm_id, reason, requested_by, status, created_at, deadline_at, sent_at,
    done_at, confirmed_by, detail, retry_of"""
INSERT_COMMAND = f"""
INSERT INTO command (id, device_id, action, alarm_id, reason, requested_by, status, created_at, deadline_at,
                     done_at, detail, retry_of)
VALUES (%(id)s, %(device_id)s, %(action)s, %(alarm_id)s, %(reason)s, %(requested_by)s, %(status)s, %(at)s,
        %(deadline)s, CASE WHEN %(status)s IN ('refused', 'failed') THEN %(at)s::timestamptz END, %(detail)s,
        %(retry_of)s)
RETURNING {COMMAND_COLUMNS}
"""


def insert_command(
    conn: Connection[Any],
    *,
    command_id: str,
    device_id: str,
    action: str,
    alarm_id: int | None,
    reason: str,
    requested_by: str | None,
    status: str,
    at: datetime,
    deadline: datetime,
    detail: str = "",
    retry_of: str | None = None,
) -> CommandRow:
    """Queue a command (published by ingest's actuator after this transaction commits)."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        row = cur.execute(
            INSERT_COMMAND,
            {
                "id": command_id,
                "device_id": device_id,
                "action": action,
                "alarm_id": alarm_id,
                "reason": reason,
                "requested_by": requested_by,
                "status": status,
                "at": at,
                "deadline": deadline,
                "detail": detail,
                "retry_of": retry_of,
            },
        ).fetchone()
    assert row is not None  # noqa: S101
    return row


CONFIRM_BY_STATE = f"""
UPDATE command c SET status = 'confirmed', done_at = %(at)s, confirmed_by = 'reading'
FROM jsonb_to_recordset(%(pairs)s::jsonb) AS v(device_id text, action text)
WHERE c.device_id = v.device_id AND c.action = v.action AND c.status IN ('pending', 'sent')
RETURNING {", ".join("c." + c.strip() for c in COMMAND_COLUMNS.split(","))}
"""


def confirm_commands_by_state(
    conn: Connection[Any], *, pairs: Sequence[tuple[str, str]], at: datetime
) -> list[CommandRow]:
    """Readings that show the commanded state (valve closed, relay off) confirm open commands."""
    if not pairs:
        return []
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        doc = orjson.dumps([{"device_id": d, "action": a} for d, a in pairs]).decode()
        return cur.execute(CONFIRM_BY_STATE, {"pairs": doc, "at": at}).fetchall()


ACK_COMMAND = f"""
UPDATE command SET status = CASE WHEN %(ok)s THEN 'confirmed' ELSE 'failed' END, done_at = %(at)s,
    confirmed_by = 'ack', detail = %(detail)s
WHERE id = %(id)s AND device_id = %(device_id)s AND status IN ('pending', 'sent')
RETURNING {COMMAND_COLUMNS}
"""


def ack_command(
    conn: Connection[Any], *, command_id: str, device_id: str, ok: bool, detail: str, at: datetime
) -> CommandRow | None:
    """A device's cmd/ack: confirmed or failed (None when unknown or already settled)."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        return cur.execute(
            ACK_COMMAND, {"id": command_id, "device_id": device_id, "ok": ok, "detail": detail, "at": at}
        ).fetchone()


EXPIRE_COMMANDS = f"""
UPDATE command SET status = 'failed', done_at = %(now)s, detail = 'no confirmation before the deadline'
WHERE id IN (SELECT id FROM command WHERE status IN ('pending', 'sent') AND deadline_at <= %(now)s
             ORDER BY deadline_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING {COMMAND_COLUMNS}
"""


def expire_commands(conn: Connection[Any], *, now: datetime, limit: int = 500) -> list[CommandRow]:
    """Commands past their deadline without confirmation become failed (several timers: SKIP LOCKED)."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        return cur.execute(EXPIRE_COMMANDS, {"now": now, "limit": limit}).fetchall()


CLAIM_PENDING = f"""
SELECT {COMMAND_COLUMNS} FROM command WHERE status = 'pending' ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED
"""
MARK_SENT = "UPDATE command SET status = 'sent', sent_at = %s WHERE id = ANY(%s) AND status = 'pending'"


def claim_pending_commands(conn: Connection[Any], *, limit: int = 100) -> list[CommandRow]:
    """Pending commands for this publisher (locked until its transaction ends; others skip them)."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        return cur.execute(CLAIM_PENDING, (limit,)).fetchall()


def mark_commands_sent(conn: Connection[Any], *, ids: Sequence[str], at: datetime) -> None:
    """Published to the broker (QoS 1 PUBACK received)."""
    conn.execute(MARK_SENT, (at, list(ids)))


SELECT_COMMANDS = f"SELECT {COMMAND_COLUMNS} FROM command WHERE device_id = %s ORDER BY created_at, id"


def get_commands(conn: Connection[Any], *, device_id: str) -> list[CommandRow]:
    """A device's commands, oldest first."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        return cur.execute(SELECT_COMMANDS, (device_id,)).fetchall()


# --------------------------------------------------------------------------- port lockout (EB-10)

INSERT_LOCK = """
INSERT INTO port_lock (device_id, alarm_id, reason, locked_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (device_id) WHERE cleared_at IS NULL DO NOTHING
"""
SELECT_LOCK = "SELECT id, reason, locked_at FROM port_lock WHERE device_id = %s AND cleared_at IS NULL"
CLEAR_LOCK = """
UPDATE port_lock SET cleared_at = %s, cleared_by = %s, note = %s WHERE device_id = %s AND cleared_at IS NULL
RETURNING id
"""


def lock_port(conn: Connection[Any], *, device_id: str, alarm_id: int | None, reason: str, at: datetime) -> None:
    """Lock a port after a safety trip (idempotent while locked)."""
    conn.execute(INSERT_LOCK, (device_id, alarm_id, reason, at))


def get_port_lock(conn: Connection[Any], *, device_id: str) -> tuple[int, str, datetime] | None:
    """The active lock of a port: (id, reason, locked_at)."""
    row = _one(conn, SELECT_LOCK, (device_id,))
    return None if row is None else (int(row[0]), str(row[1]), row[2])


def clear_port_lock(conn: Connection[Any], *, device_id: str, actor: str, note: str | None, at: datetime) -> bool:
    """A worker cleared the port on site."""
    return _one(conn, CLEAR_LOCK, (at, actor, note, device_id)) is not None


SELECT_RECENT_COMMAND = """
SELECT id FROM command
WHERE device_id = %(device_id)s AND action = %(action)s AND status IN ('sent', 'confirmed')
  AND coalesce(done_at, sent_at) >= %(since)s
ORDER BY coalesce(done_at, sent_at) DESC LIMIT 1
"""


def recent_command(conn: Connection[Any], *, device_id: str, action: str, since: datetime) -> str | None:
    """The newest command of this action delivered to (or confirmed by) the device since `since`."""
    row = _one(conn, SELECT_RECENT_COMMAND, {"device_id": device_id, "action": action, "since": since})
    return None if row is None else str(row[0])


FAIL_COMMAND = f"""
UPDATE command SET status = 'failed', done_at = %(at)s, detail = %(detail)s
WHERE id = %(id)s AND status = 'pending'
RETURNING {COMMAND_COLUMNS}
"""


def fail_command(conn: Connection[Any], *, command_id: str, detail: str, at: datetime) -> CommandRow | None:
    """Mark a pending command failed with the reason (None if it was no longer pending)."""
    with conn.cursor(row_factory=class_row(CommandRow)) as cur:
        return cur.execute(FAIL_COMMAND, {"id": command_id, "detail": detail, "at": at}).fetchone()
