"""Actuation policy: which command goes to which device, what is refused, and when it counts as confirmed.

Commands are rows written in the rules transaction (so an alarm and its valve close commit together);
rules/actuation/publisher.py publishes them on gw/v1/{device}/cmd after commit. Confirmation is a cmd/ack or the
next reading showing the state (valve closed, relay off); no confirmation by the deadline is a critical
actuation_failed alarm (the timer, rules/scheduler.py).

Policy (RULES-REFERENCE 1.4, 4.4, 7.3):
- a gas valve is never reopened remotely (GB 50028 10.8.4: automatic close, manual reopening on site);
- an active gas alarm in a site blocks remote relay switching there (no sparks in a gas cloud), for
  automatic cuts too: the refusal is recorded on the alarm;
- after an e-bike safety trip the port is locked until a worker clears it on site (Wuhan 2025 case):
  restore_power is refused while locked;
- a gas valve that reports a failure or that no valve is connected (Shelly Gas `valve/0/state` failure /
  not_connected: GAS-05's device_fault is active on it) is no actuation target: an automatic close_valve is recorded
  as failed at once, and the service raises actuation_failed (P1 during an alarm) so the worker shuts the gas by
  hand (issue 19); a person's request is refused with the reason.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from core.domain import Device, DeviceKind, Reading
from core.errors import ConflictError
from rules import repo
from rules.actuation import repo as command_repo
from rules.actuation.repo import CommandRow

log = logging.getLogger(__name__)

# GAS-05: "close commanded, but no closed feedback within 30 s" [E]; the same for a port cut.
DEADLINE_S: dict[str, float] = {
    "close_valve": 30.0,
    "cut_power": 30.0,
    "restore_power": 30.0,
    "self_test": 60.0,
    "silence": 30.0,
}
RELAY_ACTIONS = frozenset({"cut_power", "restore_power"})
# GAS-05 "retry once": a safety action not confirmed is sent once more (a retry is never retried).
RETRIED_ACTIONS = frozenset({"close_valve", "cut_power"})
GAS_ALARM_TYPES = ("gas_low", "gas_leak", "gas_explosion_risk", "gas_confirmed")
# The state a reading shows once an action took effect.
CONFIRMING_STATE: dict[str, tuple[str, str]] = {
    "close_valve": ("valve", "closed"),
    "cut_power": ("relay", "off"),
    "restore_power": ("relay", "on"),
}
ACTUATION_FAILED = "actuation_failed"
VALVE_FAULT = "device_fault"  # GAS-05's alarm on a gas_valve that reports a fault


def request_command(
    conn: Connection[Any],
    *,
    device: Device,
    action: str,
    alarm_id: int | None,
    reason: str,
    now: datetime,
    requested_by: str | None = None,
    retry_of: str | None = None,
) -> CommandRow:
    """Queue a command after the safety policy; a person's request that the policy forbids raises
    ConflictError, a rule's is recorded as refused (so the alarm history says why nothing moved)."""
    refusal = refusal_reason(conn, device=device, action=action)
    unavailable = None if refusal else unavailable_reason(conn, device=device, action=action)
    if (refusal or unavailable) is not None and requested_by is not None:
        raise ConflictError(str(refusal or unavailable))
    status = "refused" if refusal else "failed" if unavailable else "pending"
    refusal = refusal or unavailable
    row = command_repo.insert_command(
        conn,
        command_id=str(uuid.uuid4()),
        device_id=device.id,
        action=action,
        alarm_id=alarm_id,
        reason=reason,
        requested_by=requested_by,
        status=status,
        at=now,
        deadline=now + timedelta(seconds=DEADLINE_S.get(action, 30.0)),
        detail=refusal or "",
        retry_of=retry_of,
    )
    if alarm_id is not None:
        repo.insert_event(
            conn,
            alarm_id=alarm_id,
            kind="actuated",
            at=now,
            actor=requested_by,
            details={
                "command_id": row.id,
                "device_id": device.id,
                "action": action,
                "status": status,
                "refused": refusal,
                "retry_of": retry_of,
            },
        )
    if refusal:
        log.warning("command %s on %s refused: %s", action, device.id, refusal)
    else:
        log.info("command %s queued for %s (alarm %s)", action, device.id, alarm_id)
    return row


def refusal_reason(conn: Connection[Any], *, device: Device, action: str) -> str | None:
    """Why the policy forbids this command now, or None."""
    if device.kind is DeviceKind.GAS_VALVE and action not in ("close_valve", "self_test"):
        return "a gas valve is never reopened or switched remotely: reopen it by hand on site (GB 50028 10.8.4)"
    if action in RELAY_ACTIONS:
        gas = repo.site_has_active_alarm(conn, site_id=device.site_id, types=GAS_ALARM_TYPES)
        if gas is not None:
            return f"gas alarm {gas} is active in site {device.site_id}: no remote relay switching there"
    if action == "restore_power":
        lock = command_repo.get_port_lock(conn, device_id=device.id)
        if lock is not None:
            return (
                f"port {device.id} is locked since {lock[2].isoformat()} after a safety trip ({lock[1]}): "
                "a worker must check the bike and clear the lock on site"
            )
    return None


def unavailable_reason(conn: Connection[Any], *, device: Device, action: str) -> str | None:
    """Why this gas valve cannot carry out a close now (it reported a failure, or no valve is connected), or None."""
    if action != "close_valve" or device.kind is not DeviceKind.GAS_VALVE:
        return None
    fault = repo.get_open_alarm(conn, device_id=device.id, alarm_type=VALVE_FAULT)
    if fault is None or not fault.active:
        return None
    state = fault.details.get("state") or fault.details.get("reported") or "fault"
    return (
        f"valve {device.id} is unavailable ({state}, reported {fault.raised_at.isoformat(timespec='seconds')}): "
        "it cannot close; shut the gas by hand on site"
    )


def command_for(action: str) -> str:
    """The wire action of a rule action (cut_site_ports is cut_power on each port of the site)."""
    return "cut_power" if action == "cut_site_ports" else action


def command_targets(conn: Connection[Any], *, device: Device, action: str) -> list[str]:
    """The devices an automatic action goes to: the site's gas valves or charging ports, or the device."""
    if action == "cut_site_ports":
        # SMK-01: a smoke alarm cuts e-bike charging in the same site (less ignition energy) [E].
        return repo.site_devices_of_kind(conn, site_id=device.site_id, kind=DeviceKind.CHARGING_PORT.value)
    if action == "close_valve":
        if device.kind is DeviceKind.GAS_VALVE:
            return [device.id]
        return repo.site_devices_of_kind(conn, site_id=device.site_id, kind=DeviceKind.GAS_VALVE.value)
    return [device.id]


def confirming_pairs(readings: Sequence[Reading]) -> list[tuple[str, str]]:
    """(device, action) pairs whose commanded state these readings show."""
    pairs = set()
    for r in readings:
        if r.valve == "closed":
            pairs.add((r.device_id, "close_valve"))
        if r.relay == "off":
            pairs.add((r.device_id, "cut_power"))
        elif r.relay == "on":
            pairs.add((r.device_id, "restore_power"))
    return sorted(pairs)


def record_confirmations(conn: Connection[Any], *, commands: Sequence[CommandRow], at: datetime) -> None:
    """Audit each confirmed command on its alarm."""
    for c in commands:
        log.info("command %s (%s) on %s confirmed by %s", c.id, c.action, c.device_id, c.confirmed_by)
        if c.alarm_id is not None:
            repo.insert_event(
                conn,
                alarm_id=c.alarm_id,
                kind="actuation_confirmed",
                at=at,
                details={"command_id": c.id, "device_id": c.device_id, "action": c.action, "by": c.confirmed_by},
            )


def lock_port(conn: Connection[Any], *, device: Device, alarm_id: int | None, reason: str, at: datetime) -> None:
    """EB-10: lock a port after a safety trip."""
    command_repo.lock_port(conn, device_id=device.id, alarm_id=alarm_id, reason=reason, at=at)
    log.info("port %s locked after %s", device.id, reason)


def clear_port_lock(conn: Connection[Any], *, device_id: str, actor: str, note: str | None, now: datetime) -> bool:
    """A worker has checked the bike on site and clears the port (returns whether it was locked)."""
    return command_repo.clear_port_lock(conn, device_id=device_id, actor=actor, note=note, at=now)


def claim_pending(conn: Connection[Any], *, limit: int = 100) -> list[CommandRow]:
    """Pending commands for a publisher, locked until its transaction ends (others skip them)."""
    return command_repo.claim_pending_commands(conn, limit=limit)


def mark_sent(conn: Connection[Any], *, ids: Sequence[str], at: datetime) -> None:
    """The broker acknowledged these commands."""
    if ids:
        command_repo.mark_commands_sent(conn, ids=ids, at=at)


def confirm_by_state(conn: Connection[Any], *, readings: Sequence[Reading], at: datetime) -> list[CommandRow]:
    """Commands the devices' reported state confirms (relay off after cut_power, valve closed after close_valve)."""
    pairs = confirming_pairs(readings)
    if not pairs:
        return []
    confirmed = command_repo.confirm_commands_by_state(conn, pairs=pairs, at=at)
    record_confirmations(conn, commands=confirmed, at=at)
    return confirmed


def apply_ack(
    conn: Connection[Any], *, command_id: str, device_id: str, ok: bool, detail: str, at: datetime
) -> CommandRow | None:
    """A device's cmd/ack: the command confirmed (ok) or failed (not ok); None for an unknown or settled id."""
    return command_repo.ack_command(conn, command_id=command_id, device_id=device_id, ok=ok, detail=detail, at=at)


def expire(conn: Connection[Any], *, now: datetime) -> list[CommandRow]:
    """Commands past their deadline without confirmation, now failed (the timer raises actuation_failed)."""
    return command_repo.expire_commands(conn, now=now)


def recent_command(conn: Connection[Any], *, device_id: str, action: str, since: datetime) -> str | None:
    """The newest command of this action delivered to (or confirmed by) the device since `since`."""
    return command_repo.recent_command(conn, device_id=device_id, action=action, since=since)


def get_port_lock(conn: Connection[Any], *, device_id: str) -> tuple[int, str, datetime] | None:
    """The port's open lockout (id, reason, since), if any."""
    return command_repo.get_port_lock(conn, device_id=device_id)


def get_commands(conn: Connection[Any], *, device_id: str) -> list[CommandRow]:
    """A device's commands, oldest first."""
    return command_repo.get_commands(conn, device_id=device_id)


def fail(conn: Connection[Any], *, command_id: str, detail: str, at: datetime) -> CommandRow | None:
    """A pending command that cannot be carried out at all (its bridge has no such command): failed now."""
    return command_repo.fail_command(conn, command_id=command_id, detail=detail, at=at)
