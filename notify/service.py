"""Routing outbox transitions to recipients, climbing the escalation ladder, and delivering due notifications,
exactly once per (transition, recipient) across restarts and several notify processes.

Every function takes `now` (or a clock) so rosters, night uplift and quiet hours never depend on the wall
clock in tests. The caller passes a connection; each function owns one short transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from prometheus_client import Counter
from psycopg import Connection

from core import actionlink, routing
from core import repo as core_repo
from core.domain import Severity
from core.errors import ConflictError, NotFoundError
from core.repo import Recipient
from notify import messages, repo
from notify.delivery import ChannelResult, Sender
from notify.policy import Policy

log = logging.getLogger(__name__)

DELIVERIES = Counter("gridwatch_notifications_total", "Notification delivery outcomes", ["outcome"])
ESCALATIONS = Counter("gridwatch_escalations_total", "Escalation ladder actions", ["action"])

# Transitions a person needs to hear about (DESIGN: transitions only, never "still active"). The last three
# are written by notify itself.
NOTIFIED_KINDS = {
    "raised",
    "reactivated",
    "severity_raised",
    "cleared",
    "acknowledged",
    "resolved",
    "actuation_failed",
    "escalated",
    "reminder",
    "ack_timeout",
}
# Messages that put someone on the ladder (reached or not reached decides whether the ladder moves on).
LADDER_KINDS = ("raised", "reactivated", "severity_raised", "actuation_failed", "escalated")
OPENING_KINDS = ("raised", "reactivated", "escalated")
# Sent while the alarm waits for a person; pointless once someone has acknowledged.
WAITING_KINDS = ("escalated", "reminder")

Clock = Callable[[], datetime]


@dataclass(slots=True)
class Target:
    recipient: Recipient
    tier: str
    step: int


def _ack_url(public_url: str, alarm_id: int | None = None) -> str:
    """The plain URL of an alarm's page (or of the board): what is stored; each recipient's message gets their own
    signed link in its place when it is sent (deliver_due)."""
    if not public_url:
        return ""
    base = public_url.rstrip("/")
    return f"{base}/alarms/{alarm_id}" if alarm_id is not None else f"{base}/board"


# --- routing ------------------------------------------------------------------------------------------------


# Outbox rows routed in one transaction, and how long a batch of minor ones (below MAJOR) may take before it is
# committed with what is done: a life-safety transition arriving while the router works through an alarm storm's
# minor rows waits for at most that long (issue 18).
ROUTE_BATCH = 16
MINOR_BATCH_S = 0.1


class Routed(NamedTuple):
    """What one routing transaction did: how many outbox rows, all of one severity (0 when there were none)."""

    rows: int
    severity: int


class Delivered(NamedTuple):
    """What one delivery round did: notifications handled, and how many of them were immediate ones."""

    handled: int
    immediate: int


def route_outbox(
    conn: Connection[Any], *, policy: Policy, now: datetime, public_url: str = "", limit: int = ROUTE_BATCH
) -> Routed:
    """Expand claimed outbox rows into notifications (and ladder state).

    One severity a transaction, the most severe first (claim_outbox's order): a gas leak claimed together with
    battery flaps is committed, and its messages become deliverable, before any of them is routed."""
    with conn.transaction():
        claimed = repo.claim_outbox(conn, limit=limit)
        rows = [r for r in claimed if r.severity == claimed[0].severity] if claimed else []
        # One row per alarm (see claim_outbox); in alarm order, the order deliverers lock ladders in too, so
        # the two never wait on each other in a cycle. Rows left out are unlocked by the commit and claimed next.
        started = time.monotonic()
        routed: list[repo.OutboxRow] = []
        for row in sorted(rows, key=lambda r: r.alarm_id):
            if row.kind in NOTIFIED_KINDS:
                _route(conn, row, policy=policy, now=now, public_url=public_url)
            routed.append(row)
            if row.severity < Severity.MAJOR and time.monotonic() - started > MINOR_BATCH_S:
                break
        if routed:
            repo.mark_routed(conn, outbox_ids=[r.id for r in routed])
    return Routed(len(routed), routed[0].severity if routed else 0)


def _suppression(conn: Connection[Any], ctx: repo.AlarmContext, kind: str, policy: Policy, now: datetime) -> str | None:
    """Why messages about this transition must not go out: a silence, or an offline gateway."""
    silence = repo.get_active_silence(conn, site_id=ctx.site_id, device_id=ctx.device_id, now=now)
    if silence is not None:
        if not policy.is_life_safety(ctx.type) or silence.include_life_safety:
            target = f"site {silence.site_id}" if silence.site_id else f"device {silence.device_id}"
            return f"silenced ({target} until {silence.ends_at.isoformat(timespec='minutes')}: {silence.reason})"
        log.info("silence %s does not cover life-safety alarm %s (%s)", silence.id, ctx.alarm_id, ctx.type)
    if (
        ctx.type in policy.offline_types
        and ctx.gateway_id
        and kind not in ("cleared", "resolved")
        and repo.gateway_offline(conn, gateway_id=ctx.gateway_id, offline_types=sorted(policy.offline_types))
    ):
        return f"inhibited: gateway {ctx.gateway_id} is offline"
    return None


@dataclass
class _Routing:
    """One outbox row being routed: the alarm, who could be told, and the ladder of its severity."""

    conn: Connection[Any]
    row: repo.OutboxRow
    ctx: repo.AlarmContext
    policy: Policy
    now: datetime
    reason: str | None  # why nobody is paged for it (silenced, inhibited), or None
    workers: list[Recipient]
    merchant: Recipient | None

    @property
    def steps(self) -> tuple[Any, ...]:
        return tuple(self.policy.for_severity(self.ctx.severity).steps)

    def step_targets(self, first: int, last: int) -> list[Target]:
        """Everyone on the ladder's steps first..last, as the roster has them on duty now."""
        tz = self.ctx.timezone or self.policy.timezone
        steps = self.steps
        out: list[Target] = []
        for s in range(first, min(last, len(steps) - 1) + 1):
            out += [
                Target(r, tier, s)
                for r, tier in routing.ladder_recipients(
                    steps[s].tiers, self.workers, merchant=self.merchant, now=self.now, tz=tz
                )
            ]
        return out

    def previously_notified(self) -> list[Target]:
        return _previously_notified(self.conn, self.ctx, self.workers, self.merchant, kinds=LADDER_KINDS)

    def start_ladder(self, start: int) -> None:
        if self.reason is None and self.steps:
            _start_ladder(self.conn, self.ctx, self.policy, start=start, now=self.now)


def _route_raised(r: _Routing) -> tuple[list[Target], int | None]:
    start = r.policy.start_step(r.ctx.severity, r.ctx.site_flags)
    r.start_ladder(start)
    return r.step_targets(0, start), start


def _route_severity_raised(r: _Routing) -> tuple[list[Target], int | None]:
    """Severity rose (or a command failed): the ladder restarts if it had stopped, else keeps its step."""
    ctx, now = r.ctx, r.now
    esc = repo.lock_escalation(r.conn, alarm_id=ctx.alarm_id)
    if esc is None or esc.stopped_at is not None:
        start = r.policy.start_step(ctx.severity, ctx.site_flags)
        if ctx.active and not ctx.acknowledged:
            r.start_ladder(start)
        targets = r.step_targets(0, start)
    else:
        targets = r.step_targets(0, esc.step)
        esc.severity = ctx.severity
        if not ctx.acknowledged:
            due = r.policy.step_due(
                ctx.severity, esc.step + 1, started_at=esc.started_at, start_step=esc.start_step, now=now
            )
            esc.next_step_at = max(due, now) if due else None
        repo.update_escalation(r.conn, esc=esc, now=now)
    return targets + r.previously_notified(), None


def _route_escalated(r: _Routing) -> tuple[list[Target], int | None]:
    step = int(r.row.detail.get("step", 0))
    return r.step_targets(step, step), step


def _route_reminder(r: _Routing) -> tuple[list[Target], int | None]:
    return [t for t in r.previously_notified() if not t.recipient.is_merchant], None


def _route_acknowledged(r: _Routing) -> tuple[list[Target], int | None]:
    """The ladder stops climbing, whoever acknowledged (a leader, the duty office or the fire station as much as
    the micro-grid worker; it may renotify later while the alarm stays active); everyone told hears who took it,
    except the one who took it."""
    ctx, now = r.ctx, r.now
    esc = repo.lock_escalation(r.conn, alarm_id=ctx.alarm_id)
    if esc is not None and esc.stopped_at is None:
        esc.next_step_at = esc.next_reminder_at = None
        esc.renotify_at = r.policy.renotify_due(ctx.severity, now) if ctx.active else None
        if esc.renotify_at is None:
            esc.stopped_at, esc.stop_reason = now, f"acknowledged by {ctx.acknowledged_by}"
        repo.update_escalation(r.conn, esc=esc, now=now)
        ESCALATIONS.labels("stopped_ack").inc()
    taker = ctx.acknowledged_by
    return [t for t in r.previously_notified() if t.recipient.is_merchant or t.recipient.id != taker], None


def _route_closed(r: _Routing) -> tuple[list[Target], int | None]:
    esc = repo.lock_escalation(r.conn, alarm_id=r.ctx.alarm_id)
    if esc is not None and esc.stopped_at is None:
        esc.next_step_at = esc.next_reminder_at = esc.renotify_at = None
        esc.stopped_at, esc.stop_reason = r.now, r.row.kind
        repo.update_escalation(r.conn, esc=esc, now=r.now)
    return r.previously_notified(), None


# Outbox kind -> who hears of it, and the ladder step it opens (None: it opens none).
ROUTES: dict[str, Callable[[_Routing], tuple[list[Target], int | None]]] = {
    "raised": _route_raised,
    "reactivated": _route_raised,
    "severity_raised": _route_severity_raised,
    "actuation_failed": _route_severity_raised,
    "escalated": _route_escalated,
    "reminder": _route_reminder,
    "ack_timeout": _route_reminder,
    "acknowledged": _route_acknowledged,
    "cleared": _route_closed,
    "resolved": _route_closed,
}


def _route(conn: Connection[Any], row: repo.OutboxRow, *, policy: Policy, now: datetime, public_url: str) -> None:
    ctx = repo.get_alarm_context(conn, alarm_id=row.alarm_id)
    if ctx is None:
        return
    workers = core_repo.get_community_workers(
        conn, community_id=ctx.community_id, grid_id=ctx.grid_id, micro_grid_id=ctx.micro_grid_id
    )
    merchant = repo.get_merchant(conn, merchant_id=ctx.merchant_id) if ctx.merchant_id else None
    r = _Routing(conn, row, ctx, policy, now, _suppression(conn, ctx, row.kind, policy, now), workers, merchant)
    handler = ROUTES.get(row.kind)
    targets, opened_step = handler(r) if handler is not None else ([], None)
    _insert_messages(
        conn,
        row,
        ctx,
        _dedupe(targets),
        policy=policy,
        now=now,
        public_url=public_url,
        reason=r.reason,
        workers=workers,
    )
    nobody = not any(not t.recipient.is_merchant and t.step == opened_step for t in targets)
    # Nobody to tell at this step (no leader registered, ...): the ladder climbs at once.
    if (
        r.reason is None
        and opened_step is not None
        and r.steps
        and nobody
        and repo.move_on_now(conn, alarm_id=ctx.alarm_id, step=opened_step, now=now)
    ):
        log.warning("alarm %s: nobody to notify at ladder step %s; escalating at once", ctx.alarm_id, opened_step)


def _start_ladder(conn: Connection[Any], ctx: repo.AlarmContext, policy: Policy, *, start: int, now: datetime) -> None:
    repo.start_escalation(
        conn,
        alarm_id=ctx.alarm_id,
        severity=ctx.severity,
        start_step=start,
        now=now,
        next_step_at=policy.step_due(ctx.severity, start + 1, started_at=now, start_step=start, now=now),
        next_reminder_at=policy.reminder_due(ctx.severity, now, 0),
    )
    ESCALATIONS.labels("started").inc()


def _previously_notified(
    conn: Connection[Any],
    ctx: repo.AlarmContext,
    workers: list[Recipient],
    merchant: Recipient | None,
    *,
    kinds: tuple[str, ...],
) -> list[Target]:
    by_id = {w.id: w for w in workers}
    out = []
    for n in repo.get_notified(conn, alarm_id=ctx.alarm_id, kinds=kinds):
        if n.worker_id is not None:
            r = by_id.get(n.worker_id) or repo.get_worker(conn, worker_id=n.worker_id)
        else:
            r = merchant if merchant is not None and merchant.id == n.merchant_id else None
        if r is not None:
            out.append(Target(r, n.tier, n.step))
    return out


def _dedupe(targets: list[Target]) -> list[Target]:
    seen: set[tuple[bool, str]] = set()
    out = []
    for t in targets:
        key = (t.recipient.is_merchant, t.recipient.id)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def _insert_messages(
    conn: Connection[Any],
    row: repo.OutboxRow,
    ctx: repo.AlarmContext,
    targets: list[Target],
    *,
    policy: Policy,
    now: datetime,
    public_url: str,
    reason: str | None,
    workers: list[Recipient],
) -> None:
    if not targets:
        if row.kind in OPENING_KINDS and policy.for_severity(ctx.severity).steps:
            log.warning(
                "alarm %s (%s) in micro-grid %s has nobody to notify", ctx.alarm_id, row.kind, ctx.micro_grid_id
            )
        return
    # Reminders and "still active" repeat what people already know: they may be grouped even for life-safety
    # alarms (fifty smoke detectors in one fire are one reminder, not fifty).
    immediate = policy.is_immediate(ctx.type, ctx.severity) and row.kind not in ("reminder", "ack_timeout")
    vulnerable = bool(policy.vulnerable_flags.intersection(ctx.site_flags))
    field = messages.measurement_of(ctx.type)
    trend = (
        repo.get_recent_values(conn, device_id=ctx.device_id, field_name=field[0], since=now - timedelta(minutes=30))
        if field and ctx.value is not None
        else []
    )
    told: list[str] = []
    if row.kind == "escalated":
        names = {w.id: w.name for w in workers}
        told = [
            names.get(n.worker_id, n.worker_id)
            for n in repo.get_notified(conn, alarm_id=ctx.alarm_id, kinds=LADDER_KINDS)
            if n.worker_id
        ]
    taker = _taker(conn, ctx.acknowledged_by, workers) if row.kind == "acknowledged" else None
    # One text per language and kind of reader (a worker's link acknowledges, a merchant's only opens the alarm).
    rendered: dict[tuple[str, bool], messages.Message] = {}
    storm = policy.storm
    for t in targets:
        r = t.recipient
        lang = messages.lang_of(r.locale)
        if (lang, r.is_merchant) not in rendered:
            rendered[(lang, r.is_merchant)] = messages.render_alarm(
                ctx,
                row.kind,
                lang,
                now=now,
                ack_url=_ack_url(public_url, ctx.alarm_id),
                actor=messages.person(*taker, lang) if taker else None,
                trend=trend,
                told=told,
                reminder=int(row.detail.get("n", 0)),
                vulnerable=vulnerable,
                act=not r.is_merchant,
            )
        msg = rendered[(lang, r.is_merchant)]
        worker_id, merchant_id = (None, r.id) if r.is_merchant else (r.id, None)
        next_at = policy.deferred_until(ctx.severity, t.tier, now, ctx.type)
        status = "suppressed" if reason else "pending"
        note_reason = reason
        grouped = not immediate and status == "pending" and next_at == now
        if grouped:
            group = repo.find_open_group(
                conn, site_id=ctx.site_id, worker_id=worker_id, merchant_id=merchant_id, now=now
            )
            if group is not None:
                group_id, opened_at = group
                send_at = min(opened_at + timedelta(seconds=storm.max_hold_s), now + timedelta(seconds=storm.hold_s))
                repo.extend_group(
                    conn, notification_id=group_id, alarm_id=ctx.alarm_id, step=t.step, next_at=max(send_at, now)
                )
                continue
            next_at = now + timedelta(seconds=min(storm.hold_s, storm.max_hold_s))
        elif next_at > now:
            note_reason = note_reason or f"quiet hours until {next_at.isoformat(timespec='minutes')}"
        repo.insert_notification(
            conn,
            outbox_id=row.id,
            alarm_id=ctx.alarm_id,
            worker_id=worker_id,
            merchant_id=merchant_id,
            step=t.step,
            kind=row.kind,
            tier=t.tier,
            locale=lang,
            site_id=ctx.site_id,
            immediate=not grouped,
            title=msg.title,
            body=msg.body,
            status=status,
            reason=note_reason,
            next_at=next_at,
            now=now,
        )


def _taker(conn: Connection[Any], actor: str | None, workers: list[Recipient]) -> tuple[str, str, str] | None:
    """(name, role, id) of whoever acknowledged: a worker of any tier, or an admin ("admin:<token>")."""
    if actor is None:
        return None
    worker = next((w for w in workers if w.id == actor), None) or repo.get_worker(conn, worker_id=actor)
    if worker is not None:
        return worker.name, worker.role, worker.id
    return "", "admin" if actor.startswith("admin:") else "", actor


# --- escalation ladder --------------------------------------------------------------------------------------


def run_escalations(conn: Connection[Any], *, policy: Policy, now: datetime, limit: int = 50) -> int:
    """Climb ladders whose deadline has passed (step, reminder, re-notification); returns ladders handled."""
    with conn.transaction():
        due = repo.claim_due_escalations(conn, now=now, limit=limit)
        for esc in due:
            _advance(conn, esc, policy=policy, now=now)
            repo.update_escalation(conn, esc=esc, now=now)
    return len(due)


def _advance(conn: Connection[Any], esc: repo.Escalation, *, policy: Policy, now: datetime) -> None:
    if esc.closed or not esc.active:
        esc.next_step_at = esc.next_reminder_at = esc.renotify_at = None
        esc.stopped_at, esc.stop_reason = now, "resolved" if esc.closed else "cleared"
        return
    if esc.acknowledged:
        esc.next_step_at = esc.next_reminder_at = None
        if esc.renotify_at is not None and esc.renotify_at <= now:
            repo.insert_outbox(
                conn, alarm_id=esc.alarm_id, event_id=None, kind="ack_timeout", severity=esc.severity, detail={}
            )
            esc.renotify_at = policy.renotify_due(esc.severity, now)
            ESCALATIONS.labels("ack_timeout").inc()
        if esc.renotify_at is None:
            esc.stopped_at, esc.stop_reason = now, "acknowledged"
        return
    steps = policy.for_severity(esc.severity).steps
    if esc.next_step_at is not None and esc.next_step_at <= now:
        esc.step += 1
        if esc.step < len(steps):
            tiers = list(steps[esc.step].tiers)
            event_id = repo.insert_event(
                conn,
                alarm_id=esc.alarm_id,
                kind="escalated",
                at=now,
                severity=esc.severity,
                details={
                    "step": esc.step,
                    "tiers": tiers,
                    "unacknowledged_s": int((now - esc.started_at).total_seconds()),
                },
            )
            repo.insert_outbox(
                conn,
                alarm_id=esc.alarm_id,
                event_id=event_id,
                kind="escalated",
                severity=esc.severity,
                detail={"step": esc.step},
            )
            ESCALATIONS.labels("step").inc()
            log.info("alarm %s unacknowledged: escalating to step %d (%s)", esc.alarm_id, esc.step, ", ".join(tiers))
        esc.next_step_at = policy.step_due(
            esc.severity, esc.step + 1, started_at=esc.started_at, start_step=esc.start_step, now=now
        )
        if esc.next_reminder_at is not None:
            esc.next_reminder_at = policy.reminder_due(esc.severity, now, esc.reminders)
    elif esc.next_reminder_at is not None and esc.next_reminder_at <= now:
        esc.reminders += 1
        repo.insert_outbox(
            conn,
            alarm_id=esc.alarm_id,
            event_id=None,
            kind="reminder",
            severity=esc.severity,
            detail={"n": esc.reminders},
        )
        esc.next_reminder_at = policy.reminder_due(esc.severity, now, esc.reminders)
        ESCALATIONS.labels("reminder").inc()
    # At the top of the ladder with nothing left to remind, the ladder idles (no deadline) until the alarm is
    # acknowledged (which may schedule a re-notification) or cleared.


# --- delivery -----------------------------------------------------------------------------------------------


def deliver_due(
    conn: Connection[Any],
    *,
    sender: Sender,
    policy: Policy,
    clock: Clock,
    max_attempts: int,
    public_url: str = "",
    limit: int = 20,
    links: actionlink.Signer | None = None,
    immediate_only: bool = False,
) -> Delivered:
    """Deliver notifications that are due (with immediate_only, only those sent at once: life-safety and
    critical); returns how many were handled and how many of them were immediate. With `links`, each recipient's message
    carries their own signed link to each alarm in it, made now; the stored text keeps the plain alarm URL.

    Never holds a transaction across the network: the due notifications are claimed (a lease of the sender's
    whole-request deadline per channel, plus a margin) in one short transaction, sent with none open, and their
    attempts recorded in a second. While the lease lasts no other deliverer takes them; if this process dies while
    sending, they are due again once it lapses (delivery is at least once, as before)."""
    with conn.transaction():
        due = repo.claim_due(conn, now=clock(), limit=limit, immediate_only=immediate_only)
        jobs, unreached = _prepare(conn, due, clock=clock, public_url=public_url)
        lease_until = None
        if jobs:
            channels = max(len(n.notify_urls) for n, _ in jobs) if not sender.redirect_url else 1
            lease_until = clock() + timedelta(seconds=sender.deadline_s * channels + LEASE_MARGIN_S)
            repo.lease(conn, notification_ids=[n.id for n, _ in jobs], until=lease_until)
    personal = [_with_links(n, m, links, clock()) for n, m in jobs]
    results = sender.send_many(
        [
            (n.notify_urls, p.title, p.body, n.worker_id or n.merchant_id or "")
            for (n, _), p in zip(jobs, personal, strict=True)
        ]
    )
    with conn.transaction():
        at = clock()
        if jobs:
            unreached += _record(
                conn, jobs, results, lease_until=lease_until, at=at, policy=policy, max_attempts=max_attempts
            )
        _move_on_when_unreached(conn, unreached, now=at)
    return Delivered(len(due), sum(1 for n in due if n.immediate))


def _with_links(
    note: repo.DueNotification, msg: messages.Message, links: actionlink.Signer | None, now: datetime
) -> messages.Message:
    """The message as this recipient gets it: every alarm URL in it replaced by their own signed link."""
    if links is None:
        return msg
    kind: actionlink.RecipientKind = "worker" if note.worker_id else "merchant"
    recipient = note.worker_id or note.merchant_id or ""
    return messages.with_links(
        msg,
        links.public_url,
        lambda alarm_id: links.url_for(
            subject="alarm", subject_id=alarm_id, kind=kind, recipient_id=recipient, now=now
        ),
    )


# Beyond the senders' deadlines, how long a claim lasts: a process that stalls longer than this may see another
# deliverer send its notifications too (at least once, never lost).
LEASE_MARGIN_S = 5.0


def _prepare(
    conn: Connection[Any], due: list[repo.DueNotification], *, clock: Clock, public_url: str
) -> tuple[list[tuple[repo.DueNotification, messages.Message]], list[repo.DueNotification]]:
    """The claimed notifications to send with their messages, and those that cannot be (no channel); the ones no
    longer needed are suppressed."""
    jobs: list[tuple[repo.DueNotification, messages.Message]] = []
    unreached: list[repo.DueNotification] = []
    for note in due:
        if note.kind in WAITING_KINDS and (note.alarm_acknowledged or note.alarm_closed):
            repo.mark_suppressed(conn, notification_id=note.id, reason="acknowledged before delivery")
            DELIVERIES.labels("suppressed").inc()
            continue
        if not note.notify_urls:
            at = clock()
            repo.record_attempt(
                conn, notification_id=note.id, at=at, channel="-", ok=False, detail="recipient has no channel"
            )
            repo.mark_retry(conn, notification_id=note.id, next_at=at, error="recipient has no channel", max_attempts=1)
            DELIVERIES.labels("no_channel").inc()
            unreached.append(note)
            continue
        jobs.append((note, _message_for(conn, note, clock(), public_url)))
    return jobs, unreached


def _record(
    conn: Connection[Any],
    jobs: list[tuple[repo.DueNotification, messages.Message]],
    results: list[list[ChannelResult]],
    *,
    lease_until: datetime | None,
    at: datetime,
    policy: Policy,
    max_attempts: int,
) -> list[repo.DueNotification]:
    """Record every attempt; a notification still under this delivery's claim is marked sent or scheduled for a
    retry (one claimed by another deliverer after the lease lapsed is that deliverer's to mark). Returns the
    notifications nobody could be reached for."""
    claims = repo.lock_claims(conn, notification_ids=[n.id for n, _ in jobs])
    unreached: list[repo.DueNotification] = []
    for (note, msg), channel_results in zip(jobs, results, strict=True):
        for res in channel_results:
            repo.record_attempt(conn, notification_id=note.id, at=at, channel=res.channel, ok=res.ok, detail=res.detail)
        status, claimed_until = claims.get(note.id, ("", None))
        if claimed_until != lease_until:
            log.warning("notification %s was claimed again while this delivery ran past its lease", note.id)
            continue
        who = note.worker_id or note.merchant_id
        if any(r.ok for r in channel_results):
            # The audit of who was told what is notification + delivery_attempt; alarm_event stays the
            # alarm's own history (raised, escalated, acknowledged, ...).
            repo.mark_sent(conn, notification_id=note.id, at=at, title=msg.title, body=msg.body)
            DELIVERIES.labels("sent").inc()
            log.info("notified %s of alarm %s (%s, %d alarm(s))", who, note.alarm_id, note.kind, len(note.alarm_ids))
        elif status == "pending":
            error = "; ".join(f"{r.channel}: {r.detail}" for r in channel_results)[:500]
            repo.mark_retry(
                conn,
                notification_id=note.id,
                next_at=at + policy.backoff(note.attempts + 1),
                error=error,
                max_attempts=max_attempts,
            )
            DELIVERIES.labels("failed_attempt").inc()
            log.warning("delivery to %s failed (attempt %d): %s", who, note.attempts + 1, error)
            unreached.append(note)
    repo.release(conn, notification_ids=[n.id for n, _ in jobs if claims.get(n.id, ("", None))[1] == lease_until])
    return unreached


def _message_for(conn: Connection[Any], note: repo.DueNotification, now: datetime, public_url: str) -> messages.Message:
    if note.immediate or len(note.alarm_ids) < 2:
        return messages.Message(note.title, note.body)
    contexts = repo.get_alarm_contexts(conn, alarm_ids=note.alarm_ids)
    if not contexts:
        return messages.Message(note.title, note.body)
    states = {
        c.alarm_id: (
            "resolved" if c.closed_at else "cleared" if not c.active else "acknowledged" if c.acknowledged else "raised"
        )
        for c in contexts
    }
    span = int((now - min(c.raised_at for c in contexts)).total_seconds())
    return messages.render_group(
        contexts,
        states,
        note.locale,
        seconds=span,
        # the board for workers; a merchant has each alarm's own link only
        ack_url="" if note.merchant_id else _ack_url(public_url),
        vulnerable=any("elderly_living_alone" in c.site_flags for c in contexts),
        alarm_url=lambda alarm_id: _ack_url(public_url, alarm_id),
    )


def _move_on_when_unreached(conn: Connection[Any], notes: list[repo.DueNotification], *, now: datetime) -> None:
    """A step whose every recipient could not be reached on any channel does not wait for its timer."""
    pairs = sorted({(a, n.step) for n in notes if n.kind in LADDER_KINDS and n.tier != "merchant" for a in n.alarm_ids})
    for alarm_id, step in pairs:
        # Lock the ladder first: two processes failing the last two recipients of a step then see each other.
        esc = repo.lock_escalation(conn, alarm_id=alarm_id)
        if esc is None or esc.stopped_at is not None or esc.step != step or esc.acknowledged:
            continue
        reached, untried = repo.get_step_reach(conn, alarm_id=alarm_id, step=step, kinds=LADDER_KINDS)
        if reached == 0 and untried == 0 and repo.move_on_now(conn, alarm_id=alarm_id, step=step, now=now):
            ESCALATIONS.labels("unreached").inc()
            log.warning("alarm %s: nobody of ladder step %d could be reached; escalating now", alarm_id, step)


# --- gridwatch notify test ----------------------------------------------------------------------------------


def send_test(conn: Connection[Any], *, sender: Sender, worker_id: str, now: datetime) -> list[ChannelResult]:
    """Send a test message through every channel of a worker, one result per channel."""
    worker = repo.get_worker(conn, worker_id=worker_id)
    if worker is None:
        raise NotFoundError(f"worker {worker_id!r} does not exist (load the registry first)")
    if not worker.notify_urls:
        raise ConflictError(f"worker {worker_id!r} has no notify URLs in the registry")
    msg = messages.render_test(
        name=worker.name,
        worker_id=worker.id,
        role=worker.role,
        channels=len(worker.notify_urls),
        locale=worker.locale,
        at=now,
    )
    return sender.send(worker.notify_urls, msg.title, msg.body, recipient=worker.id)


def create_silence(
    conn: Connection[Any],
    *,
    site_id: str | None,
    device_id: str | None,
    minutes: float,
    reason: str,
    created_by: str | None,
    include_life_safety: bool,
    now: datetime,
    starts_at: datetime | None = None,
) -> repo.Silence:
    """A maintenance window for one site or one device, from starts_at (default now) for `minutes`; life-safety
    alarms stay loud unless included."""
    if (site_id is None) == (device_id is None):
        raise ConflictError("a silence covers exactly one site or one device")
    if minutes <= 0:
        raise ConflictError("a silence needs a positive duration")
    if not repo.site_or_device_exists(conn, site_id=site_id, device_id=device_id):
        raise NotFoundError(f"{'site' if site_id else 'device'} {site_id or device_id!r} is not registered")
    start = starts_at or now
    return repo.insert_silence(
        conn,
        site_id=site_id,
        device_id=device_id,
        starts_at=start,
        ends_at=start + timedelta(minutes=minutes),
        reason=reason,
        created_by=created_by,
        include_life_safety=include_life_safety,
    )


def end_silence(conn: Connection[Any], *, silence_id: int, now: datetime) -> None:
    """End a silence now (a planned one is cancelled); the row stays as the record of the window."""
    if not repo.end_silence(conn, silence_id=silence_id, now=now):
        raise NotFoundError(f"silence {silence_id} not found (or over already)")


def list_silences(
    conn: Connection[Any],
    *,
    now: datetime,
    current: bool,
    limit: int,
    offset: int,
    communities: Sequence[str] | None = None,
) -> list[repo.Silence]:
    """Silences, newest first (current: only those not over; of some communities only, when given)."""
    return repo.list_silences(conn, now=now, current=current, limit=limit, offset=offset, communities=communities)


def get_silence(conn: Connection[Any], *, silence_id: int, communities: Sequence[str] | None = None) -> repo.Silence:
    """One silence (NotFoundError if unknown, or outside the given communities)."""
    found = repo.get_silence(conn, silence_id=silence_id, communities=communities)
    if found is None:
        raise NotFoundError(f"silence {silence_id} not found")
    return found
