from django.urls import path

from accounts import apis

urlpatterns = [
    path("signup/", apis.SignupApi.as_view(), name="signup"),
    path("token/", apis.TokenObtainApi.as_view(), name="token"),
    path("token/refresh/", apis.TokenRefreshApi.as_view(), name="token-refresh"),
    path("logout/", apis.LogoutApi.as_view(), name="logout"),
    path("me/", apis.MeApi.as_view(), name="me"),
    path("me/password/", apis.MePasswordApi.as_view(), name="me-password"),
]
