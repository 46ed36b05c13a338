"""SQL of drills and their responses. Nothing here commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row

from field.patrol_repo import ROUND_SCOPE
from field.repo import Recipient, Scope

# A drill is in scope by its micro-grid, as a round is (merchants have none).
DRILL_SCOPE = ROUND_SCOPE


@dataclass(slots=True)
class DrillRow:
    id: int
    micro_grid_id: str
    site_id: str
    scenario: str
    dispatched_at: datetime
    dispatched_by: str
    ends_at: datetime
    site_name: str = ""


@dataclass(slots=True)
class ResponseRow:
    drill_id: int
    worker_id: str
    worker_name: str
    acknowledged_at: datetime | None
    arrived_at: datetime | None


INSERT_DRILL = """
INSERT INTO drill (micro_grid_id, site_id, scenario, dispatched_at, dispatched_by, ends_at)
VALUES (%(mg)s, %(site)s, %(scenario)s, %(at)s, %(by)s, %(ends)s) RETURNING id
"""
INSERT_RESPONSE = "INSERT INTO drill_response (drill_id, worker_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
INSERT_DRILL_NOTICE = """
INSERT INTO field_notice (drill_id, step, worker_id, title, body, next_attempt_at)
VALUES (%(drill)s, 0, %(worker)s, %(title)s, %(body)s, %(at)s) ON CONFLICT DO NOTHING
"""


def insert_drill(
    conn: Connection[Any], *, micro_grid_id: str, site_id: str, scenario: str, at: datetime, by: str, ends: datetime
) -> int:
    """A dispatched drill; returns its id."""
    params = {"mg": micro_grid_id, "site": site_id, "scenario": scenario, "at": at, "by": by, "ends": ends}
    row = conn.execute(INSERT_DRILL, params).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return int(row[0])


def add_responder(
    conn: Connection[Any], *, drill_id: int, recipient: Recipient, title: str, body: str, at: datetime
) -> None:
    """A worker the drill is dispatched to, and their message."""
    conn.execute(INSERT_RESPONSE, (drill_id, recipient.worker_id))
    params = {"drill": drill_id, "worker": recipient.worker_id, "title": title, "body": body, "at": at}
    conn.execute(INSERT_DRILL_NOTICE, params)


DRILL_COLUMNS = """d.id, d.micro_grid_id, d.site_id, d.scenario, d.dispatched_at, d.dispatched_by, d.ends_at,
s.name AS site_name"""
SELECT_DRILL = f"""
SELECT {DRILL_COLUMNS} FROM drill d JOIN site s ON s.id = d.site_id
WHERE d.id = %(id)s AND {DRILL_SCOPE.replace("r.micro_grid_id", "d.micro_grid_id")}
  AND (%(until)s::timestamptz IS NULL OR d.dispatched_at <= %(until)s)
"""
SELECT_DRILLS = f"""
SELECT {DRILL_COLUMNS} FROM drill d JOIN site s ON s.id = d.site_id
WHERE {DRILL_SCOPE.replace("r.micro_grid_id", "d.micro_grid_id")}
  AND (%(until)s::timestamptz IS NULL OR d.dispatched_at <= %(until)s)
ORDER BY d.dispatched_at DESC, d.id DESC LIMIT %(limit)s
"""
SELECT_RESPONSES = """
SELECT r.drill_id, r.worker_id, w.name AS worker_name, r.acknowledged_at, r.arrived_at
FROM drill_response r JOIN worker w ON w.id = r.worker_id WHERE r.drill_id = %s ORDER BY r.worker_id
"""
LOCK_RESPONSE = """
SELECT r.drill_id, r.worker_id, w.name AS worker_name, r.acknowledged_at, r.arrived_at
FROM drill_response r JOIN worker w ON w.id = r.worker_id WHERE r.drill_id = %s AND r.worker_id = %s
FOR UPDATE OF r
"""
UPDATE_ACK = "UPDATE drill_response SET acknowledged_at = %(at)s WHERE drill_id = %(drill)s AND worker_id = %(worker)s"
UPDATE_ARRIVED = """
UPDATE drill_response SET arrived_at = %(at)s, acknowledged_at = COALESCE(acknowledged_at, %(at)s)
WHERE drill_id = %(drill)s AND worker_id = %(worker)s
"""


def get_drill(conn: Connection[Any], *, drill_id: int, scope: Scope, until: datetime | None = None) -> DrillRow | None:
    """A drill if its micro-grid is in scope (and, with until, if it was dispatched by then)."""
    with conn.cursor(row_factory=class_row(DrillRow)) as cur:
        return cur.execute(SELECT_DRILL, {"id": drill_id, "until": until, **scope.params()}).fetchone()


def list_drills(
    conn: Connection[Any], *, scope: Scope, until: datetime | None = None, limit: int = 100
) -> list[DrillRow]:
    """Drills in scope (dispatched by until, when given), newest first."""
    with conn.cursor(row_factory=class_row(DrillRow)) as cur:
        return cur.execute(SELECT_DRILLS, {"limit": limit, "until": until, **scope.params()}).fetchall()


def list_responses(conn: Connection[Any], *, drill_id: int) -> list[ResponseRow]:
    """Who a drill went to and when they answered."""
    with conn.cursor(row_factory=class_row(ResponseRow)) as cur:
        return cur.execute(SELECT_RESPONSES, (drill_id,)).fetchall()


def lock_response(conn: Connection[Any], *, drill_id: int, worker_id: str) -> ResponseRow | None:
    """One responder's row, locked for their answer."""
    with conn.cursor(row_factory=class_row(ResponseRow)) as cur:
        return cur.execute(LOCK_RESPONSE, (drill_id, worker_id)).fetchone()


def mark(conn: Connection[Any], *, drill_id: int, worker_id: str, step: str, at: datetime) -> None:
    """The worker acknowledged ('ack') or arrived on site ('arrived')."""
    conn.execute(UPDATE_ACK if step == "ack" else UPDATE_ARRIVED, {"drill": drill_id, "worker": worker_id, "at": at})


SELECT_SITES_OF_MG = "SELECT id FROM site WHERE micro_grid_id = %s ORDER BY id"


def site_ids(conn: Connection[Any], *, micro_grid_id: str) -> list[str]:
    """The sites of a micro-grid (a drill's scene is one of them)."""
    return [str(r[0]) for r in conn.execute(SELECT_SITES_OF_MG, (micro_grid_id,)).fetchall()]
