"""The gateway as a Sparkplug 3.0 primary host application: its retained STATE, `online` while it is connected.

Edge nodes configured with a primary host id publish their births only while that host's
`spBv1.0/STATE/<host id>` says `{"online": true, …}`. The MQTT edge registers the death as its
will at each CONNECT, publishes the birth once connected, and the death again before a clean
disconnect (which discards the will); both carry the same timestamp, as the specification requires.
"""

from __future__ import annotations

from datetime import datetime

from core.errors import ConfigMissing
from core.sparkplug.commands import state_payload
from core.sparkplug.topic import MAX_ID, state_topic


class PrimaryHost:
    """The STATE messages of one host id; `death(at)` starts a connection's pair, `birth()` follows it."""

    def __init__(self, host_id: str) -> None:
        if not host_id or len(host_id) > MAX_ID or any(c in host_id for c in "/+#\x00"):
            raise ConfigMissing("IOTGW_SPARKPLUG_HOST_ID", "a Sparkplug host id is 1 to 256 characters, "
                                "none of them / + # or NUL")
        self.topic = state_topic(host_id)
        self._at: datetime | None = None

    def death(self, at: datetime) -> bytes:
        """The will of the connection about to be made at `at`: offline, with that connection's timestamp."""
        self._at = at
        return state_payload(online=False, at=at)

    def birth(self) -> bytes:
        """Online, with the timestamp of the current connection's will."""
        assert self._at is not None, "birth() follows death(): the will is registered first"
        return state_payload(online=True, at=self._at)

    def last_death(self) -> bytes:
        """The current connection's death again, published before a clean disconnect."""
        assert self._at is not None
        return state_payload(online=False, at=self._at)
