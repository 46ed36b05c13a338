"""Headless Chromium for the page tests: Debian's chromium and chromium-driver (scripts/setup installs them with
GRIDWATCH_SETUP_BROWSER=1), the driver's path always given so Selenium never downloads one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless browser tests need Debian's chromium and chromium-driver (apt-get install chromium "
    "chromium-driver); they are not installed",
)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--lang=en-US",
)


def start_browser(width: int, height: int, *, phone: bool = False, extra: tuple[str, ...] = ()) -> WebDriver:
    """A headless Chromium whose window is width × height; with phone, a phone's viewport of that size is
    emulated (headless Chrome will not make a window narrower than 500 px)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (*FLAGS, f"--window-size={width},{height}", *extra):
        options.add_argument(flag)
    if phone:
        options.add_experimental_option(
            "mobileEmulation", {"deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0}}
        )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver
