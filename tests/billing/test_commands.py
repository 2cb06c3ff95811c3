"""createapikey, grantcredits and releaseholds."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing import keys
from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry
from billing.money import MICRO
from billing.services import credits_hold
from tests.billing.conftest import key_client


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_createapikey_prints_a_working_key(alice):
    out, err = run("createapikey", "alice", "--name", "deploy", "--expires-days", "30")
    key = out.strip()
    assert keys.is_well_formed(key)
    assert key not in err and "cannot be shown again" in err
    api_key = ApiKey.objects.get(digest=keys.digest(key))
    assert (api_key.user, api_key.name) == (alice, "deploy")
    assert 29 <= (api_key.expires_at - timezone.now()).days <= 30
    assert key_client(key).get("/api/billing/balance/").status_code == 200


def test_createapikey_without_options_makes_a_key_that_never_expires(alice):
    out, _ = run("createapikey", "alice")
    api_key = ApiKey.objects.get(digest=keys.digest(out.strip()))
    assert (api_key.name, api_key.expires_at) == ("cli", None)


def test_createapikey_can_create_the_user_with_signup_credits(db):
    out, _ = run("createapikey", "carol", "--create-user")
    api_key = ApiKey.objects.get(digest=keys.digest(out.strip()))
    assert api_key.user.username == "carol"
    assert not api_key.user.has_usable_password()
    assert CreditAccount.objects.get(user=api_key.user).balance == 500 * MICRO
    again, _ = run("createapikey", "carol", "--create-user")  # an existing user is reused
    assert ApiKey.objects.get(digest=keys.digest(again.strip())).user == api_key.user


@pytest.mark.parametrize("command", [["createapikey", "nobody"], ["grantcredits", "nobody", "5"]])
def test_the_commands_fail_clearly_on_an_unknown_user(db, command):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run(*command)
    assert not ApiKey.objects.exists() and not LedgerEntry.objects.exists()


def test_createapikey_refuses_a_bad_expiry(alice):
    with pytest.raises(CommandError):
        run("createapikey", "alice", "--expires-days", "0")


def test_grantcredits_grants_credits_with_a_note(alice):
    out, _ = run("grantcredits", "alice", "2.5", "--note", "support ticket 42")
    assert out.strip() == "Granted 2.5 credits to alice; the balance is now 502.5."
    entry = LedgerEntry.objects.filter(account_id=alice.pk).order_by("-id").first()
    assert (entry.kind, entry.amount, entry.note) == ("grant", 2_500_000, "support ticket 42")


def test_grantcredits_with_a_negative_amount_deducts(alice):
    out, _ = run("grantcredits", "alice", "-100")
    assert out.strip() == "Deducted 100 credits from alice; the balance is now 400."
    assert CreditAccount.objects.get(pk=alice.pk).balance == 400 * MICRO


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("0", "must not be zero"),
        ("ten", "not a number"),
        ("0.0000001", "six decimal places"),
        ("-501", "only 500 are available"),
    ],
)
def test_grantcredits_refuses_bad_amounts_clearly(alice, amount, message):
    with pytest.raises(CommandError, match=message):
        run("grantcredits", "alice", amount)
    assert CreditAccount.objects.get(pk=alice.pk).balance == 500 * MICRO


def test_releaseholds_releases_expired_holds(alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="dead")
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="alive")
    CreditHold.objects.filter(request_id="dead").update(expires_at=timezone.now())
    out, _ = run("releaseholds")
    assert out.strip() == "Released 1 expired hold(s)."
    assert CreditHold.objects.get(request_id="dead").status == "expired"
    assert CreditAccount.objects.get(pk=alice.pk).held == MICRO
