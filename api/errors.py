"""The API's one error shape (SPEC §8) and the statuses operations declare; imported by every router."""

from __future__ import annotations

from ninja import Field, Schema
from pydantic.json_schema import SkipJsonSchema


class ErrorDetail(Schema):
    loc: list[str | int] = Field(..., description='where in the request, e.g. ["query", "limit"]')
    msg: str


class ErrorInfo(Schema):
    code: str = Field(..., description="machine-readable reason, e.g. `bad_request`, `unknown_device`, `rate_limited`")
    message: str = Field(..., description="for people; may change between versions")
    details: list[ErrorDetail] | SkipJsonSchema[None] = Field(
        None, description="only on 400 `bad_request` from request validation: every field that failed (up to 20)")


class Error(Schema):
    """The API's one error shape."""

    error: ErrorInfo


# What each error status means across the API; the schema carries these, per operation that answers them.
ERROR_STATUSES: dict[int, str] = {
    400: "The request is wrong: `bad_request` (with `details` when a field failed validation), or a payload "
         "reason such as `bad_device_id`, `not_json`, `not_utf8`, `bad_sample`.",
    401: "`unauthorized`: no credentials, or wrong ones. `WWW-Authenticate` names the scheme.",
    403: "`forbidden`: not allowed (not staff, a disabled device), or a session request without its CSRF token.",
    404: "`unknown_device` / `unknown_command`: it does not exist, or the caller may not see it (the same answer).",
    409: "`conflict`: it exists already, or its state forbids the action.",
    413: "`too_large`: the body is over the size limit.",
    429: "`rate_limited`: too many requests; `Retry-After` says how many seconds to wait.",
}


def errors(*statuses: int) -> dict[int, type[Error]]:
    """The `response=` entries of the error statuses an operation really answers."""
    return {status: Error for status in statuses}
