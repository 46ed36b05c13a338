"""Loading the rule configuration: shipped defaults plus optional overrides, validated at load.

A rules document is `{rules: [...], overrides: [...]}`. `extends: defaults` starts from the shipped rules
(a rule with the same id replaces the default one). An override matches devices by kind, location, site
and/or device id and sets fields of one rule (`set: {raise_at: 15}`) or disables it
(`set: {enabled: false}`); later overrides win, so order them general -> specific (kind, site, device).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from core.configfile import read_yaml
from core.domain import READING_ATTRIBUTES, Device, DeviceKind, Location, Reading
from core.errors import ConfigError
from rules.engine import AbsenceRule, AnyRule, ClockRule, Rule, StuckRule, evaluator, watched_fields

_RULES = TypeAdapter(list[Rule])
_RULE = TypeAdapter(Rule)


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: DeviceKind | None = None
    location: Location | None = None
    site: str | None = None
    device: str | None = None

    def matches(self, device: Device) -> bool:
        return (
            (self.kind is None or device.kind == self.kind)
            and (self.location is None or device.location == self.location)
            and (self.site is None or device.site_id == self.site)
            and (self.device is None or device.id == self.device)
        )


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    match: Match
    rule: str
    set: dict[str, Any] = Field(min_length=1)
    reason: str = ""


class CompiledRule:
    """A rule with what the hot path needs precomputed."""

    __slots__ = ("evaluate", "fields", "judges_tests", "only_armed", "rule")

    def __init__(self, rule: AnyRule) -> None:
        self.rule = rule
        self.fields = watched_fields(rule)
        self.evaluate = evaluator(rule)
        self.judges_tests = isinstance(rule, StuckRule | AbsenceRule)  # a self-test reading counts for these only
        # A message only ever clears an absence alarm: with no state of its own the rule has nothing to do.
        self.only_armed = isinstance(rule, AbsenceRule)


class Plan:
    """A device's compiled rules and the reading fields they read, split into Reading attributes and extras."""

    __slots__ = ("extra_fields", "max_ahead_s", "rules", "slot_fields")

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules
        # How far ahead of its arrival a reading's device time may be and still be judged in it (DEV-05c).
        self.max_ahead_s = min((c.rule.max_ahead_s for c in rules if isinstance(c.rule, ClockRule)), default=None)
        fields = sorted({f for c in rules for f in c.fields if f != "-"})
        self.slot_fields = tuple(f for f in fields if f in READING_ATTRIBUTES)
        self.extra_fields = tuple(f for f in fields if f not in READING_ATTRIBUTES)

    def present(self, reading: Reading) -> set[str]:
        """The fields this reading carries that some rule of the device reads."""
        found = {f for f in self.slot_fields if getattr(reading, f) is not None}
        extras = reading.extras
        if extras and self.extra_fields:
            found.update(f for f in self.extra_fields if extras.get(f) is not None)
        return found


def _order(rules: tuple[AnyRule, ...]) -> tuple[AnyRule, ...]:
    """Rules that inhibit (or uplift, if_active) others are evaluated first, so they see this reading's result."""
    inhibitors = {i for r in rules for i in (*r.inhibited_by, *r.if_active)}
    return tuple(sorted(rules, key=lambda r: 0 if r.id in inhibitors else 1))


class RuleSet:
    """The rules in force, with a per-device view (overrides applied)."""

    def __init__(self, rules: tuple[AnyRule, ...], overrides: tuple[Override, ...] = ()) -> None:
        self.rules = _order(rules)
        self.overrides = overrides
        self._by_id = {r.id: r for r in self.rules}
        self._index: dict[tuple[str, ...], tuple[AnyRule, ...]] = {}
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._specific = any(o.match.site or o.match.device for o in overrides)

    def _key(self, device: Device) -> tuple[str, ...]:
        # _value_ is the members' plain attribute (.value is a descriptor): this runs for every reading.
        base: tuple[str, ...] = (device.kind._value_, device.location._value_)
        return (*base, device.site_id, device.id) if self._specific else base

    def plan_for(self, device: Device) -> Plan:
        """The hot path's view of a device: its compiled rules and the fields they read (cached per key)."""
        key = self._key(device)
        found = self._plans.get(key)
        if found is None:
            found = self._plans[key] = Plan(tuple(CompiledRule(r) for r in self.for_device(device)))
        return found

    def for_device(self, device: Device) -> tuple[AnyRule, ...]:
        """The rules that watch this device, with its overrides applied."""
        key = self._key(device)
        found = self._index.get(key)
        if found is None:
            rules = []
            for rule in self.rules:
                for o in self.overrides:
                    if o.rule == rule.id and o.match.matches(device):
                        rule = _RULE.validate_python({**rule.model_dump(), **o.set})
                if rule.applies_to(device):
                    rules.append(rule)
            found = self._index[key] = tuple(rules)
        return found

    def effective(self, device: Device, rule_id: str) -> AnyRule | None:
        """This rule as it applies to this device (its overrides applied), or None if it does not watch it."""
        return next((r for r in self.for_device(device) if r.id == rule_id), None)

    def by_id(self, rule_id: str) -> AnyRule:
        return self._by_id[rule_id]


def _explain(exc: ValidationError, items: list[Any], source: str, what: str) -> str:
    problems = []
    for err in exc.errors():
        loc = err["loc"]
        index = loc[0] if loc and isinstance(loc[0], int) else None
        rid = "?"
        if index is not None and isinstance(items[index], dict):
            rid = str(items[index].get("id") or items[index].get("rule") or "?")
        where = ".".join(str(p) for p in loc[1:])
        problems.append(f"{source}: {what} {rid} (#{index}) {where}: {err['msg']}")
    return "\n".join(problems)


def parse_rules(data: Any, source: str, *, base: RuleSet | None = None) -> RuleSet:
    """Validate a rules document with errors naming the rule."""
    if not isinstance(data, dict) or not isinstance(data.get("rules", []), list):
        raise ConfigError(f"{source}: a rules file is a mapping with a 'rules' list")
    unknown = set(data) - {"rules", "overrides", "extends"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    rules = _parse_rule_list(data.get("rules") or [], source)
    extends = data.get("extends")
    if extends not in (None, "defaults"):
        raise ConfigError(f"{source}: extends must be 'defaults' (got {extends!r})")
    inherited: tuple[Override, ...] = ()
    if extends == "defaults":
        base = base or default_rules()
        mine = {r.id for r in rules}
        rules = [r for r in base.rules if r.id not in mine] + rules
        inherited = base.overrides
    overrides = _parse_overrides(data.get("overrides") or [], rules, source)
    _check_rule_references(rules, source)
    return RuleSet(rules=tuple(rules), overrides=(*inherited, *overrides))


def _parse_rule_list(items: list[Any], source: str) -> list[AnyRule]:
    try:
        rules: list[AnyRule] = _RULES.validate_python(items)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, items, source, "rule")) from None
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate rule ids {', '.join(dupes)}")
    return rules


def _parse_overrides(raw: list[Any], rules: list[AnyRule], source: str) -> list[Override]:
    """Overrides, each checked by applying it to the rule it names (the result must still be a valid rule)."""
    try:
        overrides = TypeAdapter(list[Override]).validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, raw, source, "override")) from None
    by_id = {r.id: r for r in rules}
    for i, o in enumerate(overrides):
        if o.rule not in by_id:
            raise ConfigError(f"{source}: override #{i} names unknown rule {o.rule}")
        try:
            _RULE.validate_python({**by_id[o.rule].model_dump(), **o.set})
        except ValidationError as exc:
            raise ConfigError(
                f"{source}: override #{i} of {o.rule}: "
                + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            ) from None
    return overrides


def _check_rule_references(rules: list[AnyRule], source: str) -> None:
    """inhibited_by and if_active name rules of the set."""
    known_ids = {r.id for r in rules}
    for r in rules:
        for what, refs in (("is inhibited_by", r.inhibited_by), ("has if_active", r.if_active)):
            missing = [i for i in refs if i not in known_ids]
            if missing:
                raise ConfigError(f"{source}: rule {r.id} {what} unknown rule(s) {', '.join(missing)}")


def load_rules(path: Path | None = None) -> RuleSet:
    """The shipped defaults, or the file at path."""
    data, source = read_yaml(path, package="rules", default="defaults.yaml")
    return parse_rules(data, source)


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rule set (cached)."""
    return load_rules()


def describe_rules(ruleset: RuleSet, device: Device | None = None) -> str:
    """A human summary: every rule, or the effective rules (overrides applied) for one device."""
    rules = ruleset.rules if device is None else ruleset.for_device(device)
    head = (
        f"{len(ruleset.rules)} rules, {len(ruleset.overrides)} overrides: OK"
        if device is None
        else f"{device.id} ({device.kind.value}, {device.location.value}, site {device.site_id}): "
        f"{len(rules)} rules in force"
    )
    lines = [head]
    for r in rules:
        params = r.model_dump(
            mode="json",
            exclude={"id", "alarm_type", "kinds", "locations", "severity", "source", "message", "type", "enabled"},
            exclude_defaults=True,
        )
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        lines.append(f"  {r.id:7} {r.type:13} {r.alarm_type:26} {r.severity.label:8} {shown}")
    return "\n".join(lines)


@lru_cache(maxsize=4)
def rules_in_force(path: str | None) -> RuleSet:
    """The rules a process runs with: GRIDWATCH_RULES_FILE (`extends: defaults` plus overrides, validated at
    start) when set, else the shipped defaults."""
    return load_rules(Path(path)) if path else default_rules()
