"""Merchant safety score (score/service.py): score, tier, trend, ledger, open hazards and findings;
inspection findings recorded by workers; admins' corrections and the community list by tier."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from psycopg import Connection

from api import auth
from api import repo as api_repo
from api.deps import ERRORS, Admin, Anyone, Conn, Staff
from api.schemas import CommunityScoresPage, CorrectionCreate, FindingClose, FindingCreate, Me, Page, Problem
from core.errors import ConflictError, NotFoundError
from field import service as field_service
from score import service as score_service
from score.schemas import (
    FindingRead,
    LedgerEntryRead,
    LedgerPage,
    MerchantScoreRead,
    OpenItemsRead,
    ScorePointRead,
)

router = APIRouter(prefix="/api/v1", responses=ERRORS)
MerchantId = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/me", tags=["auth"])
def me(who: Anyone) -> Me:
    """Who this token or session is."""
    return Me(
        token_id=who.token_id,
        role=who.role,
        worker_id=who.worker_id,
        merchant_id=who.merchant_id,
        worker_role=who.worker_role,
        communities=who.community_scope,
    )


def scoped_merchant(conn: Connection[Any], who: auth.Principal, merchant_id: str) -> str:
    """The merchant's name if the caller may see it: a merchant only itself, a worker the merchants with a site in
    their micro-grids, an admin all. 404 otherwise, so others' existence is not revealed."""
    found = api_repo.get_merchant_in_scope(
        conn,
        merchant_id=merchant_id,
        worker_id=who.worker_scope,
        own_merchant_id=who.merchant_scope,
        communities=who.community_scope,
    )
    if found is None:
        raise NotFoundError(f"merchant {merchant_id!r} not found")
    return found[1]


@router.get("/merchants/{merchant_id}/score", tags=["score"])
def get_score(merchant_id: MerchantId, conn: Conn, who: Anyone) -> MerchantScoreRead:
    """Score (base + ledger, clamped 0..100), tier and admission-review flag."""
    scoped_merchant(conn, who, merchant_id)
    return score_service.get_score(conn, merchant_id=merchant_id)


@router.get("/merchants/{merchant_id}/trend", tags=["score"])
def get_trend(
    merchant_id: MerchantId,
    conn: Conn,
    who: Anyone,
    since: datetime | None = None,
    until: datetime | None = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Page[ScorePointRead]:
    """The score after each ledger entry, oldest first (paginated by offset)."""
    scoped_merchant(conn, who, merchant_id)
    points = score_service.get_trend(conn, merchant_id=merchant_id, since=since, until=until)
    return Page[ScorePointRead](
        items=points[offset : offset + limit], next_offset=offset + limit if len(points) > offset + limit else None
    )


@router.get("/merchants/{merchant_id}/ledger", tags=["score"])
def get_ledger(
    merchant_id: MerchantId,
    conn: Conn,
    who: Anyone,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="cursor from next_before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> LedgerPage:
    """Every change of the score with its reason and alarm or finding, newest first."""
    scoped_merchant(conn, who, merchant_id)
    return score_service.get_ledger(conn, merchant_id=merchant_id, before_id=before, limit=limit)


@router.get("/merchants/{merchant_id}/open", tags=["score"])
def get_open_items(merchant_id: MerchantId, conn: Conn, who: Anyone) -> OpenItemsRead:
    """Open hazards (alarms not yet resolved) and unrectified inspection findings on the merchant's premises."""
    scoped_merchant(conn, who, merchant_id)
    return score_service.get_open_items(conn, merchant_id=merchant_id)


@router.get("/scores", tags=["score"])
def list_scores(
    conn: Conn,
    who: Admin,
    community: Annotated[str | None, Query(max_length=64)] = None,
    tier: Annotated[str | None, Query(max_length=4)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CommunityScoresPage:
    """Merchants by standing, lowest score first (optionally one community and tier), with counts per tier. An
    admin limited to one community gets theirs; limited to several, names one."""
    scope = who.community_scope
    if scope is not None:
        if community is None and len(scope) == 1:
            community = scope[0]
        elif community is None:
            raise HTTPException(422, f"community: your token covers {', '.join(scope)}: choose one (?community=)")
        elif community not in scope:
            raise NotFoundError(f"community {community!r} not found")
    result = score_service.list_community_scores(conn, community_id=community, tier=tier)
    items = result.merchants[offset : offset + limit]
    return CommunityScoresPage(
        community_id=result.community_id,
        tiers=result.tiers,
        review=result.review,
        items=items,
        next_offset=offset + limit if len(result.merchants) > offset + limit else None,
    )


@router.post("/findings", tags=["score"], status_code=201, responses={409: {"model": Problem}})
def record_finding(body: FindingCreate, conn: Conn, who: Staff) -> FindingRead:
    """A worker records a hazard seen on a merchant's site by inspection (deducts per the policy, with a
    rectification deadline)."""
    with conn.transaction():
        if not api_repo.site_in_scope(
            conn, site_id=body.site_id, worker_id=who.worker_scope, merchant_id=None, communities=who.community_scope
        ):
            raise NotFoundError(f"site {body.site_id!r} not found")
        note = body.note if body.alarm_id is None else f"{body.note} (alarm {body.alarm_id})".strip()
        return score_service.record_finding(
            conn, site_id=body.site_id, kind=body.kind, actor=who.actor, note=note, due_at=body.due_at
        )


@router.post("/findings/{finding_id}/close", tags=["score"], responses={409: {"model": Problem}})
def close_finding(
    finding_id: Annotated[int, Path(ge=1, le=2**62)], body: FindingClose, conn: Conn, who: Staff
) -> FindingRead:
    """The rectification was verified on site: on time restores part of the deduction."""
    with conn.transaction():
        site = api_repo.get_finding_site(conn, finding_id=finding_id)
        if site is None or not api_repo.site_in_scope(
            conn, site_id=site, worker_id=who.worker_scope, merchant_id=None, communities=who.community_scope
        ):
            raise NotFoundError(f"finding {finding_id} not found")
        order = field_service.order_of_finding(conn, finding_id=finding_id)
        if order is not None:
            raise ConflictError(
                f"finding {finding_id} is work order {order}'s: it closes only by that order's on-site re-inspection "
                f"(POST /api/v1/work-orders/{order}/reinspection)"
            )
        return score_service.close_finding(conn, finding_id=finding_id, actor=who.actor, note=body.note)


@router.post(
    "/admin/merchants/{merchant_id}/corrections", tags=["score"], status_code=201, responses={409: {"model": Problem}}
)
def add_correction(merchant_id: MerchantId, body: CorrectionCreate, conn: Conn, who: Admin) -> LedgerEntryRead:
    """An admin's compensating ledger entry (the ledger is never edited)."""
    with conn.transaction():
        if who.community_scope is not None:
            scoped_merchant(conn, who, merchant_id)
        return score_service.add_correction(
            conn,
            merchant_id=merchant_id,
            actor=who.actor,
            reason=body.reason,
            points=body.points,
            corrects_entry_id=body.corrects_entry_id,
        )


@dataclass
class MerchantView:
    """Everything the merchant score page shows."""

    merchant_id: str
    merchant_name: str
    score: MerchantScoreRead
    trend: list[ScorePointRead]
    ledger: list[LedgerEntryRead]
    open: OpenItemsRead


def merchant_view(conn: Connection[Any], who: auth.Principal, merchant_id: str) -> MerchantView:
    """Score, trend, the latest ledger entries and open items, for the page."""
    name = scoped_merchant(conn, who, merchant_id)
    return MerchantView(
        merchant_id=merchant_id,
        merchant_name=name,
        score=score_service.get_score(conn, merchant_id=merchant_id),
        trend=score_service.get_trend(conn, merchant_id=merchant_id)[-200:],
        ledger=score_service.get_ledger(conn, merchant_id=merchant_id, limit=50).items,
        open=score_service.get_open_items(conn, merchant_id=merchant_id),
    )
