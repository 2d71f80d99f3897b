"""Block-wise uploads (RFC 7959 Block1) reassembled within bounds; pure, no aiocoap.

aiocoap's own Block1 spool has no size limit (a client could send blocks forever), so
the CoAP edge reassembles uploads here: each at most `max_bytes`, at most `max_uploads`
under way at once, each forgotten `ttl` seconds after its last block (93 s, CoAP's
MAX_TRANSMIT_WAIT: a client that has not sent the next block by then has given up).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


class BlockRefused(Exception):
    """An upload block that cannot be taken; `reason` picks the CoAP code the edge answers with."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # too_large (4.13), incomplete (4.08), bad_block (4.00), busy (5.03)


@dataclass(slots=True)
class _Upload:
    data: bytearray
    expires: float


class Block1Spool:
    """Uploads under way, by key (the client's address and the resource), each bounded in size and time."""

    def __init__(self, *, max_bytes: int, max_uploads: int = 1000, ttl: float = 93.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.max_uploads = max_uploads
        self.ttl = ttl
        self._clock = clock
        self._uploads: dict[Hashable, _Upload] = {}
        self._swept = clock()

    def __len__(self) -> int:
        return len(self._uploads)

    def feed(self, key: Hashable, *, number: int, more: bool, size_exponent: int, payload: bytes) -> bytes | None:
        """The whole body once its last block is in; None while more are expected; BlockRefused if it cannot be."""
        now = self._clock()
        self._sweep(now)
        if not 0 <= size_exponent <= 6:  # 7 is BERT, for CoAP over TCP only
            raise BlockRefused("bad_block", f"block size exponent {size_exponent} is not one of 0-6")
        size = 1 << (size_exponent + 4)
        start = number * size
        if start + len(payload) > self.max_bytes:
            self._uploads.pop(key, None)
            raise BlockRefused("too_large", f"an upload over the {self.max_bytes}-byte limit")
        if more and len(payload) != size:
            self._uploads.pop(key, None)
            raise BlockRefused("bad_block", f"block {number} holds {len(payload)} bytes, not {size}")
        if number == 0:
            if not more:
                self._uploads.pop(key, None)
                return payload
            if key not in self._uploads and len(self._uploads) >= self.max_uploads:
                raise BlockRefused("busy", f"{self.max_uploads} uploads are under way already")
            self._uploads[key] = _Upload(bytearray(payload), now + self.ttl)
            return None
        upload = self._uploads.get(key)
        if upload is None or len(upload.data) != start:
            self._uploads.pop(key, None)
            raise BlockRefused("incomplete", f"block {number} does not follow what came before; start again at 0")
        upload.data += payload
        upload.expires = now + self.ttl
        if more:
            return None
        del self._uploads[key]
        return bytes(upload.data)

    def _sweep(self, now: float) -> None:
        """Forget uploads whose client went quiet; at most once a second, so a flood of blocks stays cheap."""
        if now - self._swept < 1.0:
            return
        self._swept = now
        for key in [k for k, upload in self._uploads.items() if upload.expires <= now]:
            del self._uploads[key]


# Notifications carry at most this much payload per datagram (size exponent 6): what fits a 1280-byte IPv6 MTU.
BLOCK2_EXPONENT = 6


def block_of(body: bytes, *, number: int, size_exponent: int = BLOCK2_EXPONENT) -> tuple[bytes, bool]:
    """Block `number` of a body sent block-wise (RFC 7959 Block2), and whether more follow."""
    if not 0 <= size_exponent <= 6:
        raise BlockRefused("bad_block", f"block size exponent {size_exponent} is not one of 0-6")
    size = 1 << (size_exponent + 4)
    start = number * size
    if start >= len(body) and not (number == 0 and not body):
        raise BlockRefused("bad_block", f"block {number} is past the end of the body")
    return body[start:start + size], start + size < len(body)
