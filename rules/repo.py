"""SQL of the rules stage: device rule state, alarms, alarm events and the notification outbox."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection
from psycopg.rows import class_row, tuple_row
from psycopg.types.json import Jsonb

from core import repo as core_repo
from core.db import OUTBOX_CHANNEL, RESOLVED_CHANNEL
from core.domain import Alarm


@dataclass(slots=True)
class DeviceStateRow:
    device_id: str
    last_ts: datetime | None
    last_seq: int | None
    last_seen_at: datetime | None
    online: bool | None
    rules: dict[str, Any]
    open_commands: bool = False  # a command to this device awaits confirmation (read with the lock, not saved)


ALARM_COLUMNS = core_repo.alarm_columns()


def _one(conn: Connection[Any], query: str, params: Any) -> tuple[Any, ...] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def _all(conn: Connection[Any], query: str, params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()


# Ids and states travel as one JSON document each (orjson): psycopg's text[]/jsonb[] array dumping escapes
# every element with a regex, which cost more than the whole rule evaluation on the ingest hot path.
ENSURE_DEVICE_STATES = """
INSERT INTO device_state (device_id) SELECT jsonb_array_elements_text(%s::jsonb) ON CONFLICT (device_id) DO NOTHING
"""
# open_commands: whether a reading of the device can confirm a command (partial index command_device_open).
STATE_COLUMNS = """device_id, last_ts, last_seq, last_seen_at, online, rules::text,
    EXISTS (SELECT 1 FROM command c WHERE c.device_id = device_state.device_id AND c.status IN ('pending', 'sent'))"""
LOCK_DEVICE_STATES = f"""
SELECT {STATE_COLUMNS} FROM device_state
WHERE device_id IN (SELECT jsonb_array_elements_text(%s::jsonb)) ORDER BY device_id FOR UPDATE OF device_state
"""
# The same for ids without a comma (every registry id: core.registry.Id): a comma-joined text split on the server
# is one index scan over the sorted keys, where the jsonb set is a nested loop of lookups (docs/scaling.md).
LOCK_DEVICE_STATES_CSV = f"""
SELECT {STATE_COLUMNS} FROM device_state
WHERE device_id = ANY(string_to_array(%s, ',')) ORDER BY device_id FOR UPDATE OF device_state
"""


def _ids_json(ids: Sequence[str]) -> str:
    return orjson.dumps(list(ids)).decode()


def _state_rows(rows: Sequence[tuple[Any, ...]]) -> dict[str, DeviceStateRow]:
    return {
        r[0]: DeviceStateRow(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5]), len(r) > 6 and bool(r[6])) for r in rows
    }


def _lock_states(conn: Connection[Any], ids: Sequence[str]) -> dict[str, DeviceStateRow]:
    if any("," in i for i in ids):
        return _state_rows(_all(conn, LOCK_DEVICE_STATES, (_ids_json(ids),)))
    return _state_rows(_all(conn, LOCK_DEVICE_STATES_CSV, (",".join(ids),)))


def lock_device_states(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, DeviceStateRow]:
    """Lock (in id order, so two processes cannot deadlock) and return the devices' rule state."""
    ids = sorted(set(device_ids))
    found = _lock_states(conn, ids)
    missing = [i for i in ids if i not in found]
    if missing:  # first message of a device: create its state row, then lock it too
        conn.execute(ENSURE_DEVICE_STATES, (_ids_json(missing),))
        found.update(_lock_states(conn, missing))
    return found


SAVE_DEVICE_STATES = """
UPDATE device_state d SET last_ts = v.last_ts, last_seq = v.last_seq, last_seen_at = v.last_seen_at,
    rules = v.rules
FROM jsonb_to_recordset(%s::jsonb)
    AS v(device_id text, last_ts timestamptz, last_seq bigint, last_seen_at timestamptz, rules jsonb)
WHERE d.device_id = v.device_id
"""


def save_device_states(conn: Connection[Any], *, states: Sequence[DeviceStateRow]) -> None:
    """Write back the states taken by lock_device_states, in one statement."""
    if not states:
        return
    doc = orjson.dumps(
        [
            {
                "device_id": s.device_id,
                "last_ts": s.last_ts,
                "last_seq": s.last_seq,
                "last_seen_at": s.last_seen_at,
                "rules": s.rules,
            }
            for s in states
        ]
    )
    conn.execute(SAVE_DEVICE_STATES, (doc.decode(),))


SET_DEVICES_ONLINE = """
UPDATE device_state d SET online = v.online, status_at = v.at
FROM jsonb_to_recordset(%s::jsonb) AS v(device_id text, online boolean, at timestamptz)
WHERE d.device_id = v.device_id
"""


def set_devices_online(conn: Connection[Any], *, statuses: Sequence[tuple[str, bool, datetime]]) -> None:
    """Record devices' reported availability, (device, online, at) with one row a device, in one statement."""
    if statuses:
        rows = [{"device_id": d, "online": online, "at": at} for d, online, at in statuses]
        conn.execute(SET_DEVICES_ONLINE, (_json_rows(rows),))


SELECT_OPEN_ALARM_ACTIVE = "SELECT active FROM alarm WHERE device_id = %s AND type = %s AND closed_at IS NULL"


def open_alarm_active(conn: Connection[Any], *, device_id: str, alarm_type: str) -> bool | None:
    """Whether the open alarm of this type on this device is active (None: there is no open alarm)."""
    row = _one(conn, SELECT_OPEN_ALARM_ACTIVE, (device_id, alarm_type))
    return None if row is None else bool(row[0])


SELECT_OPEN_ALARM = f"""
SELECT {ALARM_COLUMNS} FROM alarm WHERE device_id = %s AND type = %s AND closed_at IS NULL FOR NO KEY UPDATE
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
UPDATE alarm SET last_seen_at = greatest(last_seen_at, %(at)s), count = count + %(repeats)s, value = %(value)s,
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


def get_open_alarm(conn: Connection[Any], *, device_id: str, alarm_type: str) -> Alarm | None:
    """The open alarm of this type on this device, locked."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(SELECT_OPEN_ALARM, (device_id, alarm_type)).fetchone()


def insert_alarm(
    conn: Connection[Any],
    *,
    device_id: str,
    site_id: str,
    alarm_type: str,
    rule_id: str,
    severity: int,
    latching: bool,
    at: datetime,
    value: float | None,
    message: str,
    details: dict[str, Any],
) -> Alarm:
    """Open a new alarm; the partial unique index refuses a second open one."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(
            INSERT_ALARM,
            {
                "device_id": device_id,
                "site_id": site_id,
                "type": alarm_type,
                "rule_id": rule_id,
                "severity": severity,
                "latching": latching,
                "at": at,
                "value": value,
                "message": message,
                "details": Jsonb(details),
            },
        ).fetchone()
    if row is None:
        raise LookupError(f"site {site_id!r} of device {device_id!r} does not exist")
    return row


def touch_alarm(
    conn: Connection[Any], *, alarm_id: int, at: datetime, value: float | None, severity: int, repeats: int = 1
) -> Alarm:
    """A repeat of an open alarm: last seen, count, peak, severity (only up), active again."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(
            UPDATE_ALARM_SEEN, {"id": alarm_id, "at": at, "value": value, "severity": severity, "repeats": repeats}
        ).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


def clear_alarm(conn: Connection[Any], *, alarm_id: int, at: datetime) -> Alarm:
    """Mark an alarm's condition as gone (it stays open until resolved)."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(CLEAR_ALARM, {"id": alarm_id, "at": at}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


SELECT_ALARM_FOR_UPDATE = f"SELECT {ALARM_COLUMNS} FROM alarm WHERE id = %s FOR NO KEY UPDATE"
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


def lock_alarm(conn: Connection[Any], *, alarm_id: int) -> Alarm | None:
    """One alarm by id, locked."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(SELECT_ALARM_FOR_UPDATE, (alarm_id,)).fetchone()


def acknowledge_alarm(conn: Connection[Any], *, alarm_id: int, actor: str, at: datetime) -> Alarm:
    """Record who acknowledged and when."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(ACK_ALARM, {"id": alarm_id, "actor": actor, "at": at}).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    return row


def close_alarm(
    conn: Connection[Any], *, alarm_id: int, actor: str, at: datetime, disposition: str, note: str | None
) -> Alarm:
    """Resolve: close the alarm with a disposition."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        row = cur.execute(
            CLOSE_ALARM, {"id": alarm_id, "actor": actor, "at": at, "disposition": disposition, "note": note}
        ).fetchone()
    assert row is not None  # noqa: S101 - the caller holds the row lock
    conn.execute(NOTIFY_RESOLVED)  # delivered at commit: the score part scores verified hazards
    return row


NOTIFY_RESOLVED = f"NOTIFY {RESOLVED_CHANNEL}"
INSERT_EVENT = """
INSERT INTO alarm_event (alarm_id, at, kind, actor, severity, details) VALUES (%s, %s, %s, %s, %s, %s)
RETURNING id
"""
INSERT_OUTBOX = """
INSERT INTO outbox (alarm_id, event_id, kind, severity) VALUES (%s, %s, %s, %s) RETURNING id
"""
# The payload is the transition's severity: notify's router, pausing between batches of an alarm storm's minor rows,
# wakes at once for a severe one (notify.worker). Listeners that do not care ignore it.
NOTIFY_OUTBOX = f"SELECT pg_notify('{OUTBOX_CHANNEL}', %s)"


def insert_event(
    conn: Connection[Any],
    *,
    alarm_id: int,
    kind: str,
    at: datetime,
    actor: str | None = None,
    severity: int | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append to an alarm's history."""
    row = conn.execute(INSERT_EVENT, (alarm_id, at, kind, actor, severity, Jsonb(details or {}))).fetchone()
    assert row is not None  # noqa: S101
    return int(row[0] if isinstance(row, tuple) else row["id"])


def insert_outbox(conn: Connection[Any], *, alarm_id: int, event_id: int, kind: str, severity: int) -> None:
    """Queue a transition for notify; NOTIFY wakes it when the transaction commits."""
    conn.execute(INSERT_OUTBOX, (alarm_id, event_id, kind, severity))
    conn.execute(NOTIFY_OUTBOX, (str(severity),))


# --------------------------------------------------------------------------- a batch's alarms, set-based (rules.batch)

LOCK_OPEN_ALARMS = f"""
SELECT {ALARM_COLUMNS} FROM alarm
WHERE (device_id, type) IN (
    SELECT k.device_id, k.type FROM jsonb_to_recordset(%s::jsonb) AS k(device_id text, type text))
  AND closed_at IS NULL
ORDER BY id FOR NO KEY UPDATE
"""
INSERT_ALARMS = """
INSERT INTO alarm (device_id, site_id, micro_grid_id, type, rule_id, severity, active, latching, raised_at,
                   last_seen_at, cleared_at, value, peak_value, count, message, details)
SELECT v.device_id, s.id, s.micro_grid_id, v.type, v.rule_id, v.severity, v.active, v.latching, v.raised_at,
       v.last_seen_at, v.cleared_at, v.value, v.peak_value, v.count, v.message, v.details
FROM jsonb_to_recordset(%s::jsonb) AS v(n integer, device_id text, site_id text, type text, rule_id text,
     severity smallint, active boolean, latching boolean, raised_at timestamptz, last_seen_at timestamptz,
     cleared_at timestamptz, value float8, peak_value float8, count integer, message text, details jsonb)
JOIN site s ON s.id = v.site_id
ORDER BY v.n
RETURNING id, device_id, type
"""
UPDATE_ALARMS = """
UPDATE alarm a SET severity = v.severity, active = v.active, last_seen_at = v.last_seen_at, cleared_at = v.cleared_at,
    value = v.value, peak_value = v.peak_value, count = v.count, updated_at = now()
FROM jsonb_to_recordset(%s::jsonb) AS v(id bigint, severity smallint, active boolean, last_seen_at timestamptz,
     cleared_at timestamptz, value float8, peak_value float8, count integer)
WHERE a.id = v.id
"""
# Events in the order given (ORDER BY n: the sequence hands out ids in that order), each with its outbox row.
APPEND_EVENTS = """
WITH v AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb)
        AS v(n integer, alarm_id bigint, at timestamptz, kind text, severity smallint, details jsonb)
), ev AS (
    INSERT INTO alarm_event (alarm_id, at, kind, severity, details)
    SELECT alarm_id, at, kind, severity, details FROM v ORDER BY n
    RETURNING id, alarm_id, kind, severity
)
INSERT INTO outbox (alarm_id, event_id, kind, severity) SELECT alarm_id, id, kind, severity FROM ev ORDER BY id
"""


def _json_rows(rows: Sequence[dict[str, Any]]) -> str:
    return orjson.dumps(rows).decode()


def lock_open_alarms(conn: Connection[Any], *, keys: Sequence[tuple[str, str]]) -> list[Alarm]:
    """The open alarms of these (device, type) pairs, locked (in id order: batches never deadlock on them)."""
    doc = _json_rows([{"device_id": d, "type": t} for d, t in keys])
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(LOCK_OPEN_ALARMS, (doc,)).fetchall()


def insert_alarms(conn: Connection[Any], *, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """New alarms in one statement, their ids in the order given (raise order); returns them by (device, type)."""
    if not rows:
        return {}
    doc = _json_rows([{**r, "n": n} for n, r in enumerate(rows)])
    return {(r[1], r[2]): int(r[0]) for r in _all(conn, INSERT_ALARMS, (doc,))}


def update_alarms(conn: Connection[Any], *, rows: Sequence[dict[str, Any]]) -> None:
    """Existing (locked) alarms to the state their transitions left them in, in one statement."""
    if rows:
        conn.execute(UPDATE_ALARMS, (_json_rows(rows),))


def append_events(conn: Connection[Any], *, rows: Sequence[dict[str, Any]]) -> None:
    """Alarm events in order, each with its outbox row, in one statement; NOTIFY wakes notify at commit."""
    if rows:
        conn.execute(APPEND_EVENTS, (_json_rows([{**r, "n": n} for n, r in enumerate(rows)]),))
        conn.execute(NOTIFY_OUTBOX, (str(max(int(r.get("severity") or 0) for r in rows)),))


# --------------------------------------------------------------------------- site context (cross-device rules)

SELECT_CORROBORATING = """
SELECT device_id FROM alarm
WHERE site_id = %(site_id)s AND (device_id <> %(device_id)s OR %(include_self)s) AND type = ANY(%(types)s)
  AND closed_at IS NULL AND active AND last_seen_at >= %(since)s
ORDER BY raised_at LIMIT 1
"""
SELECT_SITE_ALARM_DEVICES = """
SELECT DISTINCT device_id FROM alarm
WHERE site_id = %(site_id)s AND (device_id <> %(device_id)s OR %(include_self)s) AND type = ANY(%(types)s)
  AND closed_at IS NULL AND active AND last_seen_at >= %(since)s
ORDER BY device_id
"""


def find_corroborating_device(
    conn: Connection[Any],
    *,
    site_id: str,
    device_id: str,
    types: Sequence[str],
    since: datetime,
    include_self: bool = False,
) -> str | None:
    """Another device of the site (or this one, with include_self) with one of these alarms active and seen
    since `since`."""
    row = _one(
        conn,
        SELECT_CORROBORATING,
        {
            "site_id": site_id,
            "device_id": device_id,
            "types": list(types),
            "since": since,
            "include_self": include_self,
        },
    )
    return None if row is None else str(row[0])


def site_alarm_devices(
    conn: Connection[Any],
    *,
    site_id: str,
    device_id: str,
    types: Sequence[str],
    since: datetime,
    include_self: bool = False,
) -> list[str]:
    """The site's other devices (or this one too) with one of these alarms active and seen since `since`."""
    return [
        str(r[0])
        for r in _all(
            conn,
            SELECT_SITE_ALARM_DEVICES,
            {
                "site_id": site_id,
                "device_id": device_id,
                "types": list(types),
                "since": since,
                "include_self": include_self,
            },
        )
    ]


SELECT_UNCANCELLED = """
SELECT a.id, a.device_id FROM alarm a
WHERE a.type = ANY(%(types)s) AND a.closed_at IS NULL AND a.active AND a.created_at <= %(before)s
  AND (SELECT max(e.at) FROM alarm_event e WHERE e.alarm_id = a.id AND e.kind IN ('raised', 'reactivated'))
      <= %(before)s
  AND NOT EXISTS (SELECT 1 FROM alarm c WHERE c.device_id = a.device_id AND c.type = %(confirmed)s
                  AND c.closed_at IS NULL AND c.active)
ORDER BY a.id
"""


def uncancelled_alarms(
    conn: Connection[Any], *, types: Sequence[str], before: datetime, confirmed_type: str
) -> list[tuple[int, str]]:
    """SMK-02c: (alarm id, device) of alarms of these types active since before `before` (in event time, and
    recorded before it on the wall clock), never cancelled, on devices without an active confirmed_type alarm."""
    return [
        (int(r[0]), str(r[1]))
        for r in _all(conn, SELECT_UNCANCELLED, {"types": list(types), "before": before, "confirmed": confirmed_type})
    ]


SELECT_SITE_GAS_ALARM = """
SELECT id FROM alarm WHERE site_id = %s AND type = ANY(%s) AND closed_at IS NULL AND active LIMIT 1
"""


def site_has_active_alarm(conn: Connection[Any], *, site_id: str, types: Sequence[str]) -> int | None:
    """The id of an active alarm of one of these types in the site, if any."""
    row = _one(conn, SELECT_SITE_GAS_ALARM, (site_id, list(types)))
    return None if row is None else int(row[0])


SELECT_SITE_DEVICES_OF_KIND = "SELECT id FROM device WHERE site_id = %s AND kind = %s AND active ORDER BY id"


def site_devices_of_kind(conn: Connection[Any], *, site_id: str, kind: str) -> list[str]:
    """Ids of the site's devices of one kind (e.g. its gas valves)."""
    return [str(r[0]) for r in _all(conn, SELECT_SITE_DEVICES_OF_KIND, (site_id, kind))]


# --------------------------------------------------------------------------- timer


@dataclass(slots=True)
class SeenRow:
    device_id: str
    last_seen_at: datetime | None
    online: bool | None
    status_at: datetime | None
    timer_state: bool  # holds state of a timer-driven rule (an active absence, an open session)


SELECT_SEEN = """
SELECT device_id, last_seen_at, online, status_at, rules ?| %(rule_ids)s AS timer_state
FROM device_state
WHERE last_seen_at IS NOT NULL AND (last_seen_at <= %(quiet_since)s OR rules ?| %(rule_ids)s)
"""


def get_seen(conn: Connection[Any], *, quiet_since: datetime, rule_ids: Sequence[str]) -> list[SeenRow]:
    """The timer's candidates, unlocked: devices silent since quiet_since, or holding state of one of
    rule_ids (devices heard recently with no such state cannot be due)."""
    with conn.cursor(row_factory=class_row(SeenRow)) as cur:
        return cur.execute(SELECT_SEEN, {"quiet_since": quiet_since, "rule_ids": list(rule_ids)}).fetchall()


TRY_LOCK_DEVICE_STATES = """
SELECT device_id, last_ts, last_seq, last_seen_at, online, rules::text FROM device_state
WHERE device_id IN (SELECT jsonb_array_elements_text(%s::jsonb)) ORDER BY device_id FOR UPDATE SKIP LOCKED
"""


def try_lock_device_states(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, DeviceStateRow]:
    """Lock the states nobody else holds (a device busy in ingest is plainly not silent)."""
    return _state_rows(_all(conn, TRY_LOCK_DEVICE_STATES, (_ids_json(sorted(set(device_ids))),)))


SELECT_TO_ESCALATE = f"""
SELECT {ALARM_COLUMNS} FROM alarm
WHERE type = %(type)s AND rule_id = %(rule_id)s AND closed_at IS NULL AND active AND severity < %(severity)s
  AND raised_at <= %(before)s
FOR UPDATE SKIP LOCKED
"""


def alarms_to_escalate(
    conn: Connection[Any], *, alarm_type: str, rule_id: str, severity: int, before: datetime
) -> list[Alarm]:
    """Active alarms of a rule raised before `before` still below `severity` (locked)."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(
            SELECT_TO_ESCALATE, {"type": alarm_type, "rule_id": rule_id, "severity": severity, "before": before}
        ).fetchall()


SELECT_OPEN_OF_TYPE = f"SELECT {ALARM_COLUMNS} FROM alarm WHERE type = %s AND closed_at IS NULL ORDER BY id"


def open_alarms_of_type(conn: Connection[Any], *, alarm_type: str) -> list[Alarm]:
    """Every open alarm of one type (building outages, misplaced detectors: a handful)."""
    with conn.cursor(row_factory=class_row(Alarm)) as cur:
        return cur.execute(SELECT_OPEN_OF_TYPE, (alarm_type,)).fetchall()


SELECT_RECENT_SITE_ALARM = """
SELECT id FROM alarm WHERE site_id = ANY(%(sites)s) AND raised_at >= %(since)s AND type <> ALL(%(ignore)s)
ORDER BY raised_at LIMIT 1
"""


def recent_site_alarm(
    conn: Connection[Any], *, site_ids: Sequence[str], since: datetime, ignore_types: Sequence[str]
) -> int | None:
    """An alarm raised in these sites since `since` (other than ignore_types), if any."""
    row = _one(conn, SELECT_RECENT_SITE_ALARM, {"sites": list(site_ids), "since": since, "ignore": list(ignore_types)})
    return None if row is None else int(row[0])


TRY_TIMER_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"


def try_timer_lock(conn: Connection[Any], *, key: int) -> bool:
    """One timer tick at a time across processes (released at the end of the transaction)."""
    row = _one(conn, TRY_TIMER_LOCK, (key,))
    return bool(row and row[0])


GATEWAY_DOWN = """
SELECT (d.online IS FALSE) OR EXISTS (SELECT 1 FROM alarm a WHERE a.device_id = d.device_id AND a.type = 'offline'
                                      AND a.closed_at IS NULL AND a.active)
FROM device_state d WHERE d.device_id = %s
"""


def gateway_is_down(conn: Connection[Any], *, gateway_id: str) -> bool:
    """Whether a gateway reported itself offline or has an active offline alarm."""
    row = _one(conn, GATEWAY_DOWN, (gateway_id,))
    return bool(row and row[0])


COUNT_RESOLVED = """
SELECT count(*) FROM alarm
WHERE device_id = %(device_id)s AND type = ANY(%(types)s) AND disposition = %(disposition)s
  AND closed_at IS NOT NULL AND raised_at >= %(since)s
"""


def count_resolved(
    conn: Connection[Any], *, device_id: str, types: Sequence[str], disposition: str, since: datetime
) -> int:
    """SMK-08: alarms of these types on a device raised since `since` and resolved with this disposition."""
    row = conn.execute(
        COUNT_RESOLVED, {"device_id": device_id, "types": list(types), "disposition": disposition, "since": since}
    ).fetchone()
    return int(row[0]) if row else 0
