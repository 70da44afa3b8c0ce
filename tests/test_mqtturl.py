"""MQTT URLs, including TLS (mqtts://) against a real mosquitto TLS listener."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rekindle.ingest.errors import PublishError
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings, MqttUrlError
from tests.servers import Mosquitto


def test_parse_urls() -> None:
    s = MqttSettings.from_url("mqtt://ingest:p%40ss@broker.local:1884")
    assert (s.host, s.port, s.username, s.password, s.tls) == (
        "broker.local",
        1884,
        "ingest",
        "p@ss",
        False,
    )
    assert s.url == "mqtt://ingest:***@broker.local:1884"
    t = MqttSettings.from_url("mqtts://broker")
    assert (t.port, t.tls) == (8883, True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://h", "scheme must be mqtt or mqtts"),
        ("mqtt://", "no host"),
        ("mqtt://h:99999", "port is not a number"),
        ("mqtt://h/x", "a path is not allowed"),
        ("mqtt://h?ca=/etc/hosts", "only makes sense with mqtts"),
        ("mqtts://h?ca=/nonexistent.pem", "does not exist"),
        ("mqtts://h?verify=no", "unknown parameter"),
    ],
)
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(MqttUrlError, match=reason):
        MqttSettings.from_url(url)


def test_password_is_masked_in_errors() -> None:
    with pytest.raises(MqttUrlError) as info:
        MqttSettings.from_url("mqtt://u:secret@h/x")
    assert "secret" not in str(info.value)


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for cmd in (
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "1",
            "-subj",
            "/CN=rekindle-test-ca",
        ],
        [
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
        [
            "openssl",
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "1",
            "-extfile",
            ext,
        ],
    ):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True)
    broker = Mosquitto.start(folder / "broker", tls=(cert, key))
    yield broker
    broker.stop()


def test_mqtts_with_ca_verifies_and_publishes(tls_broker: Mosquitto) -> None:
    ca = tls_broker.log.parent.parent / "ca.pem"
    url = f"mqtts://127.0.0.1:{tls_broker.port}?ca={ca}"
    with Publisher(MqttSettings.from_url(url), "tls", "t1") as pub:
        pub.send_samples("hr", "strap", [64.0], t0=time.time() - 5, fs=1.0)
        pub.flush(timeout=10)
        assert pub.unacknowledged == 0


# paho-mqtt 2.2 does not close its SSLSocket when the handshake fails
# (Client._ssl_wrap_socket: do_handshake() raises after wrap_socket); the warning is paho's.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_mqtts_refuses_an_untrusted_server(tls_broker: Mosquitto) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.port}"  # system trust store: the test CA is unknown
    with pytest.raises(PublishError, match="cannot connect"):
        Publisher(MqttSettings.from_url(url), "tls", "t2", connect_timeout=5).start()


def test_plain_mqtt_to_a_tls_port_fails_cleanly(tls_broker: Mosquitto) -> None:
    url = f"mqtt://127.0.0.1:{tls_broker.port}"
    with pytest.raises(PublishError):
        Publisher(MqttSettings.from_url(url), "tls", "t3", connect_timeout=3).start()
    assert Path(tls_broker.log).exists()
