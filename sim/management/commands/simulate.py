"""`simulate`: N devices sending drifting telemetry (MQTT, CoAP, WebSocket, HTTP) and answering commands (SPEC §10)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.core.management import BaseCommand, CommandError

from core.broker import BrokerConfig
from core.errors import ConfigMissing
from sim.fleet import devices_latest, ensure_devices
from sim.simulator import Simulator, SimulatorRefused, Stats, progress_line

logger = logging.getLogger("iotgw.simulator")

# How long a run may go without a single device logged in before it stops and says why.
GIVE_UP_AFTER = 15.0


def _refusal_hint(reason: str, broker: BrokerConfig) -> str:
    """One line: what the broker said, and what usually fixes it."""
    where = f"{broker.host}:{broker.port}"
    if "protocol" in reason.lower() and broker.protocol == 5:
        fix = "that broker speaks MQTT 3.1.1 only: add ?protocol=3.1.1 to the URL"
    elif "not authori" in reason.lower() or "bad user" in reason.lower():
        fix = ("the devices' credentials are not that broker's: it must check them against this registry "
               "(the all-in-one gateway's broker does; see docs/broker-auth.md)")
    else:
        fix = "is a broker listening there?"
    return f"no simulated device could log in to {where} ({reason}): {fix}"


class Command(BaseCommand):
    help = "Simulate N devices sending R samples/s in total over MQTT (or CoAP), answering commands."

    def add_arguments(self, parser):
        parser.add_argument("--devices", type=int, default=3, help="how many devices (default 3)")
        parser.add_argument("--rate", type=float, default=3.0, help="samples per second across all devices")
        parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
        parser.add_argument("--prefix", default="sim", help="device ids are PREFIX-1 … PREFIX-N (default sim)")
        parser.add_argument("--owner", default=None, help="owner of devices registered by this run")
        parser.add_argument("--transport", choices=["mqtt", "coap", "ws", "http"], default="mqtt",
                            help="how the devices talk to the gateway (default mqtt)")
        parser.add_argument("--mqtt-url", default=None, help="broker URL (default: MQTT_URL)")
        parser.add_argument("--coap-url", default=None,
                            help="CoAP server, plain mode (default coap://127.0.0.1:IOTGW_COAP_PORT)")
        parser.add_argument("--web-url", default="http://127.0.0.1:8000",
                            help="the gateway's web process, for --transport ws or http (default %(default)s)")
        parser.add_argument("--latency", type=float, default=0.2, help="seconds before answering a command")
        parser.add_argument("--failure-rate", type=float, default=0.0, help="share of commands answered with an error")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable values")

    def handle(self, *args, devices: int, rate: float, duration: float | None, prefix: str, owner: str | None,
               mqtt_url: str | None, latency: float, failure_rate: float, seed: int | None, transport: str = "mqtt",
               coap_url: str | None = None, web_url: str = "http://127.0.0.1:8000", **options):
        url = mqtt_url or settings.MQTT_URL
        if not url and transport == "mqtt":
            raise CommandError(str(ConfigMissing("MQTT_URL", "pass --mqtt-url or set MQTT_URL")))
        if devices < 1 or rate <= 0 or not 0 <= failure_rate <= 1:
            raise CommandError("--devices must be at least 1, --rate above 0, --failure-rate from 0 to 1")
        ids = [f"{prefix}-{i}" for i in range(1, devices + 1)]
        try:
            registered = ensure_devices(ids, owner_name=owner)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        if transport == "coap":
            self._run_coap(coap_url or f"coap://127.0.0.1:{settings.IOTGW_COAP_PORT}", registered, rate=rate,
                           duration=duration, latency=latency, failure_rate=failure_rate, seed=seed)
            return
        if transport in ("ws", "http"):
            self._run_web(web_url, transport, registered, rate=rate, duration=duration, latency=latency,
                          failure_rate=failure_rate, seed=seed)
            return
        broker = BrokerConfig.from_url(url)
        sim = Simulator(broker=broker, devices=registered, rate=rate,
                        latency=latency, failure_rate=failure_rate, seed=seed, latest=devices_latest(ids))
        self.stdout.write(f"simulating {ids[0]} … {ids[-1]} at {rate:g} samples/s in total → "
                          f"{broker.host}:{broker.port}  (Ctrl-C to stop)")
        self._last_line = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: sim.stop()) if main else None
        try:
            stats = sim.run(duration=duration, progress=self._progress, give_up_after=GIVE_UP_AFTER)
        except KeyboardInterrupt:
            stats = sim.stats
        except SimulatorRefused as exc:
            raise CommandError(_refusal_hint(str(exc), broker)) from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        self.stdout.write(("\n" if sys.stdout.isatty() else "") + "done: " + progress_line(stats, final=True))

    def _run_coap(self, url: str, registered: dict[str, str | None], *, duration: float | None, **options) -> None:
        """The same devices over CoAP, in plain mode (docs/transports/coap.md)."""
        from sim.coap_devices import CoapSimulator

        sim = CoapSimulator(url=url, devices=registered, latest=devices_latest(list(registered)), **options)
        self._drive(sim, registered, f"{url} (CoAP, plain mode)", options["rate"], duration,
                    refused=f"no simulated device got an answer from {url}",
                    hint="is `manage.py coapserver` running there, in plain mode (IOTGW_COAP_PLAIN=1)?")

    def _run_web(self, url: str, transport: str, registered: dict[str, str | None], *, duration: float | None,
                 **options) -> None:
        """The same devices over the gateway's device WebSocket or HTTP (docs/transports/)."""
        from sim.web_devices import WebSimulator

        sim = WebSimulator(url=url, transport=transport, devices=registered, latest=devices_latest(list(registered)),
                           **options)
        where = f"{url} ({'WebSocket /ws/device/' if transport == 'ws' else 'HTTP'})"
        self._drive(sim, registered, where, options["rate"], duration, refused=f"no simulated device got in at {url}",
                    hint="is the gateway's web process (`make run`, or daphne) listening there?")

    def _drive(self, sim: Any, registered: dict[str, str | None], where: str, rate: float, duration: float | None,
               *, refused: str, hint: str) -> None:
        """Run an event-loop simulator (sim/asyncfleet.py) until its duration, SIGTERM or Ctrl-C, with progress."""
        ids = list(registered)
        self.stdout.write(f"simulating {ids[0]} … {ids[-1]} at {rate:g} samples/s in total → {where}  "
                          "(Ctrl-C to stop)")
        self._last_line = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, lambda *_: sim.stop()) if main else None
        try:
            stats = sim.run(duration=duration, progress=self._progress, give_up_after=GIVE_UP_AFTER)
        except KeyboardInterrupt:
            stats = sim.stats
        except SimulatorRefused as exc:
            raise CommandError(f"{refused} ({exc}): {hint}") from None
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        self.stdout.write(("\n" if sys.stdout.isatty() else "") + "done: " + progress_line(stats, final=True))

    def _progress(self, stats: Stats) -> None:
        # In place on a terminal; into a log or a pipe, one line every ten seconds instead.
        if sys.stdout.isatty():
            sys.stdout.write("\r\033[K" + progress_line(stats))
            sys.stdout.flush()
            return
        now = time.monotonic()
        if now - self._last_line >= 10:
            self._last_line = now
            self.stdout.write(progress_line(stats))
