"""Training and drill attendance of a merchant's staff (三会 training, fire drills), recorded by an inspector on
site. Each record earns the policy's staff-training credit (M-R04, score/policy.yaml `credits`) through
score.service when the policy still allows one (its yearly cap, no lock, not at base); otherwise the record is
kept with the reason it earned nothing, so the merchant can see it."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field

from core.errors import ConflictError, NotFoundError
from core.readmodel import RowRead
from field import training_repo
from field.repo import Scope
from field.schemas import Instant, Text
from score import service as score_service

log = logging.getLogger(__name__)

CREDIT_CODE = "M-R04"


class TrainingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["training", "drill"] = "training"
    held_at: Instant | None = Field(None, description="default: now; not in the future, at most 90 days ago")
    attendees: int = Field(ge=1, le=500)
    names: Text = ""
    note: Text = ""


class TrainingRead(RowRead):
    ROW: ClassVar[type] = training_repo.TrainingRow

    id: int
    merchant_id: str
    kind: str
    held_at: datetime
    attendees: int
    names: str
    note: str
    recorded_by: str
    recorded_at: datetime
    ledger_entry_id: int | None
    no_credit: str


def _merchant(conn: Connection[Any], merchant_id: str, scope: Scope) -> None:
    if not training_repo.merchant_in_scope(conn, merchant_id=merchant_id, scope=scope):
        raise NotFoundError(f"merchant {merchant_id!r} not found")


def record_training(
    conn: Connection[Any],
    *,
    merchant_id: str,
    body: TrainingCreate,
    actor: str,
    scope: Scope,
    now: datetime | None = None,
) -> TrainingRead:
    """An inspector records attendance; the M-R04 credit is written when the policy allows it."""
    at = now or datetime.now(UTC)
    _merchant(conn, merchant_id, scope)
    held = body.held_at or at
    if held.tzinfo is None or held > at + timedelta(minutes=5) or held < at - timedelta(days=90):
        raise score_service.InvalidScoreInput("held_at: give when it was held, with its time zone, within 90 days")
    label = "消防培训 / staff training" if body.kind == "training" else "消防演练 / fire drill"
    entry_id, no_credit = None, ""
    try:
        entry = score_service.add_credit(
            conn,
            merchant_id=merchant_id,
            code=CREDIT_CODE,
            actor=actor,
            note=f"{label}, {body.attendees} attended",
            now=at,
        )
        entry_id = entry.id
    except (score_service.InvalidScoreInput, ConflictError) as exc:
        no_credit = str(exc)
    row = training_repo.insert_training(
        conn,
        merchant=merchant_id,
        kind=body.kind,
        held_at=held,
        attendees=body.attendees,
        names=body.names,
        note=body.note,
        by=actor,
        at=at,
        entry=entry_id,
        no_credit=no_credit,
    )
    log.info("training record %s for %s by %s: %s", row.id, merchant_id, actor, no_credit or f"credit {entry_id}")
    return TrainingRead.of(row)


def list_trainings(conn: Connection[Any], *, merchant_id: str, scope: Scope) -> list[TrainingRead]:
    """A merchant's training and drill records (a merchant its own)."""
    _merchant(conn, merchant_id, scope)
    return [TrainingRead.of(r) for r in training_repo.list_trainings(conn, merchant_id=merchant_id)]
