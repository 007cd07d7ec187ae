"""DRF authentication by `Authorization: Bearer fmu_<prefix>_<secret>`."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.models import ApiKey, User
from accounts.selectors import api_key_from_raw
from accounts.services import api_key_mark_used


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw_key = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not raw_key.strip():
            raise exceptions.AuthenticationFailed(
                "Use the header 'Authorization: Bearer fmu_<prefix>_<secret>'."
            )
        api_key = api_key_from_raw(raw_key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if api_key.is_revoked:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if api_key.is_expired:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        if not api_key.user.is_active:
            raise exceptions.AuthenticationFailed("This account is disabled.")
        api_key_mark_used(api_key=api_key)
        return api_key.user, api_key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The key's security scheme in the OpenAPI schema (ApiKey, a Bearer token).

    Defined here, beside the class it describes, so it is registered whenever DRF loads
    the authentication class, before any schema is generated.
    """

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "fmu_<prefix>_<secret>",
            "description": (
                "An API key from the portal's key page: "
                "`Authorization: Bearer fmu_<prefix>_<secret>`."
            ),
        }
