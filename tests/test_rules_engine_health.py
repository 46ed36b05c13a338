"""Issue 3, must show 1 for the rows added last (pure, no I/O, table-driven): CO-05 data gap, GAS-07 preheat,
DEV-05 reboot loop and clock drift, DEV-03 building clusters, GAS-08 detector placement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain import Device, DeviceKind, Location, Reading
from rules.engine import (
    GapRule,
    OutageRule,
    PlacementRule,
    evaluate,
    misplacement,
    outage_cluster,
    tick_gap,
)
from rules.ruleset import default_rules

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
RULES = default_rules()
CO = Device(id="co", kind=DeviceKind.CO_ALARM, site_id="s", location=Location.ROOM, report_interval_s=60)


def reading(t: float, *, lag: float = 0.0, **fields: Any) -> Reading:
    """A reading at device time T0+t that arrived `lag` seconds later."""
    known = {k: v for k, v in fields.items() if k in Reading.__slots__}
    extras = {k: v for k, v in fields.items() if k not in known}
    return Reading(
        device_id="d", ts=T0 + timedelta(seconds=t), received_at=T0 + timedelta(seconds=t + lag), extras=extras, **known
    )


def run(rule_id: str, series: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, str]]:
    """Feed (t, fields) to one rule; the raise/clear transitions (t, kind)."""
    rule = RULES.by_id(rule_id)
    state: dict[str, Any] = {}
    out = []
    for t, fields in series:
        tr = evaluate(rule, state, reading(t, **fields))
        if tr is not None and tr.kind != "hold":
            out.append((t, tr.kind))
    return out


# ------------------------------------------------------------------------------------------------ CO-05


@pytest.mark.parametrize(
    ("last_ppm", "interval_s", "silent_s", "raised"),
    [
        (45, 60, 119, False),  # 2 intervals of a 60 s device: 120 s
        (45, 60, 120, True),
        (29.9, 60, 3600, False),  # below 30 ppm: not judging an exposure, a gap is DEV-01's business
        (30, 60, 120, True),
        (80, 3600, 599, False),  # a device reporting hourly is judged at CO-02's 5 min sampling: 2 x 300 s
        (80, 3600, 600, True),
    ],
)
def test_co_data_gap(last_ppm: float, interval_s: int, silent_s: float, raised: bool) -> None:
    rule = RULES.by_id("CO-05")
    assert isinstance(rule, GapRule)
    device = Device(
        id="co", kind=DeviceKind.CO_ALARM, site_id="s", location=Location.ROOM, report_interval_s=interval_s
    )
    state: dict[str, Any] = {}
    assert evaluate(rule, state, reading(0, co_ppm=last_ppm)) is None
    t = tick_gap(rule, state, device, now=T0 + timedelta(seconds=silent_s))
    assert (t is not None and t.kind == "raise") is raised
    if raised:
        assert t is not None and int(t.severity) == 2, "P3"
        assert tick_gap(rule, state, device, now=T0 + timedelta(seconds=silent_s + 60)) is None, "raised once"
        back = evaluate(rule, state, reading(silent_s + 61, co_ppm=last_ppm))
        assert back is not None and back.kind == "clear", "the next sample clears it"


def test_co_data_gap_is_judged_by_arrival_not_device_time() -> None:
    rule = RULES.by_id("CO-05")
    assert isinstance(rule, GapRule)
    state: dict[str, Any] = {}
    evaluate(rule, state, reading(0, lag=3600, co_ppm=60))  # an hour-old sample of a backlog, arriving now
    assert tick_gap(rule, state, CO, now=T0 + timedelta(seconds=3600 + 60)) is None
    assert tick_gap(rule, state, CO, now=T0 + timedelta(seconds=3600 + 120)) is not None


# ------------------------------------------------------------------------------------------------ GAS-07


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([(0, {"preheat": True}), (599, {"preheat": True})], []),
        ([(0, {"preheat": True}), (300, {"preheat": True}), (600, {"preheat": True})], [(600, "raise")]),
        ([(0, {"preheat": True}), (300, {"preheat": False}), (400, {"preheat": True}), (900, {"preheat": True})], []),
        (
            [(0, {"preheat": True}), (600, {"preheat": True}), (700, {"preheat": False})],
            [(600, "raise"), (700, "clear")],
        ),
    ],
)
def test_gas_detector_stuck_in_preheat(
    series: list[tuple[float, dict[str, Any]]], expected: list[tuple[float, str]]
) -> None:
    assert run("GAS-07b", series) == expected


# ------------------------------------------------------------------------------------------------ DEV-05


def seqs(*pairs: tuple[float, int]) -> list[tuple[float, dict[str, Any]]]:
    return [(t, {"seq": s}) for t, s in pairs]


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        (seqs((0, 10), (60, 11), (120, 12)), []),
        # bridge readings carry a content digest (< 0) as seq: not a counter
        (seqs((0, -5), (60, -900), (120, -3), (180, -800), (240, -2), (300, -700)), []),
        # two restarts within the hour: not yet a loop
        (seqs((0, 10), (60, 0), (120, 1), (180, 0)), []),
        # three restarts within the hour
        (seqs((0, 10), (60, 0), (120, 1), (180, 0), (240, 1), (300, 0)), [(300, "raise")]),
        # three restarts spread over more than an hour
        (seqs((0, 5), (60, 0), (1900, 3), (1960, 0), (3700, 3), (3760, 0)), []),
        # the loop stops: an hour without a restart clears it
        (
            seqs((0, 10), (60, 0), (90, 2), (120, 0), (150, 2), (180, 0), (1800, 5), (3781, 9)),
            [(180, "raise"), (3781, "clear")],
        ),
    ],
)
def test_reboot_loop(series: list[tuple[float, dict[str, Any]]], expected: list[tuple[float, str]]) -> None:
    assert run("DEV-05a", series) == expected


def drift_run(lags: list[tuple[float, float]]) -> list[tuple[float, str]]:
    """(arrival offset, lag) pairs: the reading's device time is arrival - lag."""
    rule = RULES.by_id("DEV-05b")
    state: dict[str, Any] = {}
    out = []
    for rx, lag in lags:
        tr = evaluate(rule, state, reading(rx - lag, lag=lag))
        if tr is not None and tr.kind != "hold":
            out.append((rx, tr.kind))
    return out


@pytest.mark.parametrize(
    ("lags", "expected"),
    [
        # a clock 7 min behind, steadily, every 60 s: drift after 10 min of arrivals
        ([(i * 60.0, 420.0 + (i % 3)) for i in range(12)], [(600.0, "raise")]),
        # 4 min behind: within the 5 min tolerance
        ([(i * 60.0, 240.0) for i in range(20)], []),
        # a 30 min backlog replayed after a network loss, 2 readings a second: the lag shrinks, no drift
        ([(i * 0.5, 1800.0 - i * 29.5) for i in range(60)], []),
        # a backlog trickling at 1 reading a minute (device time moves 90 s per minute): not steady
        ([(i * 60.0, 1800.0 - i * 30.0) for i in range(40)], []),
        # drifting, then the clock is set right: clears below 2 min
        ([(i * 60.0, 400.0) for i in range(11)] + [(700.0, 200.0), (760.0, 5.0)], [(600.0, "raise"), (760.0, "clear")]),
    ],
)
def test_clock_drift(lags: list[tuple[float, float]], expected: list[tuple[float, str]]) -> None:
    assert drift_run(lags) == expected


# ------------------------------------------------------------------------------------------------ DEV-03


def quiet(*offsets: float) -> list[tuple[float, str]]:
    return [(T0.timestamp() + o, f"d{i}") for i, o in enumerate(offsets)]


@pytest.mark.parametrize(
    ("total", "silent", "expected"),
    [
        (10, quiet(0, 30, 60), ["d0", "d1", "d2"]),  # 3 of 10 within 10 min: 30 %
        (11, quiet(0, 30, 60), None),  # 3 of 11: below 30 %
        (4, quiet(0, 10), None),  # 2 of 4 is 50 %, but fewer than 3 devices
        (6, quiet(0, 30, 601), None),  # not within 10 min of each other
        (6, quiet(0, 590, 600), ["d0", "d1", "d2"]),  # the window is inclusive
        (9, quiet(-7200, 0, 100, 200, 300), ["d1", "d2", "d3", "d4"]),  # an old silence is not part of this one
    ],
)
def test_building_outage_cluster(total: int, silent: list[tuple[float, str]], expected: list[str] | None) -> None:
    rule = RULES.by_id("DEV-03")
    assert isinstance(rule, OutageRule)
    got = outage_cluster(rule, total=total, silent=silent)
    assert (sorted(got) if got else None) == expected


# ------------------------------------------------------------------------------------------------ GAS-08


@pytest.mark.parametrize(
    ("lpg", "mounting", "wrong"),
    [
        (True, "floor", False),
        (True, "ceiling", True),
        (True, "wall", True),
        (False, "ceiling", False),
        (False, "floor", True),
        (True, None, False),  # not registered: not judged
        (False, None, False),
    ],
)
def test_gas_detector_placement(lpg: bool, mounting: str | None, wrong: bool) -> None:
    rule = RULES.by_id("GAS-08")
    assert isinstance(rule, PlacementRule)
    device = Device(
        id="g", kind=DeviceKind.GAS_DETECTOR, site_id="s", location=Location.KITCHEN, lpg=lpg, mounting=mounting
    )
    why = misplacement(rule, device)
    assert (why is not None) is wrong
    if wrong:
        assert ("LPG" if lpg else "natural gas") in str(why)


def test_placement_only_judges_gas_detectors() -> None:
    rule = RULES.by_id("GAS-08")
    assert isinstance(rule, PlacementRule)
    smoke = Device(
        id="s", kind=DeviceKind.SMOKE_DETECTOR, site_id="s", location=Location.ROOM, lpg=True, mounting="ceiling"
    )
    assert misplacement(rule, smoke) is None


def test_every_alarm_type_has_a_name_in_both_languages() -> None:
    from notify.messages import ALARM_NAMES

    types = {r.alarm_type for r in RULES.rules} | {"actuation_failed"}
    for lang, names in ALARM_NAMES.items():
        assert types - set(names) == set(), f"{lang}: alarm types without a name in messages"
