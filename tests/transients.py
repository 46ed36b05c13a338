"""Issue 19: the hazards and transients the rules are judged against, shared by tests/test_rules_robustness.py and
the reaction-time table in docs/rules.md (`python -m tests.transients` prints it).

A series is a list of (t seconds, fields) in event time. Hazard series start their hazard at t = 0 after a stretch
of benign samples, so the reaction time to a real hazard is the event time of the first transition that raises the
alarm (or that carries the rule's actions) — what a person or a valve would see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from core.domain import Reading
from rules.engine import evaluate
from rules.ruleset import RuleSet, default_rules

T0 = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)  # 12:00 in Asia/Shanghai: daytime, so EB-11 uplifts nothing
EXTRAS = ("co", "battery_low", "silence", "preheat")
Series = list[tuple[float, dict[str, Any]]]


def reading(t: float, **fields: Any) -> Reading:
    """A reading taken at T0 + t and received at once; fields outside the contract go into extras."""
    extras = {k: fields.pop(k) for k in list(fields) if k in EXTRAS}
    at = T0 + timedelta(seconds=t)
    return Reading(device_id="d", ts=at, received_at=at, extras=extras, **fields)


@dataclass(frozen=True, slots=True)
class Step:
    """One transition of a rule on a series: event time, kind, whether it carries actions or latches."""

    t: float
    kind: str
    actions: tuple[str, ...]
    latching: bool


def run(rule_id: str, series: Series, rules: RuleSet | None = None) -> list[Step]:
    """Feed a series to one rule (fresh state); every raise, clear, and any hold that carries actions."""
    rule = (rules or default_rules()).by_id(rule_id)
    state: dict[str, Any] = {}
    out = []
    for t, fields in series:
        tr = evaluate(rule, state, reading(t, **dict(fields)))
        if tr is not None and (tr.kind != "hold" or tr.actions):
            out.append(Step(t, tr.kind, tuple(tr.actions), tr.latching and tr.kind == "raise"))
    return out


def first(steps: list[Step], *, acting: bool = False) -> float | None:
    """Event time of the first raise (acting: of the first transition that actuates or latches)."""
    for s in steps:
        if acting and (s.actions or s.latching):
            return s.t
        if not acting and s.kind == "raise":
            return s.t
    return None


def every(interval: float, start: float, end: float, fields: Callable[[float], dict[str, Any]]) -> Series:
    """Samples every `interval` s from start to end (inclusive), fields computed from t."""
    n = round((end - start) / interval)
    return [(start + i * interval, fields(start + i * interval)) for i in range(n + 1)]


def step(field: str, benign: float, hazard: float, *, interval: float, until: float, lead: int = 10) -> Series:
    """`lead` benign samples, then the hazard level from t = 0 on."""
    return every(interval, -lead * interval, until, lambda t: {field: benign if t < 0 else hazard})


def charge(*, interval: float, phases: list[tuple[float, float]]) -> Series:
    """A charging session: (until t, power) phases from t = 0, sampled every interval."""
    out: Series = []
    t = 0.0
    for until, watts in phases:
        while t <= until:
            out.append((t, {"power_w": watts}))
            t += interval
    return out


# --------------------------------------------------------------------------- reaction time to a real hazard


@dataclass(frozen=True, slots=True)
class Hazard:
    """A real hazard for one rule, the bound its source allows, and where the bound comes from."""

    rule_id: str
    what: str
    interval_s: float
    series: Series
    bound_s: float
    bound: str
    acting: bool = True  # measure the first actuating/latching transition (else the first raise)
    onset_s: float = 0.0  # when the hazard begins in the series (a charging fault shows only late in a session)


def _co(ppm: float, interval: float, until: float) -> Series:
    return step("co_ppm", 5, ppm, interval=interval, until=until)


def _ramp(start: float, per_s: float, interval: float, until: float) -> Series:
    return every(interval, -10 * interval, until, lambda t: {"temp_c": start if t < 0 else start + per_s * t})


HAZARDS: tuple[Hazard, ...] = (
    Hazard(
        "GAS-03",
        "gas 0 -> 60 %LEL, 5 s samples",
        5,
        step("gas_lel", 0, 60, interval=5, until=120),
        30,
        "GB/T 34004 alarm time <= 30 s; GB 50166 response <= 30 s",
    ),
    Hazard(
        "GAS-03",
        "gas 0 -> 60 %LEL, 30 s samples",
        30,
        step("gas_lel", 0, 60, interval=30, until=300),
        60,
        "GB 15322.2-2026 time to alarm <= 60 s",
    ),
    Hazard(
        "GAS-02",
        "gas 0 -> 30 %LEL, 5 s samples",
        5,
        step("gas_lel", 0, 30, interval=5, until=120),
        30,
        "GB/T 34004 alarm time <= 30 s; reference GAS-02 >= 10 s",
    ),
    Hazard(
        "GAS-02",
        "gas 0 -> 30 %LEL, 30 s samples",
        30,
        step("gas_lel", 0, 30, interval=30, until=300),
        60,
        "GB 15322.2-2026 time to alarm <= 60 s",
    ),
    Hazard(
        "GAS-02",
        "detector's own gas flag",
        30,
        [(-30.0, {"gas": False}), (0.0, {"gas": True})],
        0,
        "device flag authoritative, immediate (RULES-REFERENCE 7.2)",
    ),
    Hazard(
        "CO-01",
        "CO alarm's own flag",
        60,
        [(-60.0, {"co": False}), (0.0, {"co": True})],
        0,
        "EN 50291 / UL 2034 certified alarm, immediate",
    ),
    Hazard("CO-02", "CO 50 ppm, 60 s samples", 60, _co(50, 60, 6000), 90 * 60, "EN 50291 50 ppm: 60-90 min"),
    Hazard("CO-02", "CO 100 ppm, 60 s samples", 60, _co(100, 60, 3000), 40 * 60, "EN 50291 100 ppm: 10-40 min"),
    Hazard("CO-02", "CO 300 ppm, 60 s samples", 60, _co(300, 60, 600), 180, "EN 50291 300 ppm: < 3 min"),
    Hazard("CO-02", "CO 300 ppm, 30 s samples", 30, _co(300, 30, 600), 180, "EN 50291 300 ppm: < 3 min"),
    Hazard(
        "EB-01",
        "6 A on a 5 A port, 1 s samples",
        1,
        step("current_a", 2, 6, interval=1, until=30),
        3,
        "reference EB-01: >= 2 s (+ one sample)",
    ),
    Hazard(
        "EB-01",
        "6 A on a 5 A port, 10 s samples",
        10,
        step("current_a", 2, 6, interval=10, until=60),
        10,
        "reference EB-01: >= 2 s (one sample at this rate)",
    ),
    Hazard(
        "EB-02",
        "port reports a fault",
        30,
        [(-30.0, {"fault": None}), (0.0, {"fault": "fuse_blown"})],
        0,
        "device-reported fault, immediate (firmware fuse detection)",
    ),
    Hazard(
        "EB-03",
        "port at 70 C, 10 s samples",
        10,
        step("temp_c", 30, 70, interval=10, until=120),
        40,
        "reference EB-03: >= 30 s (+ one sample)",
    ),
    Hazard(
        "EB-04",
        "charger +2 C/s from 40 C, 1 s samples",
        1,
        _ramp(40, 2, 1, 60),
        300,
        "GB 38031-2025 C.5.3.7: dT/dt >= 1 C/s for > 3 s; warning within 5 min",
    ),
    Hazard(
        "EB-04",
        "charger +2 C/s from 40 C, 30 s samples",
        30,
        _ramp(40, 2, 30, 300),
        300,
        "GB 38031-2025 C.5.3.7: warning within 5 min",
    ),
    Hazard(
        "EB-04",
        "charger 40 -> 85 C at once, 30 s samples",
        30,
        step("temp_c", 40, 85, interval=30, until=300),
        300,
        "GB 38031-2025 C.5.3.7: warning within 5 min",
    ),
    Hazard(
        "EB-05",
        "no taper: 160 W for 9 h, 60 s samples",
        60,
        charge(interval=60, phases=[(9 * 3600, 160)]),
        8 * 3600 + 60,
        "reference EB-05: 6 h alarm, cut at 8 h",
    ),
    Hazard(
        "EB-06",
        "re-rise after taper, 60 s samples",
        60,
        charge(interval=60, phases=[(7200, 160), (9000, 40), (12000, 120)]),
        600 + 120,
        "reference EB-06: rise held 10 min",
        onset_s=9060,
    ),
    Hazard(
        "EB-07",
        "session 13 h, 300 s samples",
        300,
        charge(interval=300, phases=[(13 * 3600, 120)]),
        12 * 3600 + 300,
        "reference EB-07: stop at 12 h",
    ),
    Hazard(
        "EB-08",
        "full after 2 h, 60 s samples",
        60,
        charge(interval=60, phases=[(7200, 160), (12000, 20)]),
        600 + 2700 + 120,
        "reference EB-08: 10 min below the floor + 45 min top-up",
        onset_s=7260,
    ),
    Hazard(
        "EB-09",
        "1000 W charger, 60 s samples",
        60,
        charge(interval=60, phases=[(7200, 1000)]),
        5400 + 120,
        "reference EB-09: > 1.5 kWh (cumulative; here 90 min)",
    ),
)


def reaction(h: Hazard, rules: RuleSet | None = None) -> float | None:
    """Seconds from the hazard's onset (t = 0) to the first actuating/latching transition (or raise)."""
    got = first(run(h.rule_id, h.series, rules), acting=h.acting)
    return None if got is None else got - h.onset_s


def table(rules: RuleSet | None = None) -> list[tuple[str, str, float | None, float, str]]:
    """(rule, hazard, reaction s, bound s, bound source) for every hazard."""
    return [(h.rule_id, h.what, reaction(h, rules), h.bound_s, h.bound) for h in HAZARDS]


def fmt(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds >= 3600 and math.isclose(seconds % 60, 0):
        return f"{seconds / 3600:.2f} h"
    if seconds >= 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


if __name__ == "__main__":
    for rule_id, what, got, bound, source in table():
        print(f"| {rule_id} | {what} | {fmt(got)} | {fmt(bound)} ({source}) |")
