"""The ledger through any sequence of money moves: a property-based state machine.

Hypothesis drives grants, deductions, holds, settles, releases and the stale-hold sweep in any
order on two users and their keys (spend-capped and not), through the real services in
`billing/services/credits.py`, interleaved with the limits' acquire and release and the passing
of time (`llm_api.limits.store.LocalStore`), and checks after every step: balance = the sum of
the entries and never below zero, held = the open holds (per account and per key), each request
settled at most once, no hold past its expiry after a sweep, each move doing what it said, and
no user past a limit: places in flight, requests and tokens in the last minute.

Time is not slept: a hold takes a short or the configured HOLD_TTL_SECONDS, and the sweep is
given a `now` in the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency")

from django.conf import settings  # noqa: E402
from django.db import transaction  # noqa: E402
from django.test import override_settings  # noqa: E402
from django.utils import timezone  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.services import user_create  # noqa: E402
from billing.exceptions import InsufficientCredits, SpendCapExceeded  # noqa: E402
from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry  # noqa: E402
from billing.services import (  # noqa: E402
    api_key_create,
    credits_grant,
    credits_hold,
    credits_release,
    credits_settle,
    holds_expire,
)
from llm_api.limits.store import WINDOW_MS, Counter, Kind, LocalStore  # noqa: E402
from tests.ledger import (  # noqa: E402
    assert_invariants,
    assert_key_invariants,
    assert_settled_at_most_once,
)

pytestmark = pytest.mark.django_db

SHORT_TTL = 60  # seconds: a hold the sweep can expire while the others stay
USERS = ("alice", "bob")
# Where a hold is taken: (user, key); "capped" keys have a spend cap, "open" ones none.
WALLETS = [
    ("alice", None),
    ("alice", "capped"),
    ("alice", "open"),
    ("bob", None),
    ("bob", "capped"),
]
SMALL = st.integers(0, 120)  # micro-credits: small, so holds, caps and balances collide
USAGE = LedgerEntry.Kind.USAGE
RELEASE = "release"


@dataclass
class Hold:
    """What the model knows of one request's hold."""

    user: str
    key: str | None
    amount: int
    expires_at: datetime
    status: str = "held"  # then settled, released or expired (an expired one may still settle)


@dataclass
class LimitCall:
    """What the model knows of one call holding a place in flight."""

    user: str
    tokens: int


LIMIT_IN_FLIGHT, LIMIT_REQUESTS, LIMIT_TOKENS = 2, 4, 500


def limit_counters(user: str, tokens: int) -> list[Counter]:
    """The counters of a user's call: 2 in flight, 4 requests and 500 tokens a minute."""
    return [
        Counter(f"in_flight:user:{user}", Kind.IN_FLIGHT, LIMIT_IN_FLIGHT),
        Counter(f"requests:user:{user}", Kind.REQUESTS, LIMIT_REQUESTS),
        Counter(f"tokens:user:{user}", Kind.TOKENS, LIMIT_TOKENS, amount=tokens),
    ]


@dataclass(frozen=True)
class Books:
    """The money rows of one moment: (balance, held) per account, (held, spent) per key."""

    accounts: dict[str, tuple[int, int]]
    keys: dict[tuple[str, str], tuple[int, int]]

    def available(self, user: str) -> int:
        balance, held = self.accounts[user]
        return balance - held


class LedgerMachine(RuleBasedStateMachine):
    """The books of two users through any sequence of money moves.

    Each example runs in a savepoint that is rolled back at its end, so examples start clean.
    To add a rule (say, the in-flight limits' acquire and release): draw a wallet from WALLETS
    or a request from `requests`, take `self.books()` before, call the real service, assert
    what the move must have done against the model (`self.holds`), record its effect there, and
    put what must hold after every step in `books_balance` (or a new @invariant).
    """

    requests = Bundle("requests")
    # A key's spent stays within its spend cap (the two examples at the end are the ways a
    # settle could once pass it).
    check_spend_cap = True

    def __init__(self) -> None:
        super().__init__()
        self._example = transaction.atomic()
        self._example.__enter__()
        self.users: dict[str, object] = {}
        self.keys: dict[tuple[str, str], ApiKey] = {}
        self.holds: dict[str, Hold] = {}
        self.serial = 0  # request ids handed out
        self.grants = 0
        # Users with a settle that charged less than its cost: whatever the books do with the
        # rest (a note, a debt), their later holds and grants are not predicted here.
        self.short: set[str] = set()
        # The limits, counted in process on a clock the machine moves.
        self.clock = 10**9
        self.limits = LocalStore(clock=lambda: self.clock)
        self.admitted: dict[str, LimitCall] = {}
        self.window: list[list] = []  # [user, admitted at, call id, tokens]

    def teardown(self) -> None:
        transaction.set_rollback(True)
        self._example.__exit__(None, None, None)

    # --- the world ----------------------------------------------------------------------

    @initialize(
        alice=st.integers(0, 400),
        bob=st.integers(0, 400),
        alice_cap=st.integers(0, 200),
        bob_cap=st.integers(0, 200),
    )
    def open_accounts(self, alice: int, bob: int, alice_cap: int, bob_cap: int) -> None:
        for name, credits in (("alice", alice), ("bob", bob)):
            self.users[name] = user_create(username=name, password=None)
            if credits:
                credits_grant(user=self.users[name], amount=credits, note="start")
        for user, key, cap in (
            ("alice", "capped", alice_cap),
            ("alice", "open", None),
            ("bob", "capped", bob_cap),
        ):
            api_key, _ = api_key_create(user=self.users[user], name=key, spend_cap=cap)
            self.keys[(user, key)] = api_key

    def books(self) -> Books:
        names = {user.pk: name for name, user in self.users.items()}
        wallets = {key.pk: wallet for wallet, key in self.keys.items()}
        accounts = CreditAccount.objects.filter(pk__in=names).values_list("pk", "balance", "held")
        keys = ApiKey.objects.filter(pk__in=wallets).values_list("pk", "held", "spent")
        return Books(
            {names[pk]: (balance, held) for pk, balance, held in accounts},
            {wallets[pk]: (held, spent) for pk, held, spent in keys},
        )

    def key_id(self, user: str, key: str | None) -> int | None:
        return self.keys[(user, key)].pk if key else None

    # --- the moves ------------------------------------------------------------------------

    # At most one grant per hold taken: left alone, Hypothesis spends most steps on grants
    # (always possible), few on settles (which need a request).
    @precondition(lambda self: self.grants < self.serial)
    @rule(user=st.sampled_from(USERS), amount=st.integers(-150, 150).filter(bool))
    def grant(self, user: str, amount: int) -> None:
        """A grant adds; a deduction takes only what is available, else nothing."""
        self.grants += 1
        before = self.books()
        try:
            entry = credits_grant(user=self.users[user], amount=amount, note="machine")
        except InsufficientCredits:
            assert amount < 0 and before.available(user) < -amount
            assert self.books() == before
            return
        assert entry.amount == amount
        assert amount > 0 or before.available(user) >= -amount
        if amount < 0 or user not in self.short:
            balance, held = before.accounts[user]
            assert self.books().accounts[user] == (balance + amount, held)

    @rule(
        target=requests,
        wallet=st.sampled_from(WALLETS),
        amount=SMALL,
        short=st.booleans(),
    )
    def hold(self, wallet: tuple[str, str | None], amount: int, short: bool) -> object:
        """A hold reserves on the account and the key, or refuses and changes nothing."""
        user, key = wallet
        self.serial += 1
        request_id = f"req_{self.serial}"
        before = self.books()
        ttl = SHORT_TTL if short else settings.HOLD_TTL_SECONDS
        try:
            with override_settings(HOLD_TTL_SECONDS=ttl):
                credits_hold(
                    user_id=self.users[user].pk,
                    amount=amount,
                    request_id=request_id,
                    api_key_id=self.key_id(user, key),
                )
        except (InsufficientCredits, SpendCapExceeded) as refusal:
            assert self.books() == before
            assert not CreditHold.objects.filter(request_id=request_id).exists()
            if isinstance(refusal, SpendCapExceeded):
                held, spent = before.keys[(user, key)]
                assert spent + held + amount > self.keys[(user, key)].spend_cap
            elif user not in self.short:
                assert before.available(user) < amount, "an affordable hold was refused"
            return multiple()
        assert before.available(user) >= amount
        if key:
            held, spent = before.keys[(user, key)]
            cap = self.keys[(user, key)].spend_cap
            assert cap is None or spent + held + amount <= cap
        row = CreditHold.objects.get(request_id=request_id)
        assert (row.amount, row.status) == (amount, "held")
        self.holds[request_id] = Hold(user, key, amount, row.expires_at)
        return request_id

    # Each request ends in a settle at some cost or a release, as in the pipeline; drawn again,
    # an ended request must not be charged or freed twice.
    @rule(request_id=requests, end=st.one_of(st.integers(0, 250), st.just(RELEASE)))
    def finish(self, request_id: str, end: int | str) -> None:
        hold = self.holds[request_id]
        if end == RELEASE:
            self.release(request_id, hold)
        else:
            self.settle(request_id, hold, end)

    def settle(self, request_id: str, hold: Hold, cost: int) -> None:
        """Exactly once per request: charge at most the cost and at most what was available
        (the hold plus the free balance), never below zero; release the hold."""
        before = self.books()
        entry = credits_settle(
            request_id=request_id, cost=cost, prompt_tokens=cost, completion_tokens=1
        )
        if hold.status not in ("held", "expired"):
            assert entry is None
            assert self.books() == before
            return
        assert entry is not None, f"{request_id} ({hold.status}) was not settled"
        assert (entry.kind, entry.request_id) == (USAGE, request_id)
        released = hold.amount if hold.status == "held" else 0
        charged = -entry.amount
        assert 0 <= charged <= cost
        assert charged <= before.available(hold.user) + released
        if released and cost <= released:
            assert charged == cost
        after = self.books()
        balance, held = before.accounts[hold.user]
        assert after.accounts[hold.user] == (balance - charged, held - released)
        if hold.key:
            key_held, _ = before.keys[(hold.user, hold.key)]
            assert after.keys[(hold.user, hold.key)][0] == key_held - released
        if charged < cost:
            self.short.add(hold.user)
        hold.status = "settled"

    def release(self, request_id: str, hold: Hold) -> None:
        """Release frees an open hold untouched, else does nothing."""
        before = self.books()
        released = credits_release(request_id=request_id)
        if hold.status != "held":
            assert released is False
            assert self.books() == before
            return
        assert released is True
        after = self.books()
        balance, held = before.accounts[hold.user]
        assert after.accounts[hold.user] == (balance, held - hold.amount)
        hold.status = "released"

    @precondition(lambda self: any(hold.status == "held" for hold in self.holds.values()))
    @rule(after=st.sampled_from([SHORT_TTL + 1, 10**6]))
    def expire(self, after: int) -> None:
        """The sweep at `now` expires exactly the open holds due by then, and only frees them."""
        now = timezone.now() + timedelta(seconds=after)
        due = [h for h in self.holds.values() if h.status == "held" and h.expires_at <= now]
        before = self.books()
        assert holds_expire(now=now) == len(due)
        assert not CreditHold.objects.filter(status="held", expires_at__lte=now).exists()
        after_expiry = self.books()
        for user in USERS:
            freed = sum(h.amount for h in due if h.user == user)
            balance, held = before.accounts[user]
            assert after_expiry.accounts[user] == (balance, held - freed)
        for hold in due:
            hold.status = "expired"

    # --- the limits: places in flight, requests and tokens per minute ---------------------

    calls = Bundle("calls")

    @rule(target=calls, user=st.sampled_from(USERS), tokens=st.integers(0, LIMIT_TOKENS + 50))
    def limit_acquire(self, user: str, tokens: int):
        counters = limit_counters(user, tokens)
        now = self.clock
        in_flight = sum(1 for call in self.admitted.values() if call.user == user)
        requests = [c for c in self.window if c[0] == user and c[1] > now - WINDOW_MS]
        used = sum(c[3] for c in requests)
        fits = (
            in_flight < LIMIT_IN_FLIGHT
            and len(requests) < LIMIT_REQUESTS
            and used + tokens <= LIMIT_TOKENS
        )
        self.serial += 1
        call_id = f"call_{self.serial}"
        outcome = self.limits.admit(call_id, counters)
        assert outcome.admitted == fits  # admitted exactly when it fits every limit
        if not fits:
            return multiple()
        self.admitted[call_id] = LimitCall(user, tokens)
        self.window.append([user, now, call_id, tokens])
        return call_id

    @rule(call_id=calls, used=st.integers(0, LIMIT_TOKENS))
    def limit_release(self, call_id: str, used: int) -> None:
        call = self.admitted.pop(call_id, None)
        if call is None:  # released already (an Admission ends once)
            return
        used = min(used, call.tokens)  # the real usage never exceeds what was admitted
        self.limits.release(call_id, limit_counters(call.user, call.tokens), used)
        for entry in self.window:
            if entry[2] == call_id:
                entry[3] = used

    @rule(ms=st.integers(1, 90_000))
    def time_passes(self, ms: int) -> None:
        self.clock += ms

    @invariant()
    def limits_hold(self) -> None:
        now = self.clock
        for user in USERS:
            in_flight, requests_counter, tokens_counter = limit_counters(user, 0)
            places = self.limits.used(in_flight)
            held = sum(1 for call in self.admitted.values() if call.user == user)
            assert places == held <= LIMIT_IN_FLIGHT
            live = [c for c in self.window if c[0] == user and c[1] > now - WINDOW_MS]
            requests = self.limits.used(requests_counter)
            tokens = self.limits.used(tokens_counter)
            assert requests == len(live) <= LIMIT_REQUESTS
            assert tokens == sum(c[3] for c in live) <= LIMIT_TOKENS

    # --- after every step -----------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        if not self.users:
            return
        assert_invariants(*self.users.values())
        keys = [key.pk for key in self.keys.values()]
        assert_key_invariants(*keys, spend_cap=self.check_spend_cap)
        assert_settled_at_most_once()
        settled = {rid for rid, hold in self.holds.items() if hold.status == "settled"}
        usage = LedgerEntry.objects.filter(kind=USAGE).values_list("request_id", flat=True)
        assert set(usage) == settled
        statuses = dict(CreditHold.objects.values_list("request_id", "status"))
        assert statuses == {rid: hold.status for rid, hold in self.holds.items()}


def run(machine: type[LedgerMachine]) -> None:
    run_state_machine_as_test(
        machine,
        settings=hypothesis.settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            derandomize=True,  # the same sequences every run: a failure is never a fluke
            database=None,  # no .hypothesis/ folder in the working tree
            suppress_health_check=[hypothesis.HealthCheck.too_slow],
        ),
    )


@pytest.fixture(autouse=True)
def no_signup_credits(settings):
    """The machine grants each user's starting credits itself."""
    settings.SIGNUP_CREDITS = 0


def test_any_sequence_of_money_moves_keeps_the_books():
    run(LedgerMachine)


# --- the two ways past a spend cap, one example each ---------------------------------------------


@pytest.fixture
def capped(db):
    """Return (user, key): a user with 1,000 micro-credits and a key capped at 100."""
    user = user_create(username="carol", password=None)
    credits_grant(user=user, amount=1000)
    api_key, _ = api_key_create(user=user, name="capped", spend_cap=100)
    return user, api_key


def test_a_settle_above_its_hold_keeps_the_key_within_its_spend_cap(capped):
    user, api_key = capped
    credits_hold(user_id=user.pk, amount=100, request_id="req_1", api_key_id=api_key.pk)
    credits_settle(request_id="req_1", cost=300)
    assert_invariants(user)
    assert_key_invariants(api_key.pk)


def test_settling_a_hold_the_sweep_expired_keeps_the_key_within_its_spend_cap(capped):
    user, api_key = capped
    credits_hold(user_id=user.pk, amount=100, request_id="req_1", api_key_id=api_key.pk)
    holds_expire(now=timezone.now() + timedelta(seconds=settings.HOLD_TTL_SECONDS + 1))
    credits_hold(user_id=user.pk, amount=100, request_id="req_2", api_key_id=api_key.pk)
    credits_settle(request_id="req_1", cost=100)  # the request outlived its hold
    credits_settle(request_id="req_2", cost=100)
    assert_invariants(user)
    assert_key_invariants(api_key.pk)
