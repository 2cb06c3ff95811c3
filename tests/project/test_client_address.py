"""The client's address, as every throttle sees it: X-Forwarded-For only as far as it is trusted."""

import pytest
from django.test import RequestFactory

from project.checks import check_throttle_rates, check_trusted_proxies
from project.clients import client_address
from project.throttling import address_ident

ATTACKER = "198.51.100.7"


def request_from(remote: str, forwarded: str | None = None):
    headers = {"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {}
    return RequestFactory().get("/", REMOTE_ADDR=remote, **headers)


@pytest.fixture
def num_proxies(settings):
    def configure(count: int | None) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}

    return configure


def test_by_default_the_header_is_ignored_and_the_client_is_the_peer(settings):
    assert settings.TRUSTED_PROXIES == []
    assert client_address(request_from(ATTACKER, "203.0.113.1")) == ATTACKER
    assert client_address(request_from(ATTACKER, "203.0.113.1, 203.0.113.2")) == ATTACKER


def test_behind_a_trusted_proxy_the_client_is_the_address_it_saw(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    assert client_address(request_from("10.0.0.5", ATTACKER)) == ATTACKER


def test_addresses_the_client_wrote_itself_are_not_believed(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    # The client sent "X-Forwarded-For: 1.2.3.4"; our proxy appended the address it saw.
    assert client_address(request_from("10.0.0.5", f"1.2.3.4, {ATTACKER}")) == ATTACKER


def test_a_chain_of_trusted_proxies_and_networks_is_walked_back(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.10"]
    request = request_from("10.1.2.3", f"6.6.6.6, {ATTACKER}, 192.0.2.10, 10.9.9.9")
    assert client_address(request) == ATTACKER


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_sends(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(request_from(ATTACKER, "10.0.0.1")) == ATTACKER


def test_a_request_from_inside_is_the_farthest_hop(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    assert client_address(request_from("10.0.0.2", "10.0.0.9, 10.0.0.3")) == "10.0.0.9"
    assert client_address(request_from("10.0.0.2")) == "10.0.0.2"


def test_ports_brackets_and_mapped_ipv4_are_understood(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.5", "2001:db8::5"]
    assert client_address(request_from("10.0.0.5", f"{ATTACKER}:4711")) == ATTACKER
    assert client_address(request_from("2001:db8::5", "[2001:db8::77]:443")) == "2001:db8::77"
    assert client_address(request_from("::ffff:10.0.0.5", ATTACKER)) == ATTACKER


def test_num_proxies_takes_the_address_the_outermost_proxy_saw(num_proxies):
    num_proxies(1)
    assert client_address(request_from("10.0.0.5", f"1.2.3.4, {ATTACKER}")) == ATTACKER
    num_proxies(2)
    assert client_address(request_from("10.0.0.5", f"1.2.3.4, {ATTACKER}, 10.0.0.6")) == ATTACKER
    assert client_address(request_from("10.0.0.5")) == "10.0.0.5"


def test_trusted_proxies_take_precedence_over_num_proxies(settings, num_proxies):
    num_proxies(2)
    settings.TRUSTED_PROXIES = ["10.0.0.5"]
    assert client_address(request_from("10.0.0.5", f"1.2.3.4, {ATTACKER}")) == ATTACKER


def test_an_ipv6_client_is_counted_by_its_64_so_it_cannot_step_through_its_own(settings):
    first = address_ident(request_from("2001:db8:1:2::1"))
    second = address_ident(request_from("2001:db8:1:2:ffff::99"))
    assert first == second == "2001:db8:1:2::/64"
    assert address_ident(request_from("2001:db8:1:3::1")) != first
    assert address_ident(request_from(ATTACKER)) == ATTACKER


def test_a_bad_trusted_proxies_entry_fails_the_system_check(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8", "proxy.internal"]
    errors = check_trusted_proxies()
    assert [error.id for error in errors] == ["project.E003"]
    assert "'proxy.internal'" in errors[0].msg


def test_a_bad_throttle_rate_fails_the_system_check_naming_its_variable(settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "signup": "lots"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    errors = check_throttle_rates()
    assert [error.id for error in errors] == ["project.E004"]
    assert errors[0].msg.startswith("SIGNUP_THROTTLE_RATE: 'lots' is not a rate")
