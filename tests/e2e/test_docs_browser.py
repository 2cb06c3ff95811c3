"""The API docs in a real headless Chromium, cut off from everything but the gateway: each page
renders every area and its operations, and asks nothing of any other host (no CDN, no fonts, no
validator badge)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.browser import offline_page
from tests.live import LiveGateway

pytestmark = pytest.mark.e2e

AREAS = ["OpenAI-compatible", "Seed routes", "Accounts", "Keys and billing", "Service"]
# How each page shows one operation once it has rendered the schema.
OPERATION = {
    "/docs": ".opblock",
    "/api/docs": ".opblock",
    "/redoc": "[data-section-id^='operation/']",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[LiveGateway]:
    with LiveGateway(workdir=tmp_path_factory.mktemp("docs")) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def operation_count(gateway) -> int:
    schema = httpx.get(f"{gateway.url}/api/schema/?format=json", timeout=30).json()
    return sum(len(methods) for methods in schema["paths"].values())


@pytest.mark.parametrize("path", OPERATION)
def test_the_docs_render_every_operation_offline(browser, gateway, operation_count, path):
    with offline_page(browser, gateway.url) as (page, traffic):
        page.goto(f"{gateway.url}{path}", wait_until="networkidle")
        page.wait_for_selector(OPERATION[path], timeout=30_000)
        if path == "/redoc":
            # ReDoc lists every operation in its side menu, under its area.
            rendered = page.locator(OPERATION[path]).count()
        else:
            # Swagger UI renders the operations of every area, each area expanded.
            rendered = page.locator(".opblock").count()
        text = page.inner_text("body")
        assert rendered == operation_count, (path, rendered, operation_count)
        for area in AREAS:
            assert area in text, (path, area)
        assert "/v1/chat/completions" in text
        assert traffic.refused == [], traffic.refused
        assert any(url.endswith("/api/schema/") for url in traffic.requested), traffic.requested
