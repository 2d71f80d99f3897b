"""/api/docs in headless Chromium with every other host unreachable: Swagger UI comes from the gateway itself."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.services, pytest.mark.django_db(transaction=True)]


def test_the_api_docs_render_offline(stack, chromium):
    stack.start_web()
    page = chromium.new_page()
    elsewhere: list[str] = []

    def offline(route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(stack.web).netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.goto(stack.web + "/api/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent.trim())")
    assert "/api/devices" in paths and "/api/ws-ticket" in paths
    assert elsewhere == [], f"the docs asked other hosts for {elsewhere}"
