"""The work-order pages (issue 21) through the app with a session cookie: open from the form, a photo posted as
multipart with its CSRF token, "fixed", the re-inspection; forms without CSRF or from elsewhere are refused, and
another scope's order is a 404 page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env
from tests.field_helpers import jpeg
from tests.test_pages import login


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def test_a_worker_runs_an_order_through_the_pages(env: ApiEnv) -> None:
    client = TestClient(env.app, base_url="https://testserver")
    csrf = login(client, env.tokens["w1"])
    page = client.get("/work-orders?lang=en")
    assert page.status_code == 200 and 'id="new-order"' in page.text and 'value="s1"' in page.text
    assert 'value="s2"' not in page.text, "only the sites of one's micro-grids"
    assert page.headers["referrer-policy"] == "same-origin"
    form = {"csrf": csrf, "site_id": "s1", "kind": "illegal_wiring", "note": "cable over the sink"}
    assert client.post("/work-orders", data={**form, "csrf": ""}, follow_redirects=False).status_code == 403
    r = client.post("/work-orders", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    order_id = int(url.rsplit("/", 1)[1])
    page = client.get(url + "?lang=en")
    assert "Improvised wiring" in page.text and 'data-status="open"' in page.text and 'id="wo-finding"' in page.text
    # the photo form is multipart: its CSRF token travels inside it
    photo = {"photo": ("IMG_0001.jpg", jpeg(), "image/jpeg")}
    r = client.post(f"{url}/photos", files=photo, data={"csrf": "forged", "stage": "found"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post(
        f"{url}/photos",
        files=photo,
        data={"csrf": csrf, "stage": "found"},
        headers={"Origin": "https://evil.test"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post(f"{url}/photos", files=photo, data={"csrf": csrf, "stage": "found"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("?done=photo")
    page = client.get(url)
    src = re.search(r'<img src="([^"]+)"', page.text)
    assert src and src.group(1).startswith(f"/api/v1/work-orders/{order_id}/photos/")
    assert client.get(src.group(1)).content == jpeg()
    bad = client.post(f"{url}/photos", files={"photo": ("x.jpg", b"<html></html>", "image/jpeg")}, data={"csrf": csrf})
    assert bad.status_code == 422 and "not a JPEG" in bad.text and "<html" in bad.text.lower()
    assert client.post(f"{url}/fixed", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert 'data-status="fixed"' in client.get(url).text
    assert client.post(f"{url}/reinspection", data={"csrf": csrf, "passed": "x"}).status_code == 422
    r = client.post(f"{url}/reinspection", data={"csrf": csrf, "passed": "1"}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(url + "?lang=en")
    assert 'data-status="closed"' in page.text and 'id="wo-actions"' not in page.text
    again = client.post(f"{url}/reinspection", data={"csrf": csrf, "passed": "1"})
    assert again.status_code == 409 and "already closed" in again.text


def test_other_scopes_and_merchants_on_the_pages(env: ApiEnv) -> None:
    w1 = TestClient(env.app, base_url="https://testserver")
    csrf = login(w1, env.tokens["w1"])
    r = w1.post("/work-orders", data={"csrf": csrf, "site_id": "s1", "kind": "blocked_exit"}, follow_redirects=False)
    url = r.headers["location"]
    w2 = TestClient(env.app, base_url="https://testserver")
    login(w2, env.tokens["w2"])
    assert w2.get(url).status_code == 404
    r = w2.post("/work-orders", data={"csrf": csrf, "site_id": "s1", "kind": "blocked_exit"})
    assert r.status_code == 403, "another session's CSRF token"
    m1 = TestClient(env.app, base_url="https://testserver")
    m_csrf = login(m1, env.tokens["m1"])
    listing = m1.get("/work-orders")
    assert url in listing.text and 'id="new-order"' not in listing.text
    page = m1.get(url)
    assert 'id="report-fixed"' in page.text and 'id="reinspect-form"' not in page.text
    assert m1.post(f"{url}/reinspection", data={"csrf": m_csrf, "passed": "1"}).status_code == 403
    assert m1.post(f"{url}/fixed", data={"csrf": m_csrf}, follow_redirects=False).status_code == 303
    m2 = TestClient(env.app, base_url="https://testserver")
    login(m2, env.tokens["m2"])
    assert m2.get(url).status_code == 404 and url not in m2.get("/work-orders").text
    assert (
        TestClient(env.app, base_url="https://testserver").get("/work-orders", follow_redirects=False).status_code
        == 303
    )


def test_a_patrol_round_on_the_pages(env: ApiEnv) -> None:
    client = TestClient(env.app, base_url="https://testserver")
    csrf = login(client, env.tokens["w2"])
    page = client.get("/patrols?lang=en")
    assert page.status_code == 200 and 'id="start-round"' in page.text and 'id="start-campaign"' in page.text
    r = client.post(
        "/patrols",
        data={"csrf": csrf, "kind": "gas_campaign", "site_id": "s2", "floors": "1", "units_per_floor": "2"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    page = client.get(url + "?lang=en")
    stops = re.findall(r'id="stop-(\d+)" data-visited="no"', page.text)
    assert len(stops) == 2 and "Gas hose aged" in page.text
    form = {"csrf": csrf, "outcome": "checked", "item_gas_hose_aged": "fail", "item_no_gas_detector": "pass"}
    form |= {"item_valve_bypassed": "pass", "item_no_flame_failure": "pass"}
    r = client.post(f"{url}/stops/{stops[0]}", data=form, follow_redirects=False)
    assert r.status_code == 303 and "orders=" in r.headers["location"]
    order_id = int(r.headers["location"].split("orders=")[1].split("#")[0])
    page = client.get(r.headers["location"])
    assert f'href="/work-orders/{order_id}"' in page.text and 'data-visited="yes"' in page.text
    photo = {"photo": ("door.jpg", jpeg(), "image/jpeg")}
    assert client.post(f"{url}/stops/{stops[1]}/photos", files=photo, data={"csrf": "x"}).status_code == 403
    r = client.post(f"{url}/stops/{stops[1]}/photos", files=photo, data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert f"/api/v1/patrol-rounds/{url.rsplit('/', 1)[1]}/photos/" in client.get(url).text
    r = client.post(f"{url}/stops/{stops[1]}", data={"csrf": csrf, "outcome": "not_home"}, follow_redirects=False)
    assert r.status_code == 303
    assert client.post(f"{url}/stops/{stops[1]}", data={"csrf": csrf, "outcome": "not_home"}).status_code == 409
    assert client.post(f"{url}/stops/{stops[0]}", data={"outcome": "not_home"}).status_code == 403, "no CSRF token"
    page = client.get("/patrols?lang=en")
    assert 'id="households"' in page.text and "1/2" in page.text
    m1 = TestClient(env.app, base_url="https://testserver")
    login(m1, env.tokens["m1"])
    assert m1.get("/patrols").status_code == 403 and m1.get(url).status_code == 403
    w1 = TestClient(env.app, base_url="https://testserver")
    login(w1, env.tokens["w1"])
    assert w1.get(url).status_code == 404
