"""WebSocket authentication: a bearer API token header, a single-use ticket, or else the session cookie."""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.request import split_domain_port, validate_host

from devices.selectors import token_lookup
from devices.tickets import ws_ticket_redeem


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


def origin_allowed(origin: str | None) -> bool:
    """True when the Origin's host is one of DJANGO_ALLOWED_HOSTS."""
    if not origin or "://" not in origin:
        return False
    host, _port = split_domain_port(origin.split("://", 1)[1].split("/", 1)[0])
    return bool(host) and validate_host(host, settings.ALLOWED_HOSTS)


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
