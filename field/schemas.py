"""Wire and read models of the field stage (work orders, their history and photos)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.readmodel import RowRead
from field import patrol_repo, repo

# An id from a path, query or body: printable (PostgreSQL text cannot hold NUL; a control character is no id).
NO_CONTROLS = r"^[^\x00-\x1f\x7f]*$"
# Instants PostgreSQL and the deadline arithmetic can hold (an ISO time like 9999-12-31T23:59-14:00 is past year 9999
# in UTC); anything outside is a typing mistake.
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(3000, 1, 1, tzinfo=UTC)


def printable(value: str) -> str:
    """Free text without control or format characters (NUL, terminal escapes, bidi overrides that turn a message
    around), newlines kept, runs of spaces folded and the ends trimmed: it goes into pages and people's messages."""
    kept = "".join(
        ch if ch in "\n\t" or not unicodedata.category(ch).startswith("C") else " "
        for ch in value.replace("\r\n", "\n")
    )
    return re.sub(r"[ \t]+", " ", kept).strip()


def bounded(value: datetime) -> datetime:
    """An instant within EARLIEST..LATEST (a naive one is left to the caller, who says to give its zone)."""
    if value.tzinfo is None:
        return value
    try:
        ok = EARLIEST <= value.astimezone(UTC) < LATEST
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"a time between {EARLIEST:%Y} and {LATEST:%Y}, please")
    return value


Party = Literal["merchant", "landlord", "household", "community"]
# Free text (bounded, then made printable).
Text = Annotated[str, StringConstraints(max_length=2000), AfterValidator(printable)]
Title = Annotated[str, StringConstraints(max_length=200), AfterValidator(printable)]
Short = Annotated[str, StringConstraints(max_length=100), AfterValidator(printable)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROLS)]
Instant = Annotated[datetime, AfterValidator(bounded)]


class WorkOrderCreate(BaseModel):
    """A finding on site: a check-list item (kind) or free text (kind 'other' with a title)."""

    model_config = ConfigDict(extra="forbid")

    site_id: Id
    kind: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z_]+$")] = "other"
    title: Title = ""
    note: Text = ""
    party: Party | None = Field(None, description="who must fix it; default: the site's merchant, else community")
    party_name: Short = ""
    party_phone: Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9+\- ]*$")] = ""
    severity: int | None = Field(None, ge=1, le=4, description="1 critical .. 4 info; default: the item's")
    due_at: Instant | None = Field(None, description="default: by severity (1 d, 3 d, 7 d, 14 d)")

    @model_validator(mode="after")
    def _free_text_has_title(self) -> WorkOrderCreate:
        if self.kind == "other" and not self.title:
            raise ValueError("a free-text finding (kind 'other') needs a title saying what was found")
        return self


class FixedIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Text = ""


class ReinspectIn(BaseModel):
    """The re-inspection on site: pass closes the order; fail sets a new deadline (given, or by severity)."""

    model_config = ConfigDict(extra="forbid")
    passed: bool
    note: Text = ""
    due_at: Instant | None = None


class WorkOrderRead(RowRead):
    ROW: ClassVar[type] = repo.WorkOrderRow
    DERIVED: ClassVar[frozenset[str]] = frozenset({"overdue"})

    id: int
    site_id: str
    site_name: str
    micro_grid_id: str
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
    patrol_stop_id: int | None
    overdue: bool = False


class WorkOrderEventRead(RowRead):
    ROW: ClassVar[type] = repo.WorkOrderEventRow

    id: int
    at: datetime
    kind: str
    actor: str | None
    passed: bool | None
    note: str
    due_at: datetime | None


class PhotoRead(RowRead):
    ROW: ClassVar[type] = repo.PhotoRow
    DERIVED: ClassVar[frozenset[str]] = frozenset({"url"})

    id: str
    content_type: str
    size: int
    width: int
    height: int
    stage: str
    uploaded_by: str
    uploaded_at: datetime
    url: str = ""


class WorkOrderDetail(BaseModel):
    order: WorkOrderRead
    events: list[WorkOrderEventRead]
    photos: list[PhotoRead]


class WorkOrderPage(BaseModel):
    items: list[WorkOrderRead]
    next_offset: int | None


class ChecklistItemRead(BaseModel):
    code: str
    severity: int
    zh: str
    en: str


class ChecklistRead(BaseModel):
    kind: str
    zh: str
    en: str
    items: list[ChecklistItemRead]


# -- patrol rounds -----------------------------------------------------------------------------------------------

Household = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[0-9A-Za-z\-]+$")]


class RoundCreate(BaseModel):
    """An ad hoc round over sites of a micro-grid (all of them by default), or a door-to-door gas campaign over
    the households of one building (listed, or floors × units per floor numbered 101, 102, ... 201, ...)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["adhoc", "gas_campaign"] = "adhoc"
    micro_grid_id: Id | None = None
    site_ids: Annotated[list[Id], Field(max_length=500)] | None = None
    site_id: Id | None = None
    households: Annotated[list[Household], Field(max_length=2000)] | None = None
    floors: int | None = Field(None, ge=1, le=60)
    units_per_floor: int | None = Field(None, ge=1, le=40)
    title: Title = ""
    due_end: Instant | None = Field(None, description="default: end of today (adhoc) or in 14 days (campaign)")


class CheckIn(BaseModel):
    """At a stop: checked (every check-list item answered pass or fail) or nobody at home."""

    model_config = ConfigDict(extra="forbid")

    outcome: Literal["checked", "not_home"] = "checked"
    answers: Annotated[
        dict[Annotated[str, StringConstraints(max_length=64)], Literal["pass", "fail"]], Field(max_length=40)
    ] = {}
    note: Text = ""


class RoundRead(RowRead):
    ROW: ClassVar[type] = patrol_repo.RoundRow

    id: int
    kind: str
    micro_grid_id: str
    title: str
    due_start: datetime
    due_end: datetime
    created_by: str
    stops: int
    visited: int


class StopRead(RowRead):
    ROW: ClassVar[type] = patrol_repo.StopRow
    DERIVED: ClassVar[frozenset[str]] = frozenset({"photos"})

    id: int
    seq: int
    site_id: str
    site_name: str
    household: str
    checklist: str
    visited_at: datetime | None
    visited_by: str | None
    outcome: str | None
    answers: dict[str, str]
    note: str
    photos: list[str] = Field(default_factory=list)


class RoundDetail(BaseModel):
    round: RoundRead
    stops: list[StopRead]
    checklists: dict[str, ChecklistRead]


class CheckInResult(BaseModel):
    stop: StopRead
    work_orders: list[WorkOrderRead]


class CoverageLine(BaseModel):
    kind: str
    due: int
    visited: int
    checked: int
    not_home: int
    missed: int


class MissedStop(RowRead):
    ROW: ClassVar[type] = patrol_repo.MissedRow

    round_id: int
    title: str
    due_end: datetime
    stop_id: int
    site_id: str
    site_name: str
    household: str


class CoverageRead(BaseModel):
    since: datetime
    until: datetime
    micro_grid_id: str | None
    lines: list[CoverageLine]
    households_reached: int
    households_due: int
    missed: list[MissedStop]
