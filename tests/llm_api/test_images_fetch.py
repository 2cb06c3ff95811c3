"""http(s) image URLs: fetched only when allowed, never from the gateway's own networks (SSRF).

The fetch path under test is the real one; a test server that must be reachable sits on
127.0.0.2, let in by IMAGE_FETCH_ALLOWED_NETWORKS (the setting an operator would use for an
internal image host), while the "victim" servers on 127.0.0.1 stay forbidden. The servers
listen on ports of their own, let in by IMAGE_FETCH_PORTS (80 and 443 only, unless an operator
adds one). Name lookups go through `resolve_host`, the DNS seam, which some tests stand in for.
"""

import base64
import shutil
import ssl
import subprocess
import time

import pytest

from billing.models import CreditHold
from billing.services import credits_grant
from llm_api import image_urls
from llm_api.exceptions import ImageTooLarge, InvalidParameter, UnsupportedImage
from llm_api.image_urls import address_allowed
from llm_api.images import image_fetched, image_from_url
from tests.llm_api.conftest import balance, chat
from tests.llm_api.image_server import ImageServer, Route
from tests.llm_api.seed_support import image_bytes, noisy_png
from tests.llm_api.test_image_limits import png_claiming

PNG = image_bytes("PNG")
NOT_PUBLIC = "non-public address"


@pytest.fixture
def fetching(settings):
    settings.IMAGE_URL_FETCH = True
    settings.IMAGE_FETCH_TIMEOUT = 2.0
    settings.IMAGE_FETCH_ALLOWED_NETWORKS = ["127.0.0.2/32"]
    return settings


def port_allowed(settings, server: ImageServer) -> None:
    settings.IMAGE_FETCH_PORTS = [*settings.IMAGE_FETCH_PORTS, server.port]


@pytest.fixture
def victim(settings):
    """A server on the loopback address the gateway must never reach."""
    server = ImageServer("127.0.0.1")
    server.serve("/secret.png", Route(body=PNG, headers={"Content-Type": "image/png"}))
    port_allowed(settings, server)  # so that only the address rule can refuse it
    yield server
    server.stop()


@pytest.fixture
def allowed(settings):
    """An image host the test lets the gateway reach."""
    server = ImageServer("127.0.0.2")
    server.serve("/cat.png", Route(body=PNG, headers={"Content-Type": "image/png"}))
    port_allowed(settings, server)
    yield server
    server.stop()


def fetch(url: str):
    """Record the URL as validation does, then fetch it as the pipeline does once credits are
    held."""
    return image_fetched(image_from_url(url, param="messages.0.content.1.image_url.url"))


# --- off by default -----------------------------------------------------------------------------


def test_urls_are_not_fetched_unless_the_setting_allows(settings, allowed):
    assert settings.IMAGE_URL_FETCH is False
    with pytest.raises(InvalidParameter, match="does not fetch image URLs"):
        fetch(f"{allowed.url}/cat.png")
    assert allowed.requests == []


# --- what may be fetched ------------------------------------------------------------------------


def test_an_allowed_host_is_fetched_with_its_own_host_header(fetching, allowed):
    part = fetch(f"{allowed.url}/cat.png")
    assert (part.data, part.mime_type) == (PNG, "image/png")
    [seen] = allowed.requests
    assert seen.headers["host"] == f"127.0.0.2:{allowed.port}"


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    fetching, allowed, victim, monkeypatch
):
    # DNS rebinding: the first answer is allowed, every later one points at the victim.
    answers = iter([["127.0.0.2"]] + [["127.0.0.1"]] * 5)
    lookups = []

    def rebinding_dns(host, port):
        lookups.append(host)
        return [image_urls.ipaddress.ip_address(a) for a in next(answers)]

    monkeypatch.setattr(image_urls, "resolve_host", rebinding_dns)
    part = fetch(f"http://images.example:{allowed.port}/cat.png")
    assert part.data == PNG
    assert lookups == ["images.example"]
    assert allowed.requests[0].headers["host"] == f"images.example:{allowed.port}"
    assert victim.requests == []


def test_a_redirect_to_an_allowed_place_is_followed(fetching, allowed):
    allowed.redirect("/old.png", "/cat.png", status=301)
    assert fetch(f"{allowed.url}/old.png").data == PNG
    assert [seen.path for seen in allowed.requests] == ["/old.png", "/cat.png"]


# --- what may not -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "2130706433",  # 127.0.0.1 as one number
        "0x7f.1",
        "0.0.0.0",
        "127.1",
    ],
)
def test_loopback_in_any_spelling_is_refused_without_a_request(fetching, victim, host):
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch(f"http://{host}:{victim.port}/secret.png")
    assert victim.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://[fe80::1]/x.png",
        "http://10.0.0.8/x.png",
        "http://172.16.5.4/x.png",
        "http://192.168.1.1/x.png",
        "http://100.64.0.1/x.png",  # carrier-grade NAT
        "http://224.0.0.1/x.png",
        "http://[ff02::1]/x.png",
        "http://240.0.0.1/x.png",
        "http://[fd00::1]/x.png",
        "http://[::1]/x.png",
        "http://[2002:a9fe:a9fe::1]/x.png",  # 6to4 wrapping 169.254.169.254
        "http://[64:ff9b::a9fe:a9fe]/x.png",  # NAT64 wrapping 169.254.169.254
    ],
)
def test_private_link_local_and_reserved_addresses_are_refused_before_connecting(fetching, url):
    started = time.monotonic()
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch(url)
    assert time.monotonic() - started < 0.5  # refused, not timed out


def test_a_name_with_any_private_address_is_refused(fetching, victim, monkeypatch):
    monkeypatch.setattr(
        image_urls,
        "resolve_host",
        lambda host, port: [
            image_urls.ipaddress.ip_address(a) for a in ("93.184.216.34", "10.1.1.1")
        ],
    )
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch("http://mixed.example/x.png")


def test_a_redirect_to_loopback_is_refused_without_a_request(fetching, allowed, victim):
    allowed.redirect("/hop.png", f"http://127.0.0.1:{victim.port}/secret.png")
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch(f"{allowed.url}/hop.png")
    assert victim.requests == []


def test_a_redirect_to_the_metadata_address_is_refused(fetching, allowed):
    allowed.redirect("/hop.png", "http://169.254.169.254/latest/meta-data/iam/")
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch(f"{allowed.url}/hop.png")
    assert [seen.path for seen in allowed.requests] == ["/hop.png"]


def test_more_than_three_redirects_are_refused(fetching, allowed):
    for hop in range(4):
        allowed.redirect(f"/r{hop}", f"/r{hop + 1}")
    allowed.serve("/r4", Route(body=PNG))
    with pytest.raises(InvalidParameter, match="more than 3 times"):
        fetch(f"{allowed.url}/r0")
    assert len(allowed.requests) == 4


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.2/x.png", "http://user:pass@127.0.0.2/x.png", "file:///etc/passwd"],
)
def test_other_schemes_and_credentials_are_refused(fetching, url):
    with pytest.raises(InvalidParameter):
        fetch(url)


# --- limits -------------------------------------------------------------------------------------


def test_a_declared_size_over_the_limit_is_a_413_before_reading(fetching, allowed):
    fetching.IMAGE_MAX_BYTES = 1000
    allowed.serve("/big.png", Route(body=noisy_png((30, 30))))
    with pytest.raises(ImageTooLarge, match="1,000 bytes"):
        fetch(f"{allowed.url}/big.png")


def test_an_undeclared_size_over_the_limit_is_a_413_while_reading(fetching, allowed):
    fetching.IMAGE_MAX_BYTES = 10_000
    allowed.serve("/big.png", Route(body=noisy_png((100, 100)), chunked=True))
    with pytest.raises(ImageTooLarge, match="larger than the limit of 10,000 bytes"):
        fetch(f"{allowed.url}/big.png")


def test_a_slow_host_times_out(fetching, allowed):
    fetching.IMAGE_FETCH_TIMEOUT = 0.5
    allowed.serve("/slow.png", Route(body=PNG, delay=2))
    started = time.monotonic()
    with pytest.raises(InvalidParameter, match=r"within 0\.5 seconds"):
        fetch(f"{allowed.url}/slow.png")
    assert time.monotonic() - started < 1.9  # gave up before the host's 2 s answer


def test_a_failed_fetch_says_the_status(fetching, allowed):
    with pytest.raises(InvalidParameter, match="HTTP 404"):
        fetch(f"{allowed.url}/missing.png")


def test_a_fetched_file_that_is_not_an_image_is_a_415(fetching, allowed):
    allowed.serve("/page.png", Route(body=b"<html>hello</html>"))
    with pytest.raises(UnsupportedImage):
        fetch(f"{allowed.url}/page.png")


# --- TLS: the certificate must name the host, though the connection goes to its address --------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", folder / "key.pem", "-out", folder / "cert.pem",
         "-subj", "/CN=images.example", "-addext", "subjectAltName=DNS:images.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder


@pytest.fixture
def tls_server(certificate, fetching, monkeypatch):
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(certificate / "cert.pem", certificate / "key.pem")
    server = ImageServer("127.0.0.2", tls=server_tls)
    server.serve("/cat.png", Route(body=PNG))
    port_allowed(fetching, server)
    trust = ssl.create_default_context(cafile=str(certificate / "cert.pem"))
    monkeypatch.setattr(image_urls, "tls_verify", lambda: trust)  # the trust store, nothing else
    monkeypatch.setattr(
        image_urls,
        "resolve_host",
        lambda host, port: [image_urls.ipaddress.ip_address("127.0.0.2")],
    )
    yield server
    server.stop()


def test_https_checks_the_certificate_against_the_host_name(tls_server):
    assert fetch(f"https://images.example:{tls_server.port}/cat.png").data == PNG
    assert tls_server.requests[0].headers["host"] == f"images.example:{tls_server.port}"


def test_https_refuses_a_certificate_for_another_name(tls_server):
    with pytest.raises(InvalidParameter, match="could not be fetched"):
        fetch(f"https://other.example:{tls_server.port}/cat.png")


# --- through the API ----------------------------------------------------------------------------


@pytest.mark.usefixtures("upstream_providers")
def test_a_fetched_image_reaches_the_model_as_bytes(key_api, fake_upstream, fetching, allowed):
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": f"{allowed.url}/cat.png"}},
    ]
    response = chat(key_api, model="openai/gpt-4o", messages=[{"role": "user", "content": content}])
    assert response.status_code == 200, response.content
    url = fake_upstream.last.body["messages"][0]["content"][1]["image_url"]["url"]
    assert url == "data:image/png;base64," + base64.b64encode(PNG).decode()


@pytest.mark.usefixtures("upstream_providers")
def test_an_ssrf_attempt_through_the_api_is_a_400_naming_the_part(
    key_api, fake_upstream, fetching, victim
):
    content = [{"type": "image_url", "image_url": {"url": f"{victim.url}/secret.png"}}]
    response = chat(key_api, model="openai/gpt-4o", messages=[{"role": "user", "content": content}])
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.0.image_url.url"
    assert NOT_PUBLIC in error["message"]
    assert victim.requests == []
    assert fake_upstream.requests == []


def test_the_address_rules():
    allowed = [
        "93.184.216.34",
        "2606:4700::1111",
        "::ffff:93.184.216.34",
    ]
    refused = [
        "127.0.0.1", "::1", "::", "::ffff:10.0.0.1", "169.254.0.5", "fe80::1", "fc00::5",
        "64:ff9b:1::808:808", "::ffff:0:808:808",
    ]  # fmt: skip
    ip = image_urls.ipaddress.ip_address
    assert all(address_allowed(ip(a)) for a in allowed)
    assert not any(address_allowed(ip(a)) for a in refused)


# --- fetched only once credits are held ---------------------------------------------------------


def url_message(*urls: str) -> list[dict]:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, *parts]}]


def test_validation_only_records_an_image_url(fetching, allowed):
    part = image_from_url(f"{allowed.url}/cat.png", param="messages.0.content.1.image_url.url")
    assert part.pending
    assert (part.data, part.url) == (b"", f"{allowed.url}/cat.png")
    assert allowed.requests == []


@pytest.mark.usefixtures("upstream_providers")
def test_without_credits_an_image_url_is_a_402_and_never_fetched(
    key_api, alice, fake_upstream, fetching, allowed
):
    credits_grant(user=alice, amount=-balance(alice), note="spent")
    response = chat(key_api, model="openai/gpt-4o", messages=url_message(f"{allowed.url}/cat.png"))
    assert response.status_code == 402, response.content
    assert response.json()["error"]["code"] == "insufficient_credits"
    assert allowed.requests == []
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("upstream_providers")
def test_a_failed_fetch_releases_the_hold_and_charges_nothing(
    key_api, alice, fake_upstream, fetching, allowed
):
    before = balance(alice)
    response = chat(
        key_api, model="openai/gpt-4o", messages=url_message(f"{allowed.url}/missing.png")
    )
    assert response.status_code == 400, response.content
    assert "HTTP 404" in response.json()["error"]["message"]
    assert [seen.path for seen in allowed.requests] == ["/missing.png"]
    assert balance(alice) == before
    assert CreditHold.objects.get().status == CreditHold.Status.RELEASED
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("upstream_providers")
def test_image_urls_over_the_count_limit_are_a_413_before_any_fetch(
    key_api, fake_upstream, fetching, allowed
):
    fetching.IMAGE_MAX_COUNT = 2
    url = f"{allowed.url}/cat.png"
    response = chat(key_api, model="openai/gpt-4o", messages=url_message(url, url, url))
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_COUNT" in response.json()["error"]["message"]
    assert allowed.requests == []
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("upstream_providers")
def test_fetched_images_over_the_total_size_limit_are_a_413(
    key_api, fake_upstream, fetching, allowed
):
    fetching.IMAGE_MAX_TOTAL_BYTES = len(PNG) * 2 - 1
    url = f"{allowed.url}/cat.png"
    response = chat(key_api, model="openai/gpt-4o", messages=url_message(url, url))
    assert response.status_code == 413, response.content
    error = response.json()["error"]
    assert "IMAGE_MAX_TOTAL_BYTES" in error["message"]
    assert error["param"] == "messages.0.content.2.image_url.url"
    assert fake_upstream.requests == []


@pytest.mark.usefixtures("upstream_providers")
def test_a_fetched_bomb_is_a_413_naming_the_pixel_limit(
    key_api, fake_upstream, fetching, allowed, caplog
):
    allowed.serve("/bomb.png", Route(body=png_claiming(20_000, 20_000)))
    response = chat(key_api, model="openai/gpt-4o", messages=url_message(f"{allowed.url}/bomb.png"))
    assert response.status_code == 413, response.content
    assert "IMAGE_MAX_PIXELS" in response.json()["error"]["message"]
    assert fake_upstream.requests == []
    assert "Traceback" not in caplog.text


@pytest.mark.usefixtures("upstream_providers")
def test_the_responses_api_fetches_an_input_image_url_too(
    key_api, fake_upstream, fetching, allowed
):
    item = {
        "role": "user",
        "content": [{"type": "input_image", "image_url": f"{allowed.url}/cat.png"}],
    }
    response = key_api.post(
        "/v1/responses", {"model": "openai/gpt-4o", "input": [item]}, format="json"
    )
    assert response.status_code == 200, response.content
    [part] = fake_upstream.last.body["messages"][0]["content"]
    assert part["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(PNG).decode()


# --- ports and translated addresses -------------------------------------------------------------


@pytest.mark.parametrize("url", ["http://93.184.216.34:8080/x.png", "https://93.184.216.34:22/x"])
def test_a_port_other_than_80_or_443_is_refused_naming_the_rule(fetching, url):
    with pytest.raises(InvalidParameter, match=r"port 80 or 443 \(IMAGE_FETCH_PORTS\)"):
        image_from_url(url, param="messages.0.content.1.image_url.url")


@pytest.mark.usefixtures("upstream_providers")
def test_a_port_refusal_through_the_api_is_a_400_naming_the_part(key_api, fake_upstream, fetching):
    response = chat(
        key_api, model="openai/gpt-4o", messages=url_message("http://93.184.216.34:6379/x.png")
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages.0.content.1.image_url.url"
    assert "IMAGE_FETCH_PORTS" in error["message"]
    assert "6379" in error["message"]
    assert fake_upstream.requests == []


def test_a_redirect_to_another_port_is_refused(fetching, allowed, victim, monkeypatch):
    fetching.IMAGE_FETCH_PORTS = [80, 443, allowed.port]  # not the victim's
    monkeypatch.setattr(image_urls, "address_allowed", lambda address: True)  # only the port rule
    allowed.redirect("/hop.png", f"http://127.0.0.1:{victim.port}/secret.png")
    with pytest.raises(InvalidParameter, match="IMAGE_FETCH_PORTS"):
        fetch(f"{allowed.url}/hop.png")
    assert victim.requests == []


@pytest.mark.parametrize(
    "host",
    [
        "[64:ff9b:1::a00:1]",  # local-use NAT64 wrapping 10.0.0.1
        "[64:ff9b:1::808:808]",  # … even wrapping a public address
        "[::ffff:0:7f00:1]",  # SIIT, IPv4-translated 127.0.0.1
        "[::ffff:0:808:808]",  # … 8.8.8.8
    ],
)
def test_translated_ipv6_prefixes_are_refused_without_a_request(fetching, host):
    started = time.monotonic()
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch(f"http://{host}/x.png")
    assert time.monotonic() - started < 0.5  # refused, not timed out


def test_a_name_resolving_to_a_translated_address_is_refused(fetching, monkeypatch):
    monkeypatch.setattr(
        image_urls,
        "resolve_host",
        lambda host, port: [image_urls.ipaddress.ip_address("64:ff9b:1::1")],
    )
    with pytest.raises(InvalidParameter, match=NOT_PUBLIC):
        fetch("http://translated.example/x.png")
