"""The hot path: device messages in, batched into one transaction, acked, pushed once per bucket."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from bridge.db import in_db_thread
from bridge.mqtt.codec import Raw
from bridge.stats import BridgeStats
from core.errors import PayloadInvalid
from core.logs import FailureLog
from core.payloads import parse_samples, parse_status
from core.push import PushBatch, push_send
from core.times import DEFAULT_MAX_SKEW
from core.topics import COMMAND_RESPONSE, STATUS, TELEMETRY, parse_topic, source_of
from devices.services.telemetry import Inbound, IngestOutcome, telemetry_ingest

logger = logging.getLogger("iotgw.bridge")

# QoS 0 has no flow control from the broker; past this many waiting, drop and count.
QOS0_BACKLOG = 50_000
# Ingest waits for the pusher when more than this many items are waiting to go out.
PUSH_BACKLOG = 50_000


# (device id, payload, received_at, push) -> None; the commands issue plugs in here.
ResponseHandler = Callable[[list[tuple[str, bytes]], PushBatch], Awaitable[None]]


@dataclass(slots=True)
class Decoded:
    """A batch after parsing: per message, the item to store or the response to apply (neither: rejected)."""

    received_at: datetime
    entries: list[tuple[Raw, Inbound | None, tuple[str, bytes] | None]]


class Ingestor:
    """Drains the MQTT client's messages in batches on the bridge's event loop."""

    def __init__(
        self,
        *,
        layer,
        stats: BridgeStats,
        ack: Callable[[list[Raw]], None],
        max_batch: int,
        max_payload: int,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
        on_responses: ResponseHandler | None = None,
    ) -> None:
        self._layer = layer
        self._stats = stats
        self._ack = ack
        self._max_batch = max_batch
        self._max_payload = max_payload
        self._max_skew = max_skew
        self.on_responses = on_responses
        # Told the ids of devices that just came online, so commands waiting for them go out.
        self.on_online: Callable[[list[str]], None] | None = None
        self._inbox: deque[Raw] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is waiting, decoding or committing
        self._idle.set()
        self._push_task: asyncio.Task | None = None
        self._next_push: PushBatch | None = None
        self._push_interval = settings.IOTGW_PUSH_INTERVAL
        self._push_now = asyncio.Event()  # set for an urgent push: the pusher stops waiting out the interval
        self._push_failures = FailureLog("push to dashboards failed")
        self._commit = in_db_thread(telemetry_ingest)

    def offer_many(self, raws: list[Raw]) -> None:
        """Queue what one socket read brought; called on the bridge's event loop."""
        if len(self._inbox) > QOS0_BACKLOG:
            kept = [raw for raw in raws if raw.qos]
            self._stats.counts["dropped_qos0"] += len(raws) - len(kept)
            raws = kept
        if raws:
            self._inbox.extend(raws)
            self._idle.clear()
            self._wake.set()

    async def idle(self) -> None:
        """Return once everything offered so far is stored (or rejected) and acknowledged."""
        await self._idle.wait()

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Under a backlog of a full batch or more, a two-stage pipeline: batch N+1 is decoded on
            # this loop while batch N commits in the database thread. Otherwise a batch is what
            # arrived during the previous commit (fewer, larger commits). Commits, acks and pushes
            # happen one batch after the other either way.
            committing: tuple[asyncio.Task, Decoded] | None = None
            while self._inbox or committing:
                if committing and len(self._inbox) < self._max_batch:
                    await self._settle(*committing)
                    committing = None
                    continue
                batch = [self._inbox.popleft() for _ in range(min(len(self._inbox), self._max_batch))]
                decoded = self._decode(batch)
                if committing:
                    await self._settle(*committing)
                committing = (asyncio.ensure_future(self._finish(decoded)), decoded)
            if not self._inbox:
                self._idle.set()

    async def _settle(self, task: asyncio.Task, decoded: Decoded) -> None:
        try:
            await task
        except Exception:
            logger.exception("batch of %d failed; isolating the messages that break it", len(decoded.entries))
            await self._bisect(decoded)

    async def _bisect(self, decoded: Decoded) -> None:
        """After an unexpected failure, halve the batch until the messages that break it stand alone.

        Each half commits on its own, so k bad messages among n cost O(k log n) transactions, not n;
        a message that fails alone is rejected (`internal_error`) and acknowledged.
        """
        entries = decoded.entries
        if len(entries) == 1:
            raw = entries[0][0]
            self._stats.reject(source=source_of(raw.topic), reason="internal_error", message="the database refused it")
            self._ack([raw])
            return
        middle = len(entries) // 2
        for half in (entries[:middle], entries[middle:]):
            part = Decoded(decoded.received_at, half)
            try:
                await self._finish(part)
            except Exception:
                await self._bisect(part)

    async def process(self, batch: list[Raw]) -> None:
        """Decode, store in one transaction, ack, then push; a bad message only rejects itself."""
        await self._finish(self._decode(batch))

    def _decode(self, batch: list[Raw]) -> Decoded:
        """Parse topics and payloads; a message that breaks the rules is rejected and counted here."""
        received_at = timezone.now()
        entries: list[tuple[Raw, Inbound | None, tuple[str, bytes] | None]] = []
        for raw in batch:
            item = response = None
            try:
                device_id, kind = parse_topic(raw.topic)
                if kind == TELEMETRY:
                    samples = parse_samples(raw.payload, received_at=received_at, max_bytes=self._max_payload,
                                            max_skew=self._max_skew)
                    item = Inbound(device_id=device_id, samples=samples)
                elif kind == STATUS:
                    item = Inbound(device_id=device_id, online=parse_status(raw.payload))
                elif kind == COMMAND_RESPONSE:
                    response = (device_id, raw.payload)
            except PayloadInvalid as exc:
                self._stats.reject(source=source_of(raw.topic), reason=exc.reason, message=str(exc))
            except Exception as exc:  # a parser bug rejects its message, not the batch
                logger.exception("decoding a message on %s failed", raw.topic[:200])
                self._stats.reject(source=source_of(raw.topic), reason="internal_error", message=repr(exc)[:200])
            entries.append((raw, item, response))
        self._stats.counts["received"] += len(batch)
        return Decoded(received_at, entries)

    async def _finish(self, decoded: Decoded) -> None:
        """Store, ack after the commit, then push."""
        items = [item for _, item, _ in decoded.entries if item is not None]
        responses = [response for _, _, response in decoded.entries if response is not None]
        push = PushBatch(buckets=settings.IOTGW_PUSH_BUCKETS)
        outcome = await self._store(items, decoded.received_at) if items else IngestOutcome()
        if outcome.accepted:
            self._stats.observe_latency((timezone.now() - decoded.received_at).total_seconds(),
                                        count=len(outcome.accepted))
        if responses:
            await self._responses(responses, push)
        self._ack([raw for raw, _, _ in decoded.entries])
        self._collect(items, outcome, push)
        await self._push(push)

    async def _store(self, items: list[Inbound], received_at: datetime) -> IngestOutcome:
        """Commit with retries: while the database is away nothing is acked, so nothing is lost."""
        delay = 0.2
        while True:
            self._stats.counts["transactions"] += 1
            try:
                return await self._commit(items=items, received_at=received_at)
            except (OperationalError, InterfaceError) as exc:
                self._stats.counts["db_errors"] += 1
                logger.warning("database unavailable (%s); retrying in %.1fs", str(exc).strip()[:200], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _responses(self, responses: list[tuple[str, bytes]], push: PushBatch) -> None:
        if self.on_responses is None:
            for device_id, _ in responses:
                self._stats.reject(source=device_id, reason="response_unhandled", message="no command handler")
            return
        await self.on_responses(responses, push)

    def _collect(self, items: list[Inbound], outcome: IngestOutcome, push: PushBatch) -> None:
        for index, reason in outcome.rejected.items():
            self._stats.reject(source=items[index].device_id, reason=reason, message=f"device {reason}")
        stored = 0
        for index in outcome.accepted:
            device_id, samples = items[index].device_id, outcome.samples.get(index, ())
            for sample in samples:
                push.telemetry(device_id, sample)
            stored += len(samples)
        self._stats.counts["samples_stored"] += stored
        for device_id, online, ts in outcome.status_changes:
            push.status(device_id, online, ts)
        came_online = [device_id for device_id, online, _ in outcome.status_changes if online]
        if came_online and self.on_online is not None:
            self.on_online(came_online)

    async def _push(self, push: PushBatch) -> None:
        """Hand a batch's pushes to the pusher; while it is busy they merge into the next push.

        One push is a group_send per bucket, and every web process pays a Redis
        round trip per message it receives: at most one push per IOTGW_PUSH_INTERVAL
        keeps that cost flat however small the batches get. Ingest waits only when
        the merged push grows past PUSH_BACKLOG (the layer is too slow to keep up).
        """
        if not push:
            return
        if self._next_push is None:
            self._next_push = push
        else:
            self._next_push.merge(push)
        if self._push_task is None or self._push_task.done():
            self._push_task = asyncio.ensure_future(self._pusher())
        elif self._next_push.size > PUSH_BACKLOG:
            await asyncio.shield(self._push_task)
        elif push.urgent:
            self._push_now.set()

    async def _pusher(self) -> None:
        """Send pushes one after the other (frames keep their order), at most one per interval."""
        loop = asyncio.get_running_loop()
        while self._next_push is not None:
            push, self._next_push = self._next_push, None
            self._push_now.clear()
            started = loop.time()
            await self._send(push)
            if self._next_push is not None and self._next_push.urgent:
                continue
            try:
                await asyncio.wait_for(self._push_now.wait(), max(0.0, self._push_interval - (loop.time() - started)))
            except TimeoutError:
                pass

    async def _send(self, push: PushBatch) -> None:
        try:
            await push_send(self._layer, push)
            self._stats.counts["pushes"] += 1
            self._push_failures.recovered()
        except Exception as exc:  # the layer is best-effort; storage already happened
            self._stats.counts["push_errors"] += 1
            self._push_failures.failed(exc)
