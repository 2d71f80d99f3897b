"""The bridge's asyncio MQTT client against a real, private Mosquitto (stopped, restarted, frozen by tests)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest

from bridge.mqtt.client import MqttClient, PublishRefused
from bridge.mqtt.codec import Raw, Will
from core.broker import BrokerConfig
from testing.waiting import wait_until

pytestmark = pytest.mark.services


class Probe:
    """Records what a client reports; tests wait on it with deadlines."""

    def __init__(self) -> None:
        self.raws: list[Raw] = []
        self.connects: list[bool] = []
        self.disconnects: list[str] = []
        self._changed = asyncio.Event()

    def on_messages(self, raws: list[Raw]) -> None:
        self.raws += raws
        self._changed.set()

    def on_connect(self, session_present: bool) -> None:
        self.connects.append(session_present)
        self._changed.set()

    def on_disconnect(self, why: str) -> None:
        self.disconnects.append(why)
        self._changed.set()

    def payloads(self) -> list[bytes]:
        return [raw.payload for raw in self.raws]

    async def until(self, predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}") from None


def make_client(url: str, probe: Probe, *, client_id: str, **kwargs) -> MqttClient:
    client = MqttClient(BrokerConfig.from_url(url), client_id=client_id, on_messages=probe.on_messages,
                        subscriptions=[("t/#", 1)], session_expiry=300, receive_maximum=100, **kwargs)
    client.on_connect = probe.on_connect
    client.on_disconnect = probe.on_disconnect
    client.start()
    return client


def paho_client(url: str, *, v5: bool = True) -> mqtt.Client:
    config = BrokerConfig.from_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"paho-{uuid.uuid4().hex[:6]}",
                         protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311)
    client.connect(config.host, config.port)
    client.loop_start()
    return client


async def paho_publish(client: mqtt.Client, topic: str, payload: bytes, qos: int = 1) -> None:
    info = client.publish(topic, payload, qos=qos)
    await asyncio.to_thread(info.wait_for_publish, 10)
    assert info.is_published()


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_receives_qos1_from_a_paho_publisher_on_v5_and_v311(private_broker, protocol):
    url = private_broker.url + ("?protocol=3.1.1" if protocol == "3.1.1" else "")
    probe = Probe()
    client = make_client(url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    await probe.until(lambda: probe.connects, what="CONNACK")
    await asyncio.to_thread(_subscribed_barrier, url, protocol)
    publisher = paho_client(url, v5=protocol == "5")
    try:
        await paho_publish(publisher, "t/a", b"hello")
        await probe.until(lambda: probe.payloads() == [b"hello"], what="the message")
        [raw] = probe.raws
        assert (raw.topic, raw.qos, raw.generation) == ("t/a", 1, client.generation)
        assert raw.mid > 0
    finally:
        close(publisher)
        await client.stop()


def _subscribed_barrier(url: str, protocol: str) -> None:
    """A round trip through the broker, so it has processed the client's SUBSCRIBE sent before it."""
    probe = paho_client(url, v5=protocol == "5")
    probe.publish("barrier/x", b"", qos=1).wait_for_publish(10)
    close(probe)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_unacked_message_is_redelivered_after_reconnect_and_acked_one_is_not(private_broker, protocol):
    url = private_broker.url + ("?protocol=3.1.1" if protocol == "3.1.1" else "")
    client_id = f"br-{uuid.uuid4().hex[:6]}"
    probe = Probe()
    client = make_client(url, probe, client_id=client_id)
    await probe.until(lambda: probe.connects, what="CONNACK")
    await asyncio.to_thread(_subscribed_barrier, url, protocol)
    publisher = paho_client(url, v5=protocol == "5")
    try:
        await paho_publish(publisher, "t/acked", b"acked")
        await paho_publish(publisher, "t/unacked", b"unacked")
        await probe.until(lambda: len(probe.raws) == 2, what="both messages")
        client.ack([r for r in probe.raws if r.payload == b"acked"])
        await client.stop()  # DISCONNECT: the session, with the unacked message, stays

        again = Probe()
        client = make_client(url, again, client_id=client_id)
        await again.until(lambda: again.connects, what="reconnect")
        assert again.connects == [True], "session present"
        await again.until(lambda: again.raws, what="redelivery")
        await paho_publish(publisher, "t/after", b"after")  # the stream carries on behind the redelivery
        await again.until(lambda: b"after" in again.payloads(), what="a later message")
        assert again.payloads() == [b"unacked", b"after"]
    finally:
        close(publisher)
        await client.stop()


async def test_ack_of_an_older_connection_is_not_sent_on_the_new_one(private_broker):
    client_id = f"br-{uuid.uuid4().hex[:6]}"
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=client_id)
    await probe.until(lambda: probe.connects)
    await asyncio.to_thread(_subscribed_barrier, private_broker.url, "5")
    publisher = paho_client(private_broker.url)
    try:
        await paho_publish(publisher, "t/x", b"first")
        await probe.until(lambda: probe.raws)
        old = list(probe.raws)
        client._conn.transport.abort()  # the connection dies under the client
        await probe.until(lambda: len(probe.connects) == 2, what="the reconnect")
        await probe.until(lambda: len(probe.raws) == 2, what="the redelivery")
        assert probe.raws[1].generation == old[0].generation + 1
        client.ack(old)  # too late: must not ack anything on the new connection
        await client.stop()

        again = Probe()
        client = make_client(private_broker.url, again, client_id=client_id)
        await again.until(lambda: again.raws, what="second redelivery")
        assert again.payloads() == [b"first"]
    finally:
        close(publisher)
        await client.stop()


async def test_publish_waits_for_the_puback_and_carries_v5_properties(private_broker):
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    await probe.until(lambda: probe.connects)
    got: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    device = paho_client(private_broker.url)
    subscribed = asyncio.Event()
    device.on_subscribe = lambda *_a: loop.call_soon_threadsafe(subscribed.set)
    device.on_message = lambda _c, _u, msg: loop.call_soon_threadsafe(got.put_nowait, msg)
    device.subscribe("cmd/#", qos=1)
    try:
        async with asyncio.timeout(10):
            await subscribed.wait()
            await client.publish("cmd/d1", b"reboot", qos=1, response_topic="cmd/d1/response",
                                 correlation_data=b"id-1")
            assert not client._inflight, "publish returned before its PUBACK was handled"
            msg = await got.get()
        assert (msg.topic, msg.payload, msg.qos) == ("cmd/d1", b"reboot", 1)
        assert msg.properties.ResponseTopic == "cmd/d1/response"
        assert msg.properties.CorrelationData == b"id-1"
    finally:
        close(device)
        await client.stop()


async def test_publish_while_disconnected_raises_connection_error():
    probe = Probe()
    client = make_client("mqtt://127.0.0.1:9", probe, client_id="nobody")  # nothing listens on port 9
    try:
        with pytest.raises(ConnectionError):
            await client.publish("t/x", b"x")
    finally:
        await client.stop()


async def test_reconnects_and_resubscribes_after_the_broker_restarts(private_broker):
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await probe.until(lambda: probe.connects)
        private_broker.stop()
        await probe.until(lambda: probe.disconnects, what="the loss")
        assert not client.connected
        private_broker.start()
        await probe.until(lambda: len(probe.connects) == 2, timeout=15, what="the reconnect")
        await asyncio.to_thread(_subscribed_barrier, private_broker.url, "5")
        publisher = paho_client(private_broker.url)
        await paho_publish(publisher, "t/back", b"back")
        close(publisher)
        await probe.until(lambda: b"back" in probe.payloads(), what="a message after the restart")
        await client.publish("t/own", b"own")  # publishes work again too
    finally:
        await client.stop()


async def test_missing_pingresp_from_a_frozen_broker_triggers_a_reconnect(private_broker):
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}", keepalive=1,
                         connect_timeout=1)
    try:
        await probe.until(lambda: probe.connects)
        os.kill(private_broker.popen.pid, signal.SIGSTOP)  # the socket stays open; nothing answers
        try:
            await probe.until(lambda: probe.disconnects, timeout=6, what="keepalive to notice")
        finally:
            os.kill(private_broker.popen.pid, signal.SIGCONT)
        await probe.until(lambda: client.connected, timeout=15, what="the reconnect")
    finally:
        await client.stop()


def _configured(broker, extra: str):
    """Restart the private broker with `extra` appended to its configuration."""
    broker.stop()
    conf = broker.workdir / "mosquitto.conf"
    conf.write_text(conf.read_text() + extra)
    return broker.start()


async def _logged(caplog, text: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not any(text in r.getMessage() for r in caplog.records):
            await asyncio.sleep(0.05)


async def test_refused_connection_is_logged_with_its_reason(private_broker, caplog):
    _configured(private_broker, "password_file /dev/null\n")  # no user may log in
    caplog.set_level("ERROR", logger="iotgw.bridge")
    probe = Probe()
    client = make_client(private_broker.url.replace("mqtt://", "mqtt://nobody:pw@"), probe, client_id="refused")
    try:
        await _logged(caplog, "broker refused the connection")
        assert any("0x86" in r.getMessage() or "0x87" in r.getMessage() for r in caplog.records), caplog.text
        assert not client.connected and not probe.connects
    finally:
        await client.stop()


async def test_publishes_in_flight_stay_within_the_brokers_receive_maximum(private_broker):
    _configured(private_broker, "max_inflight_messages 3\n")  # Mosquitto advertises it as Receive Maximum
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    peak = 0
    allocate = client._allocate

    def counting() -> int:
        nonlocal peak
        mid = allocate()
        peak = max(peak, len(client._inflight) + 1)
        return mid

    client._allocate = counting
    try:
        await probe.until(lambda: probe.connects)
        async with asyncio.timeout(10):
            await asyncio.gather(*(client.publish(f"t/{i}", b"x") for i in range(20)))
        assert peak == 3 and len(probe.connects) == 1 and not probe.disconnects
    finally:
        await client.stop()


@pytest.fixture
def dynsec_broker(tmp_path):
    """A private Mosquitto with dynamic security and a client `plain` (no role: may not subscribe or publish)."""
    from testing.processes import PrivateService

    plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
    if not os.path.exists(plugin) or not shutil.which("mosquitto_ctrl"):
        pytest.skip("mosquitto with the dynamic-security plugin is not installed")
    state = tmp_path / "dynsec.json"
    subprocess.run(["mosquitto_ctrl", "dynsec", "init", str(state), "admin", "pw"], check=True, capture_output=True)
    service = PrivateService("mosquitto", tmp_path / "mosquitto")
    (service.workdir / "mosquitto.conf").write_text(
        f"listener {service.port} 127.0.0.1\nallow_anonymous false\nplugin {plugin}\nplugin_opt_config_file {state}\n"
        # Started as root, mosquitto would drop to its own user, which cannot read pytest's tmp_path.
        + ("user root\n" if os.geteuid() == 0 else ""))
    service.start()
    subprocess.run(["mosquitto_ctrl", "-h", "127.0.0.1", "-p", str(service.port), "-u", "admin", "-P", "pw",
                    "dynsec", "createClient", "plain", "-p", "pw"], check=True, capture_output=True, timeout=10)
    yield service
    service.stop()


async def test_refused_subscription_is_logged_loudly(dynsec_broker, caplog):
    caplog.set_level("INFO", logger="iotgw.bridge")
    probe = Probe()
    url = dynsec_broker.url.replace("mqtt://", "mqtt://plain:pw@")
    client = make_client(url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await _logged(caplog, "REFUSED the subscription to t/#")
        assert "0x87 not authorized" in caplog.text
    finally:
        await client.stop()


async def test_publish_refused_by_a_v5_puback_raises(dynsec_broker):
    probe = Probe()
    url = dynsec_broker.url.replace("mqtt://", "mqtt://plain:pw@")
    client = make_client(url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await probe.until(lambda: probe.connects)
        with pytest.raises(PublishRefused) as refused:
            async with asyncio.timeout(10):
                await client.publish("t/x", b"x", qos=1)
        assert refused.value.reason == 0x87 and isinstance(refused.value, ConnectionError)
        assert client.connected
    finally:
        await client.stop()


async def test_mosquitto_honours_the_maximum_packet_size_the_bridge_advertises(private_broker):
    """Mosquitto drops for the bridge what is over its limit (and acks the publisher); the rest arrives, in order."""
    _configured(private_broker, "log_type all\n")
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}", max_packet_size=2048)
    await probe.until(lambda: probe.connects, what="CONNACK")
    await asyncio.to_thread(_subscribed_barrier, private_broker.url, "5")
    publisher = paho_client(private_broker.url)
    # On t/x, a payload of 2038 bytes makes a remaining length of 2046: 2048 bytes as Mosquitto 2.0.11 counts
    # (without the packet-type byte), the largest it lets through.
    sizes = [10, 5000, 20, 2039, 2038, 300_000, 30]
    try:
        for n, size in enumerate(sizes):
            await paho_publish(publisher, "t/x", bytes([n]) * size)
        await probe.until(lambda: probe.raws and probe.raws[-1].payload[:1] == bytes([6]), what="the last message")
        assert [len(raw.payload) for raw in probe.raws] == [10, 20, 2038, 30]
        assert private_broker.log.count("Dropping too large outgoing PUBLISH") == 3
        assert client.peak_buffered <= 2048 + 5
        assert len(probe.connects) == 1 and not probe.disconnects
    finally:
        close(publisher)
        await client.stop()


async def test_publish_over_the_brokers_maximum_packet_size_is_refused_and_the_connection_stays(private_broker):
    _configured(private_broker, "max_packet_size 1000\n")  # Mosquitto advertises it in CONNACK
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await probe.until(lambda: probe.connects)
        with pytest.raises(PublishRefused) as refused:
            async with asyncio.timeout(10):
                await client.publish("t/big", b"x" * 2000)
        assert refused.value.reason == 0x95
        async with asyncio.timeout(10):
            await client.publish("t/small", b"x" * 100)
        await probe.until(lambda: probe.payloads() == [b"x" * 100], what="the small one back")
        assert len(probe.connects) == 1 and not probe.disconnects
    finally:
        await client.stop()


async def test_qos1_publish_to_a_broker_allowing_qos0_only_is_refused_not_sent(private_broker):
    _configured(private_broker, "max_qos 0\n")
    probe = Probe()
    client = make_client(private_broker.url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await probe.until(lambda: probe.connects)
        with pytest.raises(PublishRefused) as refused:
            async with asyncio.timeout(10):
                await client.publish("t/x", b"x", qos=1)
        assert refused.value.reason == 0x9B
        await client.publish("t/x", b"x", qos=0)
        await probe.until(lambda: probe.payloads() == [b"x"], what="the QoS 0 one back")
        assert len(probe.connects) == 1 and not probe.disconnects
    finally:
        await client.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_the_broker_publishes_the_will_asked_for_at_each_connect_when_the_connection_drops(
        private_broker, protocol):
    url = private_broker.url + ("?protocol=3.1.1" if protocol == "3.1.1" else "")
    wills: list[Will] = []

    def will() -> Will:
        wills.append(Will(f"w/{protocol}", f"gone {len(wills)}".encode(), qos=1, retain=True))
        return wills[-1]

    probe = Probe()
    client = make_client(url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}", will=will)
    watcher = paho_client(private_broker.url)
    got: list[tuple[bytes, bool]] = []
    watcher.on_message = lambda _c, _u, msg: got.append((msg.payload, msg.retain))
    watcher.subscribe(f"w/{protocol}", qos=1)
    try:
        await probe.until(lambda: probe.connects, what="a connection")
        client._conn.transport.abort()  # no DISCONNECT: as if the process died
        await probe.until(lambda: len(probe.connects) == 2, what="the reconnect")
        await asyncio.to_thread(wait_until, lambda: got, what="the will")
        assert got[0] == (b"gone 0", False)  # retained on the broker; live subscribers see it unflagged
        assert [w.payload for w in wills] == [b"gone 0", b"gone 1"]  # asked again for the new connection
    finally:
        close(watcher)
        await client.stop()
