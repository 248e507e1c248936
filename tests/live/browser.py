"""
A headless Chromium for the browser tests (the ``chromium`` tier): Debian's chromium and
chromium-driver (installed by ``make services``). Selenium is pointed at them explicitly and
never downloads anything.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def ensure_chromium() -> None:
    """Skip (or fail) the chromium tier's test unless Debian's chromium and chromium-driver are installed."""
    from tests.tiers import require_service

    present = os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
    require_service("chromium", present, "Chromium (chromium, chromium-driver)")


def start_chromium(user_data_dir: Path):  # -> selenium WebDriver
    """Headless Debian Chromium driven through the Debian chromedriver; nothing is downloaded."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1440,1150",
        "--force-prefers-reduced-motion",
        f"--user-data-dir={user_data_dir}",
    ):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(user_data_dir.parent / "chromedriver.log"))
    try:
        return webdriver.Chrome(service=service, options=options)
    except Exception:
        if service.process is not None and service.process.poll() is None:
            service.process.kill()  # the chromedriver we started, by its pid
        raise
