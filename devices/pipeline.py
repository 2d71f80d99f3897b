"""The hot path every transport shares: what devices said, batched into one transaction, acked, pushed.

A transport offers its envelopes to the `Intake`; the pipeline takes what has arrived
(at most `max_batch`), decodes each envelope with its transport's dialect inside the batch, stores
the batch in one transaction (`telemetry_ingest`, on the one database thread), resolves the
command responses in it, tells its listeners what was committed, acknowledges every
envelope in order (after the commit: SPEC §5), and hands the pushes to the pusher. Under
load a batch is what arrived during the previous commit; at rest a message is its own batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from django.db import InterfaceError, OperationalError
from django.utils import timezone

from core.payloads import Sample
from core.push import PushBatch
from core.retry import Backoff, retry
from core.transport import Inlet, Rejected, Said, decode_one
from core.wire import CommandResponse
from devices.dbthread import in_db_thread
from devices.pusher import Pusher
from devices.services.telemetry import IngestOutcome, telemetry_ingest
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.bridge")


class Intake:
    """The hand-off between transports and the pipeline: what each transport offered, in arrival order."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[Inlet[Any], list[Any]]] = deque()
        self._size = 0
        self.ready = asyncio.Event()  # set by an offer, cleared by the pipeline when it takes up the work
        self.idle = asyncio.Event()  # set while nothing is waiting, decoding or committing
        self.idle.set()

    def offer(self, inlet: Inlet[Any], envelopes: Sequence[Any]) -> None:
        """Queue what one read brought; called on the event loop, never blocks."""
        if envelopes:
            self._chunks.append((inlet, list(envelopes)))
            self._size += len(envelopes)
            self.idle.clear()
            self.ready.set()

    def take(self, most: int) -> list[tuple[Inlet[Any], list[Any]]]:
        """Up to `most` envelopes, oldest first, still grouped by the transport that offered them."""
        taken: list[tuple[Inlet[Any], list[Any]]] = []
        while self._chunks and most > 0:
            inlet, envelopes = self._chunks[0]
            if len(envelopes) <= most:
                self._chunks.popleft()
                part = envelopes
            else:
                part, self._chunks[0] = envelopes[:most], (inlet, envelopes[most:])
            taken.append((inlet, part))
            most -= len(part)
            self._size -= len(part)
        return taken

    def __len__(self) -> int:
        return self._size


@dataclass(frozen=True, slots=True)
class Committed:
    """What a batch stored, as its listeners see it right after the commit (alarm rules, command nudges)."""

    received_at: datetime
    # The accepted samples per device, as stored (a sample without `ts` may have moved on by a microsecond).
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    # (device id, online, when) for devices whose online flag changed.
    status_changes: list[tuple[str, bool, datetime]] = field(default_factory=list)

    @property
    def came_online(self) -> list[str]:
        """The devices that just came online."""
        return [device_id for device_id, online, _ in self.status_changes if online]


class BatchListener(Protocol):
    """Told what each batch committed, before its acks; a failure is logged and costs the batch nothing."""

    async def committed(self, batch: Committed) -> None: ...


class ResponseResolver(Protocol):
    """Applies the command responses of a batch (the dispatcher), adding their frames to the batch's push."""

    async def resolve(self, responses: list[tuple[str, CommandResponse]], push: PushBatch) -> None: ...


@dataclass(slots=True)
class _Batch:
    """A batch after decoding: per envelope, its transport and what it said (rejected ones say nothing)."""

    received_at: datetime
    entries: list[tuple[Inlet[Any], Any, list[Said]]]


Store = Callable[..., Awaitable[IngestOutcome]]


class IngestPipeline:
    """Drains the intake in batches on the process's event loop, until cancelled."""

    def __init__(self, *, intake: Intake, stats: IngestStats, pusher: Pusher, max_batch: int = 5000,
                 responses: ResponseResolver | None = None, listeners: Sequence[BatchListener] = (),
                 store: Store | None = None) -> None:
        self._intake = intake
        self._stats = stats
        self._pusher = pusher
        self._max_batch = max_batch
        self._responses = responses
        self._listeners = tuple(listeners)
        self._store = store or in_db_thread(telemetry_ingest)

    async def idle(self) -> None:
        """Return once everything offered so far is stored (or rejected) and acknowledged."""
        await self._intake.idle.wait()

    async def run(self) -> None:
        """Process batches until cancelled."""
        while True:
            await self._intake.ready.wait()
            self._intake.ready.clear()
            # Under a backlog of a full batch or more, a two-stage pipeline: batch N+1 is decoded on
            # this loop while batch N commits in the database thread. Otherwise a batch is what
            # arrived during the previous commit (fewer, larger commits). Commits, acks and pushes
            # happen one batch after the other either way.
            committing: tuple[asyncio.Task[None], _Batch] | None = None
            while len(self._intake) or committing:
                if committing and len(self._intake) < self._max_batch:
                    await self._settle(*committing)
                    committing = None
                    continue
                batch = self._decode(self._intake.take(self._max_batch))
                if committing:
                    await self._settle(*committing)
                committing = (asyncio.ensure_future(self._finish(batch)), batch)
            if not len(self._intake):
                self._intake.idle.set()

    async def process(self, inlet: Inlet[Any], envelopes: Sequence[Any]) -> None:
        """Decode, store in one transaction, ack, then push one batch now (outside the loop: tests, drains)."""
        await self._finish(self._decode([(inlet, list(envelopes))]))

    def _decode(self, chunks: list[tuple[Inlet[Any], list[Any]]]) -> _Batch:
        """Each envelope read by its transport's dialect; what breaks the rules is rejected and counted here."""
        received_at = timezone.now()
        entries: list[tuple[Inlet[Any], Any, list[Said]]] = []
        for inlet, envelopes in chunks:
            decoder = inlet.decoder
            for envelope in envelopes:
                decoded = decode_one(decoder, envelope, received_at=received_at)
                if isinstance(decoded, Rejected):
                    self._stats.reject(source=decoded.source, reason=decoded.reason, message=decoded.message)
                    _tell_refused(inlet, envelope, decoded)
                    decoded = []
                entries.append((inlet, envelope, decoded))
            self._stats.counts["received"] += len(envelopes)
        return _Batch(received_at, entries)

    async def _settle(self, task: asyncio.Task[None], batch: _Batch) -> None:
        try:
            await task
        except Exception:
            logger.exception("batch of %d failed; isolating the messages that break it", len(batch.entries))
            await self._bisect(batch)

    async def _bisect(self, batch: _Batch) -> None:
        """After an unexpected failure, halve the batch until the messages that break it stand alone.

        Each half commits on its own, so k bad messages among n cost O(k log n) transactions, not n;
        a message that fails alone is rejected (`internal_error`) and acknowledged.
        """
        entries = batch.entries
        if len(entries) == 1:
            inlet, envelope, said = entries[0]
            source = said[0].device_id if said else inlet.name
            self._stats.reject(source=source, reason="internal_error", message="the database refused it")
            _tell_refused(inlet, envelope, Rejected(source, "internal_error", "the database refused it"))
            inlet.ack([envelope])
            return
        middle = len(entries) // 2
        for half in (entries[:middle], entries[middle:]):
            part = _Batch(batch.received_at, half)
            try:
                await self._finish(part)
            except Exception:
                await self._bisect(part)

    async def _finish(self, batch: _Batch) -> None:
        """Store, resolve responses, tell the listeners, ack after the commit, then push."""
        items: list[Said] = []
        responses: list[tuple[str, CommandResponse]] = []
        transports: dict[str, str] = {}  # the transport each device was last heard on in this batch
        for inlet, _, saying in batch.entries:
            for s in saying:
                if s.response is None:
                    items.append(s)
                    transports[s.device_id] = inlet.name
                else:
                    responses.append((s.device_id, s.response))
        # Whose envelope each item came from, to tell a transport which of its envelopes storage refused.
        owners = [(inlet, envelope) for inlet, envelope, saying in batch.entries for s in saying if s.response is None]
        push = self._pusher.batch()
        outcome = await self._commit(items, batch.received_at, transports) if items else IngestOutcome()
        for index, reason in outcome.rejected.items():
            _tell_refused(*owners[index], Rejected(items[index].device_id, reason, f"device {reason}"))
        if outcome.accepted:
            self._stats.observe_latency((timezone.now() - batch.received_at).total_seconds(),
                                        count=len(outcome.accepted))
        if outcome.unanswerable:
            responses = [(device_id, response) for device_id, response in responses
                         if response.command_id is not None or device_id not in outcome.unanswerable]
        if responses:
            await self._resolve(responses, push)
        committed = self._collect(items, outcome, push, batch.received_at)
        await self._tell(committed)
        self._ack(batch.entries)
        await self._pusher.offer(push)

    async def _commit(self, items: list[Said], received_at: datetime, transports: dict[str, str]) -> IngestOutcome:
        """Commit with retries: while the database is away nothing is acked, so nothing is lost."""

        def count() -> Awaitable[IngestOutcome]:
            self._stats.counts["transactions"] += 1
            return self._store(items=items, received_at=received_at, transports=transports)

        def failed(exc: BaseException, delay: float) -> None:
            self._stats.counts["db_errors"] += 1
            logger.warning("database unavailable (%s); retrying in %.1fs", str(exc).strip()[:200], delay)

        return await retry(count, on=(OperationalError, InterfaceError), backoff=Backoff(first=0.2, most=5.0),
                           failed=failed)

    async def _resolve(self, responses: list[tuple[str, CommandResponse]], push: PushBatch) -> None:
        if self._responses is None:
            for device_id, _ in responses:
                self._stats.reject(source=device_id, reason="response_unhandled", message="no command handler")
            return
        await self._responses.resolve(responses, push)

    def _collect(self, items: list[Said], outcome: IngestOutcome, push: PushBatch, received_at: datetime) -> Committed:
        for index, reason in outcome.rejected.items():
            self._stats.reject(source=items[index].device_id, reason=reason, message=f"device {reason}")
        committed = Committed(received_at, status_changes=outcome.status_changes)
        stored = 0
        for index in outcome.accepted:
            device_id, samples = items[index].device_id, outcome.samples.get(index, [])
            if samples:
                committed.samples.setdefault(device_id, []).extend(samples)
            for sample in samples:
                push.telemetry(device_id, sample)
            stored += len(samples)
        self._stats.counts["samples_stored"] += stored
        for device_id, online, ts in outcome.status_changes:
            push.status(device_id, online, ts)
        return committed

    async def _tell(self, committed: Committed) -> None:
        for listener in self._listeners:
            try:
                await listener.committed(committed)
            except Exception:
                logger.exception("a batch listener (%s) failed", type(listener).__name__)

    def _ack(self, entries: list[tuple[Inlet[Any], Any, list[Said]]]) -> None:
        """Acknowledge in order, one call per run of envelopes of the same transport."""
        start = 0
        for i in range(1, len(entries) + 1):
            if i == len(entries) or entries[i][0] is not entries[start][0]:
                entries[start][0].ack([envelope for _, envelope, _ in entries[start:i]])
                start = i


def _tell_refused(inlet: Inlet[Any], envelope: Any, rejected: Rejected) -> None:
    """Tell a transport that answers each request (CoAP) why one was refused; its ack still follows."""
    refused = getattr(inlet, "refused", None)
    if refused is not None:
        try:
            refused(envelope, rejected)
        except Exception:
            logger.exception("%s could not be told of a refusal", inlet.name)
