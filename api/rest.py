"""The JSON API (SPEC §8) on django-ninja: one NinjaAPI, routers per concept, errors mapped here."""

from __future__ import annotations

import logging
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth

# The error shape is in api/errors.py, which the routers import: a router importing this module (whose end
# adds every router) would import itself half-initialised.
from api.errors import ERROR_STATUSES
from core.errors import (
    Conflict,
    DeviceDisabled,
    DeviceUnknown,
    GatewayError,
    NotAuthorized,
    PayloadInvalid,
    RateLimited,
)
from devices.selectors import token_lookup

logger = logging.getLogger("iotgw.api")


class BearerToken(HttpBearer):
    """`Authorization: Bearer <API token>`."""

    def authenticate(self, request: HttpRequest, token: str):
        found = token_lookup(token)
        if found is None:
            return None
        request.user = found.user
        request.api_token_id = found.pk  # what a WebSocket ticket fetched with it remembers
        return found.user


class SessionCookie(SessionAuth):
    """The Django session; with no session cookie at all it stands aside, so the answer is 401, not a CSRF 403."""

    def __call__(self, request: HttpRequest):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        return super().__call__(request)


# Devices authenticate HTTP ingest with their own credentials, not an API token.
DEVICE_SECURITY_SCHEMES: dict[str, Any] = {
    "DeviceBasic": {"type": "http", "scheme": "basic",
                    "description": "the device's id as username and its secret as password"},
    "DeviceSecret": {"type": "http", "scheme": "bearer", "description": "the device's secret as a bearer token"},
}


class GatewayAPI(NinjaAPI):
    """NinjaAPI whose schema also documents the device credentials of HTTP ingest and the error statuses."""

    # operationIds are part of the API's contract (generated clients name their methods after them): they
    # stay as they were when these routers lived in devices/.
    OPERATION_ID_PREFIX = {"api.devices": "devices_api_devices", "api.ingest": "devices_api_devices",
                           "api.commands": "devices_api_commands", "api.tickets": "devices_api_tickets"}

    def get_openapi_operation_id(self, operation) -> str:
        module = operation.view_func.__module__
        prefix = self.OPERATION_ID_PREFIX.get(module, module.replace(".", "_"))
        return f"{prefix}_{operation.view_func.__name__}"

    def get_openapi_schema(self, *, path_prefix: str | None = None, path_params: dict | None = None):
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        schema["components"].setdefault("securitySchemes", {}).update(DEVICE_SECURITY_SCHEMES)
        for operations in schema["paths"].values():
            for operation in operations.values():
                for status, answer in operation.get("responses", {}).items():
                    if int(status) in ERROR_STATUSES:
                        answer["description"] = ERROR_STATUSES[int(status)]
                    if int(status) == 429:
                        answer["headers"] = {"Retry-After": {
                            "description": "seconds to wait before trying again", "schema": {"type": "integer"}}}
        return schema


api = GatewayAPI(title="iotgw API", version="1", urls_namespace="api", auth=[BearerToken(), SessionCookie()])

STATUS_OF: dict[type[GatewayError], int] = {
    PayloadInvalid: 400,
    NotAuthorized: 403,
    DeviceDisabled: 403,
    DeviceUnknown: 404,
    Conflict: 409,
    RateLimited: 429,
}
# PayloadInvalid reasons with a status of their own.
STATUS_OF_REASON = {"too_large": 413}


def error_body(code: str, message: str) -> dict:
    """The one error shape of the API."""
    return {"error": {"code": code, "message": message}}


@api.exception_handler(GatewayError)
def gateway_error(request: HttpRequest, exc: GatewayError):
    status = next((s for cls, s in STATUS_OF.items() if isinstance(exc, cls)), 400)
    code = getattr(exc, "reason", None) or exc.code
    status = STATUS_OF_REASON.get(code, status)
    response = api.create_response(request, error_body(code, str(exc)), status=status)
    if isinstance(exc, RateLimited):
        response["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return response


HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 429: "rate_limited", 500: "internal_error"}


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError):
    """ninja's own errors (authentication 401, CSRF 403, throttling 429) in the API's error shape."""
    code = HTTP_CODES.get(exc.status_code, "bad_request")
    response = api.create_response(request, error_body(code, str(exc)), status=exc.status_code)
    if exc.status_code == 401:
        response["WWW-Authenticate"] = getattr(exc, "challenge", 'Bearer realm="iotgw"')
    return response


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError):
    """Request validation fails with 400 (not ninja's 422): one status for every bad request."""
    first = exc.errors[0] if exc.errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request"))
    body = error_body("bad_request", message)
    body["error"]["details"] = [{"loc": e.get("loc"), "msg": e.get("msg")} for e in exc.errors[:20]]
    return api.create_response(request, body, status=400)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404):
    return api.create_response(request, error_body("not_found", "not found"), status=404)


@api.exception_handler(RequestDataTooBig)
def body_too_large(request: HttpRequest, exc: RequestDataTooBig):
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE is the client's doing: 413, not a 500."""
    return api.create_response(request, error_body("too_large", str(exc)), status=413)


@api.exception_handler(Exception)
def internal_error(request: HttpRequest, exc: Exception):
    """Anything unexpected: logged with its traceback, answered without it."""
    logger.exception("API error on %s %s", request.method, request.path)
    return api.create_response(request, error_body("internal_error", "internal error"), status=500)


# Routers are added below, one per concept (devices, ingest, commands, tickets, telemetry export and import).

api.add_router("/", "api.devices.router")
api.add_router("/", "api.profiles.router")
api.add_router("/", "api.ingest.router")
api.add_router("/", "api.commands.router")
api.add_router("/", "api.tickets.router")
api.add_router("/", "api.notifications.router")
api.add_router("/", "api.transfer.router")
api.add_router("/", "api.alarms.router")
