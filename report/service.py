"""Reports per micro-grid, grid, community or street for a day, a week or a month, and the KPI figures the API
serves: both come from compute_kpis, so a report and the KPI API agree for the same period."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from psycopg import Connection

from core import repo as core_repo
from core.errors import NotFoundError
from report import repo
from report.period import Period

ScopeKind = Literal["micro_grid", "grid", "community", "street"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("micro_grid", "grid", "community", "street")


@dataclass(frozen=True, slots=True)
class Scope:
    """What a report covers: one micro-grid, grid or community, or the street (every community the caller may see;
    `communities` is the caller's limit, None for a street office)."""

    kind: ScopeKind
    id: str | None = None
    communities: tuple[str, ...] | None = None

    def params(self) -> dict[str, Any]:
        limit = list(self.communities) if self.communities is not None else None
        if self.kind == "street":
            return repo.scope_params(communities=limit)
        return repo.scope_params(**{self.kind: self.id}, communities=limit)


@dataclass(slots=True)
class Report:
    """Every figure of one report."""

    scope: Scope
    scope_name: str
    communities: list[tuple[str, str]]
    period: Period
    generated_at: datetime
    kpis: repo.KpiRow
    by_type_severity: list[tuple[str, int, int]]
    responses: list[repo.ResponseRow]
    per_day: dict[date, int]
    merchants: list[repo.MerchantScoreRow]
    work_orders: repo.WorkOrderRow
    patrols: list[repo.PatrolRow]
    drills: repo.DrillRow
    tiers: dict[str, int] = field(default_factory=dict)


def check_scope(conn: Connection[Any], scope: Scope) -> str:
    """The scope's name; a micro-grid, grid or community that does not exist or is outside the caller's
    communities is not found (the same answer for both)."""
    if scope.kind == "street":
        return ""
    if scope.id is None:
        raise NotFoundError(f"{scope.kind.replace('_', '-')}: give its id")
    if not core_repo.in_communities(conn, table=scope.kind, id=scope.id, communities=scope.communities):
        raise NotFoundError(f"{scope.kind.replace('_', '-')} {scope.id!r} not found")
    return repo.scope_name(conn, table=scope.kind, id=scope.id) or scope.id


def compute_kpis(conn: Connection[Any], *, scope: Scope, since: datetime, until: datetime) -> repo.KpiRow:
    """The KPI figures of a scope for alarms raised in [since, until): the KPI API's and a report's summary."""
    return repo.compute_kpis(conn, scope=scope.params(), since=since, until=until)


def build_report(conn: Connection[Any], *, scope: Scope, period: Period, now: datetime) -> Report:
    """Every figure of a report on this scope and period (the caller checked the scope with check_scope)."""
    name = check_scope(conn, scope)
    p = scope.params()
    since, until = period.since, period.until
    merchants = repo.merchant_scores(conn, scope=p, since=since, until=until)
    return Report(
        scope=scope,
        scope_name=name,
        communities=repo.list_communities(conn, communities=p["communities"]) if scope.kind == "street" else [],
        period=period,
        generated_at=now,
        kpis=compute_kpis(conn, scope=scope, since=since, until=until),
        by_type_severity=repo.alarms_by_type_severity(conn, scope=p, since=since, until=until),
        responses=repo.response_times(conn, scope=p, since=since, until=until),
        per_day=repo.alarms_per_day(conn, scope=p, since=since, until=until, tz=period.tz),
        merchants=merchants,
        work_orders=repo.work_orders(conn, scope=p, since=since, until=until, now=now),
        patrols=repo.patrol_coverage(conn, scope=p, since=since, until=until, now=now),
        drills=repo.drills(conn, scope=p, since=since, until=until, now=now),
        tiers=dict(sorted(Counter(m.tier or "—" for m in merchants).items())),
    )


def alarms_per_day(conn: Connection[Any], *, scope: Scope, period: Period) -> list[tuple[date, int]]:
    """Alarms raised on each local day of the period (zero days included), as a report counts them."""
    counts = repo.alarms_per_day(conn, scope=scope.params(), since=period.since, until=period.until, tz=period.tz)
    return [(day, counts.get(day, 0)) for day in period.days()]
