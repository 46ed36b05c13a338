"""API models (XRead for responses, XCreate/XIn for requests)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from core.domain import Disposition, Severity


class AlarmRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    device_id: str
    site_id: str
    micro_grid_id: str
    type: str
    rule_id: str
    severity: str = Field(description="critical | major | minor | info")
    priority: str = Field(description="P1..P4")
    active: bool
    acknowledged: bool
    raised_at: datetime
    last_seen_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    disposition: str | None
    value: float | None
    peak_value: float | None
    count: int
    message: str

    @classmethod
    def of(cls, row: object) -> AlarmRead:
        sev = Severity(row.severity)  # type: ignore[attr-defined]
        data = {k: getattr(row, k) for k in cls.model_fields if k not in ("severity", "priority")}
        return cls(severity=sev.label, priority=sev.priority, **data)


class AlarmPage(BaseModel):
    items: list[AlarmRead]
    next_before: int | None = Field(description="pass as ?before= for the next page; null when done")


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    disposition: Disposition
    note: str | None = Field(default=None, max_length=2000)


class Problem(BaseModel):
    detail: str
