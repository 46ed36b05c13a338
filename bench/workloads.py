"""Workloads that look like the field, not like a good day (issue 18): backlogs from 1,000 registered devices,
one reading per device per second in event time.

- mixed: every field of the native contract each device kind reports, drawn over its real range: gas 0–10 %LEL,
  CO 0–35 ppm (where the time-weighted CO-02 dose accumulates), temperature −10–45 °C, battery 5–100 %, smoke
  obscuration up to 0.1 dB/m, socket power 0–2,000 W with the current and voltage that go with it. Batteries drawn
  this way cross SMK-06's 15 / 25 % band constantly, so a good part of the readings open or clear an alarm.
- storm: the mixed values, plus what takes a district into an alarm storm: a quarter of the battery devices flap
  around the low-battery band on every reading, gas detectors hover at GAS-01's threshold, and a "gateway" group of
  50 devices drops off and comes back (retained status offline / online) every 10 s. At least 15 % of readings
  flip an alarm.

The messages are deterministic (a seeded generator) so both drains of a comparison see the same backlog.
"""

from __future__ import annotations

import random
import time
from typing import Any

import orjson

from bench import repo

PREFIX = "gw/v1"
DEVICES = 1_000
GATEWAY_GROUP = 50  # devices that drop and return together in the storm
GATEWAY_EVERY_S = 10


def _fields(kind: str, rng: random.Random) -> dict[str, Any]:
    """One reading's fields for a device kind, each drawn over its real range."""
    if kind == "gas_detector":
        return {
            "gas_lel": round(rng.uniform(0, 10), 2),
            "battery_pct": round(rng.uniform(5, 100), 1),
            "temp_c": round(rng.uniform(-10, 45), 1),
        }
    if kind == "smoke_detector":
        return {
            "smoke": False,
            "smoke_db_m": round(rng.uniform(0, 0.1), 3),
            "battery_pct": round(rng.uniform(5, 100), 1),
            "temp_c": round(rng.uniform(-10, 45), 1),
        }
    if kind == "co_alarm":
        return {
            "co_ppm": round(rng.uniform(0, 35), 1),
            "battery_pct": round(rng.uniform(5, 100), 1),
            "temp_c": round(rng.uniform(-10, 45), 1),
        }
    power = round(rng.uniform(0, 2000), 1)
    voltage = round(rng.uniform(200, 240), 1)
    return {
        "power_w": power,
        "voltage_v": voltage,
        "current_a": round(power / voltage, 3),
        "energy_wh": round(rng.uniform(0, 50_000), 1),
        "temp_c": round(rng.uniform(-10, 45), 1),
        "relay": "on",
    }


def _storm(kind: str, d: int, second: int, fields: dict[str, Any]) -> None:
    """The storm's additions to a mixed reading (in place)."""
    if kind != "smart_socket" and d % 4 == 0:
        fields["battery_pct"] = 10.0 if second % 2 == 0 else 40.0  # flaps across SMK-06's band every reading
    if kind == "gas_detector" and d % 3 == 0:
        fields["gas_lel"] = 11.0 if (second // 20) % 2 == 0 else 5.0  # GAS-01: above for 20 s, then clean air


def backlog(workload: str, n: int, *, now_ms: int, devices: int = DEVICES, seed: int = 18) -> list[tuple[str, bytes]]:
    """n messages of a workload ("mixed" or "storm") from the first `devices` devices, one per device per second,
    ending now."""
    rng = random.Random(seed)  # noqa: S311 - test data, not a secret
    seconds = max(1, n // devices)
    start_ms = now_ms - seconds * 1000
    out: list[tuple[str, bytes]] = []
    i = 0
    while len(out) < n:
        second, d = divmod(i, devices)
        i += 1
        kind = repo.device_kind(d)
        if workload == "storm" and d < GATEWAY_GROUP and second % GATEWAY_EVERY_S == 0:
            state = "offline" if (second // GATEWAY_EVERY_S) % 2 == 0 else "online"
            out.append((f"{PREFIX}/{repo.device_id(d)}/status", orjson.dumps({"state": state})))
            continue
        fields = _fields(kind, rng)
        if workload == "storm":
            _storm(kind, d, second, fields)
        body = {"ts": start_ms + second * 1000 + d % 1000, "seq": second, **fields}
        out.append((f"{PREFIX}/{repo.device_id(d)}/telemetry", orjson.dumps(body)))
    return out


def storm_message(i: int, *, devices: int = DEVICES) -> tuple[str, bytes]:
    """Message i of a live storm (the latency stage's load): the storm backlog's message i, stamped now."""
    second, d = divmod(i, devices)
    kind = repo.device_kind(d)
    if d < GATEWAY_GROUP and second % GATEWAY_EVERY_S == 0:
        state = "offline" if (second // GATEWAY_EVERY_S) % 2 == 0 else "online"
        return f"{PREFIX}/{repo.device_id(d)}/status", orjson.dumps({"state": state})
    fields = _fields(kind, random.Random(i))  # noqa: S311 - test data
    _storm(kind, d, second, fields)
    body = {"ts": int(time.time() * 1000), "seq": 2_000_000 + second, **fields}
    return f"{PREFIX}/{repo.device_id(d)}/telemetry", orjson.dumps(body)
