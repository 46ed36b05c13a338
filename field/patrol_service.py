"""Patrol rounds: a route of stops answered with the check-list of each kind of place; every failed item becomes a
work order (field/service.py). Rounds are made by hand (ad hoc, or a door-to-door gas campaign over a building's
households, 不漏一户) or by the schedule (一日双巡: every micro-grid walked morning and afternoon), and coverage
says what was due, what was visited, which households were reached and which stops were missed."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from psycopg import Connection

from core.errors import ConflictError, NotFoundError
from field import checklists, patrol_repo, repo
from field import service as field_service
from field.photos import PhotoError, inspect_photo
from field.repo import Scope
from field.schemas import (
    CheckIn,
    CheckInResult,
    ChecklistItemRead,
    ChecklistRead,
    CoverageLine,
    CoverageRead,
    MissedStop,
    RoundCreate,
    RoundDetail,
    RoundRead,
    StopRead,
    WorkOrderCreate,
)
from field.service import FieldInputError

log = logging.getLogger(__name__)

# 一日双巡: the two daily rounds of a micro-grid, in the community's local time.
DAILY_SLOTS = (("am", time(8, 0), time(12, 0)), ("pm", time(14, 0), time(18, 0)))
CAMPAIGN_DAYS = 14
KITCHEN = "household_kitchen"
# A check-in is a visit: a round not yet due takes none (its coverage would show it walked before it was), but a
# worker who sets out a little early is not turned away.
EARLY = timedelta(hours=1)


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _checklist_read(kind: str) -> ChecklistRead:
    c = checklists.CHECKLISTS[kind]
    return ChecklistRead(
        kind=c.kind,
        zh=c.zh,
        en=c.en,
        items=[ChecklistItemRead(code=i.code, severity=i.severity, zh=i.zh, en=i.en) for i in c.items],
    )


def _households(body: RoundCreate) -> list[str]:
    if body.households:
        return list(dict.fromkeys(body.households))
    if body.floors and body.units_per_floor:
        return [
            f"{floor}{unit:02d}" for floor in range(1, body.floors + 1) for unit in range(1, body.units_per_floor + 1)
        ]
    raise FieldInputError("a gas campaign needs the building's households, or its floors and units per floor")


def _campaign_stops(
    conn: Connection[Any], body: RoundCreate, scope: Scope
) -> tuple[str, str, list[tuple[str, str, str]]]:
    site = repo.get_site(conn, site_id=body.site_id or "", scope=scope)
    if site is None:
        raise NotFoundError(f"site {body.site_id!r} not found")
    if site.kind != "building":
        raise FieldInputError(
            f"a door-to-door gas campaign goes over a building's households; {site.id} is a {site.kind}"
        )
    title = body.title or f"燃气安全入户 / Gas safety door to door: {site.name or site.id}"
    return site.micro_grid_id, title, [(site.id, h, KITCHEN) for h in _households(body)]


def _adhoc_stops(conn: Connection[Any], body: RoundCreate, scope: Scope) -> tuple[str, str, list[tuple[str, str, str]]]:
    mine = {s.id: s for s in repo.list_sites(conn, scope=scope)}
    if body.site_ids:
        missing = [s for s in body.site_ids if s not in mine]
        if missing:
            raise NotFoundError(f"site {missing[0]!r} not found")
        sites = [mine[s] for s in dict.fromkeys(body.site_ids)]
    else:
        sites = [s for s in mine.values() if s.micro_grid_id == body.micro_grid_id]
    if not sites:
        raise NotFoundError(f"micro-grid {body.micro_grid_id!r} not found (or it has no sites)")
    grids = {s.micro_grid_id for s in sites}
    if len(grids) > 1:
        raise FieldInputError("a round walks one micro-grid; these sites are in " + ", ".join(sorted(grids)))
    stops = [(s.id, "", checklists.checklist_for_site(s.kind).kind) for s in sites]
    return sites[0].micro_grid_id, body.title or f"巡查 / Patrol {sites[0].micro_grid_id}", stops


def create_round(
    conn: Connection[Any], *, body: RoundCreate, actor: str, scope: Scope, now: datetime | None = None
) -> RoundDetail:
    """An ad hoc round or a gas campaign, due from now to its end."""
    at = _now(now)
    if body.kind == "gas_campaign":
        mg, title, stops = _campaign_stops(conn, body, scope)
        default_end = at + timedelta(days=CAMPAIGN_DAYS)
    else:
        mg, title, stops = _adhoc_stops(conn, body, scope)
        default_end = at + timedelta(hours=12)
    due_end = body.due_end or default_end
    if due_end.tzinfo is None or due_end <= at:
        raise FieldInputError("give the round's end in the future, with its time zone")
    round_id = patrol_repo.insert_round(
        conn, kind=body.kind, micro_grid_id=mg, title=title[:200], due_start=at, due_end=due_end, created_by=actor
    )
    assert round_id is not None  # noqa: S101 - only scheduled rounds carry a key that can conflict
    patrol_repo.insert_stops(conn, round_id=round_id, stops=stops)
    log.info("patrol round %s (%s) on %s by %s: %d stops", round_id, body.kind, mg, actor, len(stops))
    return get_round(conn, round_id=round_id, scope=Scope())


def schedule_rounds(
    conn: Connection[Any], *, day: date, tz: str, communities: Sequence[str] | None = None, actor: str = "schedule"
) -> int:
    """一日双巡: the morning and afternoon rounds of every micro-grid (of these communities) for one local day
    (idempotent: a round per micro-grid, day and slot)."""
    zone = ZoneInfo(tz)
    made = patrol_repo.schedule_daily_rounds(
        conn,
        day=day.isoformat(),
        slots=[
            {
                "slot": slot,
                "due_start": datetime.combine(day, start, zone).isoformat(),
                "due_end": datetime.combine(day, end, zone).isoformat(),
            }
            for slot, start, end in DAILY_SLOTS
        ],
        checklists={kind: checklists.checklist_for_site(kind).kind for kind in checklists.SITE_CHECKLIST},
        default_checklist=checklists.checklist_for_site("").kind,
        actor=actor,
        communities=communities,
    )
    if made:
        log.info("patrol schedule: %d round(s) for %s", made, day.isoformat())
    return made


def _round(conn: Connection[Any], round_id: int, scope: Scope) -> patrol_repo.RoundRow:
    row = patrol_repo.get_round(conn, round_id=round_id, scope=scope)
    if row is None:
        raise NotFoundError(f"patrol round {round_id} not found")
    return row


def get_round(conn: Connection[Any], *, round_id: int, scope: Scope) -> RoundDetail:
    """A round with its stops and the check-lists they answer."""
    row = _round(conn, round_id, scope)
    stops = patrol_repo.list_stops(conn, round_id=round_id)
    photos = patrol_repo.stop_photo_ids(conn, round_id=round_id)
    reads = []
    for stop in stops:
        read = StopRead.of(stop)
        read.photos = [f"/api/v1/patrol-rounds/{round_id}/photos/{p}" for p in photos.get(stop.id, [])]
        reads.append(read)
    return RoundDetail(
        round=RoundRead.of(row),
        stops=reads,
        checklists={k: _checklist_read(k) for k in sorted({s.checklist for s in stops})},
    )


def list_rounds(
    conn: Connection[Any], *, scope: Scope, since: datetime, until: datetime, limit: int = 200
) -> list[RoundRead]:
    """Rounds in scope overlapping the period."""
    return [RoundRead.of(r) for r in patrol_repo.list_rounds(conn, scope=scope, since=since, until=until, limit=limit)]


def check_in(
    conn: Connection[Any],
    *,
    round_id: int,
    stop_id: int,
    body: CheckIn,
    actor: str,
    scope: Scope,
    now: datetime | None = None,
) -> CheckInResult:
    """The worker at a stop: the visit and its answers; every failed item becomes a work order on the site."""
    at = _now(now)
    row = _round(conn, round_id, scope)
    if at < row.due_start - EARLY:
        raise ConflictError(f"patrol round {round_id} starts at {row.due_start.isoformat()}: check in on the round")
    stop = patrol_repo.lock_stop(conn, round_id=round_id, stop_id=stop_id)
    if stop is None:
        raise NotFoundError(f"stop {stop_id} is not on patrol round {round_id}")
    if stop.visited_at is not None:
        raise ConflictError(f"stop {stop_id} was already checked in by {stop.visited_by}")
    items = {i.code for i in checklists.CHECKLISTS[stop.checklist].items}
    answers: dict[str, str] = dict(body.answers) if body.outcome == "checked" else {}
    unknown = sorted(set(answers) - items)
    if unknown:
        raise FieldInputError(f"{unknown[0]!r} is not on the {stop.checklist} check-list")
    if body.outcome == "checked" and set(answers) != items:
        raise FieldInputError(f"answer every item of the check-list: missing {', '.join(sorted(items - set(answers)))}")
    patrol_repo.check_in(conn, stop_id=stop_id, at=at, by=actor, outcome=body.outcome, answers=answers, note=body.note)
    orders = []
    for code in (c for c in answers if answers[c] == "fail"):
        party = "household" if stop.household else None
        order = WorkOrderCreate(
            site_id=stop.site_id,
            kind=code,
            note=body.note,
            party=party,
            party_name=f"{stop.household}" if stop.household else "",
        )
        orders.append(
            field_service.open_work_order(
                conn, body=order, actor=actor, scope=Scope(), source="patrol", patrol_stop_id=stop_id, now=at
            )
        )
    stop = patrol_repo.lock_stop(conn, round_id=round_id, stop_id=stop_id)
    assert stop is not None  # noqa: S101 - locked above
    return CheckInResult(stop=StopRead.of(stop), work_orders=orders)


def coverage(
    conn: Connection[Any],
    *,
    scope: Scope,
    since: datetime,
    until: datetime,
    micro_grid_id: str | None = None,
    now: datetime | None = None,
) -> CoverageRead:
    """Stops due vs visited per kind of round, households reached in gas campaigns, and the stops missed."""
    at = _now(now)
    rows = patrol_repo.coverage(conn, scope=scope, since=since, until=until, now=at, micro_grid_id=micro_grid_id)
    lines = [CoverageLine(kind=k, due=d, visited=v, checked=c, not_home=n, missed=m) for k, d, v, c, n, m in rows]
    campaign = next((line for line in lines if line.kind == "gas_campaign"), None)
    missed = patrol_repo.missed_stops(conn, scope=scope, since=since, until=until, now=at, micro_grid_id=micro_grid_id)
    return CoverageRead(
        since=since,
        until=until,
        micro_grid_id=micro_grid_id,
        lines=lines,
        households_reached=campaign.checked if campaign else 0,
        households_due=campaign.due if campaign else 0,
        missed=[MissedStop.of(m) for m in missed],
    )


MAX_STOP_PHOTOS = 5


def add_stop_photo(
    conn: Connection[Any],
    *,
    round_id: int,
    stop_id: int,
    data: bytes,
    actor: str,
    scope: Scope,
    now: datetime | None = None,
) -> str:
    """A photo taken at a stop (checked by its bytes like every photo); returns its address."""
    at = _now(now)
    _round(conn, round_id, scope)
    stop = patrol_repo.lock_stop(conn, round_id=round_id, stop_id=stop_id)
    if stop is None:
        raise NotFoundError(f"stop {stop_id} is not on patrol round {round_id}")
    if patrol_repo.count_stop_photos(conn, stop_id=stop_id) >= MAX_STOP_PHOTOS:
        raise ConflictError(f"stop {stop_id} already has {MAX_STOP_PHOTOS} photos")
    try:
        photo = inspect_photo(data)
    except PhotoError as exc:
        raise FieldInputError(str(exc)) from None
    photo_id = secrets.token_hex(16)
    patrol_repo.insert_stop_photo(
        conn,
        id=photo_id,
        stop=stop_id,
        content_type=photo.content_type,
        size=photo.size,
        width=photo.width,
        height=photo.height,
        sha256=photo.sha256,
        data=photo.data,
        by=actor,
        at=at,
    )
    return f"/api/v1/patrol-rounds/{round_id}/photos/{photo_id}"


def get_stop_photo(conn: Connection[Any], *, round_id: int, photo_id: str, scope: Scope) -> repo.PhotoData:
    """A check-in photo, for staff whose scope includes the round."""
    found = patrol_repo.get_stop_photo(conn, round_id=round_id, photo_id=photo_id, scope=scope)
    if found is None:
        raise NotFoundError(f"photo {photo_id} not found")
    return found
