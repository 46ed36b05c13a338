"""Rules in a transaction: evaluate readings with the devices' locked state, write alarm transitions.

The caller (ingest) owns the transaction; nothing here commits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection

from core.domain import Device, Disposition, Reading, Severity
from core.errors import ConflictError, NotFoundError
from rules import repo
from rules.engine import Transition, evaluate
from rules.ruleset import RuleSet

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class AlarmChange:
    """An alarm transition written by this transaction (for metrics, logs and tests)."""

    alarm_id: int
    device_id: str
    alarm_type: str
    kind: str
    severity: int


def apply_readings(conn: Connection[Any], *, readings: Sequence[Reading], devices: dict[str, Device],
                   ruleset: RuleSet) -> list[AlarmChange]:
    """Evaluate new readings in event-time order per device and persist the resulting transitions."""
    if not readings:
        return []
    states = repo.lock_device_states(conn, device_ids=[r.device_id for r in readings])
    changes: list[AlarmChange] = []
    for reading in sorted(readings, key=lambda r: (r.device_id, r.ts, r.seq or 0)):
        state = states.get(reading.device_id)
        device = devices.get(reading.device_id)
        if state is None or device is None:
            continue
        if state.last_seen_at is None or reading.received_at > state.last_seen_at:
            state.last_seen_at = reading.received_at
        # DESIGN: a reading older than the device's latest is stored but never re-evaluated, so a late
        # duplicate cannot re-open a cleared alarm.
        if state.last_ts is not None and reading.ts < state.last_ts:
            continue
        state.last_ts, state.last_seq = reading.ts, reading.seq
        for rule in ruleset.for_device(device):
            rule_state = state.rules.setdefault(rule.id, {})
            transition = evaluate(rule, rule_state, reading)
            if not rule_state:
                state.rules.pop(rule.id, None)
            if transition is not None:
                change = record_transition(conn, device=device, transition=transition)
                if change is not None:
                    changes.append(change)
    repo.save_device_states(conn, states=list(states.values()))
    return changes


def record_transition(conn: Connection[Any], *, device: Device, transition: Transition) -> AlarmChange | None:
    """Apply one rule transition to the alarm table; transitions (not repeats) go to the outbox."""
    alarm = repo.get_open_alarm(conn, device_id=device.id, alarm_type=transition.alarm_type)
    severity = int(transition.severity)
    if transition.kind == "clear":
        if alarm is None or not alarm.active:
            return None
        alarm = repo.clear_alarm(conn, alarm_id=alarm.id, at=transition.at)
        return _event(conn, alarm, "cleared", transition.at, severity=alarm.severity,
                      details={"value": transition.value})
    if alarm is None:
        alarm = repo.insert_alarm(conn, device_id=device.id, site_id=device.site_id,
                                  alarm_type=transition.alarm_type, rule_id=transition.rule_id,
                                  severity=severity, latching=transition.latching, at=transition.at,
                                  value=transition.value, message=transition.message,
                                  details=transition.details)
        return _event(conn, alarm, "raised", transition.at, severity=severity,
                      details={"value": transition.value, "rule": transition.rule_id, **transition.details})
    before = alarm
    alarm = repo.touch_alarm(conn, alarm_id=alarm.id, at=transition.at, value=transition.value, severity=severity)
    if not before.active:
        return _event(conn, alarm, "reactivated", transition.at, severity=alarm.severity,
                      details={"value": transition.value, "rule": transition.rule_id})
    if alarm.severity > before.severity:
        return _event(conn, alarm, "severity_raised", transition.at, severity=alarm.severity,
                      details={"from": before.severity, "value": transition.value})
    return None  # still active: DESIGN says never notify on "still active"


def _event(conn: Connection[Any], alarm: repo.AlarmRow, kind: str, at: datetime, *, severity: int,
           actor: str | None = None, details: dict[str, Any] | None = None, notify: bool = True) -> AlarmChange:
    event_id = repo.insert_event(conn, alarm_id=alarm.id, kind=kind, at=at, actor=actor, severity=severity,
                                 details=details)
    if notify:
        repo.insert_outbox(conn, alarm_id=alarm.id, event_id=event_id, kind=kind, severity=severity)
    log.info("alarm %s %s: %s on %s (%s)", alarm.id, kind, alarm.type, alarm.device_id,
             Severity(severity).label)
    return AlarmChange(alarm.id, alarm.device_id, alarm.type, kind, severity)


def acknowledge(conn: Connection[Any], *, alarm_id: int, actor: str, now: datetime | None = None) -> repo.AlarmRow:
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


def resolve(conn: Connection[Any], *, alarm_id: int, actor: str, disposition: Disposition, note: str | None,
            now: datetime | None = None) -> repo.AlarmRow:
    """Close the alarm with a disposition after the person has been on site."""
    alarm = repo.lock_alarm(conn, alarm_id=alarm_id)
    if alarm is None:
        raise NotFoundError(f"alarm {alarm_id} does not exist")
    if alarm.closed_at is not None:
        raise ConflictError(f"alarm {alarm_id} was already resolved by {alarm.closed_by}")
    if alarm.latching and alarm.active:
        raise ConflictError(f"alarm {alarm_id} latches: it can be resolved only after its condition has cleared")
    at = now or datetime.now(UTC)
    alarm = repo.close_alarm(conn, alarm_id=alarm_id, actor=actor, at=at, disposition=disposition.value,
                             note=note)
    _event(conn, alarm, "resolved", at, severity=alarm.severity, actor=actor,
           details={"disposition": disposition.value, "note": note})
    from rules import score_service  # merchant score: verified hazards only (docs/score.md)

    score_service.on_alarm_resolved(conn, alarm=alarm)
    return alarm
