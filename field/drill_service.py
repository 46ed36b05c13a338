"""Surprise drills (网格赶考): an admin dispatches a marked drill event to a chosen or random micro-grid; its
workers get it through their own channels like an alarm, labelled a drill in every message and page; the times
they acknowledge and arrive on site make the drill report. A drill is never an alarm, a finding or a ledger
entry, so it cannot count in hazard KPIs, "days without a real hazard" or any score."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from psycopg import Connection
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from core.errors import ConflictError, NotFoundError
from field import drill_repo, patrol_repo, repo
from field import service as field_service
from field.repo import Scope
from field.schemas import Id, Instant, printable
from field.service import FieldInputError

log = logging.getLogger(__name__)

DRILL_LABEL = "【演练 DRILL】"
WINDOW = timedelta(hours=1)  # responses after this are late (the report says so)


class DrillCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    micro_grid_id: Id | None = Field(None, description="default: a random micro-grid of your communities")
    site_id: Id | None = Field(None, description="default: random")
    scenario: Annotated[
        str, StringConstraints(max_length=500), AfterValidator(printable), StringConstraints(min_length=1)
    ] = "模拟燃气泄漏 / simulated gas leak"
    at: Instant | None = Field(None, description="schedule it (within 30 days); default: now")


class ResponderRead(BaseModel):
    worker_id: str
    worker_name: str
    acknowledged_at: datetime | None
    arrived_at: datetime | None
    ack_s: float | None
    arrival_s: float | None


class DrillRead(BaseModel):
    """A drill and its report: who it went to and how fast they answered."""

    id: int
    drill: Literal[True] = True
    micro_grid_id: str
    site_id: str
    site_name: str
    scenario: str
    dispatched_at: datetime
    dispatched_by: str
    ends_at: datetime
    responders: list[ResponderRead]
    acknowledged: int
    arrived: int
    median_ack_s: float | None
    median_arrival_s: float | None


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    if not ordered:
        return None
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _secs(later: datetime | None, start: datetime) -> float | None:
    return None if later is None else round((later - start).total_seconds(), 1)


def _read(conn: Connection[Any], row: drill_repo.DrillRow) -> DrillRead:
    responses = drill_repo.list_responses(conn, drill_id=row.id)
    responders = [
        ResponderRead(
            worker_id=r.worker_id,
            worker_name=r.worker_name,
            acknowledged_at=r.acknowledged_at,
            arrived_at=r.arrived_at,
            ack_s=_secs(r.acknowledged_at, row.dispatched_at),
            arrival_s=_secs(r.arrived_at, row.dispatched_at),
        )
        for r in responses
    ]
    acks = [r.ack_s for r in responders if r.ack_s is not None]
    arrivals = [r.arrival_s for r in responders if r.arrival_s is not None]
    return DrillRead(
        id=row.id,
        micro_grid_id=row.micro_grid_id,
        site_id=row.site_id,
        site_name=row.site_name,
        scenario=row.scenario,
        dispatched_at=row.dispatched_at,
        dispatched_by=row.dispatched_by,
        ends_at=row.ends_at,
        responders=responders,
        acknowledged=len(acks),
        arrived=len(arrivals),
        median_ack_s=_median(acks),
        median_arrival_s=_median(arrivals),
    )


def dispatch(
    conn: Connection[Any],
    *,
    body: DrillCreate,
    actor: str,
    communities: Sequence[str] | None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> DrillRead:
    """Dispatch a drill to a micro-grid's workers (a random micro-grid and site unless chosen)."""
    now = now or datetime.now(UTC)
    at = body.at or now
    if at.tzinfo is None or at < now - timedelta(minutes=1) or at > now + timedelta(days=30):
        raise FieldInputError("at: a time with its zone, from now to 30 days ahead")
    pick = rng or random.SystemRandom()
    grids = patrol_repo.micro_grids_with_sites(conn, communities=communities)
    mg = body.micro_grid_id or (pick.choice(grids) if grids else None)
    if mg is None or mg not in grids:
        raise NotFoundError(f"micro-grid {body.micro_grid_id!r} not found (or it has no sites)")
    sites = drill_repo.site_ids(conn, micro_grid_id=mg)
    site_id = body.site_id or pick.choice(sites)
    if site_id not in sites:
        raise NotFoundError(f"site {site_id!r} is not in micro-grid {mg}")
    drill_id = drill_repo.insert_drill(
        conn, micro_grid_id=mg, site_id=site_id, scenario=body.scenario, at=at, by=actor, ends=at + WINDOW
    )
    site = repo.get_site(conn, site_id=site_id, scope=Scope())
    assert site is not None  # noqa: S101 - chosen from the micro-grid's sites
    title = f"{DRILL_LABEL} {body.scenario} — {site.name or site.id}"
    text = (
        f"{DRILL_LABEL} 这是演练，不是真实告警 / This is a drill, not a real alarm. {body.scenario} @ "
        f"{site.name or site.id}. 请确认并赶到现场 / Acknowledge and go on site: /drills/{drill_id}"
    )
    workers = field_service.tier_recipients(conn, tier="worker", site=site, now=at)
    for worker in workers:
        drill_repo.add_responder(conn, drill_id=drill_id, recipient=worker, title=title, body=text, at=at)
    log.info("drill %s dispatched by %s to %s (%s): %d worker(s)", drill_id, actor, mg, site_id, len(workers))
    return get_drill(conn, drill_id=drill_id, scope=Scope())


def _until(admin: bool) -> datetime | None:
    # a scheduled drill stays a surprise: workers see it from its dispatch on, admins at once
    return None if admin else datetime.now(UTC)


def get_drill(conn: Connection[Any], *, drill_id: int, scope: Scope, admin: bool = True) -> DrillRead:
    """A drill with its response times (a worker sees a scheduled one only once it is dispatched)."""
    row = drill_repo.get_drill(conn, drill_id=drill_id, scope=scope, until=_until(admin))
    if row is None:
        raise NotFoundError(f"drill {drill_id} not found")
    return _read(conn, row)


def list_drills(conn: Connection[Any], *, scope: Scope, admin: bool = True) -> list[DrillRead]:
    """Drills in scope, newest first (a worker's: the dispatched ones)."""
    return [_read(conn, r) for r in drill_repo.list_drills(conn, scope=scope, until=_until(admin))]


def respond(
    conn: Connection[Any],
    *,
    drill_id: int,
    worker_id: str | None,
    step: Literal["ack", "arrived"],
    scope: Scope,
    now: datetime | None = None,
) -> DrillRead:
    """A dispatched worker acknowledges, then reports arriving on site; each time is recorded once."""
    at = now or datetime.now(UTC)
    get_drill(conn, drill_id=drill_id, scope=scope, admin=False)
    row = drill_repo.lock_response(conn, drill_id=drill_id, worker_id=worker_id) if worker_id else None
    if row is None:
        raise ConflictError(f"drill {drill_id} was not dispatched to you: only its workers answer it")
    if (row.acknowledged_at if step == "ack" else row.arrived_at) is not None:
        raise ConflictError(f"you already answered drill {drill_id} ({step})")
    drill_repo.mark(conn, drill_id=drill_id, worker_id=row.worker_id, step=step, at=at)
    return get_drill(conn, drill_id=drill_id, scope=Scope())
