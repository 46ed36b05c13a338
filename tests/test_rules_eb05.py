"""EB-05 (RULES-REFERENCE 7.2): no taper for 6 h -> P2 alarm; still not tapering at 8 h -> cut_power and port
lockout. Pure table-driven tests of the session rule, and one scenario through the real broker, ingest,
actuator and database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.domain import Reading
from core.settings import Settings
from ingest.worker import IngestWorker
from rules.actuation.publisher import Actuator
from rules.engine import evaluate
from rules.ruleset import default_rules
from tests.support import Publisher, wait_for
from tests.test_rules_scenarios import SimulatedValve, actuator, ago_ms, alarms, ingest, q, send, site  # noqa: F401 - fixtures

T0 = datetime(2026, 11, 1, 4, 0, tzinfo=UTC)  # 12:00 in Chengdu: no night uplift
H = 3600


def transitions(series: list[tuple[float, float]]) -> list[tuple[float, str, tuple[str, ...], bool]]:
    """(t, kind, actions, lockout) of every transition EB-05 gives for (t, power_w)."""
    rule = default_rules().by_id("EB-05")
    state: dict[str, Any] = {}
    out = []
    for t, p in series:
        r = Reading(device_id="port", ts=T0 + timedelta(seconds=t), received_at=T0 + timedelta(seconds=t), power_w=p)
        tr = evaluate(rule, state, r)
        if tr is not None:
            out.append((t, tr.kind, tr.actions, tr.lockout))
    return out


def steady(watts: float, until_h: float, every: float = 300) -> list[tuple[float, float]]:
    return [(i * every, watts) for i in range(int(until_h * H / every) + 1)]


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        (steady(200, 5.9), []),
        (steady(200, 6.5), [(6 * H, "raise", (), False)]),  # alarm at 6 h, no stop yet
        (
            steady(200, 8.5),
            [(6 * H, "raise", (), False), (8 * H, "hold", ("cut_power",), True)],
        ),  # the stop and lock at 8 h, once
        (
            steady(200, 8) + [(8 * H + 300 * i, 1.0) for i in range(1, 3)] + [(8 * H + 1200, 1.0)],
            [(6 * H, "raise", (), False), (8 * H, "hold", ("cut_power",), True), (8 * H + 1200, "clear", (), False)],
        ),  # cut: < 3 W for 5 min, from the second sample below (issue 19: sample pairs), ends the session
        (steady(180, 3) + [(3 * H + 300 * i, 60) for i in range(1, 80)], []),  # lead-acid taper: nothing
    ],
)
def test_no_taper_alarm_then_stop_at_8h(
    series: list[tuple[float, float]], expected: list[tuple[float, str, tuple[str, ...], bool]]
) -> None:
    assert transitions(series) == expected


def test_no_taper_8h_cut_and_lock_through_the_pipeline(
    site: Settings,  # noqa: F811
    ingest: IngestWorker,  # noqa: F811
    actuator: Actuator,  # noqa: F811
    publisher: Publisher,
    services: Any,
) -> None:
    port = SimulatedValve(site, services.mqtt_port, "port-1")  # answers cut_power with relay off
    try:
        base = ago_ms(8 * H + 900)
        # 150 W for 8 h (1.2 kWh: under EB-09's 1.5 kWh, so EB-05 is the one that stops it)
        send(publisher, site, "port-1", [(i * 600.0, {"power_w": 150, "relay": "on"}) for i in range(49)], base)
        wait_for(
            lambda: ("cut_power", "confirmed") in q(site, "SELECT action, status FROM command"),
            timeout=20,
            what="EB-05 cut confirmed",
        )
        got = alarms(site, "port-1")
        assert sorted(a[1] for a in got) == ["charging_too_long", "no_cutoff_at_full"], got  # EB-07: 8 h, minor
        assert q(site, "SELECT reason FROM port_lock WHERE cleared_at IS NULL") == [("EB-05 no_cutoff_at_full",)]
        assert q(site, "SELECT count(*) FROM command WHERE action = 'cut_power'") == [(1,)], "one stop"
    finally:
        port.close()
