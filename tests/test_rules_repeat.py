"""SMK-08: three smoke alarms on one detector raised within 7 days and resolved false_alarm by the worker raise a
P3 device_relocate alarm ("relocate or replace") on it; evaluated at resolution, through the real rules service
and database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from core.domain import Disposition, Severity
from core.settings import Settings
from rules import service as rules_service
from rules.engine import RepeatRule, repeat_due
from rules.ruleset import default_rules
from tests.api_helpers import raise_alarm
from tests.support import load_registry
from tests.test_rules_scenarios import REGISTRY

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def smk08() -> RepeatRule:
    rule = next(r for r in default_rules().rules if r.id == "SMK-08")
    assert isinstance(rule, RepeatRule)
    return rule


@pytest.mark.parametrize(
    ("alarm_type", "disposition", "count", "due"),
    [
        ("smoke", "false_alarm", 3, True),
        ("smoke_prealarm", "false_alarm", 4, True),
        ("smoke", "false_alarm", 2, False),  # two are not a pattern
        ("smoke", "real_hazard", 3, False),  # real fires are not nuisance
        ("smoke", "test", 5, False),  # tests are not false alarms
        ("gas_leak", "false_alarm", 3, False),  # not a smoke alarm
    ],
)
def test_repeat_due(alarm_type: str, disposition: str, count: int, due: bool) -> None:
    rule = smk08()
    assert (rule.count, rule.window_s, rule.severity) == (3, 7 * 86400, Severity.MINOR)
    assert repeat_due(rule, alarm_type=alarm_type, disposition=disposition, resolved_count=count) is due


@pytest.fixture
def site(settings: Settings) -> Settings:
    return load_registry(settings, REGISTRY)


def alarm_then_resolve(
    settings: Settings, device: str, at: datetime, disposition: Disposition, alarm_type: str = "smoke"
) -> None:
    with psycopg.connect(settings.dsn) as conn, conn.transaction():
        alarm_id = raise_alarm(conn, device, alarm_type, at=at, value=0.2, rule_id="SMK-01")
        rules_service.resolve(
            conn, alarm_id=alarm_id, actor="w1", disposition=disposition, note="cooking", now=at + timedelta(minutes=20)
        )


def relocate(settings: Settings) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.dsn) as conn:
        return conn.execute(
            "SELECT a.device_id, a.severity, a.rule_id, a.value, count(o.*) FROM alarm a "
            "LEFT JOIN outbox o ON o.alarm_id = a.id WHERE a.type = 'device_relocate' "
            "GROUP BY a.id ORDER BY a.id"
        ).fetchall()


def test_third_false_alarm_in_a_week_raises_relocate(site: Settings) -> None:
    alarm_then_resolve(site, "smoke-a", T0 - 10 * DAY, Disposition.FALSE_ALARM)  # outside the 7 days
    alarm_then_resolve(site, "smoke-a", T0, Disposition.FALSE_ALARM)
    alarm_then_resolve(site, "smoke-a", T0 + DAY, Disposition.REAL_HAZARD)  # a real one does not count
    alarm_then_resolve(site, "smoke-b", T0 + DAY, Disposition.FALSE_ALARM)  # another detector
    alarm_then_resolve(site, "smoke-a", T0 + 2 * DAY, Disposition.FALSE_ALARM)
    assert relocate(site) == [], "two false alarms within 7 days on smoke-a"
    alarm_then_resolve(site, "smoke-a", T0 + 3 * DAY, Disposition.FALSE_ALARM, alarm_type="smoke_prealarm")
    got = relocate(site)
    assert len(got) == 1 and got[0][:4] == ("smoke-a", int(Severity.MINOR), "SMK-08", 3.0)
    assert got[0][4] >= 1, "the raise goes to the outbox (notified)"
    # a fourth keeps the one open alarm
    alarm_then_resolve(site, "smoke-a", T0 + 4 * DAY, Disposition.FALSE_ALARM)
    assert [r[:3] for r in relocate(site)] == [("smoke-a", int(Severity.MINOR), "SMK-08")]
