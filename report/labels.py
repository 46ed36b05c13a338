"""A report's words in zh-CN and English (alarm type and severity names come from core.names)."""

from __future__ import annotations

from core.names import lang_of

LABELS: dict[str, dict[str, str]] = {
    "title": {"zh-CN": "安全运行报告", "en": "Safety report"},
    "street": {"zh-CN": "街道（全部社区）", "en": "Street (every community)"},
    "community": {"zh-CN": "社区", "en": "Community"},
    "grid": {"zh-CN": "网格", "en": "Grid"},
    "micro_grid": {"zh-CN": "微网格", "en": "Micro-grid"},
    "day": {"zh-CN": "日报", "en": "Daily"},
    "week": {"zh-CN": "周报", "en": "Weekly"},
    "month": {"zh-CN": "月报", "en": "Monthly"},
    "period": {"zh-CN": "统计期间", "en": "Period"},
    "generated": {"zh-CN": "生成时间", "en": "Generated"},
    "summary": {"zh-CN": "概况", "en": "Summary"},
    "figure": {"zh-CN": "指标", "en": "Figure"},
    "value": {"zh-CN": "数值", "en": "Value"},
    "alarms": {"zh-CN": "报警总数", "en": "Alarms"},
    "acknowledged": {"zh-CN": "已确认", "en": "Acknowledged"},
    "resolved": {"zh-CN": "已处置", "en": "Resolved"},
    "ack_p50": {"zh-CN": "确认用时中位数（秒）", "en": "Time to acknowledge p50 (s)"},
    "ack_p90": {"zh-CN": "确认用时P90（秒）", "en": "Time to acknowledge p90 (s)"},
    "resolve_p50": {"zh-CN": "处置用时中位数（秒）", "en": "Time to resolve p50 (s)"},
    "resolve_p90": {"zh-CN": "处置用时P90（秒）", "en": "Time to resolve p90 (s)"},
    "unreached": {"zh-CN": "未送达通知", "en": "Unreached notifications"},
    "devices": {"zh-CN": "设备总数", "en": "Devices"},
    "offline": {"zh-CN": "离线设备（当前）", "en": "Devices offline (now)"},
    "never_seen": {"zh-CN": "从未上报设备（当前）", "en": "Devices never seen (now)"},
    "not_commissioned": {"zh-CN": "未调试合格设备（当前）", "en": "Devices not commissioned (now)"},
    "by_type": {"zh-CN": "按类型和级别的报警", "en": "Alarms by type and severity"},
    "type": {"zh-CN": "报警类型", "en": "Alarm type"},
    "severity": {"zh-CN": "级别", "en": "Severity"},
    "count": {"zh-CN": "次数", "en": "Count"},
    "per_day": {"zh-CN": "每日报警数", "en": "Alarms per day"},
    "date": {"zh-CN": "日期", "en": "Date"},
    "responses_tier": {"zh-CN": "按层级的响应用时", "en": "Response times per tier"},
    "responses_person": {"zh-CN": "按人员的响应用时", "en": "Response times per person"},
    "tier": {"zh-CN": "层级", "en": "Tier"},
    "person": {"zh-CN": "人员", "en": "Person"},
    "action": {"zh-CN": "动作", "en": "Action"},
    "ack": {"zh-CN": "确认", "en": "acknowledge"},
    "resolve": {"zh-CN": "处置", "en": "resolve"},
    "p50": {"zh-CN": "中位数（秒）", "en": "p50 (s)"},
    "p90": {"zh-CN": "P90（秒）", "en": "p90 (s)"},
    "micro_grid_worker": {"zh-CN": "微网格员", "en": "Micro-grid worker"},
    "grid_leader": {"zh-CN": "网格长", "en": "Grid leader"},
    "community_duty": {"zh-CN": "社区值班", "en": "Community duty"},
    "fire_station": {"zh-CN": "微型消防站", "en": "Fire station"},
    "other": {"zh-CN": "其他（管理员/链接）", "en": "Other (admin, link)"},
    "scores": {"zh-CN": "商户安全积分", "en": "Merchant safety scores"},
    "tiers": {"zh-CN": "积分等级分布（当前）", "en": "Score tiers (now)"},
    "merchant": {"zh-CN": "商户", "en": "Merchant"},
    "score": {"zh-CN": "积分（当前）", "en": "Score (now)"},
    "entries": {"zh-CN": "期间台账条目", "en": "Ledger entries in period"},
    "points": {"zh-CN": "期间积分变动", "en": "Points in period"},
    "merchants": {"zh-CN": "商户数", "en": "Merchants"},
    "none": {"zh-CN": "无", "en": "none"},
    "not_included": {
        "zh-CN": "工单、巡查和演练统计尚未纳入本报告。",
        "en": "Work orders, patrols and drills are not in this report yet.",
    },
}


def label(key: str, lang: str) -> str:
    """A report word; an unknown key shows itself so a missing one is visible."""
    entry = LABELS.get(key)
    return entry[lang_of(lang)] if entry else key
