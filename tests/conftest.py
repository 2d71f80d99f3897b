"""Shared fixtures: real services, real processes (Daphne, the bridge, the gateway), real clients."""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connections

from testing.processes import (
    ROOT,
    TEST_SECRET_KEY,
    PrivateService,
    ProcessGroup,
    Stack,
    database_url,
    drop_sessions,
    stack_env,
)
from testing.registry import Registry

(ROOT / "var").mkdir(exist_ok=True)

REQUIRE_SERVICES = os.environ.get("IOTGW_REQUIRE_SERVICES", "") not in ("", "0")

# The test process runs an event loop per async test, and their worker threads end without closing their
# Django connection: a pool counts each such connection as checked out for good, and in a whole-suite run
# it ran dry (every later test waited its 10 s for a connection and failed). Plain connections close
# when their thread goes. The processes under test (Daphne, bridges) keep the pool, as deployed.
settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(service: str, host: str, port: int) -> None:
    """Skip (or, with IOTGW_REQUIRE_SERVICES=1, fail) when a service is not reachable."""
    if _reachable(host, port):
        return
    message = f"{service} is not reachable on {host}:{port}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and IOTGW_REQUIRE_SERVICES is set")
    pytest.skip(message)


def need_binary(name: str) -> None:
    """Skip (or, with IOTGW_REQUIRE_SERVICES=1, fail) when a server binary a test starts itself is missing."""
    if shutil.which(name) is not None:
        return
    message = f"{name} binary not installed"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and IOTGW_REQUIRE_SERVICES is set")
    pytest.skip(message)


DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def need_dynsec() -> None:
    """Skip (or, with IOTGW_REQUIRE_SERVICES=1, fail) without Mosquitto's dynamic-security plugin and mosquitto_ctrl."""
    need_binary("mosquitto")
    need_binary("mosquitto_ctrl")
    if os.path.exists(DYNSEC_PLUGIN):
        return
    message = f"Mosquitto's dynamic-security plugin is not installed at {DYNSEC_PLUGIN}"
    if REQUIRE_SERVICES:
        pytest.fail(message + " and IOTGW_REQUIRE_SERVICES is set")
    pytest.skip(message)


@pytest.fixture(scope="session", autouse=True)
def same_secret_key():
    """Sessions and signatures made here are valid in the processes tests start (stack_env)."""
    settings.SECRET_KEY = TEST_SECRET_KEY


@pytest.fixture(scope="session", autouse=True)
def static_files():
    """collectstatic once, as a deployment does: the processes tests start run with DEBUG off (whitenoise
    then serves STATIC_ROOT only)."""
    call_command("collectstatic", "--noinput", verbosity=0)


@pytest.fixture
def private_broker(tmp_path):
    """A Mosquitto of the test's own (queues up to 100000 for an absent client) that a test may stop,
    restart or freeze; stopped after the test."""
    need_binary("mosquitto")
    service = PrivateService("mosquitto", tmp_path / "mosquitto").start()
    yield service
    service.stop()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, emptied of stray sessions before it is dropped.

    Connections that worker threads of async tests opened (and pooled ones they
    handed back) would otherwise keep it open, and the drop fails with
    "being accessed by other users".
    """
    yield
    with django_db_blocker.unblock():
        connection = connections["default"]
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        connection.close()
        if getattr(connection, "pool", None) is not None:
            connection.close_pool()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    need("Redis", "127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))
    return url


@pytest.fixture
def mqtt_url() -> str:
    url = os.environ.get("TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
    need("Mosquitto", "127.0.0.1", int(url.rsplit(":", 1)[1]))
    return url


@pytest.fixture
def live_db(transactional_db) -> str:
    """The test database, committed and reachable by subprocesses; returns its DATABASE_URL."""
    yield database_url(settings.DATABASES["default"])
    # Async tests reach the ORM through asgiref's one sync thread: close its connection too,
    # or the test database cannot be dropped at the end.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def processes(request):
    """Starts gateway processes for a test and stops them after it, keeping their logs."""
    group = ProcessGroup(request.node.name)
    yield group
    group.stop_all()


@pytest.fixture
def stack(live_db, redis_url, mqtt_url, processes, run_id):
    """Env for a split deployment against the real services: web and bridge processes share it."""
    env = stack_env(database_url=live_db, redis_url=redis_url, mqtt_url=mqtt_url, run_id=run_id)
    stack = Stack(env=env, processes=processes, mqtt_url=mqtt_url)
    yield stack
    processes.stop_all()
    drop_sessions(stack.env["MQTT_URL"], stack.client_ids)


@pytest.fixture
def registry(live_db):
    """Creates users, tokens and devices with unique ids in the committed test database."""
    return Registry()


@pytest.fixture
def people(registry):
    """Alice owns `a1` and shares group lab with Bob's `blab`; Bob owns `bown`; ops is staff.

    Returns ({name: (device id, secret)}, {name: token}, registry).
    """
    alice, bob, ops = registry.user("alice"), registry.user("bob"), registry.user("ops", staff=True)
    lab = f"lab-{registry.tag}"
    alice.groups.add(Group.objects.get_or_create(name=lab)[0])
    devices = {
        "a1": registry.device("a1", owner=alice),
        "blab": registry.device("blab", owner=bob, groups=[lab]),
        "bown": registry.device("bown", owner=bob),
    }
    tokens = {name: registry.token(u) for name, u in (("alice", alice), ("bob", bob), ("ops", ops))}
    return devices, tokens, registry
