"""SQL of commissioning checks (table `commissioning`, written by rules only) and the evidence they are judged on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row, tuple_row


@dataclass(slots=True)
class CheckRow:
    """One commissioning check of a device."""

    id: int
    device_id: str
    started_at: datetime
    started_by: str
    deadline_at: datetime
    needs_test: bool
    status: str  # pending | passed | failed | cancelled
    reported_at: datetime | None
    tested_at: datetime | None
    test_signal: str | None
    finished_at: datetime | None
    reason: str


@dataclass(slots=True)
class UncommissionedRow:
    """A registered device without a passed check, with its latest check if it had one."""

    device_id: str
    kind: str
    site_id: str
    installed_at: datetime
    last_seen_at: datetime | None
    check_id: int | None
    status: str | None
    started_at: datetime | None
    reason: str | None


CHECK_COLUMNS = """id, device_id, started_at, started_by, deadline_at, needs_test, status, reported_at, tested_at,
    test_signal, finished_at, reason"""
CANCEL_PENDING = """
UPDATE commissioning SET status = 'cancelled', finished_at = %(at)s, reason = 'a new check was started'
WHERE device_id = %(device_id)s AND status = 'pending'
"""
INSERT_CHECK = f"""
INSERT INTO commissioning (device_id, started_at, started_by, deadline_at, needs_test)
VALUES (%(device_id)s, %(at)s, %(by)s, %(deadline)s, %(needs_test)s)
RETURNING {CHECK_COLUMNS}
"""


def start_check(
    conn: Connection[Any], *, device_id: str, by: str, at: datetime, deadline: datetime, needs_test: bool
) -> CheckRow:
    """Cancel the device's check in progress, if any, and start a new one."""
    params = {"device_id": device_id, "by": by, "at": at, "deadline": deadline, "needs_test": needs_test}
    conn.execute(CANCEL_PENDING, params)
    with conn.cursor(row_factory=class_row(CheckRow)) as cur:
        row = cur.execute(INSERT_CHECK, params).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING
    return row


SELECT_PENDING = (
    f"SELECT {CHECK_COLUMNS} FROM commissioning WHERE status = 'pending' ORDER BY id FOR UPDATE SKIP LOCKED"
)


def claim_pending(conn: Connection[Any]) -> list[CheckRow]:
    """The checks in progress, locked for this transaction (another process skips them)."""
    with conn.cursor(row_factory=class_row(CheckRow)) as cur:
        return cur.execute(SELECT_PENDING).fetchall()


FINISH_CHECK = f"""
UPDATE commissioning SET status = %(status)s, reported_at = %(reported)s, tested_at = %(tested)s,
    test_signal = %(signal)s, finished_at = %(at)s, reason = %(reason)s
WHERE id = %(id)s AND status = 'pending'
RETURNING {CHECK_COLUMNS}
"""


def finish_check(
    conn: Connection[Any],
    *,
    check_id: int,
    status: str,
    reported_at: datetime | None,
    tested_at: datetime | None,
    signal: str | None,
    at: datetime,
    reason: str,
) -> CheckRow | None:
    """Record a check's verdict (None if it was no longer pending)."""
    params = {
        "id": check_id,
        "status": status,
        "reported": reported_at,
        "tested": tested_at,
        "signal": signal,
        "at": at,
        "reason": reason,
    }
    with conn.cursor(row_factory=class_row(CheckRow)) as cur:
        return cur.execute(FINISH_CHECK, params).fetchone()


SELECT_CHECKS = f"SELECT {CHECK_COLUMNS} FROM commissioning WHERE device_id = %s ORDER BY id DESC LIMIT %s"


def get_checks(conn: Connection[Any], *, device_id: str, limit: int = 20) -> list[CheckRow]:
    """A device's checks, newest first."""
    with conn.cursor(row_factory=class_row(CheckRow)) as cur:
        return cur.execute(SELECT_CHECKS, (device_id, limit)).fetchall()


SELECT_LATEST = f"""
SELECT DISTINCT ON (device_id) {CHECK_COLUMNS} FROM commissioning
WHERE device_id = ANY(%s) AND status <> 'cancelled' ORDER BY device_id, id DESC
"""
SELECT_PASSED = "SELECT DISTINCT device_id FROM commissioning WHERE device_id = ANY(%s) AND status = 'passed'"


def latest_checks(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, CheckRow]:
    """Each device's latest check that was not cancelled."""
    with conn.cursor(row_factory=class_row(CheckRow)) as cur:
        return {r.device_id: r for r in cur.execute(SELECT_LATEST, (list(device_ids),)).fetchall()}


def passed_devices(conn: Connection[Any], *, device_ids: Sequence[str]) -> set[str]:
    """The devices among these that have passed a check."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return {r[0] for r in cur.execute(SELECT_PASSED, (list(device_ids),)).fetchall()}


# The first message since the check began, and the first one carrying a test or an alarm signal (a test press
# gives one of them, depending on the detector: Zigbee2MQTT/Tuya `test`, Shelly Gas `test`, a smoke/gas/CO flag).
# Readings may carry a device time older than their arrival (a backlog): bounded by a day before the start.
SELECT_EVIDENCE = """
SELECT
    (SELECT min(received_at) FROM reading
     WHERE device_id = %(d)s AND ts >= %(since)s - interval '1 day' AND received_at >= %(since)s) AS first_reading,
    (SELECT status_at FROM device_state
     WHERE device_id = %(d)s AND online AND status_at >= %(since)s) AS online_at,
    (SELECT array[received_at::text,
                  CASE WHEN test THEN 'test' WHEN smoke THEN 'smoke' WHEN gas THEN 'gas' ELSE 'co' END]
     FROM reading
     WHERE device_id = %(d)s AND ts >= %(since)s - interval '1 day' AND received_at >= %(since)s
       AND (coalesce(test, false) OR coalesce(smoke, false) OR coalesce(gas, false) OR extras->>'co' = 'true')
     ORDER BY received_at LIMIT 1) AS signal
"""


def evidence(conn: Connection[Any], *, device_id: str, since: datetime) -> tuple[Any, ...]:
    """(first reading's arrival, online status since, [first signal's arrival, which signal]) for a device."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(SELECT_EVIDENCE, {"d": device_id, "since": since}).fetchone()
    assert row is not None  # noqa: S101 - one row always
    return row


# Registered devices never heard from (no message, no status) and installed before `before`, that never passed a
# check and have no open alarm of the commissioning type yet.
SELECT_NEVER_HEARD = """
SELECT d.id FROM device d
LEFT JOIN device_state s ON s.device_id = d.id
WHERE d.active AND d.installed_at <= %(before)s AND s.last_seen_at IS NULL AND s.status_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM commissioning c WHERE c.device_id = d.id AND c.status IN ('passed', 'pending'))
  AND NOT EXISTS (SELECT 1 FROM alarm a WHERE a.device_id = d.id AND a.type = %(type)s AND a.closed_at IS NULL)
ORDER BY d.id
"""


def never_heard(conn: Connection[Any], *, before: datetime, alarm_type: str) -> list[str]:
    """Devices silent since they were registered (before `before`) and not commissioned, with no alarm yet."""
    with conn.cursor(row_factory=tuple_row) as cur:
        return [r[0] for r in cur.execute(SELECT_NEVER_HEARD, {"before": before, "type": alarm_type}).fetchall()]


SELECT_UNCOMMISSIONED = """
SELECT d.id AS device_id, d.kind, d.site_id, d.installed_at, s.last_seen_at,
       c.id AS check_id, c.status, c.started_at, c.reason
FROM device d
LEFT JOIN device_state s ON s.device_id = d.id
LEFT JOIN LATERAL (SELECT id, status, started_at, reason FROM commissioning
                   WHERE device_id = d.id AND status <> 'cancelled' ORDER BY id DESC LIMIT 1) c ON true
WHERE d.active AND (%(ids)s::text[] IS NULL OR d.id = ANY(%(ids)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM commissioning p WHERE p.device_id = d.id AND p.status = 'passed')
ORDER BY d.id
LIMIT %(limit)s OFFSET %(offset)s
"""


def uncommissioned(
    conn: Connection[Any], *, device_ids: Sequence[str] | None = None, limit: int = 200, offset: int = 0
) -> list[UncommissionedRow]:
    """Registered devices that never passed a check (optionally only among device_ids)."""
    params = {"ids": list(device_ids) if device_ids is not None else None, "limit": limit, "offset": offset}
    with conn.cursor(row_factory=class_row(UncommissionedRow)) as cur:
        return cur.execute(SELECT_UNCOMMISSIONED, params).fetchall()


# Alarms a test press raised during a check that have cleared since: resolved as `test` when the check passes.
SELECT_TEST_ALARMS = """
SELECT id FROM alarm
WHERE device_id = %(d)s AND closed_at IS NULL AND NOT active AND type <> %(type)s
  AND raised_at >= %(since)s AND raised_at <= %(until)s
ORDER BY id
"""


def cleared_alarms_between(
    conn: Connection[Any], *, device_id: str, since: datetime, until: datetime, except_type: str
) -> list[int]:
    """The device's open, cleared alarms raised in [since, until] (not those of except_type)."""
    params = {"d": device_id, "since": since, "until": until, "type": except_type}
    with conn.cursor(row_factory=tuple_row) as cur:
        return [r[0] for r in cur.execute(SELECT_TEST_ALARMS, params).fetchall()]
