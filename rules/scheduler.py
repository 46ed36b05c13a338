"""The rules timer: what no reading will ever trigger — silence (offline), session length, command
deadlines and time-based severity escalation — judged on the wall clock.

Correct with several processes: a tick runs under a transaction-scoped advisory lock (one tick at a time
across the deployment), device states are taken FOR UPDATE SKIP LOCKED (a device being written by ingest
right now is plainly not silent), and expired commands are claimed with SKIP LOCKED.
Tests drive run_tick with an explicit `now` instead of sleeping.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import Connection

from core import repo as core_repo
from core.domain import Device, DeviceKind, Severity
from core.loop import Check, Loop
from core.settings import Settings
from rules import repo
from rules import service as rules_service
from rules.actuation import service as actuation
from rules.commissioning import service as commissioning
from rules.engine import (
    AbsenceRule,
    GapRule,
    OutageRule,
    SessionRule,
    Transition,
    outage_cluster,
    tick_absence,
    tick_gap,
    tick_session,
)
from rules.ruleset import RuleSet, rules_in_force

log = logging.getLogger(__name__)

TIMER_LOCK_KEY = 0x67_77_03_01  # "gw" 3.1: the rules timer's advisory lock
REGISTRY_REFRESH_S = 60.0  # the timer's copy of the registry (devices loaded later are judged within a minute)


def run_tick(
    conn: Connection[Any],
    *,
    ruleset: RuleSet,
    now: datetime | None = None,
    devices: dict[str, Device] | None = None,
    check_registry: bool = False,
) -> list[rules_service.AlarmChange]:
    """One timer pass in its own transaction; returns the alarm changes (empty if another process ticks).
    `devices` is the registry (loaded here when not given); check_registry also runs the registry checks
    (GAS-08), which the timer does whenever it has refreshed its copy of the registry."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        if not repo.try_timer_lock(conn, key=TIMER_LOCK_KEY):
            return []
        if devices is None:
            devices = {d.id: d for d in core_repo.get_all_devices(conn)}
        changes = _expire_commands(conn, devices=devices, now=now)
        if check_registry:
            changes += rules_service.check_installation(conn, devices=devices, ruleset=ruleset, now=now)
        changes += _silence_and_sessions(conn, devices=devices, ruleset=ruleset, now=now)
        changes += _escalate(conn, ruleset=ruleset, now=now)
        changes += rules_service.confirm_uncancelled(conn, devices=devices, ruleset=ruleset, now=now)
        changes += commissioning.tick(conn, devices=devices, ruleset=ruleset, now=now)
    return changes


def _expire_commands(
    conn: Connection[Any], *, devices: dict[str, Device], now: datetime
) -> list[rules_service.AlarmChange]:
    changes = []
    for command in actuation.expire(conn, now=now):
        # A device loaded since the timer's last registry refresh is not in its copy yet: its failure still counts.
        device = devices.get(command.device_id) or core_repo.get_devices(conn, ids=[command.device_id]).get(
            command.device_id
        )
        log.warning(
            "command %s (%s) on %s not confirmed by %s",
            command.id,
            command.action,
            command.device_id,
            command.deadline_at.isoformat(),
        )
        if device is not None:
            changes += rules_service.command_failed(conn, device=device, command=command, at=now)
    return changes


def _silence_and_sessions(
    conn: Connection[Any], *, devices: dict[str, Device], ruleset: RuleSet, now: datetime
) -> list[rules_service.AlarmChange]:
    timer_rules = [r for r in ruleset.rules if isinstance(r, AbsenceRule | SessionRule | GapRule)]
    absences = [r for r in timer_rules if isinstance(r, AbsenceRule)]
    # No device can be due before the shortest possible offline_after (mains floor or battery extra).
    shortest = min((min(r.mains_min_s, r.battery_extra_s) for r in absences), default=300.0)
    seen = {
        s.device_id: s
        for s in repo.get_seen(
            conn, quiet_since=now - timedelta(seconds=shortest), rule_ids=[r.id for r in timer_rules]
        )
    }
    # Devices past their own offline limit (judged once a tick, for the offline rules and for DEV-03).
    quiet = {
        i
        for i, row in seen.items()
        if i in devices
        and row.last_seen_at is not None
        and _silent_for(devices[i], ruleset, (now - row.last_seen_at).total_seconds())
    }
    candidates = [
        i
        for i, row in seen.items()
        if i in quiet or (row.timer_state and i in devices and row.last_seen_at is not None)
    ]
    changes, in_outage = _building_outages(conn, devices=devices, seen=seen, quiet=quiet, ruleset=ruleset, now=now)
    if not candidates:
        return changes
    states = repo.try_lock_device_states(conn, device_ids=candidates)
    # Gateways first, so their children see this tick's verdict (one alarm for the gateway, none for them).
    order = sorted(states, key=lambda i: (devices[i].kind is not DeviceKind.GATEWAY, i))
    down: set[str] = set()
    before = {i: orjson.dumps(st.rules) for i, st in states.items()}
    for device_id in order:
        device, state = devices[device_id], states[device_id]
        if state.last_seen_at is None:
            continue
        for rule in ruleset.for_device(device):
            rule_state = state.rules.setdefault(rule.id, {})
            transition = None
            if isinstance(rule, AbsenceRule):
                # One alarm for a building's outage (DEV-03), as for a gateway's: not one per device in it.
                inhibited = device_id in in_outage or _gateway_inhibits(
                    conn, device=device, devices=devices, seen=seen, down=down, now=now
                )
                # EB-15: a port that goes silent with a charging session open is P2, not P3.
                charging = any(
                    "s" in state.rules.get(r.id, {}) for r in ruleset.for_device(device) if isinstance(r, SessionRule)
                )
                transition = tick_absence(
                    rule,
                    rule_state,
                    device,
                    last_seen=state.last_seen_at,
                    now=now,
                    inhibited=inhibited,
                    floor=Severity.MAJOR if charging else None,
                )
                if rule_state.get("active") and device.kind is DeviceKind.GATEWAY:
                    down.add(device.id)
            elif isinstance(rule, SessionRule):
                transition = tick_session(rule, rule_state, now=now)
            elif isinstance(rule, GapRule):
                transition = tick_gap(rule, rule_state, device, now=now)
            if not rule_state:
                state.rules.pop(rule.id, None)
            if transition is not None:
                changes += rules_service.apply_transition(
                    conn,
                    device=device,
                    rule_id=rule.id,
                    transition=transition,
                    rules=state.rules,
                    ruleset=ruleset,
                    now=now,
                )
    # Write back only what changed: open sessions are looked at every tick but rarely move.
    repo.save_device_states(conn, states=[st for i, st in states.items() if orjson.dumps(st.rules) != before[i]])
    return changes


def _silent_for(device: Device, ruleset: RuleSet, silent_s: float) -> bool:
    return any(isinstance(r, AbsenceRule) and silent_s >= r.offline_after_s(device) for r in ruleset.for_device(device))


def _building_outages(
    conn: Connection[Any],
    *,
    devices: dict[str, Device],
    seen: dict[str, Any],
    quiet: set[str],
    ruleset: RuleSet,
    now: datetime,
) -> tuple[list[rules_service.AlarmChange], set[str]]:
    """DEV-03: raise or clear one alarm per building whose devices went quiet together; returns the changes and
    the devices inside an active outage (their own offline alarms are not raised)."""
    changes: list[rules_service.AlarmChange] = []
    in_outage: set[str] = set()
    for rule in ruleset.rules:
        if not isinstance(rule, OutageRule) or not rule.enabled:
            continue
        members = _buildings(devices, rule)
        silent: dict[str, list[tuple[float, str]]] = {}
        for device_id in quiet:
            device = devices[device_id]
            gateway = seen.get(device.gateway_id) if device.gateway_id else None
            if device.gateway_id in quiet or (gateway is not None and gateway.online is False):
                continue  # behind a gateway that is down: the gateway stands for it
            building = device.building_id or device.site_id
            if building in members:
                silent.setdefault(building, []).append((seen[device_id].last_seen_at.timestamp(), device_id))
        open_alarms = {
            str(a.details.get("building")): a for a in repo.open_alarms_of_type(conn, alarm_type=rule.alarm_type)
        }
        for building in sorted(set(silent) | set(open_alarms)):
            group = outage_cluster(rule, total=len(members.get(building, ())), silent=silent.get(building, []))
            alarm = open_alarms.get(building)
            if group is None:
                if alarm is not None and alarm.active and alarm.device_id in devices:
                    t = rule.transition("clear", now, details={"building": building})
                    changes += rules_service.record(conn, device=devices[alarm.device_id], transition=t)
                continue
            in_outage.update(group)
            if alarm is not None and alarm.active:
                continue
            changes += _raise_outage(
                conn,
                rule=rule,
                building=building,
                group=group,
                members=members[building],
                devices=devices,
                seen=seen,
                anchor=alarm.device_id if alarm else None,
                now=now,
            )
    return changes, in_outage


def _raise_outage(
    conn: Connection[Any],
    *,
    rule: OutageRule,
    building: str,
    group: list[str],
    members: list[str],
    devices: dict[str, Device],
    seen: dict[str, Any],
    anchor: str | None,
    now: datetime,
) -> list[rules_service.AlarmChange]:
    """The outage alarm sits on the first device that went quiet (or the building's open one); critical when
    another alarm came first anywhere in the building (possible fire damage)."""
    began = min(seen[i].last_seen_at for i in group)
    total = len(members)
    sites = sorted({devices[i].site_id for i in members})
    earlier = repo.recent_site_alarm(
        conn, site_ids=sites, since=began - timedelta(seconds=rule.recent_s), ignore_types=rule.ignore_types
    )
    severity = rule.severity_if_recent if earlier is not None else rule.severity
    first = anchor or min(group, key=lambda i: (seen[i].last_seen_at, i))
    t: Transition = rule.transition(
        "raise",
        now,
        float(len(group)),
        severity=severity,
        details={
            "building": building,
            "offline": len(group),
            "total": total,
            "devices": sorted(group)[:20],
            "since": began.isoformat(),
            "alarm_before": earlier,
        },
    )
    log.warning(
        "building %s: %d of %d devices went quiet together since %s", building, len(group), total, began.isoformat()
    )
    return rules_service.record(conn, device=devices[first], transition=t)


# The last registry copy grouped by building, with the copy itself held so that `is` identifies it (the timer ticks
# every 5 s and refreshes its copy once a minute).
_BUILDINGS: list[tuple[dict[str, Device], str, dict[str, list[str]]]] = []


def _buildings(devices: dict[str, Device], rule: OutageRule) -> dict[str, list[str]]:
    """building -> the ids of its devices that the rule watches."""
    for copy, rule_id, grouped in _BUILDINGS:
        if copy is devices and rule_id == rule.id:
            return grouped
    found: dict[str, list[str]] = {}
    for d in devices.values():
        if rule.applies_to(d):
            found.setdefault(d.building_id or d.site_id, []).append(d.id)
    _BUILDINGS[:] = [(devices, rule.id, found)]
    return found


def _gateway_inhibits(
    conn: Connection[Any],
    *,
    device: Device,
    devices: dict[str, Device],
    seen: dict[str, Any],
    down: set[str],
    now: datetime,
) -> bool:
    """A child's silence is its gateway's outage when the gateway is down or went quiet as long ago."""
    gw_id = device.gateway_id
    if not gw_id:
        return False
    if gw_id in down:
        return True
    gw, gw_seen, child_seen = devices.get(gw_id), seen.get(gw_id), seen.get(device.id)
    if gw is not None and gw_seen is not None and gw_seen.last_seen_at is not None and child_seen is not None:
        gw_silent = (now - gw_seen.last_seen_at).total_seconds()
        child_silent = (now - child_seen.last_seen_at).total_seconds()
        if gw_silent >= child_silent - 2 * gw.report_interval_s:
            return True
    return repo.gateway_is_down(conn, gateway_id=gw_id)


def _escalate(conn: Connection[Any], *, ruleset: RuleSet, now: datetime) -> list[rules_service.AlarmChange]:
    """Severity rises on alarms active longer than their rule's escalate_after_s (e.g. low battery 7 days)."""
    changes = []
    for rule in ruleset.rules:
        if rule.escalate_after_s is None or rule.escalate_to is None or isinstance(rule, AbsenceRule):
            continue
        for alarm in repo.alarms_to_escalate(
            conn,
            alarm_type=rule.alarm_type,
            rule_id=rule.id,
            severity=int(rule.escalate_to),
            before=now - timedelta(seconds=rule.escalate_after_s),
        ):
            device = core_repo.get_devices(conn, ids=[alarm.device_id]).get(alarm.device_id)
            if device is None:
                continue
            t = rule.transition(
                "hold", now, severity=rule.escalate_to, details={"escalated_after_s": rule.escalate_after_s}
            )
            change = rules_service.record_transition(conn, device=device, transition=t, repeats=0)
            if change is not None:
                changes.append(change)
    return changes


class RulesTimer:
    """The timer part: run_tick every settings.rules_tick_s (core.loop frame), with a registry copy refreshed
    every REGISTRY_REFRESH_S."""

    def __init__(self, settings: Settings, *, ruleset: RuleSet | None = None) -> None:
        self.settings = settings
        self.ruleset = ruleset or rules_in_force(settings.rules_file)
        self.loop: Loop[psycopg.Connection[Any]] = Loop("rules-timer", self)
        self._devices: dict[str, Device] = {}
        self._loaded_at = -REGISTRY_REFRESH_S
        self.ticks = 0

    def open(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.settings.dsn, autocommit=False)

    def step(self, conn: psycopg.Connection[Any]) -> float:
        check = False
        if time.monotonic() - self._loaded_at > REGISTRY_REFRESH_S:
            self._devices = {d.id: d for d in core_repo.get_all_devices(conn)}
            conn.commit()
            self._loaded_at = time.monotonic()
            check = True  # if another process holds the tick, it checks its own copy when it refreshes
        run_tick(conn, ruleset=self.ruleset, devices=self._devices, check_registry=check)
        self.ticks += 1
        return self.settings.rules_tick_s

    def close(self, conn: psycopg.Connection[Any]) -> None:
        conn.close()

    def start(self) -> None:
        """Run in a daemon thread."""
        self.loop.start()

    def stop(self) -> None:
        """Stop after the current tick."""
        self.loop.stop()

    def checks(self) -> list[Check]:
        """Health for `gridwatch health`."""
        return [self.loop.check()]
