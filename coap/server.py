"""The running CoAP server: an aiocoap listener, its own ingest pipeline, command dispatcher, presence, heartbeat.

Everything runs on one event loop and is wired here, through constructors, from the
configuration the composition root passes in (iotgw/config.py reads it from settings):

    aiocoap context → ProtectedSite (OSCORE) → DeviceSite → CoapTransport → intake ← IngestPipeline → Pusher
                                                                 ↑ deliver (notifications)  ↓ resolve, committed
                                                                 └────────── CommandDispatcher
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import aiocoap
from aiocoap.numbers.constants import TransportTuning
from django.db import DatabaseError

from coap.keys import DeviceKeys
from coap.oscore import DeviceContexts, ProtectedSite
from coap.site import DeviceSite
from coap.transport import CoapTransport
from core.dialect import IotgwDecoder
from core.push import Layer
from devices.dbthread import in_db_thread
from devices.dispatch import CommandDispatcher
from devices.pipeline import IngestPipeline, Intake, Store
from devices.presence import presence_loop
from devices.pusher import Pusher
from devices.services.heartbeats import bridge_heartbeat
from devices.stats import IngestStats

logger = logging.getLogger("iotgw.coap")

# The heartbeat's counters say which transport wrote them: readiness and /metrics tell CoAP listeners
# from MQTT bridges by it (api/health.py).
TRANSPORT_MARK = "coap"


def ack_after_commit(commit_wait: float) -> None:
    """Let aiocoap send a Confirmable request's ACK only with its response, i.e. after the commit.

    aiocoap answers a CON request it has not responded to within EMPTY_ACK_DELAY (0.1 s in
    0.4.17; measured: a 0.5 s handler got an empty ACK, then a separate CON response) with an
    empty ACK, which would acknowledge a sample before it is stored. Incoming requests take
    the class's default tuning (there is no per-context setting), so the class attribute is
    raised past the longest a request waits for its commit; the client meanwhile retransmits
    (ACK_TIMEOUT 2-3 s, doubling), and aiocoap drops those duplicates while the answer is pending.
    """
    TransportTuning.EMPTY_ACK_DELAY = commit_wait + 1.0


class CoapServer:
    """Owns one CoAP process's listener, ingest, commands, presence sweep and heartbeat.

    Every setting is a keyword with the default of its IOTGW_COAP_* variable (README, Configuration);
    `store` replaces the pipeline's database write (a test holds a commit back with it).
    """

    def __init__(
        self,
        *,
        layer: Layer,
        client_id: str,
        host: str = "::",
        port: int = 5683,
        plain: bool = False,
        rate: float = 20.0,
        burst: float = 40.0,
        commit_wait: float = 60.0,
        max_batch: int = 5000,
        max_payload: int = 64 * 1024,
        max_clock_skew: float = 86400.0,
        push_buckets: int = 1,
        push_interval: float = 0.01,
        heartbeat_seconds: float = 2.0,
        offline_after: float = 600.0,
        oscore_dir: str = "var/oscore",
        store: Store | None = None,
    ) -> None:
        self.client_id = client_id
        self.host, self.port, self.plain = host, port, plain
        self._commit_wait = commit_wait
        self._heartbeat_seconds = heartbeat_seconds
        self._offline_after = offline_after
        self.stats = IngestStats()
        self.intake = Intake()
        self.pusher = Pusher(layer=layer, stats=self.stats, buckets=push_buckets, interval=push_interval)
        self.transport = CoapTransport(
            sink=self.intake, stats=self.stats, max_payload=max_payload, rate=rate, burst=burst,
            commit_wait=commit_wait,
            decoder=IotgwDecoder(max_payload=max_payload, max_skew=timedelta(seconds=max_clock_skew)),
        )
        keys = DeviceKeys()
        self.contexts = DeviceContexts(Path(oscore_dir), lookup=keys.stored_hash)
        self.site = ProtectedSite(DeviceSite(self.transport, keys=keys, plain=plain), self.contexts)
        # Devices last heard on CoAP, and of those only the ones observing their commands here.
        self.dispatcher = CommandDispatcher(outlet=self.transport, owner=client_id, stats=self.stats,
                                            pusher=self.pusher, transports=[CoapTransport.name],
                                            reach=self.transport.reachable)
        self.transport.on_observe = lambda device_id: self.dispatcher.nudge([device_id])
        self.pipeline = IngestPipeline(intake=self.intake, stats=self.stats, pusher=self.pusher, max_batch=max_batch,
                                       responses=self.dispatcher, listeners=[self.dispatcher], store=store)
        self._context: aiocoap.Context | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Bind the UDP listener (OSError if the port is taken) and start the loops."""
        ack_after_commit(self._commit_wait)
        # UDP only: aiocoap's default set would also open CoAP over TCP, TLS and WebSockets on ports of its choosing.
        self._context = await aiocoap.Context.create_server_context(self.site, bind=(self.host, self.port),
                                                                    transports=["udp6"])
        self.transport.listening(True)
        self._tasks = [
            asyncio.ensure_future(self.pipeline.run()),
            asyncio.ensure_future(self._heartbeat()),
            asyncio.ensure_future(self.dispatcher.run()),
            asyncio.ensure_future(presence_loop(pusher=self.pusher, stats=self.stats,
                                                interval=self._heartbeat_seconds, offline_after=self._offline_after)),
        ]
        logger.info("CoAP server %s listening on udp %s port %d (%s)", self.client_id, self.host, self.port,
                    "plain mode: credentials in clear" if self.plain else "plain mode off")

    async def stop(self) -> None:
        """Close the listener and stop the loops."""
        self.transport.listening(False)
        if self._context is not None:
            await self._context.shutdown()
        for task in self._tasks:
            task.cancel()
        self.contexts.close()

    async def _heartbeat(self) -> None:
        beat = in_db_thread(bridge_heartbeat)
        while True:
            self.stats.flush()
            try:
                await beat(client_id=self.client_id, connected=self.transport.connected,
                           counters={**self.stats.snapshot(), "transport": TRANSPORT_MARK})
            except DatabaseError as exc:
                logger.warning("heartbeat not written: %s", str(exc).strip()[:200])
            await asyncio.sleep(self._heartbeat_seconds)
