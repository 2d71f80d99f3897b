"""Processes under test: Daphne, bridges, the all-in-one gateway, and private Mosquitto or Redis servers."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import paho.mqtt.client as mqtt

from testing.http import http_get
from testing.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"

# The processes tests start share it with the test process, so sessions made here are valid there.
TEST_SECRET_KEY = "test-" + uuid.uuid4().hex + uuid.uuid4().hex


# Below the kernel's ephemeral range (32768-60999 here): a port the kernel handed out for a bind to 0 can be
# taken by any outgoing connection before the server binds it, which made Daphne fail with EADDRINUSE.
PORT_RANGE = (20000, 32000)
_random = random.SystemRandom()  # not the global generator, which Hypothesis seeds


def free_port() -> int:
    """A port nothing listens on, outside the range the kernel picks for outgoing connections."""
    for _ in range(200):
        port = _random.randint(*PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def database_url(db: dict) -> str:
    """A DATABASE_URL for the database Django is using now (the test database)."""
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Process:
    """A gateway process started for a test, with its output in test-output/."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log
        self.popen: subprocess.Popen | None = None

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen and self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
            self.popen.wait(10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `grace` seconds."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        os.killpg(self.popen.pid, signal.SIGCONT)  # a frozen process must see the TERM
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def freeze(self) -> None:
        """SIGSTOP the process group: it holds its sockets but does nothing until `thaw`."""
        os.killpg(self.popen.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.killpg(self.popen.pid, signal.SIGCONT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class ProcessGroup:
    def __init__(self, test_name: str) -> None:
        self.dir = OUTPUT / test_name.replace("/", "_")[:120]
        self.items: list[Process] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        proc = Process(name, args, env, self.dir / f"{name}-{len(self.items)}.log").start()
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            proc.stop()


def stack_env(*, database_url: str, redis_url: str | None, mqtt_url: str | None, run_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))}
    env.update(
        DJANGO_SETTINGS_MODULE="iotgw.settings",
        DATABASE_URL=database_url,
        MQTT_CLIENT_ID=f"test-bridge-{run_id}",
        MQTT_SHARE_GROUP=f"test{run_id}",
        MQTT_SESSION_EXPIRY="300",
        IOTGW_HEARTBEAT_SECONDS="0.5",
        PYTHONUNBUFFERED="1",
        # The processes run as in production (iotgw/production.py): DEBUG off, a real secret key.
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=TEST_SECRET_KEY,
    )
    for name, value in (("REDIS_URL", redis_url), ("MQTT_URL", mqtt_url)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    return env


def _bin(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


@dataclass
class Stack:
    """A split deployment under test: Daphne web processes and runworker bridges."""

    env: dict[str, str]
    processes: ProcessGroup
    mqtt_url: str
    web_port: int | None = None
    bridges: list[Process] = field(default_factory=list)
    client_ids: set[str] = field(default_factory=set)

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/dashboard/"

    @property
    def ws_device(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/device/"

    def start_web(self) -> Process:
        self.web_port = free_port()
        proc = self.processes.start(
            "web", [_bin("daphne"), "-b", "127.0.0.1", "-p", str(self.web_port), "iotgw.asgi:application"], self.env
        )
        wait_until(lambda: http_get(self.web + "/healthz")[0] == 200 or not proc.alive(), timeout=30, what="daphne")
        assert proc.alive(), proc.output()
        return proc

    def start_bridge(self, **extra_env: str) -> Process:
        env = dict(self.env, **extra_env)
        proc = self.processes.start("bridge", [sys.executable, "manage.py", "runworker", "mqtt-bridge"], env)
        self.bridges.append(proc)
        self.client_ids.add(env["MQTT_CLIENT_ID"])
        wait_bridge_connected(env["MQTT_CLIENT_ID"], proc)
        return proc


def wait_bridge_connected(client_id: str, proc: Process, timeout: float = 30) -> None:
    """Wait for a fresh heartbeat saying the bridge holds its broker connection."""
    from django.utils import timezone

    from devices.models import BridgeHeartbeat

    started = timezone.now()

    def ready():
        assert proc.alive(), proc.output()
        return BridgeHeartbeat.objects.filter(client_id=client_id, connected=True, beat_at__gt=started).exists()

    wait_until(ready, timeout=timeout, what=f"bridge {client_id} connected")


def drop_bridge_sessions(mqtt_url: str, env: dict[str, str]) -> None:
    """Remove the persistent session of the bridge that `env` configures."""
    drop_sessions(mqtt_url, {env["MQTT_CLIENT_ID"]})


def drop_sessions(mqtt_url: str, client_ids: set[str]) -> None:
    """Remove the test bridges' persistent sessions so they cannot hold messages of later tests."""
    from core.broker import BrokerConfig

    config = BrokerConfig.from_url(mqtt_url)
    for client_id in client_ids:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        try:
            client.connect(config.host, config.port, clean_start=True)
            client.loop_start()
            client.disconnect()
            client.loop_stop()
        except OSError:
            pass


class PrivateService:
    """A Mosquitto, Redis or Redis Sentinel of the test's own, on a free port, that a test may stop and start."""

    def __init__(self, kind: str, workdir: Path, *, mosquitto: list[str] | None = None,
                 redis: list[str] | None = None) -> None:
        self.kind = kind
        # redis and sentinel: lines of their config file (a sentinel rewrites its file, so it must have one).
        self.config = workdir / f"{kind}.conf"
        self.port = free_port()
        self.workdir = workdir
        self.popen: subprocess.Popen | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        if kind == "mosquitto":
            # By default as compose/mosquitto.conf: persisted, saved every second, a deep queue (`mosquitto`
            # replaces these lines). `user root`: started as root, Mosquitto would write its database as user
            # mosquitto, which cannot enter the test's tmp dir.
            lines = mosquitto if mosquitto is not None else [
                "persistence true", f"persistence_location {workdir}/", "autosave_interval 1",
                "max_queued_messages 100000"]
            (workdir / "mosquitto.conf").write_text("\n".join([
                f"listener {self.port} 127.0.0.1", "allow_anonymous true", *lines,
                *(["user root"] if os.geteuid() == 0 else [])]) + "\n")
        elif kind in ("redis", "sentinel"):
            self.config.write_text("\n".join(redis or []) + "\n")

    @property
    def url(self) -> str:
        scheme = {"mosquitto": "mqtt", "redis": "redis", "sentinel": "redis"}[self.kind]
        return f"{scheme}://127.0.0.1:{self.port}" + ("/0" if self.kind == "redis" else "")

    def start(self) -> PrivateService:
        if self.kind == "mosquitto":
            args = ["mosquitto", "-c", str(self.workdir / "mosquitto.conf")]
        elif self.kind == "sentinel":
            args = ["redis-server", str(self.config), "--sentinel", "--port", str(self.port), "--bind", "127.0.0.1",
                    "--dir", str(self.workdir)]
        else:
            args = ["redis-server", str(self.config), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.workdir)]
        log = open(self.workdir / f"{self.kind}.log", "ab")
        self.popen = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def listening() -> bool:
            assert self.popen.poll() is None, (self.workdir / f"{self.kind}.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, timeout=15, what=f"{self.kind} listening")
        return self

    @property
    def log(self) -> str:
        path = self.workdir / f"{self.kind}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGCONT)  # a test may have frozen it (SIGSTOP): it must see the TERM
            self.popen.terminate()
            self.popen.wait(15)

    def kill(self) -> None:
        """SIGKILL: no chance to save or say goodbye."""
        if self.popen and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(15)

@dataclass
class AllInOne:
    """A `manage.py gateway` process with its embedded broker (IOTGW_EMBEDDED_BROKER=kind) and in-memory layer."""

    env: dict[str, str]
    processes: ProcessGroup
    kind: str = "auto"
    web_port: int = field(default_factory=free_port)
    mqtt_port: int = field(default_factory=free_port)
    extra: tuple[str, ...] = ()
    proc: Process | None = None

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/dashboard/"

    @property
    def protocol(self) -> int:
        """The MQTT version its broker speaks at best: 5 (Mosquitto) or 4, i.e. 3.1.1 (amqtt)."""
        return mqtt.MQTTv311 if self.kind == "amqtt" else mqtt.MQTTv5

    @property
    def device_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}" + ("?protocol=3.1.1" if self.kind == "amqtt" else "")

    @property
    def state_dir(self) -> Path:
        return ROOT / "var" / f"mosquitto-{self.mqtt_port}"

    def start(self, *, ready: str = "/readyz") -> AllInOne:
        args = [sys.executable, "manage.py", "gateway", "--port", str(self.web_port),
                "--mqtt-port", str(self.mqtt_port), *self.extra]
        env = dict(self.env, IOTGW_EMBEDDED_BROKER=self.kind)
        self.proc = proc = self.processes.start("gateway", args, env)
        wait_until(lambda: http_get(self.web + ready)[0] == 200 or not proc.alive(), timeout=60, what="the gateway")
        assert proc.alive(), proc.output()
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def log(self) -> str:
        return self.proc.output() if self.proc else ""

    def wait_log(self, text: str, timeout: float = 15.0) -> str:
        """Wait until the gateway's output holds `text`; returns the output."""
        return wait_until(lambda: text in self.log() and self.log(), timeout=timeout, what=f"{text!r} in the log")
