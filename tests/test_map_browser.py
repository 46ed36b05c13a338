"""Issue 22 in headless Chromium (Debian's chromium + chromium-driver at /usr/bin/chromedriver, never a downloaded
driver): the map, a building's floors and the reports page fit a phone (390 px) and a desktop without horizontal
scrolling, and the map recolours a building live when an alarm is raised, without a reload."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from core.settings import Settings
from tests.api_helpers import ApiEnv, api_env, live_server, raise_alarm
from tests.browser import CHROMEDRIVER, CHROMIUM, needs_browser, start_browser
from tests.test_map import place_sites

pytestmark = needs_browser

if CHROMIUM and CHROMEDRIVER:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}


def open_browser(width: int, height: int) -> WebDriver:
    # headless Chrome windows are at least 500 px wide: a phone is emulated
    return start_browser(width, height, phone=width < 500, extra=("--hide-scrollbars",))


@pytest.fixture
def site(loaded: Settings) -> Iterator[tuple[ApiEnv, str]]:
    with api_env(loaded, hierarchy=True) as env:
        with env.conn() as conn, conn.transaction():
            place_sites(conn)
        with live_server(create_app(loaded, env.pool)) as base:
            yield env, base


def log_in(driver: WebDriver, base: str, token: str) -> None:
    driver.get(f"{base}/login?lang=en")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def horizontal_overflow(driver: WebDriver) -> int:
    """How many CSS pixels the page is wider than the window (0: no horizontal scroll)."""
    return int(
        driver.execute_script(
            "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
            " - document.documentElement.clientWidth;"
        )
    )


@pytest.mark.parametrize("width", list(WIDTHS), ids=list(WIDTHS))
def test_map_and_reports_fit_the_screen_and_update_live(site: tuple[ApiEnv, str], width: str, tmp_path: Path) -> None:
    env, base = site
    w, h = WIDTHS[width]
    driver = open_browser(w, h)
    try:
        wait = WebDriverWait(driver, 20)
        log_in(driver, base, env.tokens["admin"])
        wait.until(lambda d: "/login" not in d.current_url)
        assert driver.execute_script("return document.documentElement.clientWidth;") == w
        for lang in ("en", "zh-CN"):
            for path in ("/map", "/map/buildings/s2", "/reports", "/admin"):
                driver.get(f"{base}{path}?lang={lang}")
                wait.until(ec.presence_of_element_located((By.TAG_NAME, "main")))
                assert horizontal_overflow(driver) <= 0, f"{path} ({lang}) scrolls sideways at {w} px"
        driver.get(f"{base}/map?lang=en")
        driver.save_screenshot(str(tmp_path / f"map-{width}.png"))
        svg = driver.find_element(By.CSS_SELECTOR, "#map svg")
        box = svg.rect
        assert box["x"] >= 0 and box["x"] + box["width"] <= w + 0.5, box
        markers = driver.find_elements(By.CSS_SELECTOR, "#map a.marker")
        assert {m.get_attribute("data-building") for m in markers} == {"s1", "s2", "s4", "s9"}
        for marker in markers:  # every building is on the picture, inside the drawing
            r = marker.rect
            assert box["x"] <= r["x"] and r["x"] + r["width"] <= box["x"] + box["width"] + 0.5, r
        wait.until(ec.text_to_be_present_in_element((By.ID, "live"), "live"))  # the stream is open
        assert "clear" in (
            driver.find_element(By.CSS_SELECTOR, 'a.marker[data-building="s4"]').get_attribute("class") or ""
        )

        with env.conn() as conn, conn.transaction():
            raise_alarm(conn, "gas-4")
        wait.until(
            lambda d: (
                "sev-critical"
                in (d.find_element(By.CSS_SELECTOR, 'a.marker[data-building="s4"]').get_attribute("class") or "")
            )
        )
        listed = driver.find_element(By.CSS_SELECTOR, 'li.building[data-building="s4"]')
        assert "sev-critical" in (listed.get_attribute("class") or "") and "critical alarm" in listed.text

        # tapping a building opens its floors
        driver.find_element(By.CSS_SELECTOR, 'li.building[data-building="s4"] a').click()
        wait.until(ec.url_contains("/map/buildings/s4"))
        device = driver.find_element(By.CSS_SELECTOR, 'li.device[data-device="gas-4"]')
        assert "sev-critical" in (device.get_attribute("class") or "") and "gas leak" in device.text
        driver.save_screenshot(str(tmp_path / f"building-{width}.png"))
        assert horizontal_overflow(driver) <= 0
    finally:
        driver.quit()


def marker_layout(driver: WebDriver) -> dict[str, tuple[float, float]]:
    """Each marker's centre as a fraction of the drawing's width and height, read from the rendered page."""
    svg = driver.find_element(By.CSS_SELECTOR, "#map svg").rect
    found = {}
    for marker in driver.find_elements(By.CSS_SELECTOR, "#map a.marker circle"):
        r = marker.rect
        key = marker.find_element(By.XPATH, "..").get_attribute("data-building") or ""
        found[key] = (
            (r["x"] + r["width"] / 2 - svg["x"]) / svg["width"],
            (r["y"] + r["height"] / 2 - svg["y"]) / svg["height"],
        )
    return found


def test_the_phone_and_the_desktop_see_the_same_picture(site: tuple[ApiEnv, str], tmp_path: Path) -> None:
    """Screenshots at both widths, compared for layout: the drawing scales, the buildings keep their places."""
    env, base = site
    layouts = {}
    for width, (w, h) in WIDTHS.items():
        driver = open_browser(w, h)
        try:
            log_in(driver, base, env.tokens["cadmin"])
            WebDriverWait(driver, 20).until(lambda d: "/login" not in d.current_url)
            driver.get(f"{base}/map?lang=zh-CN")
            WebDriverWait(driver, 20).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#map svg")))
            shot = tmp_path / f"{width}.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 1000
            layouts[width] = marker_layout(driver)
            assert horizontal_overflow(driver) <= 0
        finally:
            driver.quit()
    phone, desktop = layouts["phone"], layouts["desktop"]
    assert set(phone) == set(desktop) == {"s1", "s2", "s4"}
    for key, (x, y) in phone.items():
        assert desktop[key] == pytest.approx((x, y), abs=0.02), key
    # and the geography holds: s4 lies north-east of s1
    assert phone["s4"][0] > phone["s1"][0] and phone["s4"][1] < phone["s1"][1]
