"""The transport seam: how a transport hands the domain what devices said, and takes commands to devices.

A transport (MQTT today; CoAP, WebSocket devices, HTTP long-poll next) is one module of its
edge that implements `Inlet` and `Outlet`. Device → domain: the transport offers what it
received, as it received it (its own envelopes: an MQTT message, a CoAP request: anything
with a `topic` and a `payload`), to a `Sink`; the shared pipeline (devices/pipeline.py)
takes batches from it, decodes them with the transport's `Decoder` (its dialect) *inside
the batch* (so a dialect's converters run batched too), stores the batch in one
transaction, then asks the transport to `ack` the envelopes, in order. Domain → device:
the command dispatcher (devices/dispatch.py) claims a queued command and awaits
`Outlet.deliver`; a command counts as `sent` once that returns.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from core.errors import PayloadInvalid
from core.payloads import Sample
from core.wire import CommandResponse

logger = logging.getLogger("iotgw.transport")



@dataclass(frozen=True, slots=True)
class Said:
    """What one device said, decoded: samples, a status, or a command response (SPEC §4, §6)."""

    device_id: str
    samples: Sequence[Sample] = ()
    online: bool | None = None
    response: CommandResponse | None = None
    # (gateway id, the child's own name) when a gateway speaks for a child (core.ids.child_device_id): a child
    # not registered yet may be created on first sight, when its gateway's profile says so.
    child_of: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why an envelope was refused while decoding; `source` is who it is logged and counted under."""

    source: str
    reason: str
    message: str


# The decoding of one envelope: what it said (one envelope may speak for several devices, or for none:
# an echo of our own publish), or why it was refused.
Decoded = list[Said] | Rejected


class Envelope(Protocol):
    """One thing a device sent, as its transport received it (an MQTT message is one as it is)."""

    @property
    def topic(self) -> str:
        """Where it was sent: an MQTT topic, a CoAP path, a WebSocket device's own address."""
        ...

    @property
    def payload(self) -> bytes: ...

    # A transport that decoded the envelope as it arrived (to refuse a bad frame at once, with its reason)
    # may carry `decoded`, what it said: the pipeline then stores it as it is.
    # A transport that skipped a payload too large to hold (MQTT 3.1.1, where the broker cannot be told a
    # limit) may also carry `oversize`, that payload's size: the envelope is then refused as `too_large`.


E_contra = TypeVar("E_contra", bound=Envelope, contravariant=True)


class Decoder(Protocol):
    """A dialect: turns one message (its topic or path, its payload) into what devices said."""

    def __call__(self, topic: str, payload: bytes, *, received_at: datetime) -> list[Said]:
        """What the message said; raises PayloadInvalid with a reason when it breaks the dialect's rules."""
        ...

    def source(self, topic: str) -> str:
        """Who a refused message is logged and counted under (its device's id, when the topic names one)."""
        ...


def decode_one(decoder: Decoder, envelope: Envelope, *, received_at: datetime) -> Decoded:
    """Decode one message; a rule it breaks, or a decoder bug, rejects that message only."""
    decoded: list[Said] | None = getattr(envelope, "decoded", None)
    if decoded is not None:  # read already at its edge, which answered a refusal there (a WebSocket device)
        return decoded
    oversize = getattr(envelope, "oversize", 0)
    if oversize:
        return Rejected(decoder.source(envelope.topic), "too_large",
                        f"payload of {oversize} bytes is over the packet limit")
    try:
        return decoder(envelope.topic, envelope.payload, received_at=received_at)
    except PayloadInvalid as exc:
        return Rejected(decoder.source(envelope.topic), exc.reason, str(exc))
    except Exception as exc:  # a decoder bug rejects its message, not the batch
        logger.exception("decoding a message on %s failed", envelope.topic[:200])
        return Rejected(decoder.source(envelope.topic), "internal_error", repr(exc)[:200])


class Inlet(Protocol[E_contra]):
    """The device → domain half of a transport: its dialect, and the acknowledgement of its own envelopes.

    A transport that answers each request (CoAP: 2.04 or an error code) may also have
    `refused(envelope, rejected: Rejected)`: the pipeline calls it, before the envelope's ack, for an
    envelope refused while decoding or storing, so the device hears why.
    """

    name: str
    decoder: Decoder

    def ack(self, batch: Sequence[E_contra]) -> None:
        """Acknowledge envelopes whose batch has committed (or that were refused), in order."""
        ...


class Sink(Protocol):
    """Where a transport offers what it received; non-blocking, on the process's event loop."""

    def offer(self, inlet: Inlet[Any], envelopes: Sequence[Any]) -> None:
        """Queue envelopes that `inlet` will decode and acknowledge."""
        ...

    def __len__(self) -> int:
        """Envelopes waiting (a transport without flow control may shed load past a bound)."""
        ...


@dataclass(frozen=True, slots=True)
class Outbound:
    """A command on its way to its device, as every transport gets it (SPEC §6)."""

    command_id: uuid.UUID
    device_id: str
    name: str
    params: dict[str, Any]
    expires_at: datetime


class Outlet(Protocol):
    """The domain → device half of a transport."""

    name: str

    @property
    def connected(self) -> bool:
        """Whether it can deliver now (MQTT: a broker connection is up)."""
        ...

    async def until_connected(self) -> None:
        """Return once it can deliver."""
        ...

    async def until_disconnected(self) -> None:
        """Return once it can no longer deliver."""
        ...

    async def deliver(self, command: Outbound) -> None:
        """Hand the command to its device's side (MQTT: the broker's PUBACK); DeliveryFailed if it cannot."""
        ...
