"""Work orders (隐患整改单): opened from a check-list item or free text on any site, for any responsible party;
photos; "fixed" reported by the party or the worker; closed only by an on-site re-inspection (pass closes, fail
sets a new deadline); overdue orders climb a ladder of notices. A merchant's order on a kind the score policy
knows is also the score finding (score.service), so the ledger sees the verified hazard, the overdue weeks and
the on-time fix exactly as the policy says."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from core import actionlink, routing
from core import repo as core_repo
from core.errors import ConflictError, GridwatchError, NotFoundError
from field import checklists, repo
from field.photos import PhotoError, inspect_photo
from field.repo import Scope
from field.schemas import (
    PhotoRead,
    ReinspectIn,
    WorkOrderCreate,
    WorkOrderDetail,
    WorkOrderEventRead,
    WorkOrderRead,
)
from score import service as score_service
from score.policy import active_policies

log = logging.getLogger(__name__)

MAX_PHOTOS = 20
PHOTO_STAGES = ("found", "fixed", "reinspection")
# The overdue ladder: (step, time past the deadline, who is told). Like an alarm's, it starts with the micro-grid
# worker (and the merchant who must fix it), then climbs to the grid leader and the community's duty office.
LADDER = ((1, timedelta(0), "worker"), (2, timedelta(days=1), "leader"), (3, timedelta(days=3), "community"))
RETRY = (timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=10), timedelta(hours=1))
MAX_ATTEMPTS = 8


class FieldInputError(GridwatchError):
    """A work order request that cannot be carried out as given (422)."""


# (urls, title, body, recipient) -> one (ok, detail) per channel; notify's Sender, wired by the composition root.
SendFn = Callable[[list[str], str, str, str], Sequence[tuple[bool, str]]]


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def tier_recipients(conn: Connection[Any], *, tier: str, site: repo.SiteRow, now: datetime) -> list[repo.Recipient]:
    """Who of a ladder tier hears about a site now, decided as for an alarm (core.routing): the covering workers on
    duty by their roster, else on call, else all of them; those without a channel cannot be told."""
    workers = core_repo.get_community_workers(
        conn, community_id=site.community_id, grid_id=site.grid_id, micro_grid_id=site.micro_grid_id
    )
    tz = core_repo.get_community_timezone(conn, community_id=site.community_id) or "UTC"
    chosen = routing.tier_recipients(tier, workers, merchant=None, now=now, tz=tz)
    return [repo.Recipient(w.id, None, w.name, w.locale, list(w.notify_urls)) for w in chosen if w.notify_urls]


def _read(row: repo.WorkOrderRow, now: datetime) -> WorkOrderRead:
    read = WorkOrderRead.of(row)
    read.overdue = row.status != "closed" and row.due_at < now
    return read


def _order(conn: Connection[Any], order_id: int, scope: Scope, *, lock: bool = False) -> repo.WorkOrderRow:
    row = repo.get_work_order(conn, order_id=order_id, scope=scope, lock=lock)
    if row is None:
        raise NotFoundError(f"work order {order_id} not found")
    return row


def _deadline(due_at: datetime | None, default: datetime, at: datetime) -> datetime:
    if due_at is None:
        return default
    if due_at.tzinfo is None:
        raise FieldInputError("give the deadline with its time zone (e.g. 2026-05-01T18:00+08:00)")
    if due_at <= at:
        raise FieldInputError(f"the deadline {due_at.isoformat()} is not in the future")
    return due_at


def _party(body: WorkOrderCreate, site: repo.SiteRow) -> str:
    party = body.party or ("merchant" if site.merchant_id else "community")
    if party == "merchant" and site.merchant_id is None:
        raise FieldInputError(
            f"site {site.id} belongs to no merchant: name the landlord, household or community as the party"
        )
    return party


def open_work_order(
    conn: Connection[Any],
    *,
    body: WorkOrderCreate,
    actor: str,
    scope: Scope,
    source: str = "inspection",
    patrol_stop_id: int | None = None,
    now: datetime | None = None,
) -> WorkOrderRead:
    """Record a finding as an order with a deadline by severity; a merchant's order on a policy kind deducts."""
    at = _now(now)
    site = repo.get_site(conn, site_id=body.site_id, scope=scope)
    if site is None:
        raise NotFoundError(f"site {body.site_id!r} not found")
    item = checklists.item(body.kind)
    if item is None and body.kind != checklists.OTHER:
        raise FieldInputError(f"unknown check-list item {body.kind!r}; use a check-list item or 'other'")
    party = _party(body, site)
    severity = body.severity or (item.severity if item else 3)
    due = _deadline(body.due_at, at + checklists.rectify_time(severity), at)
    title = body.title or (f"{item.zh} / {item.en}" if item else body.kind)
    finding_id = None
    merchant_id = site.merchant_id if party == "merchant" else None
    policy = active_policies().for_community(site.community_id)
    if merchant_id is not None and policy.finding(body.kind) is not None:
        finding = score_service.record_finding(
            conn, site_id=site.id, kind=body.kind, actor=actor, note=f"{title} {body.note}".strip(), due_at=due, now=at
        )
        finding_id = finding.id
    order_id = repo.insert_work_order(
        conn,
        site_id=site.id,
        party=party,
        party_name=body.party_name,
        party_phone=body.party_phone,
        merchant_id=merchant_id,
        kind=body.kind,
        title=title[:200],
        note=body.note,
        severity=severity,
        source=source,
        opened_at=at,
        opened_by=actor,
        due_at=due,
        finding_id=finding_id,
        patrol_stop_id=patrol_stop_id,
    )
    repo.insert_event(conn, order_id=order_id, at=at, kind="opened", actor=actor, note=body.note, due_at=due)
    row = _order(conn, order_id, Scope())
    if merchant_id is not None:
        _tell_merchant(conn, row, step=0, at=at)
    log.info("work order %s opened on %s by %s (%s, due %s)", order_id, site.id, actor, body.kind, due.isoformat())
    return _read(row, at)


def report_fixed(
    conn: Connection[Any], *, order_id: int, actor: str, scope: Scope, note: str = "", now: datetime | None = None
) -> WorkOrderRead:
    """The party (or the worker for them) reports it fixed; the order waits for a re-inspection."""
    at = _now(now)
    row = _order(conn, order_id, scope, lock=True)
    if row.status != "open":
        raise ConflictError(f"work order {order_id} is {row.status}: only an open order can be reported fixed")
    repo.mark_fixed(conn, order_id=order_id, actor=actor, at=at)
    repo.insert_event(conn, order_id=order_id, at=at, kind="fixed", actor=actor, note=note)
    return _read(_order(conn, order_id, Scope()), at)


def reinspect(
    conn: Connection[Any], *, order_id: int, body: ReinspectIn, actor: str, scope: Scope, now: datetime | None = None
) -> WorkOrderRead:
    """The on-site re-inspection, the only way an order closes: pass closes it (and its score finding, on time or
    late per the policy); fail reopens it with a new, shorter deadline."""
    at = _now(now)
    row = _order(conn, order_id, scope, lock=True)
    if row.status == "closed":
        raise ConflictError(f"work order {order_id} was already closed by {row.closed_by} after a re-inspection")
    due = None
    if not body.passed:
        due = _deadline(body.due_at, at + checklists.rectify_time(row.severity, again=True), at)
    repo.mark_reinspected(conn, order_id=order_id, actor=actor, at=at, passed=body.passed, due_at=due)
    repo.insert_event(
        conn, order_id=order_id, at=at, kind="reinspected", actor=actor, passed=body.passed, note=body.note, due_at=due
    )
    if not body.passed:  # the party must meet a new, shorter deadline: it is told, as when the order was opened
        _tell_merchant(conn, _order(conn, order_id, Scope()), step=0, at=at)
    if body.passed and row.finding_id is not None:
        score_service.close_finding(
            conn, finding_id=row.finding_id, actor=actor, note=f"work order {order_id} re-inspected", now=at
        )
    log.info("work order %s re-inspected by %s: %s", order_id, actor, "pass" if body.passed else "fail")
    return _read(_order(conn, order_id, Scope()), at)


def add_photo(
    conn: Connection[Any],
    *,
    order_id: int,
    data: bytes,
    stage: str,
    actor: str,
    scope: Scope,
    now: datetime | None = None,
) -> PhotoRead:
    """Keep a checked photo of an order under a random id (FieldInputError if it is not a photo we keep)."""
    at = _now(now)
    if stage not in PHOTO_STAGES:
        raise FieldInputError(f"stage must be one of {', '.join(PHOTO_STAGES)}")
    row = _order(conn, order_id, scope, lock=True)
    if scope.merchant is not None and stage != "fixed":
        # the party that must fix it shows its fix; what was found and the re-inspection are the inspectors' record
        raise FieldInputError("a merchant's photos show the fix: send them with stage 'fixed'")
    if row.status == "closed":
        raise ConflictError(f"work order {order_id} is closed: no more photos")
    if repo.count_photos(conn, order_id=order_id) >= MAX_PHOTOS:
        raise ConflictError(f"work order {order_id} already has {MAX_PHOTOS} photos")
    try:
        photo = inspect_photo(data)
    except PhotoError as exc:
        raise FieldInputError(str(exc)) from None
    photo_id = secrets.token_hex(16)
    repo.insert_photo(
        conn,
        id=photo_id,
        order=order_id,
        content_type=photo.content_type,
        size=photo.size,
        width=photo.width,
        height=photo.height,
        sha256=photo.sha256,
        data=photo.data,
        stage=stage,
        by=actor,
        at=at,
    )
    repo.insert_event(conn, order_id=order_id, at=at, kind="photo", actor=actor, details={"photo": photo_id})
    photos = {p.id: p for p in repo.list_photos(conn, order_id=order_id)}
    return _photo_read(photos[photo_id])


def _photo_read(row: repo.PhotoRow) -> PhotoRead:
    read = PhotoRead.of(row)
    read.url = f"/api/v1/work-orders/{row.work_order_id}/photos/{row.id}"
    return read


def get_photo(conn: Connection[Any], *, order_id: int, photo_id: str, scope: Scope) -> repo.PhotoData:
    """A photo's bytes, only for those whose scope includes the order's site."""
    found = repo.get_photo_data(conn, order_id=order_id, photo_id=photo_id, scope=scope)
    if found is None:
        raise NotFoundError(f"photo {photo_id} not found")
    return found


def get_work_order(
    conn: Connection[Any], *, order_id: int, scope: Scope, now: datetime | None = None
) -> WorkOrderDetail:
    """An order with its history and photos."""
    row = _order(conn, order_id, scope)
    return WorkOrderDetail(
        order=_read(row, _now(now)),
        events=[WorkOrderEventRead.of(e) for e in repo.list_events(conn, order_id=order_id)],
        photos=[_photo_read(p) for p in repo.list_photos(conn, order_id=order_id)],
    )


def list_work_orders(
    conn: Connection[Any],
    *,
    scope: Scope,
    open_only: bool = True,
    site_id: str | None = None,
    offset: int = 0,
    limit: int = 100,
    now: datetime | None = None,
) -> list[WorkOrderRead]:
    """Orders in scope, open ones first by deadline."""
    at = _now(now)
    rows = repo.list_work_orders(conn, scope=scope, open_only=open_only, site_id=site_id, offset=offset, limit=limit)
    return [_read(r, at) for r in rows]


def order_of_finding(conn: Connection[Any], *, finding_id: int) -> int | None:
    """The work order a score finding belongs to (its close goes through the order's re-inspection)."""
    return repo.order_of_finding(conn, finding_id=finding_id)


# -- notices: the party told, the overdue ladder -----------------------------------------------------------------


def _site_of(conn: Connection[Any], row: repo.WorkOrderRow) -> repo.SiteRow:
    site = repo.get_site(conn, site_id=row.site_id, scope=Scope())
    assert site is not None  # noqa: S101 - an order's site is a foreign key
    return site


def _message(row: repo.WorkOrderRow, step: int) -> tuple[str, str]:
    due = row.due_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if step == 0 and row.reinspections:
        title = f"复查未通过，请再次整改 / Re-inspection failed, fix again: {row.title}"
        body = f"{row.site_name or row.site_id}: {row.title}. 新期限 / new deadline {due}. 工单 / work order #{row.id}"
    elif step == 0:
        title = f"隐患整改通知 / Hazard to fix: {row.title}"
        body = f"{row.site_name or row.site_id}: {row.title}. 整改期限 / fix by {due}. 工单 / work order #{row.id}"
    else:
        title = f"隐患逾期未整改 (第{step}级) / Work order overdue (step {step}): {row.title}"
        body = (
            f"{row.site_name or row.site_id}: {row.title}, due {due}, not yet closed by a re-inspection. "
            f"工单 / work order #{row.id}"
        )
    # The order's page last: the deliverer puts the recipient's own signed link in its place (notice_text).
    return title, f"{body} — /work-orders/{row.id}"


def _tell_merchant(conn: Connection[Any], row: repo.WorkOrderRow, *, step: int, at: datetime) -> int:
    if row.merchant_id is None:
        return 0
    recipient = repo.merchant_recipient(conn, merchant_id=row.merchant_id)
    if recipient is None:
        return 0
    return int(_queue_notice(conn, row, step=step, recipient=recipient, at=at))


def _queue_notice(
    conn: Connection[Any], row: repo.WorkOrderRow, *, step: int, recipient: repo.Recipient, at: datetime
) -> bool:
    """The order's message of this ladder step, queued for one recipient (False: queued for them already)."""
    title, body = _message(row, step)
    return repo.insert_notice(
        conn,
        order_id=row.id,
        reinspections=row.reinspections,
        step=step,
        recipient=recipient,
        title=title,
        body=body,
        at=at,
    )


def escalate_overdue(conn: Connection[Any], *, now: datetime, limit: int = 500) -> int:
    """Climb the overdue ladder for every order past its deadline; returns the steps taken. Idempotent."""
    taken = 0
    for row in repo.list_overdue(conn, now=now, ladder=[(step, after) for step, after, _ in LADDER], limit=limit):
        site = None
        climb_now = False  # the step before told nobody: the next one is taken at once, as an alarm's ladder does
        for step, after, tier in LADDER:
            if step <= row.escalation or (now < row.due_at + after and not climb_now):
                continue
            if not repo.set_escalation(conn, order_id=row.id, step=step):
                continue
            site = site or _site_of(conn, row)
            told = [
                r.worker_id
                for r in tier_recipients(conn, tier=tier, site=site, now=now)
                if _queue_notice(conn, row, step=step, recipient=r, at=now)
            ]
            climb_now = not told
            if step == 1:
                told += [row.merchant_id] if _tell_merchant(conn, row, step=step, at=now) else []
            details: dict[str, Any] = {"step": step, "told": told}
            if climb_now:
                details["nobody_in_tier"] = tier
                log.warning("work order %s overdue: nobody of tier %s can be told; climbing on at once", row.id, tier)
            repo.insert_event(conn, order_id=row.id, at=now, kind="escalated", actor=None, details=details)
            log.info("work order %s overdue: step %s (%s) told %s", row.id, step, tier, told)
            taken += 1
    return taken


def notice_subject(note: repo.DueNotice) -> tuple[actionlink.Subject, int]:
    """The one item a notice is about (a field_notice row names exactly one)."""
    if note.work_order_id is not None:
        return "work_order", note.work_order_id
    if note.resident_report_id is not None:
        return "resident_report", note.resident_report_id
    assert note.drill_id is not None  # noqa: S101 - the table's check: one of the three
    return "drill", note.drill_id


def notice_text(note: repo.DueNotice, links: actionlink.Signer | None, now: datetime) -> str:
    """The body as its recipient gets it: with a public URL, the item's page at its end (where field's messages
    name it) becomes the recipient's own signed link (core/actionlink.py), made now, as notify does for alarms; the
    stored body keeps the plain path, so the database never holds a usable link. Only the end is replaced: what a
    resident wrote earlier in the body is never rewritten, whatever it holds."""
    if links is None:
        return note.body
    subject, subject_id = notice_subject(note)
    link = links.url_for(
        subject=subject,
        subject_id=subject_id,
        kind="worker" if note.worker_id else "merchant",
        recipient_id=note.worker_id or note.merchant_id or "",
        now=now,
    )
    path = f"/{actionlink.PATHS[subject]}/{subject_id}"
    if note.body.endswith(path):
        return note.body.removesuffix(path) + link
    return f"{note.body}\n{link}"


def deliver_notices(
    conn: Connection[Any],
    *,
    send: SendFn,
    now: datetime,
    limit: int = 50,
    links: actionlink.Signer | None = None,
) -> int:
    """Send pending notices through apprise (notify's sender); failures retry with backoff. Returns sent. With
    `links`, each message carries its recipient's own signed link to its item (notice_text)."""
    sent = 0
    for note in repo.claim_notices(conn, now=now, limit=limit):
        who = note.worker_id or note.merchant_id or ""
        if not note.active:
            results: Sequence[tuple[bool, str]] = [(False, f"{who} is no longer active: not sent")]
            again = False
        elif note.urls:
            results = send(list(note.urls), note.title, notice_text(note, links, now), who)
            again = True
        else:
            results = [(False, "no channel")]
            again = True
        ok = any(r[0] for r in results)
        error = None if ok else "; ".join(r[1] for r in results)[:500]
        attempts = note.attempts + 1
        status = "sent" if ok else ("failed" if attempts >= MAX_ATTEMPTS or not again else "pending")
        retry = RETRY[min(attempts - 1, len(RETRY) - 1)]
        repo.record_notice(
            conn, notice_id=note.id, status=status, sent_at=now if ok else None, error=error, next_at=now + retry
        )
        subject = (
            f"work order {note.work_order_id}"
            if note.work_order_id
            else f"report {note.resident_report_id}"
            if note.resident_report_id
            else f"drill {note.drill_id}"
        )
        if ok:
            sent += 1
            if note.work_order_id is not None:
                details = {"to": who}
                repo.insert_event(
                    conn, order_id=note.work_order_id, at=now, kind="notified", actor=None, details=details
                )
        else:
            log.warning("%s: notice to %s failed (%s): %s", subject, who, status, error)
    return sent


def list_sites(conn: Connection[Any], *, scope: Scope) -> list[repo.SiteRow]:
    """The sites a caller may inspect (for the page's site picker)."""
    return repo.list_sites(conn, scope=scope)
