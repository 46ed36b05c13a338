"""Check-lists per kind of place a worker inspects, and the deadline a finding gets by its severity.

An item's code is also the work order's kind; where the score policy knows the same kind (score/policy.yaml
`findings`), a merchant's order on it feeds the ledger (verified hazard, overdue, on-time fix)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

# Rectification time by severity (1 critical .. 4 info). Critical items (a blocked exit, flammables in a
# stairwell, a bypassed valve) are the ones the score policy gives one day; the rest follow its 3 / 7 / 14 days.
RECTIFY = {1: timedelta(days=1), 2: timedelta(days=3), 3: timedelta(days=7), 4: timedelta(days=14)}
# A failed re-inspection gives a shorter second chance, never more than the first.
REINSPECT_RECTIFY = {1: timedelta(days=1), 2: timedelta(days=2), 3: timedelta(days=3), 4: timedelta(days=7)}
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    severity: int
    zh: str
    en: str


@dataclass(frozen=True, slots=True)
class Checklist:
    kind: str
    zh: str
    en: str
    items: tuple[Item, ...]


_BLOCKED = Item("blocked_exit", 1, "安全出口或疏散通道堵塞", "Exit or escape route blocked")
_FLAMMABLES = Item("flammables_in_stairwell", 1, "楼道堆放可燃物", "Flammables stored in the stairwell or corridor")
_EBIKE = Item("ebike_charging_indoors", 1, "电动自行车入户或飞线充电", "E-bike charged indoors or by fly-wire")
_WIRING = Item("illegal_wiring", 2, "私拉乱接电线", "Improvised wiring")
_EXTINGUISHER = Item("missing_extinguisher", 3, "灭火器或应急灯缺失", "Missing extinguisher or emergency light")
_VALVE = Item("valve_bypassed", 1, "燃气切断阀被旁通或卡死", "Gas shut-off valve bypassed or jammed open")
_HOSE = Item("gas_hose_aged", 2, "燃气软管老化或超长", "Gas hose aged, cracked or too long")

CHECKLISTS: dict[str, Checklist] = {
    c.kind: c
    for c in (
        Checklist(
            "storage_shop",
            "仓储商铺",
            "Storage shop",
            (
                _EBIKE,
                _FLAMMABLES,
                _BLOCKED,
                _WIRING,
                _EXTINGUISHER,
                Item("overnight_staff", 3, "超过2人留宿或住宿未防火分隔", "Overnight staff without fire separation"),
                _VALVE,
                _HOSE,
            ),
        ),
        Checklist(
            "stairwell",
            "楼道",
            "Stairwell",
            (
                _FLAMMABLES,
                _BLOCKED,
                _EBIKE,
                Item("emergency_light_broken", 3, "应急照明损坏", "Emergency light broken"),
            ),
        ),
        Checklist(
            "charging_shed",
            "充电棚",
            "Charging shed",
            (
                Item("charger_damaged", 2, "充电桩或插座损坏", "Charging point or socket damaged"),
                _WIRING,
                _EXTINGUISHER,
            ),
        ),
        Checklist(
            "household_kitchen",
            "住户厨房",
            "Household kitchen",
            (
                _HOSE,
                Item("no_gas_detector", 3, "未安装燃气报警器", "No gas detector installed"),
                _VALVE,
                Item("no_flame_failure", 3, "灶具无熄火保护", "Cooker without flame-failure protection"),
            ),
        ),
    )
}
# Which check-list a site gets by its registry kind (a building's common parts are its stairwells; households'
# kitchens are inspected door to door in a gas campaign).
SITE_CHECKLIST = {
    "shop": "storage_shop",
    "storage": "storage_shop",
    "building": "stairwell",
    "charging_shed": "charging_shed",
}
ITEMS: dict[str, Item] = {i.code: i for c in CHECKLISTS.values() for i in c.items}


def item(code: str) -> Item | None:
    """A check-list item by its code (None: not on any list, e.g. 'other')."""
    return ITEMS.get(code)


def checklist_for_site(site_kind: str) -> Checklist:
    """The check-list a patrol answers at a site of this registry kind."""
    return CHECKLISTS[SITE_CHECKLIST.get(site_kind, "stairwell")]


def rectify_time(severity: int, *, again: bool = False) -> timedelta:
    """How long the responsible party has to fix a finding of this severity (again: after a failed re-inspection)."""
    return (REINSPECT_RECTIFY if again else RECTIFY)[severity]
