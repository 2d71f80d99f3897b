"""MQTT_URL parsing and subscription shape."""

from __future__ import annotations

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
