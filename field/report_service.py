"""Resident reports (居民随手报): a building's QR code opens a form that needs no account; what is reported reaches
the covering micro-grid worker (and climbs to the grid leader and the duty office while nobody takes it, as an
alarm's ladder does); the worker deals with it (or makes it a work order) and the resident reads the outcome and
rates it (居民评事) through the receipt they were given.

A link names its site and carries a keyed signature, so ids cannot be forged or walked; what a resident writes is
bounded and stripped of control characters (pages escape it); senders are rate-limited by a keyed hash of their
address, and each site by its own budget, in the database (so it holds across API processes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection
from pydantic import BaseModel, ValidationError

from core.errors import ConflictError, GridwatchError, NotFoundError
from field import repo, report_repo
from field import service as field_service
from field.photos import PhotoError, inspect_photo
from field.repo import Scope
from field.schemas import WorkOrderCreate, WorkOrderRead

log = logging.getLogger(__name__)

MAX_WHAT = 1000
MAX_PLACE = 200
MAX_NOTE = 500
PHONE_RE = re.compile(r"^[0-9+ -]{0,20}$")
# A sender: 3 reports in 10 minutes, 10 a day; a site: 30 an hour (a flood from many addresses stays bounded).
SENDER_WINDOW, SENDER_MAX, SENDER_DAY_MAX = timedelta(minutes=10), 3, 10
SITE_WINDOW, SITE_MAX = timedelta(hours=1), 30
# Nobody took it: the grid leader after 30 minutes, the community's duty office after 2 hours.
LADDER = ((1, timedelta(minutes=30), "leader"), (2, timedelta(hours=2), "community"))


class ReportRateLimitedError(GridwatchError):
    """Too many reports from this sender or on this site for now."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ReportInputError(GridwatchError):
    """A report that cannot be taken as sent (422)."""


class ReportRead(BaseModel):
    """A report as staff see it."""

    id: int
    site_id: str
    site_name: str
    micro_grid_id: str
    what: str
    place: str
    phone: str
    status: str
    created_at: datetime
    taken_by: str | None
    closed_at: datetime | None
    closed_by: str | None
    outcome: str
    work_order_id: int | None
    escalation: int
    rating: int | None
    rating_note: str
    photos: list[str]


class ReceiptView(BaseModel):
    """What the resident sees through their receipt: their report, its progress and outcome, and their rating."""

    site_name: str
    what: str
    place: str
    status: str
    created_at: datetime
    closed_at: datetime | None
    outcome: str
    rating: int | None


@dataclass(frozen=True, slots=True)
class Submitted:
    report_id: int
    receipt: str


def _sig(secret: str, site_id: str) -> str:
    mac = hmac.new(secret.encode(), f"resident-report:{site_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:12]).decode().rstrip("=")


def link_code(secret: str, site_id: str) -> str:
    """The code in a site's QR link: its id and a keyed signature (ids cannot be forged or walked)."""
    return f"{site_id}.{_sig(secret, site_id)}"


def site_of_code(secret: str, code: str) -> str | None:
    """The site a link code names, or None when the signature does not hold."""
    site_id, _, sig = code.rpartition(".")
    if not site_id or len(code) > 200 or not hmac.compare_digest(sig.encode(), _sig(secret, site_id).encode()):
        return None
    return site_id


def _hash(secret: str, kind: str, value: str) -> str:
    return hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def clean_text(value: str, limit: int) -> str:
    """What a resident typed, without control or format characters (newlines kept), trimmed and bounded."""
    kept = "".join(
        ch if ch in "\n\t" or not unicodedata.category(ch).startswith("C") else " "
        for ch in value.replace("\r\n", "\n")
    )
    text = re.sub(r"[ \t]+", " ", kept).strip()
    if len(text) > limit:
        raise ReportInputError(f"at most {limit} characters, please ({len(text)} sent)")
    return text


def report_site(conn: Connection[Any], *, secret: str, code: str) -> report_repo.ReportSite:
    """The site of a report link (404 for a forged or unknown one)."""
    site_id = site_of_code(secret, code)
    site = report_repo.get_site(conn, site_id=site_id) if site_id else None
    if site is None:
        raise NotFoundError("this report link is not valid: scan the code on the building again")
    return site


def _check_rate(conn: Connection[Any], *, client: str, site_id: str, now: datetime) -> None:
    recent, today, on_site = report_repo.count_recent(
        conn,
        client=client,
        site_id=site_id,
        client_since=now - SENDER_WINDOW,
        day_since=now - timedelta(days=1),
        site_since=now - SITE_WINDOW,
    )
    if recent >= SENDER_MAX:
        raise ReportRateLimitedError("you have sent several reports just now: please wait a few minutes", 600)
    if today >= SENDER_DAY_MAX:
        raise ReportRateLimitedError("you have sent many reports today: please call your micro-grid worker", 3600)
    if on_site >= SITE_MAX:
        raise ReportRateLimitedError("this building has many reports this hour: please try again later", 600)


def submit_report(
    conn: Connection[Any],
    *,
    secret: str,
    code: str,
    what: str,
    place: str = "",
    phone: str = "",
    photo: bytes | None = None,
    client: str,
    now: datetime | None = None,
) -> Submitted:
    """A resident's report through a site's link: checked, rate-limited, stored, and its worker told."""
    at = now or datetime.now(UTC)
    site = report_site(conn, secret=secret, code=code)
    what_text = clean_text(what, MAX_WHAT)
    if not what_text:
        raise ReportInputError("say what you saw")
    place_text = clean_text(place, MAX_PLACE)
    phone_text = phone.strip()
    if not PHONE_RE.match(phone_text):
        raise ReportInputError("a phone number has digits only (or leave it empty)")
    checked = None
    if photo:
        try:
            checked = inspect_photo(photo)
        except PhotoError as exc:
            raise ReportInputError(str(exc)) from None
    client_hash = _hash(secret, "client", client)
    _check_rate(conn, client=client_hash, site_id=site.id, now=at)
    receipt = secrets.token_urlsafe(18)
    report_id = report_repo.insert_report(
        conn,
        site_id=site.id,
        what=what_text,
        place=place_text,
        phone=phone_text,
        client=client_hash,
        receipt=_hash(secret, "receipt", receipt),
        at=at,
    )
    if photo and checked:
        report_repo.insert_photo(
            conn,
            id=secrets.token_hex(16),
            report=report_id,
            content_type=checked.content_type,
            size=checked.size,
            width=checked.width,
            height=checked.height,
            sha256=checked.sha256,
            data=checked.data,
            at=at,
        )
    _tell(conn, report_id=report_id, site=site, step=0, tier="worker", what=what_text, place=place_text, at=at)
    log.info("resident report %s on %s", report_id, site.id)
    return Submitted(report_id, receipt)


def _tell(
    conn: Connection[Any],
    *,
    report_id: int,
    site: report_repo.ReportSite,
    step: int,
    tier: str,
    what: str,
    place: str,
    at: datetime,
) -> list[str]:
    hierarchy = repo.SiteRow(site.id, site.kind, site.name, site.micro_grid_id, None, site.grid_id, site.community_id)
    title = f"居民报告 / Resident report #{report_id}: {site.name or site.id}"
    if step:
        title = f"居民报告无人接单 (第{step}级) / Resident report not taken (step {step}): {site.name or site.id}"
    body = f"{what[:300]}{' @ ' + place if place else ''} — /resident-reports/{report_id}"
    return [
        r.worker_id or ""
        for r in field_service.tier_recipients(conn, tier=tier, site=hierarchy, now=at)
        if report_repo.insert_notice(conn, report_id=report_id, step=step, recipient=r, title=title, body=body, at=at)
    ]


def escalate_untaken(conn: Connection[Any], *, now: datetime, limit: int = 500) -> int:
    """Climb the ladder for reports nobody took; returns the steps taken. Idempotent."""
    taken = 0
    ladder = [(step, after) for step, after, _ in LADDER]
    for row in report_repo.list_untaken(conn, now=now, ladder=ladder, limit=limit):
        site = report_repo.get_site(conn, site_id=row.site_id)
        assert site is not None  # noqa: S101 - a report's site is a foreign key
        climb_now = False  # the step before told nobody: the next one is taken at once, as an alarm's ladder does
        for step, after, tier in LADDER:
            if step <= row.escalation or (now < row.created_at + after and not climb_now):
                continue
            if report_repo.set_escalation(conn, report_id=row.id, step=step):
                told = _tell(
                    conn, report_id=row.id, site=site, step=step, tier=tier, what=row.what, place=row.place, at=now
                )
                climb_now = not told
                if climb_now:
                    log.warning("resident report %s: nobody of tier %s can be told; climbing on at once", row.id, tier)
                log.info("resident report %s not taken: step %s told %s", row.id, step, told)
                taken += 1
    return taken


def _read(conn: Connection[Any], row: report_repo.ReportRow) -> ReportRead:
    return ReportRead(
        id=row.id,
        site_id=row.site_id,
        site_name=row.site_name,
        micro_grid_id=row.micro_grid_id,
        what=row.what,
        place=row.place,
        phone=row.phone,
        status=row.status,
        created_at=row.created_at,
        taken_by=row.taken_by,
        closed_at=row.closed_at,
        closed_by=row.closed_by,
        outcome=row.outcome,
        work_order_id=row.work_order_id,
        escalation=row.escalation,
        rating=row.rating,
        rating_note=row.rating_note,
        photos=[f"/api/v1/resident-reports/{row.id}/photos/{p}" for p in report_repo.photo_ids(conn, report_id=row.id)],
    )


def receipt_view(conn: Connection[Any], *, secret: str, receipt: str) -> ReceiptView:
    """What the resident may read about their own report."""
    row = report_repo.get_by_receipt(conn, receipt_hash=_hash(secret, "receipt", receipt[:100]))
    if row is None:
        raise NotFoundError("no report has this receipt")
    return ReceiptView(
        site_name=row.site_name or row.site_id,
        what=row.what,
        place=row.place,
        status=row.status,
        created_at=row.created_at,
        closed_at=row.closed_at,
        outcome=row.outcome,
        rating=row.rating,
    )


def rate(
    conn: Connection[Any], *, secret: str, receipt: str, rating: int, note: str = "", now: datetime | None = None
) -> ReceiptView:
    """The resident rates the outcome once it is closed (居民评事), once."""
    row = report_repo.get_by_receipt(conn, receipt_hash=_hash(secret, "receipt", receipt[:100]), lock=True)
    if row is None:
        raise NotFoundError("no report has this receipt")
    if row.status != "closed":
        raise ConflictError("you can rate it once the worker has closed it")
    if row.rating is not None:
        raise ConflictError("this report has been rated already")
    if not 1 <= rating <= 5:
        raise ReportInputError("a rating is 1 to 5")
    report_repo.mark_rated(
        conn, report_id=row.id, rating=rating, note=clean_text(note, MAX_NOTE), at=now or datetime.now(UTC)
    )
    return receipt_view(conn, secret=secret, receipt=receipt)


def _report(conn: Connection[Any], report_id: int, scope: Scope, *, lock: bool = False) -> report_repo.ReportRow:
    row = report_repo.get_report(conn, report_id=report_id, scope=scope, lock=lock)
    if row is None:
        raise NotFoundError(f"resident report {report_id} not found")
    return row


def list_reports(conn: Connection[Any], *, scope: Scope, open_only: bool = True, limit: int = 200) -> list[ReportRead]:
    """Reports on the sites in scope, open ones first."""
    return [_read(conn, r) for r in report_repo.list_reports(conn, scope=scope, open_only=open_only, limit=limit)]


def get_report(conn: Connection[Any], *, report_id: int, scope: Scope) -> ReportRead:
    """One report (staff in scope)."""
    return _read(conn, _report(conn, report_id, scope))


def take(conn: Connection[Any], *, report_id: int, actor: str, scope: Scope, now: datetime | None = None) -> ReportRead:
    """A worker takes the report on (it stops climbing)."""
    row = _report(conn, report_id, scope, lock=True)
    if row.status != "new":
        raise ConflictError(f"resident report {report_id} is already {row.status} ({row.taken_by})")
    report_repo.mark_taken(conn, report_id=report_id, by=actor, at=now or datetime.now(UTC))
    return get_report(conn, report_id=report_id, scope=Scope())


def close(
    conn: Connection[Any], *, report_id: int, actor: str, outcome: str, scope: Scope, now: datetime | None = None
) -> ReportRead:
    """Dealt with: the outcome the resident reads (and may rate)."""
    row = _report(conn, report_id, scope, lock=True)
    if row.status == "closed":
        raise ConflictError(f"resident report {report_id} was already closed by {row.closed_by}")
    text = clean_text(outcome, MAX_WHAT)
    if not text:
        raise ReportInputError("say what was done: the resident reads it")
    report_repo.mark_closed(conn, report_id=report_id, by=actor, at=now or datetime.now(UTC), outcome=text)
    return get_report(conn, report_id=report_id, scope=Scope())


def to_work_order(
    conn: Connection[Any],
    *,
    report_id: int,
    actor: str,
    scope: Scope,
    kind: str = "other",
    title: str = "",
    party: str | None = None,
    severity: int | None = None,
    now: datetime | None = None,
) -> WorkOrderRead:
    """The report is a hazard to fix: open a work order on its site (what the resident wrote is its title and note,
    unless a check-list item says it) and take the report."""
    at = now or datetime.now(UTC)
    row = _report(conn, report_id, scope, lock=True)
    if row.status == "closed" or row.work_order_id is not None:
        raise ConflictError(f"resident report {report_id} is {row.status} and has work order {row.work_order_id}")
    try:
        body = WorkOrderCreate.model_validate(
            {
                "site_id": row.site_id,
                "kind": kind,
                "title": title or (row.what[:200] if kind == "other" else ""),
                "note": row.what,
                "party": party,
                "severity": severity,
            }
        )
    except ValidationError as exc:
        raise ReportInputError("; ".join(str(e["msg"]) for e in exc.errors())) from None
    order = field_service.open_work_order(conn, body=body, actor=actor, scope=scope, source="resident", now=at)
    report_repo.mark_taken(conn, report_id=report_id, by=actor, at=at, order_id=order.id)
    return order


def get_photo(conn: Connection[Any], *, report_id: int, photo_id: str, scope: Scope) -> repo.PhotoData:
    """A report's photo for staff whose scope includes its site."""
    found = report_repo.get_photo(conn, report_id=report_id, photo_id=photo_id, scope=scope)
    if found is None:
        raise NotFoundError(f"photo {photo_id} not found")
    return found
