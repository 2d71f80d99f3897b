"""The CoAP server's one resource tree: routes, device credentials, Block1 uploads and rate limits.

What a request asks for is the transport's (coap/transport.py); this module decides whether it
may: the path must be a device resource (else 4.04), the method its own (4.05), the
credentials the device's (4.01), the body within IOTGW_MAX_PAYLOAD (4.13, with Size1), the
device within its rate (4.29, with Max-Age). Nothing a client sends gets a 5.00 but a bug.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiocoap import Code, Message
from django.db import DatabaseError

from coap.blocks import BlockRefused
from coap.keys import DeviceKeys
from coap.oscore import oscore_device
from coap.transport import CREDENTIALS_HINT, CoapTransport, error_answer
from core.errors import PayloadInvalid
from core.payloads import storable_text
from core.topics import COMMANDS, PUBLISH_KINDS, STATUS, parse_topic

logger = logging.getLogger("iotgw.coap")

MAX_SECRET = 200  # longer than any secret iotgw issues; a longer one is refused before it is hashed


def plain_secret(query: tuple[str, ...]) -> str | None:
    """The device's secret from a plain-mode request's `?secret=…` (None when it carries none)."""
    for item in query:
        name, sep, value = item.partition("=")
        if sep and name == "secret":
            return value
    return None


class DeviceSite:
    """What the aiocoap server context renders: every request, one pipe at a time."""

    def __init__(self, transport: CoapTransport, *, keys: DeviceKeys, plain: bool = False) -> None:
        self._transport = transport
        self._keys = keys
        self._plain = plain

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return False  # uploads are reassembled here, within bounds (coap/blocks.py)

    async def render_to_pipe(self, pipe: Any) -> None:
        """Answer one request (an observation: many notifications, then its end)."""
        request = pipe.request
        try:
            if request.code == Code.GET and request.opt.observe == 0:
                await self._observe(pipe)
                return
            answer = await self._answer(request)
        except DatabaseError:  # credentials could not be looked up: the device retries
            answer = error_answer("busy", "the gateway's database is unavailable; try again", max_age=5)
        except Exception:  # a bug answers this request with 5.00, nothing else
            logger.exception("CoAP request %s %s failed", request.code, "/".join(request.opt.uri_path)[:200])
            answer = error_answer("internal_error", "the gateway failed on this request")
        pipe.add_response(answer, is_last=True)

    # --- routing and credentials -----------------------------------------------------------

    def _route(self, request: Message) -> tuple[str, str] | Message:
        """(device id, kind) of a device resource, or the answer to a request for anything else."""
        try:
            device_id, kind = parse_topic("/".join(request.opt.uri_path))
        except PayloadInvalid:
            return Message(code=Code.NOT_FOUND, payload=b"not_found: resources are /devices/{id}/telemetry, "
                           b"/status, /commands (GET, Observe) and /commands/response")
        wanted = Code.GET if kind == COMMANDS else Code.POST
        if request.code != wanted:
            return Message(code=Code.METHOD_NOT_ALLOWED, payload=f"method_not_allowed: use {wanted}".encode())
        return device_id, kind

    async def _refusal(self, request: Message, device_id: str) -> Message | None:
        """Why the request may not act for `device_id` (None when it may)."""
        protected_as = oscore_device(request)
        if protected_as is not None:  # verified by its device's OSCORE context: no secret travels
            if protected_as != device_id:
                return self._refuse(device_id, "forbidden", f"this OSCORE context is device {protected_as}'s")
            return None
        if not self._plain:
            return self._refuse(device_id, "unauthorized", "use OSCORE: plain mode is off on this gateway "
                                "(IOTGW_COAP_PLAIN); see docs/transports/coap.md")
        secret = plain_secret(request.opt.uri_query)
        if secret is None:
            return self._refuse(device_id, "unauthorized", CREDENTIALS_HINT)
        if len(secret) > MAX_SECRET or not storable_text(secret) or not await self._keys.opens(device_id, secret):
            return self._refuse(device_id, "unauthorized", "wrong device credentials")
        return None

    def _refuse(self, device_id: str, reason: str, message: str, **extra: Any) -> Message:
        self._transport.stats.reject(source=device_id, reason=reason, message=message)
        return error_answer(reason, message, **extra)

    # --- POST ------------------------------------------------------------------------------

    async def _answer(self, request: Message) -> Message:
        route = self._route(request)
        if isinstance(route, Message):
            return route
        device_id, kind = route
        if kind == COMMANDS:  # a GET without Observe: the rest of a large notification, or nothing to show
            refusal = await self._refusal(request, device_id)
            block2 = request.opt.block2
            if refusal is None and block2 is not None and block2.block_number > 0:
                return self._transport.later_block(device_id, block2.block_number, block2.size_exponent)
            return refusal or Message(code=Code.CONTENT, payload=b"")
        assert kind in PUBLISH_KINDS
        limit = self._transport.max_payload
        if (request.opt.size1 or 0) > limit:
            return self._too_large(device_id, request.opt.size1)
        refusal = await self._refusal(request, device_id)
        if refusal is not None:
            return refusal
        block1 = request.opt.block1
        if block1 is None:
            if len(request.payload) > limit:
                return self._too_large(device_id, len(request.payload))
            body = request.payload
        else:
            try:
                body = self._transport.spool.feed((request.remote.blockwise_key, device_id, kind),
                                                  number=block1.block_number, more=block1.more,
                                                  size_exponent=block1.size_exponent, payload=request.payload)
            except BlockRefused as exc:
                return self._transport.refuse_block(exc)
            if body is None:
                return Message(code=Code.CONTINUE, block1=block1)
        if not self._transport.rates.take(device_id):
            wait = self._transport.rates.wait(device_id)
            return self._refuse(device_id, "rate_limited", "this device sends faster than its rate limit",
                                max_age=max(1, math.ceil(wait)))
        answer = await self._transport.post(device_id, kind, body)
        if block1 is not None:
            answer.opt.block1 = block1
        return answer

    def _too_large(self, device_id: str, size: int) -> Message:
        answer = self._refuse(device_id, "too_large",
                              f"payload of {size} bytes is over the {self._transport.max_payload}-byte limit")
        answer.opt.size1 = self._transport.max_payload
        return answer

    # --- GET with Observe ------------------------------------------------------------------

    async def _observe(self, pipe: Any) -> None:
        """Register the device's observation: it is online, and each command becomes a notification."""
        request = pipe.request
        route = self._route(request)
        if isinstance(route, Message):
            pipe.add_response(route, is_last=True)
            return
        device_id, kind = route
        refusal = await self._refusal(request, device_id) if kind == COMMANDS else Message(
            code=Code.METHOD_NOT_ALLOWED, payload=b"method_not_allowed: only /commands may be observed")
        if refusal is None:
            # Observing is being reachable: the device is online, as an MQTT device that subscribed and said so.
            online = await self._transport.post(device_id, STATUS, b"online")
            refusal = online if online.code != Code.CHANGED else None
        if refusal is not None:
            pipe.add_response(refusal, is_last=True)
            return
        pipe.add_response(Message(code=Code.CONTENT, observe=0, payload=b""), is_last=False)
        await self._transport.observe(device_id, lambda notification: pipe.add_response(notification,
                                                                                        is_last=False))
        # A newer observation of the same device replaced this one: a response without Observe ends it.
        pipe.add_response(Message(code=Code.CONTENT, payload=b""), is_last=True)
