"""WebSocket authentication: a bearer API token header, a single-use ticket, or else the session cookie."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

from core.credentials import device_credentials
from devices.selectors import device_secret_ok, token_lookup
from devices.services.tickets import ws_ticket_redeem


def header(scope: dict, name: bytes) -> str | None:
    """The first value of a handshake header, decoded."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def bearer_key(value: str) -> str | None:
    """The token in `Bearer <token>`, or None for any other scheme."""
    scheme, _, key = value.partition(" ")
    return key.strip() if scheme.lower() == "bearer" and key.strip() else None


def ticket_key(scope: dict) -> str | None:
    """The `ticket` query parameter of the handshake URL, or None."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket")
    return values[0] if values else None


def _secure(scope: dict) -> bool:
    """Whether the handshake came over TLS: the server says so, or a proxy does (SECURE_PROXY_SSL_HEADER)."""
    if scope.get("scheme") in ("wss", "https"):
        return True
    if settings.SECURE_PROXY_SSL_HEADER:
        name, expected = settings.SECURE_PROXY_SSL_HEADER
        name = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1")
        value = header(scope, name)
        return value is not None and value.split(",", 1)[0].strip() == expected
    return False


def _own_origin(scope: dict) -> str | None:
    """This site's origin as Django's request.get_host() and is_secure() see it; None for a disallowed Host."""
    host = header(scope, b"host")
    if not host:
        return None
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, allowed):
        return None
    return f"{'https' if _secure(scope) else 'http'}://{host}"


def _trusted(origin: str) -> bool:
    """In CSRF_TRUSTED_ORIGINS, exactly or by a `scheme://*.domain` wildcard, as Django's CSRF check reads it."""
    trusted = settings.CSRF_TRUSTED_ORIGINS
    if origin in trusted:
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    return any(
        is_same_domain(parsed.netloc, urlsplit(pattern).netloc.lstrip("*"))
        for pattern in trusted
        if "*" in pattern and urlsplit(pattern).scheme == parsed.scheme
    )


def origin_allowed(scope: dict) -> bool:
    """Django's CSRF Origin rule for a cookie-authenticated handshake: the site's own scheme, host and port
    (from the Host header, itself in ALLOWED_HOSTS), or an origin in CSRF_TRUSTED_ORIGINS."""
    origin = header(scope, b"origin")
    if not origin or origin == "null":
        return False
    own = _own_origin(scope)
    return (own is not None and origin.lower() == own.lower()) or _trusted(origin)


class BearerOrSessionAuthMiddleware:
    """Sets scope["user"], scope["auth"] ("token"/"ticket"/"session") and scope["token_id"].

    Never a token from the URL: only a ticket, which is spent by this handshake.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.session_app = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        authorization = header(scope, b"authorization")
        if authorization is None:
            ticket = ticket_key(scope)
            if ticket is not None:
                return await self.inner(await _ticket_scope(scope, ticket), receive, send)
            return await self.session_app(dict(scope, auth="session"), receive, send)
        key = bearer_key(authorization)
        token = await database_sync_to_async(token_lookup)(key) if key else None
        user = token.user if token is not None else AnonymousUser()
        token_id = token.pk if token is not None else None
        return await self.inner(dict(scope, auth="token", user=user, token_id=token_id), receive, send)


async def _ticket_scope(scope: dict, key: str) -> dict:
    """The scope of a handshake that shows a ticket: its user, and the token or session it was fetched with."""
    ticket = await database_sync_to_async(ws_ticket_redeem)(key=key)
    if ticket is None:
        return dict(scope, auth="ticket", user=AnonymousUser(), token_id=None, ticket_session_key=None)
    return dict(scope, auth="ticket", user=ticket.user, token_id=ticket.token_id,
                ticket_session_key=ticket.session_key or None)


class DeviceAuthMiddleware:
    """Sets scope["device_id"] (None when refused) from the device's own credentials in the handshake.

    `Authorization: Basic base64(id:secret)` on `/ws/device/`, or also `Bearer <secret>` on
    `/ws/device/{id}/`: the same credentials HTTP ingest takes (SPEC §8), never in the URL.
    """

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        named = scope.get("url_route", {}).get("kwargs", {}).get("device_id")
        credentials = device_credentials(header(scope, b"authorization"), device_id=named)
        device_id = secret = None
        if credentials is not None and await database_sync_to_async(device_secret_ok)(*credentials):
            device_id, secret = credentials
        return await self.inner(dict(scope, device_id=device_id, device_secret=secret), receive, send)
