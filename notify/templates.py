"""Message texts in zh-CN and English: what, where, how bad, what to do, where to acknowledge."""

from __future__ import annotations

from core.domain import Severity
from notify.repo import AlarmContext

ALARM_NAMES = {
    "zh-CN": {"gas_leak": "燃气泄漏", "gas_low": "燃气浓度偏高", "co_high": "一氧化碳超标", "smoke": "烟雾报警",
              "fire_confirmed": "确认火情", "offline": "设备离线", "low_battery": "电池电量低", "tamper": "设备被拆",
              "ebike_indoor_charging": "室内/楼道电动车充电", "charging_overheat": "充电过热",
              "thermal_runaway": "热失控前兆", "actuation_failed": "联动执行失败"},
    "en": {},
}
SEVERITY_NAMES = {
    "zh-CN": {4: "紧急(P1)", 3: "重要(P2)", 2: "一般(P3)", 1: "提示(P4)"},
    "en": {4: "CRITICAL (P1)", 3: "MAJOR (P2)", 2: "MINOR (P3)", 1: "INFO (P4)"},
}
KIND_NAMES = {
    "zh-CN": {"raised": "新报警", "reactivated": "再次报警", "severity_raised": "报警升级", "cleared": "已恢复",
              "acknowledged": "已确认", "resolved": "已处置", "escalated": "未确认，已上报"},
    "en": {"raised": "ALARM", "reactivated": "ALARM AGAIN", "severity_raised": "ALARM WORSE", "cleared": "CLEARED",
           "acknowledged": "ACKNOWLEDGED", "resolved": "RESOLVED", "escalated": "ESCALATED (unacknowledged)"},
}
ADVICE = {
    "zh-CN": {"gas_leak": "立即前往现场：开窗通风、关闭燃气阀门、不要开关电器、疏散人员。",
              "co_high": "开窗通风，人员撤离，停止使用燃气/炭火设备。",
              "smoke": "立即核实现场，如确认火情拨打119并组织疏散。"},
    "en": {"gas_leak": "Go now: open windows, shut the gas valve, do not switch electrical devices, evacuate.",
           "co_high": "Ventilate, get people out, stop using gas or charcoal appliances.",
           "smoke": "Check the site now; if there is fire, call 119 and evacuate."},
}


def alarm_name(alarm_type: str, locale: str) -> str:
    """The alarm type in the reader's language."""
    return ALARM_NAMES.get(locale, {}).get(alarm_type) or alarm_type.replace("_", " ")


def render(ctx: AlarmContext, kind: str, locale: str, *, ack_url: str = "",
           actor: str | None = None) -> tuple[str, str]:
    """Title and body of a notification about one alarm transition."""
    lang = "zh-CN" if locale.startswith("zh") else "en"
    sev = SEVERITY_NAMES[lang].get(ctx.severity, Severity(ctx.severity).priority)
    what = alarm_name(ctx.type, lang)
    event = KIND_NAMES[lang].get(kind, kind)
    floor = "" if ctx.floor is None else (f" {ctx.floor}楼" if lang == "zh-CN" else f", floor {ctx.floor}")
    where = f"{ctx.site_name or ctx.site_id}{floor} · {ctx.address}".strip(" ·")
    value = "" if ctx.value is None else f"{ctx.value:g}"
    peak = "" if ctx.peak_value is None else f"{ctx.peak_value:g}"
    title = f"[{sev}] {event}: {what} — {ctx.site_name or ctx.site_id}"
    if lang == "zh-CN":
        lines = [f"{event}：{what}（{sev}）", f"地点：{where}", f"设备：{ctx.device_id}（{ctx.location}）"]
        if value:
            lines.append(f"读数：{value}，峰值 {peak}，共 {ctx.count} 次")
        if "elderly_living_alone" in ctx.site_flags:
            lines.append("注意：该处有独居老人。")
        if actor:
            lines.append(f"操作人：{actor}")
        advice = ADVICE[lang].get(ctx.type)
        if advice and kind in ("raised", "reactivated", "severity_raised", "escalated"):
            lines.append(f"处置：{advice}")
        if ack_url:
            lines.append(f"确认：{ack_url}")
    else:
        lines = [f"{event}: {what} ({sev})", f"Where: {where}", f"Device: {ctx.device_id} ({ctx.location})"]
        if value:
            lines.append(f"Reading: {value}, peak {peak}, seen {ctx.count} times")
        if "elderly_living_alone" in ctx.site_flags:
            lines.append("Note: an elderly person lives alone here.")
        if actor:
            lines.append(f"By: {actor}")
        advice = ADVICE[lang].get(ctx.type)
        if advice and kind in ("raised", "reactivated", "severity_raised", "escalated"):
            lines.append(f"Do: {advice}")
        if ack_url:
            lines.append(f"Acknowledge: {ack_url}")
    lines.append(f"#{ctx.alarm_id}")
    return title, "\n".join(lines)
