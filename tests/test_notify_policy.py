"""Pure parts of notify: rosters, time windows, the escalation policy, routing tiers, message texts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core import routing
from core.repo import Recipient
from core.roster import DailyWindow, on_duty, parse_roster
from notify import messages
from notify.policy import Policy, load_policy
from notify.repo import AlarmContext

SH = ZoneInfo("Asia/Shanghai")


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    """An instant given in Shanghai wall-clock time (2026-11-23 is a Monday)."""
    return datetime(y, mo, d, h, mi, tzinfo=SH).astimezone(UTC)


@pytest.mark.parametrize(
    ("roster", "when", "expected"),
    [
        (None, local(2026, 11, 28, 3), True),  # no roster: always
        ("Mon-Fri 09:00-17:00", local(2026, 11, 23, 9), True),  # Monday start, inclusive
        ("Mon-Fri 09:00-17:00", local(2026, 11, 23, 17), False),  # end exclusive
        ("Mon-Fri 09:00-17:00", local(2026, 11, 23, 8, 59), False),
        ("Mon-Fri 09:00-17:00", local(2026, 11, 27, 16, 59), True),  # Friday
        ("Mon-Fri 09:00-17:00", local(2026, 11, 28, 10), False),  # Saturday
        ("Sat,Sun 08:00-20:00", local(2026, 11, 29, 12), True),  # Sunday
        ("Mon-Fri 09:00-17:00; Sat 10:00-12:00", local(2026, 11, 28, 11), True),
        ("Fri-Mon 09:00-17:00", local(2026, 11, 29, 10), True),  # wraps over the weekend
        ("Fri-Mon 09:00-17:00", local(2026, 11, 25, 10), False),  # Wednesday
        ("Mon-Sun 22:00-06:00", local(2026, 11, 24, 23), True),  # overnight, evening part
        ("Mon-Sun 22:00-06:00", local(2026, 11, 24, 5, 59), True),  # overnight, morning part
        ("Mon-Sun 22:00-06:00", local(2026, 11, 24, 12), False),
        ("Fri 22:00-06:00", local(2026, 11, 28, 2), True),  # Friday's night shift on Saturday
        ("Fri 22:00-06:00", local(2026, 11, 27, 2), False),  # Friday early morning is Thursday's
    ],
)
def test_on_duty(roster: str | None, when: datetime, expected: bool) -> None:
    assert on_duty(roster, when, "Asia/Shanghai") is expected


def test_roster_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not like"):
        parse_roster("weekdays 9 to 5")


@pytest.mark.parametrize(
    ("start", "end", "when", "inside", "ends"),
    [
        ("22:00", "06:00", local(2026, 11, 23, 23), True, local(2026, 11, 24, 6)),
        ("22:00", "06:00", local(2026, 11, 24, 3), True, local(2026, 11, 24, 6)),
        ("22:00", "06:00", local(2026, 11, 24, 12), False, local(2026, 11, 24, 12)),
        ("22:00", "08:00", local(2026, 11, 24, 7, 30), True, local(2026, 11, 24, 8)),
        ("01:00", "05:00", local(2026, 11, 24, 6), False, local(2026, 11, 24, 6)),
    ],
)
def test_daily_window(start: str, end: str, when: datetime, inside: bool, ends: datetime) -> None:
    window = DailyWindow.parse(start, end)
    assert window.contains(when, "Asia/Shanghai") is inside
    assert window.end_after(when, "Asia/Shanghai") == ends


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


DAY = local(2026, 11, 23, 10)
NIGHT = local(2026, 11, 23, 23)


@pytest.mark.parametrize(
    ("severity", "step", "now", "start_step", "after_s"),
    [
        (4, 1, DAY, 0, 180),  # critical: leader after 3 min (RULES-REFERENCE 7.1)
        (4, 2, DAY, 0, 360),  # community + fire station after 6 min
        (4, 1, NIGHT, 0, 90),  # night: P1 timers halved
        (4, 2, NIGHT, 0, 180),
        (4, 2, DAY, 1, 180),  # vulnerable occupants: started one step higher, everything one step sooner
        (2, 1, DAY, 0, 1800),  # minor: leader after 30 min
        (2, 1, NIGHT, 0, 1800),  # no night uplift below P1
        (3, 2, DAY, 0, 1800),  # major: community after 30 min
    ],
)
def test_step_due(policy: Policy, severity: int, step: int, now: datetime, start_step: int, after_s: int) -> None:
    assert policy.step_due(severity, step, started_at=now, start_step=start_step, now=now) == now + timedelta(
        seconds=after_s
    )


def test_ladder_ends(policy: Policy) -> None:
    assert policy.step_due(4, 3, started_at=DAY, start_step=0, now=DAY) is None
    assert policy.for_severity(1).steps == []  # P4: dashboard only


@pytest.mark.parametrize(
    ("flags", "severity", "start"),
    [
        ([], 4, 0),
        (["elderly_living_alone"], 4, 1),
        (["elderly_living_alone"], 2, 1),
        (["lpg"], 4, 0),
        (["elderly_living_alone"], 1, 0),
    ],
)
def test_vulnerable_start_one_step_higher(policy: Policy, flags: list[str], severity: int, start: int) -> None:
    assert policy.start_step(severity, flags) == start


@pytest.mark.parametrize(
    ("severity", "tier", "when", "alarm_type", "deferred_to"),
    [
        (2, "merchant", NIGHT, "low_battery", local(2026, 11, 24, 8)),  # P3 to a merchant at night: morning
        (1, "merchant", local(2026, 11, 24, 7), "offline", local(2026, 11, 24, 8)),
        (2, "worker", NIGHT, "low_battery", NIGHT),  # workers are not in quiet hours
        (2, "merchant", DAY, "low_battery", DAY),  # by day: at once
        (3, "merchant", NIGHT, "tamper", NIGHT),  # P2 never deferred
        (2, "merchant", NIGHT, "gas_drift", local(2026, 11, 24, 8)),  # a P3 advisory is not life-safety
        (2, "merchant", NIGHT, "smoke_prealarm", NIGHT),  # life-safety is never deferred
    ],
)
def test_quiet_hours(
    policy: Policy, severity: int, tier: str, when: datetime, alarm_type: str, deferred_to: datetime
) -> None:
    assert policy.deferred_until(severity, tier, when, alarm_type) == deferred_to


def test_life_safety_never_held(policy: Policy) -> None:
    assert policy.is_immediate("gas_leak", 4)
    assert policy.is_immediate("smoke_prealarm", 3)
    assert policy.is_immediate("actuation_failed", 4)  # critical of any type
    assert not policy.is_immediate("tamper", 3)
    assert not policy.is_immediate("offline", 2)


@pytest.mark.parametrize(("attempts", "seconds"), [(1, 2), (2, 4), (3, 8), (8, 256), (9, 300), (20, 300)])
def test_backoff(policy: Policy, attempts: int, seconds: int) -> None:
    assert policy.backoff(attempts) == timedelta(seconds=seconds)


def test_policy_must_cover_every_severity() -> None:
    with pytest.raises(ValueError, match="without a policy"):
        Policy.model_validate({"severities": {"critical": {"steps": []}}})


def worker(
    wid: str,
    role: str = "micro_grid_worker",
    *,
    roster: str | None = None,
    on_call: bool = False,
    mg: bool = False,
    grid: bool = False,
    leads: bool = False,
) -> Recipient:
    return Recipient(wid, wid, role, "zh-CN", [f"json://x/{wid}"], roster, on_call, mg, grid, leads)


WORKERS = [
    worker("day", roster="Mon-Fri 09:00-17:00", mg=True, grid=True),
    worker("day2", roster="Mon-Fri 09:00-17:00", mg=True, grid=True),
    worker("other-mg", mg=False, grid=True),
    worker("oncall-grid", on_call=True, grid=True),
    worker("leader", "grid_leader", leads=True),
    worker("leader-other", "grid_leader"),
    worker("duty", "community_duty"),
    worker("fire", "fire_station"),
]


@pytest.mark.parametrize(
    ("tier", "when", "workers", "expected"),
    [
        ("worker", DAY, WORKERS, ["day", "day2"]),  # several workers per micro-grid
        ("worker", NIGHT, WORKERS, ["oncall-grid"]),  # outside the roster: on call of the grid
        ("worker", NIGHT, [*WORKERS, worker("oncall-mg", on_call=True, mg=True)], ["oncall-mg"]),  # nearest first
        ("worker", NIGHT, [w for w in WORKERS if not w.on_call], ["day", "day2"]),  # nobody on call: all of them
        ("leader", DAY, WORKERS, ["leader"]),  # only the leader of this grid
        ("community", DAY, WORKERS, ["duty"]),
        ("fire_station", NIGHT, WORKERS, ["fire"]),
        ("leader", DAY, [w for w in WORKERS if w.role != "grid_leader"], []),
    ],
)
def test_tier_recipients(tier: str, when: datetime, workers: list[Recipient], expected: list[str]) -> None:
    got = routing.tier_recipients(tier, workers, merchant=None, now=when, tz="Asia/Shanghai")
    assert [r.id for r in got] == expected


def test_merchant_tier_needs_a_channel() -> None:
    shop = Recipient("m1", "Shop", "merchant", "zh-CN", ["json://x/m1"])
    silent = Recipient("m2", "Shop", "merchant", "zh-CN", [])
    assert routing.tier_recipients("merchant", [], merchant=shop, now=DAY, tz="Asia/Shanghai") == [shop]
    assert routing.tier_recipients("merchant", [], merchant=silent, now=DAY, tz="Asia/Shanghai") == []


def test_someone_in_two_tiers_hears_once() -> None:
    both = worker("both", "grid_leader", mg=True, leads=True)
    got = routing.ladder_recipients(["worker", "leader"], [both], merchant=None, now=DAY, tz="Asia/Shanghai")
    assert [(r.id, tier) for r, tier in got] == [("both", "worker")]


def ctx(**kw: object) -> AlarmContext:
    base: dict[str, object] = {
        "alarm_id": 7,
        "type": "gas_leak",
        "severity": 4,
        "active": True,
        "acknowledged": False,
        "acknowledged_by": None,
        "acknowledged_at": None,
        "closed_at": None,
        "disposition": None,
        "value": 31.0,
        "peak_value": 35.0,
        "count": 3,
        "message": "",
        "raised_at": DAY,
        "device_id": "gas-1",
        "device_kind": "gas_detector",
        "location": "kitchen",
        "gateway_id": None,
        "site_id": "s1",
        "site_name": "Noodle shop",
        "address": "1 Lane",
        "floor": 2,
        "site_flags": ["elderly_living_alone"],
        "micro_grid_id": "mg1",
        "micro_grid_name": "Micro one",
        "grid_id": "g1",
        "community_id": "c1",
        "timezone": "Asia/Shanghai",
        "merchant_id": None,
    }
    base.update(kw)
    return AlarmContext(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("locale", "needles"),
    [
        (
            "en",
            [
                "CRITICAL P1",
                "gas leak",
                "Noodle shop, floor 2, 1 Lane",
                "kitchen",
                "31 %LEL",
                "rising by 4",
                "peak 35 %LEL",
                "elderly person lives alone",
                "shut the main gas valve",
                "https://gw.example/alarms/7",
            ],
        ),
        (
            "zh-CN",
            [
                "紧急P1",
                "燃气泄漏",
                "1 Lane Noodle shop 2楼",
                "厨房",
                "31 %LEL",
                "上升 4",
                "峰值 35 %LEL",
                "独居老人",
                "关闭燃气总阀",
                "https://gw.example/alarms/7",
            ],
        ),
    ],
)
def test_alarm_message_says_what_where_how_bad_what_to_do(locale: str, needles: list[str]) -> None:
    msg = messages.render_alarm(
        ctx(), "raised", locale, now=DAY, ack_url="https://gw.example/alarms/7", trend=[31.0, 27.0], vulnerable=True
    )
    text = msg.title + "\n" + msg.body
    for needle in needles:
        assert needle in text, f"{needle!r} missing from:\n{text}"


@pytest.mark.parametrize(
    ("kind", "locale", "needle"),
    [
        ("escalated", "en", "Not acknowledged for 4 min; previously told: Wang"),
        ("escalated", "zh-CN", "已 4 分钟无人确认"),
        ("reminder", "en", "Reminder 2"),
        ("acknowledged", "en", "Acknowledged by w1: they have it"),
        ("acknowledged", "zh-CN", "已由 w1 确认接警"),
        ("cleared", "zh-CN", "已恢复"),
    ],
)
def test_transition_messages(kind: str, locale: str, needle: str) -> None:
    msg = messages.render_alarm(
        ctx(acknowledged_by="w1"),
        kind,
        locale,
        now=DAY + timedelta(minutes=4),
        told=["Wang"],
        reminder=2,
        actor="w1" if kind == "acknowledged" else None,
    )
    assert needle in msg.title + "\n" + msg.body


def test_group_message_lists_alarms() -> None:
    contexts = [ctx(alarm_id=i, type="tamper", severity=3, value=None, device_id=f"d{i}") for i in range(25)]
    msg = messages.render_group(contexts, {}, "en", seconds=9)
    assert msg.title == "[MAJOR P2] 25 alarms at Noodle shop"
    assert msg.body.count("device removed or opened") == messages.GROUP_LIST_LIMIT
    assert "and 5 more" in msg.body


@pytest.mark.parametrize(
    ("values", "lang", "text"),
    [
        ([], "en", ""),
        ([5.0], "en", ""),
        ([30.0, 20.0], "en", "rising by 10"),
        ([20.0, 30.0], "zh-CN", "下降 10"),
        ([30.0, 30.1], "en", "steady"),
    ],
)
def test_trend(values: list[float], lang: str, text: str) -> None:
    assert messages.trend_text(values, lang) == text
