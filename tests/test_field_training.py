"""Training and drill attendance of a merchant's staff (issue 21, M-R04): recorded by an inspector whose scope
includes the merchant, crediting the score as the policy says (once a year, never above base), visible to the
merchant; the page records it too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env
from tests.test_pages import login


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def record(env: ApiEnv, who: str, merchant: str = "m1", **body: object) -> object:
    return env.client.post(
        f"/api/v1/merchants/{merchant}/trainings", headers=env.headers(who), json={"attendees": 4, **body}
    )


def test_training_credits_the_score_as_the_policy_says(env: ApiEnv) -> None:
    at_base = record(env, "w1")
    assert at_base.status_code == 201, at_base.text
    assert at_base.json()["ledger_entry_id"] is None and "at base" in at_base.json()["no_credit"]
    order = env.client.post(
        "/api/v1/work-orders", headers=env.headers("w1"), json={"site_id": "s1", "kind": "illegal_wiring"}
    )
    assert order.status_code == 201
    credited = record(env, "w1", names="Wang, Li, Zhao, Chen", note="三会 training by the fire station")
    assert credited.status_code == 201 and credited.json()["ledger_entry_id"] is not None
    ledger = env.client.get("/api/v1/merchants/m1/ledger", headers=env.headers("m1")).json()["items"]
    assert sorted((e["code"], e["points"]) for e in ledger) == [("M-D16", -10), ("M-R04", 3)]
    drill = record(env, "w1", kind="drill")
    assert drill.status_code == 201 and "already credited" in drill.json()["no_credit"], "once a year"
    score = env.client.get("/api/v1/merchants/m1/score", headers=env.headers("m1")).json()["score"]
    assert score == 93
    mine = env.client.get("/api/v1/merchants/m1/trainings", headers=env.headers("m1")).json()
    assert [r["kind"] for r in mine] == ["drill", "training", "training"]
    # scope: another micro-grid's worker, another merchant, the merchant itself recording
    assert record(env, "w2").status_code == 404
    assert record(env, "m1").status_code == 403
    assert env.client.get("/api/v1/merchants/m1/trainings", headers=env.headers("m2")).status_code == 404
    assert record(env, "w1", merchant="nosuch").status_code == 404
    assert record(env, "w1", attendees=0).status_code == 422
    assert record(env, "w1", held_at="2020-01-01T00:00:00+08:00").status_code == 422
    assert record(env, "admin", merchant="m2").status_code == 201


def test_the_training_page(env: ApiEnv) -> None:
    client = TestClient(env.app, base_url="https://testserver")
    csrf = login(client, env.tokens["w1"])
    page = client.get("/merchants/m1/trainings?lang=en")
    assert page.status_code == 200 and 'id="training-form"' in page.text
    r = client.post("/merchants/m1/trainings", data={"csrf": csrf, "attendees": "3"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("done=recorded"), "at base: nothing to add"
    assert client.post("/merchants/m1/trainings", data={"csrf": csrf, "attendees": "x"}).status_code == 422
    assert 'class="no-credit"' in client.get("/merchants/m1/trainings").text
    merchant = TestClient(env.app, base_url="https://testserver")
    login(merchant, env.tokens["m1"])
    own = merchant.get("/merchants/m1/trainings")
    assert own.status_code == 200 and 'id="training-form"' not in own.text
    assert merchant.get("/merchants/m2/trainings").status_code == 404
