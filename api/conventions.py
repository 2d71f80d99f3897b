"""HTTP conventions under /api/ that Django and ninja leave out: HEAD on GET endpoints, JSON for every error."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from api.rest import HTTP_CODES, error_body

API_PREFIX = "/api/"


class ApiConventionsMiddleware:
    """Under /api/: HEAD answers like GET (the server drops the body); a non-JSON error becomes the error shape.

    Django's resolver answers an unknown path with an HTML page (a debug page with
    DEBUG on), and ninja a wrong method with a text/html 405; clients of a JSON API
    should get `{"error": {"code", "message"}}` whatever answered.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        head = request.method == "HEAD"
        if head:
            request.method = "GET"
        response = self.get_response(request)
        if head:
            request.method = "HEAD"
        if response.status_code >= 400 and not _is_json(response):
            response = _as_error_shape(request, response)
        return response


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


def _as_error_shape(request: HttpRequest, original: HttpResponse) -> JsonResponse:
    status = original.status_code
    code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    if status == 404:
        message = f"no API endpoint {request.path[:200]}"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.path[:200]}"
    else:
        message = original.reason_phrase
    response = JsonResponse(error_body(code, message), status=status, content_type="application/json; charset=utf-8")
    if "Allow" in original:
        allowed = [m.strip() for m in original["Allow"].split(",") if m.strip()]
        if "GET" in allowed and "HEAD" not in allowed:
            allowed.append("HEAD")
        response["Allow"] = ", ".join(sorted(allowed))
    for header in ("WWW-Authenticate", "Retry-After"):
        if header in original:
            response[header] = original[header]
    return response

