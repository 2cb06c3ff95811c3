from django.urls import path

from billing import apis

urlpatterns = [
    path("keys/", apis.ApiKeyListCreateApi.as_view(), name="api-keys"),
    path("keys/<int:pk>/", apis.ApiKeyDetailApi.as_view(), name="api-key"),
    path("billing/balance/", apis.BalanceDetailApi.as_view(), name="billing-balance"),
    path("billing/ledger/", apis.LedgerListApi.as_view(), name="billing-ledger"),
    path("usage/", apis.UsageSummaryApi.as_view(), name="usage"),
]
