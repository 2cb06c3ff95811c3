from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts.views import admin_login
from operations import views as operations_views
from project import apis

handler404 = "project.exception_handler.not_found"
handler500 = "project.exception_handler.server_error"

urlpatterns = [
    path("", apis.WelcomeApi.as_view(), name="welcome"),
    path("metrics", operations_views.metrics, name="metrics"),  # Prometheus (operations)
    path("health", apis.HealthApi.as_view(), name="health"),
    path("api/info", apis.InfoApi.as_view(), name="info"),
    path("api/", include("accounts.urls")),
    path("api/", include("billing.urls")),
    path("", include("llm_api.urls")),
    path("", include("llm_api.seed_urls")),
    path("", include("batches.urls")),  # --- Batches: /v1/files, /v1/batches
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # Our own template: drf-spectacular's loads Google Fonts (the docs must stay offline).
    path(
        "redoc",
        SpectacularRedocView.as_view(url_name="schema", template_name="project/redoc.html"),
        name="redoc",
    ),
    # Before the admin's own URLs: its login, throttled against password guessing.
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
]
