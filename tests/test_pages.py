"""Pages: login to a cookie session (HttpOnly, SameSite=Strict), CSRF on every form post, security headers,
the board, alarm, device, score and admin pages in zh-CN and English."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from api.chart import svg_chart
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env, raise_alarm


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def login(client: TestClient, token: str) -> str:
    """Log in through the form; returns the page's CSRF token."""
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/board"}, follow_redirects=False)
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    assert "gw_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert token not in cookie, "the cookie carries a session id, never the token"
    page = client.get(r.headers["location"])
    meta = re.search(r'<meta name="csrf" content="([^"]+)"', page.text)
    assert meta and meta.group(1)
    return meta.group(1)


def test_login_board_and_one_tap_actions(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-1")
    client = TestClient(env.app, base_url="https://testserver")
    csrf = login(client, env.tokens["w1"])
    board = client.get("/board?lang=en")
    assert board.status_code == 200 and f'id="alarm-{alarm_id}"' in board.text and "Acknowledge" in board.text
    assert "确认接警" in client.get("/board?lang=zh-CN").text
    # a form post without the CSRF token, or from another origin, is refused
    assert client.post(f"/board/alarms/{alarm_id}/ack", follow_redirects=False).status_code == 403
    assert (
        client.post(
            f"/board/alarms/{alarm_id}/ack",
            data={"csrf": csrf},
            headers={"Origin": "http://evil.test"},
            follow_redirects=False,
        ).status_code
        == 403
    )
    assert client.post(f"/api/v1/alarms/{alarm_id}/ack").status_code == 403, "cookie + unsafe method needs CSRF"
    r = client.post(f"/board/alarms/{alarm_id}/ack", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    r = client.post(
        f"/board/alarms/{alarm_id}/resolve",
        data={"csrf": csrf, "disposition": "false_alarm", "note": "steam from the wok"},
        headers={"X-Requested-With": "fetch"},
    )
    assert r.status_code == 200 and r.json()["open"] is False
    detail = env.client.get(f"/api/v1/alarms/{alarm_id}/detail", headers=env.headers("w1")).json()
    assert (detail["alarm"]["disposition"], detail["note"]) == ("false_alarm", "steam from the wok")
    assert f'id="alarm-{alarm_id}"' not in client.get("/board").text
    # on site: record an inspection finding from the alarm page (the score service deducts per the policy)
    page = client.get(f"/alarms/{alarm_id}")
    assert 'id="finding-form"' in page.text and 'value="blocked_exit"' in page.text
    assert (
        client.post(f"/alarms/{alarm_id}/finding", data={"kind": "blocked_exit"}, follow_redirects=False).status_code
        == 403
    ), "CSRF applies here too"
    r = client.post(
        f"/alarms/{alarm_id}/finding",
        data={"csrf": csrf, "kind": "blocked_exit", "note": "boxes"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    found = env.client.get("/api/v1/merchants/m1/open", headers=env.headers("m1")).json()["findings"]
    assert [(f["kind"], f["found_by"], f["note"]) for f in found] == [
        ("blocked_exit", "w1", f"boxes (alarm {alarm_id})")
    ]
    # logging out ends the session
    assert client.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/board", follow_redirects=False).headers["location"].startswith("/login")


def test_login_rejects_bad_tokens_and_forged_forms(env: ApiEnv) -> None:
    client = TestClient(env.app, base_url="https://testserver")
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    bad = client.post("/login", data={"token": "gw_wrong", "csrf": csrf.group(1)}, follow_redirects=False)
    assert (
        bad.status_code == 401 and "unknown token" in bad.text and "gw_session" not in bad.headers.get("set-cookie", "")
    )
    fresh = TestClient(env.app, base_url="https://testserver")
    forged = fresh.post("/login", data={"token": env.tokens["w1"], "csrf": csrf.group(1)}, follow_redirects=False)
    assert forged.status_code == 403, "a login form posted without its own nonce cookie is refused"
    # an open redirect through ?next= is not possible
    r = client.post(
        "/login",
        data={
            "token": env.tokens["w1"],
            "csrf": re.search(r'name="csrf" value="([^"]+)"', bad.text).group(1),
            "next": "//evil.test/",
        },
        follow_redirects=False,
    )  # type: ignore[union-attr]
    assert r.headers["location"] == "/"


def test_security_headers_on_pages(env: ApiEnv) -> None:
    r = env.client.get("/login")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text and " style=" not in r.text, "nothing inline: the CSP forbids it"
    assert env.client.get("/static/board.js").status_code == 200


def test_pages_render_for_each_role(env: ApiEnv) -> None:
    now = datetime.now(UTC)
    with env.conn() as conn, conn.transaction():
        for i in range(30):
            conn.execute(
                "INSERT INTO reading (device_id, ts, seq, received_at, gas_lel) VALUES (%s, %s, %s, %s, %s)",
                ("gas-1", now - timedelta(minutes=30 - i), i, now, float(i % 7)),
            )
        alarm_id = raise_alarm(conn, "gas-1", at=now - timedelta(minutes=5))
    admin = env.client.get("/admin?lang=en", headers=env.headers("admin"))
    assert admin.status_code == 200 and 'id="kpi-grid-g1"' in admin.text and "gas-3" in admin.text
    device = env.client.get("/devices/gas-1", headers=env.headers("w1"))
    assert device.status_code == 200 and "<svg" in device.text and "<polyline" in device.text
    alarm = env.client.get(f"/alarms/{alarm_id}", headers=env.headers("m1"))
    assert alarm.status_code == 200 and "<polyline" in alarm.text and "raised" in alarm.text
    score = env.client.get("/score?lang=en", headers=env.headers("m1"))
    assert score.status_code == 200 and 'id="score-value">100<' in score.text
    assert env.client.get("/score?merchant=m1", headers=env.headers("w1")).status_code == 200
    assert env.client.get("/score?merchant=m1", headers=env.headers("w2")).status_code == 404
    home = env.client.get("/", headers=env.headers("m1"), follow_redirects=False)
    assert home.headers["location"] == "/score"


@pytest.mark.parametrize(
    ("points", "polyline"),
    [
        ([], False),
        ([(datetime(2026, 1, 1, tzinfo=UTC), None, 5.0, None)], True),
        ([(datetime(2026, 1, 1, tzinfo=UTC), 1.0, 2.0, 3.0), (datetime(2026, 1, 2, tzinfo=UTC), 2.0, 4.0, 9.0)], True),
        ([(datetime(2026, 1, 1, tzinfo=UTC), None, None, None)], False),
    ],
)
def test_svg_chart(points: list[tuple[datetime, float | None, float | None, float | None]], polyline: bool) -> None:
    svg = str(svg_chart(points, title="<gas & co>", unit="%LEL"))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert ("<polyline" in svg) is polyline
    assert "&lt;gas &amp; co&gt;" in svg and "<gas" not in svg, "titles are escaped"
