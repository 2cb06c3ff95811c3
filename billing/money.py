"""Credits at the edges, integer micro-credits inside.

The API, the admin and the command line speak credits (decimals); models, services and the
ledger store integers of `MICRO` per credit, so sums are exact and no rounding mode can drift.
"""

from decimal import Decimal, InvalidOperation

from billing.exceptions import InvalidAmount

MICRO = 1_000_000
# A billion credits: far beyond any real balance, far below a 64-bit column's limit.
MAX_CREDITS = Decimal(10**9)
_ONE_MICRO = Decimal(1).scaleb(-6)


def to_micro(value: Decimal | str | int) -> int:
    """Return `value` credits as integer micro-credits.

    Refuses (InvalidAmount) anything that is not a finite number, has more than six decimal
    places or exceeds a billion credits in size.
    """
    if isinstance(value, bool):
        raise InvalidAmount(f"{value!r} is not an amount of credits.")
    try:
        credits = Decimal(str(value).strip())
    except InvalidOperation as error:
        raise InvalidAmount(f"{str(value)[:40]!r} is not a number of credits.") from error
    if not credits.is_finite() or abs(credits) > MAX_CREDITS:
        raise InvalidAmount(f"An amount must be a finite number of at most {MAX_CREDITS} credits.")
    exact = credits.quantize(_ONE_MICRO)
    if exact != credits:
        raise InvalidAmount("An amount of credits has at most six decimal places.")
    return int(exact.scaleb(6))


def to_credits(micro: int) -> Decimal:
    """Return integer micro-credits as a Decimal of credits with six decimal places."""
    return Decimal(micro).scaleb(-6)


def format_credits(micro: int) -> str:
    """Return micro-credits as a short human string of credits: 500, 0.25, -1.5."""
    text = f"{to_credits(micro):f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
