from datetime import date, timedelta

from django import forms
from django.utils import timezone

MAX_DAYS = 366
EARLIEST = date(2000, 1, 1)


class DateRangeForm(forms.Form):
    """The dashboard's range of days (UTC); by default the last 14. Bad input falls back to it."""

    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        data = super().clean()
        until = data.get("until") or timezone.now().date()
        since = data.get("since") or until - timedelta(days=13)
        latest = timezone.now().date() + timedelta(days=MAX_DAYS)
        if since < EARLIEST or until > latest:
            raise forms.ValidationError(f"Choose days between {EARLIEST} and {latest}.")
        if since > until:
            raise forms.ValidationError("'since' must not be after 'until'.")
        if (until - since).days >= MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["since"], data["until"] = since, until
        return data

    def range(self) -> tuple[date, date]:
        """Return the valid range, or the default one when the input was not valid."""
        if self.is_valid():
            return self.cleaned_data["since"], self.cleaned_data["until"]
        until = timezone.now().date()
        return until - timedelta(days=13), until
