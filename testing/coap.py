"""CoAP under test: a `coapserver` process of the stack's, and devices that speak through aiocoap's own client."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiocoap import Code, Context, Message

from testing.processes import ROOT, Process, Stack, free_port, wait_bridge_connected


def free_udp_port() -> int:
    """A UDP port nothing is bound to, from the harness's range (below the kernel's ephemeral one)."""
    import socket

    for _ in range(50):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP port")


@dataclass
class CoapProcess:
    """A `manage.py coapserver` of a stack, in plain mode unless told otherwise."""

    stack: Stack
    port: int = field(default_factory=free_udp_port)
    plain: bool = True
    proc: Process | None = None

    @property
    def client_id(self) -> str:
        return self.stack.env["MQTT_CLIENT_ID"].replace("test-bridge-", "test-coap-")

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    @property
    def oscore_dir(self) -> Path:
        return ROOT / "var" / "oscore-test" / self.client_id

    def start(self, **extra_env: str) -> CoapProcess:
        env = dict(self.stack.env, IOTGW_COAP_ID=self.client_id, IOTGW_COAP_HOST="127.0.0.1",
                   IOTGW_COAP_PORT=str(self.port), IOTGW_COAP_PLAIN="1" if self.plain else "0",
                   IOTGW_COAP_OSCORE_DIR=str(self.oscore_dir), **extra_env)
        self.proc = self.stack.processes.start("coap", [sys.executable, "manage.py", "coapserver"], env)
        wait_bridge_connected(self.client_id, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        shutil.rmtree(self.oscore_dir, ignore_errors=True)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()


class CoapDevice:
    """One device talking to the gateway through aiocoap's client (a CoAP stack the project did not write)."""

    def __init__(self, base_url: str, device_id: str, secret: str | None, *, oscore: Path | None = None) -> None:
        self.base_url = base_url
        self.device_id = device_id
        self.secret = secret
        self.oscore = oscore  # a folder for the device's OSCORE context: requests are protected, no secret sent
        self.context: Context | None = None

    async def __aenter__(self) -> CoapDevice:
        self.context = await Context.create_client_context()
        if self.oscore is not None:
            from coap.oscore import device_context_settings

            assert self.secret is not None
            self.oscore.mkdir(parents=True, exist_ok=True)
            (self.oscore / "settings.json").write_text(orjson.dumps(
                device_context_settings(self.device_id, self.secret)).decode())
            self.context.client_credentials.load_from_dict(
                {f"{self.base_url}/*": {"oscore": {"basedir": f"{self.oscore}/"}}})
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self.context is not None:
            await self.context.shutdown()
            self.context = None

    def uri(self, path: str) -> str:
        query = f"?secret={self.secret}" if self.secret is not None and self.oscore is None else ""
        return f"{self.base_url}/devices/{self.device_id}/{path}{query}"

    async def post(self, path: str, payload: bytes | Any) -> Message:
        """POST raw bytes, or anything else as JSON; returns the response."""
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        assert self.context is not None
        return await self.context.request(Message(code=Code.POST, uri=self.uri(path), payload=body)).response

    async def telemetry(self, sample: Any) -> Message:
        return await self.post("telemetry", sample)

    async def status(self, online: bool) -> Message:
        return await self.post("status", b"online" if online else b"offline")

    def observe_commands(self) -> Any:
        """The observation request of the device's commands resource (`.response`, `.observation`)."""
        assert self.context is not None
        return self.context.request(Message(code=Code.GET, uri=self.uri("commands"), observe=0))
