"""Issue 5, must show 3: the score policy file is validated with clear errors; pure policy evaluation."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.domain import Disposition, Severity
from core.errors import ConfigError
from rules.ruleset import default_rules
from score import engine as score
from score.policy import (
    ScorePolicy,
    catalog_alarm_types,
    known_alarm_types,
    load_policy,
    parse_policy,
)
from tests.conftest import ROOT

SHIPPED = yaml.safe_load((ROOT / "score" / "policy.yaml").read_text(encoding="utf-8"))
T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


def policy() -> ScorePolicy:
    return load_policy().default


def test_shipped_policy_matches_the_brief() -> None:
    p = load_policy(ruleset=default_rules()).default
    assert p.base == 100
    assert [(b.tier, b.min, b.max) for b in p.tiers] == [("A", 90, 100), ("B", 75, 89), ("C", 60, 74), ("D", 0, 59)]
    assert (p.review.tiers, p.review.hazards, p.review.window_days) == (("D",), 3, 90)
    assert (p.restoration.points, p.restoration.clean_days) == (2, 30)
    gas = next(d for d in p.alarm_deductions if "gas_leak" in d.alarm_types)
    ebike = next(d for d in p.alarm_deductions if "ebike_indoor_charging" in d.alarm_types)
    assert (gas.code, gas.points, ebike.code, ebike.points) == ("M-D02", -10, "M-D08", -10)
    assert {f.kind for f in p.findings} >= {"flammables_in_stairwell", "illegal_wiring", "blocked_exit"}


def test_catalog_is_read_from_the_rules_file() -> None:
    text = (ROOT / "rules" / "defaults.yaml").read_text(encoding="utf-8")
    found = catalog_alarm_types(text)
    assert {"gas_leak", "ebike_indoor_charging", "charging_overtemp", "offline", "low_battery"} <= found
    assert {r.alarm_type for r in default_rules().rules} <= known_alarm_types(default_rules())


def _edit(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(SHIPPED)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "alarm_deductions.1.alarm_types",
            ["ebike_indoor_chargng"],
            "unknown alarm type 'ebike_indoor_chargng' (not in the loaded rule set or the alarm-type catalog of "
            "rules/defaults.yaml); did you mean 'ebike_indoor_charging'?",
        ),
        ("upkeep.0.alarm_types", ["battery_flat"], "unknown alarm type 'battery_flat'"),
        ("tiers.1", {"tier": "B", "min": 75, "max": 90}, "tiers: B (75-90) and A (90-100) overlap at 90..90"),
        (
            "tiers.2",
            {"tier": "C", "min": 61, "max": 74},
            "gap between D (0-59) and C (61-74): scores 60..60 have no tier",
        ),
        ("tiers.3", {"tier": "D", "min": 1, "max": 59}, "scores 0..0 have no tier"),
        ("tiers.0", {"tier": "A", "min": 90, "max": 99}, "scores 100..100 have no tier"),
        ("tiers.0", {"tier": "A", "min": 95, "max": 90}, "tier A: min 95 is above max 90"),
        ("tiers.1", {"tier": "A", "min": 75, "max": 89}, "duplicate tier names A"),
        ("review.tiers", ["E"], "review.tiers: unknown tier 'E'"),
        ("alarm_deductions.0.points", 10, "alarm_deductions.0 (M-D02).points: Input should be less than 0"),
        ("alarm_deductions.0.code", "MD-02", "alarm_deductions.0 (MD-02).code: String should match pattern"),
        ("alarm_deductions.0.alarm_types", ["gas_leak", "tamper"], "tamper is charged twice (M-D02 and M-D04)"),
        ("restoration.points", -2, "restoration.points: Input should be greater than 0"),
        ("locks.0.codes", ["M-D77"], "locks: M-D77 is no deduction code of this policy"),
        ("forced_tiers.0.tier", "F", "forced_tiers: M-D01 forces unknown tier 'F'"),
        ("alarm_deductions.0.severities", ["urgent"], "alarm_deductions.0 (M-D02).severities"),
        ("findings.1.kind", "blocked_exit", "findings: duplicate kinds blocked_exit"),
        ("ack_deadline.minutes", {"critical": 0}, "deadline for critical must be > 0 minutes"),
        ("base", 120, "base: Input should be less than or equal to 100"),
        ("surprise", 1, "surprise: Extra inputs are not permitted"),
    ],
)
def test_policy_errors_are_clear(path: str, value: Any, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_policy(_edit(path, value), "policy.yaml", alarm_types=known_alarm_types(default_rules()))
    assert expected in str(err.value)
    assert str(err.value).startswith("policy.yaml")


def test_community_override_is_validated_and_applied() -> None:
    data = copy.deepcopy(SHIPPED)
    data["communities"] = {"c9": {"review": {"tiers": ["C", "D"], "hazards": 2, "window_days": 30}}}
    ps = parse_policy(data, "p.yaml", alarm_types=known_alarm_types())
    assert ps.for_community("c9").review.hazards == 2
    assert ps.for_community("other").review.hazards == 3
    data["communities"] = {"c9": {"tiers": [{"tier": "A", "min": 0, "max": 99}]}}
    with pytest.raises(ConfigError, match=r"p.yaml \(community c9\): tiers: scores 100..100 have no tier"):
        parse_policy(data, "p.yaml", alarm_types=known_alarm_types())


def test_policy_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiers: [unclosed", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(bad)
    bad.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a score policy is a mapping"):
        load_policy(bad)


@pytest.mark.parametrize(
    ("value", "tier"),
    [
        (100, "A"),
        (90, "A"),
        (89, "B"),
        (75, "B"),
        (74, "C"),
        (60, "C"),
        (59, "D"),
        (0, "D"),
    ],
)
def test_tier_boundaries(value: int, tier: str) -> None:
    assert score.tier_for(policy(), value) == tier


class E:
    """A ledger entry for pure tests."""

    _next = 0

    def __init__(
        self,
        at: datetime,
        points: int,
        code: str = "M-D02",
        *,
        hazard: bool = False,
        lock_until: datetime | None = None,
        forced_tier: str | None = None,
        forced_until: datetime | None = None,
        corrects_id: int | None = None,
    ) -> None:
        E._next += 1
        self.id = E._next
        self.at, self.points, self.code, self.hazard = at, points, code, hazard
        self.lock_until, self.forced_tier, self.forced_until, self.corrects_id = (
            lock_until,
            forced_tier,
            forced_until,
            corrects_id,
        )


@pytest.mark.parametrize(
    ("points", "hazard_days", "now_days", "expected"),
    [
        ([], [], 0, (100, "A", False)),
        ([-10], [], 0, (90, "A", False)),
        ([-11], [], 0, (89, "B", False)),
        ([-25], [], 0, (75, "B", False)),
        ([-26], [], 0, (74, "C", False)),
        ([-40], [], 0, (60, "C", False)),
        ([-41], [], 0, (59, "D", True)),
        ([-100, -50], [], 0, (0, "D", True)),
        ([-30, +200], [], 0, (100, "A", False)),
        ([], [0, 10, 20], 20, (100, "A", True)),  # three verified hazards within 90 days
        ([], [0, 10, 20], 89, (100, "A", True)),
        ([], [0, 10, 20], 90, (100, "A", False)),  # the first left the window
        ([], [0, 10], 20, (100, "A", False)),
    ],
)
def test_derive_score_tier_review(
    points: list[int], hazard_days: list[int], now_days: int, expected: tuple[int, str, bool]
) -> None:
    entries = [E(T0, p) for p in points] + [E(T0 + timedelta(days=d), -1, hazard=True) for d in hazard_days]
    # hazards carry -1 each; compensate so the score column tests only `points`
    entries += [E(T0, len(hazard_days), "ADJ")] if hazard_days else []
    s = score.derive(policy(), entries, T0 + timedelta(days=now_days))
    assert (s.score, s.tier, s.review) == expected


def test_forced_tier_and_reversal() -> None:
    fire = E(
        T0,
        -40,
        "M-D01",
        hazard=True,
        lock_until=T0 + timedelta(days=90),
        forced_tier="D",
        forced_until=T0 + timedelta(days=180),
    )
    s = score.derive(policy(), [fire, E(T0, +30, "ADJ")], T0 + timedelta(days=1))
    assert (s.score, s.tier, s.review, s.forced_tier) == (90, "D", True, "D")
    assert s.locked_until == T0 + timedelta(days=90)
    assert score.derive(policy(), [fire, E(T0, +30, "ADJ")], T0 + timedelta(days=180)).tier == "A"
    undo = E(T0 + timedelta(days=2), +40, "ADJ", corrects_id=fire.id)
    s = score.derive(policy(), [fire, undo], T0 + timedelta(days=3))
    assert (s.score, s.tier, s.review, s.locked_until, s.hazards) == (100, "A", False, None, 0)


def facts(
    disposition: Disposition | None,
    *,
    alarm_type: str = "gas_leak",
    severity: Severity = Severity.CRITICAL,
    ack_after_min: float | None = 1,
    closed_after_min: float = 30,
) -> score.AlarmFacts:
    return score.AlarmFacts(
        id=7,
        type=alarm_type,
        severity=severity,
        disposition=disposition,
        known_at=T0,
        acknowledged_at=T0 + timedelta(minutes=ack_after_min) if ack_after_min is not None else None,
        closed_at=T0 + timedelta(minutes=closed_after_min),
    )


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (facts(Disposition.FALSE_ALARM), []),
        (facts(Disposition.TEST), []),
        (facts(Disposition.DEVICE_FAULT), []),
        (facts(None), []),
        (facts(Disposition.REAL_HAZARD), [("M-D02", -10)]),
        (facts(Disposition.REAL_HAZARD, ack_after_min=5), [("M-D02", -10)]),  # at the deadline is on time
        (facts(Disposition.REAL_HAZARD, ack_after_min=6), [("M-D02", -10), ("M-D14", -5)]),
        (facts(Disposition.REAL_HAZARD, ack_after_min=None), [("M-D02", -10), ("M-D14", -5)]),
        (
            facts(
                Disposition.REAL_HAZARD, alarm_type="ebike_indoor_charging", severity=Severity.MINOR, ack_after_min=None
            ),
            [("M-D08", -10)],
        ),  # minor alarms have no acknowledgement deadline
        (facts(Disposition.REAL_HAZARD, alarm_type="charging_overtemp", severity=Severity.MAJOR), [("M-D13", -5)]),
        (facts(Disposition.REAL_HAZARD, alarm_type="thermal_runaway_precursor"), [("M-D13", -10)]),
        (facts(Disposition.REAL_HAZARD, alarm_type="tamper", severity=Severity.MAJOR), [("M-D04", -15)]),
        (facts(Disposition.REAL_HAZARD, alarm_type="gas_drift", severity=Severity.MINOR), []),
    ],
)
def test_alarm_deductions_only_when_verified(f: score.AlarmFacts, expected: list[tuple[str, int]]) -> None:
    assert [(d.code, d.points) for d in score.alarm_deductions(policy(), f, [])] == expected


def test_tamper_locks_restorations_and_third_violation_escalates() -> None:
    (tamper,) = score.alarm_deductions(
        policy(), facts(Disposition.REAL_HAZARD, alarm_type="tamper", severity=Severity.MAJOR), []
    )
    assert tamper.lock_until == tamper.at + timedelta(days=90)
    ebike = facts(Disposition.REAL_HAZARD, alarm_type="ebike_indoor_charging", severity=Severity.MINOR)
    prior = [E(T0 - timedelta(days=80), -10, "M-D08"), E(T0 - timedelta(days=10), -10, "M-D08")]
    drafts = score.alarm_deductions(policy(), ebike, prior)
    assert [(d.code, d.points) for d in drafts] == [("M-D08", -10), ("M-D09", -20)]
    assert drafts[1].lock_until is not None
    old = [E(T0 - timedelta(days=100), -10, "M-D08"), E(T0 - timedelta(days=10), -10, "M-D08")]
    assert [d.code for d in score.alarm_deductions(policy(), ebike, old)] == ["M-D08"]


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (29, []),
        (30, [(30, 2)]),
        (59, [(30, 2)]),
        (60, [(30, 2), (60, 2)]),
        (200, [(30, 2), (60, 2), (90, 2), (120, 2), (150, 2)]),  # 90 -> 100, never above base
    ],
)
def test_restorations_per_clean_period(days: int, expected: list[tuple[int, int]]) -> None:
    drafts = score.restorations_due(policy(), [E(T0, -10)], now=T0 + timedelta(days=days))
    assert [((d.at - T0).days, d.points) for d in drafts] == expected


def test_restorations_respect_quarter_cap_locks_and_blocking() -> None:
    p = policy().model_copy(
        update={"restoration": policy().restoration.model_copy(update={"clean_days": 10, "max_per_quarter": 4})}
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    drafts = score.restorations_due(p, [E(start, -30)], now=start + timedelta(days=95))
    # Jan 11 +2, Jan 21 +2, then the Q1 cap; Apr 1 (Asia/Shanghai Q2) +2
    assert [(d.at.date().isoformat(), d.points) for d in drafts] == [
        ("2026-01-11", 2),
        ("2026-01-21", 2),
        ("2026-04-01", 2),
    ]
    locked = E(T0, -15, "M-D04", lock_until=T0 + timedelta(days=90))
    assert score.restorations_due(policy(), [locked], now=T0 + timedelta(days=119)) == []
    assert [(d.at - T0).days for d in score.restorations_due(policy(), [locked], now=T0 + timedelta(days=120))] == [120]
    assert score.restorations_due(policy(), [E(T0, -10)], now=T0 + timedelta(days=40), blocked=True) == []
    later = score.restorations_due(
        policy(), [E(T0, -10)], now=T0 + timedelta(days=40), unblocked_at=T0 + timedelta(days=20)
    )
    assert later == []  # the clean period restarts when the device came back online


@pytest.mark.parametrize(
    ("closed_after_h", "now_after_h", "expected"),
    [
        (None, 0, 0),
        (None, 1, 1),
        (None, 24 * 7, 1),
        (None, 24 * 7 + 1, 2),
        (None, 24 * 100, 8),
        (0, 24 * 30, 0),
        (5, 24 * 30, 1),
    ],
)
def test_overdue_charges(closed_after_h: float | None, now_after_h: float, expected: int) -> None:
    closed = T0 + timedelta(hours=closed_after_h) if closed_after_h is not None else None
    drafts = score.overdue_charges(
        policy(), finding_id=1, due_at=T0, closed_at=closed, now=T0 + timedelta(hours=now_after_h)
    )
    assert len(drafts) == expected
    assert all(d.points == -5 and d.code == "M-D12" for d in drafts)


def test_on_time_rectification_restores_half() -> None:
    on_time = score.rectified_on_time(policy(), finding_id=1, points=-10, due_at=T0, closed_at=T0)
    assert on_time is not None and (on_time.code, on_time.points) == ("M-R02", 5)
    assert (
        score.rectified_on_time(policy(), finding_id=1, points=-10, due_at=T0, closed_at=T0 + timedelta(seconds=1))
        is None
    )


def test_upkeep_charges() -> None:
    battery = facts(None, alarm_type="low_battery", severity=Severity.MINOR)
    battery = score.AlarmFacts(**{**{k: getattr(battery, k) for k in battery.__slots__}, "closed_at": None})
    assert score.upkeep_charges(policy(), battery, now=T0 + timedelta(hours=167)) == []
    assert [d.code for d in score.upkeep_charges(policy(), battery, now=T0 + timedelta(days=30))] == ["M-D05"]
    offline = score.AlarmFacts(**{**{k: getattr(battery, k) for k in battery.__slots__}, "type": "offline"})
    assert len(score.upkeep_charges(policy(), offline, now=T0 + timedelta(hours=72 + 168))) == 2


def test_trend_follows_the_ledger() -> None:
    entries = [E(T0, -30), E(T0 + timedelta(days=1), -80), E(T0 + timedelta(days=2), +2, "M-R01")]
    assert [(p.score, p.tier) for p in score.trend(policy(), entries)] == [(70, "C"), (0, "D"), (0, "D")]


def test_policy_override_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from score.policy import POLICY_ENV, active_policies
    from score.worker import ScoreWorker

    custom = copy.deepcopy(SHIPPED)
    custom["restoration"]["points"] = 3
    good = tmp_path / "policy.yaml"
    good.write_text(yaml.safe_dump(custom), encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_edit("tiers.1", {"tier": "B", "min": 70, "max": 89})), encoding="utf-8")
    try:
        monkeypatch.setenv(POLICY_ENV, str(good))
        active_policies.cache_clear()
        assert active_policies().default.restoration.points == 3
        monkeypatch.setenv(POLICY_ENV, str(bad))
        active_policies.cache_clear()
        with pytest.raises(ConfigError, match=r"bad.yaml: tiers: C \(60-74\) and B \(70-89\) overlap at 70..74"):
            ScoreWorker("postgresql://unused", interval_s=1)
    finally:
        monkeypatch.delenv(POLICY_ENV)
        active_policies.cache_clear()
    assert active_policies().default.restoration.points == 2
