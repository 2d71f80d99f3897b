"""OSCORE (RFC 8613) for CoAP devices: their requests protected end to end, no secret on the wire.

Each device has one OSCORE security context with the gateway, derived from what both know:

    Master Secret  SHA-256 of the device's secret (UTF-8), 32 bytes: what the registry stores
    Master Salt    "iotgw-coap" (ASCII)
    ID Context     the device id (ASCII): how the gateway finds the context of a request
    Sender ID      the device: "d"; the gateway: "g"
    algorithm      AES-CCM-16-64-128, HKDF SHA-256 (OSCORE's defaults)

The gateway's side of each context is aiocoap's FilesystemSecurityContext in its own
directory under IOTGW_COAP_OSCORE_DIR (sequence numbers and the replay window persist
there, so a restart never reuses a nonce; after an unclean stop aiocoap recovers with an
Echo round trip, RFC 8613 B.1.2). A context is made on a device's first protected request
and checked against the registry at most every `ttl` seconds: a re-issued secret replaces
it (the device then starts its sequence numbers again with the new secret), a disabled or
deleted device loses it. The directory belongs to one CoAP process (aiocoap locks it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiocoap import Code, Message, oscore
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from aiocoap.transports.oscore import OSCOREAddress

from core.ids import DEVICE_ID_RE

logger = logging.getLogger("iotgw.coap")

MASTER_SALT = b"iotgw-coap"
DEVICE_SENDER_ID = b"d"
GATEWAY_SENDER_ID = b"g"

Lookup = Callable[[str], Awaitable[str | None]]


def device_context_settings(device_id: str, secret: str) -> dict[str, str]:
    """A device's side of its context, as aiocoap's settings.json (docs/transports/coap.md shows it)."""
    return {"sender-id_hex": DEVICE_SENDER_ID.hex(), "recipient-id_hex": GATEWAY_SENDER_ID.hex(),
            "id-context_hex": device_id.encode().hex(), "salt_hex": MASTER_SALT.hex(),
            "secret_hex": hashlib.sha256(secret.encode()).hexdigest()}


def _gateway_settings(device_id: str, secret_hash: str) -> dict[str, str]:
    return {"sender-id_hex": GATEWAY_SENDER_ID.hex(), "recipient-id_hex": DEVICE_SENDER_ID.hex(),
            "id-context_hex": device_id.encode().hex(), "salt_hex": MASTER_SALT.hex(), "secret_hex": secret_hash}


def oscore_device(request: Any) -> str | None:
    """The device an OSCORE-protected request was verified as coming from (None: not protected)."""
    remote = getattr(request, "remote", None)
    if not isinstance(remote, OSCOREAddress):
        return None
    id_context = getattr(remote.security_context, "id_context", None)
    return id_context.decode("ascii", "replace") if isinstance(id_context, bytes) else None


class DeviceContexts:
    """The gateway's OSCORE contexts, one per device, on disk; what aiocoap's site wrapper looks up."""

    def __init__(self, directory: Path, *, lookup: Lookup, ttl: float = 10.0, max_contexts: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._lookup = lookup  # a device's stored secret hash (coap.keys.DeviceKeys.stored_hash)
        self._ttl = ttl
        self._max = max_contexts
        self._clock = clock
        self._contexts: dict[str, tuple[oscore.FilesystemSecurityContext, str, float]] = {}
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # the contexts hold the devices' keys

    # aiocoap's CredentialsMap protocol: the wrapper calls this for every protected request.
    def get_oscore_context_for(self, unprotected: dict[Any, Any]) -> oscore.FilesystemSecurityContext | None:
        device_id = _device_of(unprotected)
        held = self._contexts.get(device_id) if device_id else None
        return held[0] if held is not None else None

    def find_oscore(self, unprotected: dict[Any, Any]) -> oscore.FilesystemSecurityContext:
        context = self.get_oscore_context_for(unprotected)
        if context is None:
            raise KeyError("no security context")
        return context

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return set()

    async def prepare(self, request: Any) -> None:
        """Before the wrapper looks: load, make, renew or drop the context a protected request names."""
        try:
            unprotected = oscore.verify_start(request)
        except oscore.NotAProtectedMessage:
            return
        except Exception:  # a malformed OSCORE option: the wrapper answers it
            return
        device_id = _device_of(unprotected)
        if device_id is None:
            return
        held = self._contexts.get(device_id)
        if held is not None and held[2] > self._clock():
            return
        secret_hash = await self._lookup(device_id)
        if held is not None and held[1] == secret_hash:
            self._contexts[device_id] = (held[0], held[1], self._clock() + self._ttl)
            return
        self._forget(device_id, wipe=held is not None or secret_hash is None)
        if secret_hash is not None:
            self._load(device_id, secret_hash)

    def _load(self, device_id: str, secret_hash: str) -> None:
        if len(self._contexts) >= self._max:  # bounded: the oldest goes (its state is on disk, kept)
            self._forget(next(iter(self._contexts)), wipe=False)
        folder = self.directory / device_id
        settings = _gateway_settings(device_id, secret_hash)
        stored = folder / "secret.json"
        if not stored.exists() or json.loads(stored.read_text()) != settings:
            shutil.rmtree(folder, ignore_errors=True)  # another secret: its sequence numbers mean nothing now
            folder.mkdir(mode=0o700)
            stored.write_text(json.dumps(settings))
            os.chmod(stored, 0o600)
        self._contexts[device_id] = (oscore.FilesystemSecurityContext(str(folder)), secret_hash,
                                     self._clock() + self._ttl)

    def _forget(self, device_id: str, *, wipe: bool) -> None:
        held = self._contexts.pop(device_id, None)
        if held is not None and held[0].lockfile is not None:
            held[0]._destroy()  # aiocoap's own release: persists the sequence number, unlocks the directory
        if wipe:
            shutil.rmtree(self.directory / device_id, ignore_errors=True)

    def close(self) -> None:
        """Release every context's lock (their state stays on disk)."""
        for device_id in list(self._contexts):
            self._forget(device_id, wipe=False)


def _device_of(unprotected: dict[Any, Any]) -> str | None:
    id_context = unprotected.get(oscore.COSE_KID_CONTEXT)
    if unprotected.get(oscore.COSE_KID) != DEVICE_SENDER_ID or not isinstance(id_context, bytes):
        return None
    try:
        device_id = id_context.decode("ascii")
    except UnicodeDecodeError:
        return None
    return device_id if DEVICE_ID_RE.fullmatch(device_id) else None


class ProtectedSite:
    """The device site behind OSCORE: protected requests are verified and unwrapped, plain ones pass through."""

    def __init__(self, inner: Any, contexts: DeviceContexts) -> None:
        self._contexts = contexts
        self._wrapper = OscoreSiteWrapper(inner, contexts)

    async def needs_blockwise_assembly(self, request: Any) -> bool:
        return False

    async def render_to_pipe(self, pipe: Any) -> None:
        if tuple(pipe.request.opt.uri_path) == (".well-known", "edhoc"):  # no EDHOC: contexts come from secrets
            pipe.add_response(Message(code=Code.NOT_FOUND, payload=b"not_found: no EDHOC here"), is_last=True)
            return
        await self._contexts.prepare(pipe.request)
        await self._wrapper.render_to_pipe(pipe)
