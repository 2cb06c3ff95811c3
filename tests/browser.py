"""A real headless Chromium for tests of pages people open in a browser.

Debian's `chromium` (installed by `make test` when missing: the `browser` target) driven by
Playwright over the DevTools protocol; Playwright's own browser downloads are never used, so
the tests need no internet. `offline_page(browser, allowed_origin)` opens a page whose every
request is recorded, and aborted unless it goes to `allowed_origin` (the gateway under test), so
a test can assert that a page made no request elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """Return the path of the system's Chromium, or None."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return configured
    return next(filter(None, map(shutil.which, CHROMIUM_CANDIDATES)), None)


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the session (skipped without one; a failure under CI, where
    `make test` installs it)."""
    path = chromium_path()
    if path is None:
        message = "Chromium is not installed: run `make browser` (Debian's chromium package)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Traffic:
    """What a page asked for: every URL, and those refused for leaving the allowed origin."""

    requested: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@contextmanager
def offline_page(browser, allowed_origin: str, **context_options) -> Iterator[tuple]:
    """Yield `(page, traffic)`: a new page in a context of its own that may reach only
    `allowed_origin` (data: and blob: URLs stay local); anything else is aborted and recorded
    in `traffic.refused`."""
    context = browser.new_context(**context_options)
    traffic = Traffic()
    allowed = _origin(allowed_origin)

    def route(route, request) -> None:
        url = request.url
        traffic.requested.append(url)
        if url.startswith(("data:", "blob:")) or _origin(url) == allowed:
            route.continue_()
        else:
            traffic.refused.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", route)
    page = context.new_page()
    try:
        yield page, traffic
    finally:
        context.close()
