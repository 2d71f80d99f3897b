"""How many bytes wait unsent for a WebSocket client, measured where they wait: Daphne's Twisted transport.

An ASGI `send()` never waits under Daphne: the frame goes straight into the
Twisted transport's user-space write buffer, which grows without bound for a
client that does not read. Channels gives a consumer no view of that buffer,
so the outermost WebSocket middleware finds Daphne's protocol behind `send`
(Daphne passes `functools.partial(Server.handle_reply, protocol)`) and puts an
`Outbound` probe of its transport in the scope. Under any other server (or
WebsocketCommunicator) the scope has no probe and no budget applies.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

SCOPE_KEY = "iotgw.outbound"
# A transport may wrap another (TLS over TCP); the bytes can wait at any level.
_MAX_WRAPPING = 4


def transport_backlog(transport: Any) -> int:
    """Bytes written to a Twisted transport, and the transports it wraps, not yet handed to the kernel."""
    total = 0
    for _ in range(_MAX_WRAPPING):
        if transport is None:
            break
        buffer = getattr(transport, "dataBuffer", None)
        if buffer is not None:  # twisted.internet.abstract.FileDescriptor (TCP, UNIX)
            total += len(buffer) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
        cleartext = getattr(transport, "_appSendBuffer", None)  # TLSMemoryBIOProtocol, before its handshake
        if cleartext:
            total += sum(len(chunk) for chunk in cleartext)
        transport = getattr(transport, "transport", None)
    return total


class Outbound:
    """A probe of one connection's unsent bytes."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def pending(self) -> int:
        """Bytes queued for the client and not yet accepted by the kernel (0 once the connection is gone)."""
        return transport_backlog(getattr(self._protocol, "transport", None))


def daphne_protocol(send: Any) -> Any | None:
    """The Daphne WebSocket protocol behind an ASGI `send`, or None under another server."""
    from daphne.ws_protocol import WebSocketProtocol

    if isinstance(send, functools.partial) and send.args and isinstance(send.args[0], WebSocketProtocol):
        return send.args[0]
    return None


class OutboundMiddleware:
    """Outermost WebSocket middleware: adds an `Outbound` probe to the scope when the server is Daphne."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        protocol = daphne_protocol(send)
        if protocol is not None:
            scope = dict(scope, **{SCOPE_KEY: Outbound(protocol)})
        return await self.inner(scope, receive, send)


# A push's frames all reach the transport before the reactor writes any: when they pass the budget, give
# the reactor this long to hand them to the kernel before deciding the client is not keeping up.
_FLUSH_CHANCE = 0.005
# How often a socket that fell behind looks whether its buffer has drained: soon at first, then every second.
_DRAIN_POLL_MIN = 0.05
_DRAIN_POLL_MAX = 1.0


class SendBudget:
    """One socket's outbound budget: pushes stop past `budget` unsent bytes; past twice that it is stuck."""

    __slots__ = ("probe", "budget")

    def __init__(self, probe: Outbound | None, budget: int) -> None:
        self.probe = probe
        self.budget = budget

    def pending(self) -> int:
        """Unsent bytes now (0 when the server gives no probe)."""
        return self.probe.pending() if self.probe is not None else 0

    async def over(self) -> bool:
        """More than the budget is waiting, even after a chance to flush: hold back pushes."""
        if self.probe is None or self.probe.pending() <= self.budget:
            return False
        await asyncio.sleep(_FLUSH_CHANCE)
        return self.probe.pending() > self.budget

    def stuck(self) -> bool:
        """More than twice the budget is waiting (the client keeps asking but does not read)."""
        return self.probe is not None and self.probe.pending() > 2 * self.budget

    async def drained(self) -> None:
        """Return once every byte queued for the client has been handed to the kernel."""
        delay = _DRAIN_POLL_MIN
        while self.pending() > 0:
            await asyncio.sleep(delay)
            delay = min(_DRAIN_POLL_MAX, delay * 2)
