"""Page strings in zh-CN and English; the language comes from ?lang=, the gw_lang cookie, or Accept-Language."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request

LANGS = ("zh-CN", "en")
LANG_COOKIE = "gw_lang"

STRINGS: dict[str, dict[str, str]] = {
    "app": {"zh-CN": "网格安全", "en": "gridwatch"},
    "login": {"zh-CN": "登录", "en": "Log in"},
    "logout": {"zh-CN": "退出", "en": "Log out"},
    "token": {"zh-CN": "访问令牌", "en": "Access token"},
    "token_help": {
        "zh-CN": "粘贴管理员发给您的令牌（gw_ 开头）。",
        "en": "Paste the token your admin gave you (starts with gw_).",
    },
    "login_failed": {"zh-CN": "登录失败", "en": "Login failed"},
    "board": {"zh-CN": "告警看板", "en": "Alarm board"},
    "no_alarms": {"zh-CN": "您负责的范围内当前没有告警。", "en": "No open alarms in your area."},
    "live": {"zh-CN": "实时", "en": "live"},
    "offline_stream": {"zh-CN": "连接中断，正在重连…", "en": "connection lost, reconnecting…"},
    "ack": {"zh-CN": "确认接警", "en": "Acknowledge"},
    "acked_by": {"zh-CN": "已确认", "en": "Acknowledged by"},
    "resolve": {"zh-CN": "处置完毕", "en": "Resolve"},
    "real_hazard": {"zh-CN": "真实隐患", "en": "Real hazard"},
    "false_alarm": {"zh-CN": "误报", "en": "False alarm"},
    "test": {"zh-CN": "测试", "en": "Test"},
    "device_fault": {"zh-CN": "设备故障", "en": "Device fault"},
    "note": {"zh-CN": "备注", "en": "Note"},
    "active": {"zh-CN": "告警中", "en": "active"},
    "cleared": {"zh-CN": "已恢复", "en": "cleared"},
    "details": {"zh-CN": "详情", "en": "Details"},
    "events": {"zh-CN": "处理记录", "en": "History"},
    "readings": {"zh-CN": "读数", "en": "Readings"},
    "raised": {"zh-CN": "发生", "en": "raised"},
    "score": {"zh-CN": "安全积分", "en": "Safety score"},
    "tier": {"zh-CN": "等级", "en": "Tier"},
    "trend": {"zh-CN": "趋势", "en": "Trend"},
    "ledger": {"zh-CN": "积分明细", "en": "Ledger"},
    "points": {"zh-CN": "分值", "en": "Points"},
    "reason": {"zh-CN": "原因", "en": "Reason"},
    "when": {"zh-CN": "时间", "en": "When"},
    "review": {"zh-CN": "需准入复核", "en": "Admission review"},
    "open_hazards": {"zh-CN": "未处理隐患", "en": "Open hazards"},
    "findings": {"zh-CN": "检查发现", "en": "Inspection findings"},
    "due": {"zh-CN": "整改期限", "en": "Due"},
    "none": {"zh-CN": "无", "en": "none"},
    "overview": {"zh-CN": "管理概览", "en": "Overview"},
    "kpis": {"zh-CN": "指标（近30天）", "en": "KPIs (last 30 days)"},
    "alarms": {"zh-CN": "告警数", "en": "Alarms"},
    "by_type": {"zh-CN": "按类型", "en": "By type"},
    "ack_time": {"zh-CN": "接警用时 p50 / p90", "en": "Time to acknowledge p50 / p90"},
    "resolve_time": {"zh-CN": "处置用时 p50 / p90", "en": "Time to resolve p50 / p90"},
    "unreached": {"zh-CN": "未送达通知", "en": "Unreached notifications"},
    "devices": {"zh-CN": "设备", "en": "Devices"},
    "devices_offline": {"zh-CN": "离线设备", "en": "Devices offline"},
    "days_safe": {"zh-CN": "无真实隐患天数", "en": "Days without a real hazard"},
    "device": {"zh-CN": "设备", "en": "Device"},
    "site": {"zh-CN": "场所", "en": "Site"},
    "kind": {"zh-CN": "类型", "en": "Kind"},
    "status": {"zh-CN": "状态", "en": "Status"},
    "online": {"zh-CN": "在线", "en": "online"},
    "offline": {"zh-CN": "离线", "en": "offline"},
    "never_seen": {"zh-CN": "未上报", "en": "never seen"},
    "commissioning": {"zh-CN": "安装调试", "en": "Commissioning"},
    "commissioned": {"zh-CN": "已调试合格", "en": "commissioned"},
    "not_commissioned": {"zh-CN": "未调试合格", "en": "not commissioned"},
    "commission_start": {"zh-CN": "开始调试检查", "en": "Start commissioning check"},
    "commission_help": {
        "zh-CN": "设备须在时限内上报；探测器还须按下测试键，发出测试或报警信号。检查期间该设备的通知暂停。",
        "en": "The device must report within the time limit; a detector must also send its test or alarm signal "
        "(press its test button). Its notifications are held during the check.",
    },
    "commission_started": {"zh-CN": "调试检查已开始", "en": "Commissioning check started"},
    "check": {"zh-CN": "检查", "en": "Check"},
    "check_pending": {"zh-CN": "进行中，截止", "en": "in progress, until"},
    "check_passed": {"zh-CN": "通过", "en": "passed"},
    "check_failed": {"zh-CN": "未通过", "en": "failed"},
    "check_cancelled": {"zh-CN": "已取消", "en": "cancelled"},
    "never_checked": {"zh-CN": "从未检查", "en": "never checked"},
    "test_signal": {"zh-CN": "测试信号", "en": "test signal"},
    "last_seen": {"zh-CN": "最后上报", "en": "Last seen"},
    "open_alarms": {"zh-CN": "未结告警", "en": "Open alarms"},
    "field": {"zh-CN": "指标", "en": "Field"},
    "range": {"zh-CN": "范围", "en": "Range"},
    "error": {"zh-CN": "出错了", "en": "Something went wrong"},
    "back": {"zh-CN": "返回", "en": "Back"},
    "grid": {"zh-CN": "网格", "en": "Grid"},
    "community": {"zh-CN": "社区", "en": "Community"},
    "finding_record": {"zh-CN": "记录检查发现", "en": "Record a finding"},
    "seconds": {"zh-CN": "秒", "en": "s"},
    "port_locked": {"zh-CN": "充电口已锁定（安全断电后）", "en": "Port locked after a safety trip"},
    "port_unlock": {"zh-CN": "现场检查后解锁", "en": "Checked on site: unlock"},
    "unlock_note": {"zh-CN": "检查情况", "en": "What was checked"},
    "commands": {"zh-CN": "远程指令", "en": "Commands"},
    "command_queued": {"zh-CN": "已执行", "en": "Done"},
    "self_test": {"zh-CN": "自检", "en": "Self-test"},
    "silence": {"zh-CN": "消音", "en": "Silence"},
    "cut_power": {"zh-CN": "断电", "en": "Cut power"},
    "restore_power": {"zh-CN": "恢复供电", "en": "Restore power"},
    "close_valve": {"zh-CN": "关阀", "en": "Close valve"},
    "link_for": {"zh-CN": "此链接发给", "en": "This link was sent to"},
    "link_acts": {"zh-CN": "在此确认或处置均记录为您本人", "en": "what you do here is recorded as you"},
    "done_ack": {"zh-CN": "已确认接警。", "en": "Acknowledged."},
    "done_resolve": {"zh-CN": "已处置完毕。", "en": "Resolved."},
    "waiting": {"zh-CN": "已等待", "en": "waiting"},
    "escalated_to": {"zh-CN": "已上报至", "en": "escalated to"},
    "for_you": {"zh-CN": "轮到您", "en": "now yours"},
    "tier_worker": {"zh-CN": "微网格员", "en": "micro-grid worker"},
    "tier_merchant": {"zh-CN": "商户", "en": "merchant"},
    "tier_leader": {"zh-CN": "网格长", "en": "grid leader"},
    "tier_community": {"zh-CN": "社区值班", "en": "community duty"},
    "tier_fire_station": {"zh-CN": "微型消防站", "en": "fire station"},
    # issue 22: reports
    "reports": {"zh-CN": "报表", "en": "Reports"},
    "report_target": {"zh-CN": "范围", "en": "Scope"},
    "report_street": {"zh-CN": "街道（全部社区）", "en": "Street (every community)"},
    "report_community": {"zh-CN": "社区", "en": "Community"},
    "report_grid": {"zh-CN": "网格", "en": "Grid"},
    "report_micro_grid": {"zh-CN": "微网格", "en": "Micro-grid"},
    "report_period": {"zh-CN": "期间", "en": "Period"},
    "report_period_help": {
        "zh-CN": "月：2026-11；周：2026-W45；日：2026-11-05（按街道所在时区）。",
        "en": "A month 2026-11, an ISO week 2026-W45 or a day 2026-11-05 (in the street's time zone).",
    },
    "report_format": {"zh-CN": "格式", "en": "Format"},
    "report_make": {"zh-CN": "生成报表", "en": "Make the report"},
    "report_cli": {"zh-CN": "命令行：", "en": "From the command line:"},
    "map": {"zh-CN": "网格地图", "en": "Map"},
    "map_sev-critical": {"zh-CN": "紧急报警", "en": "critical alarm"},
    "map_sev-major": {"zh-CN": "重要报警", "en": "major alarm"},
    "map_sev-minor": {"zh-CN": "一般报警", "en": "minor alarm"},
    "map_sev-info": {"zh-CN": "提示", "en": "notice"},
    "map_offline": {"zh-CN": "设备离线", "en": "device offline"},
    "map_clear": {"zh-CN": "正常", "en": "all clear"},
    "map_unplaced": {"zh-CN": "未标注坐标", "en": "no coordinates"},
    "map_no_coordinates": {
        "zh-CN": "登记信息中还没有坐标（场所的 lat/lon），下方按网格列出。",
        "en": "No coordinates in the registry yet (sites' lat/lon); the list below has every building by grid.",
    },
    "floor": {"zh-CN": "楼层", "en": "Floor"},
    "floor_unknown": {"zh-CN": "楼层未登记", "en": "Floor not recorded"},
    "site_building": {"zh-CN": "楼栋", "en": "building"},
    "site_shop": {"zh-CN": "商铺", "en": "shop"},
    "site_storage": {"zh-CN": "仓储", "en": "storage"},
    "site_charging_shed": {"zh-CN": "充电棚", "en": "charging shed"},
    "dk_gas_detector": {"zh-CN": "燃气探测器", "en": "Gas detector"},
    "dk_co_alarm": {"zh-CN": "一氧化碳报警器", "en": "CO alarm"},
    "dk_smoke_detector": {"zh-CN": "烟感", "en": "Smoke detector"},
    "dk_charging_port": {"zh-CN": "充电口", "en": "Charging port"},
    "dk_smart_socket": {"zh-CN": "智能插座", "en": "Smart socket"},
    "dk_gas_valve": {"zh-CN": "燃气切断阀", "en": "Gas valve"},
    "dk_gateway": {"zh-CN": "网关", "en": "Gateway"},
    "loc_kitchen": {"zh-CN": "厨房", "en": "kitchen"},
    "loc_room": {"zh-CN": "室内", "en": "room"},
    "loc_corridor": {"zh-CN": "楼道", "en": "corridor"},
    "loc_stairwell": {"zh-CN": "楼梯间", "en": "stairwell"},
    "loc_storage": {"zh-CN": "仓储", "en": "storage"},
    "loc_charging_shed": {"zh-CN": "充电棚", "en": "charging shed"},
    "loc_outdoor": {"zh-CN": "室外", "en": "outdoor"},
    "alarms_per_day": {"zh-CN": "每日报警数（近30天）", "en": "Alarms per day (last 30 days)"},
    "floor_plan": {"zh-CN": "平面图 楼层", "en": "Plan of floor"},
}


def pick_lang(request: Request) -> str:
    """?lang= beats the cookie beats Accept-Language; default zh-CN (the product's users)."""
    asked = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if asked in LANGS:
        return asked
    accept = request.headers.get("accept-language", "").lower()
    if accept.startswith("en"):
        return "en"
    return "zh-CN"


def translator(lang: str) -> Callable[[str], str]:
    """t('key') for templates; an unknown key shows itself so a missing string is visible, not blank."""

    def t(key: str) -> str:
        entry = STRINGS.get(key)
        return entry.get(lang, entry["en"]) if entry else key

    return t
