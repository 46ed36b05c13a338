"""Who hears: device or site → micro-grid → covering workers on duty (else on call) → grid leader → community duty
→ fire station, plus the merchant of the premises. Pure functions over registry rows (core.repo.Recipient), the one
decision used by notify's alarm ladder and by field's resident reports, drills and overdue work orders."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from core.domain import WorkerRole
from core.repo import Recipient
from core.roster import on_duty

log = logging.getLogger(__name__)

TIER_ORDER = ("worker", "merchant", "leader", "community", "fire_station")


def _tier_members(tier: str, workers: Sequence[Recipient]) -> list[Recipient]:
    match tier:
        case "worker":
            return [w for w in workers if w.covers_micro_grid and w.role != WorkerRole.FIRE_STATION]
        case "leader":
            return [w for w in workers if w.role == WorkerRole.GRID_LEADER and w.leads_grid]
        case "community":
            return [w for w in workers if w.role == WorkerRole.COMMUNITY_DUTY]
        case "fire_station":
            return [w for w in workers if w.role == WorkerRole.FIRE_STATION]
    return []


def _fallbacks(tier: str, workers: Sequence[Recipient]) -> list[Callable[[], list[Recipient]]]:
    """On-call candidates for a tier whose members are all off duty, nearest first."""
    on_call = [w for w in workers if w.on_call]
    if tier == "worker":
        return [
            lambda: [w for w in on_call if w.covers_micro_grid],
            lambda: [w for w in on_call if w.covers_grid and w.role == WorkerRole.MICRO_GRID_WORKER],
            lambda: [w for w in on_call if w.role in (WorkerRole.MICRO_GRID_WORKER, WorkerRole.GRID_LEADER)],
        ]
    if tier == "leader":
        return [lambda: [w for w in on_call if w.role == WorkerRole.GRID_LEADER]]
    return [lambda: [w for w in on_call if w.role == tier]]


def tier_recipients(
    tier: str, workers: Sequence[Recipient], *, merchant: Recipient | None, now: datetime, tz: str
) -> list[Recipient]:
    """The people of one tier to notify now: members on duty by their roster, else the on-call fallback, else
    every member (a safety alarm goes to someone off duty rather than to nobody)."""
    if tier == "merchant":
        return [merchant] if merchant is not None and merchant.notify_urls else []
    members = _tier_members(tier, workers)
    on = [w for w in members if on_duty(w.roster, now, tz)]
    if on:
        return on
    for candidates in _fallbacks(tier, workers):
        found = candidates()
        if found:
            return found
    if members:
        log.warning("nobody of tier %s is on duty or on call; notifying all %d of them", tier, len(members))
    return members


def ladder_recipients(
    tiers: Sequence[str], workers: Sequence[Recipient], *, merchant: Recipient | None, now: datetime, tz: str
) -> list[tuple[Recipient, str]]:
    """(recipient, tier) for the tiers of a ladder step; someone in two tiers hears once (the first)."""
    seen: set[tuple[bool, str]] = set()
    out: list[tuple[Recipient, str]] = []
    for tier in tiers:
        for r in tier_recipients(tier, workers, merchant=merchant, now=now, tz=tz):
            key = (r.is_merchant, r.id)
            if key not in seen:
                seen.add(key)
                out.append((r, tier))
    return out
