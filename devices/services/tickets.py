"""WebSocket tickets: short-lived, single-use credentials a browser on another origin can present in a URL.

A page cannot set `Authorization` on a WebSocket handshake, and a cookie does not
cross origins; a long-lived token must never sit in a URL (proxies and servers
log URLs). A ticket is fetched over the API with a token or a session, lives
IOTGW_WS_TICKET_SECONDS and is spent by the first handshake that shows it, so a
logged URL is worthless. Tickets live in the database: any web process may
redeem one another issued, and the all-in-one (no Redis) works the same.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from devices.models import WsTicket
from devices.secrets import secret_hash
from devices.selectors import socket_credentials_valid

TICKET_PREFIX = "wst_"
MAX_TICKET_LENGTH = 100


def ws_ticket_issue(*, user: User, token_id: int | None, session_key: str | None,
                    ttl: float) -> tuple[str, datetime]:
    """Store a new ticket for `user`; returns its key (only in this answer) and when it expires."""
    now = timezone.now()
    WsTicket.objects.filter(expires_at__lt=now).delete()  # unspent ones that expired; the index keeps it cheap
    key = TICKET_PREFIX + secrets.token_urlsafe(32)
    expires_at = now + timedelta(seconds=ttl)
    WsTicket.objects.create(key_hash=secret_hash(key), user=user, token_id=token_id,
                            session_key=session_key or "", expires_at=expires_at)
    return key, expires_at


def ws_ticket_redeem(*, key: str) -> WsTicket | None:
    """Spend a ticket: it, if it was unused, unexpired and its credentials still hold; None otherwise.

    The row is deleted before anything else is checked, and only the caller whose
    DELETE removed it may use it, so two handshakes racing with one ticket cannot
    both succeed, whichever web process each reached.
    """
    if not key.startswith(TICKET_PREFIX) or len(key) > MAX_TICKET_LENGTH:
        return None
    key_hash = secret_hash(key)
    ticket = WsTicket.objects.select_related("user").filter(key_hash=key_hash).first()
    if ticket is None:
        return None
    deleted, _ = WsTicket.objects.filter(key_hash=key_hash).delete()
    if not deleted or ticket.expires_at <= timezone.now():
        return None
    if not socket_credentials_valid(user_id=ticket.user_id, token_id=ticket.token_id,
                                    session_key=ticket.session_key or None):
        return None
    return ticket
