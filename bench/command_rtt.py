"""Command round trip, dashboard → gateway → device → gateway → dashboard, at a steady rate.

    .venv/bin/python -m bench.command_rtt [--rate 20] [--duration 20] [--database-url …] [--redis-url …] [--mqtt-url …]

`main()` migrates the database, seeds a staff user and token, starts one Daphne and one
bridge (`runworker mqtt-bridge`) and prints the result as JSON.

`await measure(env=…, token=…)` is the interface for the benchmark runner. Django must be
set up in the caller, with `env`'s DATABASE_URL. It registers a fresh device visible to the
token's user, starts its own web and bridge processes from `env` (unless `ws_url` is given:
then it uses that running web, and a bridge must serve `env`'s MQTT_URL), connects a paho
device that answers every command at once, and sends `command` frames at `rate` per second
for `duration` seconds over `sockets` WebSockets (a socket is rate-limited to
IOTGW_WS_RATE frames/s). The first `warmup` seconds are not measured. A command's round trip
is from sending its frame to receiving its `succeeded` frame. Returns a dict:
{"rate", "duration", "sent", "succeeded", "lost", "errors", "rtt_ms": {"n", "p50", "p99", "max"},
"accepted_ms": {…}} where `accepted_ms` is from sending the frame to its `queued` reply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import websockets
from asgiref.sync import sync_to_async

from bench.stats import latency_summary

ROOT = Path(__file__).resolve().parent.parent


class AnsweringDevice:
    """A paho device that says `online` and answers every command with `ok` as soon as it arrives."""

    def __init__(self, url: str, device_id: str) -> None:
        from core.broker import BrokerConfig

        config = BrokerConfig.from_url(url)
        self.device_id = device_id
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"rtt-{device_id}",
                                  protocol=mqtt.MQTTv5)
        self.client.will_set(f"devices/{device_id}/status", b"offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        # Like the bridge: without TCP_NODELAY the response waits behind the PUBACK it follows
        # (Nagle, then the broker's delayed ACK) and the bench would time the device's stack.
        self.client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client.connect(config.host, config.port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(f"devices/{self.device_id}/commands", qos=1)
        client.publish(f"devices/{self.device_id}/status", b"online", qos=1, retain=True)

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        command = json.loads(msg.payload)
        client.publish(f"devices/{self.device_id}/commands/response",
                       json.dumps({"id": command["id"], "status": "ok", "result": None}).encode(), qos=1)

    def close(self) -> None:
        self.client.publish(f"devices/{self.device_id}/status", b"offline", qos=1, retain=True).wait_for_publish(5)
        self.client.disconnect()
        self.client.loop_stop()


def _seed_device(token: str) -> str:
    from devices.selectors import token_user
    from devices.services.devices import device_register

    user = token_user(token)
    if user is None:
        raise ValueError("the token does not belong to an active user")
    device, _ = device_register(device_id=f"rtt-{uuid.uuid4().hex[:8]}", owner=user)
    return device.id


def _device_online(device_id: str, timeout: float) -> None:
    from devices.models import Device
    from testing.waiting import wait_until

    wait_until(lambda: Device.objects.filter(pk=device_id, online=True).exists(), timeout=timeout,
               what="the device online")


class GatewayProcesses:
    """One Daphne and one bridge started from `env`, with their own MQTT session and share group."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        from testing.processes import Process, free_port

        self.port = free_port()
        run = uuid.uuid4().hex[:6]
        # Its own share group and a short session: a stale session in a shared group would get a share of every
        # device message (queued for nobody), and this one must not outlive the run on someone else's broker.
        self.env = dict(env, MQTT_CLIENT_ID=f"rtt-bridge-{run}", MQTT_SHARE_GROUP=f"rtt{run}",
                        MQTT_SESSION_EXPIRY="60")
        daphne = str(Path(sys.executable).with_name("daphne"))
        self.web = Process("web", [daphne, "-b", "127.0.0.1", "-p", str(self.port), "iotgw.asgi:application"],
                           self.env, logdir / "command_rtt-web.log").start()
        self.bridge = Process("bridge", [sys.executable, "manage.py", "runworker", "mqtt-bridge"], self.env,
                              logdir / "command_rtt-bridge.log").start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/dashboard/"

    def wait_ready(self) -> None:
        from testing.http import http_get
        from testing.processes import wait_bridge_connected
        from testing.waiting import wait_until

        wait_until(lambda: http_get(f"http://127.0.0.1:{self.port}/healthz")[0] == 200 or not self.web.alive(),
                   timeout=30, what="daphne")
        assert self.web.alive(), self.web.output()
        wait_bridge_connected(self.env["MQTT_CLIENT_ID"], self.bridge)

    def stop(self) -> None:
        from testing.processes import drop_bridge_sessions

        self.web.kill()
        self.bridge.kill()
        drop_bridge_sessions(self.env["MQTT_URL"], self.env)


async def measure(
    *,
    env: dict[str, str],
    token: str,
    logdir: Path | None = None,
    rate: float = 20.0,
    duration: float = 20.0,
    warmup: float = 2.0,
    sockets: int = 2,
    ws_url: str | None = None,
) -> dict[str, Any]:
    """Send commands at `rate`/s for `duration` s (plus `warmup`) and measure their round trips (see above)."""
    logdir = logdir or ROOT / "bench" / "results" / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    device_id = await sync_to_async(_seed_device)(token)
    stack = GatewayProcesses(env, logdir) if ws_url is None else None
    socks: list = []
    device = None
    try:
        if stack is not None:
            await sync_to_async(stack.wait_ready)()
            ws_url = stack.ws_url
        device = await sync_to_async(AnsweringDevice, thread_sensitive=False)(env["MQTT_URL"], device_id)
        await sync_to_async(_device_online)(device_id, 15.0)
        headers = {"Authorization": f"Bearer {token}"}
        socks = [await websockets.connect(ws_url, additional_headers=headers, max_size=None) for _ in range(sockets)]
        for ws in socks:
            await ws.send(json.dumps({"type": "subscribe", "devices": [device_id]}))
        return await _run(socks, device_id, rate=rate, duration=duration, warmup=warmup)
    finally:
        for ws in socks:
            await ws.close()
        if device is not None:
            await sync_to_async(device.close, thread_sensitive=False)()
        if stack is not None:
            await sync_to_async(stack.stop, thread_sensitive=False)()


async def _run(socks: list, device_id: str, *, rate: float, duration: float, warmup: float) -> dict[str, Any]:
    sent_at: dict[str, float] = {}
    done_at: dict[str, float] = {}
    queued_at: dict[str, float] = {}
    errors: list[dict] = []
    all_done = asyncio.Event()
    total = int((warmup + duration) * rate)

    async def read(ws) -> None:
        async for text in ws:
            frame = json.loads(text)
            if frame.get("type") == "command" and frame.get("status") == "queued":
                queued_at.setdefault(frame.get("ref"), time.perf_counter())
            elif frame.get("type") == "command" and frame.get("status") == "succeeded":
                ref = frame.get("ref")
                if ref in sent_at and ref not in done_at:
                    done_at[ref] = time.perf_counter()
                    if len(done_at) == total:
                        all_done.set()
            elif frame.get("type") == "error":
                errors.append(frame)

    readers = [asyncio.ensure_future(read(ws)) for ws in socks]
    try:
        start = time.perf_counter()
        for i in range(total):
            # Pacing to an absolute schedule keeps the offered rate steady whatever a send costs.
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            ref = f"c{i}"
            sent_at[ref] = time.perf_counter()
            await socks[i % len(socks)].send(json.dumps({"type": "command", "device": device_id, "name": "ping",
                                                         "params": {"i": i}, "ref": ref}))
        try:
            await asyncio.wait_for(all_done.wait(), timeout=15.0)
        except TimeoutError:
            pass
    finally:
        for reader in readers:
            reader.cancel()
    measured = [f"c{i}" for i in range(int(warmup * rate), total)]
    rtts = [(done_at[r] - sent_at[r]) * 1000 for r in measured if r in done_at]
    accepted = [(queued_at[r] - sent_at[r]) * 1000 for r in measured if r in queued_at]
    return {"rate": rate, "duration": duration, "sent": len(measured), "succeeded": len(rtts),
            "lost": len(measured) - len(rtts), "errors": len(errors), "rtt_ms": _rounded(latency_summary(rtts)),
            "accepted_ms": _rounded(latency_summary(accepted))}


def _rounded(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in summary.items()}


def main(argv: list[str] | None = None) -> int:
    """Standalone run: migrate, seed a staff token, start web + bridge, measure, print JSON."""
    p = argparse.ArgumentParser(prog="python -m bench.command_rtt", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=20.0, help="commands per second")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds sent before measuring")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                            "postgres://postgres@127.0.0.1:5432/iotgw_bench"))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/7"))
    p.add_argument("--mqtt-url", default=os.environ.get("BENCH_MQTT_URL"),
                   help="a running broker; by default a private Mosquitto on a free port, away from other traffic")
    p.add_argument("--logdir", default=str(ROOT / "bench" / "results" / "logs"), help="where process logs go")
    args = p.parse_args(argv)
    from bench.stack import PrivateBroker, ensure_database, migrate

    logdir = Path(args.logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    broker = None if args.mqtt_url else PrivateBroker(logdir)
    try:
        return _standalone(args, logdir, args.mqtt_url or broker.url, ensure_database, migrate)
    finally:
        if broker is not None:
            broker.stop()


def _standalone(args: argparse.Namespace, logdir: Path, mqtt_url: str, ensure_database: Any, migrate: Any) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="iotgw.settings", DATABASE_URL=args.database_url, REDIS_URL=args.redis_url,
               MQTT_URL=mqtt_url, PYTHONUNBUFFERED="1", IOTGW_HEARTBEAT_SECONDS="0.5", DJANGO_DEBUG="0",
               DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    ensure_database(args.database_url, args.database_url.rsplit("/", 1)[1])
    migrate(env)
    os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "MQTT_URL")})
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from devices.services.tokens import token_create

    user = get_user_model().objects.create_user(f"rtt-{uuid.uuid4().hex[:6]}", is_staff=True)
    token = token_create(user=user, name="command_rtt")
    result = asyncio.run(measure(env=env, token=token, logdir=logdir, rate=args.rate,
                                 duration=args.duration, warmup=args.warmup))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
