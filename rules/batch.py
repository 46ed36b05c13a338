"""A batch's alarm transitions, written set-based (issue 18).

The ingest evaluates a whole batch of readings first and hands every transition here, in the order the rules
produced them. flush() then writes them all with a fixed handful of statements, however many there are: one
query locks the open alarms of the (device, type) pairs involved, one INSERT creates the new alarms, one UPDATE
brings the existing ones to their new state, one statement appends their events and the outbox rows that
reference them (in order: event ids, and so outbox ids, ascend in transition order), and one NOTIFY wakes
notify. The guarantees stay: one open alarm per (device, type) (the partial unique index; the batch holds its
devices' state locks, so no other batch writes these pairs), events in order per alarm, outbox rows on
transitions only, all in the batch's transaction (commit before ack), and redeliveries absorbed upstream.

What each transition means for an alarm is decided here in memory (fold), exactly as record_transition decides
it row by row: a clear of an active alarm clears it; a raise with no open alarm raises one; any other transition
on an open alarm touches it (last seen, count, value, peak, severity only up) and is "reactivated" if it was
cleared or "severity_raised" if its severity rose; repeats are never a transition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import Connection

from core.domain import Alarm, Device
from rules import repo
from rules.engine import Transition


@dataclass(slots=True)
class Pending:
    """One transition as the rules produced it, with what its after-effects need."""

    device: Device
    transition: Transition
    repeats: int
    rules: dict[str, Any]  # the device's rule state (clear confirmations read it)


@dataclass(slots=True)
class Written:
    """A transition that changed an alarm: the event kind, and the pending transition that made it."""

    alarm_id: int
    kind: str
    severity: int
    pending: Pending


@dataclass(slots=True)
class _Draft:
    """An alarm's state as the batch folds its transitions into it (existing row or a new one)."""

    device: Device
    alarm_type: str
    alarm: Alarm | None  # the locked open row; None for an alarm this batch raises
    rule_id: str = ""
    severity: int = 0
    active: bool = True
    latching: bool = False
    raised_at: datetime | None = None
    last_seen_at: datetime | None = None
    cleared_at: datetime | None = None
    value: float | None = None
    peak_value: float | None = None
    count: int = 1
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def of(cls, device: Device, alarm: Alarm) -> _Draft:
        return cls(
            device,
            alarm.type,
            alarm,
            alarm.rule_id,
            alarm.severity,
            alarm.active,
            alarm.latching,
            alarm.raised_at,
            alarm.last_seen_at,
            alarm.cleared_at,
            alarm.value,
            alarm.peak_value,
            alarm.count,
            alarm.message,
            alarm.details,
        )

    @property
    def open(self) -> bool:
        return self.alarm is not None or self.raised_at is not None

    def raise_new(self, t: Transition) -> None:
        self.rule_id, self.severity, self.active, self.latching = t.rule_id, int(t.severity), True, t.latching
        self.raised_at = self.last_seen_at = t.at
        self.value = self.peak_value = t.value
        self.message, self.details, self.changed = t.message, t.details, True

    def touch(self, t: Transition, repeats: int) -> None:
        """UPDATE_ALARM_SEEN's arithmetic, in memory."""
        assert self.last_seen_at is not None  # noqa: S101 - an open alarm has been seen
        self.last_seen_at = max(self.last_seen_at, t.at)
        self.count += repeats
        self.value = t.value
        if t.value is not None:
            self.peak_value = t.value if self.peak_value is None else max(self.peak_value, t.value)
        self.severity = max(self.severity, int(t.severity))
        if not self.active:
            self.cleared_at = None
        self.active, self.changed = True, True

    def clear(self, at: datetime) -> None:
        self.active, self.cleared_at, self.changed = False, at, True


class AlarmBatch:
    """Collects a batch's transitions (add) and writes them set-based (flush); see the module docstring."""

    def __init__(self) -> None:
        self.pending: list[Pending] = []

    def add(self, device: Device, transition: Transition, *, repeats: int, rules: dict[str, Any]) -> None:
        self.pending.append(Pending(device, transition, repeats, rules))

    def flush(self, conn: Connection[Any]) -> tuple[list[Written], dict[tuple[str, str], int]]:
        """Write every pending transition; returns the ones that changed an alarm (in order) and the open alarm id
        of every (device, type) the batch touched (for actions on holds)."""
        if not self.pending:
            return [], {}
        keys = {(p.device.id, p.transition.alarm_type) for p in self.pending}
        locked = {(a.device_id, a.type): a for a in repo.lock_open_alarms(conn, keys=sorted(keys))}
        drafts: dict[tuple[str, str], _Draft] = {}
        events: list[tuple[tuple[str, str], str, datetime, int, dict[str, Any], Pending]] = []
        for p in self.pending:
            t = p.transition
            key = (p.device.id, t.alarm_type)
            draft = drafts.get(key)
            if draft is None:
                found = locked.get(key)
                draft = drafts[key] = _Draft.of(p.device, found) if found else _Draft(p.device, t.alarm_type, None)
            event = _fold(draft, t, p.repeats)
            if event is not None:
                kind, severity, details = event
                events.append((key, kind, t.at, severity, details, p))
        ids = {key: d.alarm.id for key, d in drafts.items() if d.alarm is not None}
        new = [d for d in drafts.values() if d.alarm is None and d.open]
        ids.update(repo.insert_alarms(conn, rows=[_insert_row(d) for d in new]))
        repo.update_alarms(
            conn,
            rows=[
                _update_row(ids[(d.device.id, d.alarm_type)], d)
                for d in drafts.values()
                if d.alarm is not None and d.changed
            ],
        )
        repo.append_events(
            conn,
            rows=[
                {"alarm_id": ids[key], "at": at, "kind": kind, "severity": severity, "details": details}
                for key, kind, at, severity, details, _ in events
            ],
        )
        written = [Written(ids[key], kind, severity, p) for key, kind, _, severity, _, p in events]
        return written, ids


def _fold(d: _Draft, t: Transition, repeats: int) -> tuple[str, int, dict[str, Any]] | None:
    """Apply one transition to the draft; the event it makes (kind, severity, details), or None for a repeat or a
    clear of an alarm that is not active."""
    if t.kind == "clear":
        if not d.open or not d.active:
            return None
        d.clear(t.at)
        return "cleared", d.severity, {"value": t.value, **t.details}
    if not d.open:
        d.raise_new(t)
        return "raised", d.severity, {"value": t.value, "rule": t.rule_id, **t.details}
    was_active, before = d.active, d.severity
    d.touch(t, repeats)
    if not was_active:
        return "reactivated", d.severity, {"value": t.value, "rule": t.rule_id}
    if d.severity > before:
        return "severity_raised", d.severity, {"from": before, "value": t.value, **t.details}
    return None


def _insert_row(d: _Draft) -> dict[str, Any]:
    return {
        "device_id": d.device.id,
        "site_id": d.device.site_id,
        "type": d.alarm_type,
        "rule_id": d.rule_id,
        "severity": d.severity,
        "active": d.active,
        "latching": d.latching,
        "raised_at": d.raised_at,
        "last_seen_at": d.last_seen_at,
        "cleared_at": d.cleared_at,
        "value": d.value,
        "peak_value": d.peak_value,
        "count": d.count,
        "message": d.message,
        "details": d.details,
    }


def _update_row(alarm_id: int, d: _Draft) -> dict[str, Any]:
    return {
        "id": alarm_id,
        "severity": d.severity,
        "active": d.active,
        "last_seen_at": d.last_seen_at,
        "cleared_at": d.cleared_at,
        "value": d.value,
        "peak_value": d.peak_value,
        "count": d.count,
    }
