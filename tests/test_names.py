"""Issue 22: names, not ids, where a person reads: alarm types and severities, communities and grids, in zh-CN and
English, on the pages (the reports' names are checked in tests/test_reports.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from core import names
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env, raise_alarm


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded) as e:
        yield e


def login(client: TestClient, token: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def visible_text(html: str) -> str:
    """The page's text without tags and attribute values (ids may stay in links and data attributes)."""
    return re.sub(r"<[^>]*>", " ", html)


@pytest.mark.parametrize(
    ("alarm_type", "lang", "name"),
    [
        ("gas_leak", "zh-CN", "燃气泄漏"),
        ("gas_leak", "en", "gas leak"),
        ("gas_leak", "en-GB", "gas leak"),
        ("co_alarm", "zh", "一氧化碳报警"),
        ("brand_new_type", "en", "brand new type"),  # unknown: its id, readable, never blank
    ],
)
def test_alarm_names(alarm_type: str, lang: str, name: str) -> None:
    assert names.alarm_name(alarm_type, lang) == name


def test_every_alarm_type_has_both_names() -> None:
    assert names.ALARM_NAMES["zh-CN"].keys() == names.ALARM_NAMES["en"].keys()
    assert names.severity_name(4, "zh-CN") == "紧急P1" and names.severity_name(2, "en") == "MINOR P3"


def test_pages_show_alarm_types_and_places_by_name(env: ApiEnv) -> None:
    with env.conn() as conn, conn.transaction():
        alarm_id = raise_alarm(conn, "gas-1")
    worker = TestClient(env.app, base_url="https://testserver")
    login(worker, env.tokens["w1"])
    # (the alarm's own message, "gas_leak on gas-1" from tests.api_helpers.raise_alarm, is the rule's text)
    for lang, name in (("en", "gas leak"), ("zh-CN", "燃气泄漏")):
        board = worker.get(f"/board?lang={lang}").text
        assert re.findall(r'<strong class="type"[^>]*>(.*?)</strong>', board) == [name], lang
        alarm = worker.get(f"/alarms/{alarm_id}?lang={lang}").text
        assert re.search(r"<title>(.*?)</title>", alarm).group(1).startswith(f"{name} #{alarm_id}")  # type: ignore[union-attr]
        assert re.search(rf"<h1>.*{name} #{alarm_id}</h1>", alarm), lang
        device = worker.get(f"/devices/gas-1?lang={lang}").text
        assert re.search(rf'<a href="/alarms/{alarm_id}">#{alarm_id} P1 {name}</a>', device), lang
        kind, where = ("Gas detector", "kitchen") if lang == "en" else ("燃气探测器", "厨房")
        assert f"<p>{kind} · {where} ·" in device, lang

    # who acknowledged, by name (with the id, for the record)
    assert worker.post(f"/api/v1/alarms/{alarm_id}/ack", headers=env.headers("w1")).status_code == 200
    assert re.search(r'<span class="acked-by">[^<]*Wang（w1）</span>', worker.get("/board?lang=en").text)
    assert re.search(r'id="acked-by">[^<]*Wang（w1）', worker.get(f"/alarms/{alarm_id}?lang=en").text)

    admin = TestClient(env.app, base_url="https://testserver")
    login(admin, env.tokens["admin"])
    page = admin.get("/admin?lang=en").text
    cards = re.findall(r"<h3>(.*?)</h3>", page)
    assert any("Test community" in c for c in cards) and any("Grid one" in c for c in cards), cards
    assert not any(re.search(r"\b(c1|g1)\b", c) for c in cards), cards
    kpis = visible_text(page)
    assert "gas leak 1" in kpis and "gas_leak" not in kpis
    assert "燃气泄漏 1" in visible_text(admin.get("/admin?lang=zh-CN").text)
    assert "<td>Gas detector</td>" in page and "<td>gas_detector</td>" not in page
