from decimal import Decimal

import pytest

from billing.exceptions import InvalidAmount
from billing.money import MICRO, format_credits, to_credits, to_micro


@pytest.mark.parametrize(
    ("credits", "micro"),
    [(1, MICRO), ("2.5", 2_500_000), (Decimal("0.000001"), 1), ("-3", -3 * MICRO), ("0", 0)],
)
def test_it_turns_credits_into_micro_credits(credits, micro):
    assert to_micro(credits) == micro


@pytest.mark.parametrize("value", ["abc", "NaN", "Infinity", "1e100", "0.0000001", True, ""])
def test_it_refuses_what_is_not_a_precise_finite_amount(value):
    with pytest.raises(InvalidAmount) as error:
        to_micro(value)
    assert error.value.status_code == 400
    assert error.value.code == "invalid_amount"


def test_it_turns_micro_credits_back_into_credits():
    assert to_credits(1_500_000) == Decimal("1.5")
    assert str(to_credits(500 * MICRO)) == "500.000000"
    assert format_credits(500 * MICRO) == "500"
    assert format_credits(-1_250_000) == "-1.25"
    assert format_credits(0) == "0"
