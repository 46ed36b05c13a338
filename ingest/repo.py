"""SQL of the ingest stage: readings by COPY with duplicate absorption, rejects."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from psycopg import Connection, errors
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads

from core.domain import FLAG_FIELDS, MEASUREMENT_FIELDS, STATE_FIELDS, Reading

log = logging.getLogger(__name__)

READING_COLUMNS = ("device_id", "ts", "seq", "received_at", *MEASUREMENT_FIELDS, *FLAG_FIELDS, *STATE_FIELDS, "extras")
READING_TYPES = (
    "text",
    "timestamptz",
    "int8",
    "timestamptz",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "float4",
    "float8",
    "float4",
    "bool",
    "bool",
    "bool",
    "bool",
    "text",
    "text",
    "text",
    "jsonb",
)
_COLS = ", ".join(READING_COLUMNS)

CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS reading_in (LIKE reading INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
"""
COPY_STAGING = f"COPY reading_in ({_COLS}) FROM STDIN (FORMAT BINARY)"
COPY_DIRECT = f"COPY reading ({_COLS}) FROM STDIN (FORMAT BINARY)"
MOVE_STAGING = f"""
INSERT INTO reading ({_COLS}) SELECT {_COLS} FROM reading_in
ON CONFLICT (device_id, ts, seq) DO NOTHING
RETURNING device_id, ts, seq
"""


# Connections whose session has the staging table, created and committed by prepare_connection (it lives as
# long as the session, so no later rollback can take it away): creating it per batch costs a round trip, and
# round trips are what a busy two-core machine makes expensive.
_staged: weakref.WeakSet[Connection[Any]] = weakref.WeakSet()


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)


def prepare_connection(conn: Connection[Any]) -> None:
    """Hot-path set-up of an ingest connection: orjson for json/jsonb (rule state, extras) instead of the
    standard library's encoder, a measurable share of the writer's time (docs/scaling.md)."""
    set_json_dumps(_dumps, context=conn)
    set_json_loads(orjson.loads, context=conn)
    with conn.transaction():
        conn.execute(CREATE_STAGING)
    _staged.add(conn)


def _copy_rows(cur: Any, statement: str, readings: Sequence[Reading]) -> None:
    with cur.copy(statement) as copy:
        copy.set_types(READING_TYPES)
        for r in readings:
            copy.write_row(
                (
                    r.device_id,
                    r.ts,
                    -1 if r.seq is None else r.seq,
                    r.received_at,
                    r.gas_lel,
                    r.co_ppm,
                    r.smoke_db_m,
                    r.temp_c,
                    r.power_w,
                    r.current_a,
                    r.voltage_v,
                    r.energy_wh,
                    r.battery_pct,
                    r.gas,
                    r.smoke,
                    r.tamper,
                    r.test,
                    r.relay,
                    r.valve,
                    r.fault,
                    Jsonb(r.extras) if r.extras else None,
                )
            )


# The direct COPY's savepoint is never released: the commit ends it, one round trip fewer a batch.
SAVEPOINT_COPY = "SAVEPOINT reading_copy"
ROLLBACK_COPY = "ROLLBACK TO SAVEPOINT reading_copy"


def insert_readings(conn: Connection[Any], *, readings: Sequence[Reading]) -> list[Reading]:
    """COPY readings in; returns those that were new (a redelivered duplicate is absorbed and left out).

    They are COPYed straight into `reading` (cheaper than the staging path, docs/scaling.md) under a
    savepoint. A batch holding a reading already stored (a redelivery, a bridge repeating itself) fails that COPY:
    the savepoint undoes the COPY alone (the caller's transaction keeps what it holds, e.g. its device locks) and
    the batch goes through the staging table, which absorbs duplicates."""
    if not readings:
        return []
    with conn.cursor() as cur:
        cur.execute(SAVEPOINT_COPY)
        try:
            _copy_rows(cur, COPY_DIRECT, readings)
            return list(readings)
        except errors.UniqueViolation:
            cur.execute(ROLLBACK_COPY)
            log.debug("batch holds a reading already stored: writing it through the staging table")
        if conn not in _staged:
            cur.execute(CREATE_STAGING)
        _copy_rows(cur, COPY_STAGING, readings)
        cur.execute(MOVE_STAGING)
        inserted = {(row[0], row[1], row[2]) for row in cur.fetchall()}
    if len(inserted) == len(readings):
        return list(readings)
    new: list[Reading] = []
    for r in readings:
        key = (r.device_id, r.ts, -1 if r.seq is None else r.seq)
        if key in inserted:
            inserted.discard(key)  # a duplicate inside one batch counts once
            new.append(r)
    return new


# A reject is kept to show a person what arrived and why it was refused, not to archive the message: the payload
# is stored as an excerpt (its full size beside it), and the texts that come from the message are bounded too (a
# topic may be 64 KiB, and reasons quote it).
MAX_REJECT_TOPIC = 512
MAX_REJECT_REASON = 1_000
MAX_REJECT_DEVICE_ID = 128
DEFAULT_REJECT_EXCERPT = 1_024

INSERT_DEVICE_EVENT = """
INSERT INTO device_event (received_at, adapter, foreign_id, device_id, kind, topic, details)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""


def insert_device_events(
    conn: Connection[Any], *, events: Sequence[tuple[datetime, str, str, str | None, str, str, Any]]
) -> None:
    """Record device events: (received_at, adapter, foreign_id, device_id, kind, topic, details)."""
    if events:
        with conn.cursor() as cur:
            cur.executemany(INSERT_DEVICE_EVENT, [(*e[:6], Jsonb(e[6])) for e in events])


SELECT_DEVICE_EVENTS = """
SELECT received_at, adapter, foreign_id, device_id, kind, topic, details FROM device_event
WHERE device_id = %s ORDER BY received_at DESC, id DESC LIMIT %s
"""


def get_device_events(conn: Connection[Any], *, device_id: str, limit: int = 50) -> list[tuple[Any, ...]]:
    """A device's latest events, newest first."""
    return conn.execute(SELECT_DEVICE_EVENTS, (device_id, limit)).fetchall()


INSERT_REJECT = """
INSERT INTO ingest_reject (received_at, topic, payload, payload_bytes, device_id, reason)
VALUES (%s, %s, %s, %s, %s, %s)
"""


def _storable(text: str, limit: int) -> str:
    """Text from a message bounded and made storable (a NUL or a lone surrogate written out, not refused)."""
    clipped = text[:limit]
    if "\x00" in clipped:
        clipped = clipped.replace("\x00", "\\x00")
    return clipped.encode("utf-8", "backslashreplace").decode("utf-8")


def insert_rejects(
    conn: Connection[Any],
    *,
    rejects: Sequence[tuple[Any, ...]],
    excerpt_bytes: int = DEFAULT_REJECT_EXCERPT,
) -> None:
    """Record rejected messages, (received_at, topic, payload, device_id, reason, ...) rows: an excerpt of the
    payload and its size, the texts bounded."""
    if rejects:
        rows = [
            (
                r[0],
                _storable(r[1], MAX_REJECT_TOPIC),
                bytes(r[2][:excerpt_bytes]),
                len(r[2]),
                None if r[3] is None else _storable(r[3], MAX_REJECT_DEVICE_ID),
                _storable(r[4], MAX_REJECT_REASON),
            )
            for r in rejects
        ]
        with conn.cursor() as cur:
            cur.executemany(INSERT_REJECT, rows)


DELETE_REJECTS_BEFORE = """
DELETE FROM ingest_reject WHERE id IN (SELECT id FROM ingest_reject WHERE received_at < %s ORDER BY id LIMIT %s)
"""
DELETE_REJECTS_BEYOND = """
DELETE FROM ingest_reject WHERE id IN (
    SELECT id FROM ingest_reject
    WHERE id <= (SELECT id FROM ingest_reject ORDER BY id DESC OFFSET %(keep)s LIMIT 1)
    ORDER BY id LIMIT %(limit)s)
"""


def delete_expired_rejects(conn: Connection[Any], *, before: datetime, keep_rows: int, limit: int) -> int:
    """Delete up to `limit` rejects received before `before`, then up to `limit` of the oldest beyond the newest
    `keep_rows`; returns how many went."""
    deleted = conn.execute(DELETE_REJECTS_BEFORE, (before, limit)).rowcount
    deleted += conn.execute(DELETE_REJECTS_BEYOND, {"keep": keep_rows, "limit": limit}).rowcount
    return max(deleted, 0)
