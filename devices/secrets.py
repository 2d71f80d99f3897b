"""Device secrets and API token keys: how they are made and hashed (only hashes are stored)."""

from __future__ import annotations

import base64
import hashlib
import secrets

TOKEN_PREFIX = "iotgw_"


def secret_hash(secret: str) -> str:
    """SHA-256 of a high-entropy secret; a slow hash buys nothing for 192 random bits."""
    return hashlib.sha256(secret.encode()).hexdigest()


# Mosquitto's password-file hash ("$7$", PBKDF2-SHA512, 12-byte salt), as `mosquitto_passwd` writes it.
# The iteration count is Mosquitto's own default: the secret is random, so the count adds nothing.
MOSQUITTO_HASH_ITERATIONS = 101


def mosquitto_password_hash(secret: str, *, salt: bytes | None = None) -> str:
    """A secret in the form a Mosquitto `password_file` line holds after `username:`."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, MOSQUITTO_HASH_ITERATIONS)
    return f"$7${MOSQUITTO_HASH_ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
