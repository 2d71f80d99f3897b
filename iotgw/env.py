"""The one place that reads the process environment (SPEC §2)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}


def text(name: str, default: str | None = None) -> str | None:
    """The variable's value, or `default` when it is unset or empty."""
    value = os.environ.get(name, "")
    return value if value != "" else default


def flag(name: str, default: bool = False) -> bool:
    """A boolean variable: 1/true/yes/on."""
    value = text(name)
    return default if value is None else value.lower() in _TRUE


def number(name: str, default: float) -> float:
    """A numeric variable; a value that is not a number fails loudly."""
    value = text(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"Config '{name}' must be a number, got {value!r}") from None


def origins(name: str) -> list[str]:
    """A comma-separated list of web origins (`scheme://host[:port]`); anything else fails loudly."""
    found = [item.strip().rstrip("/") for item in (text(name) or "").split(",") if item.strip()]
    for origin in found:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ValueError(f"Config '{name}' must list origins such as https://ops.example.com, got {origin!r}")
    return found


def listing(name: str, default: str = "") -> list[str]:
    """A comma-separated variable as a list, blanks dropped."""
    return [item.strip() for item in (text(name, default) or "").split(",") if item.strip()]


def url_username(url: str | None) -> str | None:
    """The username in a URL such as `mqtt://user:pw@host`, or None."""
    return unquote(urlsplit(url).username or "") if url and urlsplit(url).username else None


def url_password(url: str | None) -> str | None:
    """The password in a URL such as `mqtt://user:pw@host`, or None."""
    return unquote(urlsplit(url).password or "") if url and urlsplit(url).password else None


def default_client_id() -> str:
    """A stable MQTT client id for this host, so a restarted bridge resumes its session."""
    return f"iotgw-bridge-{socket.gethostname()}"[:64]
