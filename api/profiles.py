"""Device profiles on the JSON API (docs/profiles.md): list and read them, create and replace custom ones, assign."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema, Status

from api.errors import errors
from core.errors import DeviceUnknown, NotAuthorized, ProfileUnknown
from core.ids import DEVICE_ID_RE
from devices.models import DeviceProfile
from devices.selectors import devices_visible_to
from devices.services.profiles import (
    device_register_child,
    device_set_profile,
    profile_delete,
    profile_save,
)

router = Router(tags=["profiles"])


class ProfileOut(Schema):
    name: str
    kind: str = Field(..., description="rules (the rule language of docs/profiles.md), iotgw, or a code-backed kind")
    builtin: bool
    description: str
    spec: dict[str, Any]
    updated_at: str


class ProfileIn(Schema):
    name: str = Field(..., description="^[a-z0-9][a-z0-9_-]{0,63}$")
    kind: str = "rules"
    description: str = Field("", max_length=2000)
    spec: dict[str, Any] = Field(..., description="validated when saved (docs/profiles.md)")


class ProfileReplace(Schema):
    kind: str = "rules"
    description: str = Field("", max_length=2000)
    spec: dict[str, Any]


class AssignIn(Schema):
    profile: str = Field(..., description="a profile's name; `iotgw` for SPEC §4's own topics")


class ChildIn(Schema):
    name: str = Field(..., min_length=1, max_length=200, description="the child's name at its gateway")


class AssignedOut(Schema):
    id: str
    profile: str
    gateway: str | None = None
    child_name: str | None = None


def _out(profile: DeviceProfile) -> dict[str, Any]:
    return {"name": profile.name, "kind": profile.kind, "builtin": profile.builtin,
            "description": profile.description, "spec": profile.spec, "updated_at": profile.updated_at.isoformat()}


def _staff(request: HttpRequest) -> None:
    if not request.auth.is_staff:
        raise NotAuthorized("only staff may change profiles")


def _profile(name: str) -> DeviceProfile:
    profile = DeviceProfile.objects.filter(name=name[:64]).first()
    if profile is None:
        raise ProfileUnknown(f"no profile {name[:64]!r}")
    return profile


def _assigned(device) -> dict[str, Any]:
    return {"id": device.id, "profile": device.profile_id or "iotgw", "gateway": device.gateway_id,
            "child_name": device.child_name or None}


def _visible(request: HttpRequest, device_id: str):
    device = devices_visible_to(request.auth).filter(pk=device_id).first() if DEVICE_ID_RE.fullmatch(device_id) \
        else None
    if device is None:
        raise DeviceUnknown(f"no device {device_id[:80]!r}")
    return device


@router.get("/profiles", response={200: list[ProfileOut], **errors(401)}, summary="Every device profile")
def profile_list(request: HttpRequest):
    return [_out(p) for p in DeviceProfile.objects.all()]


@router.get("/profiles/{name}", response={200: ProfileOut, **errors(401, 404)}, url_name="profile_detail",
            summary="One device profile")
def profile_detail(request: HttpRequest, name: str):
    return _out(_profile(name))


@router.post("/profiles", response={201: ProfileOut, **errors(400, 401, 403, 409)},
             summary="Create a custom profile (staff); its spec is validated")
def profile_create(request: HttpRequest, response: HttpResponse, body: ProfileIn):
    _staff(request)
    profile = profile_save(name=body.name, kind=body.kind, spec=body.spec, description=body.description)
    response["Location"] = f"{request.path.rstrip('/')}/{profile.name}"
    return Status(201, _out(profile))


@router.put("/profiles/{name}", response={200: ProfileOut, **errors(400, 401, 403, 404, 409)},
            summary="Replace a custom profile (staff); running bridges follow within IOTGW_PROFILE_REFRESH")
def profile_replace(request: HttpRequest, name: str, body: ProfileReplace):
    _staff(request)
    _profile(name)
    return _out(profile_save(name=name, kind=body.kind, spec=body.spec, description=body.description, create=False))


@router.delete("/profiles/{name}", response={200: ProfileOut, **errors(401, 403, 404, 409)},
               summary="Delete a custom profile no device uses (staff); answers what it was")
def profile_remove(request: HttpRequest, name: str):
    _staff(request)
    gone = _out(_profile(name))
    profile_delete(name=name)
    return gone


@router.put("/devices/{device_id}/profile", response={200: AssignedOut, **errors(400, 401, 403, 404)},
            summary="Put a device (and its children) on a profile (staff)")
def device_profile_set(request: HttpRequest, device_id: str, body: AssignIn):
    _visible(request, device_id)
    _staff(request)
    return _assigned(device_set_profile(device_id=device_id, profile=body.profile))


@router.post("/devices/{device_id}/children", response={201: AssignedOut, **errors(400, 401, 403, 404, 409)},
             summary="Register a gateway's child by its name there (staff); its id is derived (docs/profiles.md)")
def device_child_create(request: HttpRequest, device_id: str, body: ChildIn):
    _visible(request, device_id)
    _staff(request)
    return Status(201, _assigned(device_register_child(gateway_id=device_id, child_name=body.name)))
