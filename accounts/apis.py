"""Accounts: signup, JWT tokens (obtain, refresh, logout) and the signed-in user."""

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from accounts.services import user_create, user_update

User = get_user_model()


class UserOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "date_joined"]
        read_only_fields = fields


class SignupApi(APIView):
    """Create a user; Django's password validators apply. No token is needed."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "signup"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, style={"input_type": "password"})
        email = serializers.EmailField(required=False, allow_blank=True, default="")

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
    """Exchange a username and password for an access and a refresh token (throttled)."""

    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "token"


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
    """The signed-in user. Only `email` can be changed; other fields are read-only."""

    class InputSerializer(serializers.Serializer):
        email = serializers.EmailField(required=False, allow_blank=True)

    @extend_schema(responses=UserOutputSerializer)
    def get(self, request: Request) -> Response:
        return Response(UserOutputSerializer(request.user).data)

    @extend_schema(request=InputSerializer, responses=UserOutputSerializer)
    def patch(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_update(user=request.user, **data.validated_data)
        return Response(UserOutputSerializer(user).data)
