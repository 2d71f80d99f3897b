"""CoAP, a transport behind the seam (core/transport.py): POSTs in, commands out as Observe notifications.

Device → domain: a POST to `devices/{id}/telemetry`, `/status` or `/commands/response` (the
MQTT topics of SPEC §4 as URI paths) is offered to the sink as one `CoapPost`, read with the
iotgw dialect inside the pipeline's batch, and answered 2.04 Changed only when the pipeline
acks it, after the commit; a refusal is answered with its own code and a diagnostic payload.
The answer of a Confirmable request is its ACK (piggybacked), so it comes after the commit
as a QoS 1 PUBACK does: aiocoap would send an empty ACK after EMPTY_ACK_DELAY (0.1 s in
aiocoap 0.4.17), which coap/server.py raises past the longest wait for a commit.

Domain → device: a device observes `GET devices/{id}/commands` (Observe: 0); each command
the dispatcher delivers is one notification, a Confirmable 2.05 with the command's JSON
(SPEC §6), and `deliver` returns once aiocoap has taken it for sending. The device answers
with a POST to `devices/{id}/commands/response`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from aiocoap import Code, Message
from aiocoap.numbers.contentformat import ContentFormat

from coap.blocks import BLOCK2_EXPONENT, Block1Spool, BlockRefused, block_of
from core.dialect import command_message
from core.errors import DeliveryFailed
from core.ratelimit import BucketMap
from core.topics import PUBLISH_KINDS, device_topic
from core.transport import Decoder, Outbound, Rejected, Sink
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.coap")

# The CoAP code of each refusal reason; every other reason breaks the payload rules: 4.00.
REASON_CODES = {
    "too_large": Code.REQUEST_ENTITY_TOO_LARGE,
    "unknown_device": Code.UNAUTHORIZED,  # the same answer as wrong credentials: ids cannot be probed
    "disabled_device": Code.UNAUTHORIZED,
    "unauthorized": Code.UNAUTHORIZED,
    "forbidden": Code.FORBIDDEN,
    "rate_limited": Code.TOO_MANY_REQUESTS,
    "internal_error": Code.INTERNAL_SERVER_ERROR,
    "busy": Code.SERVICE_UNAVAILABLE,
    "incomplete": Code.REQUEST_ENTITY_INCOMPLETE,
}
CREDENTIALS_HINT = "device credentials required (plain mode: ?secret=<the device's secret>)"


def error_answer(reason: str, message: str, *, max_age: int | None = None) -> Message:
    """An error response: its code, and `reason: message` as the diagnostic payload (RFC 7252 §5.5.2)."""
    answer = Message(code=REASON_CODES.get(reason, Code.BAD_REQUEST), payload=f"{reason}: {message}"[:400].encode())
    if max_age is not None:
        answer.opt.max_age = max_age
    return answer


@dataclass(eq=False, slots=True)
class CoapPost:
    """One POST as the pipeline sees it: its path as a topic, its body, and the answer its request awaits."""

    topic: str
    payload: bytes
    answer: asyncio.Future[Message] = field(repr=False)


# Commands waiting to be notified to one observing device; past it, a delivery fails and is retried later.
OBSERVER_QUEUE = 64


class _Observer:
    """One device's observation of its commands: the notifications waiting to go out (None: it was replaced)."""

    def __init__(self) -> None:
        self.waiting: asyncio.Queue[tuple[Outbound, asyncio.Future[None]] | None] = asyncio.Queue()


class CoapTransport:
    """The CoAP edge's Inlet and Outlet; `site` is what the aiocoap server context renders (coap/site.py)."""

    name = "coap"

    def __init__(self, *, sink: Sink, decoder: Decoder, stats: IngestStats, max_payload: int = 64 * 1024,
                 rate: float = 20.0, burst: float = 40.0, commit_wait: float = 60.0, backlog: int = 50_000,
                 deliver_wait: float = 10.0) -> None:
        self._sink = sink
        self.decoder = decoder
        self.stats = stats
        self.max_payload = max_payload
        self.commit_wait = commit_wait
        self._backlog = backlog
        self._deliver_wait = deliver_wait
        self.rates = BucketMap(rate=rate, burst=burst)
        self.spool = Block1Spool(max_bytes=max_payload)
        self._observers: dict[str, _Observer] = {}
        # Each observing device's last notification, whole, for the Block2 requests of one that did not fit a datagram.
        self.notified: dict[str, Message] = {}
        self.on_observe: Callable[[str], None] | None = None  # the dispatcher's nudge, wired by coap/server.py
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()

    # --- the listener ----------------------------------------------------------------------

    def listening(self, up: bool) -> None:
        """The server context bound its socket (or closed it)."""
        (self._up if up else self._down).set()
        (self._down if up else self._up).clear()

    @property
    def connected(self) -> bool:
        """Whether the UDP listener is up."""
        return self._up.is_set()

    async def until_connected(self) -> None:
        await self._up.wait()

    async def until_disconnected(self) -> None:
        await self._down.wait()

    # --- device → domain (Inlet) -----------------------------------------------------------

    async def post(self, device_id: str, kind: str, payload: bytes) -> Message:
        """Offer one POST's body and wait for its batch: 2.04 after the commit, or why it was refused."""
        assert kind in PUBLISH_KINDS
        if len(self._sink) > self._backlog:
            self.stats.counts["coap_shed"] += 1
            return error_answer("busy", f"{self._backlog} messages wait already; try again", max_age=1)
        envelope = CoapPost(device_topic(device_id, kind), payload, asyncio.get_running_loop().create_future())
        self._sink.offer(self, [envelope])
        try:
            async with asyncio.timeout(self.commit_wait):
                return await asyncio.shield(envelope.answer)
        except TimeoutError:
            # Still queued or committing: it may yet be stored, and a retry with the same `ts` is stored once.
            self.stats.counts["coap_commit_waits_exceeded"] += 1
            return error_answer("busy", f"not committed within {self.commit_wait:g} s; send it again", max_age=5)

    def refused(self, envelope: CoapPost, rejected: Rejected) -> None:
        """The pipeline refused it while decoding or storing: answer now with the reason."""
        if not envelope.answer.done():
            envelope.answer.set_result(error_answer(rejected.reason, rejected.message))

    def ack(self, batch: Sequence[CoapPost]) -> None:
        """Its batch has committed: 2.04 Changed (a refused one was answered already)."""
        for envelope in batch:
            if not envelope.answer.done():
                envelope.answer.set_result(Message(code=Code.CHANGED))
        self.stats.counts["coap_acked"] += len(batch)

    def refuse_block(self, exc: BlockRefused) -> Message:
        """An upload block that cannot be taken, answered with its code (4.13 says how much may come)."""
        self.stats.reject(source="coap", reason=exc.reason, message=str(exc))
        answer = error_answer(exc.reason, str(exc))
        if exc.reason == "too_large":
            answer.opt.size1 = self.max_payload
        return answer

    # --- domain → device (Outlet) ----------------------------------------------------------

    def reachable(self) -> set[str]:
        """The devices observing their commands here: the only ones this transport can deliver to."""
        return set(self._observers)

    async def deliver(self, command: Outbound) -> None:
        """Notify the device's observation; returns once aiocoap has taken the notification for sending."""
        observer = self._observers.get(command.device_id)
        if observer is None:
            raise DeliveryFailed(f"device {command.device_id} is not observing its commands here")
        if observer.waiting.qsize() >= OBSERVER_QUEUE:
            raise DeliveryFailed(f"{OBSERVER_QUEUE} commands wait for device {command.device_id} already")
        sent: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        observer.waiting.put_nowait((command, sent))
        try:
            async with asyncio.timeout(self._deliver_wait):
                await sent
        except TimeoutError as exc:
            raise DeliveryFailed(f"device {command.device_id}'s notifications are not going out") from exc

    async def observe(self, device_id: str, notify: Callable[[Message], None]) -> None:
        """Serve one observation until it ends (the client cancels it, or a newer one replaces it)."""
        observer = _Observer()
        older = self._observers.get(device_id)
        self._observers[device_id] = observer
        if older is not None:
            older.waiting.put_nowait(None)
        self.stats.counts["coap_observations"] += 1
        if self.on_observe is not None:
            self.on_observe(device_id)
        number = 0
        try:
            while (item := await observer.waiting.get()) is not None:
                command, sent = item
                if sent.done():  # its delivery gave up waiting
                    continue
                number += 1
                notify(self._first_block(device_id, command_notification(command, observe=number)))
                sent.set_result(None)
        finally:
            if self._observers.get(device_id) is observer:
                del self._observers[device_id]
                self.notified.pop(device_id, None)
            _abandon(observer)

    def _first_block(self, device_id: str, notification: Message) -> Message:
        """A notification that fits a datagram as it is; else its Block2 block 0 (the device GETs the rest)."""
        if len(notification.payload) <= 1 << (BLOCK2_EXPONENT + 4):
            return notification
        self.notified[device_id] = notification
        payload, more = block_of(notification.payload, number=0)
        return Message(code=notification.code, observe=notification.opt.observe, etag=notification.opt.etag,
                       content_format=notification.opt.content_format, payload=payload,
                       block2=(0, more, BLOCK2_EXPONENT))

    def later_block(self, device_id: str, number: int, size_exponent: int) -> Message:
        """Block `number` of the device's last notification (RFC 7959: the device asked for the rest)."""
        notification = self.notified.get(device_id)
        if notification is None:
            return error_answer("incomplete", "no notification of this size is waiting; observe again")
        try:
            payload, more = block_of(notification.payload, number=number, size_exponent=size_exponent)
        except BlockRefused as exc:
            return error_answer(exc.reason, str(exc))
        return Message(code=notification.code, etag=notification.opt.etag,
                       content_format=notification.opt.content_format, payload=payload,
                       block2=(number, more, size_exponent))


def command_notification(command: Outbound, *, observe: int) -> Message:
    """A command as the device's observation carries it: the JSON MQTT publishes (SPEC §6); an ETag ties its blocks."""
    return Message(code=Code.CONTENT, observe=observe, content_format=ContentFormat.JSON,
                   etag=command.command_id.bytes[:8], payload=command_message(command).payload)


def _abandon(observer: _Observer) -> None:
    """Fail the deliveries still waiting on an observation that ended: the dispatcher retries them."""
    while not observer.waiting.empty():
        item = observer.waiting.get_nowait()
        if item is not None and not item[1].done():
            item[1].set_exception(DeliveryFailed("the observation ended"))

