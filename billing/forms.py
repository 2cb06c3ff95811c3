"""Admin forms: amounts typed in credits, stored as integer micro-credits."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django import forms
from django.utils import timezone

from billing import keys
from billing.models import ApiKey, ModelPrice
from billing.money import MAX_CREDITS, to_credits, to_micro


class CreditsFormField(forms.DecimalField):
    """A decimal of credits in the form; an integer of micro-credits in `cleaned_data`."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", MAX_CREDITS)
        super().__init__(max_digits=16, decimal_places=6, **kwargs)

    def prepare_value(self, value: Any) -> Any:
        # The model's value is micro-credits (an int); re-displayed input is the typed string.
        return to_credits(value) if isinstance(value, int) else value

    def clean(self, value: Any) -> int | None:
        credits = super().clean(value)
        return None if credits is None else to_micro(credits)

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            typed = self.to_python(data)
        except forms.ValidationError:
            return True
        before = None if initial in (None, "") else to_credits(int(initial))
        return (None if typed is None else Decimal(typed)) != before


class AllowlistField(forms.CharField):
    """An allowlist typed one entry per line (or separated by commas)."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        return [entry.strip() for entry in text.replace(",", "\n").splitlines() if entry.strip()]


class ApiKeyForm(forms.ModelForm):
    spend_cap = CreditsFormField(
        required=False,
        min_value=0,
        help_text="Credits this key may spend in total; empty = no cap.",
    )
    allowed_models = AllowlistField(
        required=False,
        help_text="One provider/model or pattern per line (openai/gpt-4*); empty allows all.",
    )
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope}: {meaning}") for scope, meaning in keys.SCOPES.items()],
        initial=keys.default_scopes,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=f"Every key has {keys.SCOPE_MODELS!r}; give {keys.SCOPE_MANAGE!r} only to a "
        "key that must manage keys or the account.",
    )

    class Meta:
        model = ApiKey
        fields = [
            "user",
            "name",
            "expires_at",
            "allowed_models",
            "spend_cap",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
            "batch_concurrency_limit",
            "batch_tokens_limit",
            "scopes",
        ]

    def clean_allowed_models(self) -> list[str]:
        return keys.clean_allowlist(self.cleaned_data["allowed_models"])

    def clean_scopes(self) -> list[str]:
        return keys.clean_scopes(self.cleaned_data["scopes"])

    def clean_expires_at(self) -> datetime | None:
        expires_at = self.cleaned_data["expires_at"]
        if "expires_at" in self.changed_data and expires_at and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at


class ModelPriceForm(forms.ModelForm):
    per_request = CreditsFormField(min_value=0, initial=Decimal(1), help_text="Credits per call.")
    per_1k_prompt = CreditsFormField(min_value=0, initial=Decimal(0), label="Per 1K prompt tokens")
    per_1k_completion = CreditsFormField(
        min_value=0, initial=Decimal(0), label="Per 1K completion tokens"
    )

    class Meta:
        model = ModelPrice
        fields = ["model", "per_request", "per_1k_prompt", "per_1k_completion"]

    def clean_model(self) -> str:
        return self.cleaned_data["model"].strip().lower()


class CreditsActionForm(forms.Form):
    """The amount and note an administrator gives when granting or deducting credits."""

    amount = CreditsFormField(min_value=Decimal("0.000001"), help_text="In credits.")
    note = forms.CharField(max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2}))
