"""Message texts in zh-CN and English from the Jinja2 templates in notify/templates/: what, where, how bad,
value and trend, what to do, where to acknowledge. The first rendered line is the title."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2

from core import names
from notify.repo import AlarmContext

ALARM_NAMES = names.ALARM_NAMES
SEVERITY_NAMES = names.SEVERITY_NAMES
KIND_NAMES = {
    "zh-CN": {
        "raised": "新报警",
        "reactivated": "再次报警",
        "severity_raised": "报警升级",
        "cleared": "已恢复",
        "acknowledged": "已确认",
        "resolved": "已处置",
        "escalated": "未确认·已上报",
        "reminder": "提醒",
        "ack_timeout": "确认后仍在报警",
        "actuation_failed": "联动执行失败",
    },
    "en": {
        "raised": "ALARM",
        "reactivated": "ALARM AGAIN",
        "severity_raised": "ALARM WORSE",
        "cleared": "CLEARED",
        "acknowledged": "ACKNOWLEDGED",
        "resolved": "RESOLVED",
        "escalated": "ESCALATED, unacknowledged",
        "reminder": "REMINDER",
        "ack_timeout": "STILL ACTIVE",
        "actuation_failed": "ACTUATION FAILED",
    },
}
LOCATION_NAMES = {
    "zh-CN": {
        "kitchen": "厨房",
        "room": "室内",
        "corridor": "楼道",
        "stairwell": "楼梯间",
        "storage": "仓储",
        "charging_shed": "充电棚",
        "outdoor": "室外",
    },
    "en": {},
}
ADVICE = {
    "zh-CN": {
        "gas": "立即前往现场：开窗通风、关闭燃气总阀、严禁开关电器和明火、疏散人员；浓度持续升高拨打119。",
        "co": "开窗通风，人员立即撤离，停止使用燃气/炭火设备；有人不适拨打120。",
        "smoke": "立即核实现场；如确认火情拨打119并组织疏散，不要乘电梯。",
        "fire": "拨打119，组织疏散，通知楼内住户。",
        "charging": "断开充电电源，将电动车移至室外安全处，检查电池与充电器。",
        "actuation": "远程关阀/断电未确认：立即到场手动关闭燃气阀门或断开电源。",
        "device": "安排上门检查设备。",
    },
    "en": {
        "gas": "Go now: open windows, shut the main gas valve, no switches or flames, evacuate; call 119 if it rises.",
        "co": "Ventilate, get everyone out, stop gas or charcoal appliances; call 120 if anyone is unwell.",
        "smoke": "Check the site now; if there is fire, call 119 and evacuate (no lifts).",
        "fire": "Call 119, evacuate, alert the residents of the building.",
        "charging": "Cut the charger's power, move the e-bike outside, check battery and charger.",
        "actuation": "Remote valve close / power cut not confirmed: go and close the valve or cut power by hand.",
        "device": "Schedule a visit to check the device.",
    },
}
# Which measurement shows an alarm's value and trend, and its unit.
TYPE_FIELD = {
    "gas": ("gas_lel", "%LEL"),
    "co": ("co_ppm", "ppm"),
    "smoke": ("smoke_db_m", "dB/m"),
    "fire": ("smoke_db_m", "dB/m"),
    "charging_overtemp": ("temp_c", "°C"),
    "thermal": ("temp_c", "°C"),
    "overcurrent": ("current_a", "A"),
    "overpower": ("power_w", "W"),
    "ebike": ("power_w", "W"),
    "no_cutoff": ("power_w", "W"),
    "low_battery": ("battery_pct", "%"),
}
ADVISED_KINDS = {"raised", "reactivated", "severity_raised", "escalated", "reminder", "ack_timeout", "actuation_failed"}
# Messages whose link is for acknowledging: the alarm waits for a person. The others link to the alarm to look.
ACTIONABLE_KINDS = {"raised", "reactivated", "severity_raised", "escalated", "reminder", "actuation_failed"}
ROLE_NAMES = {
    "zh-CN": {
        "micro_grid_worker": "微网格员",
        "grid_leader": "网格长",
        "community_duty": "社区值班",
        "fire_station": "微型消防站",
        "admin": "管理员",
    },
    "en": {
        "micro_grid_worker": "micro-grid worker",
        "grid_leader": "grid leader",
        "community_duty": "community duty office",
        "fire_station": "fire station",
        "admin": "admin",
    },
}
GROUP_LIST_LIMIT = 20


@dataclass(slots=True, frozen=True)
class Message:
    title: str
    body: str


def lang_of(locale: str) -> str:
    return "zh-CN" if locale.lower().startswith("zh") else "en"


def person(name: str, role: str, person_id: str, locale: str) -> str:
    """Who did something, as the reader says it: name, role and id ("网格长 Leader one（lead1）")."""
    lang = lang_of(locale)
    role_name = ROLE_NAMES[lang].get(role, role)
    if lang == "zh-CN":
        return f"{role_name} {name}（{person_id}）" if name else f"{role_name}（{person_id}）"
    return f"{name} ({role_name}, {person_id})" if name else f"{role_name} {person_id}"


def with_links(message: Message, public_url: str, link: Callable[[int], str]) -> Message:
    """The message with each plain alarm URL (PUBLIC_URL/alarms/<id>) replaced by link(<id>): the recipient's own
    signed link, made at sending so that the stored message never holds one."""
    if not public_url:
        return message
    pattern = re.compile(re.escape(public_url.rstrip("/")) + r"/alarms/(\d+)(?![\d/])")

    def swap(text: str) -> str:
        return pattern.sub(lambda m: link(int(m.group(1))), text)

    return Message(swap(message.title), swap(message.body))


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # Plain-text messages (not HTML): autoescape off is correct here and nothing is rendered into a page.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("notify", "templates"),
        autoescape=False,  # noqa: S701 keep_trailing_newline=False,
        undefined=jinja2.StrictUndefined,
    )


def _render(template: str, **values: Any) -> Message:
    text = _env().get_template(template).render(**values).strip()
    title, _, body = text.partition("\n")
    return Message(title.strip(), body.strip())


def alarm_name(alarm_type: str, locale: str) -> str:
    """The alarm type in the reader's language."""
    return ALARM_NAMES.get(lang_of(locale), {}).get(alarm_type) or alarm_type.replace("_", " ")


def _family(alarm_type: str) -> str:
    return alarm_type.split("_", 1)[0]


def measurement_of(alarm_type: str) -> tuple[str, str] | None:
    """(reading field, unit) that shows this alarm's value, if any."""
    return (
        TYPE_FIELD.get(alarm_type)
        or TYPE_FIELD.get(_family(alarm_type))
        or next((v for k, v in TYPE_FIELD.items() if alarm_type.startswith(k)), None)
    )


def advice_for(alarm_type: str, lang: str) -> str:
    family = _family(alarm_type)
    key = {
        "thermal": "charging",
        "overcurrent": "charging",
        "port": "charging",
        "no": "charging",
        "ebike": "charging",
        "overpower": "charging",
        "offline": "device",
        "low": "device",
        "tamper": "device",
        "device": "device",
        "stuck": "device",
    }.get(family, family)
    return ADVICE[lang].get(key, "")


def trend_text(values: Sequence[float], lang: str) -> str:
    """Rising / falling / steady from the newest values (newest first)."""
    if len(values) < 2:
        return ""
    delta = values[0] - values[1]
    if abs(delta) < max(abs(values[1]) * 0.02, 1e-9):
        return "平稳" if lang == "zh-CN" else "steady"
    if lang == "zh-CN":
        return f"{'上升' if delta > 0 else '下降'} {abs(delta):g}"
    return f"{'rising' if delta > 0 else 'falling'} by {abs(delta):g}"


def _where(ctx: AlarmContext, lang: str) -> str:
    if lang == "zh-CN":
        floor = "" if ctx.floor is None else f" {ctx.floor}楼"
        return f"{ctx.address} {ctx.site_name or ctx.site_id}{floor}（{ctx.micro_grid_name}）".strip()
    floor = "" if ctx.floor is None else f", floor {ctx.floor}"
    return f"{ctx.site_name or ctx.site_id}{floor}, {ctx.address} ({ctx.micro_grid_name})".replace(", ,", ",")


def _reading(ctx: AlarmContext) -> tuple[str, str]:
    unit = measurement_of(ctx.type)
    suffix = f" {unit[1]}" if unit else ""
    value = "" if ctx.value is None else f"{ctx.value:g}{suffix}"
    peak = "" if ctx.peak_value is None or ctx.peak_value == ctx.value else f"{ctx.peak_value:g}{suffix}"
    return value, peak


def render_alarm(
    ctx: AlarmContext,
    kind: str,
    locale: str,
    *,
    now: datetime,
    ack_url: str = "",
    actor: str | None = None,
    trend: Sequence[float] = (),
    told: Sequence[str] = (),
    reminder: int = 0,
    also: Sequence[str] = (),
    vulnerable: bool = False,
    act: bool = True,
) -> Message:
    """Title and body of a message about one alarm transition (act: its link is for acknowledging)."""
    lang = lang_of(locale)
    value, peak = _reading(ctx)
    minutes_from = ctx.acknowledged_at if kind == "ack_timeout" and ctx.acknowledged_at else ctx.raised_at
    minutes = max(int((now - minutes_from).total_seconds() // 60), 0)
    return _render(
        f"alarm.{lang}.j2",
        sev=SEVERITY_NAMES[lang].get(ctx.severity, str(ctx.severity)),
        event=KIND_NAMES[lang].get(kind, kind),
        what=alarm_name(ctx.type, lang),
        site=ctx.site_name or ctx.site_id,
        where=_where(ctx, lang),
        device=ctx.device_id,
        location=LOCATION_NAMES[lang].get(ctx.location, ctx.location),
        reading=value,
        peak=peak,
        trend=trend_text(trend, lang),
        vulnerable=vulnerable,
        actor=actor,
        escalated=kind == "escalated",
        reminder=reminder if kind == "reminder" else 0,
        ack_timeout=kind == "ack_timeout",
        acked_by=ctx.acknowledged_by or "",
        minutes=minutes,
        told=("、" if lang == "zh-CN" else ", ").join(told),
        also=", ".join(also),
        advice=advice_for(ctx.type, lang) if kind in ADVISED_KINDS and ctx.active else "",
        ack_url=ack_url,
        act=act and kind in ACTIONABLE_KINDS,
        alarm_id=ctx.alarm_id,
    )


def render_group(
    contexts: Sequence[AlarmContext],
    kinds: dict[int, str],
    locale: str,
    *,
    seconds: int,
    ack_url: str = "",
    vulnerable: bool = False,
    alarm_url: Callable[[int], str] | None = None,
) -> Message:
    """One message for several alarms of one site (storm control); alarm_url gives each listed alarm its link,
    ack_url is the board."""
    lang = lang_of(locale)
    first = contexts[0]
    items = []
    for ctx in contexts[:GROUP_LIST_LIMIT]:
        value, _ = _reading(ctx)
        items.append(
            {
                "event": KIND_NAMES[lang].get(kinds.get(ctx.alarm_id, "raised"), "raised"),
                "what": alarm_name(ctx.type, lang),
                "device": ctx.device_id,
                "location": LOCATION_NAMES[lang].get(ctx.location, ctx.location),
                "reading": value,
                "sev": SEVERITY_NAMES[lang].get(ctx.severity, ""),
                "alarm_id": ctx.alarm_id,
                "url": alarm_url(ctx.alarm_id) if alarm_url else "",
            }
        )
    worst = max(contexts, key=lambda c: c.severity)
    return _render(
        f"group.{lang}.j2",
        sev=SEVERITY_NAMES[lang].get(worst.severity, ""),
        count=len(contexts),
        site=first.site_name or first.site_id,
        where=_where(first, lang),
        seconds=max(seconds, 1),
        items=items,
        more=max(len(contexts) - GROUP_LIST_LIMIT, 0),
        vulnerable=vulnerable,
        advice=advice_for(worst.type, lang) if worst.active else "",
        ack_url=ack_url,
    )


def render_test(*, name: str, worker_id: str, role: str, channels: int, locale: str, at: datetime) -> Message:
    """The message of `gridwatch notify test`."""
    return _render(
        f"test.{lang_of(locale)}.j2",
        name=name,
        worker_id=worker_id,
        role=role,
        channels=channels,
        at=at.isoformat(timespec="seconds"),
    )
