"""Billing for users: their API keys, balance, ledger and usage (JWT or API key).

Amounts are credits as decimal strings ("12.500000"); inside they are integer micro-credits.
Every query is scoped to the requesting user, so another user's key is simply not found (404).
An API key without the "manage" scope sees only itself: its own entry in the key list, its own
ledger entries and usage; creating, changing or revoking keys needs a login token (JWT) or a key
with "manage" (403 `restricted_api_key` otherwise, saying so).
The key routes carry several operations each (GET/POST, GET/PATCH/DELETE), so their views hold
one method per operation, as `accounts.apis.MeApi` does.
"""

from datetime import date, timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import keys
from billing.authentication import api_key_of, own_key_only, require_manage_scope
from billing.exceptions import RestrictedApiKey
from billing.keys import ApiKeyInfo
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
MANAGE_ONLY = OpenApiResponse(
    description='`restricted_api_key`: the API key lacks the "manage" scope, or asks for more '
    "than it has itself (a later expiry, a larger spend cap or limit, a model or scope it "
    "lacks). The message names what and how to do it instead (a login token)."
)
OWN_KEY_ONLY = OpenApiResponse(
    description='`restricted_api_key`: an API key without the "manage" scope asked for another '
    "key's data."
)
OWN_ENTRIES_ONLY = (
    'A login token or an API key with "manage" sees the whole account; any other API key sees '
    "only its own entries (the api_key filter is then its own id)."
)
SCOPES_HELP = (
    '"models" (every key): call the models and read this key\'s own usage. "manage": also '
    "create, change and revoke keys, read the whole account's ledger and usage, and change the "
    'account. Default: ["models"].'
)


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
    scopes = serializers.ListField(child=serializers.CharField(), help_text=SCOPES_HELP)

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
            "batch_concurrency_limit",
            "batch_tokens_limit",
            "scopes",
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
    batch_concurrency_limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_LIMIT,
        allow_null=True,
        required=False,
        help_text="Batch lines this key runs at once; null: BATCH_CONCURRENCY_LIMIT.",
    )
    batch_tokens_limit = serializers.IntegerField(
        min_value=1,
        max_value=MAX_LIMIT,
        allow_null=True,
        required=False,
        help_text="Tokens (estimated) this key may have enqueued in unfinished batches; "
        "null: BATCH_ENQUEUED_TOKENS_LIMIT.",
    )
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=list(keys.SCOPES)),
        max_length=len(keys.SCOPES),
        required=False,
        help_text=SCOPES_HELP,
    )


def _refuse_other_key(own: ApiKeyInfo, pk: int | None, *, to: str) -> None:
    """A key without the "manage" scope may read only itself."""
    if pk is not None and pk != own.id:
        raise RestrictedApiKey(
            f"This API key may read only its own data (api key id {own.id}); to {to}, "
            f"{keys.HOW_TO_MANAGE}."
        )


class ApiKeyListCreateApi(APIView):
    """GET: the user's keys (never the key itself). POST: a new key, shown in full this once."""

    class CreateInputSerializer(ApiKeySettingsSerializer):
        name = serializers.CharField(max_length=100, default="default")
        expires_at = serializers.DateTimeField(allow_null=True, default=None)
        expires_in_days = serializers.IntegerField(min_value=1, max_value=3650, required=False)
        scopes = serializers.ListField(
            child=serializers.ChoiceField(choices=list(keys.SCOPES)),
            max_length=len(keys.SCOPES),
            default=keys.default_scopes,
            help_text=SCOPES_HELP,
        )

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

    @extend_schema(
        description='A login token or a key with "manage" lists every key of the account; any '
        "other API key lists only itself.",
        responses=ApiKeyOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        own = own_key_only(request)
        api_keys = api_key_list(user=request.user, only_id=own.id if own else None)
        return Response(ApiKeyOutputSerializer(api_keys, many=True).data)

    @extend_schema(
        description='Needs a login token or an API key with "manage"; such a key can create '
        "only keys within its own expiry, spend cap, limits, models and scopes.",
        request=CreateInputSerializer,
        responses={201: CreateOutputSerializer, 403: MANAGE_ONLY},
    )
    def post(self, request: Request) -> Response:
        require_manage_scope(request, to="create API keys")
        data = self.CreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key, plaintext = api_key_create(
            user=request.user, acting_key=api_key_of(request), **data.validated_data
        )
        body = {"key": plaintext, **ApiKeyOutputSerializer(api_key).data}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    """GET: one of the user's keys. PATCH: rename it or change its allowlist, cap or limits.
    DELETE: revoke it (204); it fails on its very next request."""

    @extend_schema(
        description='An API key without "manage" may read only itself.',
        responses={200: ApiKeyOutputSerializer, 403: OWN_KEY_ONLY},
    )
    def get(self, request: Request, pk: int) -> Response:
        own = own_key_only(request)
        if own is not None:
            _refuse_other_key(own, pk, to="read the account's other keys")
        return Response(ApiKeyOutputSerializer(api_key_get(user=request.user, pk=pk)).data)

    @extend_schema(
        description='Needs a login token or an API key with "manage"; such a key cannot set '
        "a later expiry, a larger spend cap or limit, or a model or scope it lacks itself.",
        request=ApiKeySettingsSerializer,
        responses={200: ApiKeyOutputSerializer, 403: MANAGE_ONLY},
    )
    def patch(self, request: Request, pk: int) -> Response:
        require_manage_scope(request, to="change API keys")
        api_key = api_key_get(user=request.user, pk=pk)
        data = ApiKeySettingsSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        api_key = api_key_update(
            api_key=api_key, data=data.validated_data, acting_key=api_key_of(request)
        )
        return Response(ApiKeyOutputSerializer(api_key).data)

    @extend_schema(
        description='Needs a login token or an API key with "manage".',
        responses={204: None, 403: MANAGE_ONLY},
    )
    def delete(self, request: Request, pk: int) -> Response:
        require_manage_scope(request, to="revoke API keys")
        api_key = api_key_get(user=request.user, pk=pk)
        api_key_revoke(api_key=api_key, acting_key=api_key_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class BalanceDetailApi(APIView):
    """The user's credits: the balance, the part held by calls in progress, and what is left."""

    class OutputSerializer(serializers.Serializer):
        balance = CreditsField()
        held = CreditsField()
        available = CreditsField()
        debt = CreditsField(
            help_text="Owed by calls that cost more than they held; blocks calls until paid."
        )

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
    """Return the key whose entries to show, None for the whole account. An API key without
    "manage" sees only its own entries, whether it asks for them or not."""
    own = own_key_only(request)
    if own is not None:
        _refuse_other_key(own, pk, to="read other keys' or the whole account's entries")
        pk = own.id
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
        api_key_name = serializers.CharField(source="api_key.name", default=None, allow_null=True)

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

    @extend_schema(
        description=OWN_ENTRIES_ONLY,
        parameters=[FilterSerializer],
        # The page's envelope (LedgerPagination): an APIView's pagination is not seen by the
        # schema generator.
        responses={
            200: inline_serializer(
                "LedgerPage",
                {
                    "count": serializers.IntegerField(),
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": OutputSerializer(many=True),
                },
            ),
            403: OWN_KEY_ONLY,
        },
    )
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
        description=OWN_ENTRIES_ONLY,
        parameters=[DateRangeSerializer],
        responses={
            200: inline_serializer(
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
            403: OWN_KEY_ONLY,
        },
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
