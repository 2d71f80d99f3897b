"""MQTT_URL parsing and subscription shape."""

from __future__ import annotations

import ssl

import pytest

from core.broker import BrokerConfig, subscriptions


def test_mqtt_url_with_credentials():
    config = BrokerConfig.from_url("mqtt://bridge:s%40cret@broker.local:1884")
    assert (config.host, config.port, config.username, config.password, config.tls, config.protocol) == (
        "broker.local", 1884, "bridge", "s@cret", False, 5)


def test_mqtts_defaults_to_8883_and_tls():
    config = BrokerConfig.from_url("mqtts://broker.local")
    assert config.port == 8883 and config.tls


def test_v311_broker_gets_plain_subscriptions():
    config = BrokerConfig.from_url("mqtt://127.0.0.1:1883?protocol=3.1.1")
    assert config.protocol == 4
    assert [t for t, _ in subscriptions(config, "g")] == ["devices/#"]


def test_v5_bridges_with_a_share_group_get_shared_subscriptions():
    assert subscriptions(BrokerConfig.from_url("mqtt://h"), "grp") == [("$share/grp/devices/#", 1)]


def test_a_single_v5_bridge_subscribes_plainly_with_no_local():
    assert subscriptions(BrokerConfig.from_url("mqtt://h"), None) == [("devices/#", 1 | 0x04)]


def test_unknown_scheme_fails_loudly():
    with pytest.raises(ValueError, match="scheme"):
        BrokerConfig.from_url("http://h:1883")


def test_tls_files_come_from_the_url_query_and_a_plus_stays_a_plus():
    config = BrokerConfig.from_url("mqtts://b:pw@broker.local?cafile=/etc/iotgw/ca+1.pem"
                                   "&certfile=/etc/iotgw/bridge%20cert.pem&keyfile=/etc/iotgw/bridge.key")
    assert (config.tls, config.port, config.cafile, config.certfile, config.keyfile) == (
        True, 8883, "/etc/iotgw/ca+1.pem", "/etc/iotgw/bridge cert.pem", "/etc/iotgw/bridge.key")
    assert config.protocol == 5


@pytest.mark.parametrize(("url", "message"), [
    ("mqtt://h?cafile=/ca.pem", "need TLS"),
    ("mqtts://h?keyfile=/k.pem", "keyfile without certfile"),
    ("mqtts://h?cafle=/ca.pem", "unknown option 'cafle'"),
])
def test_tls_options_that_cannot_work_fail_loudly(url, message):
    with pytest.raises(ValueError, match=message):
        BrokerConfig.from_url(url)


def test_a_tls_file_that_cannot_be_read_fails_loudly_naming_its_option(tmp_path):
    with pytest.raises(ValueError, match=r"cafile=/nonexistent/ca.pem cannot be used"):
        BrokerConfig.from_url("mqtts://h?cafile=/nonexistent/ca.pem").ssl_context()
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ValueError, match="certfile=.*cert.pem keyfile=None cannot be used"):
        BrokerConfig.from_url(f"mqtts://h?certfile={garbage}").ssl_context()


def test_mqtts_checks_the_brokers_certificate_and_name_by_default():
    context = BrokerConfig.from_url("mqtts://h").ssl_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert BrokerConfig.from_url("mqtt://h").ssl_context() is None
