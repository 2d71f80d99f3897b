"""A headless Chromium for the browser tests that need no logged-in gateway page."""

from __future__ import annotations

import pytest

from tests.browser.test_dashboard import CHROMIUM, need_chromium


@pytest.fixture
def chromium():
    """Debian's Chromium through Playwright (its own browser download is not used)."""
    need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()
