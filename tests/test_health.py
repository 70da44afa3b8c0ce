"""The analysis worker's heartbeat and ``rekindle health`` (the image's health check), with a
real mosquitto and influxd."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.analysis import health
from services.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from services.analysis.service import AnalysisService
from services.cli import main
from services.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto, free_port


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_verdict_is_pure_and_names_the_problem() -> None:
    beat = health.Heartbeat(1000.0, True, 2, 0, 10, 50, 1)
    assert health.verdict(beat, 1030.0) is None
    stale = health.verdict(beat, 1000.0 + health.MAX_AGE_S + 1)
    assert stale is not None
    assert "old" in stale
    offline = health.Heartbeat(1000.0, False, 0, 0, 0, 0, 0)
    assert health.verdict(offline, 1001.0) == "not connected to the MQTT broker"


def test_health_command_follows_the_real_worker(
    influxd: InfluxD, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat_file = tmp_path / "heartbeat.json"
    cmd = ["health", "--heartbeat", str(beat_file), "--max-age", "3"]
    assert main(cmd) == 1
    assert "no heartbeat yet" in capsys.readouterr().err

    port = free_port()
    broker = Mosquitto.start(tmp_path / "mq", port=port)
    influxd.create_database("health")
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="health")))
    service = AnalysisService(
        MqttSettings.from_url(broker.url), writer, site="health", heartbeat_path=beat_file
    ).start()
    try:
        _wait_for(beat_file.exists)
        assert main(cmd) == 0
        assert "healthy: 0 sessions open" in capsys.readouterr().out
        first = health.read(beat_file).time
        _wait_for(lambda: health.read(beat_file).time > first, timeout=health.EVERY_S + 5)
        # the broker goes away: the worker keeps beating and says so
        broker.stop()
        _wait_for(lambda: not health.read(beat_file).connected, timeout=health.EVERY_S + 10)
        assert main(cmd) == 1
        assert "not connected to the MQTT broker" in capsys.readouterr().err
        broker = Mosquitto.start(tmp_path / "mq2", port=port)
        _wait_for(lambda: health.read(beat_file).connected, timeout=health.EVERY_S + 30)
        assert main(cmd) == 0
        capsys.readouterr()
    finally:
        service.stop()
        broker.stop()
    # the worker has stopped: the heartbeat goes stale
    time.sleep(3.5)
    assert main(cmd) == 1
    assert "old" in capsys.readouterr().err
