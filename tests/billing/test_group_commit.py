"""Money writes that arrive together are committed together: one transaction for the group,
each write in a savepoint of its own, so one refusal never undoes or blocks another."""

import pytest
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections

from billing.exceptions import DuplicateRequestId, InsufficientCredits
from billing.models import CreditHold, LedgerEntry
from billing.money import MICRO
from billing.services import credits as credits_module
from billing.services import credits_hold, credits_settle, rows
from tests.ledger import assert_invariants
from tests.threads import in_threads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def group_sizes(monkeypatch) -> list[int]:
    """Record the size of every group committed (threads released at once queue behind the
    first one's commit, so the next leader finds several writes waiting). Only watched: each
    group still runs on the driver's own transaction and savepoints, as in production."""
    sizes: list[int] = []
    original = credits_module._group_commit

    def watched(group):
        sizes.append(len(group))
        return original(group)

    monkeypatch.setattr(credits_module, "_group_commit", watched)
    return sizes


def test_a_group_of_holds_commits_the_affordable_ones_and_refuses_the_rest(alice, group_sizes):
    # alice has 500 credits: 10 holds of 50 fit; the other 30 are refused in the same groups.
    results = in_threads(
        40, lambda i: credits_hold(user_id=alice.pk, amount=50 * MICRO, request_id=f"req_{i}")
    )

    assert sum(result is None for result in results) == 10, results
    assert sum(isinstance(result, InsufficientCredits) for result in results) == 30, results
    assert CreditHold.objects.filter(status=CreditHold.Status.HELD).count() == 10
    assert max(group_sizes) > 1  # some writes were committed in a group of several
    assert_invariants(alice)


def test_a_refused_write_in_a_group_leaves_the_others_written(alice, group_sizes):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_taken")
    # Half the threads reuse a request id already held: each of those is refused alone.
    results = in_threads(
        30,
        lambda i: credits_hold(
            user_id=alice.pk, amount=MICRO, request_id="req_taken" if i % 2 else f"req_{i}"
        ),
    )

    assert sum(isinstance(result, DuplicateRequestId) for result in results) == 15, results
    assert sum(result is None for result in results) == 15, results
    assert CreditHold.objects.count() == 16
    assert_invariants(alice)


def test_settles_committed_together_charge_each_request_once(alice, group_sizes):
    for i in range(30):
        credits_hold(user_id=alice.pk, amount=10 * MICRO, request_id=f"req_{i}")
    # Every request settled twice at once: the second settle of each finds nothing to claim.
    results = in_threads(60, lambda i: credits_settle(request_id=f"req_{i % 30}", cost=3 * MICRO))

    assert sum(result is not None for result in results) == 30, results
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.USAGE).count() == 30
    alice.credit_account.refresh_from_db()
    assert alice.credit_account.balance == 500 * MICRO - 30 * 3 * MICRO
    assert alice.credit_account.held == 0
    assert_invariants(alice)


def test_every_money_write_runs_on_the_one_writer_connection_whichever_thread_leads(alice):
    writers = []

    def write(i: int) -> object:
        def work() -> None:
            writers.append(connections[DEFAULT_DB_ALIAS])  # the group's, not the thread's own
            credits_hold(user_id=alice.pk, amount=MICRO, request_id=f"req_{i}")  # joins it

        credits_module.ledger_run(work)
        return connection.connection  # the thread's own: never opened for the write

    results = in_threads(8, write)

    assert results == [None] * 8
    assert len(writers) == 8 and len({id(writer) for writer in writers}) == 1
    assert CreditHold.objects.count() == 8
    assert_invariants(alice)


def test_a_writer_connection_that_broke_is_replaced_by_the_next_write(alice):
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_1")
    rows._writer_db.connection.close()  # as a database restart would drop it

    with pytest.raises(DatabaseError):
        credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_2")
    credits_hold(user_id=alice.pk, amount=MICRO, request_id="req_3")

    held = set(CreditHold.objects.values_list("request_id", flat=True))
    assert held == {"req_1", "req_3"}
    assert_invariants(alice)
