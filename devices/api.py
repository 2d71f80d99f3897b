"""The JSON API (SPEC §8) on django-ninja: one NinjaAPI, routers per concept, errors mapped here."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import NinjaAPI
from ninja.security import HttpBearer, django_auth

from devices.exceptions import Conflict, DeviceDisabled, DeviceUnknown, GatewayError, NotAuthorized, PayloadInvalid
from devices.selectors import token_user


class BearerToken(HttpBearer):
    """`Authorization: Bearer <API token>`."""

    def authenticate(self, request: HttpRequest, token: str):
        user = token_user(token)
        if user is not None:
            request.user = user
        return user


api = NinjaAPI(title="iotgw API", version="1", urls_namespace="api", auth=[BearerToken(), django_auth])

STATUS_OF: dict[type[GatewayError], int] = {
    PayloadInvalid: 400,
    NotAuthorized: 403,
    DeviceDisabled: 403,
    DeviceUnknown: 404,
    Conflict: 409,
}


def error_body(code: str, message: str) -> dict:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message}}


@api.exception_handler(GatewayError)
def gateway_error(request: HttpRequest, exc: GatewayError):
    status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 400)
    code = getattr(exc, "reason", None) or exc.code
    return api.create_response(request, error_body(code, str(exc)), status=status)


# Routers are added below, one per concept (devices, commands, ingest, broker auth).
