"""Broker hooks: /mqtt/auth, /mqtt/acl and /mqtt/superuser for EMQX 5 and mosquitto-go-auth (docs/broker-auth.md).

A device logs in with its id and secret and may use exactly its profile's
topics (docs/profiles.md): by default publish only to its own telemetry, status
and command-response topics, and subscribe only to its own commands topic. The
bridge's account may do everything. Anything else, including an error while
deciding, is a deny.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from core.ids import DEVICE_ID_RE
from core.profiles import allowed
from devices.selectors import device_grants, device_secret_ok

logger = logging.getLogger("iotgw.broker_auth")

EMQX = "emqx"
GO_AUTH = "go-auth"
HOOK_SECRET_HEADER = "X-Iotgw-Hook-Secret"

# mosquitto-go-auth's `acc`: 1 read (deliver to the client), 2 write (publish), 3 both, 4 subscribe.
READ, WRITE, READWRITE, SUBSCRIBE = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class HookRequest:
    """The fields both brokers send, and which of them is asking."""

    fields: dict[str, str]
    format: str

    def get(self, name: str) -> str:
        return self.fields.get(name, "")


def _fields(request: HttpRequest) -> tuple[dict[str, str], bool]:
    """The request's fields from a JSON or form body (or the query string), and whether it was JSON."""
    if request.content_type == "application/json":
        try:
            doc = json.loads(request.body or b"{}")
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict):
            return {str(k): "" if v is None else str(v) for k, v in doc.items()}, True
        return {}, True
    data = request.POST if request.POST else request.GET
    return {k: data.get(k, "") for k in data}, False


def _detect(request: HttpRequest, fields: dict[str, str], is_json: bool) -> str:
    """EMQX or mosquitto-go-auth: `?format=` when given, else by the fields and the client."""
    explicit = request.GET.get("format", "").lower()
    if explicit in (EMQX, GO_AUTH):
        return explicit
    if "acc" in fields:
        return GO_AUTH
    if "action" in fields:
        return EMQX
    # go-auth sends forms by default; in JSON mode it is still Go's HTTP client.
    if not is_json or request.headers.get("User-Agent", "").startswith("Go-http-client"):
        return GO_AUTH
    return EMQX


def _parse(request: HttpRequest) -> HookRequest:
    fields, is_json = _fields(request)
    return HookRequest(fields=fields, format=_detect(request, fields, is_json))


def _answer(hook: HookRequest, allow: bool, *, superuser: bool = False) -> HttpResponse:
    """EMQX reads `result` from a 200 (any other status means "ignore", so a deny must be a 200);
    go-auth reads the status (200 allow, 403 deny) and, in JSON response mode, `ok`."""
    if hook.format == EMQX:
        body = {"result": "allow" if allow else "deny"}
        if allow:
            body["is_superuser"] = superuser
        return JsonResponse(body, status=200)
    return JsonResponse({"ok": allow, "error": "" if allow else "denied"}, status=200 if allow else 403)


def _is_bridge(username: str) -> bool:
    return bool(settings.MQTT_BRIDGE_USERNAME) and hmac.compare_digest(username, settings.MQTT_BRIDGE_USERNAME)


def _secret_ok(request: HttpRequest) -> bool:
    if not settings.MQTT_HOOK_SECRET:
        return True
    return hmac.compare_digest(request.headers.get(HOOK_SECRET_HEADER, ""), settings.MQTT_HOOK_SECRET)


def authenticate(*, username: str, password: str) -> tuple[bool, bool]:
    """(allowed, superuser) for a login: the bridge's account, or an enabled device with its secret."""
    if _is_bridge(username):
        expected = settings.MQTT_BRIDGE_PASSWORD or ""
        return hmac.compare_digest(password, expected) and bool(expected), True
    if not DEVICE_ID_RE.match(username) or not password:
        return False, False
    return device_secret_ok(username, password), False


def topic_allowed(*, username: str, topic: str, publish: bool, subscribe: bool) -> bool:
    """Whether a user may publish to, or subscribe to (and receive from), a topic."""
    if _is_bridge(username):
        return True
    if not DEVICE_ID_RE.match(username) or publish == subscribe:
        return False  # no topic is both, or neither
    grants = device_grants(username)  # its profile's topics (docs/profiles.md); SPEC §4's own by default
    return grants is not None and allowed(grants, topic, subscribe=subscribe)


def _guarded(decide):
    """A POST-only, CSRF-exempt hook that denies on a missing hook secret or on any error."""

    @csrf_exempt
    @require_POST
    def view(request: HttpRequest) -> HttpResponse:
        hook = _parse(request)
        if not _secret_ok(request):
            logger.warning("broker hook %s called without the right %s", request.path, HOOK_SECRET_HEADER)
            return _answer(hook, False)
        try:
            allow, superuser = decide(hook)
        except Exception:
            logger.exception("broker hook %s failed; denying", request.path)
            return _answer(hook, False)
        return _answer(hook, allow, superuser=superuser)

    view.__name__ = view.__qualname__ = decide.__name__
    view.__doc__ = decide.__doc__
    return view


@_guarded
def mqtt_auth(hook: HookRequest) -> tuple[bool, bool]:
    """POST /mqtt/auth: username, password (and clientid) → allow or deny."""
    return authenticate(username=hook.get("username"), password=hook.get("password"))


@_guarded
def mqtt_superuser(hook: HookRequest) -> tuple[bool, bool]:
    """POST /mqtt/superuser (go-auth): only the bridge's account is a superuser."""
    return _is_bridge(hook.get("username")), True


@_guarded
def mqtt_acl(hook: HookRequest) -> tuple[bool, bool]:
    """POST /mqtt/acl: username, topic and action (EMQX) or acc (go-auth) → allow or deny."""
    if hook.format == EMQX:
        action = hook.get("action").lower()
        publish, subscribe = action == "publish", action == "subscribe"
    else:
        try:
            acc = int(hook.get("acc"))
        except ValueError:
            return False, False
        publish = acc in (WRITE, READWRITE)
        subscribe = acc in (READ, READWRITE, SUBSCRIBE)
    allowed = topic_allowed(username=hook.get("username"), topic=hook.get("topic"), publish=publish,
                            subscribe=subscribe)
    return allowed, False
