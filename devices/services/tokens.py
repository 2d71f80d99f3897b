"""Writes on API tokens, and ending the dashboard sockets that stand on revoked credentials."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone

from core.channels import SOCKET_CLOSE, session_group, token_group
from core.errors import PayloadInvalid
from devices.models import ApiToken
from devices.secrets import TOKEN_PREFIX, secret_hash

logger = logging.getLogger("iotgw.devices")


def token_create(*, user: User, name: str = "") -> str:
    """Create an API token for a user; returns the key, which only exists in this answer."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, prefix=key[:12], key_hash=secret_hash(key))
    return key


def token_revoke(*, key: str | None = None, prefix: str | None = None, user: User | None = None,
                 name: str | None = None) -> int:
    """Revoke tokens by key, by prefix, or a user's (all, or those of one name); their open WebSockets are closed.

    Returns how many.
    """
    if key is None and prefix is None and user is None:
        raise PayloadInvalid("bad_request", "name a token key, a prefix or a user")
    qs = ApiToken.objects.filter(revoked_at__isnull=True)
    if key is not None:
        qs = qs.filter(key_hash=secret_hash(key))
    if prefix is not None:
        qs = qs.filter(prefix=prefix[:12])
    if user is not None:
        qs = qs.filter(user=user)
    if name is not None:
        qs = qs.filter(name=name)
    with transaction.atomic():
        ids = list(qs.select_for_update().values_list("pk", flat=True))
        ApiToken.objects.filter(pk__in=ids).update(revoked_at=timezone.now())
        transaction.on_commit(lambda: sockets_close(groups=[token_group(i) for i in ids]))
    return len(ids)


def sockets_close(*, groups: Iterable[str]) -> None:
    """Ask every dashboard socket in these groups to close (code 4401); best-effort."""
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            async_to_sync(layer.group_send)(group, {"type": SOCKET_CLOSE})
        except Exception as exc:  # the database already says no; this only hurries the close
            logger.warning("could not close sockets of %s: %s", group, exc)


@receiver(user_logged_out)
def _close_session_sockets(sender: object, request: HttpRequest | None = None, **kwargs: object) -> None:
    """Logging out ends the WebSockets opened with that session."""
    key = getattr(getattr(request, "session", None), "session_key", None)
    if key:
        sockets_close(groups=[session_group(key)])
