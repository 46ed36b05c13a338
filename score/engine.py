"""Pure merchant-score policy evaluation: what the ledger says (standing, trend) and which entries are due.

No database here: the service feeds ledger entries and alarm/finding facts in, and writes the drafts
this module returns. Every function takes the time it judges by (`now`, `at`) explicitly, so tests
control the clock and a recompute is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from core.domain import Disposition, Severity
from score.policy import ScorePolicy

MAX_PERIODS = 400  # bound on clean periods examined in one evaluation (~33 years of 30 days)


class EntryLike(Protocol):
    """The ledger fields the derivation reads (score_repo.LedgerRow has them)."""

    @property
    def id(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def points(self) -> int: ...
    @property
    def code(self) -> str: ...
    @property
    def hazard(self) -> bool: ...
    @property
    def lock_until(self) -> datetime | None: ...
    @property
    def forced_tier(self) -> str | None: ...
    @property
    def forced_until(self) -> datetime | None: ...
    @property
    def corrects_id(self) -> int | None: ...


class FindingLike(Protocol):
    """The finding fields the open-hazard check reads (score_repo.FindingRow has them)."""

    @property
    def kind(self) -> str: ...
    @property
    def found_at(self) -> datetime: ...
    @property
    def closed_at(self) -> datetime | None: ...


def open_hazards(policy: ScorePolicy, findings: Iterable[FindingLike], at: datetime) -> int:
    """Findings of a hazard kind recorded by `at` and not rectified by then (RULES-REFERENCE 6.2's "open
    major hazard"); a kind the policy no longer knows still counts (it was a hazard when recorded)."""

    def is_hazard(kind: str) -> bool:
        known = policy.finding(kind)
        return known is None or known.hazard

    return sum(
        1 for f in findings if f.found_at <= at and (f.closed_at is None or f.closed_at > at) and is_hazard(f.kind)
    )


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry the policy says is due; `key` makes writing it idempotent per merchant."""

    code: str
    points: int
    reason: str
    at: datetime
    key: str
    hazard: bool = False
    lock_until: datetime | None = None
    forced_tier: str | None = None
    forced_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Standing:
    """Score, tier and review flag as derived from the ledger at a moment."""

    score: int
    tier: str
    review: bool
    review_reasons: tuple[str, ...]
    hazards: int
    locked_until: datetime | None
    forced_tier: str | None
    forced_until: datetime | None
    entries: int
    last_entry_id: int | None


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """The score right after one ledger entry."""

    at: datetime
    score: int
    tier: str
    entry_id: int
    points: int
    code: str


@dataclass(frozen=True, slots=True)
class AlarmFacts:
    """What the policy needs to know about a resolved (or still open) alarm."""

    id: int
    type: str
    severity: Severity
    disposition: Disposition | None
    known_at: datetime  # when gridwatch learnt of it (max of event time and insert time)
    acknowledged_at: datetime | None
    closed_at: datetime | None


def clamp(value: int) -> int:
    """Scores live in 0..100 (DESIGN: base + sum of entries, clamped)."""
    return max(0, min(100, value))


def tier_for(policy: ScorePolicy, score: int) -> str:
    """The tier whose inclusive band holds this score."""
    for band in policy.tiers:
        if band.min <= score <= band.max:
            return band.tier
    raise ValueError(f"score {score} is in no tier")  # the policy validator rules this out


def voided_ids(entries: Iterable[EntryLike]) -> set[int]:
    """Entries fully reversed by compensating corrections: no longer hazards, locks or forced tiers."""
    by_id = {e.id: e for e in entries}
    reversed_by: dict[int, int] = {}
    for e in by_id.values():
        if e.corrects_id is not None:
            reversed_by[e.corrects_id] = reversed_by.get(e.corrects_id, 0) + e.points
    return {i for i, total in reversed_by.items() if i in by_id and by_id[i].points + total == 0}


def derive(
    policy: ScorePolicy, entries: Sequence[EntryLike], now: datetime, findings: Sequence[FindingLike] = ()
) -> Standing:
    """Score, tier and review flag from the whole ledger of one merchant, judged at `now`; `findings` (all
    the merchant's, open or closed) put the merchant in review.open_hazard_tier while one of a hazard kind
    is open."""
    voided = voided_ids(entries)
    live = [e for e in entries if e.id not in voided and e.corrects_id is None]
    score = clamp(policy.base + sum(e.points for e in entries))
    window = now - timedelta(days=policy.review.window_days)
    hazards = sum(1 for e in live if e.hazard and window < e.at <= now)
    locks = [e.lock_until for e in live if e.lock_until is not None and e.lock_until > now]
    forced = [
        (policy.tier_band(e.forced_tier).min, e.forced_tier, e.forced_until)
        for e in live
        if e.forced_tier is not None and e.forced_until is not None and e.forced_until > now
    ]
    tier = tier_for(policy, score)
    forced_tier = forced_until = None
    if forced:
        _, forced_tier, forced_until = min(forced, key=lambda f: (f[0], -f[2].timestamp()))
        if policy.tier_band(forced_tier).min < policy.tier_band(tier).min:
            tier = forced_tier
    open_count = open_hazards(policy, findings, now) if policy.review.open_hazard_tier else 0
    hazard_tier = policy.review.open_hazard_tier
    if open_count and hazard_tier and policy.tier_band(hazard_tier).min < policy.tier_band(tier).min:
        tier = hazard_tier
    reasons = []
    if open_count and tier == hazard_tier:
        reasons.append(f"{open_count} open hazard{'s' if open_count > 1 else ''} not yet rectified")
    if tier in policy.review.tiers:
        reasons.append(
            f"tier {tier}"
            + (f" (forced until {forced_until:%Y-%m-%d})" if tier == forced_tier and forced_until else "")
        )
    if hazards >= policy.review.hazards:
        reasons.append(f"{hazards} verified hazards in {policy.review.window_days} days")
    return Standing(
        score=score,
        tier=tier,
        review=bool(reasons),
        review_reasons=tuple(reasons),
        hazards=hazards,
        locked_until=max(locks) if locks else None,
        forced_tier=forced_tier,
        forced_until=forced_until,
        entries=len(entries),
        last_entry_id=max((e.id for e in entries), default=None),
    )


def trend(policy: ScorePolicy, entries: Sequence[EntryLike]) -> list[TrendPoint]:
    """The score after each entry, in ledger time order (what a merchant's chart shows)."""
    total = policy.base
    points = []
    for e in sorted(entries, key=lambda e: (e.at, e.id)):
        total += e.points
        score = clamp(total)
        points.append(
            TrendPoint(at=e.at, score=score, tier=tier_for(policy, score), entry_id=e.id, points=e.points, code=e.code)
        )
    return points


def _with_effects(policy: ScorePolicy, draft: Draft) -> Draft:
    """Attach the locks and forced tiers the policy ties to this code."""
    lock_days = max((lock.days for lock in policy.locks if draft.code in lock.codes), default=0)
    if lock_days:
        draft = replace(draft, lock_until=draft.at + timedelta(days=lock_days))
    for forced in policy.forced_tiers:
        if forced.code == draft.code:
            draft = replace(draft, forced_tier=forced.tier, forced_until=draft.at + timedelta(days=forced.days))
    return draft


def alarm_deductions(policy: ScorePolicy, alarm: AlarmFacts, prior: Sequence[EntryLike]) -> list[Draft]:
    """Entries due for a resolved alarm: nothing unless a worker verified it (real_hazard)."""
    if alarm.disposition is not Disposition.REAL_HAZARD or alarm.closed_at is None:
        return []  # false_alarm, test, device_fault: sensor noise costs nothing
    at = alarm.closed_at
    drafts: list[Draft] = []
    line = next((d for d in policy.alarm_deductions if d.matches(alarm.type, alarm.severity)), None)
    if line is not None:
        drafts.append(
            _with_effects(
                policy,
                Draft(
                    code=line.code,
                    points=line.points_for(alarm.severity),
                    reason=f"{line.reason} ({alarm.type})",
                    at=at,
                    key=f"alarm:{alarm.id}:{line.code}",
                    hazard=line.hazard,
                ),
            )
        )
    ack = policy.ack_deadline
    if ack is not None and alarm.severity in ack.minutes:
        deadline = alarm.known_at + timedelta(minutes=ack.minutes[alarm.severity])
        acked = alarm.acknowledged_at
        if acked is None or acked > deadline:
            drafts.append(
                _with_effects(
                    policy,
                    Draft(
                        code=ack.code,
                        points=ack.points,
                        at=at,
                        key=f"alarm:{alarm.id}:{ack.code}",
                        reason=f"{ack.reason} ({alarm.type}, {ack.minutes[alarm.severity]} min)",
                    ),
                )
            )
    return drafts + repeat_deductions(policy, drafts, prior)


def repeat_deductions(policy: ScorePolicy, new: Sequence[Draft], prior: Sequence[EntryLike]) -> list[Draft]:
    """M-D09: the Nth verified violation of a kind within the window adds the persistence deduction."""
    voided = voided_ids(prior)
    live = [e for e in prior if e.id not in voided and e.corrects_id is None]
    drafts = []
    for rep in policy.repeats:
        for draft in new:
            if draft.code not in rep.of_codes:
                continue
            since = draft.at - timedelta(days=rep.window_days)
            count = 1 + sum(1 for e in live if e.code in rep.of_codes and since < e.at <= draft.at)
            already = any(e.code == rep.code and since < e.at <= draft.at for e in live)
            if count >= rep.count and not already:
                drafts.append(
                    _with_effects(
                        policy,
                        Draft(
                            code=rep.code,
                            points=rep.points,
                            at=draft.at,
                            key=f"{draft.key}:{rep.code}",
                            hazard=False,
                            reason=f"{rep.reason} ({count} in {rep.window_days} days)",
                        ),
                    )
                )
                break
    return drafts


def finding_deduction(policy: ScorePolicy, *, finding_id: int, kind: str, at: datetime) -> Draft:
    """The deduction for a hazard a worker recorded on inspection."""
    line = policy.finding(kind)
    if line is None:
        known = ", ".join(f.kind for f in policy.findings)
        raise ValueError(f"unknown finding kind {kind!r}; the policy knows {known}")
    return _with_effects(
        policy,
        Draft(
            code=line.code,
            points=line.points,
            reason=line.reason,
            at=at,
            key=f"finding:{finding_id}",
            hazard=line.hazard,
        ),
    )


def overdue_charges(
    policy: ScorePolicy, *, finding_id: int, due_at: datetime, closed_at: datetime | None, now: datetime
) -> list[Draft]:
    """M-D12: one deduction per started overdue period, at the instant that period starts."""
    rect = policy.rectification
    until = closed_at if closed_at is not None and closed_at <= now else now
    drafts = []
    for k in range(rect.max_overdue_charges):
        starts = due_at + timedelta(days=rect.overdue_every_days * k)
        if until <= starts:
            break
        drafts.append(
            _with_effects(
                policy,
                Draft(
                    code=rect.overdue_code,
                    points=rect.overdue_points,
                    at=starts,
                    key=f"finding:{finding_id}:overdue:{k}",
                    reason=f"Hazard not rectified by its deadline (overdue period {k + 1})",
                ),
            )
        )
    return drafts


def rectified_on_time(
    policy: ScorePolicy, *, finding_id: int, points: int, due_at: datetime, closed_at: datetime
) -> Draft | None:
    """M-R02: closing a finding by its deadline restores part of its deduction; late closing restores nothing."""
    rect = policy.rectification
    restore = abs(points) * rect.on_time_restore_pct // 100
    if closed_at > due_at or restore <= 0:
        return None
    return Draft(
        code=rect.on_time_code,
        points=restore,
        at=closed_at,
        key=f"finding:{finding_id}:rectified",
        reason=f"Rectification completed and verified on time ({rect.on_time_restore_pct} % restored)",
    )


def _quarter(at: datetime, tz: ZoneInfo) -> tuple[int, int]:
    local = at.astimezone(tz)
    return local.year, (local.month - 1) // 3


def restorations_due(
    policy: ScorePolicy,
    entries: Sequence[EntryLike],
    *,
    now: datetime,
    blocked: bool = False,
    unblocked_at: datetime | None = None,
) -> list[Draft]:
    """M-R01: +points per clean period counted from the last deduction (or lock end, or the end of the last
    blocking alarm), capped at base and per calendar quarter; nothing while a blocking alarm is open."""
    rest = policy.restoration
    if blocked:
        return []
    voided = voided_ids(entries)
    live = [e for e in entries if e.id not in voided]
    anchors = [e.at for e in live if e.points < 0]
    anchors += [e.lock_until for e in live if e.lock_until is not None and e.corrects_id is None]
    if unblocked_at is not None:
        anchors.append(unblocked_at)
    if not anchors:
        return []
    anchor = max(anchors)
    score = clamp(policy.base + sum(e.points for e in entries))
    tz = ZoneInfo(policy.timezone)
    per_quarter: dict[tuple[int, int], int] = {}
    done = set()
    for e in entries:
        if e.code == rest.code:
            q = _quarter(e.at, tz)
            per_quarter[q] = per_quarter.get(q, 0) + e.points
            done.add(e.at)
    drafts = []
    period = timedelta(days=rest.clean_days)
    for k in range(1, MAX_PERIODS + 1):
        at = anchor + period * k
        if at > now:
            break
        if at in done:
            continue
        q = _quarter(at, tz)
        points = min(rest.points, rest.max_per_quarter - per_quarter.get(q, 0), policy.base - score)
        if points <= 0:
            continue
        drafts.append(
            Draft(
                code=rest.code,
                points=points,
                at=at,
                key=f"restore:{at.isoformat()}",
                reason=f"{rest.clean_days} clean days",
            )
        )
        per_quarter[q] = per_quarter.get(q, 0) + points
        score += points
    return drafts


def upkeep_charges(policy: ScorePolicy, alarm: AlarmFacts, *, now: datetime) -> list[Draft]:
    """M-D05/M-D06: an upkeep alarm still open past its allowance costs points, per period, up to a cap."""
    drafts = []
    for rule in policy.upkeep:
        if alarm.type not in rule.alarm_types:
            continue
        until = alarm.closed_at if alarm.closed_at is not None and alarm.closed_at <= now else now
        for k in range(rule.max_charges):
            at = alarm.known_at + timedelta(hours=rule.open_for_h + (rule.repeat_h or 0) * k)
            if at > until or (alarm.closed_at is not None and at >= alarm.closed_at):
                break
            drafts.append(
                _with_effects(
                    policy,
                    Draft(
                        code=rule.code,
                        points=rule.points,
                        at=at,
                        key=f"alarm:{alarm.id}:{rule.code}:{k}",
                        reason=f"{rule.reason} ({alarm.type})",
                    ),
                )
            )
            if rule.repeat_h is None:
                break
    return drafts


def credit(policy: ScorePolicy, entries: Sequence[EntryLike], *, code: str, at: datetime) -> Draft:
    """A verified manual credit (M-R03 self-test, M-R04 training) within its yearly cap and outside locks."""
    line = policy.credit(code)
    if line is None:
        raise ValueError(f"unknown credit code {code!r}; the policy knows {', '.join(c.code for c in policy.credits)}")
    standing = derive(policy, entries, at)
    if standing.locked_until is not None:
        raise ValueError(f"restorations are locked until {standing.locked_until:%Y-%m-%d %H:%M} UTC")
    year_ago = at - timedelta(days=365)
    used = sum(1 for e in entries if e.code == code and year_ago < e.at <= at)
    if used >= line.max_per_year:
        raise ValueError(f"{code} was already credited {used} time(s) in the last 365 days (max {line.max_per_year})")
    points = min(line.points, policy.base - standing.score)
    if points <= 0:
        raise ValueError(f"the score is already at base ({policy.base}); {code} would add nothing")
    return Draft(code=code, points=points, at=at, key=f"credit:{code}:{at.isoformat()}", reason=line.reason)
