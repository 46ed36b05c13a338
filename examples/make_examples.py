"""Regenerate the example registries (deterministic): python examples/make_examples.py

Two communities modelled on the product brief:
- storage-area.yaml: a self-built-housing storage area (仓储区) with 57 merchants, 4 inspectors
  (micro-grid workers), charging sheds and smart sockets;
- open-compound.yaml: an 11,000-resident open compound with 88 gas detectors and 21 micro-grid workers,
  several of whom cover more than one micro-grid (一员多格).
The apprise URLs are shaped like real WeCom / DingTalk / Feishu / e-mail targets with placeholder keys:
`gridwatch demo` redirects every delivery to its local receiver.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰红建国志文斌"
TRADES = [
    "五金批发",
    "粮油副食",
    "服装仓储",
    "小家电",
    "日用百货",
    "建材",
    "茶叶",
    "干杂",
    "文具",
    "电动车配件",
    "床上用品",
    "鞋帽",
    "酒水饮料",
    "调味品",
    "塑料制品",
]


def place(origin: tuple[float, float], row: int, col: int, step: float = 0.0004) -> dict[str, float]:
    """Map coordinates (issue 22) on a street grid from an origin: rows go north, columns east."""
    return {"lat": round(origin[0] + row * step, 6), "lon": round(origin[1] + col * step * 1.15, 6)}


# Where the example communities lie (north-west Chengdu): the storage area and the open compound.
HHC_ORIGIN = (30.6790, 104.0660)
OCP_ORIGIN = (30.6900, 104.0500)


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))


def channels(rng: random.Random, who: str) -> list[str]:
    key = f"{rng.getrandbits(64):016x}"
    pick = rng.choice(("wecom", "dingtalk", "feishu"))
    primary = {
        "wecom": f"wecombot://{key}{key[:8]}",
        "dingtalk": f"dingtalk://{key}{key}/1390000{rng.randint(1000, 9999)}",
        "feishu": f"feishu://{key}-{key[:12]}",
    }[pick]
    return [primary, f"mailto://alerts:placeholder@mail.example.org?to={who}@example.org"]


def storage_area() -> dict[str, Any]:
    rng = random.Random(57)
    mgs = [{"id": f"hhc-mg{i}", "name": f"荷花池仓储区第{i}微网格"} for i in range(1, 5)]
    workers = [
        {
            "id": f"hhc-w{i}",
            "name": name(rng),
            "role": "micro_grid_worker",
            "phone": f"1380000{1000 + i}",
            "notify": channels(rng, f"hhc-w{i}"),
            "micro_grids": [f"hhc-mg{i}"] + ([f"hhc-mg{i % 4 + 1}"] if i % 2 else []),
            "roster": "Mon-Sat 08:30-18:00",
            "on_call": i == 1,
        }
        for i in range(1, 5)
    ]
    workers += [
        {
            "id": "hhc-leader",
            "name": name(rng),
            "role": "grid_leader",
            "grids": ["hhc-g1"],
            "notify": channels(rng, "hhc-leader"),
            "on_call": True,
        },
        {"id": "hhc-duty", "name": "社区值班室", "role": "community_duty", "notify": channels(rng, "hhc-duty")},
        {
            "id": "hhc-station",
            "name": "荷花池微型消防站",
            "role": "fire_station",
            "notify": channels(rng, "hhc-station"),
        },
    ]
    merchants, sites, devices = [], [], []
    for i in range(1, 58):
        mid = f"hhc-m{i:02d}"
        mg = mgs[(i - 1) % 4]["id"]
        trade = rng.choice(TRADES)
        merchants.append(
            {
                "id": mid,
                "name": f"{name(rng)}{trade}",
                "contact": name(rng),
                "phone": f"1590000{i:04d}",
                "notify": [f"wecombot://{rng.getrandbits(64):016x}"],
            }
        )
        kind = "storage" if i % 3 == 0 else "shop"
        floor = 1 if kind == "shop" else rng.choice((1, 2, 3))
        sid = f"hhc-s{i:02d}"
        sites.append(
            {
                "id": sid,
                "kind": kind,
                "name": f"{trade}{'仓库' if kind == 'storage' else '商铺'}{i}号",
                "micro_grid": mg,
                "merchant": mid,
                "address": f"荷花池仓储区{(i - 1) // 8 + 1}栋{i:02d}号",
                "floor": floor,
                "building": f"hhc-b{(i - 1) // 8 + 1}",
                **place(HHC_ORIGIN, ((i - 1) // 8) // 4, ((i - 1) // 8) % 4),
            }
        )
        devices.append(
            {
                "id": f"hhc-smk-{i:02d}",
                "kind": "smoke_detector",
                "site": sid,
                "location": kind,
                "battery": True,
                "model": "JTY-GD-H361 NB-IoT",
            }
            | ({"location": "storage"} if kind == "storage" else {"location": "room"})
        )
        if i % 4 == 1:  # shops with a back kitchen cook on LPG cylinders
            sites[-1]["lpg"] = True
            devices.append(
                {
                    "id": f"hhc-gas-{i:02d}",
                    "kind": "gas_detector",
                    "site": sid,
                    "location": "kitchen",
                    "report_interval_s": 300,
                    "model": "JT-HD-XG LPG",
                    "mounting": "floor",
                }
            )
        if i % 5 == 2:  # sockets where e-bikes tend to be charged inside the shop
            devices.append(
                {
                    "id": f"hhc-sock-{i:02d}",
                    "kind": "smart_socket",
                    "site": sid,
                    "location": "room",
                    "report_interval_s": 60,
                    "model": "Tasmota plug",
                    "adapter": "tasmota",
                    "foreign_id": f"hhc_plug_{i:02d}",
                }
            )
    for shed in (1, 2):
        sid = f"hhc-shed{shed}"
        sites.append(
            {
                "id": sid,
                "kind": "charging_shed",
                "name": f"集中充电棚{shed}号",
                "micro_grid": f"hhc-mg{shed}",
                "address": f"荷花池仓储区东侧充电棚{shed}",
                **place(HHC_ORIGIN, shed - 1, 5),
            }
        )
        devices.append(
            {
                "id": f"hhc-gw-shed{shed}",
                "kind": "gateway",
                "site": sid,
                "location": "charging_shed",
                "report_interval_s": 60,
            }
        )
        for port in range(1, 13):
            devices.append(
                {
                    "id": f"hhc-shed{shed}-p{port:02d}",
                    "kind": "charging_port",
                    "site": sid,
                    "location": "charging_shed",
                    "report_interval_s": 90,
                    "gateway": f"hhc-gw-shed{shed}",
                    "model": "X10P 12-port",
                }
            )
        devices.append(
            {
                "id": f"hhc-shed{shed}-smk",
                "kind": "smoke_detector",
                "site": sid,
                "location": "charging_shed",
                "battery": True,
            }
        )
    return {
        "community": {
            "id": "hehuachi",
            "name": "荷花池自建房仓储区",
            "timezone": "Asia/Shanghai",
            "address": "四川省成都市金牛区荷花池",
        },
        "grids": [{"id": "hhc-g1", "name": "荷花池仓储网格", "micro_grids": mgs}],
        "workers": workers,
        "merchants": merchants,
        "sites": sites,
        "devices": devices,
    }


def open_compound() -> dict[str, Any]:
    rng = random.Random(11000)
    grids, workers, sites, devices, merchants = [], [], [], [], []
    mg_ids: list[str] = []
    for g in range(1, 4):
        mgs = [{"id": f"ocp-g{g}-mg{m}", "name": f"第{g}网格第{m}微网格"} for m in range(1, 9)]
        mg_ids += [m["id"] for m in mgs]
        grids.append({"id": f"ocp-g{g}", "name": f"开放式小区第{g}网格", "micro_grids": mgs})
    # 24 micro-grids, 21 workers: three of them cover two micro-grids (一员多格).
    for w in range(1, 22):
        covered = [mg_ids[w - 1]] + ([mg_ids[20 + (w - 1) // 7]] if w in (7, 14, 21) else [])
        workers.append(
            {
                "id": f"ocp-w{w:02d}",
                "name": name(rng),
                "role": "micro_grid_worker",
                "phone": f"1360000{w:04d}",
                "notify": channels(rng, f"ocp-w{w:02d}"),
                "micro_grids": covered,
                "roster": "Mon-Fri 09:00-17:30;Sat 09:00-12:00",
                "on_call": w % 7 == 1,
                "locale": "zh-CN",
            }
        )
    for g in range(1, 4):
        workers.append(
            {
                "id": f"ocp-leader{g}",
                "name": name(rng),
                "role": "grid_leader",
                "grids": [f"ocp-g{g}"],
                "notify": channels(rng, f"ocp-leader{g}"),
                "on_call": True,
            }
        )
    workers.append(
        {"id": "ocp-duty", "name": "社区值班室", "role": "community_duty", "notify": channels(rng, "ocp-duty")}
    )
    workers.append(
        {"id": "ocp-station", "name": "二级消防站", "role": "fire_station", "notify": channels(rng, "ocp-station")}
    )
    gas = 0
    for b in range(1, 37):
        mg = mg_ids[(b - 1) % len(mg_ids)]
        sid = f"ocp-b{b:02d}"
        flags = ["elderly_living_alone"] if b % 6 == 0 else []
        sites.append(
            {
                "id": sid,
                "kind": "building",
                "name": f"{b}栋",
                "micro_grid": mg,
                "address": f"开放式小区{b}栋",
                "floor": None,
                "flags": flags,
                **place(OCP_ORIGIN, (b - 1) // 6, (b - 1) % 6),
            }
        )
        devices.append(
            {
                "id": f"ocp-gw-b{b:02d}",
                "kind": "gateway",
                "site": sid,
                "location": "stairwell",
                "report_interval_s": 120,
            }
        )
        for unit in range(1, 4):
            if gas >= 88:
                break
            gas += 1
            devices.append(
                {
                    "id": f"ocp-gas-{gas:03d}",
                    "kind": "gas_detector",
                    "site": sid,
                    "location": "kitchen",
                    "report_interval_s": 300,
                    "gateway": f"ocp-gw-b{b:02d}",
                    "model": "Zigbee NG detector",
                    "adapter": "zigbee2mqtt",
                    "foreign_id": f"ocp_b{b:02d}_gas_{unit}",
                }
            )
        devices.append(
            {"id": f"ocp-smk-b{b:02d}", "kind": "smoke_detector", "site": sid, "location": "stairwell", "battery": True}
        )
        if b % 4 == 0:
            devices.append(
                {"id": f"ocp-co-b{b:02d}", "kind": "co_alarm", "site": sid, "location": "room", "battery": True}
            )
        if b % 3 == 0:
            devices.append(
                {
                    "id": f"ocp-sock-b{b:02d}",
                    "kind": "smart_socket",
                    "site": sid,
                    "location": "corridor",
                    "report_interval_s": 60,
                }
            )
    # Street-front restaurants with gas shut-off valves (Shelly Gas with valve add-on).
    for r in range(1, 5):
        mid, sid = f"ocp-m{r}", f"ocp-r{r}"
        merchants.append(
            {
                "id": mid,
                "name": f"{name(rng)}家常菜馆",
                "contact": name(rng),
                "phone": f"1370000{r:04d}",
                "notify": [f"wecombot://{rng.getrandbits(64):016x}"],
            }
        )
        sites.append(
            {
                "id": sid,
                "kind": "shop",
                "name": f"临街餐馆{r}",
                "micro_grid": mg_ids[r],
                "merchant": mid,
                "address": f"开放式小区临街{r}号",
                "floor": 1,
                **place(OCP_ORIGIN, -1, r),
            }
        )
        devices.append(
            {
                "id": f"ocp-r{r}-gasv",
                "kind": "gas_valve",
                "site": sid,
                "location": "kitchen",
                "report_interval_s": 300,
                "adapter": "shelly",
                "foreign_id": f"shellygas-r{r}",
            }
        )
        devices.append(
            {"id": f"ocp-r{r}-smk", "kind": "smoke_detector", "site": sid, "location": "room", "battery": True}
        )
    sites.append(
        {
            "id": "ocp-shed",
            "kind": "charging_shed",
            "name": "小区集中充电棚",
            "micro_grid": mg_ids[0],
            "address": "开放式小区北门充电棚",
            **place(OCP_ORIGIN, 7, 0),
        }
    )
    for port in range(1, 21):
        devices.append(
            {
                "id": f"ocp-shed-p{port:02d}",
                "kind": "charging_port",
                "site": "ocp-shed",
                "location": "charging_shed",
                "report_interval_s": 90,
            }
        )
    assert gas == 88
    return {
        "community": {
            "id": "open-compound",
            "name": "万人开放式小区",
            "timezone": "Asia/Shanghai",
            "address": "四川省成都市",
        },
        "grids": grids,
        "workers": workers,
        "merchants": merchants,
        "sites": sites,
        "devices": devices,
    }


def main() -> None:
    header = "# Generated by examples/make_examples.py — edit that script, not this file.\n"
    for fname, data in (("storage-area.yaml", storage_area()), ("open-compound.yaml", open_compound())):
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)
        (HERE / fname).write_text(header + text, encoding="utf-8")


if __name__ == "__main__":
    main()
