"""Commissioning (issue 19): installing a device is not done until it has proved itself.

A worker or installer starts a check for a device (device page, `POST /api/v1/devices/{id}/commission`, or
`gridwatch device commission ID`). The device must report within the rule's window (COM-01/02 `within_s`, 10 min),
and a detector (gas, CO, smoke) must also give its test or alarm signal: the installer presses its test button and
the test flag (or the alarm flag) has to arrive through its bridge. The rules timer judges pending checks each tick:
passed, or failed with the reason. A device that never passes is "not commissioned" (listed on the admin and device
pages) and its silence is an alarm of its own (`not_commissioned`): raised when its check fails, or when a
registered device has not said a word for `grace_s` (offline is judged only for devices that have reported). A
passing check clears it, and resolves the alarms its test press raised (once cleared) with the disposition `test`
(RULES-REFERENCE 7.3.6: events in an installer window are tests, not incidents).

Evidence is what ingest stored: readings (and an `online` status) that arrived after the check began.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import Connection

from core.domain import Device, Disposition
from core.errors import ConflictError
from rules import service as rules_service
from rules.commissioning import repo
from rules.commissioning.repo import CheckRow, UncommissionedRow
from rules.engine import CheckEvidence, CommissioningRule, judge_commissioning
from rules.ruleset import RuleSet

log = logging.getLogger(__name__)

ALARM_TYPE = "not_commissioned"


@dataclass(frozen=True, slots=True)
class Commissioning:
    """A device's commissioning as a page shows it."""

    device_id: str
    commissioned: bool
    latest: CheckRow | None


def rule_for(ruleset: RuleSet, device: Device) -> CommissioningRule:
    """The commissioning rule that watches this device (its overrides applied)."""
    rule = next((r for r in ruleset.for_device(device) if isinstance(r, CommissioningRule)), None)
    if rule is None:
        raise ConflictError(f"no commissioning rule watches {device.id} ({device.kind.value}): nothing to check")
    return rule


def start_check(
    conn: Connection[Any],
    *,
    device: Device,
    by: str,
    ruleset: RuleSet,
    now: datetime,
    within_s: float | None = None,
) -> CheckRow:
    """Start a check (a check in progress is cancelled): the device has within_s to report and, if it is a
    detector, to give its test or alarm signal."""
    rule = rule_for(ruleset, device)
    window = within_s if within_s is not None else rule.within_s
    if window <= 0 or window > 24 * 3600:
        raise ConflictError("within: a check's window is between 1 s and 24 h")
    check = repo.start_check(
        conn,
        device_id=device.id,
        by=by,
        at=now,
        deadline=now + timedelta(seconds=window),
        needs_test=rule.needs_test(device),
    )
    log.info("commissioning check %s of %s started by %s (until %s)", check.id, device.id, by, check.deadline_at)
    return check


def get_checks(conn: Connection[Any], *, device_id: str, limit: int = 20) -> list[CheckRow]:
    """A device's checks, newest first."""
    return repo.get_checks(conn, device_id=device_id, limit=limit)


def states(conn: Connection[Any], *, device_ids: Sequence[str]) -> dict[str, Commissioning]:
    """Whether each device is commissioned (passed a check), with its latest check."""
    passed = repo.passed_devices(conn, device_ids=device_ids)
    latest = repo.latest_checks(conn, device_ids=device_ids)
    return {i: Commissioning(i, i in passed, latest.get(i)) for i in device_ids}


def uncommissioned(
    conn: Connection[Any], *, device_ids: Sequence[str] | None = None, limit: int = 200, offset: int = 0
) -> list[UncommissionedRow]:
    """Registered devices that never passed a check, with their latest check."""
    return repo.uncommissioned(conn, device_ids=device_ids, limit=limit, offset=offset)


def _evidence(conn: Connection[Any], check: CheckRow) -> CheckEvidence:
    first_reading, online_at, signal = repo.evidence(conn, device_id=check.device_id, since=check.started_at)
    reported = min((t for t in (first_reading, online_at) if t is not None), default=None)
    if signal is None:
        return CheckEvidence(reported, None, None)
    return CheckEvidence(reported, datetime.fromisoformat(signal[0]), signal[1])


def tick(
    conn: Connection[Any], *, devices: dict[str, Device], ruleset: RuleSet, now: datetime
) -> list[rules_service.AlarmChange]:
    """The timer's pass: judge the checks in progress, and raise not_commissioned for devices silent since they
    were registered."""
    changes: list[rules_service.AlarmChange] = []
    for check in repo.claim_pending(conn):
        device = devices.get(check.device_id)
        if device is not None:
            changes += _judge(conn, check=check, device=device, ruleset=ruleset, now=now)
    changes += _silent_since_installed(conn, devices=devices, ruleset=ruleset, now=now)
    return changes


def _judge(
    conn: Connection[Any], *, check: CheckRow, device: Device, ruleset: RuleSet, now: datetime
) -> list[rules_service.AlarmChange]:
    found = _evidence(conn, check)
    verdict = judge_commissioning(needs_test=check.needs_test, deadline=check.deadline_at, evidence=found, now=now)
    if verdict is None:
        return []
    status, reason = verdict
    done = repo.finish_check(
        conn,
        check_id=check.id,
        status=status,
        reported_at=found.reported_at,
        tested_at=found.tested_at,
        signal=found.signal,
        at=now,
        reason=reason,
    )
    if done is None:
        return []
    log.info("commissioning check %s of %s %s: %s", check.id, device.id, status, reason)
    rule = rule_for(ruleset, device)
    if status == "passed":
        _resolve_test_alarms(conn, check=done, device=device, now=now)
        t = rule.transition("clear", now, details={"check": check.id, "passed": reason})
    else:
        t = rule.transition("raise", now, details={"check": check.id, "why": reason})
        t.message = f"{rule.message} (check #{check.id} failed: {reason})"
    return rules_service.record(conn, device=device, transition=t)


def _resolve_test_alarms(conn: Connection[Any], *, check: CheckRow, device: Device, now: datetime) -> None:
    """The alarms the test press raised and that have cleared are tests, not incidents (RULES-REFERENCE 7.3.6)."""
    for alarm_id in repo.cleared_alarms_between(
        conn, device_id=device.id, since=check.started_at, until=now, except_type=ALARM_TYPE
    ):
        rules_service.resolve(
            conn,
            alarm_id=alarm_id,
            actor=f"commissioning check #{check.id}",
            disposition=Disposition.TEST,
            note=f"raised by the test press of commissioning check #{check.id} ({check.started_by})",
            now=now,
        )


def _silent_since_installed(
    conn: Connection[Any], *, devices: dict[str, Device], ruleset: RuleSet, now: datetime
) -> list[rules_service.AlarmChange]:
    """Devices registered grace_s ago that never said a word and never passed a check: an alarm each."""
    rules = [r for r in ruleset.rules if isinstance(r, CommissioningRule) and r.enabled]
    if not rules:
        return []
    shortest = min(r.grace_s for r in rules)
    changes: list[rules_service.AlarmChange] = []
    for device_id in repo.never_heard(conn, before=now - timedelta(seconds=shortest), alarm_type=ALARM_TYPE):
        device = devices.get(device_id)
        rule = (
            next((r for r in ruleset.for_device(device) if isinstance(r, CommissioningRule)), None) if device else None
        )
        if device is None or rule is None:
            continue
        t = rule.transition("raise", now, details={"why": "never reported since it was registered"})
        t.message = f"{rule.message} (registered, never reported: install it and run a commissioning check)"
        changes += rules_service.record(conn, device=device, transition=t)
    return changes
