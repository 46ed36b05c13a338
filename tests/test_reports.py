"""Issue 22: reports per micro-grid, grid, community and street for a day, week or month, as PDF, XLSX and CSV,
from the API, the page and the CLI, and e-mailed on a schedule through apprise. Their figures equal the KPI API's
for the same period, checked against a hand-computed history in the real database; a community's admin reports
on their own communities only."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from pypdf import PdfReader

from core.domain import Disposition, Severity
from core.settings import Settings
from report import period as report_period
from report import schedule
from rules import service as rules_service
from score import service as score_service
from tests.api_helpers import ApiEnv, api_env, raise_alarm
from tests.support import Receiver, set_device_state

TZ = ZoneInfo("Asia/Shanghai")
NOVEMBER = {"since": "2026-11-01T00:00:00+08:00", "until": "2026-12-01T00:00:00+08:00"}
S = timedelta(seconds=1)


def local(day: int, hour: int = 0, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TZ)


@pytest.fixture
def env(loaded: Settings) -> Iterator[ApiEnv]:
    with api_env(loaded, hierarchy=True) as e:
        yield e


def seed_november(env: ApiEnv) -> None:
    """c1: g1 (mg1: gas-1, smoke-1 of m1; mg2: gas-2, gas-3 of m2) and g2 (mg3: gas-4); c2: gas-9. November 2026 in
    Asia/Shanghai, with alarms on both edges of the month and two just outside it (one inside November in UTC)."""
    with env.conn() as conn, conn.transaction():

        def alarm(
            device: str,
            kind: str,
            severity: Severity,
            at: datetime,
            ack: tuple[str, int] | None = None,
            resolve: tuple[str, int, Disposition] | None = None,
        ) -> int:
            alarm_id = raise_alarm(conn, device, kind, severity=severity, at=at)
            if ack is not None:
                rules_service.acknowledge(conn, alarm_id=alarm_id, actor=ack[0], now=at + ack[1] * S)
            if resolve is not None:
                who, secs, disposition = resolve
                rules_service.resolve(
                    conn, alarm_id=alarm_id, actor=who, disposition=disposition, note=None, now=at + secs * S
                )
            return alarm_id

        critical, major, minor = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR
        a1 = alarm("gas-1", "gas_leak", critical, local(1), ("w1", 60), ("w1", 600, Disposition.REAL_HAZARD))
        a2 = alarm("gas-2", "gas_leak", critical, local(10, 12), ("w2", 120), ("lead1", 1200, Disposition.FALSE_ALARM))
        alarm("smoke-1", "smoke", major, local(15, 8), ("lead1", 300))
        alarm("gas-1", "gas_low", minor, local(20, 9))
        alarm("gas-4", "gas_leak", critical, local(30, 23, 59), ("duty1", 30), ("duty1", 60, Disposition.TEST))
        # outside the month: the evening before it, and half an hour into December (still November in UTC)
        alarm("gas-3", "gas_leak", critical, local(31, 23, 59, month=10), ("w1", 5))
        b1 = alarm("gas-2", "gas_low", minor, local(1, 0, 30, month=12), ("w2", 5))
        # the other community
        alarm("gas-9", "gas_leak", critical, local(5, 10), ("w9", 10))

        def notification(alarm_id: int, worker: str, status: str) -> None:
            outbox = conn.execute("SELECT min(id) FROM outbox WHERE alarm_id = %s", (alarm_id,)).fetchone()
            assert outbox is not None and outbox[0] is not None
            conn.execute(
                "INSERT INTO notification (outbox_id, alarm_id, worker_id, status) VALUES (%s, %s, %s, %s)",
                (outbox[0], alarm_id, worker, status),
            )

        notification(a1, "w1", "failed")
        notification(a1, "lead1", "failed")
        notification(a2, "w2", "sent")
        notification(b1, "w2", "failed")  # its alarm is outside the month
        now = datetime.now(UTC)
        set_device_state(conn, "gas-1", online=False, status_at=now)
        set_device_state(conn, "gas-2", last_seen_at=now - timedelta(hours=1))  # silent > 2 x 300 s: offline
        set_device_state(conn, "smoke-1", last_seen_at=now - timedelta(hours=1))  # battery, 24 h: fine
        set_device_state(conn, "gas-4", online=True, last_seen_at=now)
        # gas-3 never reported; gas-4 alone passed its commissioning check
        conn.execute(
            "INSERT INTO commissioning (device_id, started_at, started_by, deadline_at, needs_test, status, finished_at)"
            " VALUES ('gas-4', %s, 'w1', %s, false, 'passed', %s)",
            (now - timedelta(hours=2), now, now - timedelta(hours=1)),
        )
        for key, at, points in (("in-month", local(12), -10), ("before", local(20, month=10), -5)):
            conn.execute(
                "INSERT INTO score_entry (merchant_id, at, points, code, reason, actor, dedupe_key)"
                " VALUES ('m1', %s, %s, 'ADJ', 'charging in the corridor', 'admin', %s)",
                (at, points, key),
            )
        score_service.recompute_all(conn, refresh=True)


def sections(data: bytes) -> dict[str, list[list[str]]]:
    """A CSV report's sections by title (each: header row, then rows)."""
    text = data.decode("utf-8-sig")
    found: dict[str, list[list[str]]] = {}
    title: str | None = None
    for row in list(csv.reader(io.StringIO(text)))[1:]:
        if not row:
            title = None
        elif title is None:
            title = row[0]
            found[title] = []
        else:
            found[title].append(row)
    return found


def summary(data: bytes) -> dict[str, str]:
    return {row[0]: row[1] for row in sections(data)["Summary"][1:]}


def report(env: ApiEnv, who: str, **params: str) -> tuple[int, bytes, str]:
    r = env.client.get("/api/v1/admin/reports", params={"lang": "en", **params}, headers=env.headers(who))
    return r.status_code, r.content, r.headers.get("content-type", "")


# -- periods ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "since", "until"),
    [
        ("2026-11", "month", local(1), local(1, month=12)),
        ("2026-12", "month", local(1, month=12), datetime(2027, 1, 1, tzinfo=TZ)),
        ("2026-W45", "week", local(2), local(9)),
        ("2026-W53", "week", datetime(2026, 12, 28, tzinfo=TZ), datetime(2027, 1, 4, tzinfo=TZ)),
        ("2026-11-05", "day", local(5), local(6)),
        ("2028-02-29", "day", datetime(2028, 2, 29, tzinfo=TZ), datetime(2028, 3, 1, tzinfo=TZ)),
    ],
)
def test_periods_are_local_days_weeks_and_months(text: str, kind: str, since: datetime, until: datetime) -> None:
    p = report_period.parse_period(text, "Asia/Shanghai")
    assert (p.kind, p.since, p.until, p.label) == (kind, since, until, text)


@pytest.mark.parametrize(
    "text",
    [
        "2026-13",
        "2026-00",
        "2026-W54",
        "2025-W53",
        "2026-02-30",
        "2026-11-5",
        "202611",
        "2026-11-05T00",
        "",
        "9999-12-31",
        "9999-12",
        "9999-W52",
        "0000-01",
        "٢٠٢٦-١١",  # digits, but not ASCII ones
    ],
)
def test_malformed_periods_are_refused(text: str) -> None:
    with pytest.raises(report_period.PeriodError):
        report_period.parse_period(text, "Asia/Shanghai")


def test_the_last_complete_period() -> None:
    now = datetime(2026, 12, 1, 0, 30, tzinfo=TZ)  # 2026-11-30 16:30 UTC
    assert report_period.last_complete("month", now, "Asia/Shanghai").label == "2026-11"
    assert report_period.last_complete("day", now, "Asia/Shanghai").label == "2026-11-30"
    assert report_period.last_complete("week", now, "Asia/Shanghai").label == "2026-W48"
    assert report_period.last_complete("month", now, "UTC").label == "2026-10"


# -- the figures -------------------------------------------------------------------------------------------------


def test_report_figures_equal_the_kpi_api_and_the_hand_computed_history(env: ApiEnv) -> None:
    seed_november(env)
    status, data, ctype = report(env, "admin", scope="community", id="c1", period="2026-11", format="csv")
    assert status == 200, data
    assert ctype.startswith("text/csv")
    s = summary(data)
    # a1..a5 (the edges of the month local time are in, the alarms before and after it out)
    assert s["Alarms"] == "5" and (s["Acknowledged"], s["Resolved"]) == ("4", "3")
    # ack 30, 60, 120, 300: median 90; p90 at rank 2.7 -> 120 + 0.7*180 = 246
    assert (float(s["Time to acknowledge p50 (s)"]), float(s["Time to acknowledge p90 (s)"])) == (90, 246)
    # resolve 60, 600, 1200: median 600; p90 at rank 1.8 -> 600 + 0.8*600 = 1080
    assert (float(s["Time to resolve p50 (s)"]), float(s["Time to resolve p90 (s)"])) == (600, 1080)
    assert s["Unreached notifications"] == "2"
    assert (s["Devices"], s["Devices offline (now)"], s["Devices never seen (now)"]) == ("5", "2", "1")
    assert s["Devices not commissioned (now)"] == "4"

    kpi = env.client.get("/api/v1/admin/kpis/communities/c1", params=NOVEMBER, headers=env.headers("admin")).json()
    assert (kpi["alarms"], kpi["acknowledged"], kpi["resolved"]) == (5, 4, 3)
    assert kpi["time_to_acknowledge"] == {"p50_s": pytest.approx(90), "p90_s": pytest.approx(246)}
    assert kpi["time_to_resolve"] == {"p50_s": pytest.approx(600), "p90_s": pytest.approx(1080)}
    assert (kpi["unreached_notifications"], kpi["devices"], kpi["devices_offline"]) == (2, 5, 2)
    assert (kpi["devices_never_seen"], kpi["devices_not_commissioned"]) == (1, 4)
    assert kpi["alarms_by_type"] == {"gas_leak": 3, "gas_low": 1, "smoke": 1}

    t = sections(data)
    # names, not ids: alarm types and severities as a person reads them
    by_type = {(r[0], r[1]): r[2] for r in t["Alarms by type and severity"][1:]}
    assert by_type == {
        ("gas leak", "CRITICAL P1"): "3",
        ("gas above 10 %LEL", "MINOR P3"): "1",
        ("smoke alarm", "MAJOR P2"): "1",
    }
    per_day = {r[0]: r[1] for r in t["Alarms per day"][1:]}
    assert len(per_day) == 30 and sum(map(int, per_day.values())) == 5
    assert (per_day["2026-11-01"], per_day["2026-11-30"], per_day["2026-11-02"]) == ("1", "1", "0")
    tiers = {(r[0], r[1]): (r[2], float(r[3]), float(r[4])) for r in t["Response times per tier"][1:]}
    # micro-grid workers acknowledged in 60 and 120 s: median 90, p90 60 + 0.9*60 = 114
    assert tiers[("Micro-grid worker", "acknowledge")] == ("2", 90, 114)
    assert tiers[("Grid leader", "acknowledge")] == ("1", 300, 300)
    assert tiers[("Grid leader", "resolve")] == ("1", 1200, 1200)
    assert tiers[("Community duty", "resolve")] == ("1", 60, 60)
    people = {(r[0], r[2]): (r[3], float(r[4])) for r in t["Response times per person"][1:]}
    assert people[("Wang", "acknowledge")] == ("1", 60) and people[("Wang", "resolve")] == ("1", 600)
    assert people[("Li", "acknowledge")] == ("1", 120) and people[("Leader one", "resolve")] == ("1", 1200)
    scores = {r[0]: r for r in t["Merchant safety scores"][1:]}
    assert set(scores) == {"Noodle shop", "Tea house"}
    assert scores["Noodle shop"][1] == "85" and scores["Noodle shop"][3:] == ["1", "-10"]
    assert scores["Tea house"][3:] == ["0", "0"]
    assert sum(int(r[1]) for r in t["Score tiers (now)"][1:]) == 2

    # a grid, a micro-grid and the street: each the KPI API's figure where it has one
    g1 = summary(report(env, "admin", scope="grid", id="g1", period="2026-11", format="csv")[1])
    kpi_g1 = env.client.get("/api/v1/admin/kpis/grids/g1", params=NOVEMBER, headers=env.headers("admin")).json()
    assert int(g1["Alarms"]) == kpi_g1["alarms"] == 4
    assert float(g1["Time to acknowledge p50 (s)"]) == pytest.approx(kpi_g1["time_to_acknowledge"]["p50_s"])
    assert (
        summary(report(env, "admin", scope="micro_grid", id="mg3", period="2026-11", format="csv")[1])["Alarms"] == "1"
    )
    street = summary(report(env, "admin", scope="street", period="2026-11", format="csv")[1])
    assert street["Alarms"] == "6" and "Other community" in street["Community"]
    # one day and one week
    assert (
        summary(report(env, "admin", scope="community", id="c1", period="2026-11-10", format="csv")[1])["Alarms"] == "1"
    )
    week = summary(report(env, "admin", scope="community", id="c1", period="2026-W46", format="csv")[1])
    assert week["Alarms"] == "2"  # 9-15 November: a2 on the 10th, the smoke alarm on the 15th
    week_kpi = env.client.get(
        "/api/v1/admin/kpis/communities/c1",
        params={"since": "2026-11-09T00:00:00+08:00", "until": "2026-11-16T00:00:00+08:00"},
        headers=env.headers("admin"),
    ).json()
    assert int(week["Alarms"]) == week_kpi["alarms"]


def test_xlsx_and_pdf_carry_the_same_figures_with_chinese_names(env: ApiEnv) -> None:
    seed_november(env)
    status, data, ctype = report(
        env, "admin", scope="community", id="c1", period="2026-11", format="xlsx", lang="zh-CN"
    )
    assert status == 200 and ctype.startswith("application/vnd.openxmlformats")
    book = load_workbook(io.BytesIO(data))
    assert book.sheetnames[:3] == ["概况", "按类型和级别的报警", "每日报警数"]
    figures = {row[0]: row[1] for row in book["概况"].iter_rows(min_row=3, values_only=True)}
    assert figures["报警总数"] == 5 and figures["确认用时中位数（秒）"] == 90 and figures["未送达通知"] == 2
    kinds = {(r[0], r[1]): r[2] for r in book["按类型和级别的报警"].iter_rows(min_row=2, values_only=True)}
    assert kinds[("燃气泄漏", "紧急P1")] == 3

    status, data, ctype = report(env, "admin", scope="community", id="c1", period="2026-11", format="pdf", lang="zh-CN")
    assert status == 200 and ctype == "application/pdf" and data.startswith(b"%PDF")
    pdf = PdfReader(io.BytesIO(data))
    text = "".join(page.extract_text() for page in pdf.pages)
    assert "月报安全运行报告" in text and "Test community" in text and "燃气泄漏" in text and "紧急P1" in text
    assert "Noodle shop" in text and "微网格员" in text
    fonts = {str(f) for page in pdf.pages for f in page["/Resources"]["/Font"].values()}
    assert fonts, "the text is set in an embedded font"
    # charts: the per-day and by-type bar charts are drawn as vector paths
    assert len(pdf.pages[0].get_contents().get_data()) > 2000  # type: ignore[union-attr]


# -- who may see what -----------------------------------------------------------------------------------------------


def test_a_community_admin_reports_on_their_communities_only(env: ApiEnv) -> None:
    seed_november(env)
    for scope, scope_id in (("community", "c2"), ("grid", "g9"), ("micro_grid", "mg9"), ("community", "nope")):
        status, body, _ = report(env, "cadmin", scope=scope, id=scope_id, period="2026-11", format="csv")
        assert status == 404, (scope, scope_id, body)
        assert b"not found" in body
    # the street is every community *they* may see: c1 only
    status, data, _ = report(env, "cadmin", scope="street", period="2026-11", format="csv")
    assert status == 200
    s = summary(data)
    assert s["Alarms"] == "5" and s["Community"] == "Test community"
    assert b"Hardware shop" not in data and b"Other community" not in data
    c2 = summary(report(env, "c2admin", scope="street", period="2026-11", format="csv")[1])
    assert c2["Alarms"] == "1"
    # workers and merchants make no reports; nobody without credentials
    for who in ("w1", "lead1", "m1", None):
        status, _, _ = report(env, who, scope="community", id="c1", period="2026-11")  # type: ignore[arg-type]
        assert status == (401 if who is None else 403)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"scope": "community", "id": "c1", "period": "2026-13"}, "period"),
        ({"scope": "community", "id": "c1", "period": "2026-W60"}, "period"),
        ({"scope": "community", "id": "c1", "period": "2026-02-31"}, "period"),
        ({"scope": "community", "id": "c1", "period": "'; DROP TABLE alarm; --"}, "period"),
        ({"scope": "community", "id": "c1", "period": "2026"}, "period"),
        ({"scope": "community", "period": "2026-11"}, "id"),
        ({"scope": "street", "id": "c1", "period": "2026-11"}, "id"),
        ({"scope": "community", "id": "c1'--", "period": "2026-11"}, "id"),
        ({"scope": "planet", "id": "c1", "period": "2026-11"}, "scope"),
        ({"scope": "community", "id": "c1", "period": "2026-11", "format": "docx"}, "format"),
        ({"scope": "community", "id": "c1"}, "period"),
    ],
)
def test_malformed_report_requests_name_the_parameter(env: ApiEnv, params: dict[str, str], field: str) -> None:
    r = env.client.get("/api/v1/admin/reports", params=params, headers=env.headers("cadmin"))
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"])


# -- the page and the CLI --------------------------------------------------------------------------------------------


def login(client: TestClient, token: str) -> None:
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/reports"}, follow_redirects=False)
    assert r.status_code == 303, r.text


def test_the_reports_page_offers_the_admins_places_by_name(env: ApiEnv) -> None:
    seed_november(env)
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens["cadmin"])
    page = client.get("/reports?lang=en")
    assert page.status_code == 200
    assert 'value="community:c1"' in page.text and "Test community" in page.text and "Micro three" in page.text
    assert "community:c2" not in page.text and "Other community" not in page.text and "Grid nine" not in page.text
    assert 'href="/reports"' in page.text, "the nav links the page"
    assert "报表" in client.get("/reports?lang=zh-CN").text
    made = client.get("/reports", params={"target": "community:c1", "period": "2026-11", "format": "xlsx"})
    assert made.status_code == 200 and made.content.startswith(b"PK")
    assert "gridwatch-community-c1-2026-11.xlsx" in made.headers["content-disposition"]
    made = client.get("/reports", params={"target": "street", "period": "2026-W46", "format": "csv"})
    assert made.status_code == 200 and "Test community" in made.content.decode("utf-8-sig")
    # another community's grid, a malformed period, an unknown kind: error pages, no file
    other = client.get("/reports", params={"target": "grid:g9", "period": "2026-11"})
    assert other.status_code == 404 and "text/html" in other.headers["content-type"]
    bad = client.get("/reports", params={"target": "community:c1", "period": "2026-1-1"})
    assert bad.status_code == 422 and "text/html" in bad.headers["content-type"]
    assert client.get("/reports", params={"target": "site:s1", "period": "2026-11"}).status_code == 422
    # a worker has no reports page
    worker = TestClient(env.app, base_url="https://testserver")
    login(worker, env.tokens["w1"])
    assert worker.get("/reports").status_code == 403


def test_the_report_command(env: ApiEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli_app

    seed_november(env)
    monkeypatch.setenv("GRIDWATCH_DATABASE_URL", env.settings.dsn)
    out = tmp_path / "c1.csv"
    result = CliRunner().invoke(
        cli_app,
        ["report", "--community", "c1", "--month", "2026-11", "--format", "csv", "--lang", "en", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "5 alarms" in result.output
    assert summary(out.read_bytes())["Alarms"] == "5"
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_app, ["report", "--community", "c1", "--month", "2026-11"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "gridwatch-community-c1-2026-11.pdf").read_bytes().startswith(b"%PDF")
    for args in (
        ["report", "--community", "c1", "--month", "2026-13"],
        ["report", "--community", "c9", "--month", "2026-11"],
        ["report", "--month", "2026-11"],
        ["report", "--community", "c1", "--grid", "g1", "--month", "2026-11"],
        ["report", "--community", "c1"],
    ):
        bad = CliRunner().invoke(cli_app, args)
        assert bad.exit_code != 0, args


# -- on a schedule ---------------------------------------------------------------------------------------------------


def test_scheduled_reports_are_delivered_once_through_apprise(env: ApiEnv, receiver: Receiver) -> None:
    seed_november(env)
    settings = env.settings.model_copy(
        update={
            "report_notify": [receiver.url("office")],
            "report_schedule": ["monthly", "daily"],
            "report_scope": "community:c1",
            "report_hour": 7,
        }
    )
    with env.conn() as conn:
        # 1 December 06:59 local: the month is over but the office's hour has not come
        assert schedule.send_due(conn, settings, now=datetime(2026, 12, 1, 6, 59, tzinfo=TZ)) == []
        receiver.status = 500  # the office's server is down: recorded, retried on the next pass
        failed = schedule.send_due(conn, settings, now=datetime(2026, 12, 1, 7, 0, tzinfo=TZ))
        assert [(d.schedule, d.period, d.ok) for d in failed] == [
            ("monthly:community:c1", "2026-11", False),
            ("daily:community:c1", "2026-11-30", False),
        ]
        receiver.status = 200
        sent = schedule.send_due(conn, settings, now=datetime(2026, 12, 1, 7, 5, tzinfo=TZ))
        assert [(d.period, d.ok) for d in sent] == [("2026-11", True), ("2026-11-30", True)]
        assert schedule.send_due(conn, settings, now=datetime(2026, 12, 1, 9, 0, tzinfo=TZ)) == []
        rows = conn.execute("SELECT period, attempts, sent_at IS NOT NULL, error FROM report_delivery ORDER BY id")
        assert [r[:3] for r in rows.fetchall()] == [("2026-11", 2, True), ("2026-11-30", 2, True)]
    arrived = receiver.for_path("office")
    assert len(arrived) == 2
    monthly = next(m for m in arrived if m["title"].endswith("2026-11"))
    assert "月报安全运行报告" in monthly["title"] and "Test community" in monthly["title"]
    (attachment,) = monthly["attachments"]
    assert attachment["filename"] == "gridwatch-community-c1-2026-11.pdf"
    pdf = PdfReader(io.BytesIO(base64.b64decode(attachment["base64"])))
    assert "燃气泄漏" in "".join(p.extract_text() for p in pdf.pages)


def test_no_chinese_font_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.errors import ConfigError
    from report import render

    render.cjk_font.cache_clear()
    monkeypatch.setenv("GRIDWATCH_REPORT_FONT", str(tmp_path / "missing.ttf"))
    try:
        with pytest.raises(ConfigError, match="fonts-wqy-microhei"):
            render.cjk_font()
    finally:
        render.cjk_font.cache_clear()


def test_days_of_a_period() -> None:
    p = report_period.parse_period("2026-W45", "Asia/Shanghai")
    assert p.days()[0] == date(2026, 11, 2) and len(p.days()) == 7


def test_the_report_worker_sends_on_its_own(env: ApiEnv, receiver: Receiver) -> None:
    """The notify part's loop (started by `serve` when a schedule and URLs are set) sends last month's report."""
    import time

    from report.schedule import ReportWorker

    settings = env.settings.model_copy(
        update={
            "report_notify": [receiver.url("street")],
            "report_schedule": ["monthly"],
            "report_format": "csv",
            "report_lang": "en",
            "report_hour": 0,
            "report_check_s": 0.2,
        }
    )
    worker = ReportWorker(settings)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while not receiver.for_path("street") and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    (message,) = receiver.for_path("street")
    assert message["title"].startswith("Monthly") and "Street" in message["title"]
    assert worker.checks()[0].name == "report"
    (attachment,) = message["attachments"]
    assert base64.b64decode(attachment["base64"]).decode("utf-8-sig").startswith("Monthly")


def test_a_scheduled_report_arrives_by_e_mail_with_the_file_attached(env: ApiEnv) -> None:
    """E-mail proper: apprise's mailto:// to a real SMTP server on a socket (tests/test_notify_ladder.py's sink)."""
    from tests.test_notify_ladder import SmtpSink

    seed_november(env)
    smtp = SmtpSink()
    try:
        settings = env.settings.model_copy(
            update={
                "report_notify": [smtp.url("office@example.org")],
                "report_schedule": ["monthly"],
                "report_format": "xlsx",
                "report_lang": "en",
            }
        )
        with env.conn() as conn:
            sent = schedule.send_due(conn, settings, now=datetime(2026, 12, 2, 9, 0, tzinfo=TZ))
        assert [(d.period, d.ok) for d in sent] == [("2026-11", True)]
    finally:
        smtp.close()
    (message,) = smtp.messages
    assert message["To"] == "office@example.org" and "Monthly" in message["Subject"] and "Street" in message["Subject"]
    (attached,) = list(message.iter_attachments())
    assert attached.get_filename() == "gridwatch-street-2026-11.xlsx"
    book = load_workbook(io.BytesIO(attached.get_content()))
    assert {row[0]: row[1] for row in book["Summary"].iter_rows(min_row=3, values_only=True)}["Alarms"] == 6


def test_hostile_names_stay_text_in_every_format(env: ApiEnv) -> None:
    """A merchant named like a formula or like markup: never a formula in CSV or XLSX, never markup in the PDF."""
    formula, markup = '=HYPERLINK("http://evil.test","click")', "<b>Tea & house</b> <font size=40>"
    with env.conn() as conn, conn.transaction():
        for merchant_id, name in (("m1", formula), ("m2", markup)):
            conn.execute("UPDATE merchant SET name = %s WHERE id = %s", (name, merchant_id))
        conn.execute("UPDATE community SET name = %s WHERE id = 'c1'", ("-2+3 <i>community</i>",))
    params = {"scope": "community", "id": "c1", "period": "2026-11"}
    _, data, _ = report(env, "admin", **params, format="csv")
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert ["'" + formula] in [r[:1] for r in rows]
    _, data, _ = report(env, "admin", **params, format="xlsx")
    sheet = load_workbook(io.BytesIO(data))["Merchant safety scores"]
    cells = {c.value: c.data_type for row in sheet.iter_rows() for c in row if isinstance(c.value, str)}
    assert cells[formula] == "s" and cells[markup] == "s"
    status, data, _ = report(env, "admin", **params, format="pdf")
    assert status == 200
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)
    assert "<b>Tea & house</b>" in text and "-2+3 <i>community</i>" in text


def test_a_name_with_a_control_character_does_not_break_the_report(env: ApiEnv) -> None:
    """A merchant renamed through the API with a control character (an escape pasted from a terminal): every
    format is still made (an XLSX cell cannot hold it, so it is shown as U+FFFD), or one limited admin's typo
    would stop the street's reports, scheduled ones included."""
    h = env.headers("cadmin")
    m1 = env.client.get("/api/v1/admin/merchants/m1", headers=h).json()
    name = "Tea\x1b[31mhouse\x07"
    body = {**{k: v for k, v in m1.items() if k != "id"}, "name": name}
    put = env.client.put("/api/v1/admin/merchants/m1", json=body, headers=h)
    assert put.status_code == 200, put.text
    for fmt in ("xlsx", "csv", "pdf"):
        status, data, _ = report(env, "admin", scope="street", period="2026-11", format=fmt)
        assert status == 200, (fmt, data[:300])
        if fmt == "xlsx":
            sheet = load_workbook(io.BytesIO(data))["Merchant safety scores"]
            names = [row[0].value for row in sheet.iter_rows(min_row=2)]
            assert "Tea\ufffd[31mhouse\ufffd" in names


@pytest.mark.parametrize("path", ["/api/v1/admin/reports", "/reports"])
def test_a_report_is_drawn_without_holding_a_database_connection(
    env: ApiEnv, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A street's PDF takes seconds of CPU (5,000 merchants: 5 s here); drawn while holding one of the pool's ten
    connections, ten report downloads at once left no connection for an acknowledgement. The figures are read in a
    short transaction and the file is drawn after the connection is back in the pool."""
    from report import render as report_render

    in_use: list[int] = []
    real = report_render.render

    def spy(*args: object, **kwargs: object) -> bytes:
        stats = env.pool.get_stats()
        in_use.append(stats["pool_size"] - stats["pool_available"])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(report_render, "render", spy)
    client = TestClient(env.app, base_url="https://testserver")
    login(client, env.tokens["admin"])
    params = {"target": "street"} if path == "/reports" else {"scope": "street"}
    made = client.get(path, params={**params, "period": "2026-11", "format": "csv"})
    assert made.status_code == 200, made.text
    assert in_use == [0]


@pytest.mark.parametrize("zone", ["Asia/Shangai", "UTC+8", "../../etc/passwd", ""])
def test_a_mistyped_time_zone_stops_the_start(zone: str, loaded: Settings) -> None:
    """Every report reads its days in Settings.timezone: a typo there failed each report (500) and each scheduled
    pass, long after the start; now the settings refuse it."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="timezone"):
        Settings(database_url=loaded.database_url, timezone=zone)


@pytest.mark.parametrize(
    ("period", "shown"),
    [("2026-11", "2026-11-01 – 2026-11-30"), ("2026-W53", "2026-12-28 – 2027-01-03"), ("2026-11-05", "2026-11-05")],
)
def test_the_report_names_the_days_it_covers(env: ApiEnv, period: str, shown: str) -> None:
    """The summary's period is the days counted, both included: November's report said '2026-11-01 – 2026-12-01',
    which a reader takes as counting 1 December too."""
    status, data, _ = report(env, "admin", scope="street", period=period, format="csv")
    assert status == 200
    assert summary(data)["Period"] == shown


def test_reports_are_drawn_two_at_a_time(env: ApiEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drawing is CPU (seconds for a street's PDF) in the API's process: six downloads at once drew six files at
    once, taking the cores from the alarm stream and acknowledgements. At most two are drawn at a time; the others
    wait their turn on the event loop (no thread, no connection held)."""
    import threading
    import time

    from report import render as report_render

    lock = threading.Lock()
    drawing, most = [0], [0]
    real = report_render.render

    def slow(*args: object, **kwargs: object) -> bytes:
        with lock:
            drawing[0] += 1
            most[0] = max(most[0], drawing[0])
        try:
            time.sleep(0.3)
            return real(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                drawing[0] -= 1

    monkeypatch.setattr(report_render, "render", slow)
    statuses: list[int] = []

    def download() -> None:
        status, _, _ = report(env, "admin", scope="street", period="2026-11", format="csv")
        statuses.append(status)

    threads = [threading.Thread(target=download) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert most[0] == 2


def test_a_very_long_name_does_not_break_the_pdf(env: ApiEnv) -> None:
    """A registry name has no length limit (YAML import): a merchant named with 3,000 characters made a table row
    taller than the page and reportlab refused the whole PDF (LayoutError, a 500, and every scheduled PDF report
    failed). Rows split across pages; the name is all there."""
    long_name = "茶" * 3000
    with env.conn() as conn, conn.transaction():
        conn.execute("UPDATE merchant SET name = %s WHERE id = 'm1'", (long_name,))
    status, data, _ = report(env, "admin", scope="street", period="2026-11", format="pdf")
    assert status == 200, data[:300]
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages).replace("\n", "")
    assert text.count("茶") == 3000


# -- the work on foot (issue 21's tables) -------------------------------------------------------------------------


def seed_field_work(env: ApiEnv) -> None:
    """Work orders, patrol rounds and drills in c1 during November 2026 (Asia/Shanghai), with items one minute inside
    and outside the month's local edges and in c2 (which must not count)."""
    with env.conn() as conn, conn.transaction():

        def order(
            site: str, opened: datetime, due: datetime, *, closed: datetime | None = None, fixed: bool = False
        ) -> int:
            status = "closed" if closed else "fixed" if fixed else "open"
            row = conn.execute(
                "INSERT INTO work_order (site_id, party, kind, title, severity, status, opened_at, opened_by, due_at,"
                " closed_at) VALUES (%s, 'community', 'other', 'exit blocked', 2, %s, %s, 'w1', %s, %s) RETURNING id",
                (site, status, opened, due, closed),
            ).fetchone()
            assert row is not None
            event(row[0], opened, "opened", due=due)
            return int(row[0])

        def event(order_id: int, at: datetime, kind: str, *, passed: bool | None = None, due: datetime | None = None):
            conn.execute(
                "INSERT INTO work_order_event (work_order_id, at, kind, actor, passed, due_at) VALUES (%s, %s, %s,"
                " 'w1', %s, %s)",
                (order_id, at, kind, passed, due),
            )

        def fail(order_id: int, at: datetime, due: datetime) -> None:
            event(order_id, at, "reinspected", passed=False, due=due)
            conn.execute("UPDATE work_order SET due_at = %s WHERE id = %s", (due, order_id))

        a = order("s1", local(1, 0, 1), local(3), closed=local(2))  # opened, closed, passed
        event(a, local(2), "reinspected", passed=True)
        b = order("s2", local(31, 23, 59, month=10), local(3))  # opened before; failed on the 4th; overdue
        fail(b, local(4), local(6))
        order("s4", local(30, 23, 59), local(3, month=12))  # opened a minute before the end; not yet due
        order("s2", local(1, 0, 1, month=12), local(2, month=12))  # a minute after the end: nothing
        e = order("s1", local(10), local(20), closed=local(1, 0, 1, month=12))  # overdue at the end, closed after
        event(e, local(1, 0, 1, month=12), "reinspected", passed=True)
        g = order("s1", local(5), local(10))  # overdue at the end; its deadline moved only in December
        fail(g, local(2, month=12), local(5, month=12))
        order("s2", local(15), local(16), fixed=True)  # reported fixed, not re-inspected: still overdue
        h = order("s9", local(10), local(11))  # the other community
        fail(h, local(12), local(20))

        def patrol(
            kind: str, mg: str, start: datetime, end: datetime, stops: list[tuple[str, str, str | None]]
        ) -> None:
            row = conn.execute(
                "INSERT INTO patrol_round (kind, micro_grid_id, title, due_start, due_end, created_by)"
                " VALUES (%s, %s, 'round', %s, %s, 'admin') RETURNING id",
                (kind, mg, start, end),
            ).fetchone()
            assert row is not None
            for seq, (site, household, outcome) in enumerate(stops):
                conn.execute(
                    "INSERT INTO patrol_stop (round_id, seq, site_id, household, checklist, visited_at, visited_by,"
                    " outcome) VALUES (%s, %s, %s, %s, 'stairwell', %s, %s, %s)",
                    (
                        row[0],
                        seq,
                        site,
                        household,
                        start + timedelta(hours=1) if outcome else None,
                        "w1" if outcome else None,
                        outcome,
                    ),
                )

        patrol("grid", "mg1", local(1, 0, 1), local(1, 12), [("s1", "", "checked")])
        patrol("grid", "mg2", local(30, 23, 59), local(1, 4, month=12), [("s2", "", None)])  # missed
        households = [
            ("s2", "101", "checked"),
            ("s2", "102", "not_home"),
            ("s2", "201", None),
            ("s2", "202", "checked"),
        ]
        patrol("gas_campaign", "mg2", local(10), local(24), households)
        patrol("grid", "mg1", local(31, 23, 59, month=10), local(1, 12), [("s1", "", None)])  # started before
        patrol("grid", "mg3", local(1, 0, 1, month=12), local(1, 12, month=12), [("s4", "", None)])  # after
        patrol("grid", "mg9", local(10), local(10, 12), [("s9", "", None)])  # the other community

        def drill(mg: str, site: str, at: datetime, responses: list[tuple[str, int | None, int | None]]) -> None:
            row = conn.execute(
                "INSERT INTO drill (micro_grid_id, site_id, scenario, dispatched_at, dispatched_by, ends_at)"
                " VALUES (%s, %s, 'smoke on the stairs', %s, 'admin', %s) RETURNING id",
                (mg, site, at, at + timedelta(hours=1)),
            ).fetchone()
            assert row is not None
            for worker, ack, arrive in responses:
                conn.execute(
                    "INSERT INTO drill_response (drill_id, worker_id, acknowledged_at, arrived_at) VALUES (%s, %s, %s,"
                    " %s)",
                    (
                        row[0],
                        worker,
                        None if ack is None else at + ack * S,
                        None if arrive is None else at + arrive * S,
                    ),
                )

        drill("mg1", "s1", local(1, 0, 1), [("w1", 60, 300)])
        drill("mg3", "s4", local(30, 23, 59), [("lead2", 120, 600), ("duty1", 30, None)])
        drill("mg2", "s2", local(31, 23, 59, month=10), [("w2", 5, 6)])  # before the month
        drill("mg1", "s1", local(1, 0, 1, month=12), [("w1", 7, 8)])  # after it
        drill("mg9", "s9", local(10), [("w9", 1, 2)])  # the other community


def test_work_orders_patrols_and_drills_in_every_format(env: ApiEnv) -> None:
    seed_field_work(env)
    status, data, _ = report(env, "admin", scope="community", id="c1", period="2026-11", format="csv")
    assert status == 200, data
    t = sections(data)
    orders = {r[0]: r[1] for r in t["Work orders"][1:]}
    assert orders == {
        "Opened in period": "5",  # a minute into the month, the 5th, 10th, 15th, a minute before its end
        "Closed in period": "1",
        "Overdue at period end (or now)": "4",  # opened before the month, closed after it, moved later, fixed only
        "Re-inspections passed": "1",
        "Re-inspections failed": "1",
    }
    patrols = {r[0]: r[1:] for r in t["Patrol coverage"][1:]}
    assert patrols == {
        "Gas campaign (households)": ["4", "3", "2", "1", "1"],
        "Grid rounds (twice daily)": ["2", "1", "1", "0", "1"],
    }
    drills = {r[0]: r[1] for r in t["Drills"][1:]}
    # acknowledged in 30, 60, 120 s: p50 60, p90 60 + 0.8*60 = 108; arrived in 300, 600 s: p50 450, p90 570
    assert (drills["Drills dispatched"], drills["Workers dispatched"]) == ("2", "3")
    assert (drills["Acknowledged"], drills["Arrived"]) == ("3", "2")
    assert [float(drills[k]) for k in ("Time to acknowledge p50 (s)", "Time to acknowledge p90 (s)")] == [60, 108]
    assert [float(drills[k]) for k in ("Time to arrive p50 (s)", "Time to arrive p90 (s)")] == [450, 570]

    # a micro-grid and a grid are scoped the same way; the street adds the other community
    mg3 = sections(report(env, "admin", scope="micro_grid", id="mg3", period="2026-11", format="csv")[1])
    assert {r[0]: r[1] for r in mg3["Work orders"][1:]}["Opened in period"] == "1"
    assert {r[0]: r[1] for r in mg3["Drills"][1:]}["Drills dispatched"] == "1"
    g1 = sections(report(env, "admin", scope="grid", id="g1", period="2026-11", format="csv")[1])
    assert {r[0]: r[1] for r in g1["Work orders"][1:]}["Opened in period"] == "4"
    street = sections(report(env, "admin", scope="street", period="2026-11", format="csv")[1])
    street_orders = {r[0]: r[1] for r in street["Work orders"][1:]}
    assert (street_orders["Opened in period"], street_orders["Re-inspections failed"]) == ("6", "2")
    # a single day: the first of November
    day = sections(report(env, "admin", scope="community", id="c1", period="2026-11-01", format="csv")[1])
    assert {r[0]: r[1] for r in day["Work orders"][1:]}["Opened in period"] == "1"
    assert {r[0]: r[1:] for r in day["Patrol coverage"][1:]} == {"Grid rounds (twice daily)": ["1", "1", "1", "0", "0"]}

    # a period that has not ended counts overdue now: the order a minute after November's end and the ones due in
    # December are late by now; one opened an hour ago and due tomorrow is not (nor anything opened in 2099)
    with env.conn() as conn, conn.transaction():
        now = datetime.now(UTC)
        conn.execute(
            "INSERT INTO work_order (site_id, party, kind, title, severity, opened_at, opened_by, due_at)"
            " VALUES ('s1', 'community', 'other', 'hose aged', 3, %s, 'w1', %s)",
            (now - timedelta(hours=1), now + timedelta(days=1)),
        )
    future = sections(report(env, "admin", scope="community", id="c1", period="2099-01", format="csv")[1])
    future_orders = {r[0]: r[1] for r in future["Work orders"][1:]}
    assert (future_orders["Opened in period"], future_orders["Overdue at period end (or now)"]) == ("0", "5")

    status, data, _ = report(env, "admin", scope="community", id="c1", period="2026-11", format="xlsx", lang="zh-CN")
    assert status == 200
    book = load_workbook(io.BytesIO(data))
    wo = {r[0]: r[1] for r in book["隐患整改工单"].iter_rows(min_row=2, values_only=True)}
    assert (wo["期间新开工单"], wo["期间关闭工单"], wo["逾期未关闭（期末或当前）"]) == (5, 1, 4)
    assert (wo["复查通过"], wo["复查未通过"]) == (1, 1)
    cover = {r[0]: r[1:] for r in book["巡查覆盖"].iter_rows(min_row=2, values_only=True)}
    assert cover["燃气入户（户）"] == (4, 3, 2, 1, 1)
    dr = {r[0]: r[1] for r in book["网格赶考（演练）"].iter_rows(min_row=2, values_only=True)}
    assert (dr["派发演练"], dr["确认用时中位数（秒）"], dr["到场用时P90（秒）"]) == (2, 60, 570)

    status, data, _ = report(env, "admin", scope="community", id="c1", period="2026-11", format="pdf", lang="zh-CN")
    assert status == 200
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
    for title in ("隐患整改工单", "巡查覆盖", "网格赶考（演练）", "逾期未关闭", "燃气入户"):
        assert title in text, title
    assert "尚未纳入" not in text
