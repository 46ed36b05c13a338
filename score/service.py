"""Merchant safety score in a transaction: ledger writes, findings, corrections, the periodic tick, reads.

The caller owns the transaction; nothing here commits. Score, tier and review flag are derived from the
ledger (score/engine.py) and stored in merchant_score only as a snapshot of that derivation.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import Connection

from core.domain import Disposition, Severity
from core.errors import ConflictError, GridwatchError, NotFoundError
from score import engine, repo
from score.policy import PolicySet, ScorePolicy, active_policies
from score.schemas import (
    CommunityScoresRead,
    FindingRead,
    LedgerEntryRead,
    LedgerPage,
    MerchantScoreRead,
    Mismatch,
    OpenAlarmRead,
    OpenItemsRead,
    RecomputeReport,
    ScorePointRead,
    TickResult,
)

log = logging.getLogger(__name__)

CORRECTION_CODE = "ADJ"
# How far back the consumer of resolutions looks for verified alarms whose entries are missing (a score part that
# was down for up to a week catches up; older resolutions are left to `gridwatch score recompute`).
CATCH_UP = timedelta(days=7)
# Resolutions stamped a little ahead of this process's clock (another host's) are not skipped.
RESOLVED_AHEAD = timedelta(minutes=5)
# Upkeep alarms closed longer ago than this are not re-examined.
UPKEEP_LOOKBACK = timedelta(days=60)


class InvalidScoreInput(GridwatchError, ValueError):  # noqa: N818 - reads as the condition, like ConflictError
    """A request the policy cannot accept (unknown finding kind, bad points); the API answers 422."""


# ---------------------------------------------------------------------------------------------- helpers


def _policies(policies: PolicySet | None) -> PolicySet:
    return policies if policies is not None else active_policies()


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _facts(row: repo.MerchantAlarm) -> engine.AlarmFacts:
    return engine.AlarmFacts(
        id=row.id,
        type=row.type,
        severity=Severity(row.severity),
        disposition=Disposition(row.disposition) if row.disposition else None,
        # DESIGN: raised_at is event time (a buffered backlog can be hours old); the acknowledgement deadline
        # runs from when gridwatch could first have told anybody.
        known_at=max(row.raised_at, row.created_at or row.raised_at),
        acknowledged_at=row.acknowledged_at,
        closed_at=row.closed_at,
    )


def _write(
    conn: Connection[Any],
    merchant_id: str,
    drafts: Sequence[engine.Draft],
    *,
    alarm_id: int | None = None,
    finding_id: int | None = None,
    site_id: str | None = None,
    actor: str | None = None,
) -> list[repo.LedgerRow]:
    written = []
    for d in drafts:
        row = repo.insert_entry(
            conn,
            merchant_id=merchant_id,
            at=d.at,
            points=d.points,
            code=d.code,
            reason=d.reason,
            dedupe_key=d.key,
            alarm_id=alarm_id,
            finding_id=finding_id,
            site_id=site_id,
            actor=actor,
            hazard=d.hazard,
            lock_until=d.lock_until,
            forced_tier=d.forced_tier,
            forced_until=d.forced_until,
        )
        if row is not None:
            log.info("score %s %+d %s: %s", merchant_id, d.points, d.code, d.reason)
            written.append(row)
    return written


def _refresh(
    conn: Connection[Any],
    policy: ScorePolicy,
    merchant_id: str,
    now: datetime,
    entries: Sequence[repo.LedgerRow] | None = None,
    findings: Sequence[repo.FindingRow] | None = None,
) -> engine.Standing:
    """Derive the standing from the ledger (and open hazard findings) and store it as the snapshot."""
    if entries is None:
        entries = repo.list_entries(conn, merchant_id=merchant_id)
    if findings is None:
        findings = repo.list_findings(conn, merchant_id=merchant_id)
    s = engine.derive(policy, entries, now, findings)
    repo.save_snapshot(
        conn,
        merchant_id=merchant_id,
        score=s.score,
        tier=s.tier,
        review=s.review,
        review_reasons=s.review_reasons,
        hazards=s.hazards,
        locked_until=s.locked_until,
        forced_tier=s.forced_tier,
        forced_until=s.forced_until,
        entries=s.entries,
        last_entry_id=s.last_entry_id,
        as_of=now,
    )
    return s


def _lock(conn: Connection[Any], merchant_id: str) -> repo.MerchantRow:
    merchant = repo.lock_merchant(conn, merchant_id=merchant_id)
    if merchant is None:
        raise NotFoundError(f"merchant {merchant_id} does not exist")
    return merchant


def _score_read(
    policy: ScorePolicy, row: repo.SnapshotRow, standing: engine.Standing | None = None
) -> MerchantScoreRead:
    if standing is not None:
        values: dict[str, Any] = {
            "score": standing.score,
            "tier": standing.tier,
            "review": standing.review,
            "review_reasons": list(standing.review_reasons),
            "hazards_in_window": standing.hazards,
            "locked_until": standing.locked_until,
            "forced_tier": standing.forced_tier,
            "forced_until": standing.forced_until,
            "entries": standing.entries,
            "as_of": None,
        }
    else:
        values = {
            "score": row.score,
            "tier": row.tier,
            "review": row.review,
            "review_reasons": list(row.review_reasons or []),
            "hazards_in_window": row.hazards,
            "locked_until": row.locked_until,
            "forced_tier": row.forced_tier,
            "forced_until": row.forced_until,
            "entries": row.entries,
            "as_of": row.as_of,
        }
    return MerchantScoreRead(
        merchant_id=row.merchant_id,
        merchant_name=row.merchant_name,
        community_id=row.community_id,
        base=policy.base,
        tier_handling=policy.tier_band(values["tier"]).handling,
        review_window_days=policy.review.window_days,
        **values,
    )


def _finding_read(row: repo.FindingRow, now: datetime) -> FindingRead:
    closed_or_now = row.closed_at or now
    return FindingRead.model_validate(row).model_copy(update={"overdue": closed_or_now > row.due_at})


# ---------------------------------------------------------------------------------------------- writes


def score_resolutions(
    conn: Connection[Any], *, now: datetime, policies: PolicySet | None = None
) -> list[LedgerEntryRead]:
    """The score stage's consumer of resolutions (rules NOTIFYs RESOLVED_CHANNEL when a person resolves an alarm):
    every alarm resolved real_hazard on a merchant's premises since CATCH_UP without its ledger entries gets them;
    any other disposition, or a site without a merchant, costs nothing. Idempotent (entries are keyed), one
    process at a time (the tick's lock): safe to run on every wake-up and again in every tick."""
    if not repo.try_tick_lock(conn):
        return []
    ps = _policies(policies)
    written: list[LedgerEntryRead] = []
    for alarm in repo.list_unscored_resolved_alarms(conn, since=now - CATCH_UP, now=now + RESOLVED_AHEAD):
        written += _score_alarm(conn, alarm_id=alarm.id, policies=ps)
    return written


def _score_alarm(conn: Connection[Any], *, alarm_id: int, policies: PolicySet) -> list[LedgerEntryRead]:
    facts = repo.get_alarm_facts(conn, alarm_id=alarm_id)
    if facts is None or facts.merchant_id is None or facts.closed_at is None:
        return []
    if facts.disposition != Disposition.REAL_HAZARD.value:
        log.debug("alarm %s resolved %s: no score entry", alarm_id, facts.disposition)
        return []
    merchant = _lock(conn, facts.merchant_id)
    policy = policies.for_community(merchant.community_id)
    prior = repo.list_entries(conn, merchant_id=merchant.id)
    drafts = engine.alarm_deductions(policy, _facts(facts), prior)
    written = _write(conn, merchant.id, drafts, alarm_id=facts.id, site_id=facts.site_id, actor=facts.closed_by)
    if written:
        _refresh(conn, policy, merchant.id, facts.closed_at)
    return [LedgerEntryRead.model_validate(r) for r in written]


def record_finding(
    conn: Connection[Any],
    *,
    site_id: str,
    kind: str,
    actor: str,
    note: str = "",
    due_at: datetime | None = None,
    now: datetime | None = None,
    policies: PolicySet | None = None,
) -> FindingRead:
    """A worker records a hazard seen on a merchant's site; it deducts now and must be rectified by due_at
    (default: the policy's rectify_days for the kind)."""
    at = _now(now)
    site = repo.get_site_merchant(conn, site_id=site_id)
    if site is None:
        raise NotFoundError(f"site {site_id} does not exist")
    if site.merchant_id is None:
        raise ConflictError(f"site {site_id} belongs to no merchant; findings count against a merchant's premises")
    merchant = _lock(conn, site.merchant_id)
    policy = _policies(policies).for_community(merchant.community_id)
    line = policy.finding(kind)
    if line is None:
        raise InvalidScoreInput(
            f"unknown finding kind {kind!r}; the policy knows {', '.join(f.kind for f in policy.findings)}"
        )
    if due_at is not None and due_at.tzinfo is None:
        raise InvalidScoreInput("give the rectification deadline with its time zone (e.g. 2026-05-01T18:00+08:00)")
    due = due_at if due_at is not None else at + timedelta(days=line.rectify_days)
    if due <= at:
        raise InvalidScoreInput(f"the rectification deadline {due.isoformat()} is not after the finding")
    finding = repo.insert_finding(
        conn,
        site_id=site_id,
        merchant_id=merchant.id,
        kind=kind,
        code=line.code,
        note=note,
        found_at=at,
        found_by=actor,
        due_at=due,
    )
    draft = engine.finding_deduction(policy, finding_id=finding.id, kind=kind, at=at)
    _write(conn, merchant.id, [draft], finding_id=finding.id, site_id=site_id, actor=actor)
    _refresh(conn, policy, merchant.id, at)
    return _finding_read(finding, at)


def close_finding(
    conn: Connection[Any],
    *,
    finding_id: int,
    actor: str,
    note: str | None = None,
    now: datetime | None = None,
    policies: PolicySet | None = None,
) -> FindingRead:
    """A worker verified the rectification on site: on time restores part of the deduction; late charges the
    overdue periods up to now (whether or not the tick already did) and restores nothing."""
    at = _now(now)
    finding = repo.lock_finding(conn, finding_id=finding_id)
    if finding is None:
        raise NotFoundError(f"finding {finding_id} does not exist")
    if finding.closed_at is not None:
        raise ConflictError(f"finding {finding_id} was already closed by {finding.closed_by}")
    merchant = _lock(conn, finding.merchant_id)
    policy = _policies(policies).for_community(merchant.community_id)
    drafts = engine.overdue_charges(policy, finding_id=finding.id, due_at=finding.due_at, closed_at=at, now=at)
    line = policy.finding(finding.kind)
    points = line.points if line is not None else 0
    on_time = engine.rectified_on_time(
        policy, finding_id=finding.id, points=points, due_at=finding.due_at, closed_at=at
    )
    if on_time is not None:
        drafts.append(on_time)
    finding = repo.close_finding(conn, finding_id=finding.id, actor=actor, at=at, note=note)
    _write(conn, merchant.id, drafts, finding_id=finding.id, site_id=finding.site_id, actor=actor)
    _refresh(conn, policy, merchant.id, at)
    return _finding_read(finding, at)


def add_correction(
    conn: Connection[Any],
    *,
    merchant_id: str,
    actor: str,
    reason: str,
    points: int | None = None,
    corrects_entry_id: int | None = None,
    now: datetime | None = None,
    policies: PolicySet | None = None,
) -> LedgerEntryRead:
    """An admin's compensating entry (the ledger is never edited). Reversing an entry in full (points omitted)
    also lifts its hazard count, lock and forced tier."""
    at = _now(now)
    if len(reason.strip()) < 5:
        raise InvalidScoreInput("a correction needs a reason a merchant can read (at least 5 characters)")
    merchant = _lock(conn, merchant_id)
    policy = _policies(policies).for_community(merchant.community_id)
    entries = repo.list_entries(conn, merchant_id=merchant.id)
    target = None
    if corrects_entry_id is not None:
        target = next((e for e in entries if e.id == corrects_entry_id), None)
        if target is None:
            raise NotFoundError(f"ledger entry {corrects_entry_id} is not in merchant {merchant_id}'s ledger")
        if target.id in engine.voided_ids(entries):
            raise ConflictError(f"ledger entry {target.id} has already been reversed in full")
        if points is None:
            already = sum(e.points for e in entries if e.corrects_id == target.id)
            points = -(target.points + already)
    if points is None:
        raise InvalidScoreInput("give the points of the correction, or the entry it reverses")
    if points == 0 or abs(points) > 100:
        raise InvalidScoreInput(f"a correction moves between 1 and 100 points, not {points}")
    row = repo.insert_entry(
        conn,
        merchant_id=merchant.id,
        at=at,
        points=points,
        code=CORRECTION_CODE,
        reason=reason.strip(),
        dedupe_key=f"adj:{uuid.uuid4().hex}",
        alarm_id=target.alarm_id if target else None,
        finding_id=target.finding_id if target else None,
        site_id=target.site_id if target else None,
        actor=actor,
        corrects_id=target.id if target else None,
    )
    assert row is not None  # noqa: S101 - a fresh random key cannot conflict
    log.info("score %s corrected %+d by %s: %s", merchant.id, points, actor, reason)
    _refresh(conn, policy, merchant.id, at)
    return LedgerEntryRead.model_validate(row)


def add_credit(
    conn: Connection[Any],
    *,
    merchant_id: str,
    code: str,
    actor: str,
    note: str = "",
    now: datetime | None = None,
    policies: PolicySet | None = None,
) -> LedgerEntryRead:
    """A verified restoration an admin records (M-R03 monthly self-test, M-R04 staff training)."""
    at = _now(now)
    merchant = _lock(conn, merchant_id)
    policy = _policies(policies).for_community(merchant.community_id)
    entries = repo.list_entries(conn, merchant_id=merchant.id)
    try:
        draft = engine.credit(policy, entries, code=code, at=at)
    except ValueError as exc:
        raise InvalidScoreInput(str(exc)) from None
    if note:
        draft = engine.Draft(
            code=draft.code, points=draft.points, at=draft.at, key=draft.key, reason=f"{draft.reason}: {note}"
        )
    rows = _write(conn, merchant.id, [draft], actor=actor)
    if not rows:
        raise ConflictError(f"{code} was already credited at {at.isoformat()}")
    _refresh(conn, policy, merchant.id, at)
    return LedgerEntryRead.model_validate(rows[0])


def run_score_tick(conn: Connection[Any], *, now: datetime, policies: PolicySet | None = None) -> TickResult:
    """Time-based score work at `now`: missed verified alarms, overdue rectifications, upkeep, clean-period
    restorations, and every merchant's snapshot. Idempotent; one process at a time (advisory lock)."""
    if not repo.try_tick_lock(conn):
        return TickResult(ran=False, now=now)
    ps = _policies(policies)
    written: Counter[str] = Counter()
    merchants = {m.id: m for m in repo.lock_merchants(conn)}

    for alarm in repo.list_unscored_resolved_alarms(conn, since=now - CATCH_UP, now=now):  # missed resolutions
        for scored in _score_alarm(conn, alarm_id=alarm.id, policies=ps):
            written[scored.code] += 1

    ledgers: dict[str, list[repo.LedgerRow]] = {m: [] for m in merchants}
    for entry in repo.list_all_entries(conn):
        ledgers.setdefault(entry.merchant_id, []).append(entry)
    keys = {m: {e.dedupe_key for e in entries} for m, entries in ledgers.items()}

    def write(merchant_id: str, drafts: Sequence[engine.Draft], **source: Any) -> None:
        # Filter by the keys already in the ledger first: a steady-state tick then writes nothing at all.
        fresh = [d for d in drafts if d.key not in keys[merchant_id]]
        for row in _write(conn, merchant_id, fresh, **source):
            ledgers[merchant_id].append(row)
            keys[merchant_id].add(row.dedupe_key)
            written[row.code] += 1

    for finding in repo.list_overdue_findings(conn, now=now):
        policy = ps.for_community(merchants[finding.merchant_id].community_id)
        write(
            finding.merchant_id,
            engine.overdue_charges(policy, finding_id=finding.id, due_at=finding.due_at, closed_at=None, now=now),
            finding_id=finding.id,
            site_id=finding.site_id,
        )

    upkeep_types = sorted({t for p in ps.all() for u in p.upkeep for t in u.alarm_types})
    if upkeep_types:
        for alarm in repo.list_upkeep_alarms(conn, alarm_types=upkeep_types, since=now - UPKEEP_LOOKBACK, now=now):
            assert alarm.merchant_id is not None  # noqa: S101 - the query selects merchants' sites only
            policy = ps.for_community(merchants[alarm.merchant_id].community_id)
            write(
                alarm.merchant_id,
                engine.upkeep_charges(policy, _facts(alarm), now=now),
                alarm_id=alarm.id,
                site_id=alarm.site_id,
            )

    blocking_types = sorted({t for p in ps.all() for t in p.restoration.blocked_by_open_alarm_types})
    blocking = repo.list_blocking_alarms(conn, alarm_types=blocking_types)
    findings_of = _findings_by_merchant(conn)
    snapshots = []
    for merchant in merchants.values():
        policy = ps.for_community(merchant.community_id)
        states = [
            blocking[(merchant.id, t)]
            for t in policy.restoration.blocked_by_open_alarm_types
            if (merchant.id, t) in blocking
        ]
        closed = [c for _, c in states if c is not None]
        write(
            merchant.id,
            engine.restorations_due(
                policy,
                ledgers[merchant.id],
                now=now,
                blocked=any(o for o, _ in states),
                unblocked_at=max(closed) if closed else None,
            ),
        )
        st = engine.derive(policy, ledgers[merchant.id], now, findings_of.get(merchant.id, ()))
        snapshots.append(
            {
                "merchant_id": merchant.id,
                "score": st.score,
                "tier": st.tier,
                "review": st.review,
                "review_reasons": st.review_reasons,
                "hazards": st.hazards,
                "locked_until": st.locked_until,
                "forced_tier": st.forced_tier,
                "forced_until": st.forced_until,
                "entries": st.entries,
                "last_entry_id": st.last_entry_id,
                "as_of": now,
            }
        )
    repo.save_snapshots(conn, snapshots=snapshots)
    return TickResult(ran=True, now=now, written=dict(written), merchants=len(merchants))


def _findings_by_merchant(conn: Connection[Any]) -> dict[str, list[repo.FindingRow]]:
    """Every finding, grouped by merchant (the open-hazard tier judges them at a moment)."""
    grouped: dict[str, list[repo.FindingRow]] = {}
    for f in repo.list_findings(conn, merchant_id=None):
        grouped.setdefault(f.merchant_id, []).append(f)
    return grouped


def recompute_all(
    conn: Connection[Any], *, now: datetime | None = None, refresh: bool = True, policies: PolicySet | None = None
) -> RecomputeReport:
    """Derive every merchant's standing from the ledger and compare it with the stored snapshot (at the
    snapshot's own as_of, so time windows match); then, if refresh, store the standing at now."""
    at = _now(now)
    ps = _policies(policies)
    by_merchant: dict[str, list[repo.LedgerRow]] = {}
    for entry in repo.list_all_entries(conn):
        by_merchant.setdefault(entry.merchant_id, []).append(entry)
    findings_of = _findings_by_merchant(conn)
    mismatches: list[Mismatch] = []
    compared = refreshed = 0
    snapshots = repo.list_snapshots(conn, community_id=None)
    for snap in snapshots:
        policy = ps.for_community(snap.community_id)
        entries = by_merchant.get(snap.merchant_id, [])
        findings = findings_of.get(snap.merchant_id, [])
        if snap.as_of is not None:
            compared += 1
            s = engine.derive(policy, entries, snap.as_of, findings)
            stored = {
                "score": snap.score,
                "tier": snap.tier,
                "review": snap.review,
                "review_reasons": list(snap.review_reasons or []),
                "hazards": snap.hazards,
                "entries": snap.entries,
                "last_entry_id": snap.last_entry_id,
            }
            derived = {
                "score": s.score,
                "tier": s.tier,
                "review": s.review,
                "review_reasons": list(s.review_reasons),
                "hazards": s.hazards,
                "entries": s.entries,
                "last_entry_id": s.last_entry_id,
            }
            for name, value in stored.items():
                if value != derived[name]:
                    mismatches.append(
                        Mismatch(merchant_id=snap.merchant_id, field=name, stored=value, derived=derived[name])
                    )
        if refresh:
            _lock(conn, snap.merchant_id)
            _refresh(conn, policy, snap.merchant_id, at, entries=entries, findings=findings)
            refreshed += 1
    for m in mismatches:
        log.warning(
            "merchant %s: stored %s %r differs from the ledger's %r", m.merchant_id, m.field, m.stored, m.derived
        )
    return RecomputeReport(merchants=len(snapshots), compared=compared, mismatches=mismatches, refreshed=refreshed)


# ---------------------------------------------------------------------------------------------- reads


def get_score(
    conn: Connection[Any], *, merchant_id: str, now: datetime | None = None, policies: PolicySet | None = None
) -> MerchantScoreRead:
    """A merchant's score, tier and review flag (the stored snapshot; derived on the fly if never stored)."""
    row = repo.get_snapshot(conn, merchant_id=merchant_id)
    if row is None:
        raise NotFoundError(f"merchant {merchant_id} does not exist")
    policy = _policies(policies).for_community(row.community_id)
    if row.as_of is None:
        entries = repo.list_entries(conn, merchant_id=merchant_id)
        return _score_read(
            policy, row, engine.derive(policy, entries, _now(now), repo.list_findings(conn, merchant_id=merchant_id))
        )
    return _score_read(policy, row)


def get_trend(
    conn: Connection[Any],
    *,
    merchant_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    policies: PolicySet | None = None,
) -> list[ScorePointRead]:
    """The score after each ledger entry in [since, until], starting with the score at `since`."""
    merchant = repo.get_merchant(conn, merchant_id=merchant_id)
    if merchant is None:
        raise NotFoundError(f"merchant {merchant_id} does not exist")
    policy = _policies(policies).for_community(merchant.community_id)
    points = engine.trend(policy, repo.list_entries(conn, merchant_id=merchant_id))
    out: list[ScorePointRead] = []
    if since is not None:
        before = [p for p in points if p.at < since]
        start = before[-1].score if before else engine.clamp(policy.base)
        out.append(
            ScorePointRead(
                at=since, score=start, tier=engine.tier_for(policy, start), entry_id=None, points=0, code=None
            )
        )
    for p in points:
        if (since is None or p.at >= since) and (until is None or p.at <= until):
            out.append(
                ScorePointRead(at=p.at, score=p.score, tier=p.tier, entry_id=p.entry_id, points=p.points, code=p.code)
            )
    return out


def get_ledger(conn: Connection[Any], *, merchant_id: str, before_id: int | None = None, limit: int = 50) -> LedgerPage:
    """A merchant's ledger, newest first, keyset-paginated."""
    if repo.get_merchant(conn, merchant_id=merchant_id) is None:
        raise NotFoundError(f"merchant {merchant_id} does not exist")
    rows = repo.list_entries_page(conn, merchant_id=merchant_id, before_id=before_id, limit=limit)
    return LedgerPage(
        items=[LedgerEntryRead.model_validate(r) for r in rows], next_before=rows[-1].id if len(rows) == limit else None
    )


def get_open_items(conn: Connection[Any], *, merchant_id: str, now: datetime | None = None) -> OpenItemsRead:
    """Open alarms and unrectified findings on a merchant's premises."""
    if repo.get_merchant(conn, merchant_id=merchant_id) is None:
        raise NotFoundError(f"merchant {merchant_id} does not exist")
    at = _now(now)
    alarms = [OpenAlarmRead.of(a) for a in repo.list_open_alarms(conn, merchant_id=merchant_id)]
    findings = [_finding_read(f, at) for f in repo.list_open_findings(conn, merchant_id=merchant_id)]
    return OpenItemsRead(merchant_id=merchant_id, alarms=alarms, findings=findings)


def list_community_scores(
    conn: Connection[Any],
    *,
    community_id: str | None = None,
    tier: str | None = None,
    now: datetime | None = None,
    policies: PolicySet | None = None,
) -> CommunityScoresRead:
    """Merchants (of a community, or all) by standing, optionally one tier only, with counts per tier."""
    ps = _policies(policies)
    at = _now(now)
    merchants = []
    for row in repo.list_snapshots(conn, community_id=community_id):
        policy = ps.for_community(row.community_id)
        if row.as_of is None:
            standing = engine.derive(
                policy,
                repo.list_entries(conn, merchant_id=row.merchant_id),
                at,
                repo.list_findings(conn, merchant_id=row.merchant_id),
            )
            merchants.append(_score_read(policy, row, standing))
        else:
            merchants.append(_score_read(policy, row))
    merchants.sort(key=lambda m: (m.score, m.merchant_id))
    tiers = Counter(m.tier for m in merchants)
    policy = ps.for_community(community_id)
    counts = {band.tier: tiers.get(band.tier, 0) for band in sorted(policy.tiers, key=lambda b: -b.min)}
    return CommunityScoresRead(
        community_id=community_id,
        tiers=counts,
        review=sum(m.review for m in merchants),
        merchants=[m for m in merchants if tier is None or m.tier == tier],
    )


# ---------------------------------------------------------------------------------------------- scheduler
