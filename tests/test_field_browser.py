"""Issue 21 in headless Chromium at a phone's width (390 px): a worker opens a work order from a check-list item,
takes a photo (the file input a phone's camera fills), the merchant reports it fixed, and the worker's on-site
re-inspection closes it; nothing on the way is wider than the phone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.app import create_app
from api.deps import SESSION_COOKIE
from core import actionlink
from core.settings import Settings
from field import report_service
from tests.api_helpers import ApiEnv, api_env, live_server
from tests.browser import CHROMEDRIVER, CHROMIUM, needs_browser, start_browser
from tests.field_helpers import jpeg

pytestmark = needs_browser

if CHROMIUM and CHROMEDRIVER:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

PHONE_WIDTH = 390


@pytest.fixture
def phone() -> Iterator[WebDriver]:
    driver = start_browser(PHONE_WIDTH, 844, phone=True)
    yield driver
    driver.quit()


@pytest.fixture
def site(loaded: Settings) -> Iterator[tuple[ApiEnv, str]]:
    with api_env(loaded) as env, live_server(create_app(loaded, env.pool)) as base:
        yield env, base


def log_in(driver: WebDriver, base: str, token: str, then: str) -> None:
    driver.delete_all_cookies()
    driver.get(f"{base}/login?lang=en&next={then}")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def fits(driver: WebDriver) -> None:
    viewport, width = driver.execute_script("return [window.innerWidth, document.documentElement.scrollWidth];")
    assert viewport == PHONE_WIDTH, "the phone's viewport"
    assert width <= PHONE_WIDTH, f"the page is {width} px wide on a {PHONE_WIDTH} px phone"


def test_work_order_from_finding_to_reinspection_on_a_phone(
    site: tuple[ApiEnv, str], phone: WebDriver, tmp_path: Path
) -> None:
    env, base = site
    wait = WebDriverWait(phone, 20)
    log_in(phone, base, env.tokens["w1"], "/work-orders")
    wait.until(ec.presence_of_element_located((By.ID, "new-order")))
    fits(phone)
    Select(phone.find_element(By.NAME, "site_id")).select_by_value("s1")
    Select(phone.find_element(By.NAME, "kind")).select_by_value("blocked_exit")
    phone.find_element(By.NAME, "note").send_keys("boxes in the back exit")
    phone.find_element(By.ID, "open-order").click()
    wait.until(ec.presence_of_element_located((By.ID, "wo-status")))
    assert phone.find_element(By.ID, "wo-status").get_attribute("data-status") == "open"
    assert "Exit or escape route blocked" in phone.find_element(By.ID, "wo-what").text
    order_url = phone.current_url
    fits(phone)

    picture = tmp_path / "IMG_0001.jpg"
    picture.write_bytes(jpeg(640, 480))
    phone.find_element(By.ID, "photo-input").send_keys(str(picture))
    phone.find_element(By.ID, "photo-upload").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "done"), "Photo uploaded"))
    img = phone.find_element(By.CSS_SELECTOR, "#wo-photos img")
    wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) is not None)
    assert "/api/v1/work-orders/" in (img.get_attribute("src") or "")
    fits(phone)

    # the merchant, on their own phone, reports it fixed
    log_in(phone, base, env.tokens["m1"], order_url.removeprefix(base))
    wait.until(ec.presence_of_element_located((By.ID, "report-fixed")))
    assert phone.find_elements(By.ID, "reinspect-form") == []
    phone.find_element(By.ID, "report-fixed").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "done"), "awaiting re-inspection"))
    assert phone.find_element(By.ID, "wo-status").get_attribute("data-status") == "fixed"

    # the worker re-inspects on site: a fail first sets a new deadline, then a pass closes it
    log_in(phone, base, env.tokens["w1"], order_url.removeprefix(base))
    wait.until(ec.presence_of_element_located((By.ID, "reinspect-fail")))
    phone.find_element(By.ID, "reinspect-fail").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "done"), "new deadline"))
    assert phone.find_element(By.ID, "wo-status").get_attribute("data-status") == "open"
    phone.find_element(By.ID, "reinspect-pass").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "done"), "closed"))
    assert phone.find_element(By.ID, "wo-status").get_attribute("data-status") == "closed"
    assert phone.find_elements(By.ID, "wo-actions") == []
    kinds = [r.get_attribute("data-kind") for r in phone.find_elements(By.CSS_SELECTOR, "#wo-events tr")]
    assert kinds == ["opened", "photo", "fixed", "reinspected", "reinspected"]
    fits(phone)


def test_patrol_resident_report_and_drill_on_a_phone(site: tuple[ApiEnv, str], phone: WebDriver) -> None:
    """A worker's round with a failed item becoming a work order; a resident reporting from a building's QR link
    with no account and rating the outcome; a worker answering a drill labelled as one."""
    env, base = site
    wait = WebDriverWait(phone, 20)
    # the patrol: a round over micro-grid mg1, the shop's check-list with one item failed
    log_in(phone, base, env.tokens["w1"], "/patrols")
    wait.until(ec.presence_of_element_located((By.ID, "start-round")))
    fits(phone)
    phone.find_element(By.CSS_SELECTOR, "#start-round button").click()
    wait.until(ec.presence_of_element_located((By.ID, "stops")))
    fits(phone)
    phone.find_element(By.CSS_SELECTOR, "input.fail-blocked_exit").click()
    phone.find_element(By.CSS_SELECTOR, "button.check-in-button").click()
    done = wait.until(ec.presence_of_element_located((By.ID, "done")))
    assert "Work orders opened" in done.text
    done.find_element(By.TAG_NAME, "a").click()
    wait.until(ec.presence_of_element_located((By.ID, "wo-what")))
    assert "Exit or escape route blocked" in phone.find_element(By.ID, "wo-what").text

    # the resident: the building's link, no account
    links = env.client.get("/api/v1/resident-links", headers=env.headers("w2")).json()
    form_path = "/r/" + links[0]["url"].rsplit("/r/", 1)[1]
    phone.delete_all_cookies()
    phone.get(f"{base}{form_path}?lang=en&where=Stairwell%201")
    wait.until(ec.presence_of_element_located((By.ID, "resident-form")))
    fits(phone)
    phone.find_element(By.ID, "rr-what").send_keys("Cardboard piled by the meters")
    phone.find_element(By.ID, "rr-send").click()
    wait.until(ec.presence_of_element_located((By.ID, "rr-status")))
    receipt = phone.current_url
    assert phone.find_element(By.ID, "rr-status").get_attribute("data-status") == "new"
    (report,) = env.client.get("/api/v1/resident-reports", headers=env.headers("w2")).json()
    assert report["place"] == "Stairwell 1"
    closed = env.client.post(
        f"/api/v1/resident-reports/{report['id']}/close", headers=env.headers("w2"), json={"outcome": "Cleared"}
    )
    assert closed.status_code == 200
    phone.get(receipt)
    wait.until(ec.presence_of_element_located((By.ID, "rating-form")))
    phone.find_element(By.CSS_SELECTOR, "button.rating-5").click()
    wait.until(ec.presence_of_element_located((By.ID, "rr-rating")))
    assert "★★★★★" in phone.find_element(By.ID, "rr-rating").text

    # the drill: dispatched to mg1, w1 acknowledges and reports on site from the phone
    drill = env.client.post("/api/v1/admin/drills", headers=env.headers("admin"), json={"micro_grid_id": "mg1"}).json()
    log_in(phone, base, env.tokens["w1"], f"/drills/{drill['id']}")
    wait.until(ec.presence_of_element_located((By.ID, "drill-banner")))
    assert "drill" in phone.find_element(By.ID, "drill-banner").text.lower()
    fits(phone)
    ack = phone.find_element(By.ID, "drill-ack")
    ack.click()
    wait.until(ec.staleness_of(ack))
    assert phone.find_elements(By.ID, "drill-ack") == []
    arrived = phone.find_element(By.ID, "drill-arrived")
    arrived.click()
    wait.until(ec.staleness_of(arrived))
    assert phone.find_elements(By.ID, "drill-arrived") == []
    report_row = phone.find_element(By.CSS_SELECTOR, '#drill-report tr[data-worker="w1"]')
    assert report_row.find_element(By.CSS_SELECTOR, ".arrival").text.endswith("s")


def test_a_message_link_opens_its_one_item_on_a_phone_with_no_login(site: tuple[ApiEnv, str], phone: WebDriver) -> None:
    """The on-call worker of another micro-grid, told by a message, takes and closes a resident report and answers a
    drill from the message's links on a phone that never logged in; nothing is wider than the phone."""
    env, base = site
    # A page replaced by a form's answer can fail a lookup in flight: the waits try again.
    wait = WebDriverWait(phone, 20, ignored_exceptions=(WebDriverException,))
    secret = env.settings.secret_key.get_secret_value()
    links = env.client.get("/api/v1/resident-links", headers=env.headers("w2")).json()
    with env.conn() as conn, conn.transaction():
        report = report_service.submit_report(
            conn, secret=secret, code=links[0]["url"].rsplit("/r/", 1)[1], what="Cardboard by the meters", client="t"
        )

    def link(subject: actionlink.Subject, item_id: int) -> str:
        key = actionlink.sign(
            secret, subject=subject, subject_id=item_id, kind="worker", recipient_id="w1", issued_at=datetime.now(UTC)
        )
        return f"{base}/{actionlink.PATHS[subject]}/{item_id}/link/{key}?lang=en"

    def status() -> str:
        # Read in the page in one call: an element found first may belong to the page a form just replaced.
        try:
            found = phone.execute_script(
                "const e = document.getElementById('rr-status'); return e && e.dataset.status;"
            )
        except WebDriverException:
            return ""  # the page is being replaced after a form was sent
        return str(found or "")

    phone.delete_all_cookies()
    phone.get(link("resident_report", report.report_id))
    wait.until(ec.presence_of_element_located((By.ID, "rr-status")))
    assert status() == "new" and "Cardboard by the meters" in phone.find_element(By.ID, "rr-text").text
    fits(phone)
    phone.find_element(By.ID, "take").click()
    wait.until(lambda _d: status() == "taken")
    fits(phone)
    phone.find_element(By.CSS_SELECTOR, "#close-form [name=outcome]").send_keys("Cleared with the landlord")
    phone.find_element(By.ID, "close").click()
    wait.until(lambda _d: status() == "closed")
    row = env.client.get(f"/api/v1/resident-reports/{report.report_id}", headers=env.headers("admin")).json()
    assert (row["taken_by"], row["closed_by"], row["outcome"]) == ("w1", "w1", "Cleared with the landlord")
    assert SESSION_COOKIE not in {c["name"] for c in phone.get_cookies()}, "a link sets no session"

    drill = env.client.post(
        "/api/v1/admin/drills", headers=env.headers("admin"), json={"micro_grid_id": "mg1", "scenario": "gas leak"}
    ).json()
    phone.get(link("drill", drill["id"]))
    wait.until(ec.presence_of_element_located((By.ID, "drill-banner")))
    fits(phone)
    phone.find_element(By.ID, "drill-ack").click()
    wait.until(lambda d: not d.find_elements(By.ID, "drill-ack"))
    (mine,) = [
        r
        for r in env.client.get(f"/api/v1/drills/{drill['id']}", headers=env.headers("admin")).json()["responders"]
        if r["worker_id"] == "w1"
    ]
    assert mine["acknowledged_at"] is not None
