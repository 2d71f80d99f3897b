"""The outbox in-process against a real webhook receiver on a real socket: fan-out, retries, order, signatures."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core import mail
from django.utils import timezone

from devices.services.devices import device_register
from notify.models import Attempt, Channel, Counter, Delivery
from notify.services import delivery_claim, enqueue
from notify.signing import verify
from testing.waiting import wait_until
from testing.webhook import Receiver
from tests.notify.helpers import drain, subscribe, webhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def ops(db):
    return User.objects.create_user("ops", is_staff=True)


def raise_(key: str, severity: str = "major", device_id: str = "", kind: str = "raised", **kw):
    return enqueue(key=key, kind=kind, severity=severity, device_id=device_id, title=f"{key} {kind}",
                   body="temperature 81 > 80", data={"value": 81}, **kw)


def test_two_subscriptions_on_one_channel_make_one_delivery_per_event(receiver, ops):
    hook = webhook(receiver.url)
    subscribe(hook, ops)
    subscribe(hook, ops, min_severity="info")
    event = raise_("alarm:1")
    assert Delivery.objects.filter(event=event).count() == 1


def test_severity_below_the_minimum_is_not_sent(receiver, ops):
    subscribe(webhook(receiver.url), ops, min_severity="major")
    assert not Delivery.objects.filter(event=raise_("alarm:1", severity="minor")).exists()
    assert Delivery.objects.filter(event=raise_("alarm:2", severity="critical")).exists()


def test_device_sets_and_visibility_choose_the_subscriptions(receiver, ops):
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    lab = Group.objects.create(name="lab")
    mine, _ = device_register(device_id="mine", owner=alice)
    shared, _ = device_register(device_id="shared", owner=bob, groups=["lab"])
    alice.groups.add(lab)
    for_alice, for_bob = webhook(receiver.url, "alice"), webhook(receiver.url, "bob")
    by_list, by_group = webhook(receiver.url, "list"), webhook(receiver.url, "group")
    subscribe(for_alice, alice)
    subscribe(for_bob, bob)
    subscribe(by_list, ops, scope="devices").devices.add(mine)
    subscribe(by_group, ops, scope="group", device_group=lab)

    def channels(device_id: str) -> set[str]:
        event = raise_(f"alarm:{device_id}", device_id=device_id)
        return set(Delivery.objects.filter(event=event).values_list("channel__name", flat=True))

    assert channels("mine") == {"alice", "list"}  # bob may not see alice's device
    assert channels("shared") == {"alice", "bob", "group"}


def test_an_event_sends_what_was_committed_whatever_the_subscription_says_later(receiver, ops):
    sub = subscribe(webhook(receiver.url), ops)
    raise_("alarm:1")
    sub.delete()
    receiver.start()
    assert drain() == 1
    assert receiver.bodies()[0]["event"]["key"] == "alarm:1"


def test_a_receiver_down_then_back_gets_every_notification_once_in_order_and_signed(receiver, ops):
    hook = webhook(receiver.url)
    subscribe(hook, ops)
    raise_("alarm:a")
    raise_("alarm:b")
    raise_("alarm:a", kind="cleared")
    # Nothing listens: every try fails, is logged, and is tried again after its back-off (0.05-0.2 s here).
    wait_until(lambda: drain() is not None and Attempt.objects.filter(ok=False).count() >= 4, timeout=10)
    assert Attempt.objects.exclude(error="").filter(error__contains="Connection").exists()
    # The later event of a key waits while the earlier one is still pending: never tried yet.
    cleared = Delivery.objects.get(event__kind="cleared")
    assert cleared.attempts == 0
    receiver.start()
    wait_until(lambda: drain() is not None and not Delivery.objects.filter(status="pending").exists(), timeout=15,
               what="every delivery sent")
    ids = [r.headers["x-iotgw-delivery"] for r in receiver.received]
    assert sorted(ids) == sorted(str(pk) for pk in Delivery.objects.values_list("pk", flat=True))
    assert len(ids) == len(set(ids)) == 3  # no duplicates at all
    keys = [(b["event"]["key"], b["event"]["kind"]) for b in receiver.bodies()]
    assert keys.index(("alarm:a", "raised")) < keys.index(("alarm:a", "cleared"))
    for r in receiver.received:
        assert verify(hook.secret, timestamp=r.headers["x-iotgw-timestamp"], body=r.body,
                      header=r.headers["x-iotgw-signature"], now=time.time())
        assert not verify("another secret", timestamp=r.headers["x-iotgw-timestamp"], body=r.body,
                          header=r.headers["x-iotgw-signature"], now=time.time())
    counts = Counter.objects.get(kind="webhook")
    assert counts.sent == 3 and counts.retried >= 3 and counts.failed == 0


def test_retries_are_capped_then_the_delivery_fails_with_its_log(receiver, ops):
    receiver.status = 503
    receiver.start()
    subscribe(webhook(receiver.url), ops)
    raise_("alarm:1")
    finish = {"max_attempts": 3, "retry_first": 0.01, "retry_most": 0.01}
    wait_until(lambda: drain(finish=finish) is not None and Delivery.objects.get().status == "failed", timeout=10)
    delivery = Delivery.objects.get()
    assert delivery.attempts == 3 and delivery.status_code == 503
    assert [a.status_code for a in delivery.log.all()] == [503, 503, 503]
    assert all(a.latency_ms > 0 for a in delivery.log.all())
    assert Counter.objects.get(kind="webhook").failed == 1


def test_a_client_error_is_not_retried(receiver, ops):
    receiver.status = 400
    receiver.start()
    subscribe(webhook(receiver.url), ops)
    raise_("alarm:1")
    drain()
    delivery = Delivery.objects.get()
    assert delivery.status == "failed" and delivery.attempts == 1 and delivery.error == "HTTP 400"


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_runs_out(receiver, ops):
    subscribe(webhook(receiver.url), ops)
    raise_("alarm:1")
    assert len(delivery_claim(owner="one", lease=30)) == 1
    assert delivery_claim(owner="two", lease=30) == []
    Delivery.objects.update(lease_until=timezone.now() - timedelta(seconds=1))  # "one" died mid-send
    assert len(delivery_claim(owner="two", lease=30)) == 1


def test_email_goes_through_djangos_mail_backend(ops, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    subscribe(Channel.objects.create(name="mail", kind="email", target="a@example.test, b@example.test"), ops)
    raise_("alarm:1", severity="critical")
    assert drain() == 1
    (message,) = mail.outbox
    assert message.to == ["a@example.test", "b@example.test"]
    assert message.subject == "[critical] raised: alarm:1 raised"
    assert "temperature 81 > 80" in message.body
    assert message.extra_headers["X-Iotgw-Delivery"] == str(Delivery.objects.get().pk)


def test_apprise_sends_through_its_own_json_plugin_to_the_receiver(receiver, ops):
    receiver.start()
    target = f"json://127.0.0.1:{receiver.port}/apprise"
    subscribe(Channel.objects.create(name="chat", kind="apprise", target=target), ops)
    raise_("alarm:1", severity="critical")
    assert drain() == 1
    (request,) = receiver.received
    body = request.json()
    assert request.path == "/apprise" and body["title"] == "[critical] raised: alarm:1 raised"
    assert "temperature 81 > 80" in body["message"] and body["type"] == "failure"
    assert Delivery.objects.get().status == "sent"


def test_apprise_reports_an_unreachable_service_as_a_failed_try(receiver, ops):
    subscribe(Channel.objects.create(name="chat", kind="apprise", target=f"json://127.0.0.1:{receiver.port}/"), ops)
    raise_("alarm:1")
    drain(finish={"max_attempts": 5, "retry_first": 60, "retry_most": 60})
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1 and delivery.error


def test_old_notifications_are_pruned_but_not_pending_ones(receiver, ops):
    from notify.models import Event
    from notify.services import outbox_prune

    subscribe(webhook(receiver.url), ops)
    old = timezone.now() - timedelta(days=40)
    sent, waiting, unmatched = raise_("alarm:1", at=old), raise_("alarm:2", at=old), raise_("x", severity="info",
                                                                                            at=old)
    raise_("alarm:1", kind="cleared", at=old)
    receiver.start()
    Delivery.objects.filter(event=waiting).update(next_attempt_at=timezone.now() + timedelta(hours=1))
    drain()
    assert outbox_prune(keep_days=30) == 3  # the raise and clear of alarm:1 (sent), the event nobody heard
    assert list(Event.objects.values_list("key", flat=True)) == ["alarm:2"]
    assert not Delivery.objects.filter(event=sent).exists() and Delivery.objects.filter(event=waiting).exists()
    assert unmatched.pk not in Event.objects.values_list("pk", flat=True)
