"""Billing for users: their API keys, balance, ledger and usage (JWT or API key).

Amounts are credits as decimal strings ("12.500000"); inside they are integer micro-credits.
Every query is scoped to the requesting user, so another user's key is simply not found (404).
The key routes carry several operations each (GET/POST, GET/PATCH/DELETE), so their views hold
one method per operation, as `accounts.apis.MeApi` does.
"""

from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.authentication import api_key_of
from billing.exceptions import RestrictedApiKey
from billing.models import ApiKey, LedgerEntry
from billing.money import MAX_CREDITS, to_credits, to_micro
from billing.selectors import (
    account_balance,
    api_key_get,
    api_key_list,
    ledger_list,
    usage_summary,
)
from billing.services import api_key_create, api_key_revoke, api_key_update

MAX_USAGE_DAYS = 366
MAX_LIMIT = 2**31 - 1


class CreditsField(serializers.DecimalField):
    """Credits at the API (a decimal string with six places), integer micro-credits inside."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", MAX_CREDITS)
        kwargs.setdefault("min_value", 0)
        super().__init__(max_digits=24, decimal_places=6, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        return to_micro(super().to_internal_value(data))

    def to_representation(self, value: int) -> str:
        return super().to_representation(to_credits(value))


class ApiKeyOutputSerializer(serializers.ModelSerializer):
    spend_cap = CreditsField(allow_null=True)
    spent = CreditsField()
    held = CreditsField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "last4",
            "masked",
            "status",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "allowed_models",
            "spend_cap",
            "spent",
            "held",
            "rpm_limit",
            "tpm_limit",
            "concurrency_limit",
        ]
        read_only_fields = fields


class ApiKeySettingsSerializer(serializers.Serializer):
    """What a user may set on their own key, at creation and later; nothing else is read."""

    name = serializers.CharField(max_length=100, required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=100, required=False
    )
    spend_cap = CreditsField(allow_null=True, required=False)
    rpm_limit = serializers.IntegerField(
        min_value=1, max_value=MAX_LIMIT, allow_null=True, required=False
    )
    tpm_limit = serializers.IntegerField(
        min_value=1, max_value=MAX_LIMIT, allow_null=True, required=False
    )
    concurrency_limit = serializers.IntegerField(
        min_value=1, max_value=MAX_LIMIT, allow_null=True, required=False
    )


def _refuse_restricted_key(request: Request) -> None:
    """A key narrowed by an allowlist, cap or limits must not create or widen keys."""
    info = api_key_of(request)
    if info is not None and info.is_restricted:
        raise RestrictedApiKey()


class ApiKeyListCreateApi(APIView):
    """GET: the user's keys (never the key itself). POST: a new key, shown in full this once."""

    class CreateInputSerializer(ApiKeySettingsSerializer):
        name = serializers.CharField(max_length=100, default="default")
        expires_at = serializers.DateTimeField(allow_null=True, default=None)
        expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)

        def validate(self, data: dict[str, Any]) -> dict[str, Any]:
            days = data.pop("expires_in_days", None)
            if days is not None and data["expires_at"] is not None:
                raise serializers.ValidationError("Give expires_at or expires_in_days, not both.")
            if days is not None:
                data["expires_at"] = timezone.now() + timedelta(days=days)
            return data

    class CreateOutputSerializer(ApiKeyOutputSerializer):
        key = serializers.CharField(help_text="The full key. It is shown this once only.")

        class Meta(ApiKeyOutputSerializer.Meta):
            fields = ["key", *ApiKeyOutputSerializer.Meta.fields]
            read_only_fields = fields

    @extend_schema(responses=ApiKeyOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(ApiKeyOutputSerializer(api_key_list(user=request.user), many=True).data)

    @extend_schema(request=CreateInputSerializer, responses={201: CreateOutputSerializer})
    def post(self, request: Request) -> Response:
        _refuse_restricted_key(request)
        data = self.CreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, plaintext = api_key_create(user=request.user, **data.validated_data)
        body = {"key": plaintext, **ApiKeyOutputSerializer(api_key).data}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    """GET: one of the user's keys. PATCH: rename it or change its allowlist, cap or limits.
    DELETE: revoke it (204); it fails on its very next request."""

    @extend_schema(responses=ApiKeyOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ApiKeyOutputSerializer(api_key_get(user=request.user, pk=pk)).data)

    @extend_schema(request=ApiKeySettingsSerializer, responses=ApiKeyOutputSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        api_key = api_key_get(user=request.user, pk=pk)
        _refuse_restricted_key(request)
        data = ApiKeySettingsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key = api_key_update(api_key=api_key, data=data.validated_data)
        return Response(ApiKeyOutputSerializer(api_key).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        api_key_revoke(api_key=api_key_get(user=request.user, pk=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BalanceDetailApi(APIView):
    """The user's credits: the balance, the part held by calls in progress, and what is left."""

    class OutputSerializer(serializers.Serializer):
        balance = CreditsField()
        held = CreditsField()
        available = CreditsField()

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(account_balance(user=request.user)).data)


class DateRangeSerializer(serializers.Serializer):
    since = serializers.DateField(required=False, help_text="First day (UTC), inclusive.")
    until = serializers.DateField(required=False, help_text="Last day (UTC), inclusive.")
    api_key = serializers.IntegerField(required=False, help_text="Only this key's entries.")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"since": ["since must not be after until."]})
        return data


def _api_key_filter(request: Request, pk: int | None) -> ApiKey | None:
    return None if pk is None else api_key_get(user=request.user, pk=pk)


class LedgerPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class LedgerListApi(APIView):
    """The user's ledger entries, newest first, paginated; filter by kind, days and key."""

    class FilterSerializer(DateRangeSerializer):
        kind = serializers.MultipleChoiceField(choices=LedgerEntry.Kind.choices, required=False)

    class OutputSerializer(serializers.ModelSerializer):
        amount = CreditsField(min_value=None)
        api_key_name = serializers.CharField(source="api_key.name", default=None)

        class Meta:
            model = LedgerEntry
            fields = [
                "id",
                "created_at",
                "kind",
                "amount",
                "request_id",
                "api_key",
                "api_key_name",
                "model",
                "prompt_tokens",
                "completion_tokens",
                "estimated",
                "note",
            ]
            read_only_fields = fields

    @extend_schema(parameters=[FilterSerializer], responses=OutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = ledger_list(
            user=request.user,
            kinds=sorted(filters.validated_data.get("kind", [])),
            since=filters.validated_data.get("since"),
            until=filters.validated_data.get("until"),
            api_key=_api_key_filter(request, filters.validated_data.get("api_key")),
        )
        paginator = LedgerPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response(self.OutputSerializer(page, many=True).data)


class UsageSummaryApi(APIView):
    """Usage totals (requests, tokens, credits) per day (UTC), per model and per key over a
    range of days: by default the last 30, at most 366."""

    class TotalsSerializer(serializers.Serializer):
        requests = serializers.IntegerField()
        prompt_tokens = serializers.IntegerField()
        completion_tokens = serializers.IntegerField()
        spent = CreditsField()

    class PerDaySerializer(TotalsSerializer):
        date = serializers.DateField()

    class PerModelSerializer(TotalsSerializer):
        model = serializers.CharField()

    class PerKeySerializer(TotalsSerializer):
        api_key = serializers.IntegerField(allow_null=True)
        name = serializers.CharField(source="api_key__name", allow_null=True)
        prefix = serializers.CharField(source="api_key__prefix", allow_null=True)

    @extend_schema(
        parameters=[DateRangeSerializer],
        responses=inline_serializer(
            "UsageSummary",
            {
                "since": serializers.DateField(),
                "until": serializers.DateField(),
                "total": TotalsSerializer(),
                "by_day": PerDaySerializer(many=True),
                "by_model": PerModelSerializer(many=True),
                "by_key": PerKeySerializer(many=True),
            },
        ),
    )
    def get(self, request: Request) -> Response:
        filters = DateRangeSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        since, until = _usage_range(filters.validated_data)
        api_key = _api_key_filter(request, filters.validated_data.get("api_key"))
        usage = usage_summary(user=request.user, since=since, until=until, api_key=api_key)
        return Response(
            {
                "since": since,
                "until": until,
                "total": self.TotalsSerializer(usage["total"]).data,
                "by_day": self.PerDaySerializer(usage["by_day"], many=True).data,
                "by_model": self.PerModelSerializer(usage["by_model"], many=True).data,
                "by_key": self.PerKeySerializer(usage["by_key"], many=True).data,
            }
        )


def _usage_range(filters: dict[str, Any]) -> tuple[date, date]:
    until = filters.get("until") or timezone.now().date()
    since = filters.get("since") or until - timedelta(days=29)
    if since > until:
        raise serializers.ValidationError({"since": ["since must not be after until."]})
    if (until - since).days >= MAX_USAGE_DAYS:
        raise serializers.ValidationError(
            {"since": [f"A usage range covers at most {MAX_USAGE_DAYS} days."]}
        )
    return since, until
