"""Notifications through real processes: `manage.py notify` against the committed database and a real receiver."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter

import pytest
from django.test import Client

from notify.models import Attempt, Channel, Delivery, Subscription
from notify.services import enqueue
from notify.signing import new_secret, verify
from testing.processes import ROOT, AllInOne, stack_env
from testing.waiting import wait_until
from testing.webhook import Receiver

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

FAST = {"IOTGW_NOTIFY_INTERVAL": "0.2", "IOTGW_NOTIFY_RETRY_FIRST": "0.5", "IOTGW_NOTIFY_RETRY_MOST": "2",
        "IOTGW_NOTIFY_MAX_ATTEMPTS": "1000", "IOTGW_NOTIFY_TIMEOUT": "2", "IOTGW_NOTIFY_LEASE": "4"}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def sender_env(live_db, run_id):
    return dict(stack_env(database_url=live_db, redis_url=None, mqtt_url=None, run_id=run_id), **FAST)


def start_sender(processes, env, **extra):
    proc = processes.start("notify", [sys.executable, "manage.py", "notify"], dict(env, **extra))
    wait_until(lambda: "sender" in proc.output() or not proc.alive(), timeout=30, what="the sender")
    assert proc.alive(), proc.output()
    return proc


def hook_for(registry, url: str) -> Channel:
    channel = Channel.objects.create(name=f"hook-{registry.tag}", kind="webhook", target=url, secret=new_secret())
    Subscription.objects.create(channel=channel, user=registry.user("ops", staff=True))
    return channel


def alarm_events(count: int, keys: int = 3) -> None:
    for i in range(count):
        enqueue(key=f"alarm:{i % keys}", kind="raised" if i < keys else "retriggered", severity="major",
                title=f"event {i}", data={"n": i})


def all_sent() -> bool:
    return not Delivery.objects.filter(status="pending").exists()


def test_a_receiver_down_for_a_while_gets_every_notification_exactly_once_when_back(
        processes, sender_env, registry, receiver):
    channel = hook_for(registry, receiver.url)
    alarm_events(6)
    start_sender(processes, sender_env)
    # Down: the sender keeps trying (every first try and some retries fail), and events keep coming.
    wait_until(lambda: Attempt.objects.filter(ok=False).count() >= 9, timeout=30, what="failed tries while down")
    enqueue(key="alarm:new", kind="raised", severity="critical", title="while down")
    wait_until(lambda: Attempt.objects.filter(ok=False).values("delivery").distinct().count() >= 3, timeout=30)
    receiver.start()
    wait_until(all_sent, timeout=60, what="every delivery sent once the receiver is back")
    ids = [r.headers["x-iotgw-delivery"] for r in receiver.received]
    expected = {str(pk) for pk in Delivery.objects.values_list("pk", flat=True)}
    assert len(expected) == 7
    assert Counter(ids) == Counter(expected), "every notification exactly once: no loss, no duplicate"
    for r in receiver.received:
        assert verify(channel.secret, timestamp=r.headers["x-iotgw-timestamp"], body=r.body,
                      header=r.headers["x-iotgw-signature"], now=time.time())
    per_key: dict[str, list[int]] = {}
    for body in receiver.bodies():
        per_key.setdefault(body["event"]["key"], []).append(body["event"]["data"]["n"] if body["event"]["data"]
                                                           else -1)
    assert all(ns == sorted(ns) for ns in per_key.values()), "each alarm's notifications in order"


def test_the_status_check_answers_while_a_sender_runs_and_metrics_count_it(processes, sender_env, live_db):
    def status() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "manage.py", "notify", "--status"], env=sender_env,
                              capture_output=True, text=True, timeout=60)

    assert status().returncode == 1
    start_sender(processes, sender_env)
    wait_until(lambda: status().returncode == 0, timeout=30, what="the sender's heartbeat")
    assert "iotgw_notify_senders_live 1.0" in Client().get("/metrics").content.decode()


def test_killing_the_sender_mid_send_loses_nothing(processes, sender_env, registry, receiver):
    receiver.delay = 0.4  # slow answers: the sender is mid-send when it is killed
    receiver.start()
    hook_for(registry, receiver.url)
    alarm_events(12, keys=12)
    first = start_sender(processes, sender_env, IOTGW_NOTIFY_CONCURRENCY="3")
    wait_until(lambda: len(receiver.received) >= 4, timeout=30, what="some notifications out")
    first.kill()  # SIGKILL, with sends in flight
    assert Delivery.objects.filter(status="pending").exclude(lease_owner="").exists(), "claimed, never finished"
    start_sender(processes, sender_env, IOTGW_NOTIFY_CONCURRENCY="3")
    wait_until(all_sent, timeout=60, what="the second sender finishing the job")
    received = Counter(r.headers["x-iotgw-delivery"] for r in receiver.received)
    assert set(received) == {str(pk) for pk in Delivery.objects.values_list("pk", flat=True)}
    assert Delivery.objects.filter(status="sent").count() == 12
    # At-least-once: only a send in flight when the sender died may have been received twice.
    assert sum(n - 1 for n in received.values()) <= 3


def test_email_goes_out_through_the_filebased_backend(processes, sender_env, registry, tmp_path):
    channel = Channel.objects.create(name=f"mail-{registry.tag}", kind="email", target="oncall@example.test")
    Subscription.objects.create(channel=channel, user=registry.user("ops", staff=True))
    enqueue(key="alarm:9", kind="raised", severity="critical", title="pump stopped", body="pressure 0.1 bar")
    start_sender(processes, sender_env, DJANGO_EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
                 DJANGO_EMAIL_FILE_PATH=str(tmp_path), DJANGO_DEFAULT_FROM_EMAIL="iotgw@example.test")
    wait_until(all_sent, timeout=30, what="the e-mail sent")
    (mail,) = [p.read_text() for p in tmp_path.iterdir()]
    assert "Subject: [critical] raised: pump stopped" in mail and "To: oncall@example.test" in mail
    assert "From: iotgw@example.test" in mail and "pressure 0.1 bar" in mail


def test_the_all_in_one_gateway_runs_the_sender(processes, sender_env, registry, receiver):
    receiver.start()
    hook_for(registry, receiver.url)
    gateway = AllInOne(env=sender_env, processes=processes).start()
    try:
        enqueue(key="alarm:1", kind="raised", severity="major", title="from the gateway")
        wait_until(lambda: receiver.bodies(), timeout=30, what="the gateway's sender")
        assert receiver.bodies()[0]["event"]["title"] == "from the gateway"
    finally:
        gateway.stop()
        shutil.rmtree(ROOT / "var" / f"mosquitto-{gateway.mqtt_port}", ignore_errors=True)
