"""SQL of the field stage: work orders, their events, photos and notices. Nothing here commits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row
from psycopg.types.json import Jsonb


@dataclass(slots=True)
class WorkOrderRow:
    id: int
    site_id: str
    party: str
    party_name: str
    party_phone: str
    merchant_id: str | None
    kind: str
    title: str
    note: str
    severity: int
    status: str
    source: str
    opened_at: datetime
    opened_by: str
    due_at: datetime
    fixed_at: datetime | None
    fixed_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    reinspections: int
    escalation: int
    finding_id: int | None
    created_at: datetime
    patrol_stop_id: int | None = None
    site_name: str = ""
    micro_grid_id: str = ""


@dataclass(slots=True)
class WorkOrderEventRow:
    id: int
    work_order_id: int
    at: datetime
    kind: str
    actor: str | None
    passed: bool | None
    note: str
    due_at: datetime | None
    details: dict[str, Any]


@dataclass(slots=True)
class PhotoRow:
    id: str
    work_order_id: int | None
    content_type: str
    size: int
    width: int
    height: int
    stage: str
    uploaded_by: str
    uploaded_at: datetime


@dataclass(slots=True)
class PhotoData:
    id: str
    content_type: str
    data: bytes
    site_id: str | None


@dataclass(slots=True)
class SiteRow:
    id: str
    kind: str
    name: str
    micro_grid_id: str
    merchant_id: str | None
    grid_id: str
    community_id: str


@dataclass(slots=True)
class Recipient:
    worker_id: str | None
    merchant_id: str | None
    name: str
    locale: str
    urls: list[str]


@dataclass(slots=True)
class DueNotice:
    id: int
    work_order_id: int | None
    worker_id: str | None
    merchant_id: str | None
    title: str
    body: str
    attempts: int
    urls: list[str]
    resident_report_id: int | None = None
    drill_id: int | None = None
    active: bool = True  # a worker deactivated since the notice was queued is sent nothing


ORDER_COLUMNS = """o.id, o.site_id, o.party, o.party_name, o.party_phone, o.merchant_id, o.kind, o.title, o.note,
o.severity, o.status, o.source, o.opened_at, o.opened_by, o.due_at, o.fixed_at, o.fixed_by, o.closed_at,
o.closed_by, o.reinspections, o.escalation, o.finding_id, o.created_at, o.patrol_stop_id, s.name AS site_name,
s.micro_grid_id"""
# What a caller may see of a site `s` (the same bounds as the API's: a worker their micro-grids, a grid leader
# their grids, duty and fire station their community; a merchant its own sites; an admin their communities).
WORKER_MICRO_GRIDS = """
SELECT wm.micro_grid_id FROM worker_micro_grid wm WHERE wm.worker_id = %(worker)s
UNION ALL
SELECT mg.id FROM worker_grid wg JOIN worker w ON w.id = wg.worker_id AND w.role = 'grid_leader'
JOIN micro_grid mg ON mg.grid_id = wg.grid_id WHERE wg.worker_id = %(worker)s
UNION ALL
SELECT mg.id FROM worker w JOIN grid g ON g.community_id = w.community_id JOIN micro_grid mg ON mg.grid_id = g.id
WHERE w.id = %(worker)s AND w.role IN ('community_duty', 'fire_station')
"""
SITE_SCOPE = f"""(%(worker)s::text IS NULL OR s.micro_grid_id IN ({WORKER_MICRO_GRIDS}))
  AND (%(merchant)s::text IS NULL OR s.merchant_id = %(merchant)s)
  AND (%(communities)s::text[] IS NULL OR s.micro_grid_id IN (
      SELECT mg.id FROM micro_grid mg JOIN grid g ON g.id = mg.grid_id WHERE g.community_id = ANY(%(communities)s)))"""
# A merchant sees the orders it answers for, not a landlord's order on the building its shop is in.
ORDER_SCOPE = f"{SITE_SCOPE} AND (%(merchant)s::text IS NULL OR o.merchant_id = %(merchant)s)"


@dataclass(frozen=True, slots=True)
class Scope:
    """Who is asking: None everywhere is the whole database (services, tests)."""

    worker: str | None = None
    merchant: str | None = None
    communities: Sequence[str] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "merchant": self.merchant,
            "communities": None if self.communities is None else list(self.communities),
        }


SELECT_SITE = (
    """
SELECT s.id, s.kind, s.name, s.micro_grid_id, s.merchant_id, mg.grid_id, g.community_id
FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
WHERE s.id = %(id)s AND """
    + SITE_SCOPE
)


def get_site(conn: Connection[Any], *, site_id: str, scope: Scope) -> SiteRow | None:
    """A site with its place in the hierarchy, if the scope includes it."""
    with conn.cursor(row_factory=class_row(SiteRow)) as cur:
        return cur.execute(SELECT_SITE, {"id": site_id, **scope.params()}).fetchone()


INSERT_ORDER = """
INSERT INTO work_order (site_id, party, party_name, party_phone, merchant_id, kind, title, note, severity, source,
                        opened_at, opened_by, due_at, finding_id, patrol_stop_id)
VALUES (%(site_id)s, %(party)s, %(party_name)s, %(party_phone)s, %(merchant_id)s, %(kind)s, %(title)s, %(note)s,
        %(severity)s, %(source)s, %(opened_at)s, %(opened_by)s, %(due_at)s, %(finding_id)s, %(patrol_stop_id)s)
RETURNING id
"""


def insert_work_order(conn: Connection[Any], **values: Any) -> int:
    """A new open order; returns its id."""
    row = conn.execute(INSERT_ORDER, values).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns the row
    return int(row[0])


SELECT_ORDER = f"""
SELECT {ORDER_COLUMNS} FROM work_order o JOIN site s ON s.id = o.site_id
WHERE o.id = %(id)s AND {ORDER_SCOPE}
"""
LOCK_ORDER = SELECT_ORDER + " FOR UPDATE OF o"


def get_work_order(conn: Connection[Any], *, order_id: int, scope: Scope, lock: bool = False) -> WorkOrderRow | None:
    """One order if the scope includes its site (locked for an update when asked)."""
    with conn.cursor(row_factory=class_row(WorkOrderRow)) as cur:
        return cur.execute(LOCK_ORDER if lock else SELECT_ORDER, {"id": order_id, **scope.params()}).fetchone()


SELECT_ORDERS = f"""
SELECT {ORDER_COLUMNS} FROM work_order o JOIN site s ON s.id = o.site_id
WHERE {ORDER_SCOPE}
  AND (%(open_only)s = false OR o.status <> 'closed')
  AND (%(site)s::text IS NULL OR o.site_id = %(site)s)
ORDER BY (o.status = 'closed'), o.due_at, o.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""


def list_work_orders(
    conn: Connection[Any],
    *,
    scope: Scope,
    open_only: bool,
    site_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> list[WorkOrderRow]:
    """Orders in scope, open ones first by deadline."""
    params = {"open_only": open_only, "site": site_id, "offset": offset, "limit": limit, **scope.params()}
    with conn.cursor(row_factory=class_row(WorkOrderRow)) as cur:
        return cur.execute(SELECT_ORDERS, params).fetchall()


UPDATE_FIXED = """
UPDATE work_order SET status = 'fixed', fixed_at = %(at)s, fixed_by = %(actor)s WHERE id = %(id)s
"""
UPDATE_REINSPECTION_PASSED = """
UPDATE work_order SET status = 'closed', closed_at = %(at)s, closed_by = %(actor)s,
       reinspections = reinspections + 1
WHERE id = %(id)s
"""
UPDATE_REINSPECTION_FAILED = """
UPDATE work_order SET status = 'open', due_at = %(due_at)s, fixed_at = NULL, fixed_by = NULL,
       reinspections = reinspections + 1, escalation = 0
WHERE id = %(id)s
"""
UPDATE_ESCALATION = "UPDATE work_order SET escalation = %(step)s WHERE id = %(id)s AND escalation < %(step)s"


def mark_fixed(conn: Connection[Any], *, order_id: int, actor: str, at: datetime) -> None:
    """The party (or the worker for them) says it is fixed."""
    conn.execute(UPDATE_FIXED, {"id": order_id, "actor": actor, "at": at})


def mark_reinspected(
    conn: Connection[Any], *, order_id: int, actor: str, at: datetime, passed: bool, due_at: datetime | None
) -> None:
    """A re-inspection on site: pass closes the order, fail reopens it with a new deadline."""
    if passed:
        conn.execute(UPDATE_REINSPECTION_PASSED, {"id": order_id, "actor": actor, "at": at})
    else:
        conn.execute(UPDATE_REINSPECTION_FAILED, {"id": order_id, "due_at": due_at})


def set_escalation(conn: Connection[Any], *, order_id: int, step: int) -> bool:
    """Record that the overdue ladder reached this step (False: it already had)."""
    return conn.execute(UPDATE_ESCALATION, {"id": order_id, "step": step}).rowcount == 1


INSERT_EVENT = """
INSERT INTO work_order_event (work_order_id, at, kind, actor, passed, note, due_at, details)
VALUES (%(order)s, %(at)s, %(kind)s, %(actor)s, %(passed)s, %(note)s, %(due_at)s, %(details)s)
"""
SELECT_EVENTS = """
SELECT id, work_order_id, at, kind, actor, passed, note, due_at, details
FROM work_order_event WHERE work_order_id = %s ORDER BY id
"""


def insert_event(
    conn: Connection[Any],
    *,
    order_id: int,
    at: datetime,
    kind: str,
    actor: str | None,
    note: str = "",
    passed: bool | None = None,
    due_at: datetime | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """One step of an order's history."""
    conn.execute(
        INSERT_EVENT,
        {
            "order": order_id,
            "at": at,
            "kind": kind,
            "actor": actor,
            "passed": passed,
            "note": note,
            "due_at": due_at,
            "details": Jsonb(details or {}),
        },
    )


def list_events(conn: Connection[Any], *, order_id: int) -> list[WorkOrderEventRow]:
    """An order's history, oldest first."""
    with conn.cursor(row_factory=class_row(WorkOrderEventRow)) as cur:
        return cur.execute(SELECT_EVENTS, (order_id,)).fetchall()


INSERT_PHOTO = """
INSERT INTO field_photo (id, work_order_id, content_type, size, width, height, sha256, data, stage, uploaded_by,
                         uploaded_at)
VALUES (%(id)s, %(order)s, %(content_type)s, %(size)s, %(width)s, %(height)s, %(sha256)s, %(data)s, %(stage)s,
        %(by)s, %(at)s)
"""
SELECT_PHOTOS = """
SELECT id, work_order_id, content_type, size, width, height, stage, uploaded_by, uploaded_at
FROM field_photo WHERE work_order_id = %s ORDER BY uploaded_at, id
"""
SELECT_PHOTO_DATA = f"""
SELECT p.id, p.content_type, p.data, o.site_id
FROM field_photo p JOIN work_order o ON o.id = p.work_order_id JOIN site s ON s.id = o.site_id
WHERE p.id = %(id)s AND p.work_order_id = %(order)s AND {ORDER_SCOPE}
"""
COUNT_PHOTOS = "SELECT count(*) FROM field_photo WHERE work_order_id = %s"


def insert_photo(conn: Connection[Any], **values: Any) -> None:
    """Store a checked photo under its random id."""
    conn.execute(INSERT_PHOTO, values)


def count_photos(conn: Connection[Any], *, order_id: int) -> int:
    """How many photos an order has."""
    row = conn.execute(COUNT_PHOTOS, (order_id,)).fetchone()
    return int(row[0]) if row else 0


def list_photos(conn: Connection[Any], *, order_id: int) -> list[PhotoRow]:
    """An order's photos (without their bytes)."""
    with conn.cursor(row_factory=class_row(PhotoRow)) as cur:
        return cur.execute(SELECT_PHOTOS, (order_id,)).fetchall()


def get_photo_data(conn: Connection[Any], *, order_id: int, photo_id: str, scope: Scope) -> PhotoData | None:
    """A photo's bytes if it is this order's and the scope includes the order."""
    with conn.cursor(row_factory=class_row(PhotoData)) as cur:
        return cur.execute(SELECT_PHOTO_DATA, {"id": photo_id, "order": order_id, **scope.params()}).fetchone()


# -- notices (the party told; the overdue ladder) ----------------------------------------------------------------

# Only orders with a step of the ladder due: those that climbed every step already would otherwise fill the batch
# (oldest deadline first) and newly overdue orders would never be escalated.
SELECT_OVERDUE = f"""
SELECT {ORDER_COLUMNS} FROM work_order o JOIN site s ON s.id = o.site_id
WHERE o.status <> 'closed' AND o.due_at < %(now)s
  AND EXISTS (SELECT 1 FROM unnest(%(steps)s::int[], %(afters)s::interval[]) AS l(step, after)
              WHERE o.escalation < l.step AND o.due_at + l.after <= %(now)s)
ORDER BY o.due_at LIMIT %(limit)s
"""


def list_overdue(
    conn: Connection[Any], *, now: datetime, ladder: Sequence[tuple[int, timedelta]], limit: int
) -> list[WorkOrderRow]:
    """Orders not closed with a step of the ladder (step, time past the deadline) due, oldest deadline first."""
    params = {"now": now, "limit": limit, "steps": [s for s, _ in ladder], "afters": [a for _, a in ladder]}
    with conn.cursor(row_factory=class_row(WorkOrderRow)) as cur:
        return cur.execute(SELECT_OVERDUE, params).fetchall()


SELECT_MERCHANT_RECIPIENT = """
SELECT NULL::text AS worker_id, m.id AS merchant_id, m.name, 'zh-CN' AS locale, m.notify_urls AS urls
FROM merchant m WHERE m.id = %s AND cardinality(m.notify_urls) > 0
"""


def merchant_recipient(conn: Connection[Any], *, merchant_id: str) -> Recipient | None:
    """A merchant with a channel to reach it."""
    with conn.cursor(row_factory=class_row(Recipient)) as cur:
        return cur.execute(SELECT_MERCHANT_RECIPIENT, (merchant_id,)).fetchone()


INSERT_NOTICE = """
INSERT INTO field_notice (work_order_id, reinspections, step, worker_id, merchant_id, title, body, next_attempt_at)
VALUES (%(order)s, %(reinspections)s, %(step)s, %(worker)s, %(merchant)s, %(title)s, %(body)s, %(at)s)
ON CONFLICT DO NOTHING
"""


def insert_notice(
    conn: Connection[Any],
    *,
    order_id: int,
    reinspections: int,
    step: int,
    recipient: Recipient,
    title: str,
    body: str,
    at: datetime,
) -> bool:
    """Queue a message (once per order, climb of its ladder, step and recipient)."""
    params = {
        "order": order_id,
        "reinspections": reinspections,
        "step": step,
        "worker": recipient.worker_id,
        "merchant": recipient.merchant_id,
        "title": title,
        "body": body,
        "at": at,
    }
    return conn.execute(INSERT_NOTICE, params).rowcount == 1


CLAIM_NOTICES = """
SELECT n.id, n.work_order_id, n.worker_id, n.merchant_id, n.title, n.body, n.attempts,
       COALESCE(w.notify_urls, m.notify_urls) AS urls, n.resident_report_id, n.drill_id,
       COALESCE(w.active, true) AS active
FROM field_notice n LEFT JOIN worker w ON w.id = n.worker_id LEFT JOIN merchant m ON m.id = n.merchant_id
WHERE n.status = 'pending' AND n.next_attempt_at <= %(now)s
ORDER BY n.next_attempt_at, n.id LIMIT %(limit)s
FOR UPDATE OF n SKIP LOCKED
"""
UPDATE_NOTICE = """
UPDATE field_notice SET status = %(status)s, attempts = attempts + 1, sent_at = %(sent_at)s,
       last_error = %(error)s, next_attempt_at = %(next_at)s
WHERE id = %(id)s
"""


def claim_notices(conn: Connection[Any], *, now: datetime, limit: int) -> list[DueNotice]:
    """Pending notices due now, locked for this deliverer."""
    with conn.cursor(row_factory=class_row(DueNotice)) as cur:
        return cur.execute(CLAIM_NOTICES, {"now": now, "limit": limit}).fetchall()


def record_notice(
    conn: Connection[Any],
    *,
    notice_id: int,
    status: str,
    sent_at: datetime | None,
    error: str | None,
    next_at: datetime,
) -> None:
    """The outcome of one delivery attempt."""
    params = {"id": notice_id, "status": status, "sent_at": sent_at, "error": error, "next_at": next_at}
    conn.execute(UPDATE_NOTICE, params)


SELECT_NOTICES = """
SELECT n.id, n.work_order_id, n.worker_id, n.merchant_id, n.title, n.body, n.attempts, '{}'::text[] AS urls
FROM field_notice n WHERE n.work_order_id = %s ORDER BY n.id
"""


def list_notices(conn: Connection[Any], *, order_id: int) -> list[DueNotice]:
    """The messages an order has queued or sent."""
    with conn.cursor(row_factory=class_row(DueNotice)) as cur:
        return cur.execute(SELECT_NOTICES, (order_id,)).fetchall()


SELECT_ORDER_OF_FINDING = "SELECT id FROM work_order WHERE finding_id = %s"


def order_of_finding(conn: Connection[Any], *, finding_id: int) -> int | None:
    """The order a score finding was opened with."""
    row = conn.execute(SELECT_ORDER_OF_FINDING, (finding_id,)).fetchone()
    return None if row is None else int(row[0])


SELECT_SITES = f"""
SELECT s.id, s.kind, s.name, s.micro_grid_id, s.merchant_id, mg.grid_id, g.community_id
FROM site s JOIN micro_grid mg ON mg.id = s.micro_grid_id JOIN grid g ON g.id = mg.grid_id
WHERE {SITE_SCOPE} ORDER BY s.micro_grid_id, s.id LIMIT %(limit)s
"""


def list_sites(conn: Connection[Any], *, scope: Scope, limit: int = 2000) -> list[SiteRow]:
    """The sites a caller may inspect."""
    with conn.cursor(row_factory=class_row(SiteRow)) as cur:
        return cur.execute(SELECT_SITES, {"limit": limit, **scope.params()}).fetchall()
