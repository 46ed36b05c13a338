"""Issue 20, must show 2: every message carries its recipient's own signed, single-alarm, expiring link that opens
the alarm on a phone and acknowledges it in one tap without a token; the alarm page offers acknowledge and resolve
to anyone whose scope includes it. Hostile: tampered signature, another alarm, expired, revoked or deactivated
recipient, replay after resolution, CSRF on the page forms, guessing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from core import actionlink
from core.settings import Settings
from notify.worker import NotifyWorker
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.support import Receiver, wait_for
from tests.test_pages import login

PUBLIC = "https://testserver"  # Secure cookies outside the demo (issue 23)
LINK_RE = re.compile(re.escape(PUBLIC) + r"/alarms/(\d+)/link/([A-Za-z0-9._:~-]+)")


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded.model_copy(update={"public_url": PUBLIC}), hierarchy=True) as e:
        yield e


def key_for(env: ApiEnv, alarm_id: int, who: str, *, kind: str = "worker", at: datetime | None = None) -> str:
    return actionlink.sign(
        env.settings.secret_key.get_secret_value(),
        subject="alarm",
        subject_id=alarm_id,
        kind=kind,  # type: ignore[arg-type]
        recipient_id=who,
        issued_at=at or datetime.now(UTC),
    )


def link_path(alarm_id: int, key: str) -> str:
    return f"/alarms/{alarm_id}/link/{key}"


def page_csrf(html: str) -> str:
    found = re.search(r'id="ack-form">\s*<input type="hidden" name="csrf" value="([^"]+)"', html) or re.search(
        r'id="resolve-form">\s*<input type="hidden" name="csrf" value="([^"]+)"', html
    )
    assert found, "the page offers the forms"
    return found.group(1)


def alarm_row(env: ApiEnv, alarm_id: int) -> dict[str, object]:
    r = env.client.get(f"/api/v1/alarms/{alarm_id}", headers=env.headers("admin"))
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def anonymous(env: ApiEnv) -> TestClient:
    """A phone that has never logged in."""
    return TestClient(env.app, base_url=PUBLIC)


def open_alarm(env: ApiEnv) -> int:
    with env.conn() as conn, conn.transaction():
        return raise_alarm(conn, "gas-1")


def test_every_message_carries_the_recipients_own_link_and_one_tap_acknowledges(
    env: ApiEnv, receiver: Receiver
) -> None:
    """A real delivery: the worker's message carries their own link (the stored text keeps the plain URL); opening
    it on a phone that never logged in and tapping once acknowledges as that worker."""
    notify = NotifyWorker(env.settings)
    notify.start()
    try:
        wait_for(notify.is_ready, what="notify listening")
        alarm_id = open_alarm(env)
        w1 = wait_for(lambda: receiver.for_path("w1"), what="w1's message")[0]["message"]
    finally:
        notify.stop()
    found = LINK_RE.search(w1)
    assert found, w1
    assert int(found.group(1)) == alarm_id and found.group(2).startswith("w~w1~")
    assert "确认：" in w1, "a worker's link is for acknowledging"
    with psycopg.connect(env.settings.dsn) as conn:
        stored = [r[0] for r in conn.execute("SELECT body FROM notification WHERE alarm_id = %s", (alarm_id,))]
    assert stored and all("/link/" not in body and f"{PUBLIC}/alarms/{alarm_id}" in body for body in stored), (
        "the stored message never holds a usable link"
    )

    phone = anonymous(env)
    page = phone.get(link_path(alarm_id, found.group(2)))
    assert page.status_code == 200 and 'id="ack-form"' in page.text and 'id="resolve-form"' in page.text
    assert alarm_row(env, alarm_id)["acknowledged"] is False, "opening a link changes nothing (chat previews)"
    tapped = phone.post(
        link_path(alarm_id, found.group(2)) + "/ack", data={"csrf": page_csrf(page.text)}, follow_redirects=True
    )
    assert tapped.status_code == 200 and 'id="done"' in tapped.text and 'id="acked-by"' in tapped.text
    row = alarm_row(env, alarm_id)
    assert (row["acknowledged"], row["acknowledged_by"]) == (True, "w1"), "acknowledging through it records who"
    assert "gw_session" not in phone.cookies, "a link opens no session"


def test_the_link_grants_one_alarm_and_nothing_else(env: ApiEnv) -> None:
    a1 = open_alarm(env)
    with env.conn() as conn, conn.transaction():
        a2 = raise_alarm(conn, "gas-2")
    key = key_for(env, a1, "w1")
    phone = anonymous(env)
    assert phone.get(link_path(a1, key)).status_code == 200
    # the same key under another alarm's URL: refused (the alarm id is signed)
    r = phone.get(link_path(a2, key))
    assert r.status_code == 403 and "not valid for this alarm" in r.text
    assert phone.post(link_path(a2, key) + "/ack", data={"csrf": "x"}).status_code == 403
    # nothing else opens with it: the board, the plain alarm page, the API
    assert phone.get("/board", follow_redirects=False).status_code == 303
    assert phone.get(f"/alarms/{a1}", follow_redirects=False).status_code == 303
    assert phone.get(f"/api/v1/alarms/{a1}").status_code == 401
    assert alarm_row(env, a2)["acknowledged"] is False


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"), id="signature"),
        pytest.param(lambda k: k.replace("w~w1~", "w~w2~"), id="recipient"),
        pytest.param(lambda k: k.replace("w~w1~", "m~w1~"), id="recipient-kind"),
        pytest.param(lambda k: "~".join([*k.split("~")[:2], "zzzzzz", k.split("~")[3]]), id="issue-time"),
        pytest.param(lambda k: k[:20], id="cut-short"),
        pytest.param(lambda _k: "w~w1~0~" + "A" * 32, id="forged"),
        pytest.param(lambda k: k + "%0A", id="trailing-newline"),
    ],
)
def test_a_tampered_link_is_refused(env: ApiEnv, tamper: object) -> None:
    alarm_id = open_alarm(env)
    key = key_for(env, alarm_id, "w1")
    bad = tamper(key)  # type: ignore[operator]
    phone = anonymous(env)
    r = phone.get(link_path(alarm_id, bad))
    assert r.status_code in (403, 404), r.text
    r = phone.post(link_path(alarm_id, bad) + "/ack", data={"csrf": "x"})
    assert r.status_code in (403, 404)
    assert alarm_row(env, alarm_id)["acknowledged"] is False


def test_an_expired_link_is_refused(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    ttl = timedelta(hours=env.settings.link_ttl_h)
    old = key_for(env, alarm_id, "w1", at=datetime.now(UTC) - ttl - timedelta(seconds=5))
    r = anonymous(env).get(link_path(alarm_id, old))
    assert r.status_code == 403 and "expired" in r.text
    almost = key_for(env, alarm_id, "w1", at=datetime.now(UTC) - ttl + timedelta(minutes=1))
    assert anonymous(env).get(link_path(alarm_id, almost)).status_code == 200
    future = key_for(env, alarm_id, "w1", at=datetime.now(UTC) + timedelta(hours=1))
    assert anonymous(env).get(link_path(alarm_id, future)).status_code == 403


def test_revoked_and_deactivated_recipients_links_are_refused(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    before = key_for(env, alarm_id, "w1", at=datetime.now(UTC) - timedelta(seconds=2))
    phone = anonymous(env)
    assert phone.get(link_path(alarm_id, before)).status_code == 200
    # a lost phone: the admin revokes w1's links (a community admin only within their communities)
    assert env.client.post("/api/v1/admin/workers/w9/revoke-links", headers=env.headers("cadmin")).status_code == 404
    r = env.client.post("/api/v1/admin/workers/w1/revoke-links", headers=env.headers("cadmin"))
    assert r.status_code == 200 and r.json()["recipient_id"] == "w1"
    r = phone.get(link_path(alarm_id, before))
    assert r.status_code == 403 and "revoked" in r.text
    assert phone.post(link_path(alarm_id, before) + "/ack", data={"csrf": "x"}).status_code == 403
    later = key_for(env, alarm_id, "w1", at=datetime.now(UTC) + timedelta(seconds=2))
    assert phone.get(link_path(alarm_id, later)).status_code == 200, "later messages carry working links"
    # a deactivated worker's links stop at once
    worker = env.client.get("/api/v1/admin/workers/w1", headers=env.headers("admin")).json()
    worker.pop("id")
    assert (
        env.client.put("/api/v1/admin/workers/w1", headers=env.headers("admin"), json=worker | {"active": False})
    ).status_code == 200
    r = phone.get(link_path(alarm_id, later))
    assert r.status_code == 403 and "no longer active" in r.text
    assert alarm_row(env, alarm_id)["acknowledged"] is False


def test_replay_after_resolution_is_refused(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    key = key_for(env, alarm_id, "w1")
    phone = anonymous(env)
    csrf = page_csrf(phone.get(link_path(alarm_id, key)).text)
    r = env.client.post(
        f"/api/v1/alarms/{alarm_id}/resolve", headers=env.headers("w1"), json={"disposition": "false_alarm"}
    )
    assert r.status_code == 200
    for action, data in (("ack", {}), ("resolve", {"disposition": "real_hazard"})):
        r = phone.post(link_path(alarm_id, key) + f"/{action}", data={"csrf": csrf, **data})
        assert r.status_code == 409 and "already resolved" in r.text
    row = alarm_row(env, alarm_id)
    assert (row["acknowledged"], row["disposition"], row["closed_by"]) == (True, "false_alarm", "w1")
    page = phone.get(link_path(alarm_id, key))
    assert page.status_code == 200 and 'id="alarm-actions"' not in page.text, "a closed alarm offers nothing"
    # a new alarm of the same device is another alarm: the old link does not open it
    new_id = open_alarm(env)
    assert new_id != alarm_id
    assert phone.get(link_path(new_id, key)).status_code == 403


def test_link_forms_need_their_csrf_token_and_our_origin(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    key = key_for(env, alarm_id, "w1")
    phone = anonymous(env)
    csrf = page_csrf(phone.get(link_path(alarm_id, key)).text)
    assert phone.post(link_path(alarm_id, key) + "/ack", data={}).status_code == 403
    assert phone.post(link_path(alarm_id, key) + "/ack", data={"csrf": "forged"}).status_code == 403
    other = page_csrf(phone.get(link_path(alarm_id, key_for(env, alarm_id, "lead1"))).text)
    assert phone.post(link_path(alarm_id, key) + "/ack", data={"csrf": other}).status_code == 403, (
        "another link's token"
    )
    r = phone.post(link_path(alarm_id, key) + "/ack", data={"csrf": csrf}, headers={"Origin": "http://evil.test"})
    assert r.status_code == 403
    assert alarm_row(env, alarm_id)["acknowledged"] is False
    r = phone.post(link_path(alarm_id, key) + "/resolve", data={"csrf": csrf, "disposition": "test", "note": "drill"})
    assert r.status_code == 200 and 'id="done"' in r.text
    row = alarm_row(env, alarm_id)
    assert (row["disposition"], row["closed_by"]) == ("test", "w1")


def test_a_merchants_link_opens_the_alarm_but_does_not_acknowledge(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    key = key_for(env, alarm_id, "m1", kind="merchant")
    phone = anonymous(env)
    page = phone.get(link_path(alarm_id, key))
    assert page.status_code == 200 and 'id="alarm-actions"' not in page.text
    csrf = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
    assert csrf
    r = phone.post(link_path(alarm_id, key) + "/ack", data={"csrf": csrf.group(1)})
    assert r.status_code == 403 and "workers" in r.text
    assert alarm_row(env, alarm_id)["acknowledged"] is False


def test_a_link_works_for_whom_it_was_sent_even_outside_their_usual_scope(env: ApiEnv) -> None:
    """An on-call worker of another micro-grid is asked to act (notify's fallback): the message is the authority."""
    alarm_id = open_alarm(env)  # mg1: w2 covers mg2 and cannot see it with a token
    assert env.client.get(f"/api/v1/alarms/{alarm_id}", headers=env.headers("w2")).status_code == 404
    key = key_for(env, alarm_id, "w2")
    phone = anonymous(env)
    csrf = page_csrf(phone.get(link_path(alarm_id, key)).text)
    assert phone.post(link_path(alarm_id, key) + "/ack", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert alarm_row(env, alarm_id)["acknowledged_by"] == "w2"


def test_guessing_links_is_rate_limited(env: ApiEnv) -> None:
    alarm_id = open_alarm(env)
    phone = anonymous(env)
    for _ in range(10):
        assert phone.get(link_path(alarm_id, key_for(env, alarm_id, "w1")[:-2] + "xx")).status_code == 403
    r = phone.get(link_path(alarm_id, key_for(env, alarm_id, "w1")))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_the_alarm_page_offers_acknowledge_and_resolve_to_anyone_in_scope(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        a2 = raise_alarm(conn, "gas-2")  # mg2, grid g1
    leader = TestClient(env.app, base_url=PUBLIC)
    csrf = login(leader, env.tokens["lead1"])
    page = leader.get(f"/alarms/{a2}")
    assert page.status_code == 200 and 'id="ack-form"' in page.text and 'id="resolve-form"' in page.text
    # CSRF on the page's forms: none, a forged one, another origin
    assert leader.post(f"/alarms/{a2}/ack", follow_redirects=False).status_code == 403
    assert leader.post(f"/alarms/{a2}/ack", data={"csrf": "forged"}, follow_redirects=False).status_code == 403
    r = leader.post(
        f"/alarms/{a2}/ack", data={"csrf": csrf}, headers={"Origin": "http://evil.test"}, follow_redirects=False
    )
    assert r.status_code == 403
    assert alarm_row(env, a2)["acknowledged"] is False
    r = leader.post(f"/alarms/{a2}/ack", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/alarms/{a2}?done=ack"
    assert alarm_row(env, a2)["acknowledged_by"] == "lead1"
    page = leader.get(f"/alarms/{a2}")
    assert 'id="ack-form"' not in page.text and 'id="resolve-form"' in page.text and "lead1" in page.text
    r = leader.post(
        f"/alarms/{a2}/resolve",
        data={"csrf": csrf, "disposition": "real_hazard", "note": "valve"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert alarm_row(env, a2)["closed_by"] == "lead1"
    # the other grid's leader cannot open it, the merchant of another site neither; a merchant gets no buttons
    lead2 = TestClient(env.app, base_url=PUBLIC)
    login(lead2, env.tokens["lead2"])
    assert lead2.get(f"/alarms/{a2}").status_code == 404
    a1 = open_alarm(env)
    shop = TestClient(env.app, base_url=PUBLIC)
    login(shop, env.tokens["m1"])
    page = shop.get(f"/alarms/{a1}")
    assert page.status_code == 200 and 'id="alarm-actions"' not in page.text


def test_links_sent_before_field_links_existed_still_open_their_alarm(env: ApiEnv) -> None:
    """core/actionlink.py signs every kind of item now; an alarm's signed message is the one alarm links always had,
    so a message sent by the previous release keeps working for its whole lifetime (and no other kind's key is one)."""
    alarm_id = open_alarm(env)
    iat = actionlink._b36(int(datetime.now(UTC).timestamp()))
    message = f"gridwatch-alarm-link\x00{alarm_id}\x00w\x00w1\x00{iat}".encode()
    digest = hmac.new(env.settings.secret_key.get_secret_value().encode(), message, hashlib.sha256).digest()
    old_key = f"w~w1~{iat}~" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]
    assert old_key == key_for(env, alarm_id, "w1", at=datetime.fromtimestamp(int(iat, 36), UTC))
    assert anonymous(env).get(link_path(alarm_id, old_key)).status_code == 200
    for other in ("resident_report", "drill", "work_order"):
        foreign = actionlink.sign(
            env.settings.secret_key.get_secret_value(),
            subject=other,
            subject_id=alarm_id,
            kind="worker",
            recipient_id="w1",
            issued_at=datetime.now(UTC),
        )
        r = anonymous(env).get(link_path(alarm_id, foreign))
        assert r.status_code == 403 and "not valid for this alarm" in r.text, other
