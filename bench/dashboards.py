"""Simulated dashboards: `websockets` clients with a bearer token, subscribed per device, timing every sample.

They subscribe in chunks of CHUNK devices rather than to "*": a snapshot frame of
a whole large fleet is over the 64 KiB frame cap, and Daphne closes the socket.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from array import array
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection

import orjson

CHUNK = 40  # devices per subscribe frame: 25 frames for 1000 devices, within the per-socket burst
OPENING = 50  # WebSocket handshakes in flight per dashboards process


HANDSHAKE_TRIES = 3
RETRY_S = 1.0  # as the product's page (api/static/iotgw/live.js): the first reconnect after about a second


async def _dashboard(urls: list[str], first: int, token: str, devices: list[str], sent: array, lat: array,
                     ready: asyncio.Event, opening: asyncio.Semaphore, events: list | None) -> None:
    """One dashboard on urls[first]; with `events`, it reconnects to the next URL when its socket drops.

    A reconnecting dashboard records ("closed", epoch ms) when its socket ends and ("subscribed",
    epoch ms, url index) when the snapshots of a (re)subscribe are in, as the product's page does.
    """
    import websockets

    index = first
    while True:
        at = index % len(urls)
        try:
            await _session(urls[at], token, devices, sent, lat, ready, opening,
                           None if events is None else partial(_note, events, "subscribed", at))
        except (OSError, websockets.ConnectionClosed, websockets.InvalidHandshake):
            if events is None:
                raise
        if events is None:
            return
        _note(events, "closed")
        index += 1  # a proxy sends the next connection to a live replica; here: the next web
        await asyncio.sleep(RETRY_S)


def _note(events: list, kind: str, *more: int) -> None:
    events.append((kind, time.time() * 1000.0, *more))


async def _session(url: str, token: str, devices: list[str], sent: array, lat: array, ready: asyncio.Event,
                   opening: asyncio.Semaphore, on_subscribed: Callable[[], None] | None) -> None:
    import websockets

    async with opening:  # a few handshakes at a time: thousands at once overflow Daphne's listen backlog
        for attempt in range(HANDSHAKE_TRIES):
            try:
                ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"},
                                              max_size=None, max_queue=None)
                break
            except (OSError, websockets.InvalidHandshake):
                # A handshake of thousands in a row can be dropped by a busy server (4,194 of 5,000 got in,
                # then one was closed unanswered): the page retries, and so does a bench dashboard, twice.
                if attempt == HANDSHAKE_TRIES - 1:
                    raise
                await asyncio.sleep(RETRY_S)
    async with ws:
        chunks = [devices[i:i + CHUNK] for i in range(0, len(devices), CHUNK)]
        for chunk in chunks:
            await ws.send(orjson.dumps({"type": "subscribe", "devices": chunk}).decode())
        snapshots = 0
        while True:
            frame = orjson.loads(await ws.recv())
            if frame["type"] == "snapshot":
                snapshots += 1
                if snapshots == len(chunks):
                    ready.set()
                    if on_subscribed is not None:
                        on_subscribed()
            elif frame["type"] == "error":
                raise RuntimeError(f"dashboard got an error frame: {frame}")
            elif frame["type"] == "telemetry":
                now = time.time() * 1000.0
                for item in frame["items"]:
                    t = item["data"].get("t")
                    if t is not None:
                        sent.append(t)
                        lat.append(now - t)


async def _serve(urls: list[str], token: str, views: list[list[str]], first: int, conn: Connection,
                 reconnect: bool) -> None:
    count = len(views)
    data = [(array("d"), array("d")) for _ in range(count)]
    events: list[list | None] = [[] if reconnect else None for _ in range(count)]
    readies = [asyncio.Event() for _ in range(count)]
    opening = asyncio.Semaphore(OPENING)
    tasks = [asyncio.ensure_future(_dashboard(urls, first + i, token, views[i], *data[i], readies[i], opening,
                                              events[i]))
             for i in range(count)]
    waiting = asyncio.ensure_future(asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)),
                                                     max(60.0, count / 20)))
    await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in tasks if t.done()]
    conn.send("ready" if not failed else f"failed: {failed[0].exception()!r}")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, conn.recv)
    for task in tasks:
        task.cancel()
    conn.send([(s.tobytes(), lat.tobytes(), ev or []) for (s, lat), ev in zip(data, events, strict=True)])


def _main(urls: list[str], token: str, views: list[list[str]], first: int, conn: Connection, reconnect: bool) -> None:
    asyncio.run(_serve(urls, token, views, first, conn, reconnect))


def slices(devices: list[str], count: int) -> list[list[str]]:
    """`count` disjoint, near-equal slices of the fleet, one per slice dashboard."""
    return [devices[i * len(devices) // count:(i + 1) * len(devices) // count] for i in range(count)]


class Dashboards:
    """Dashboards in P processes, one per view (the devices it subscribes to).

    `stop()` returns, per dashboard in the order of `views`, (publish time ms, latency ms) arrays. With
    `reconnect`, a dashboard whose socket drops connects again to the next URL, and `events` holds,
    per dashboard, its ("closed", ms) and ("subscribed", ms, url index) after `stop()`.
    """

    def __init__(self, urls: list[str], token: str, views: list[list[str]], processes: int, *,
                 reconnect: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs = []
        self.events: list[list] = []
        count = len(views)
        per = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        first = 0  # dashboards are numbered across processes, and spread over the web processes by that number
        for n in per:
            if not n:
                continue
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_main, args=(urls, token, views[first:first + n], first, theirs, reconnect),
                               daemon=True)
            first += n
            proc.start()
            self.pipes.append(mine)
            self.procs.append(proc)

    def wait_ready(self, timeout: float = 70) -> None:
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError("dashboards did not subscribe in time")
            answer = pipe.recv()
            if answer != "ready":
                raise RuntimeError(f"dashboards could not subscribe: {answer}")

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> list[tuple[array, array]]:
        out: list[tuple[array, array]] = []
        for pipe in self.pipes:
            pipe.send("stop")
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            for sent_b, lat_b, events in pipe.recv():
                sent, lat = array("d"), array("d")
                sent.frombytes(sent_b)
                lat.frombytes(lat_b)
                out.append((sent, lat))
                self.events.append(events)
            proc.join(10)
        return out
