"""The embedded MQTT broker of the all-in-one gateway: amqtt, in a thread with its own loop."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

logger = logging.getLogger("iotgw.broker")


def free_port(host: str, preferred: int) -> int:
    """`preferred` if nothing listens there, else the next free port above it."""
    for port in range(preferred, preferred + 100):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {preferred}..{preferred + 99} on {host}")


class EmbeddedBroker:
    """A real MQTT 3.1.1 broker (amqtt) for laptops and demos; anonymous, on one interface."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-mqtt-broker", daemon=True)

    @property
    def url(self) -> str:
        """The MQTT_URL a bridge uses to reach it (amqtt speaks 3.1.1 only)."""
        return f"mqtt://{self.host}:{self.port}?protocol=3.1.1"

    def start(self, timeout: float = 15.0) -> None:
        """Start and wait until it accepts connections."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded MQTT broker did not start in time")
        if self._error is not None:
            raise RuntimeError(f"the embedded MQTT broker failed to start: {self._error}")

    def _run(self) -> None:
        from amqtt.broker import Broker

        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 10000}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        try:
            broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(broker.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
