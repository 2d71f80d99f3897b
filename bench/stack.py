"""The system under test: its database, an optional private broker, Redis behind Sentinel, web and bridge processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from testing.http import http_get
from testing.processes import PrivateService, Process, drop_bridge_sessions, free_port, wait_bridge_connected
from testing.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MASTER = "iotgw"  # the Redis master's name at the sentinels, as in compose.yaml


def ensure_database(server_url: str, name: str) -> None:
    """Create the bench database on the PostgreSQL server if it is not there yet."""
    import psycopg

    with psycopg.connect(server_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def migrate(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True)
    # Today's partitions exist before the naive bridge (plain ORM inserts) writes into them.
    subprocess.run([sys.executable, "manage.py", "telemetry_maintenance"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def deployed_broker_limits() -> list[str]:
    """The queue, in-flight and TCP settings the project deploys Mosquitto with (compose/mosquitto.conf)."""
    conf = ROOT / "compose" / "mosquitto.conf"
    if not conf.exists():
        return []
    keys = ("max_queued", "max_inflight", "set_tcp_nodelay")
    return [line.strip() for line in conf.read_text().splitlines() if line.startswith(keys)]


class PrivateBroker:
    """The system's Mosquitto binary on a free port with the deployed limits: isolated from other users."""

    def __init__(self, logdir: Path) -> None:
        self.limits = deployed_broker_limits()
        self._service = PrivateService("mosquitto", logdir / "mosquitto", mosquitto=["persistence false", *self.limits])
        self._service.start()
        self.port = self._service.port

    @property
    def url(self) -> str:
        return self._service.url

    @property
    def popen(self) -> subprocess.Popen:
        """The broker's process (the monitor measures its CPU and memory)."""
        assert self._service.popen is not None
        return self._service.popen

    def stop(self) -> None:
        self._service.stop()


class BenchStack:
    """Starts and stops gateway processes for one scenario; logs in bench/results/logs/."""

    def __init__(self, env: dict[str, str], logdir: Path, label: str) -> None:
        self.env = env
        self.logdir = logdir
        self.label = label
        self.procs: list[Process] = []
        self.web_ports: list[int] = []
        self.bridge_envs: list[dict[str, str]] = []

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> Process:
        proc = Process(name, args, env, self.logdir / f"{self.label}-{name}-{len(self.procs)}.log").start()
        self.procs.append(proc)
        return proc

    def start_web(self, port: int | None = None) -> Process:
        """A Daphne on a free port, or again on `port` (a restart: its URL stays in `ws_urls` once)."""
        again = port is not None
        port = port if port is not None else free_port()
        daphne = str(Path(sys.executable).with_name("daphne"))
        proc = self._start("web", [daphne, "-b", "127.0.0.1", "-p", str(port), "iotgw.asgi:application"], self.env)
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200 or not proc.alive(), timeout=30,
                   what="daphne")
        assert proc.alive(), proc.output()
        if not again:
            self.web_ports.append(port)
        return proc

    def start_bridge(self, client_id: str) -> Process:
        env = dict(self.env, MQTT_CLIENT_ID=client_id)
        proc = self._start("bridge", [sys.executable, "manage.py", "runworker", "mqtt-bridge"], env)
        self.bridge_envs.append(env)
        wait_bridge_connected(client_id, proc)
        return proc

    def start_naive(self) -> Process:
        env = dict(self.env, MQTT_CLIENT_ID=f"{self.env['MQTT_CLIENT_ID']}-naive")
        proc = self._start("naive", [sys.executable, "-m", "bench.naive"], env)
        wait_until(lambda: "naive bridge ready" in proc.output() or not proc.alive(), timeout=30, what="naive bridge")
        assert proc.alive(), proc.output()
        return proc

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{p}/ws/dashboard/" for p in self.web_ports]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.alive():
                proc.kill(signal.SIGTERM)
        time.sleep(0.2)
        for proc in self.procs:
            proc.kill()
        for env in self.bridge_envs:
            drop_bridge_sessions(env["MQTT_URL"], env)


class SentinelRedis:
    """A Redis master, its replica and `count` sentinels (a majority decides) on free ports of their own."""

    def __init__(self, workdir: Path, *, count: int = 3, down_after_ms: int = 2000) -> None:
        self.down_after_ms = down_after_ms
        self.master = PrivateService("redis", workdir / "master")
        self.replica: PrivateService | None = None
        self.sentinels: list[PrivateService] = []
        try:
            self.master.start()
            self.replica = PrivateService("redis", workdir / "replica", redis=[
                f"replicaof 127.0.0.1 {self.master.port}", "replica-serve-stale-data no"]).start()
            for i in range(count):
                self.sentinels.append(PrivateService("sentinel", workdir / f"sentinel{i + 1}", redis=[
                    f"sentinel monitor {MASTER} 127.0.0.1 {self.master.port} {count // 2 + 1}",
                    f"sentinel down-after-milliseconds {MASTER} {down_after_ms}",
                    f"sentinel failover-timeout {MASTER} 10000", f"sentinel parallel-syncs {MASTER} 1"]).start())
            wait_until(self._watching, timeout=40, what="sentinels watching the master, its replica and each other")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(f'127.0.0.1:{s.port}' for s in self.sentinels)}/{MASTER}/0"

    def _ask(self, sentinel: PrivateService, *command: str) -> Any:
        client = redis.Redis(port=sentinel.port, socket_timeout=2, decode_responses=True)
        try:
            return client.execute_command(*command)
        except redis.RedisError:
            return None
        finally:
            client.close()

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            address = self._ask(sentinel, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
            if address:
                return int(address[1])
        return None

    def _watching(self) -> bool:
        for s in self.sentinels:
            if len(self._ask(s, "SENTINEL", "SENTINELS", MASTER) or []) < len(self.sentinels) - 1:
                return False
            if not self._ask(s, "SENTINEL", "REPLICAS", MASTER):
                return False
        return self.master_port() == self.master.port

    def current_master(self) -> PrivateService:
        port = self.master_port()
        return next(s for s in (self.master, self.replica) if s is not None and s.port == port)

    def stop(self) -> None:
        for service in (*self.sentinels, self.replica, self.master):
            if service is not None:
                service.stop()
