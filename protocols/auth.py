"""WebSocket authentication: a bearer API token header, or else the Django session cookie."""

from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

from devices.selectors import token_lookup


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


def origin_allowed(origin: str | None) -> bool:
    """True when the Origin's host is one of DJANGO_ALLOWED_HOSTS."""
    if not origin or "://" not in origin:
        return False
    host, _port = split_domain_port(origin.split("://", 1)[1].split("/", 1)[0])
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


class BearerOrSessionAuthMiddleware:
    """Sets scope["user"], scope["auth"] ("token"/"session") and scope["token_id"]; never a token from the URL."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.session_app = AuthMiddlewareStack(inner)

    async def __call__(self, scope, receive, send):
        authorization = header(scope, b"authorization")
        if authorization is None:
            return await self.session_app(dict(scope, auth="session"), receive, send)
        key = bearer_key(authorization)
        token = await database_sync_to_async(token_lookup)(key) if key else None
        user = token.user if token is not None else AnonymousUser()
        token_id = token.pk if token is not None else None
        return await self.inner(dict(scope, auth="token", user=user, token_id=token_id), receive, send)
