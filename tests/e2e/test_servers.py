"""Both servers (production granian, development runserver) with DEBUG=False serve the pages
people open in a browser, styled: the admin's and the API docs' CSS and JavaScript."""

import re

import httpx
import pytest

from tests.live import LiveGateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["granian", "runserver"])
def gateway(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp(request.param)
    with LiveGateway({"DEBUG": "False"}, server=request.param, workdir=workdir) as gateway:
        yield gateway


@pytest.mark.parametrize("page", ["/admin/login/", "/docs", "/redoc"])
def test_a_page_and_every_asset_it_links_load(gateway, page):
    response = httpx.get(f"{gateway.url}{page}")
    assert response.status_code == 200
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', response.text)

    assert assets, response.text
    for asset in assets:
        loaded = httpx.get(f"{gateway.url}{asset}")
        assert loaded.status_code == 200, asset
        assert loaded.content, asset
