"""The board: the open alarms of the caller's scope, those that have climbed the escalation ladder to the caller's
tier first (the longest waiting first), each with how long it has waited and how far it has climbed.

The ladder is notify's (the escalation row of each alarm, read with the alarm); which tiers a step has reached
comes from the same escalation policy notify runs with (GRIDWATCH_NOTIFY_POLICY).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from psycopg import Connection

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Conn, Staff
from api.schemas import AlarmRead, BoardItem, BoardRead
from notify.policy import Policy

router = APIRouter(prefix="/api/v1", tags=["board"], responses=ERRORS)
MAX_BOARD = 200


def policy_of(request: Request) -> Policy:
    """The escalation policy the app was started with."""
    return request.app.state.policy  # type: ignore[no-any-return]


def tiers_reached(policy: Policy, severity: int, step: int | None) -> list[str]:
    """Every tier the ladder's steps 0..step have told, in ladder order."""
    if step is None:
        return []
    out: list[str] = []
    for s in policy.for_severity(severity).steps[: step + 1]:
        out += [t for t in s.tiers if t not in out]
    return out


def board_item(row: api_repo.AlarmInSite, *, policy: Policy, tier: str | None, now: datetime) -> BoardItem:
    """One alarm as the board shows it to a person of `tier` (None: an admin, for whom any climb counts)."""
    reached = tiers_reached(policy, row.severity, row.ladder_step)
    steps = policy.for_severity(row.severity).steps
    top = list(steps[row.ladder_step].tiers) if row.ladder_step is not None and row.ladder_step < len(steps) else []
    escalated = bool(row.ladder_step) and not row.acknowledged and row.closed_at is None
    waiting = None if row.acknowledged or row.closed_at else max(0.0, (now - row.raised_at).total_seconds())
    return BoardItem(
        alarm=AlarmRead.of(row),
        site_name=row.site_name,
        site_address=row.site_address,
        ladder_step=row.ladder_step,
        tiers_reached=reached,
        escalated_to=top if escalated else [],
        escalated_at=row.escalated_at if escalated else None,
        escalated=escalated,
        reached_you=escalated and (tier is None or tier in reached),
        waiting_s=waiting,
    )


def rank(item: BoardItem) -> str:
    """The board's order as one sortable string (the page's script keeps live rows in it): alarms that have
    climbed to the viewer's tier first, the highest step and then the longest waiting first; then the other
    unacknowledged ones, those climbing towards the viewer's tier before the rest, the most severe and newest
    first; then the acknowledged ones."""
    a = item.alarm
    group = 0 if item.reached_you else 1 if not a.acknowledged else 2
    step = min(item.ladder_step or 0, 9) if item.escalated else 0
    order = int(a.raised_at.timestamp()) if group == 0 else 10**12 - a.id
    severity = {"critical": 4, "major": 3, "minor": 2, "info": 1}[a.severity]
    return f"{group}{9 - step}{9 - severity}{order:013d}"


def board_rows(
    conn: Connection[Any], who: auth.Principal, policy: Policy, *, limit: int = MAX_BOARD
) -> list[tuple[api_repo.AlarmInSite, BoardItem]]:
    """The open alarms of the caller's scope in the board's order, each with what the board says of it."""
    rows = api_repo.list_alarms(
        conn,
        worker_id=who.worker_scope,
        merchant_id=None,
        communities=who.community_scope,
        open_only=True,
        active=None,
        acknowledged=None,
        min_severity=None,
        site_id=None,
        before_id=None,
        limit=limit,
    )
    now = datetime.now(UTC)
    items = [(r, board_item(r, policy=policy, tier=who.tier, now=now)) for r in rows]
    return sorted(items, key=lambda pair: rank(pair[1]))


@router.get("/board")
def get_board(
    request: Request, conn: Conn, who: Staff, limit: Annotated[int, Query(ge=1, le=MAX_BOARD)] = MAX_BOARD
) -> BoardRead:
    """The caller's board: open alarms of their scope, those escalated to their tier first (the highest step and
    the longest waiting first), each with the tiers its ladder has reached and how long it has waited."""
    rows = board_rows(conn, who, policy_of(request), limit=limit)
    return BoardRead(tier=who.tier, items=[item for _, item in rows])
