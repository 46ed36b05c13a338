"""Names a person reads, in zh-CN and English: alarm types and severities (notify's messages, the pages and the
reports all show these, never the ids)."""

from __future__ import annotations

LANGS = ("zh-CN", "en")

ALARM_NAMES = {
    "zh-CN": {
        "gas_low": "燃气浓度偏高",
        "gas_leak": "燃气泄漏",
        "gas_explosion_risk": "燃气浓度极高（爆炸风险）",
        "gas_confirmed": "燃气泄漏（多探测器确认）",
        "gas_drift": "燃气低浓度持续",
        "co_alarm": "一氧化碳报警",
        "co_high": "一氧化碳超标",
        "co_elevated": "一氧化碳偏高",
        "co_data_gap": "一氧化碳数据中断",
        "smoke": "烟雾报警",
        "fire_confirmed": "确认火情",
        "smoke_prealarm": "烟雾预警",
        "smoke_hushed": "烟雾报警被消音但烟雾持续",
        "heat": "探测器处温度过高",
        "overcurrent": "充电过流",
        "port_fault": "充电口故障",
        "charging_overtemp": "充电过热",
        "thermal_runaway_precursor": "电池热失控前兆",
        "no_cutoff_at_full": "充满未断电",
        "charging_rerise": "充电功率回升（电池异常）",
        "charging_too_long": "充电时间过长",
        "charging_full_stop": "充满自停",
        "charging_energy_high": "充电电量异常",
        "overpower": "充电功率过大",
        "ebike_indoor_charging": "室内/楼道电动车充电",
        "offline": "设备离线",
        "low_battery": "电池电量低",
        "tamper": "设备被拆",
        "device_fault": "设备故障",
        "stuck_sensor": "传感器疑似失效",
        "preheat_stuck": "燃气探测器预热超时",
        "reboot_loop": "设备反复重启",
        "clock_drift": "设备时钟偏差",
        "clock_wrong": "设备时钟超前",
        "building_outage": "整栋楼设备离线",
        "detector_misplaced": "燃气探测器安装高度不当",
        "device_relocate": "频繁误报：请移位或更换探测器",
        "not_commissioned": "设备未调试合格",
        "actuation_failed": "联动执行失败",
    },
    "en": {
        "gas_low": "gas above 10 %LEL",
        "gas_leak": "gas leak",
        "gas_explosion_risk": "gas at explosion risk",
        "gas_confirmed": "gas leak confirmed by two detectors",
        "gas_drift": "low gas level persisting",
        "co_alarm": "carbon monoxide alarm",
        "co_high": "carbon monoxide high",
        "co_elevated": "carbon monoxide elevated",
        "co_data_gap": "CO samples missing",
        "smoke": "smoke alarm",
        "fire_confirmed": "fire confirmed",
        "smoke_prealarm": "smoke pre-alarm",
        "smoke_hushed": "smoke alarm silenced while smoke persists",
        "heat": "heat at the detector",
        "overcurrent": "charging over-current",
        "port_fault": "charging port fault",
        "charging_overtemp": "charging over-temperature",
        "thermal_runaway_precursor": "battery thermal runaway precursor",
        "no_cutoff_at_full": "charging not cut off when full",
        "charging_rerise": "charging power rising again after taper",
        "charging_too_long": "charging too long",
        "charging_full_stop": "charging stopped when full",
        "charging_energy_high": "charging energy too high",
        "overpower": "charging power too high",
        "ebike_indoor_charging": "e-bike charging indoors",
        "offline": "device offline",
        "low_battery": "low battery",
        "tamper": "device removed or opened",
        "device_fault": "device fault",
        "stuck_sensor": "sensor may be stuck",
        "preheat_stuck": "gas detector stuck warming up",
        "reboot_loop": "device keeps restarting",
        "clock_drift": "device clock off",
        "clock_wrong": "device clock ahead",
        "building_outage": "building-wide device outage",
        "detector_misplaced": "gas detector mounted at the wrong height",
        "device_relocate": "repeated false alarms: relocate or replace the detector",
        "not_commissioned": "device not commissioned",
        "actuation_failed": "valve/power cut not confirmed",
    },
}
SEVERITY_NAMES = {
    "zh-CN": {4: "紧急P1", 3: "重要P2", 2: "一般P3", 1: "提示P4"},
    "en": {4: "CRITICAL P1", 3: "MAJOR P2", 2: "MINOR P3", 1: "INFO P4"},
}


def lang_of(locale: str | None) -> str:
    """zh-CN for any Chinese locale, English otherwise (as notify's messages choose)."""
    return "zh-CN" if (locale or "").lower().startswith("zh") else "en"


def alarm_name(alarm_type: str, lang: str) -> str:
    """An alarm type's name (an unknown type shows its id with spaces, never blank)."""
    return ALARM_NAMES.get(lang_of(lang), {}).get(alarm_type) or alarm_type.replace("_", " ")


def severity_name(severity: int, lang: str) -> str:
    """critical (4) … info (1) as a person reads it."""
    return SEVERITY_NAMES[lang_of(lang)].get(severity, str(severity))
