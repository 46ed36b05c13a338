"""Loading the rule configuration: shipped defaults plus optional overrides, validated at load."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from core.domain import Device
from core.errors import ConfigError
from rules.engine import Rule

_RULES = TypeAdapter(list[Rule])


class RuleSet:
    """The rules in force, with a per-device view."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self._index: dict[tuple[str, str], tuple[Rule, ...]] = {}

    def for_device(self, device: Device) -> tuple[Rule, ...]:
        """The rules that watch this device."""
        key = (device.kind.value, device.location.value)
        found = self._index.get(key)
        if found is None:
            found = self._index[key] = tuple(r for r in self.rules if r.applies_to(device))
        return found

    def by_id(self, rule_id: str) -> Rule:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)


def parse_rules(data: Any, source: str) -> RuleSet:
    """Validate a rules document ({rules: [...]}) with errors naming the rule."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ConfigError(f"{source}: a rules file is a mapping with a 'rules' list")
    try:
        rules = _RULES.validate_python(data["rules"])
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = err["loc"]
            index = loc[0] if loc and isinstance(loc[0], int) else None
            rid = data["rules"][index].get("id", "?") if index is not None and isinstance(
                data["rules"][index], dict) else "?"
            where = ".".join(str(p) for p in loc[1:] if not isinstance(p, int) or p != index)
            problems.append(f"{source}: rule {rid} (#{index}) {where}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from None
    ids = [r.id for r in rules]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{source}: duplicate rule ids {', '.join(dupes)}")
    return RuleSet(rules=tuple(rules))


def load_rules(path: Path | None = None) -> RuleSet:
    """The shipped defaults, or the file at path."""
    if path is None:
        text = resources.files("rules").joinpath("defaults.yaml").read_text(encoding="utf-8")
        source = "rules/defaults.yaml"
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
        source = str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
    return parse_rules(data, source)


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    """The shipped rule set (cached)."""
    return load_rules()
