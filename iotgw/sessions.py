"""Django's database sessions, refusing a cookie key no session can have before it reaches the database.

Django checks only a key's length; a cookie such as `sessionid="abcdefgh\\000"` (the cookie parser
unquotes octal escapes) then puts a NUL into the lookup, which PostgreSQL refuses: every page, the API
and the WebSocket handshake answered 500. Keys are made of VALID_KEY_CHARS only, so any other key is
simply no session.
"""

from __future__ import annotations

from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

_KEY_CHARS = frozenset(VALID_KEY_CHARS)


class SessionStore(DatabaseSessionStore):
    """The database session store; a key with characters Django never generates is treated as absent."""

    def _validate_session_key(self, key: str | None) -> bool:
        return bool(super()._validate_session_key(key)) and _KEY_CHARS.issuperset(key)
