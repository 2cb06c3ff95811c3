"""Writes on credits: accounts, grants, holds, settlement, refunds, and the stale-hold sweep.

The balance moves only by conditional UPDATEs (`… SET held = held + X WHERE balance - held >= X`)
inside short transactions, so concurrent requests can never spend the same credits twice and no
lock is held while a provider works.
"""

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from billing.exceptions import (
    DuplicateRequestId,
    InsufficientCredits,
    InvalidAmount,
    RefundRefused,
    SpendCapExceeded,
)
from billing.models import ApiKey, CreditAccount, CreditHold, LedgerEntry
from billing.money import format_credits, to_micro
from billing.services import rows

Kind = LedgerEntry.Kind
HoldStatus = CreditHold.Status
SWEEP_INTERVAL_SECONDS = 60
MAX_AMOUNT = 10**15  # a billion credits
T = TypeVar("T")


# One thread at a time writes money in each process. The writes are short (a few statements),
# so a queue at this lock costs less than SQLite's busy handler, which sleeps between retries
# of BEGIN IMMEDIATE; and under load on PostgreSQL it keeps the metering of a thousand streams
# to one pooled connection instead of a pool timeout. Re-entrant: a write may call another.
_writer = threading.RLock()

_writing = threading.local()  # `active` while this thread runs a group's writes


@dataclass(slots=True)
class _Write:
    """One thread's money write waiting for the group commit, and how it ended."""

    work: Callable[[], Any]
    result: Any = None
    error: BaseException | None = None
    lead: bool = False  # its thread is to commit the next group
    wake: threading.Event | None = None  # a follower's: set when it is done, or is to lead


_queued: list[_Write] = []
_queue_lock = threading.Lock()
_leading = False  # a thread commits a group, or has been woken to


def ledger_run(work: Callable[[], T]) -> T:
    """Return `work()`, run as one transaction that is the only money write of this process at
    the time, committed together with the writes other threads queued meanwhile (a group
    commit).

    Under load most of a write's cost is its commit (SQLite writes every page it changed to its
    log, PostgreSQL flushes its log to disk), and concurrent writes change the same pages (the
    account, the key, the ends of the tables and their indexes). So one thread at a time, the
    leader, runs every queued write in one transaction, each in a savepoint of its own: a write
    that raises (InsufficientCredits, a duplicate request id) is rolled back alone and its
    exception raised in its own thread; if the commit fails, every write of the group raises.
    Alone, a write is one transaction, with no savepoint.

    The others wait on their own event, which the leader sets when their write is committed,
    so they all go on at once; then the leader wakes the first write queued meanwhile to lead
    the next group. (Waiting on the lock itself instead made a convoy: each finished writer
    took the lock and gave it back in turn, every hand-over waiting for the interpreter lock.)

    The leader runs the group on the process's one writer connection (`rows.on_writer_connection`),
    which stays open between groups; the thread's own pooled connection, if it holds one, is
    handed back before it queues, so a request holds none while it waits or while its provider
    works. Inside a group's write, or inside a caller's own transaction, `work` joins that
    transaction.
    """
    global _leading
    if getattr(_writing, "active", False):
        return work()
    if connection.in_atomic_block:
        with _writer, rows.atomic():
            return work()
    write = _Write(work)
    with _queue_lock:
        _queued.append(write)
        if _leading:
            write.wake = threading.Event()
        else:
            _leading = write.lead = True
    connection.close()
    if write.wake is not None:
        write.wake.wait()
    if write.lead:
        _lead()
    if write.error is not None:
        raise write.error
    return write.result


def _lead() -> None:
    """Commit what is queued (the leader's own write among it), then hand the lead to the
    first write queued meanwhile, or give it up."""
    global _leading
    try:
        with _queue_lock:
            group = _queued[:]
            _queued.clear()
        with _writer, rows.on_writer_connection():
            _group_commit(group)
    finally:
        with _queue_lock:
            if _queued:
                _queued[0].lead = True
                _queued[0].wake.set()  # queued while a leader led: a follower
            else:
                _leading = False


def _group_commit(group: list[_Write]) -> None:
    """Run the writes in one transaction (savepoints when there are several); give each its
    result or its exception, and wake its thread."""
    _writing.active = True
    alone = len(group) == 1
    try:
        with rows.atomic():
            for write in group:
                try:
                    with contextlib.nullcontext() if alone else rows.savepoint():
                        write.result = write.work()
                except Exception as error:
                    write.error = error
                    if alone:
                        raise  # roll back its transaction
    except BaseException as error:
        # Not committed: nothing of the group was written.
        for write in group:
            if write.error is None:
                write.error = error
                write.result = None
        if not isinstance(error, Exception):
            raise
    finally:
        _writing.active = False
        for write in group:
            if write.wake is not None:
                write.wake.set()


def _require_int(value: object, name: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidAmount(
            f"{name} must be a whole number of micro-credits, not {value!r}.", param=name
        )
    if not minimum <= value <= MAX_AMOUNT:
        raise InvalidAmount(f"{name} must be between {minimum} and {MAX_AMOUNT}.", param=name)
    return value


# --- Accounts and manual entries ---------------------------------------------------------------


def _credit(account_id: int, amount: int, **entry: object) -> LedgerEntry:
    """Add `amount` (positive) to the balance and record it, then pay what the account owes
    from it; call inside a transaction."""
    CreditAccount.objects.filter(pk=account_id).update(balance=F("balance") + amount)
    credited = LedgerEntry.objects.create(account_id=account_id, amount=amount, **entry)
    _debt_pay(account_id)
    return credited


def _debt_pay(account_id: int) -> None:
    """Pay the account's debt from its available balance, as far as it goes, by a `debt`
    entry (so the balance stays the sum of the ledger); call inside a transaction."""
    account = CreditAccount.objects.select_for_update().get(pk=account_id)
    paid = min(account.debt, account.available)
    if paid <= 0:
        return
    accounts = CreditAccount.objects.filter(pk=account_id)
    accounts.update(balance=F("balance") - paid, debt=F("debt") - paid)
    left = account.debt - paid
    LedgerEntry.objects.create(
        account_id=account_id,
        kind=Kind.DEBT,
        amount=-paid,
        note=f"Debt paid: {format_credits(paid)} credits owed by calls that cost more than "
        f"they held" + (f"; {format_credits(left)} still owed." if left else "."),
    )


def account_open(*, user: AbstractBaseUser) -> CreditAccount:
    """Return the user's credit account, creating it with the SIGNUP_CREDITS grant the first
    time. Safe to call again: an existing account is returned untouched."""
    with transaction.atomic():
        account, created = CreditAccount.objects.get_or_create(user=user)
        signup = to_micro(settings.SIGNUP_CREDITS)
        if created and signup > 0:
            _credit(account.pk, signup, kind=Kind.GRANT, note="Signup credits")
            account.refresh_from_db()
    return account


def credits_grant(
    *, user: AbstractBaseUser, amount: int, note: str = "", admin: AbstractBaseUser | None = None
) -> LedgerEntry:
    """Add `amount` micro-credits to the user's balance (a negative amount deducts) and record
    who did it. Zero and non-integers are refused; a deduction may take only what is available
    (balance minus held), so the balance never goes below zero."""
    _require_int(amount, "amount", minimum=-MAX_AMOUNT)
    if amount == 0:
        raise InvalidAmount("The amount must not be zero.", param="amount")
    with transaction.atomic():
        account, _ = CreditAccount.objects.get_or_create(user=user)
        if amount > 0:
            return _credit(account.pk, amount, kind=Kind.GRANT, note=note, admin=admin)
        return _deduct(account, -amount, note=note, admin=admin)


def _deduct(
    account: CreditAccount, amount: int, *, note: str, admin: AbstractBaseUser | None
) -> LedgerEntry:
    accounts = CreditAccount.objects.filter(pk=account.pk)
    if not accounts.filter(balance__gte=F("held") + amount).update(balance=F("balance") - amount):
        account.refresh_from_db()
        raise InsufficientCredits(
            f"Cannot deduct {format_credits(amount)} credits: only "
            f"{format_credits(account.available)} are available."
        )
    return LedgerEntry.objects.create(
        account_id=account.pk, kind=Kind.ADJUSTMENT, amount=-amount, note=note, admin=admin
    )


def credits_refund(
    *, entry: LedgerEntry, note: str = "", admin: AbstractBaseUser | None = None
) -> LedgerEntry:
    """Give back what a usage entry charged, as a new refund entry; once per request id."""
    if entry.kind != Kind.USAGE or entry.amount >= 0:
        raise RefundRefused("Only a usage entry that charged credits can be refunded.")
    try:
        with transaction.atomic():
            return _credit(
                entry.account_id,
                -entry.amount,
                kind=Kind.REFUND,
                request_id=entry.request_id,
                api_key_id=entry.api_key_id,
                model=entry.model,
                note=note or f"Refund of entry #{entry.pk}",
                admin=admin,
            )
    except IntegrityError as error:
        raise RefundRefused(f"Request {entry.request_id} was already refunded.") from error


# --- Holds -----------------------------------------------------------------------------------


def _reserve_on_account(user_id: int, amount: int) -> None:
    if rows.execute(rows.sql("reserve_account"), [amount, user_id, amount]):
        return
    account = CreditAccount.objects.filter(pk=user_id).first() or CreditAccount(balance=0, held=0)
    if account.debt:
        raise InsufficientCredits(
            f"The account owes {format_credits(account.debt)} credits: an earlier call cost "
            "more than it held and the balance could pay. Add credits to pay the debt; calls "
            "resume once it is paid."
        )
    raise InsufficientCredits(
        f"Insufficient credits: the balance is {format_credits(account.balance)} credits "
        f"({format_credits(account.held)} held by calls in progress) and this call needs up to "
        f"{format_credits(amount)}."
    )


def _reserve_on_key(api_key_id: int, amount: int) -> None:
    if rows.execute(rows.sql("reserve_key"), [amount, api_key_id, amount]):
        return
    api_key = ApiKey.objects.filter(pk=api_key_id).first()
    if api_key is None:
        raise SpendCapExceeded("This API key no longer exists.")
    raise SpendCapExceeded(
        f"This API key's spend cap of {format_credits(api_key.spend_cap)} credits is reached: it "
        f"has spent {format_credits(api_key.spent)} ({format_credits(api_key.held)} held) and "
        f"this call needs up to {format_credits(amount)}."
    )


def credits_hold(
    *, user_id: int, amount: int, request_id: str, api_key_id: int | None = None, model: str = ""
) -> None:
    """Reserve up to `amount` micro-credits for one request before the provider is called.

    Raises InsufficientCredits (402) unless the available balance covers it, SpendCapExceeded
    (402) if the key's cap would be passed. Each check is one conditional UPDATE, so concurrent
    holds can never overspend; the hold row remembers user, key and model for the settlement.
    """
    _require_int(amount, "amount")
    _holds_expire_if_due()
    now = timezone.now()

    def hold() -> None:
        _reserve_on_account(user_id, amount)
        if api_key_id is not None:
            _reserve_on_key(api_key_id, amount)
        rows.insert(
            CreditHold,
            request_id=request_id,
            account_id=user_id,
            api_key_id=api_key_id,
            model=model,
            amount=amount,
            status=HoldStatus.HELD,
            created_at=now,
            expires_at=now + timedelta(seconds=settings.HOLD_TTL_SECONDS),
        )

    try:
        ledger_run(hold)
    except IntegrityError as error:
        raise DuplicateRequestId(f"Credits are already held for request {request_id}.") from error


def credits_hold_renew(*, request_ids: list[str]) -> int:
    """Push the expiry of these open holds HOLD_TTL_SECONDS from now (their requests are still
    running, so the sweep must not release them); return how many were open."""
    expires_at = timezone.now() + timedelta(seconds=settings.HOLD_TTL_SECONDS)
    renewed = 0
    for start in range(0, len(request_ids), 500):
        held = CreditHold.objects.filter(
            request_id__in=request_ids[start : start + 500], status=HoldStatus.HELD
        )
        renewed += ledger_run(lambda held=held: held.update(expires_at=expires_at))
    return renewed


def _open_hold(request_id: str) -> CreditHold | None:
    try:
        return CreditHold.objects.get(request_id=request_id, status=HoldStatus.HELD)
    except CreditHold.DoesNotExist:
        return None


def _hold_claim(hold: CreditHold, status: str) -> bool:
    """Move an open hold to its final status; only one caller can win (call in a transaction)."""
    claimed = CreditHold.objects.filter(pk=hold.pk, status=HoldStatus.HELD)
    return bool(claimed.update(status=status, closed_at=timezone.now()))


def _hold_close(hold: CreditHold, status: str) -> bool:
    """Release a hold's credits without charging anything; False if it was already closed
    (call in a money write)."""
    if not _hold_claim(hold, status):
        return False
    _unhold(hold)
    return True


def _unhold(hold: CreditHold) -> None:
    CreditAccount.objects.filter(pk=hold.account_id).update(held=F("held") - hold.amount)
    if hold.api_key_id:
        ApiKey.objects.filter(pk=hold.api_key_id).update(held=F("held") - hold.amount)


def _charge_account(account_id: int, cost: int, released: int) -> int:
    """Release `released` of the account's held credits and take `cost` from the balance, or
    all that is left if it is less; return what was taken."""
    charge = rows.sql("charge_account")
    if rows.execute(charge, [cost, released, account_id, released, cost]):
        return cost
    # The cost exceeds the hold and what else is available: lock the row for this write only.
    balance, held = rows.fetch_one(rows.sql("account_read"), [account_id])
    charged = min(cost, balance - held + released)
    rows.execute(rows.sql("charge_at_most"), [charged, released, account_id])
    return charged


def _key_room(api_key_id: int, released: int) -> int:
    """Return what the key's spend cap lets a settle charge, counting `released` (its own hold)
    as room: a cost above its hold never takes the key past its cap."""
    spend_cap, spent, held = rows.fetch_one(rows.sql("key_read"), [api_key_id])
    if spend_cap is None:
        return MAX_AMOUNT
    return max(0, spend_cap - spent - (held - released))


def credits_settle(
    *,
    request_id: str,
    cost: int,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    estimated: bool = False,
    model: str | None = None,
    record: Callable[[], object] | None = None,
) -> LedgerEntry | None:
    """Charge a request's actual cost, release the rest of its hold and record one usage entry.

    Exactly once per request id: a repeat, or a settle after the hold was released, does nothing
    and returns None. A hold that expired while its request was still running (a stream longer
    than HOLD_TTL_SECONDS) is still charged: the usage happened. A cost above what is held is
    taken from the remaining balance but never below zero, nor past the key's spend cap; what
    could not be collected is written in the entry's note and added to the account's debt,
    which blocks new holds until credits added pay it: nothing is written off. `record` (say,
    the request's usage row) is written in the same transaction, so a request costs one write
    here.
    """
    _require_int(cost, "cost")
    _require_int(prompt_tokens, "prompt_tokens")
    _require_int(completion_tokens, "completion_tokens")
    now = timezone.now()

    def settle() -> LedgerEntry | None:
        # Claim and read in one statement: a sweep in between cannot release it unpaid. A
        # hold that expired while its request still ran is charged too; its credits were
        # released by the sweep already, so none are released twice.
        closed_at = _db_datetime(now)
        was_held = True
        claimed = rows.fetch_one(
            rows.sql("hold_claim"), [HoldStatus.SETTLED, closed_at, request_id, HoldStatus.HELD]
        )
        if claimed is None:
            was_held = False
            claim = [HoldStatus.SETTLED, closed_at, request_id, HoldStatus.EXPIRED]
            claimed = rows.fetch_one(rows.sql("hold_claim"), claim)
        if claimed is None:
            return None
        amount, account_id, api_key_id, held_model = claimed
        released = amount if was_held else 0
        allowed = cost
        if api_key_id and cost > released:
            allowed = min(cost, _key_room(api_key_id, released))
        charged = _charge_account(account_id, allowed, released)
        if charged < cost:
            rows.execute(rows.sql("debt_add"), [cost - charged, account_id])
        if api_key_id:
            rows.execute(rows.sql("charge_key"), [released, charged, api_key_id])
        entry = {
            "account_id": account_id,
            "kind": Kind.USAGE,
            "amount": -charged,
            "created_at": now,
            "request_id": request_id,
            "api_key_id": api_key_id,
            "model": model or held_model,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "estimated": estimated,
            "note": _shortfall_note(cost, charged),
        }
        pk = rows.insert(LedgerEntry, **entry)
        if record is not None:
            record()
        return rows.saved(LedgerEntry, pk, **entry)

    return ledger_run(settle)


def _db_datetime(value: datetime) -> object:
    return CreditHold._meta.get_field("closed_at").get_db_prep_save(value, connection)


def _shortfall_note(cost: int, charged: int) -> str:
    if charged == cost:
        return ""
    return (
        f"The call cost {format_credits(cost)} credits, more than it held and the balance (or "
        "the key's spend cap) allowed; "
        f"{format_credits(cost - charged)} are owed (the account's debt), paid from the next "
        "credits added."
    )


def credits_release(*, request_id: str, record: Callable[[], object] | None = None) -> bool:
    """Release a request's hold untouched (the upstream failed before any output); return
    whether there was an open hold to release. `record` is written in the same transaction."""

    def release() -> bool:
        hold = _open_hold(request_id)
        if hold is None or not _hold_close(hold, HoldStatus.RELEASED):
            return False
        if record is not None:
            record()
        return True

    return ledger_run(release)


def holds_expire(*, now: datetime | None = None) -> int:
    """Release every hold past its expiry (its process died mid-request); return how many."""
    now = now or timezone.now()
    stale = CreditHold.objects.filter(status=HoldStatus.HELD, expires_at__lte=now)
    released = 0
    while batch := list(stale.order_by("expires_at")[:500]):
        released += sum(
            ledger_run(lambda hold=hold: _hold_close(hold, HoldStatus.EXPIRED)) for hold in batch
        )
    return released


class _Sweep:
    """When this process may next look at whether a sweep is due (no cache call before)."""

    next_at = 0.0


def _holds_expire_if_due() -> None:
    """Run holds_expire at most once a minute (a third of HOLD_TTL_SECONDS if less) across all
    processes; nearly free otherwise."""
    now = time.monotonic()
    if now < _Sweep.next_at:
        return
    # A dead process's hold outlives its TTL by at most a third of one (or a minute).
    interval = max(1, min(SWEEP_INTERVAL_SECONDS, settings.HOLD_TTL_SECONDS // 3))
    _Sweep.next_at = now + interval
    if cache.add("billing:holds-expire", True, interval):
        holds_expire()
