"""The merchant safety score policy: a validated YAML table (shipped default, overridable per community).

Baseline: RULES-REFERENCE.md section 6.2 (codes M-D01..M-D12, M-R01..M-R04, tiers and locks). Points are
integers so tier ranges can be checked for gaps and overlaps exactly.
"""

from __future__ import annotations

import difflib
import itertools
import os
import re
from collections.abc import Collection, Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from core.configfile import read_yaml
from core.domain import Severity
from core.errors import ConfigError

Code = Annotated[str, Field(pattern=r"^M-[DR]\d{2}$")]
Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
Deduction = Annotated[int, Field(lt=0, ge=-100)]
Credit = Annotated[int, Field(gt=0, le=100)]

POLICY_ENV = "GRIDWATCH_SCORE_POLICY"
CATALOG_RE = re.compile(r"^#\s+(?P<type>[a-z][a-z0-9_]*)\s{2,}(?P<severity>critical|major|minor|info)\b")


def _severity(value: Any) -> Severity:
    if isinstance(value, Severity):
        return value
    try:
        return Severity.parse(value)
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"{value!r} is not a severity (critical, major, minor, info or P1..P4)") from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierBand(_Strict):
    """One tier: an inclusive integer score range."""

    tier: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9+-]{0,3}$")]
    min: int = Field(ge=0, le=100)
    max: int = Field(ge=0, le=100)
    handling: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> TierBand:
        if self.min > self.max:
            raise ValueError(f"tier {self.tier}: min {self.min} is above max {self.max}")
        return self


class ReviewRule(_Strict):
    """Admission review (准入): a tier in `tiers`, or `hazards` verified hazards within `window_days`."""

    tiers: tuple[str, ...] = ("D",)
    hazards: int = Field(default=3, ge=1)
    window_days: int = Field(default=90, ge=1)
    open_hazard_tier: str | None = Field(
        default=None,
        description="RULES-REFERENCE 6.2: any open major hazard (a "
        "finding of a `hazard: true` kind not yet rectified) puts the merchant "
        "in this tier regardless of score; null: not applied",
    )


class AlarmDeduction(_Strict):
    """Points for an alarm a worker verified (resolved real_hazard) on the merchant's site."""

    code: Code
    reason: str = Field(min_length=3)
    alarm_types: tuple[Name, ...] = Field(min_length=1)
    severities: tuple[Severity, ...] = Field(default=(), description="only these severities; empty = all")
    points: Deduction
    points_by_severity: dict[Severity, Deduction] = Field(default_factory=dict)
    hazard: bool = Field(default=True, description="counts toward the admission-review hazard count")

    @field_validator("severities", mode="before")
    @classmethod
    def _sevs(cls, value: Any) -> Any:
        return tuple(_severity(s) for s in value) if isinstance(value, list | tuple) else value

    @field_validator("points_by_severity", mode="before")
    @classmethod
    def _sev_keys(cls, value: Any) -> Any:
        return {_severity(k): v for k, v in value.items()} if isinstance(value, dict) else value

    def points_for(self, severity: Severity) -> int:
        """The deduction for an alarm of this severity."""
        return self.points_by_severity.get(severity, self.points)

    def matches(self, alarm_type: str, severity: Severity) -> bool:
        """Whether this line applies to an alarm of this type and severity."""
        return alarm_type in self.alarm_types and (not self.severities or severity in self.severities)


class AckDeadline(_Strict):
    """A verified alarm whose first acknowledgement came later than its deadline (or never) costs extra."""

    code: Code
    reason: str = Field(min_length=3)
    minutes: dict[Severity, int] = Field(description="deadline per severity; severities not listed are exempt")
    points: Deduction

    @field_validator("minutes", mode="before")
    @classmethod
    def _sev_keys(cls, value: Any) -> Any:
        return {_severity(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("minutes")
    @classmethod
    def _positive(cls, value: dict[Severity, int]) -> dict[Severity, int]:
        for sev, minutes in value.items():
            if minutes <= 0:
                raise ValueError(f"deadline for {sev.label} must be > 0 minutes, got {minutes}")
        return value


class RepeatRule(_Strict):
    """A violation that persists: the Nth verified entry of `of_codes` within the window costs extra."""

    code: Code
    reason: str = Field(min_length=3)
    of_codes: tuple[Code, ...] = Field(min_length=1)
    count: int = Field(ge=2)
    window_days: int = Field(ge=1)
    points: Deduction


class UpkeepRule(_Strict):
    """Device upkeep left undone: an alarm of these types still open after `open_for_h` hours (per alarm),
    again every `repeat_h` hours while it stays open. No worker verification: the open alarm is the fact."""

    code: Code
    reason: str = Field(min_length=3)
    alarm_types: tuple[Name, ...] = Field(min_length=1)
    open_for_h: float = Field(gt=0)
    repeat_h: float | None = Field(default=None, gt=0)
    points: Deduction
    max_charges: int = Field(default=4, ge=1, description="per alarm")


class FindingKind(_Strict):
    """A hazard a worker records on site by inspection, with a rectification deadline."""

    kind: Name
    code: Code
    reason: str = Field(min_length=3)
    points: Deduction
    rectify_days: float = Field(gt=0)
    hazard: bool = True


class Rectification(_Strict):
    """Closing a finding on time restores part of its deduction; each started overdue period deducts."""

    on_time_code: Code = "M-R02"
    on_time_restore_pct: int = Field(default=50, ge=0, le=100)
    overdue_code: Code = "M-D12"
    overdue_points: Deduction = -5
    overdue_every_days: float = Field(default=7, gt=0)
    max_overdue_charges: int = Field(default=8, ge=1)


class Restoration(_Strict):
    """Clean periods: `points` per `clean_days` without deductions, capped at base and per quarter."""

    code: Code = "M-R01"
    points: Credit = 2
    clean_days: int = Field(default=30, ge=1)
    max_per_quarter: int = Field(default=6, ge=0)
    blocked_by_open_alarm_types: tuple[Name, ...] = ("offline",)


class Credit_(_Strict):  # noqa: N801 - "Credit" is the points type above
    """A restoration an admin records when verified (self-test done, staff trained)."""

    code: Code
    reason: str = Field(min_length=3)
    points: Credit
    max_per_year: int = Field(ge=1)


class Lock(_Strict):
    """After these codes, no restoration points for `days`."""

    codes: tuple[Code, ...]
    days: int = Field(ge=1)


class ForcedTier(_Strict):
    """After this code, the tier is forced (e.g. D for 180 days after a fire caused by negligence)."""

    code: Code
    tier: str
    days: int = Field(ge=1)


class ScorePolicy(_Strict):
    """The whole policy in force for one community."""

    version: int = 1
    base: int = Field(default=100, ge=1, le=100)
    timezone: str = "Asia/Shanghai"
    tiers: tuple[TierBand, ...] = Field(min_length=1)
    review: ReviewRule = ReviewRule()
    alarm_deductions: tuple[AlarmDeduction, ...] = ()
    ack_deadline: AckDeadline | None = None
    repeats: tuple[RepeatRule, ...] = ()
    upkeep: tuple[UpkeepRule, ...] = ()
    findings: tuple[FindingKind, ...] = ()
    rectification: Rectification = Rectification()
    restoration: Restoration = Restoration()
    credits: tuple[Credit_, ...] = ()
    locks: tuple[Lock, ...] = ()
    forced_tiers: tuple[ForcedTier, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> ScorePolicy:
        self._check_tiers()
        self._check_tier_names()
        self._check_deductions()
        self._check_codes()
        return self

    def _check_tiers(self) -> None:
        """Tier bands: unique names, covering 0..100 with no gap and no overlap."""
        bands = sorted(self.tiers, key=lambda b: b.min)
        names = [b.tier for b in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tiers: duplicate tier names {', '.join(dupes)}")
        if bands[0].min != 0:
            raise ValueError(f"tiers: scores 0..{bands[0].min - 1} have no tier (the lowest tier must start at 0)")
        if bands[-1].max != 100:
            raise ValueError(f"tiers: scores {bands[-1].max + 1}..100 have no tier (the highest must end at 100)")
        for low, high in itertools.pairwise(bands):
            if high.min <= low.max:
                raise ValueError(
                    f"tiers: {low.tier} ({low.min}-{low.max}) and {high.tier} ({high.min}-{high.max}) "
                    f"overlap at {high.min}..{min(low.max, high.max)}"
                )
            if high.min > low.max + 1:
                raise ValueError(
                    f"tiers: gap between {low.tier} ({low.min}-{low.max}) and {high.tier} "
                    f"({high.min}-{high.max}): scores {low.max + 1}..{high.min - 1} have no tier"
                )

    def _check_tier_names(self) -> None:
        """Every tier the review and the forced tiers name exists."""
        names = [b.tier for b in self.tiers]
        unknown = [(f"review.tiers: unknown tier {t!r}", t) for t in self.review.tiers]
        if self.review.open_hazard_tier is not None:
            unknown.append(
                (
                    f"review.open_hazard_tier: unknown tier {self.review.open_hazard_tier!r}",
                    self.review.open_hazard_tier,
                )
            )
        for message, tier in unknown:
            if tier not in names:
                raise ValueError(f"{message} (tiers are {', '.join(names)})")
        for forced in self.forced_tiers:
            if forced.tier not in names:
                raise ValueError(f"forced_tiers: {forced.code} forces unknown tier {forced.tier!r}")

    def _check_deductions(self) -> None:
        """Finding kinds are unique; no alarm type (at a severity) is charged by two deduction lines."""
        kinds = [f.kind for f in self.findings]
        dupes = sorted({k for k in kinds if kinds.count(k) > 1})
        if dupes:
            raise ValueError(f"findings: duplicate kinds {', '.join(dupes)}")
        seen: dict[tuple[str, Severity | None], str] = {}
        for line in self.alarm_deductions:
            for alarm_type, sev in itertools.product(line.alarm_types, line.severities or (None,)):
                clash = seen.get((alarm_type, sev)) or seen.get((alarm_type, None))
                if clash is not None:
                    raise ValueError(
                        f"alarm_deductions: {alarm_type} is charged twice ({clash} and {line.code}); "
                        "split them by severities"
                    )
                seen[(alarm_type, sev)] = line.code

    def _check_codes(self) -> None:
        """Locks, forced tiers and repeats refer to deduction codes this policy writes."""
        codes = self.codes()
        refs = [
            (f"locks: {code} is no deduction code of this policy", code) for lock in self.locks for code in lock.codes
        ]
        refs += [(f"forced_tiers: {f.code} is no deduction code of this policy", f.code) for f in self.forced_tiers]
        refs += [
            (f"repeats: {r.code} counts {code}, which is no deduction code of this policy", code)
            for r in self.repeats
            for code in r.of_codes
        ]
        for message, code in refs:
            if code not in codes:
                raise ValueError(message)

    def codes(self) -> set[str]:
        """Every deduction code this policy can write."""
        found = {d.code for d in self.alarm_deductions} | {f.code for f in self.findings}
        found |= {r.code for r in self.repeats} | {u.code for u in self.upkeep}
        found.add(self.rectification.overdue_code)
        if self.ack_deadline:
            found.add(self.ack_deadline.code)
        return found

    def alarm_types(self) -> set[str]:
        """Every alarm type the policy names."""
        found = {t for d in self.alarm_deductions for t in d.alarm_types}
        found |= {t for u in self.upkeep for t in u.alarm_types}
        found |= set(self.restoration.blocked_by_open_alarm_types)
        return found

    def tier_band(self, tier: str) -> TierBand:
        """The band of a tier by name."""
        return next(b for b in self.tiers if b.tier == tier)

    def finding(self, kind: str) -> FindingKind | None:
        """The finding kind by name."""
        return next((f for f in self.findings if f.kind == kind), None)

    def credit(self, code: str) -> Credit_ | None:
        """A manual credit line by code."""
        return next((c for c in self.credits if c.code == code), None)


class PolicySet(_Strict):
    """The default policy plus per-community overrides, each a complete validated policy."""

    default: ScorePolicy
    communities: dict[str, ScorePolicy] = Field(default_factory=dict)

    def for_community(self, community_id: str | None) -> ScorePolicy:
        """The policy in force for a community."""
        if community_id is None:
            return self.default
        return self.communities.get(community_id, self.default)

    def all(self) -> Iterable[ScorePolicy]:
        yield self.default
        yield from self.communities.values()


def catalog_alarm_types(text: str) -> set[str]:
    """The alarm types of the ALARM-TYPE CATALOG comment at the top of a rules file (rules/defaults.yaml)."""
    found: set[str] = set()
    inside = False
    for line in text.splitlines():
        if "ALARM-TYPE CATALOG" in line:
            inside = True
            continue
        if inside:
            if not line.startswith("#"):
                break
            match = CATALOG_RE.match(line)
            if match:
                found.add(match["type"])
    return found


def known_alarm_types(ruleset: Any | None = None) -> set[str]:
    """Alarm types the policy may name: the loaded rule set's rules, its catalog, and the shipped catalog.

    The shipped catalog (rules/defaults.yaml header) names types whose rules are still being written and
    types raised outside threshold rules (offline, actuation_failed), so it is always included.
    """
    text = resources.files("rules").joinpath("defaults.yaml").read_text(encoding="utf-8")
    found = catalog_alarm_types(text)
    if ruleset is not None:
        found |= {rule.alarm_type for rule in getattr(ruleset, "rules", ())}
        found |= set(getattr(ruleset, "alarm_types", ()) or ())
    return found


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys of an override replace the default's (a community restates a whole section)."""
    merged = dict(base)
    merged.update(override)
    return merged


def _format_errors(exc: ValidationError, source: str, data: Any) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = []
        node = data
        for part in loc:
            label = str(part)
            if isinstance(node, dict):
                node = node.get(part)
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
                ident = node.get("code") or node.get("kind") or node.get("tier") if isinstance(node, dict) else None
                label = f"{part} ({ident})" if ident else label
            else:
                node = None
            where.append(label)
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {'.'.join(where)}: {msg}" if where else f"{source}: {msg}")
    return "\n".join(lines)


def parse_policy(data: Any, source: str, *, alarm_types: Collection[str] | None = None) -> PolicySet:
    """Validate a policy document; every error names the file and the place. alarm_types: the known ones."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a score policy is a mapping (base, tiers, alarm_deductions, ...)")
    overrides = data.get("communities") or {}
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ConfigError(f"{source}: communities: a mapping of community id to policy sections")
    base_data = {k: v for k, v in data.items() if k != "communities"}
    try:
        default = ScorePolicy.model_validate(base_data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, base_data)) from None
    communities: dict[str, ScorePolicy] = {}
    for community_id, override in overrides.items():
        merged = _merge(base_data, override)
        try:
            communities[str(community_id)] = ScorePolicy.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(_format_errors(exc, f"{source} (community {community_id})", merged)) from None
    policies = PolicySet(default=default, communities=communities)
    if alarm_types is not None:
        known = set(alarm_types)
        problems = []
        for name, policy in [("", default), *((f" (community {c})", p) for c, p in communities.items())]:
            for unknown in sorted(policy.alarm_types() - known):
                close = difflib.get_close_matches(unknown, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"{source}{name}: unknown alarm type {unknown!r} (not in the loaded rule set or "
                    f"the alarm-type catalog of rules/defaults.yaml){hint}"
                )
        if problems:
            raise ConfigError("\n".join(problems))
    return policies


def load_policy(path: Path | None = None, *, ruleset: Any | None = None) -> PolicySet:
    """The shipped default policy, or the file at path, validated against the alarm types of the rule set."""
    data, source = read_yaml(path, package="score", default="policy.yaml")
    return parse_policy(data, source, alarm_types=known_alarm_types(ruleset))


@lru_cache(maxsize=1)
def active_policies() -> PolicySet:
    """The policy in force in this process: $GRIDWATCH_SCORE_POLICY if set, else the shipped default, checked
    against the alarm-type catalog (`gridwatch score check` also checks it against the rules in force)."""
    path = os.environ.get(POLICY_ENV)
    return load_policy(Path(path) if path else None)
