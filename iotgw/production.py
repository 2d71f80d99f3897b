"""What a production process refuses to start with (README "Production checks").

The split web process (Daphne on iotgw.asgi) and the bridge (`runworker
mqtt-bridge`) exist only in a deployment: they are production processes. So is
the all-in-one gateway once DEBUG is off. A production process refuses to start,
in one line naming the variable, with the placeholder (or a weak) secret key; a
split process also refuses DEBUG on, which would show tracebacks and settings to
anyone who can make it fail (debug locally with `manage.py gateway`, which may
join a deployment's Redis and broker).
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks.security.base import check_secret_key

NEW_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(50))'"


def unsafe_reasons(*, split: bool) -> list[str]:
    """Why this process must not start (empty when it may)."""
    reasons = []
    if split and settings.DEBUG:
        reasons.append("DJANGO_DEBUG is on: a separate web or bridge process serves a deployment, set "
                       "DJANGO_DEBUG=0 (debug with the all-in-one `manage.py gateway` instead)")
    if split or not settings.DEBUG:
        weak = settings.SECRET_KEY == settings.PLACEHOLDER_SECRET_KEY or check_secret_key(None)
        if weak:
            reasons.append(f"Config 'DJANGO_SECRET_KEY' is unset, the placeholder or weak: set 50 or more random "
                           f"characters, e.g. from {NEW_KEY}")
    return reasons


def refusal(process: str, *, split: bool) -> str | None:
    """The one line a production process exits with, or None when it may start."""
    reasons = unsafe_reasons(split=split)
    return f"iotgw: the {process} refuses to start: " + "; ".join(reasons) if reasons else None
