"""The score stage's read models: what the API, the pages and the CLI show of a merchant's standing."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, Field

from core.domain import Alarm, Severity
from core.readmodel import RowRead
from score.repo import FindingRow, LedgerRow


class MerchantScoreRead(BaseModel):
    """A merchant's standing, derived from the ledger."""

    merchant_id: str
    merchant_name: str
    community_id: str
    score: int = Field(description="base + sum of ledger points, clamped to 0..100")
    base: int
    tier: str
    tier_handling: str
    review: bool = Field(description="admission review (准入) flag")
    review_reasons: list[str]
    hazards_in_window: int = Field(description="verified hazards within the review window")
    review_window_days: int
    locked_until: datetime | None = Field(description="no restoration points before this")
    forced_tier: str | None
    forced_until: datetime | None
    entries: int
    as_of: datetime | None = Field(description="when the stored standing was derived; None = never stored")


class LedgerEntryRead(RowRead):
    """One ledger entry: what changed, why, from what, and who."""

    ROW = LedgerRow

    id: int
    merchant_id: str
    at: datetime
    points: int
    code: str
    reason: str
    alarm_id: int | None
    finding_id: int | None
    site_id: str | None
    actor: str | None
    hazard: bool
    lock_until: datetime | None
    forced_tier: str | None
    forced_until: datetime | None
    corrects_id: int | None
    created_at: datetime


class LedgerPage(BaseModel):
    items: list[LedgerEntryRead]
    next_before: int | None = Field(description="pass as before_id for the next (older) page")


class ScorePointRead(BaseModel):
    """The score right after a ledger entry (trend chart)."""

    at: datetime
    score: int
    tier: str
    entry_id: int | None
    points: int
    code: str | None


class FindingRead(RowRead):
    """An inspection finding and its rectification state."""

    ROW = FindingRow
    DERIVED = frozenset({"overdue"})

    id: int
    site_id: str
    merchant_id: str
    kind: str
    code: str
    note: str
    found_at: datetime
    found_by: str
    due_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    close_note: str | None
    overdue: bool = False


class OpenAlarmRead(RowRead):
    """An alarm still open on a merchant's premises."""

    ROW = Alarm
    DERIVED = frozenset({"severity"})

    @classmethod
    def of(cls, row: Any) -> Self:
        data = {k: getattr(row, k) for k in cls.model_fields if k not in cls.DERIVED}
        return cls(severity=Severity(row.severity).label, **data)

    id: int
    device_id: str
    site_id: str
    type: str
    severity: str
    active: bool
    acknowledged: bool
    raised_at: datetime
    message: str


class OpenItemsRead(BaseModel):
    """What is still open on a merchant's premises."""

    merchant_id: str
    alarms: list[OpenAlarmRead]
    findings: list[FindingRead]


class CommunityScoresRead(BaseModel):
    """Merchants of a community with their standing, lowest score first, and how many per tier."""

    community_id: str | None
    tiers: dict[str, int]
    review: int
    merchants: list[MerchantScoreRead]


class TickResult(BaseModel):
    """What one score tick did."""

    ran: bool
    now: datetime
    written: dict[str, int] = Field(default_factory=dict, description="entries written per code")
    merchants: int = 0


class Mismatch(BaseModel):
    merchant_id: str
    field: str
    stored: Any
    derived: Any


class RecomputeReport(BaseModel):
    """Stored snapshots compared with a fresh derivation from the ledger (at each snapshot's own as_of)."""

    merchants: int
    compared: int
    mismatches: list[Mismatch]
    refreshed: int
