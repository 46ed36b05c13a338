"""Rules in a transaction: evaluate readings with the devices' locked state, write alarm transitions.

The caller (ingest) owns the transaction; nothing here commits.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import Counter
from psycopg import Connection

from core.domain import Alarm, Device, DeviceStatus, Disposition, Reading, Severity
from core.errors import ConflictError, NotFoundError
from rules import repo
from rules.actuation import service as actuation
from rules.actuation.repo import CommandRow
from rules.batch import AlarmBatch
from rules.engine import (
    AbsenceRule,
    AnyRule,
    CorroborateRule,
    NoCancelRule,
    PlacementRule,
    RealarmRule,
    RepeatRule,
    Transition,
    misplacement,
    repeat_due,
)
from rules.ruleset import RuleSet

log = logging.getLogger(__name__)

LATE_READINGS = Counter(
    "gridwatch_rules_late_readings_total",
    "Readings stored but not evaluated: older than their device's newest evaluated reading",
)


@dataclass(slots=True, frozen=True)
class AlarmChange:
    """An alarm transition written by this transaction (for metrics, logs and tests)."""

    alarm_id: int
    device_id: str
    alarm_type: str
    kind: str
    severity: int


# Repeats of an active alarm update it (last seen, peak, count) at most this often unless the value
# reaches a new peak or the severity rises: the hot path must not write SQL per reading (DESIGN: repeats
# update the alarm; notifications go out on transitions only).
TOUCH_EVERY_S = 60.0
HOLDS = "_hold"  # device_state.rules key: rule id -> [peak, last touch (epoch s), pending repeats]
SELF_TEST = "_self_test"  # device_state.rules key: event time of the last passed self-test (`test` reading)


# Complexity exception (C901): the hot path's one pass over a batch; a call per branch costs on every reading.
def apply_readings(  # noqa: C901
    conn: Connection[Any],
    *,
    readings: Sequence[Reading],
    devices: dict[str, Device],
    ruleset: RuleSet,
    now: datetime | None = None,
    states: dict[str, repo.DeviceStateRow] | None = None,
) -> list[AlarmChange]:
    """Evaluate new readings in event-time order per device and persist the resulting transitions.
    `states`: the device states already locked by this transaction (lock_devices); locked here otherwise."""
    if not readings:
        return []
    states = _states_of(conn, states, [r.device_id for r in readings])
    changes: list[AlarmChange] = []
    commanded: set[str] = set()  # devices this transaction sends a command to
    wall = now or datetime.now(UTC)
    batch = AlarmBatch()  # the batch's transitions, written set-based after every reading is judged
    for reading in sorted(readings, key=lambda r: (r.device_id, r.ts, r.seq or 0)):
        state = states.get(reading.device_id)
        device = devices.get(reading.device_id)
        if state is None or device is None:
            continue
        if state.last_seen_at is None or reading.received_at > state.last_seen_at:
            state.last_seen_at = reading.received_at
        plan = ruleset.plan_for(device)
        reading = _judged_time(reading, plan.max_ahead_s)
        # DESIGN: a reading older than the device's latest is still judged, on a copy of the rule state: a hazard
        # in it raises (or is recorded against) an alarm, marked late, but it never clears or downgrades what
        # newer readings set, and it leaves the device's windows and hysteresis as they were.
        late = state.last_ts is not None and reading.ts < state.last_ts
        if late:
            LATE_READINGS.inc()
            rules = copy.deepcopy(state.rules)
        else:
            state.last_ts, state.last_seq = reading.ts, reading.seq
            rules = state.rules
        if reading.test and not late:
            # A self-test never pages (RULES-REFERENCE 7.3 test mode): record it as passed, judge nothing else.
            rules[SELF_TEST] = reading.ts.isoformat()
            log.info("self-test passed on %s at %s", device.id, reading.ts.isoformat())
        present = plan.present(reading)
        test = reading.test
        for compiled in plan.rules:
            fields = compiled.fields
            if fields and fields.isdisjoint(present):
                continue  # this reading says nothing this rule reads (absence rules watch every message)
            if test and not compiled.judges_tests:
                continue
            rule = compiled.rule
            rule_state = rules.get(rule.id)
            if rule_state is None:
                if compiled.only_armed:
                    continue
                rule_state = rules[rule.id] = {}
            was_active = bool(rule_state.get("active"))
            transition = compiled.evaluate(rule, rule_state, reading)
            if not rule_state:
                del rules[rule.id]
                if transition is None:
                    continue  # the hot path: nothing armed, nothing to say
            if rule.inhibited_by and not was_active and any(rules.get(i, {}).get("active") for i in rule.inhibited_by):
                # A higher level of the family is active: do not page; arm afresh once it has cleared.
                rules.pop(rule.id, None)
                continue
            if transition is None:
                continue
            if late and not _late_hazard(conn, state.rules, rules, rule.id, transition, device):
                continue
            if isinstance(rule, RealarmRule) and not _reset_before(conn, rule=rule, device=device, at=transition.at):
                continue  # a rising edge without a remote reset before it is the plain alarm (SMK-01)
            if (
                transition.kind == "raise"
                and rule.severity_if_active is not None
                and any(rules.get(i, {}).get("active") for i in rule.if_active)
            ):
                transition.severity = max(transition.severity, rule.severity_if_active)  # EB-06 with EB-03/04
            stage_transition(batch, device=device, rule_id=rule.id, transition=transition, rules=state.rules)
    changes.extend(flush_batch(conn, batch, ruleset=ruleset, now=wall, commanded=commanded))
    # Only devices with a command open (the lock query says) or commanded just now can confirm one: most batches
    # need no confirmation query at all.
    could = {i for i, st in states.items() if st.open_commands} | commanded
    changes.extend(
        _confirm_by_state(conn, readings=[r for r in readings if r.device_id in could], devices=devices, at=wall)
    )
    repo.save_device_states(conn, states=list(states.values()))
    return changes


def _late_hazard(
    conn: Connection[Any],
    into: dict[str, Any],
    rules: dict[str, Any],
    rule_id: str,
    transition: Transition,
    device: Device,
) -> bool:
    """Whether a late reading's transition is written (marked late). Newer readings decide what is clear: a late
    clear is dropped, and so is a late raise of an alarm newer readings have cleared (a bridge's stale copy never
    re-opens it). A late raise with no open alarm raises one, and the rule's state becomes the alarm's."""
    if transition.kind == "clear":
        return False
    if transition.kind == "raise":
        status = repo.open_alarm_active(conn, device_id=device.id, alarm_type=transition.alarm_type)
        if status is False:
            return False
        if status is None:
            _adopt(into, rules, rule_id)
    transition.details = {**transition.details, "late": True}
    return True


def _adopt(into: dict[str, Any], rules: dict[str, Any], rule_id: str) -> None:
    adopted = rules.get(rule_id)
    if adopted is None:
        into.pop(rule_id, None)
    else:
        into[rule_id] = adopted


def _judged_time(reading: Reading, max_ahead_s: float | None) -> Reading:
    """The reading as the rules judge it: at its own time, or at its arrival when the device's clock runs ahead of
    the arrival by more than max_ahead_s (DEV-05c raises about the clock; device_ts keeps the device's time)."""
    if max_ahead_s is None or (reading.ts - reading.received_at).total_seconds() <= max_ahead_s:
        return reading
    return dataclasses.replace(reading, ts=reading.received_at, device_ts=reading.ts)


def apply_transition(
    conn: Connection[Any],
    *,
    device: Device,
    rule_id: str,
    transition: Transition,
    rules: dict[str, Any],
    ruleset: RuleSet,
    now: datetime,
    commanded: set[str] | None = None,
) -> list[AlarmChange]:
    """Record one transition now (the timer's path): throttle repeats, write, then its after-effects."""
    batch = AlarmBatch()
    stage_transition(batch, device=device, rule_id=rule_id, transition=transition, rules=rules)
    return flush_batch(conn, batch, ruleset=ruleset, now=now, commanded=commanded)


def stage_transition(
    batch: AlarmBatch, *, device: Device, rule_id: str, transition: Transition, rules: dict[str, Any]
) -> None:
    """Queue a transition in the batch unless it is a repeat to throttle; keep the rule's hold up to date."""
    holds: dict[str, list[Any]] = rules.setdefault(HOLDS, {})
    if _throttled(holds, rule_id, transition):
        return
    repeats = int(holds[rule_id][2]) + 1 if transition.kind == "hold" and rule_id in holds else 1
    batch.add(device, transition, repeats=repeats, rules=rules)
    _remember_hold(holds, rule_id, transition)
    if not holds:
        rules.pop(HOLDS, None)


def flush_batch(
    conn: Connection[Any], batch: AlarmBatch, *, ruleset: RuleSet, now: datetime, commanded: set[str] | None = None
) -> list[AlarmChange]:
    """Write the batch's transitions set-based (rules.batch), then run each change's after-effects in order:
    its actions (commands, port lockout), cross-device confirmation, and clearing what it confirmed."""
    written, open_ids = batch.flush(conn)
    by_pending = {id(w.pending): w for w in written}
    out: list[AlarmChange] = []
    for p in batch.pending:
        t, device, w = p.transition, p.device, by_pending.get(id(p))
        if w is None:
            alarm_id = open_ids.get((device.id, t.alarm_type))
            if t.kind == "hold" and t.actions and alarm_id is not None:  # EB-05: a later stop within the same alarm
                out += _actuate(conn, device=device, transition=t, alarm_id=alarm_id, now=now, commanded=commanded)
            continue
        log.info("alarm %s %s: %s on %s (%s)", w.alarm_id, w.kind, t.alarm_type, device.id, Severity(w.severity).label)
        out.append(AlarmChange(w.alarm_id, device.id, t.alarm_type, w.kind, w.severity))
        if w.kind == "cleared":
            out.extend(
                _clear_confirmations(
                    conn, device=device, alarm_type=t.alarm_type, at=t.at, rules=p.rules, ruleset=ruleset
                )
            )
        if w.kind in ("raised", "reactivated", "severity_raised"):
            out += _actuate(conn, device=device, transition=t, alarm_id=w.alarm_id, now=now, commanded=commanded)
        if w.kind in ("raised", "reactivated"):
            out.extend(_corroborate(conn, device=device, alarm_type=t.alarm_type, at=t.at, ruleset=ruleset))
    return out


def _throttled(holds: dict[str, list[Any]], rule_id: str, transition: Transition) -> bool:
    """A repeat of an active alarm with no new peak, no higher severity and no action, within TOUCH_EVERY_S of
    the last write: counted in the hold (written with the next write), not written now."""
    hold = holds.get(rule_id)
    if transition.kind != "hold" or transition.actions or hold is None:
        return False
    value, peak = transition.value, hold[0]
    new_peak = value is not None and (peak is None or value > peak)
    if new_peak or transition.at.timestamp() - hold[1] >= TOUCH_EVERY_S or int(transition.severity) > int(hold[3]):
        return False
    hold[2] += 1
    return True


def _remember_hold(holds: dict[str, list[Any]], rule_id: str, transition: Transition) -> None:
    """After a write: [peak, written at, repeats since, highest severity] of the alarm, or nothing once clear."""
    if transition.kind == "clear":
        holds.pop(rule_id, None)
        return
    prev = holds.get(rule_id)
    peak = (
        transition.value
        if prev is None or prev[0] is None or (transition.value is not None and transition.value > prev[0])
        else prev[0]
    )
    holds[rule_id] = [peak, transition.at.timestamp(), 0, max(int(transition.severity), int(prev[3]) if prev else 0)]


def _actuate(
    conn: Connection[Any],
    *,
    device: Device,
    transition: Transition,
    alarm_id: int,
    now: datetime,
    commanded: set[str] | None = None,
) -> list[AlarmChange]:
    """Queue the transition's commands (and the port lock); a target that cannot carry the command (a gas valve
    reporting a failure, or none connected) is failed at once and raises actuation_failed on it (issue 19)."""
    changes: list[AlarmChange] = []
    for action in transition.actions:
        targets = actuation.command_targets(conn, device=device, action=action)
        if not targets:
            log.info("alarm %s: no %s target registered in site %s", alarm_id, action, device.site_id)
            continue
        for target_id in targets:
            target = device if target_id == device.id else _device(conn, target_id)
            if target is None:
                continue
            row = actuation.request_command(
                conn,
                device=target,
                action=actuation.command_for(action),
                alarm_id=alarm_id,
                reason=f"{transition.rule_id} {transition.alarm_type}",
                now=now,
            )
            if row.status == "failed":
                changes += raise_actuation_failed(conn, device=target, command=row, at=now)
            elif commanded is not None:
                commanded.add(target_id)
    if transition.lockout:
        actuation.lock_port(
            conn, device=device, alarm_id=alarm_id, reason=f"{transition.rule_id} {transition.alarm_type}", at=now
        )
    return changes


def _device(conn: Connection[Any], device_id: str) -> Device | None:
    from core import repo as core_repo

    return core_repo.get_devices(conn, ids=[device_id]).get(device_id)


def _corroborate(
    conn: Connection[Any], *, device: Device, alarm_type: str, at: datetime, ruleset: RuleSet
) -> list[AlarmChange]:
    """GAS-04 / SMK-02 / SMK-02a: an alarm confirmed by another of the site within the window — this alarm
    confirmed by one already active, or this alarm confirming ones already active (heat or CO after smoke)."""
    out = []
    for rule in ruleset.for_device(device):
        if not isinstance(rule, CorroborateRule) or alarm_type not in rule.of:
            continue
        by = repo.find_corroborating_device(
            conn,
            site_id=device.site_id,
            device_id=device.id,
            types=rule.confirming,
            since=at - timedelta(seconds=rule.window_s),
            include_self=rule.same_device,
        )
        if by is not None:
            out.extend(_confirm(conn, device=device, rule=rule, at=at, details={"confirmed_by": by, "of": alarm_type}))
    for rule in ruleset.rules:
        if not isinstance(rule, CorroborateRule) or alarm_type not in rule.by:
            continue
        for other_id in repo.site_alarm_devices(
            conn,
            site_id=device.site_id,
            device_id=device.id,
            types=rule.of,
            since=at - timedelta(seconds=rule.window_s),
            include_self=rule.same_device,
        ):
            other = device if other_id == device.id else _device(conn, other_id)
            mine = None if other is None else ruleset.effective(other, rule.id)
            if other is not None and mine is not None:
                out.extend(
                    _confirm(
                        conn, device=other, rule=mine, at=at, details={"confirmed_by": device.id, "of": alarm_type}
                    )
                )
    return out


def _confirm(
    conn: Connection[Any],
    *,
    device: Device,
    rule: AnyRule,
    at: datetime,
    details: dict[str, Any],
    now: datetime | None = None,
) -> list[AlarmChange]:
    """Raise a confirmation (gas_confirmed, fire_confirmed); one that actuates does so when it is raised (SMK-02:
    the site's e-bike ports, automatic linkage on two signals as GB 50116-2013 4.1.6 requires)."""
    transition = rule.transition("raise", at, details=details)
    changes = record(conn, device=device, transition=transition)
    for change in list(changes):
        if transition.actions and change.kind in ("raised", "reactivated"):
            at_ = now or datetime.now(UTC)
            changes += _actuate(conn, device=device, transition=transition, alarm_id=change.alarm_id, now=at_)
    return changes


def _reset_before(conn: Connection[Any], *, rule: RealarmRule, device: Device, at: datetime) -> bool:
    """SMK-02b: a remote reset (rule.after) reached the detector within window_s before its alarm came back."""
    found = actuation.recent_command(
        conn, device_id=device.id, action=rule.after, since=at - timedelta(seconds=rule.window_s)
    )
    if found is not None:
        log.warning("%s re-alarmed within %.0f s of reset %s: fire confirmed", device.id, rule.window_s, found)
    return found is not None


CONFIRMING_RULES = (CorroborateRule, RealarmRule, NoCancelRule)


def _clear_confirmations(
    conn: Connection[Any], *, device: Device, alarm_type: str, at: datetime, rules: dict[str, Any], ruleset: RuleSet
) -> list[AlarmChange]:
    """A confirmation (gas_confirmed, fire_confirmed) clears once none of the alarms it confirms on this device
    is active any more (a latching one then waits for a person to resolve it)."""
    out: list[AlarmChange] = []
    mine = ruleset.for_device(device)
    done: set[str] = set()
    for rule in mine:
        if not isinstance(rule, CONFIRMING_RULES) or alarm_type not in rule.of or rule.alarm_type in done:
            continue
        done.add(rule.alarm_type)
        if any(rules.get(r.id, {}).get("active") for r in mine if r.alarm_type in rule.of):
            continue
        clear = rule.transition("clear", at, details={"cleared_with": alarm_type})
        out += record(conn, device=device, transition=clear)
    return out


def check_installation(
    conn: Connection[Any], *, devices: dict[str, Device], ruleset: RuleSet, now: datetime | None = None
) -> list[AlarmChange]:
    """GAS-08: registry checks (a gas detector at the wrong height for its site's gas) raise, or clear once the
    registry says it was fixed. Run after a registry load and when the timer refreshes its registry copy."""
    at = now or datetime.now(UTC)
    out: list[AlarmChange] = []
    for rule in ruleset.rules:
        if not isinstance(rule, PlacementRule):
            continue
        open_ = {a.device_id: a for a in repo.open_alarms_of_type(conn, alarm_type=rule.alarm_type)}
        for device in devices.values():
            mine = ruleset.effective(device, rule.id)
            why = misplacement(mine, device) if isinstance(mine, PlacementRule) else None
            alarm = open_.get(device.id)
            if why is not None and (alarm is None or not alarm.active):
                t = rule.transition("raise", at, details={"mounting": device.mounting, "lpg": device.lpg, "why": why})
                t.message = why
            elif why is None and alarm is not None and alarm.active:
                t = rule.transition("clear", at, details={"mounting": device.mounting})
            else:
                continue
            out += record(conn, device=device, transition=t)
    return out


def confirm_uncancelled(
    conn: Connection[Any], *, devices: dict[str, Device], ruleset: RuleSet, now: datetime
) -> list[AlarmChange]:
    """SMK-02c (the timer): an alarm nobody cancelled within after_s while it stayed active is confirmed."""
    out: list[AlarmChange] = []
    for rule in ruleset.rules:
        if not isinstance(rule, NoCancelRule) or not rule.enabled:
            continue
        for alarm_id, device_id in repo.uncancelled_alarms(
            conn, types=rule.of, before=now - timedelta(seconds=rule.after_s), confirmed_type=rule.alarm_type
        ):
            device = devices.get(device_id)
            mine = None if device is None else ruleset.effective(device, rule.id)
            if device is not None and mine is not None:
                out.extend(
                    _confirm(
                        conn,
                        device=device,
                        rule=mine,
                        at=now,
                        details={"trigger": "no_cancel", "alarm": alarm_id, "after_s": rule.after_s},
                        now=now,
                    )
                )
    return out


def _confirm_by_state(
    conn: Connection[Any], *, readings: Sequence[Reading], devices: dict[str, Device], at: datetime
) -> list[AlarmChange]:
    confirmed = actuation.confirm_by_state(conn, readings=readings, at=at)
    return settle_actuation_failed(conn, commands=confirmed, devices=devices, at=at) if confirmed else []


def record(conn: Connection[Any], *, device: Device, transition: Transition) -> list[AlarmChange]:
    """record_transition, as the list of changes it made (none, or one)."""
    change = record_transition(conn, device=device, transition=transition)
    return [change] if change is not None else []


def record_transition(
    conn: Connection[Any], *, device: Device, transition: Transition, repeats: int = 1
) -> AlarmChange | None:
    """Apply one rule transition to the alarm table; transitions (not repeats) go to the outbox."""
    alarm = repo.get_open_alarm(conn, device_id=device.id, alarm_type=transition.alarm_type)
    severity = int(transition.severity)
    if transition.kind == "clear":
        if alarm is None or not alarm.active:
            return None
        alarm = repo.clear_alarm(conn, alarm_id=alarm.id, at=transition.at)
        return _event(
            conn,
            alarm,
            "cleared",
            transition.at,
            severity=alarm.severity,
            details={"value": transition.value, **transition.details},
        )
    if alarm is None:
        alarm = repo.insert_alarm(
            conn,
            device_id=device.id,
            site_id=device.site_id,
            alarm_type=transition.alarm_type,
            rule_id=transition.rule_id,
            severity=severity,
            latching=transition.latching,
            at=transition.at,
            value=transition.value,
            message=transition.message,
            details=transition.details,
        )
        return _event(
            conn,
            alarm,
            "raised",
            transition.at,
            severity=severity,
            details={"value": transition.value, "rule": transition.rule_id, **transition.details},
        )
    before = alarm
    alarm = repo.touch_alarm(
        conn, alarm_id=alarm.id, at=transition.at, value=transition.value, severity=severity, repeats=repeats
    )
    if not before.active:
        return _event(
            conn,
            alarm,
            "reactivated",
            transition.at,
            severity=alarm.severity,
            details={"value": transition.value, "rule": transition.rule_id},
        )
    if alarm.severity > before.severity:
        return _event(
            conn,
            alarm,
            "severity_raised",
            transition.at,
            severity=alarm.severity,
            details={"from": before.severity, "value": transition.value, **transition.details},
        )
    return None  # still active: DESIGN says never notify on "still active"


def _event(
    conn: Connection[Any],
    alarm: Alarm,
    kind: str,
    at: datetime,
    *,
    severity: int,
    actor: str | None = None,
    details: dict[str, Any] | None = None,
    notify: bool = True,
) -> AlarmChange:
    event_id = repo.insert_event(
        conn, alarm_id=alarm.id, kind=kind, at=at, actor=actor, severity=severity, details=details
    )
    if notify:
        repo.insert_outbox(conn, alarm_id=alarm.id, event_id=event_id, kind=kind, severity=severity)
    log.info("alarm %s %s: %s on %s (%s)", alarm.id, kind, alarm.type, alarm.device_id, Severity(severity).label)
    return AlarmChange(alarm.id, alarm.device_id, alarm.type, kind, severity)


def acknowledge(conn: Connection[Any], *, alarm_id: int, actor: str, now: datetime | None = None) -> Alarm:
    """A person has taken the alarm: record who and when (idempotent for the same person)."""
    alarm = repo.lock_alarm(conn, alarm_id=alarm_id)
    if alarm is None:
        raise NotFoundError(f"alarm {alarm_id} does not exist")
    if alarm.closed_at is not None:
        raise ConflictError(f"alarm {alarm_id} was already resolved by {alarm.closed_by}")
    if alarm.acknowledged:
        return alarm
    at = now or datetime.now(UTC)
    alarm = repo.acknowledge_alarm(conn, alarm_id=alarm_id, actor=actor, at=at)
    _event(conn, alarm, "acknowledged", at, severity=alarm.severity, actor=actor)
    return alarm


def resolve(
    conn: Connection[Any],
    *,
    alarm_id: int,
    actor: str,
    disposition: Disposition,
    note: str | None,
    now: datetime | None = None,
    ruleset: RuleSet | None = None,
) -> Alarm:
    """Close the alarm with a disposition after the person has been on site (then SMK-08: repeated verdicts)."""
    alarm = repo.lock_alarm(conn, alarm_id=alarm_id)
    if alarm is None:
        raise NotFoundError(f"alarm {alarm_id} does not exist")
    if alarm.closed_at is not None:
        raise ConflictError(f"alarm {alarm_id} was already resolved by {alarm.closed_by}")
    if alarm.latching and alarm.active:
        raise ConflictError(f"alarm {alarm_id} latches: it can be resolved only after its condition has cleared")
    at = now or datetime.now(UTC)
    alarm = repo.close_alarm(conn, alarm_id=alarm_id, actor=actor, at=at, disposition=disposition.value, note=note)
    _event(
        conn,
        alarm,
        "resolved",
        at,
        severity=alarm.severity,
        actor=actor,
        details={"disposition": disposition.value, "note": note},
    )

    _repeats(conn, alarm=alarm, at=at, ruleset=ruleset)
    return alarm


def _repeats(conn: Connection[Any], *, alarm: Alarm, at: datetime, ruleset: RuleSet | None) -> None:
    """SMK-08: the device's alarms resolved with the same verdict reached a repeat rule's count."""
    device = _device(conn, alarm.device_id)
    if device is None or alarm.disposition is None:
        return
    from rules.ruleset import default_rules

    for rule in (ruleset or default_rules()).for_device(device):
        if not isinstance(rule, RepeatRule) or alarm.type not in rule.of or alarm.disposition != rule.disposition:
            continue
        n = repo.count_resolved(
            conn,
            device_id=device.id,
            types=rule.of,
            disposition=rule.disposition,
            since=at - timedelta(seconds=rule.window_s),
        )
        if repeat_due(rule, alarm_type=alarm.type, disposition=alarm.disposition, resolved_count=n):
            record_transition(
                conn,
                device=device,
                transition=rule.transition(
                    "raise", at, float(n), details={"count": n, "of": list(rule.of), "last_alarm": alarm.id}
                ),
            )


# --------------------------------------------------------------------------- statuses, command acks, timer


def _states_of(
    conn: Connection[Any], locked: dict[str, repo.DeviceStateRow] | None, device_ids: Sequence[str]
) -> dict[str, repo.DeviceStateRow]:
    """These devices' states: from those the caller already locked (lock_devices), else locked now."""
    if locked is None:
        return repo.lock_device_states(conn, device_ids=device_ids)
    wanted = set(device_ids)
    return {i: st for i, st in locked.items() if i in wanted}


def lock_devices(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, repo.DeviceStateRow]:
    """Lock these devices' rule state up front, in one statement in id order (two writers cannot deadlock on
    them), for apply_readings / apply_statuses to use."""
    return repo.lock_device_states(conn, device_ids=device_ids)


def apply_statuses(
    conn: Connection[Any],
    *,
    statuses: Sequence[DeviceStatus],
    devices: dict[str, Device],
    ruleset: RuleSet,
    states: dict[str, repo.DeviceStateRow] | None = None,
) -> list[AlarmChange]:
    """Retained status topics: `offline` (the device's last will) raises offline at once unless its
    gateway is down too; `online` clears it (DESIGN MQTT contract)."""
    changes: list[AlarmChange] = []
    if not statuses:
        return changes
    states = _states_of(conn, states, [s.device_id for s in statuses])
    ordered = sorted(statuses, key=lambda s: (s.device_id, s.at))
    # Each device's newest status of the batch, written before any is judged: a child asks whether its gateway is
    # down after the gateway's own status in the batch is recorded, whichever of the two ids sorts first.
    newest = {s.device_id: s for s in ordered}
    repo.set_devices_online(conn, statuses=[(s.device_id, s.online, s.at) for s in newest.values()])
    batch = AlarmBatch()  # a gateway and its children dropping at once: their transitions written together
    for status in ordered:
        device, state = devices.get(status.device_id), states.get(status.device_id)
        if device is None or state is None:
            continue
        for rule in ruleset.for_device(device):
            if not isinstance(rule, AbsenceRule):
                continue
            rule_state = state.rules.setdefault(rule.id, {})
            transition: Transition | None = None
            if status.online:
                if rule_state.get("active"):
                    rule_state.clear()
                    transition = rule.transition("clear", status.at, details={"status": "online"})
            elif not rule_state.get("active") and not _gateway_down(conn, device=device):
                rule_state["active"], rule_state["sev"] = True, int(rule.severity)
                transition = rule.transition("raise", status.at, details={"status": "offline"})
            if not rule_state:
                state.rules.pop(rule.id, None)
            if transition is not None:
                stage_transition(batch, device=device, rule_id=rule.id, transition=transition, rules=state.rules)
    changes.extend(flush_batch(conn, batch, ruleset=ruleset, now=datetime.now(UTC)))
    repo.save_device_states(conn, states=list(states.values()))
    return changes


def _gateway_down(conn: Connection[Any], *, device: Device) -> bool:
    if not device.gateway_id:
        return False
    return repo.gateway_is_down(conn, gateway_id=device.gateway_id)


def apply_command_acks(conn: Connection[Any], *, acks: Sequence[Any], devices: dict[str, Device]) -> list[AlarmChange]:
    """cmd/ack from devices (ingest CommandAck: device_id, command_id, ok, detail, at): confirm, or a
    refused/failed command raises actuation_failed and is retried once (GAS-05)."""
    changes: list[AlarmChange] = []
    for ack in acks:
        row = actuation.apply_ack(
            conn, command_id=ack.command_id, device_id=ack.device_id, ok=ack.ok, detail=ack.detail, at=ack.at
        )
        if row is None:
            log.info("ack for unknown or settled command %s from %s", ack.command_id, ack.device_id)
            continue
        if row.status == "confirmed":
            actuation.record_confirmations(conn, commands=[row], at=ack.at)
            changes.extend(settle_actuation_failed(conn, commands=[row], devices=devices, at=ack.at))
            continue
        device = devices.get(row.device_id) or _device(conn, row.device_id)
        if device is not None:
            changes.extend(command_failed(conn, device=device, command=row, at=ack.at))
    return changes


def command_failed(conn: Connection[Any], *, device: Device, command: CommandRow, at: datetime) -> list[AlarmChange]:
    """GAS-05 / ACT-01: a command not carried out (no confirmation by its deadline, or the device answered
    ok=false) raises actuation_failed on the target device, and a safety action is sent once more."""
    changes = raise_actuation_failed(conn, device=device, command=command, at=at)
    if command.action in actuation.RETRIED_ACTIONS and command.retry_of is None:
        retry = actuation.request_command(
            conn,
            device=device,
            action=command.action,
            alarm_id=command.alarm_id,
            reason=f"GAS-05 retry of {command.id}: {command.reason}",
            now=at,
            retry_of=command.id,
        )
        log.warning(
            "command %s (%s) on %s failed (%s); retried once as %s",
            command.id,
            command.action,
            device.id,
            command.detail,
            retry.id,
        )
    return changes


def raise_actuation_failed(
    conn: Connection[Any], *, device: Device, command: CommandRow, at: datetime
) -> list[AlarmChange]:
    """ACT-01: a command not carried out is an alarm on the target device: critical (P1) when it was sent for
    an alarm, major (P2) for a person's command outside one (GAS-05: "P1 during an alarm / P2 otherwise")."""
    if command.alarm_id is not None:
        repo.insert_event(
            conn,
            alarm_id=command.alarm_id,
            kind="actuation_failed",
            at=at,
            details={
                "command_id": command.id,
                "device_id": device.id,
                "action": command.action,
                "detail": command.detail,
            },
        )
    severity = Severity.CRITICAL if command.alarm_id is not None else Severity.MAJOR
    t = Transition(
        rule_id="ACT-01",
        alarm_type=actuation.ACTUATION_FAILED,
        kind="raise",
        severity=severity,
        at=at,
        message=f"{command.action} on {device.id} was not confirmed: act on site",
        details={
            "command_id": command.id,
            "action": command.action,
            "detail": command.detail,
            "for_alarm": command.alarm_id,
            "retry_of": command.retry_of,
        },
    )
    return record(conn, device=device, transition=t)


def settle_actuation_failed(
    conn: Connection[Any], *, commands: Sequence[CommandRow], devices: dict[str, Device], at: datetime
) -> list[AlarmChange]:
    """A confirmed command (e.g. GAS-05's retry) clears the device's actuation_failed alarm for that action;
    the alarm stays open for a person to resolve (the first attempt did fail)."""
    changes: list[AlarmChange] = []
    for command in commands:
        alarm = repo.get_open_alarm(conn, device_id=command.device_id, alarm_type=actuation.ACTUATION_FAILED)
        if alarm is None or not alarm.active or alarm.details.get("action") != command.action:
            continue
        device = devices.get(command.device_id) or _device(conn, command.device_id)
        if device is None:
            continue
        t = Transition(
            rule_id="ACT-01",
            alarm_type=actuation.ACTUATION_FAILED,
            kind="clear",
            severity=Severity(alarm.severity),
            at=at,
            details={"confirmed_command": command.id, "by": command.confirmed_by},
        )
        changes += record(conn, device=device, transition=t)
    return changes


def request_command(
    conn: Connection[Any],
    *,
    device: Device,
    action: str,
    actor: str,
    reason: str,
    alarm_id: int | None = None,
    now: datetime | None = None,
) -> CommandRow:
    """A person asks for a command (API): the safety policy applies (ConflictError when refused)."""
    return actuation.request_command(
        conn,
        device=device,
        action=action,
        alarm_id=alarm_id,
        reason=reason,
        now=now or datetime.now(UTC),
        requested_by=actor,
    )


def clear_port_lock(
    conn: Connection[Any], *, device_id: str, actor: str, note: str | None = None, now: datetime | None = None
) -> None:
    """EB-10: a worker checked the bike on site and clears the port lock."""
    if not actuation.clear_port_lock(conn, device_id=device_id, actor=actor, note=note, now=now or datetime.now(UTC)):
        raise NotFoundError(f"port {device_id} is not locked")
