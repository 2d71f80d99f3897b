"""The JSON API (SPEC §8) on django-ninja: one NinjaAPI, routers per concept, errors mapped here."""

from __future__ import annotations

import logging

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from ninja import NinjaAPI
from ninja.errors import HttpError, ValidationError
from ninja.security import HttpBearer, SessionAuth

from devices.exceptions import Conflict, DeviceDisabled, DeviceUnknown, GatewayError, NotAuthorized, PayloadInvalid
from devices.selectors import token_user
from protocols.ratelimit import RateLimited

logger = logging.getLogger("iotgw.api")


class BearerToken(HttpBearer):
    """`Authorization: Bearer <API token>`."""

    def authenticate(self, request: HttpRequest, token: str):
        user = token_user(token)
        if user is not None:
            request.user = user
        return user


class SessionCookie(SessionAuth):
    """The Django session; with no session cookie at all it stands aside, so the answer is 401, not a CSRF 403."""

    def __call__(self, request: HttpRequest):
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        return super().__call__(request)


api = NinjaAPI(title="iotgw API", version="1", urls_namespace="api", auth=[BearerToken(), SessionCookie()])

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
    return api.create_response(request, error_body(code, str(exc)), status=status)


HTTP_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
              409: "conflict", 413: "too_large", 429: "rate_limited"}


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


@api.exception_handler(Exception)
def internal_error(request: HttpRequest, exc: Exception):
    """Anything unexpected: logged with its traceback, answered without it."""
    logger.exception("API error on %s %s", request.method, request.path)
    return api.create_response(request, error_body("internal_error", "internal error"), status=500)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 404 handler: the API's error shape under /api/, the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("not_found", f"no API endpoint {request.path}"), status=404)
    return defaults.page_not_found(request, exception)


# Routers are added below, one per concept (devices, commands, ingest, broker auth).

from devices import api_devices  # noqa: E402

api.add_router("/", api_devices.router)
api.add_router("/", "devices.api_commands.router")
