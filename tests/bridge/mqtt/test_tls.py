"""TLS to the broker, mutual TLS included, against a private Mosquitto with `require_certificate true`:
a CA, a server and client certificates made here; the broker's certificate and name are always checked."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bridge.drain import session_remove
from core.broker import BrokerConfig
from testing.processes import PrivateService
from tests.bridge.mqtt.test_client import Probe, make_client
from tests.conftest import need_binary

pytestmark = pytest.mark.services


class Authority:
    """A certificate authority of the test's own, writing PEM files into `folder`."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"iotgw test CA {name}")])
        self.cert = (self._builder(self.subject, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                  content_commitment=False, key_encipherment=False,
                                                  data_encipherment=False, key_agreement=False,
                                                  encipher_only=False, decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.path = self._write(f"{name}-ca.pem", self.cert)

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        """Valid from five minutes ago for a day, issued by this CA."""
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.subject).public_key(public_key)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def _write(self, filename: str, cert: x509.Certificate, key=None) -> Path:
        path = self.folder / filename
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            (self.folder / filename.replace(".pem", ".key")).write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        return path

    def issue(self, filename: str, *, common_name: str, sans: list[x509.GeneralName] | None = None,
              usage=ExtendedKeyUsageOID.CLIENT_AUTH) -> tuple[Path, Path]:
        """A leaf certificate and its key: (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key())
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        path = self._write(filename, builder.sign(self.key, hashes.SHA256()), key)
        return path, path.with_suffix(".key")


@pytest.fixture
def pki(tmp_path):
    """The broker's CA with a server certificate for 127.0.0.1 and a client one; a second, unrelated CA."""
    folder = tmp_path / "pki"
    folder.mkdir()
    ca, other = Authority(folder, "good"), Authority(folder, "other")
    server = ca.issue("server.pem", common_name="broker", usage=ExtendedKeyUsageOID.SERVER_AUTH,
                      sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")])
    misnamed = ca.issue("misnamed.pem", common_name="elsewhere", usage=ExtendedKeyUsageOID.SERVER_AUTH,
                        sans=[x509.DNSName("broker.example.com")])
    return {"ca": ca.path, "other_ca": other.path, "server": server, "misnamed": misnamed,
            "client": ca.issue("bridge.pem", common_name="iotgw-bridge"),
            "stranger": other.issue("stranger.pem", common_name="iotgw-bridge")}


def _tls_broker(tmp_path: Path, pki: dict, server: str = "server") -> PrivateService:
    need_binary("mosquitto")
    service = PrivateService("mosquitto", tmp_path / "mosquitto-tls")
    cert, key = pki[server]
    (service.workdir / "mosquitto.conf").write_text(
        f"listener {service.port} 127.0.0.1\nallow_anonymous true\n"
        f"cafile {pki['ca']}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n"
        + ("user root\n" if os.geteuid() == 0 else ""))  # as root it would drop to a user that cannot read tmp_path
    return service.start()


@pytest.fixture
def tls_broker(tmp_path, pki):
    service = _tls_broker(tmp_path, pki)
    yield service
    service.stop()


def tls_url(broker: PrivateService, **files: Path) -> str:
    query = "&".join(f"{option}={quote(str(path))}" for option, path in files.items())
    return f"mqtts://127.0.0.1:{broker.port}" + (f"?{query}" if query else "")


async def _refused(url: str, caplog, expected: str) -> str:
    """Start a client that must not get in; return the warning that says why."""
    caplog.set_level("WARNING", logger="iotgw.bridge")
    probe = Probe()
    client = make_client(url, probe, client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        async with asyncio.timeout(10):
            while not any("cannot connect" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.05)
        assert not client.connected and not probe.connects
    finally:
        await client.stop()
    [line, *_] = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert expected in line, line
    return line


async def test_bridge_connects_with_its_client_certificate_and_exchanges_messages(tls_broker, pki):
    cert, key = pki["client"]
    probe = Probe()
    client = make_client(tls_url(tls_broker, cafile=pki["ca"], certfile=cert, keyfile=key), probe,
                         client_id=f"br-{uuid.uuid4().hex[:6]}")
    try:
        await probe.until(lambda: probe.connects, what="CONNACK over mutual TLS")
        await probe.until(lambda: client.connected)
        async with asyncio.timeout(10):
            while True:  # until the SUBSCRIBE has taken effect: our own message comes back
                await client.publish("t/echo", b"over tls", qos=1)
                try:
                    await probe.until(lambda: probe.raws, timeout=0.5)
                    break
                except AssertionError:
                    continue
        assert probe.raws[0].payload == b"over tls"
    finally:
        await client.stop()


async def test_without_a_client_certificate_the_broker_refuses_and_the_log_says_what_to_set(tls_broker, pki, caplog):
    await _refused(tls_url(tls_broker, cafile=pki["ca"]), caplog, "set certfile= and keyfile= in MQTT_URL")


async def test_a_broker_certificate_from_another_ca_is_refused(tls_broker, pki, caplog):
    cert, key = pki["client"]
    line = await _refused(tls_url(tls_broker, cafile=pki["other_ca"], certfile=cert, keyfile=key), caplog,
                          "the broker's certificate is not signed by the CA in cafile=")
    assert "set cafile=" in line


async def test_a_client_certificate_the_broker_does_not_trust_is_refused(tls_broker, pki, caplog):
    cert, key = pki["stranger"]
    line = await _refused(tls_url(tls_broker, cafile=pki["ca"], certfile=cert, keyfile=key), caplog,
                          f"client certificate certfile={cert}")
    assert "signed by a CA the broker trusts" in line


async def test_the_brokers_name_is_checked(tmp_path, pki, caplog):
    broker = _tls_broker(tmp_path, pki, server="misnamed")
    cert, key = pki["client"]
    try:
        await _refused(tls_url(broker, cafile=pki["ca"], certfile=cert, keyfile=key), caplog,
                       "the broker's certificate is not valid for 127.0.0.1")
    finally:
        broker.stop()


async def test_dropsession_removes_a_session_over_mutual_tls(tls_broker, pki):
    """Every paho client of iotgw (dropsession here; dynsec, simulate) takes the bridge's TLS context."""
    cert, key = pki["client"]
    url = tls_url(tls_broker, cafile=pki["ca"], certfile=cert, keyfile=key)
    client_id = f"br-{uuid.uuid4().hex[:6]}"
    for expected in ([False], [True]):  # the session is made, then found again
        probe = Probe()
        client = make_client(url, probe, client_id=client_id)
        await probe.until(lambda probe=probe: probe.connects, what="CONNACK")
        await client.stop()
        assert probe.connects == expected
    await asyncio.to_thread(session_remove, BrokerConfig.from_url(url), client_id)
    probe = Probe()
    client = make_client(url, probe, client_id=client_id)
    try:
        await probe.until(lambda: probe.connects, what="CONNACK")
        assert probe.connects == [False], "dropsession left the session on the broker"
    finally:
        await client.stop()
