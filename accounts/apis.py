"""Accounts: signup, JWT tokens (obtain, refresh, logout), the signed-in user and their password."""

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.exceptions import WrongPassword
from accounts.services import user_create, user_password_change, user_update
from accounts.throttles import SIGN_IN_FAILURES, username_ident
from billing.authentication import api_key_of, require_manage_scope
from project.throttling import ClientRateThrottle

User = get_user_model()


class UserOutputSerializer(serializers.ModelSerializer):
    # A string, not the model's EmailField: a user may have none (""), which is not an email.
    email = serializers.CharField(read_only=True, help_text="An email address, or empty.")

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "date_joined"]
        read_only_fields = fields


class SignupApi(APIView):
    """Create a user; Django's password validators apply. No token is needed."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ClientRateThrottle]
    throttle_scope = "signup"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, style={"input_type": "password"})
        # No default: "" is not an email, so a declared default breaks the OpenAPI schema;
        # user_create defaults it.
        email = serializers.EmailField(required=False, allow_blank=True)

    @extend_schema(
        request=InputSerializer,
        responses={
            201: inline_serializer(
                "SignupOutput",
                {"message": serializers.CharField(), "user": UserOutputSerializer()},
            )
        },
    )
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_create(**data.validated_data)
        return Response(
            {"message": "User created successfully", "user": UserOutputSerializer(user).data},
            status=status.HTTP_201_CREATED,
        )


class TokenObtainApi(TokenObtainPairView):
    """Exchange a username and password for an access and a refresh token.

    Throttled per client address (every attempt) and per username (failed attempts, counted
    with the admin's login and the password change).
    """

    throttle_classes = [ClientRateThrottle]
    throttle_scope = "token"

    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = request.data
        username = username_ident(data.get("username") if isinstance(data, dict) else None)
        if username is None:  # the serializer names what is missing
            return super().post(request, *args, **kwargs)
        SIGN_IN_FAILURES.check(username)
        try:
            return super().post(request, *args, **kwargs)
        except exceptions.AuthenticationFailed:
            SIGN_IN_FAILURES.hit(username)
            raise


class TokenRefreshApi(TokenRefreshView):
    """Exchange a refresh token for a new access and refresh token; the old one is blacklisted."""


class LogoutApi(APIView):
    """Blacklist a refresh token so it can never be used again."""

    class InputSerializer(serializers.Serializer):
        refresh = serializers.CharField()

    @extend_schema(request=InputSerializer, responses={205: None})
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            token = RefreshToken(data.validated_data["refresh"])
        except TokenError as error:
            raise serializers.ValidationError({"refresh": [str(error)]}) from error
        if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(request.user.pk):
            raise serializers.ValidationError({"refresh": ["This refresh token is not yours."]})
        token.blacklist()
        return Response(status=status.HTTP_205_RESET_CONTENT)


class MeApi(APIView):
    """The signed-in user. Only `email` can be changed; other fields are read-only.

    Changing it needs a login token or an API key with the "manage" scope: a key that only
    calls models must not be able to move the account's email (and so its recovery) elsewhere.
    """

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(required=False, allow_blank=True)

    @extend_schema(responses=UserOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(
        description='Needs a login token or an API key with the "manage" scope.',
        request=InputSerializer,
        responses={
            200: UserOutputSerializer,
            403: OpenApiResponse(
                description='`restricted_api_key`: an API key without the "manage" scope.'
            ),
        },
    )
    def patch(self, request: Request) -> Response:
        require_manage_scope(request, to="change the account")
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_update(user=request.user, **data.validated_data)
        return Response(UserOutputSerializer(user).data)


class MePasswordApi(APIView):
    """Change the signed-in user's password: every refresh token of theirs stops working.

    Only with a JWT: an API key, which scripts and servers hold, never changes the password.
    A wrong current password counts as a failed sign-in for the username.
    """

    class InputSerializer(serializers.Serializer):
        current_password = serializers.CharField(max_length=128, style={"input_type": "password"})
        new_password = serializers.CharField(max_length=128, style={"input_type": "password"})

    @extend_schema(
        request=InputSerializer,
        responses={200: inline_serializer("PasswordOutput", {"message": serializers.CharField()})},
    )
    def post(self, request: Request) -> Response:
        if api_key_of(request) is not None:
            raise exceptions.PermissionDenied(
                "An API key cannot change the password: sign in with POST /api/token/ and send "
                "the access token as Authorization: Bearer <token>."
            )
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        username = username_ident(request.user.get_username()) or ""
        SIGN_IN_FAILURES.check(username)
        try:
            user_password_change(user=request.user, **data.validated_data)
        except WrongPassword:
            SIGN_IN_FAILURES.hit(username)
            raise
        return Response(
            {
                "message": "Password changed. Every refresh token was revoked: sign in again "
                "(POST /api/token/) with the new password."
            }
        )
