"""``rekindle alerts relay``: Grafana's webhook notifications published on a real mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis.alert_relay import (
    PATH,
    STACK_SESSION,
    STACK_SITE,
    AlertRelay,
    NotificationError,
    parse_notification,
)
from rekindle.dashboards import alerts
from rekindle.mqtturl import MqttSettings
from tests.servers import Mosquitto, free_port


def _alert(status: str, labels: dict[str, str], summary: str, ends: str) -> dict[str, Any]:
    """One alert as Grafana 11's webhook contact point sends it."""
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": summary},
        "startsAt": "2026-12-01T10:00:00Z",
        "endsAt": ends,
        "generatorURL": "http://grafana:3000/alerting/grafana/rekindle-no-data/view",
        "fingerprint": "1f2e3d4c5b6a7980",
        "silenceURL": "http://grafana:3000/alerting/silence/new",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"B": 0, "C": 1},
        "valueString": "[ var='B' labels={session=S042, site=room-2} value=0 ]",
    }


def notification() -> dict[str, Any]:
    no_data = {
        "alertname": "No data from session",
        "app": "rekindle",
        "grafana_folder": alerts.FOLDER,
        "session": "S042",
        "severity": "critical",
        "site": "room-2",
    }
    lost = {**no_data, "alertname": "Signal lost", "severity": "warning", "stream": "eda"}
    datasource = {"alertname": "DatasourceError", "grafana_folder": alerts.FOLDER}
    return {
        "receiver": alerts.CONTACT_POINT,
        "status": "firing",
        "orgId": 1,
        "alerts": [
            _alert("firing", no_data, "no data for 60 s", "0001-01-01T00:00:00Z"),
            _alert("resolved", lost, "eda signal lost for 30 s", "2026-12-01T10:05:00Z"),
            _alert("firing", datasource, "InfluxDB down", "0001-01-01T00:00:00Z"),
        ],
        "groupLabels": {"alertname": "No data from session"},
        "commonLabels": {"app": "rekindle"},
        "commonAnnotations": {},
        "externalURL": "http://grafana:3000/",
        "version": "1",
        "groupKey": '{}:{alertname="No data from session"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:2, RESOLVED:1]",
        "state": "alerting",
        "message": "...",
    }


def test_parse_a_grafana_notification() -> None:
    no_data, lost, datasource = parse_notification(json.dumps(notification()).encode())
    assert (no_data.site, no_data.session, no_data.name, no_data.state) == (
        "room-2",
        "S042",
        "No data from session",
        "firing",
    )
    assert no_data.topic == "rekindle/v1/room-2/S042/out/alert"
    assert no_data.starts_at == 1_796_119_200.0
    assert no_data.ends_at is None  # Grafana's zero time: still firing
    assert (lost.state, lost.labels["stream"], lost.ends_at) == ("resolved", "eda", 1_796_119_500.0)
    assert (datasource.site, datasource.session) == (STACK_SITE, STACK_SESSION)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "invalid JSON"),
        (b"[]", '"alerts"'),
        (b'{"alerts": [1]}', "alerts[0] is not an object"),
        (b'{"alerts": [{"status": "pending"}]}', "alerts[0].status"),
        (b'{"alerts": [{"status": "firing", "labels": {"a": 1}}]}', "alerts[0].labels"),
        (b'{"alerts": [{"status": "firing", "startsAt": "yesterday"}]}', "RFC 3339"),
    ],
)
def test_malformed_notifications_say_what_is_wrong(body: bytes, reason: str) -> None:
    with pytest.raises(NotificationError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        parse_notification(body)


class Watcher:
    """A subscriber to every alert topic."""

    def __init__(self, broker: Mosquitto) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._subscribed = threading.Event()
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self._client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, json.loads(m.payload))
        )
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.connect(broker.host, broker.port)
        self._client.subscribe("rekindle/v1/+/+/out/alert", qos=1)
        self._client.loop_start()
        assert self._subscribed.wait(60)

    def wait_for(self, n: int, timeout: float = 120) -> list[tuple[str, dict[str, Any]]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def relay(mqtt_broker: Mosquitto) -> Iterator[AlertRelay]:
    server = AlertRelay(MqttSettings.from_url(mqtt_broker.url), "127.0.0.1", 0).start()
    assert server.connected.wait(60), "the relay never connected"
    yield server
    server.stop()


def _post(port: int, body: bytes, path: str = PATH) -> tuple[int, str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_alert_of_a_notification_reaches_the_broker(
    mqtt_broker: Mosquitto, relay: AlertRelay
) -> None:
    watcher = Watcher(mqtt_broker)
    try:
        status, text = _post(relay.port, json.dumps(notification()).encode())
        assert (status, text) == (200, "relayed 3 alert(s)\n")
        received = sorted(watcher.wait_for(3), key=lambda tp: tp[1]["alert"])
    finally:
        watcher.close()
    assert [t for t, _ in received] == [
        f"rekindle/v1/{STACK_SITE}/{STACK_SESSION}/out/alert",
        "rekindle/v1/room-2/S042/out/alert",
        "rekindle/v1/room-2/S042/out/alert",
    ]
    payloads = {p["alert"]: p for _, p in received}
    assert payloads["No data from session"] == {
        "v": 1,
        "site": "room-2",
        "session": "S042",
        "alert": "No data from session",
        "state": "firing",
        "severity": "critical",
        "summary": "no data for 60 s",
        "starts_at": 1_796_119_200.0,
        "ends_at": None,
        "labels": notification()["alerts"][0]["labels"],
        "fingerprint": "1f2e3d4c5b6a7980",
    }
    assert payloads["Signal lost"]["state"] == "resolved"
    assert payloads["DatasourceError"]["summary"] == "InfluxDB down"
    assert _get(relay.port, "/health") == 200


def test_a_bad_request_is_refused_with_its_reason(relay: AlertRelay) -> None:
    status, text = _post(relay.port, b'{"alerts": "none"}')
    assert status == 400
    assert '"alerts" list' in text
    assert _post(relay.port, b"{}", path="/other")[0] == 404
    assert relay.relayed == 0


def test_without_a_broker_grafana_is_told_to_retry() -> None:
    """503 (which Grafana retries), never a 200 for an alert that went nowhere."""
    down = AlertRelay(
        MqttSettings.from_url(f"mqtt://127.0.0.1:{free_port()}"), "127.0.0.1", 0
    ).start()
    try:
        status, text = _post(down.port, json.dumps(notification()).encode())
        assert status == 503
        assert "retry later" in text
        assert _get(down.port, "/health") == 503
    finally:
        down.stop()


def test_the_command_relays_until_sigterm(mqtt_broker: Mosquitto) -> None:
    """``rekindle alerts relay`` as compose runs it: settings from REKINDLE_MQTT_URL."""
    port = free_port()
    env = {**os.environ, "REKINDLE_MQTT_URL": mqtt_broker.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rekindle.cli", "alerts", "relay", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    watcher = Watcher(mqtt_broker)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if _get(port, "/health") == 200:
                    break
            except urllib.error.URLError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("the relay never became healthy")
        assert _post(port, json.dumps(notification()).encode())[0] == 200
        assert len(watcher.wait_for(3)) == 3
    finally:
        watcher.close()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "alert No data from session firing for room-2/S042" in stderr
