"""Commands on the JSON API (SPEC §8): issue, read, cancel; the same services as the WebSocket."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from ninja import Field, Router, Schema, Status

from api.errors import errors
from core.errors import CommandUnknown, DeviceUnknown, NotAuthorized
from core.wire import DEFAULT_EXPIRES_IN, DEFAULT_TIMEOUT
from devices.models import Command
from devices.notify import command_announce, commands_announce
from devices.selectors import command_get, command_state
from devices.services.commands import command_cancel, command_issue, command_issue_many

router = Router(tags=["commands"])


class CommandIn(Schema):
    name: str = Field(..., description="^[A-Za-z0-9_.:-]{1,64}$")
    params: dict[str, Any] = {}
    timeout: float | None = Field(None, description=f"seconds to wait for a response once sent ({DEFAULT_TIMEOUT:g})")
    expires_in: float | None = Field(None, description=f"seconds it may wait queued ({DEFAULT_EXPIRES_IN:g})")
    oneway: bool = Field(False, description="expect no response: the command ends at `sent`")
    idempotency_key: str | None = Field(None, description="unique per device: issuing it again returns the first")
    ref: str | int | None = Field(None, description="your reference, echoed in `command` frames")


# One fleet-wide command names at most this many devices (a 10,000-id body is ~300 KB).
FLEET_MAX = 10_000


class FleetCommandIn(CommandIn):
    devices: list[str] = Field(..., min_length=1, max_length=FLEET_MAX,
                               description=f"the devices to command, 1 to {FLEET_MAX}")


class FleetCommandRef(Schema):
    id: str
    device: str
    status: str


class FleetCommandOut(Schema):
    commands: list[FleetCommandRef] = Field(..., description="one per device commanded, in the order given")
    refused: dict[str, str] = Field(..., description="device id → unknown_device or device_disabled")


class Transition(Schema):
    status: str
    at: str


class CommandOut(Schema):
    id: str
    device: str
    name: str
    params: dict[str, Any]
    status: str = Field(..., description="queued, sent, succeeded, failed, timed_out, expired or cancelled")
    result: Any = None
    error: str | None = None
    ref: str | int | None = None
    oneway: bool
    timeout: float
    idempotency_key: str | None = None
    created_at: str
    updated_at: str
    expires_at: str
    sent_at: str | None = None
    finished_at: str | None = None
    history: list[Transition]


def _announce(command: Command) -> None:
    async_to_sync(command_announce)(get_channel_layer(), command, buckets=settings.IOTGW_PUSH_BUCKETS)


@contextmanager
def _hidden_as(missing: type[DeviceUnknown], what: str) -> Iterator[None]:
    """Like the rest of the API, answer 404 for what the caller may not see: existence is not leaked."""
    try:
        yield
    except NotAuthorized:
        raise missing(f"no such {what}") from None


@router.post("/devices/{device_id}/commands", response={202: CommandOut, **errors(400, 401, 403, 404, 413)},
             openapi_extra={"responses": {202: {"headers": {"Location": {
                 "description": "the command's URL: follow its lifecycle there", "schema": {"type": "string"}}}}}})
def issue(request: HttpRequest, response: HttpResponse, device_id: str, body: CommandIn):
    """Issue a command: stored `queued`, then published as soon as the device is online."""
    with _hidden_as(DeviceUnknown, f"device: {device_id}"):
        command = command_issue(user=request.user, device_id=device_id, **body.dict())
    _announce(command)
    response["Location"] = reverse("api:command_detail", kwargs={"command_id": str(command.id)})
    return Status(202, command_state(command))


@router.post("/commands", response={202: FleetCommandOut, **errors(400, 401, 403, 413)})
def issue_fleet(request: HttpRequest, body: FleetCommandIn):
    """Issue one command to many devices in one request: stored together, published as each device is online.

    Each command then lives its own lifecycle (`GET /api/commands/{id}`); devices the caller may not
    command are listed in `refused` instead of failing the others.
    """
    fields = body.dict()
    commands, refused = command_issue_many(user=request.user, device_ids=fields.pop("devices"), **fields)
    async_to_sync(commands_announce)(get_channel_layer(), commands, buckets=settings.IOTGW_PUSH_BUCKETS)
    return Status(202, {"commands": [{"id": str(c.id), "device": c.device_id, "status": c.status} for c in commands],
                        "refused": refused})


@router.get("/commands/{command_id}", response={200: CommandOut, **errors(401, 404)}, url_name="command_detail")
def read(request: HttpRequest, command_id: str):
    """One command and its lifecycle, every transition with its time."""
    with _hidden_as(CommandUnknown, f"command: {command_id[:80]}"):
        return command_state(command_get(user=request.user, command_id=command_id))


@router.post("/commands/{command_id}/cancel", response={200: CommandOut, **errors(401, 403, 404, 409)})
def cancel(request: HttpRequest, command_id: str):
    """Cancel a command still `queued`; 409 once it is on its way or finished."""
    with _hidden_as(CommandUnknown, f"command: {command_id[:80]}"):
        command = command_cancel(user=request.user, command_id=command_id)
    _announce(command)
    return command_state(command)
