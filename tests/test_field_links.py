"""Issue 21: the signed link in field's messages. A resident report, a drill or an overdue work order reaches the
workers routing chose — also an on-call worker of another micro-grid, whose token does not see the item — and
their message carries their own link that opens that one item on a phone and acts on it without a token, exactly
as an alarm's does (core/actionlink.py; tests/test_alarm_links.py for alarms). Hostile: another item's key, a key
of another kind of item with the same id, tampered, expired, future, revoked and deactivated links, a merchant's
key, CSRF, a scheduled drill before its time, nothing beyond the item, replay after the item is closed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from fastapi.testclient import TestClient

from api import auth
from api.ratelimit import FailureLimiter
from core import actionlink
from core.settings import Settings
from field import report_repo, report_service
from field import service as field_service
from field.repo import Scope
from field.schemas import WorkOrderCreate
from field.worker import FieldWorker
from notify.delivery import Sender
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.field_helpers import jpeg, png
from tests.support import Receiver

PUBLIC = "https://testserver"  # Secure cookies outside the demo (issue 23)
LINK_RE = re.compile(re.escape(PUBLIC) + r"/(resident-reports|drills|work-orders)/(\d+)/link/([A-Za-z0-9._:~-]+)")
SUBJECTS: tuple[actionlink.Subject, ...] = ("alarm", "resident_report", "drill", "work_order")


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded.model_copy(update={"public_url": PUBLIC}), hierarchy=True) as e:
        yield e


def secret(env: ApiEnv) -> str:
    return env.settings.secret_key.get_secret_value()


def key_for(
    env: ApiEnv,
    subject: actionlink.Subject,
    item_id: int,
    who: str = "w1",
    *,
    kind: actionlink.RecipientKind = "worker",
    at: datetime | None = None,
) -> str:
    return actionlink.sign(
        secret(env),
        subject=subject,
        subject_id=item_id,
        kind=kind,
        recipient_id=who,
        issued_at=at or datetime.now(UTC),
    )


def path_of(subject: actionlink.Subject, item_id: int, key: str) -> str:
    return f"/{actionlink.PATHS[subject]}/{item_id}/link/{key}"


def phone(env: ApiEnv) -> TestClient:
    """A phone that has never logged in."""
    return TestClient(env.app, base_url=PUBLIC)


def form_csrf(html: str) -> str:
    found = re.search(r'<input type="hidden" name="csrf" value="([^"]+)"', html)
    assert found, "the page offers its forms"
    return found.group(1)


def send_for_real(sender: Sender) -> Any:
    return lambda urls, title, body, who: [(x.ok, x.detail) for x in sender.send(urls, title, body, recipient=who)]


def deliver(env: ApiEnv, *, links: bool = True, now: datetime | None = None) -> int:
    """Field's deliverer as the field part runs it, through apprise to the test receiver."""
    signer = actionlink.Signer(secret(env), PUBLIC) if links else None
    sender = Sender(timeout_s=2, deadline_s=5)
    try:
        with env.conn() as conn, conn.transaction():
            return field_service.deliver_notices(
                conn, send=send_for_real(sender), now=now or datetime.now(UTC), links=signer
            )
    finally:
        sender.close()


def shift(conn: psycopg.Connection[Any], *, hours_from_now: int) -> str:
    """A daily two-hour roster starting this many hours from now in c1's local time."""
    (tz,) = conn.execute("SELECT timezone FROM community WHERE id = 'c1'").fetchone() or ("UTC",)
    start = datetime.now(ZoneInfo(tz)) + timedelta(hours=hours_from_now)
    return f"Mon-Sun {start:%H:%M}-{start + timedelta(hours=2):%H:%M}"


def covering_worker_off_duty(env: ApiEnv, receiver: Receiver) -> None:
    """mg2's worker w2 is off duty; w1 (mg1, same grid) is on call: the on-call fallback picks w1 for mg2, whose
    sites w1's token does not see."""
    with env.conn() as conn, conn.transaction():
        conn.execute("UPDATE worker SET roster = %s WHERE id = 'w2'", (shift(conn, hours_from_now=6),))
        conn.execute("UPDATE worker SET on_call = true, notify_urls = ARRAY[%s] WHERE id = 'w1'", (receiver.url("w1"),))


def report_on_s2(env: ApiEnv, what: str = "Cardboard piled in stairwell 2", photo: bytes | None = None) -> int:
    with env.conn() as conn, conn.transaction():
        done = report_service.submit_report(
            conn,
            secret=secret(env),
            code=report_service.link_code(secret(env), "s2"),
            what=what,
            photo=photo,
            client=f"test-{what}",
        )
    return done.report_id


def report_row(env: ApiEnv, report_id: int) -> dict[str, Any]:
    r = env.client.get(f"/api/v1/resident-reports/{report_id}", headers=env.headers("admin"))
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def drill_now(env: ApiEnv, micro_grid: str = "mg2", at: datetime | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"micro_grid_id": micro_grid, "scenario": "gas leak"}
    if at is not None:
        body["at"] = at.isoformat()
    r = env.client.post("/api/v1/admin/drills", headers=env.headers("cadmin"), json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def drill_report(env: ApiEnv, drill_id: int) -> dict[str, Any]:
    r = env.client.get(f"/api/v1/drills/{drill_id}", headers=env.headers("cadmin"))
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def overdue_order(env: ApiEnv, site: str = "s2", **body: Any) -> int:
    """An order opened a day and an hour ago with a one-day deadline: past due by an hour (step 1 only)."""
    with env.conn() as conn, conn.transaction():
        order = field_service.open_work_order(
            conn,
            body=WorkOrderCreate.model_validate(
                {"site_id": site, "kind": "other", "title": "Exit blocked by bikes", "severity": 1, **body}
            ),
            actor="w2",
            scope=Scope(),
            now=datetime.now(UTC) - timedelta(days=1, hours=1),
        )
    return order.id


def order_row(env: ApiEnv, order_id: int) -> dict[str, Any]:
    r = env.client.get(f"/api/v1/work-orders/{order_id}", headers=env.headers("admin"))
    assert r.status_code == 200
    return r.json()["order"]  # type: ignore[no-any-return]


def stored_bodies(env: ApiEnv) -> list[str]:
    with env.conn() as conn:
        return [str(r[0]) for r in conn.execute("SELECT body FROM field_notice ORDER BY id")]


# -- the worker picked by the on-call fallback acts through their message ----------------------------------------


def test_an_on_call_worker_of_another_micro_grid_takes_and_closes_the_report_from_the_message(
    env: ApiEnv, receiver: Receiver
) -> None:
    covering_worker_off_duty(env, receiver)
    # What a resident writes is never rewritten: a path of ours in it stays text, and no key is appended to it.
    report_id = report_on_s2(env, what="Gas smell, see https://evil.test/resident-reports/1", photo=jpeg())
    with env.conn() as conn:
        told = conn.execute("SELECT worker_id FROM field_notice WHERE resident_report_id = %s", (report_id,)).fetchall()
    assert told == [("w1",)], "the on-call worker of the neighbouring micro-grid is told"
    assert env.client.get(f"/api/v1/resident-reports/{report_id}", headers=env.headers("w1")).status_code == 404
    assert deliver(env) == 1

    (message,) = receiver.for_path("w1")
    found = LINK_RE.findall(message["message"])
    assert found and len(found) == 1, message
    ((kind, item, key),) = found
    assert (kind, int(item)) == ("resident-reports", report_id) and key.startswith("w~w1~")
    assert message["message"].endswith(f"{PUBLIC}/resident-reports/{report_id}/link/{key}")
    assert "evil.test/resident-reports/1/link" not in message["message"]
    assert all("/link/" not in body for body in stored_bodies(env)), "the stored message never holds a usable link"

    p = phone(env)
    page = p.get(path_of("resident_report", report_id, key) + "?lang=en")
    assert page.status_code == 200 and 'id="take-form"' in page.text and 'id="close-form"' in page.text
    assert 'id="link-for"' in page.text and "w1" in page.text
    assert page.headers["referrer-policy"] == "same-origin" and "no-store" in page.headers["cache-control"]
    assert report_row(env, report_id)["status"] == "new", "opening a link changes nothing (chat previews)"
    photo = re.search(r'<img src="([^"]+)"', page.text)
    assert photo and photo.group(1).startswith(path_of("resident_report", report_id, key) + "/photos/")
    assert p.get(photo.group(1)).content == jpeg(), "the resident's photo opens through the link"

    csrf = form_csrf(page.text)
    took = p.post(path_of("resident_report", report_id, key) + "/take", data={"csrf": csrf}, follow_redirects=False)
    assert took.status_code == 303, took.text
    row = report_row(env, report_id)
    assert (row["status"], row["taken_by"]) == ("taken", "w1")
    with env.conn() as conn, conn.transaction():
        climbed = report_service.escalate_untaken(conn, now=datetime.now(UTC) + timedelta(hours=3))
    assert climbed == 0, "a report taken through the link stops climbing"
    closed = p.post(
        path_of("resident_report", report_id, key) + "/close",
        data={"csrf": csrf, "outcome": "Ventilated; the gas company checked the pipe"},
        follow_redirects=True,
    )
    assert closed.status_code == 200 and 'data-status="closed"' in closed.text
    row = report_row(env, report_id)
    assert (row["status"], row["closed_by"], row["outcome"]) == (
        "closed",
        "w1",
        "Ventilated; the gas company checked the pipe",
    )
    # scope for everything else is as before: w1's token still does not see mg2's reports
    assert env.client.get("/api/v1/resident-reports", headers=env.headers("w1")).json() == []
    assert "gw_session" not in p.cookies, "a link opens no session"


def test_an_on_call_worker_of_another_micro_grid_acknowledges_the_drill_and_the_report_shows_it(
    env: ApiEnv, receiver: Receiver
) -> None:
    covering_worker_off_duty(env, receiver)
    drill = drill_now(env, "mg2")
    assert [r["worker_id"] for r in drill["responders"]] == ["w1"], "dispatched to the on-call worker of mg1"
    did = drill["id"]
    assert env.client.post(f"/api/v1/drills/{did}/ack", headers=env.headers("w1")).status_code == 404, (
        "out of w1's scope with a token"
    )
    # The field part as `serve` runs it (app/services.py hands it the signer when a public URL is set).
    sender = Sender(timeout_s=2, deadline_s=5)
    part = FieldWorker(
        env.settings.dsn, send=send_for_real(sender), links=actionlink.Signer(secret(env), env.settings.public_url)
    )
    try:
        with env.conn() as held:
            part.step(held)
    finally:
        sender.close()
    (message,) = receiver.for_path("w1")
    assert "演练 DRILL" in message["title"]
    ((kind, item, key),) = LINK_RE.findall(message["message"])
    assert (kind, int(item)) == ("drills", did)

    p = phone(env)
    page = p.get(path_of("drill", did, key) + "?lang=en")
    assert page.status_code == 200 and "This is a drill, not a real alarm" in page.text
    assert 'id="drill-ack"' in page.text and 'id="drill-arrived"' in page.text
    csrf = form_csrf(page.text)
    assert p.post(path_of("drill", did, key) + "/ack", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    report = drill_report(env, did)
    (w1,) = report["responders"]
    assert w1["worker_id"] == "w1" and w1["ack_s"] is not None and w1["ack_s"] >= 0
    assert report["acknowledged"] == 1 and report["median_ack_s"] is not None
    page = p.get(path_of("drill", did, key))
    assert 'id="drill-ack"' not in page.text and re.search(
        r'data-worker="w1"><td>[^<]*</td><td class="ack">\d+ s', page.text
    )
    assert p.post(path_of("drill", did, key) + "/arrived", data={"csrf": csrf}).status_code == 200
    assert drill_report(env, did)["arrived"] == 1
    # replay: each answer is recorded once
    r = p.post(path_of("drill", did, key) + "/ack", data={"csrf": csrf})
    assert r.status_code == 409
    assert drill_report(env, did)["responders"][0]["ack_s"] == w1["ack_s"]


def test_an_overdue_order_reaches_an_on_call_worker_who_inspects_it_through_the_link(
    env: ApiEnv, receiver: Receiver
) -> None:
    covering_worker_off_duty(env, receiver)
    order_id = overdue_order(env)
    with env.conn() as conn, conn.transaction():
        assert field_service.escalate_overdue(conn, now=datetime.now(UTC)) == 1
    assert deliver(env) == 1
    (message,) = receiver.for_path("w1")
    ((kind, item, key),) = LINK_RE.findall(message["message"])
    assert (kind, int(item)) == ("work-orders", order_id)
    assert env.client.get(f"/api/v1/work-orders/{order_id}", headers=env.headers("w1")).status_code == 404

    p = phone(env)
    base = path_of("work_order", order_id, key)
    page = p.get(base + "?lang=en")
    assert page.status_code == 200 and 'id="reinspect-form"' in page.text and 'id="photo-form"' in page.text
    csrf = form_csrf(page.text)
    action = re.search(r'action="([^"]+/photos\?csrf=[^"]+)"', page.text)
    assert action, "the camera form carries its token in its address"
    r = p.post(
        action.group(1).replace("&amp;", "&"), files={"photo": ("x.png", png(), "image/png")}, data={"stage": "found"}
    )
    assert r.status_code == 200 and 'id="done"' in r.text, r.text
    shown = re.search(r'<img src="([^"]+)"', r.text)
    assert shown and shown.group(1).startswith(base + "/photos/")
    assert p.get(shown.group(1)).content == png()
    r = p.post(base + "/reinspection", data={"csrf": csrf, "passed": "1", "note": "cleared"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    row = order_row(env, order_id)
    assert (row["status"], row["closed_by"]) == ("closed", "w1")
    # replay after the order is closed does nothing
    assert p.post(base + "/reinspection", data={"csrf": csrf, "passed": "0"}).status_code == 409
    assert p.post(base + "/fixed", data={"csrf": csrf}).status_code == 409
    assert (
        p.post(action.group(1).replace("&amp;", "&"), files={"photo": ("x.png", png(), "image/png")}).status_code == 409
    )
    assert order_row(env, order_id)["status"] == "closed"
    assert 'id="wo-actions"' not in p.get(base).text, "a closed order offers nothing"


def test_the_merchant_told_of_its_order_sees_it_and_reports_it_fixed_but_does_not_reinspect(
    env: ApiEnv, receiver: Receiver
) -> None:
    with env.conn() as conn, conn.transaction():
        conn.execute("UPDATE merchant SET notify_urls = ARRAY[%s] WHERE id = 'm1'", (receiver.url("m1"),))
        order = field_service.open_work_order(
            conn, body=WorkOrderCreate(site_id="s1", kind="blocked_exit"), actor="w1", scope=Scope()
        )
    assert deliver(env) == 1
    (message,) = receiver.for_path("m1")
    ((kind, item, key),) = LINK_RE.findall(message["message"])
    assert (kind, int(item), key[:5]) == ("work-orders", order.id, "m~m1~")
    p = phone(env)
    base = path_of("work_order", order.id, key)
    page = p.get(base)
    assert page.status_code == 200 and 'id="fixed-form"' in page.text and 'id="reinspect-form"' not in page.text
    csrf = form_csrf(page.text)
    r = p.post(base + "/reinspection", data={"csrf": csrf, "passed": "1"})
    assert r.status_code == 403 and "workers" in r.text
    assert p.post(base + "/fixed", data={"csrf": csrf, "note": "moved"}, follow_redirects=False).status_code == 303
    row = order_row(env, order.id)
    assert (row["status"], row["fixed_by"]) == ("fixed", "m1")
    # a merchant's key opens only its own orders (another party's order: 404, as with its token)
    with env.conn() as conn, conn.transaction():
        landlords = field_service.open_work_order(
            conn, body=WorkOrderCreate(site_id="s1", kind="blocked_exit", party="landlord"), actor="w1", scope=Scope()
        )
    assert (
        p.get(
            path_of("work_order", landlords.id, key_for(env, "work_order", landlords.id, "m1", kind="merchant"))
        ).status_code
        == 404
    )
    # and never a report or a drill (field sends merchants neither)
    report_id = report_on_s2(env)
    r = p.get(path_of("resident_report", report_id, key_for(env, "resident_report", report_id, "m1", kind="merchant")))
    assert r.status_code == 403


# -- hostile -------------------------------------------------------------------------------------------------------


def test_a_link_opens_its_one_report_and_nothing_else(env: ApiEnv) -> None:
    a = report_on_s2(env, "Report A")
    b = report_on_s2(env, "Report B", photo=jpeg())
    key = key_for(env, "resident_report", a)
    p = phone(env)
    page = p.get(path_of("resident_report", a, key))
    assert page.status_code == 200
    csrf = form_csrf(page.text)
    # A's key under B's address: refused (the id is signed), and acting with it changes nothing
    r = p.get(path_of("resident_report", b, key))
    assert r.status_code == 403 and "not valid for this resident report" in r.text
    assert p.post(path_of("resident_report", b, key) + "/take", data={"csrf": csrf}).status_code == 403
    assert report_row(env, b)["status"] == "new"
    # B's photo through A's link: not A's photo
    (b_photo,) = report_row(env, b)["photos"]
    assert p.get(path_of("resident_report", a, key) + "/photos/" + b_photo.rsplit("/", 1)[1]).status_code == 404
    # nothing else opens with it: lists, the plain pages, the API
    for page_path in ("/resident-reports", f"/resident-reports/{a}", "/work-orders", "/drills", "/board"):
        assert p.get(page_path, follow_redirects=False).status_code == 303, page_path
    for api_path in ("/api/v1/resident-reports", f"/api/v1/resident-reports/{a}", "/api/v1/drills"):
        assert p.get(api_path).status_code == 401, api_path
    assert "gw_session" not in p.cookies


def test_a_key_for_one_kind_of_item_never_opens_another_kind_with_the_same_id(env: ApiEnv) -> None:
    """An alarm's key on a report, drill or work order with the same number, and every other pair: refused."""
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-1")
    items: dict[actionlink.Subject, int] = {
        "alarm": alarm_id,
        "resident_report": report_on_s2(env),
        "drill": drill_now(env, "mg1")["id"],
        "work_order": overdue_order(env, site="s1", party="community"),
    }
    # Fresh database: every kind's first item is number 1, so each key below names an item that exists.
    assert set(items.values()) == {1}, items
    p = phone(env)
    for subject, item_id in items.items():
        # invalid links count against the address (429 after 10): a fresh count per kind, tested below
        env.app.state.auth_limiter = FailureLimiter()
        assert p.get(path_of(subject, item_id, key_for(env, subject, item_id))).status_code == 200, subject
        for other in SUBJECTS:
            if other == subject:
                continue
            foreign = key_for(env, other, item_id)  # signed for `other` number item_id, shown at `subject`'s
            r = p.get(path_of(subject, item_id, foreign))
            assert r.status_code == 403 and "not valid for this" in r.text, (subject, other)
            assert p.post(path_of(subject, item_id, foreign) + "/ack", data={"csrf": "x"}).status_code in (
                403,
                404,
                405,
            )
    assert report_row(env, items["resident_report"])["status"] == "new"
    assert drill_report(env, items["drill"])["acknowledged"] == 0
    # guessing is bounded as for alarm links and tokens: the address is refused for a while, valid links too
    env.app.state.auth_limiter = FailureLimiter()
    report_id = items["resident_report"]
    for _ in range(10):
        assert p.get(path_of("resident_report", report_id, key_for(env, "drill", report_id))).status_code == 403
    r = p.get(path_of("resident_report", report_id, key_for(env, "resident_report", report_id)))
    assert r.status_code == 429 and "Retry-After" in r.headers


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), id="signature"),
        pytest.param(lambda k: k.replace("w~w1~", "w~w2~"), id="recipient"),
        pytest.param(lambda k: k.replace("w~w1~", "m~w1~"), id="recipient-kind"),
        pytest.param(lambda k: "~".join([*k.split("~")[:2], "zzzzzz", k.split("~")[3]]), id="issue-time"),
        pytest.param(lambda k: k[:20], id="cut-short"),
        pytest.param(lambda _k: "w~w1~0~" + "A" * 32, id="forged"),
    ],
)
@pytest.mark.parametrize("subject", ["resident_report", "drill", "work_order"])
def test_a_tampered_link_is_refused(env: ApiEnv, subject: actionlink.Subject, tamper: Any) -> None:
    item_id = {
        "resident_report": lambda: report_on_s2(env),
        "drill": lambda: drill_now(env, "mg1")["id"],
        "work_order": lambda: overdue_order(env, site="s1", party="community"),
    }[subject]()
    bad = tamper(key_for(env, subject, item_id))
    p = phone(env)
    assert p.get(path_of(subject, item_id, bad)).status_code in (403, 404)
    action = {"resident_report": "/take", "drill": "/ack", "work_order": "/fixed"}[subject]
    assert p.post(path_of(subject, item_id, bad) + action, data={"csrf": "x"}).status_code in (403, 404)
    if subject == "resident_report":
        assert report_row(env, item_id)["status"] == "new"
    elif subject == "drill":
        assert drill_report(env, item_id)["acknowledged"] == 0
    else:
        assert order_row(env, item_id)["status"] == "open"


def test_expired_and_future_links_are_refused(env: ApiEnv) -> None:
    report_id = report_on_s2(env)
    did = drill_now(env, "mg1")["id"]
    ttl = timedelta(hours=env.settings.link_ttl_h)
    p = phone(env)
    items: list[tuple[actionlink.Subject, int]] = [("resident_report", report_id), ("drill", did)]
    for subject, item_id in items:
        old = key_for(env, subject, item_id, at=datetime.now(UTC) - ttl - timedelta(seconds=5))
        r = p.get(path_of(subject, item_id, old))
        assert r.status_code == 403 and "expired" in r.text
        almost = key_for(env, subject, item_id, at=datetime.now(UTC) - ttl + timedelta(minutes=1))
        assert p.get(path_of(subject, item_id, almost)).status_code == 200
        future = key_for(env, subject, item_id, at=datetime.now(UTC) + timedelta(hours=1))
        assert p.get(path_of(subject, item_id, future)).status_code == 403
    old = key_for(env, "drill", did, at=datetime.now(UTC) - ttl - timedelta(seconds=5))
    assert p.post(path_of("drill", did, old) + "/ack", data={"csrf": auth_csrf(env, old)}).status_code == 403
    assert drill_report(env, did)["acknowledged"] == 0


def test_revoked_and_deactivated_workers_links_are_refused(env: ApiEnv) -> None:
    report_id = report_on_s2(env)
    did = drill_now(env, "mg1")["id"]
    earlier = datetime.now(UTC) - timedelta(seconds=2)
    report_key = key_for(env, "resident_report", report_id, at=earlier)
    drill_key = key_for(env, "drill", did, at=earlier)
    p = phone(env)
    assert p.get(path_of("resident_report", report_id, report_key)).status_code == 200
    assert p.get(path_of("drill", did, drill_key)).status_code == 200
    # a lost phone: every link sent to w1 before now stops, whatever its item
    assert env.client.post("/api/v1/admin/workers/w1/revoke-links", headers=env.headers("cadmin")).status_code == 200
    for path in (path_of("resident_report", report_id, report_key), path_of("drill", did, drill_key)):
        r = p.get(path)
        assert r.status_code == 403 and "revoked" in r.text
    r = p.post(path_of("drill", did, drill_key) + "/ack", data={"csrf": auth_csrf(env, drill_key)})
    assert r.status_code == 403 and "revoked" in r.text
    r = p.post(path_of("resident_report", report_id, report_key) + "/take", data={"csrf": auth_csrf(env, report_key)})
    assert r.status_code == 403 and "revoked" in r.text
    later = key_for(env, "drill", did, at=datetime.now(UTC) + timedelta(seconds=2))
    assert p.get(path_of("drill", did, later)).status_code == 200, "later messages carry working links"
    # a deactivated worker's links stop at once
    worker = env.client.get("/api/v1/admin/workers/w1", headers=env.headers("admin")).json()
    worker.pop("id")
    r = env.client.put("/api/v1/admin/workers/w1", headers=env.headers("admin"), json=worker | {"active": False})
    assert r.status_code == 200
    r = p.get(path_of("drill", did, later))
    assert r.status_code == 403 and "no longer active" in r.text
    assert p.post(path_of("drill", did, later) + "/ack", data={"csrf": auth_csrf(env, later)}).status_code == 403
    assert drill_report(env, did)["acknowledged"] == 0 and report_row(env, report_id)["status"] == "new"


def auth_csrf(env: ApiEnv, key: str) -> str:
    """The form token a link's page carries (derived from the link)."""
    return auth.link_csrf(secret(env), key)


def test_link_forms_need_their_token_and_our_origin(env: ApiEnv) -> None:
    report_id = report_on_s2(env)
    order_id = overdue_order(env, site="s1", party="community")
    key = key_for(env, "resident_report", report_id)
    p = phone(env)
    csrf = form_csrf(p.get(path_of("resident_report", report_id, key)).text)
    take = path_of("resident_report", report_id, key) + "/take"
    assert p.post(take, data={}).status_code == 403
    assert p.post(take, data={"csrf": "forged"}).status_code == 403
    other = auth_csrf(env, key_for(env, "resident_report", report_id, "lead1"))
    assert p.post(take, data={"csrf": other}).status_code == 403, "another link's token"
    assert p.post(take, data={"csrf": csrf}, headers={"Origin": "http://evil.test"}).status_code == 403
    assert report_row(env, report_id)["status"] == "new"
    # the camera form: refused before its body is read without the link's token in its address
    okey = key_for(env, "work_order", order_id)
    photos = path_of("work_order", order_id, okey) + "/photos"
    assert p.post(photos, files={"photo": ("x.png", png(), "image/png")}).status_code == 403
    assert (
        p.post(photos + "?csrf=" + auth_csrf(env, key), files={"photo": ("x.png", png(), "image/png")}).status_code
        == 403
    )
    assert (
        p.post(
            photos + "?csrf=" + auth_csrf(env, okey),
            files={"photo": ("x.png", png(), "image/png")},
            headers={"Origin": "http://evil.test"},
        ).status_code
        == 403
    )
    r = p.post(take, data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and report_row(env, report_id)["taken_by"] == "w1"


def test_a_scheduled_drill_stays_a_surprise_and_only_its_dispatched_workers_answer(env: ApiEnv) -> None:
    later = drill_now(env, "mg1", at=datetime.now(UTC) + timedelta(hours=2))["id"]
    assert phone(env).get(path_of("drill", later, key_for(env, "drill", later))).status_code == 404
    did = drill_now(env, "mg1")["id"]
    assert [r["worker_id"] for r in drill_report(env, did)["responders"]] == ["w1"]
    key = key_for(env, "drill", did, "w2")  # w2 was not dispatched to it
    p = phone(env)
    page = p.get(path_of("drill", did, key))
    assert page.status_code == 200 and 'id="drill-actions"' not in page.text
    r = p.post(path_of("drill", did, key) + "/ack", data={"csrf": auth_csrf(env, key)})
    assert r.status_code == 409 and "not dispatched to you" in r.text
    assert drill_report(env, did)["acknowledged"] == 0


def test_replay_after_the_report_is_closed_does_nothing(env: ApiEnv) -> None:
    report_id = report_on_s2(env)
    key = key_for(env, "resident_report", report_id)
    p = phone(env)
    csrf = form_csrf(p.get(path_of("resident_report", report_id, key)).text)
    r = env.client.post(
        f"/api/v1/resident-reports/{report_id}/close", headers=env.headers("w2"), json={"outcome": "Cleared"}
    )
    assert r.status_code == 200
    base = path_of("resident_report", report_id, key)
    assert p.post(base + "/take", data={"csrf": csrf}).status_code == 409
    assert p.post(base + "/close", data={"csrf": csrf, "outcome": "Something else"}).status_code == 409
    assert p.post(base + "/work-order", data={"csrf": csrf}).status_code == 409
    row = report_row(env, report_id)
    assert (row["status"], row["closed_by"], row["outcome"], row["work_order_id"]) == ("closed", "w2", "Cleared", None)
    page = p.get(base)
    assert page.status_code == 200 and 'id="rr-actions"' not in page.text, "a closed report offers nothing"


def test_a_report_made_a_work_order_through_the_link(env: ApiEnv) -> None:
    report_id = report_on_s2(env)
    key = key_for(env, "resident_report", report_id)
    p = phone(env)
    csrf = form_csrf(p.get(path_of("resident_report", report_id, key)).text)
    r = p.post(path_of("resident_report", report_id, key) + "/work-order", data={"csrf": csrf}, follow_redirects=True)
    assert r.status_code == 200 and 'id="rr-order"' in r.text
    row = report_row(env, report_id)
    assert (row["status"], row["taken_by"]) == ("taken", "w1") and row["work_order_id"] is not None
    assert order_row(env, row["work_order_id"])["opened_by"] == "w1"


def test_without_a_public_url_messages_name_the_page_and_carry_no_link(env: ApiEnv, receiver: Receiver) -> None:
    covering_worker_off_duty(env, receiver)
    report_id = report_on_s2(env)
    assert deliver(env, links=False) == 1
    (message,) = receiver.for_path("w1")
    assert message["message"].endswith(f"/resident-reports/{report_id}") and "/link/" not in message["message"]


def test_reports_with_photos_keep_them_behind_the_link(env: ApiEnv) -> None:
    """A report's photo opens through its own link only: not through another report's link, not without one."""
    a = report_on_s2(env, "A", photo=jpeg())
    with env.conn() as conn:
        (photo,) = report_repo.photo_ids(conn, report_id=a)
    b = report_on_s2(env, "B")
    p = phone(env)
    assert (
        p.get(path_of("resident_report", a, key_for(env, "resident_report", a)) + f"/photos/{photo}").status_code == 200
    )
    assert (
        p.get(path_of("resident_report", b, key_for(env, "resident_report", b)) + f"/photos/{photo}").status_code == 404
    )
    assert (
        p.get(path_of("resident_report", b, key_for(env, "resident_report", a)) + f"/photos/{photo}").status_code == 403
    )
    assert p.get(f"/api/v1/resident-reports/{a}/photos/{photo}").status_code == 401


def test_a_form_token_that_is_not_ascii_is_refused_not_a_server_error(env: ApiEnv) -> None:
    """Review 21: hmac.compare_digest raises TypeError on non-ASCII text, so a link's form (or its camera form's
    address) with such a token was a 500 with a traceback instead of the CSRF refusal."""
    report_id = report_on_s2(env)
    order_id = overdue_order(env, site="s1", party="community")
    key = key_for(env, "resident_report", report_id)
    p = phone(env)
    r = p.post(path_of("resident_report", report_id, key) + "/take", data={"csrf": "令牌é"})
    assert r.status_code == 403 and "CSRF" in r.text
    okey = key_for(env, "work_order", order_id)
    r = p.post(
        path_of("work_order", order_id, okey) + "/photos?csrf=%C3%A9", files={"photo": ("x.png", png(), "image/png")}
    )
    assert r.status_code == 403 and "CSRF" in r.text
    assert report_row(env, report_id)["status"] == "new"


def test_an_oversized_form_is_refused_before_it_is_read(env: ApiEnv) -> None:
    """Review 21: a page's urlencoded form (a link's too: no login in front of it) was read whole into memory and
    parsed before anything was checked, whatever its size. Our forms are small: a larger body is refused by its
    Content-Length (413) before it is read, and acts on nothing."""
    report_id = report_on_s2(env)
    key = key_for(env, "resident_report", report_id)
    p = phone(env)
    csrf = form_csrf(p.get(path_of("resident_report", report_id, key)).text)
    body = f"csrf={csrf}&pad=" + "a" * (1 << 20)
    r = p.post(
        path_of("resident_report", report_id, key) + "/take",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 413, r.status_code
    assert report_row(env, report_id)["status"] == "new"
    # a form of an ordinary size still works
    took = p.post(path_of("resident_report", report_id, key) + "/take", data={"csrf": csrf}, follow_redirects=False)
    assert took.status_code == 303
