"""The analysis worker's heartbeat and ``rekindle health`` (the image's health check), with a
real mosquitto and influxd."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rekindle.analysis import health
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.cli import main
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto, free_port
from tests.waiting import wait_until


def test_verdict_is_pure_and_names_the_problem() -> None:
    beat = health.Heartbeat(1000.0, True, 2, 0, 10, 50, 1)
    assert health.verdict(beat, 1030.0) is None
    stale = health.verdict(beat, 1000.0 + health.MAX_AGE_S + 1)
    assert stale is not None
    assert "old" in stale
    offline = health.Heartbeat(1000.0, False, 0, 0, 0, 0, 0)
    assert health.verdict(offline, 1001.0) == "not connected to the MQTT broker"


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line ``rekindle health`` prints on stderr when unhealthy (docs/cli.md style)."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("rekindle health: error: unhealthy: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_bad_max_age_is_a_usage_error(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["health", "--heartbeat", str(tmp_path / "hb.json"), "--max-age", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "rekindle health: error: argument --max-age" in err
    assert "positive number of seconds" in err


def test_unhealthy_says_why_and_what_to_do_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    beat_file = tmp_path / "heartbeat.json"
    cmd = ["health", "--heartbeat", str(beat_file)]
    assert main(cmd) == 1
    assert "no heartbeat yet: is the service running with --heartbeat" in _error_line(capsys)
    beat_file.write_text("{not json", encoding="utf-8")
    assert main(cmd) == 1
    assert "unreadable heartbeat" in _error_line(capsys)
    health.write(beat_file, health.Heartbeat(time.time() - 600, True, 0, 0, 0, 0, 0))
    line = _error_line(capsys) if main(cmd) == 1 else pytest.fail("a stale beat is healthy")
    assert "s old (limit 60 s)" in line
    assert "restart the analysis service" in line
    health.write(beat_file, health.Heartbeat(time.time(), False, 0, 0, 0, 0, 0))
    assert main(cmd) == 1
    line = _error_line(capsys)
    assert "not connected to the MQTT broker: is the broker running?" in line
    assert str(beat_file) in line
    health.write(beat_file, health.Heartbeat(time.time(), True, 3, 1, 20, 500, 2))
    assert main(cmd) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == (
        "healthy: 3 sessions open, inbox 1, 20 lines waiting for InfluxDB, 500 received, "
        "2 rejected\n",
        "",
    )


def test_health_command_follows_the_real_worker(
    influxd: InfluxD,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a beat every second instead of every 5 s: each wait below is for the next beat; the
    # cadence is not what is checked (the worker reads health.EVERY_S at each beat)
    monkeypatch.setattr(health, "EVERY_S", 1.0)
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
        wait_until(beat_file.exists, "the first heartbeat")
        assert main(cmd) == 0
        assert "healthy: 0 sessions open" in capsys.readouterr().out
        first = health.read(beat_file).time
        wait_until(lambda: health.read(beat_file).time > first, "the next heartbeat")
        # the broker goes away: the worker keeps beating and says so
        broker.stop()
        wait_until(lambda: not health.read(beat_file).connected, "a beat saying 'not connected'")
        assert main(cmd) == 1
        assert "not connected to the MQTT broker" in capsys.readouterr().err
        broker = Mosquitto.start(tmp_path / "mq2", port=port)
        wait_until(lambda: health.read(beat_file).connected, "a beat saying 'connected' again")
        assert main(cmd) == 0
        capsys.readouterr()
    finally:
        service.stop()
        broker.stop()
    # the worker has stopped: the heartbeat goes stale (older than --max-age 3)
    last = health.read(beat_file).time
    wait_until(lambda: time.time() - last > 3.5, "the last heartbeat to be 3.5 s old")
    assert health.read(beat_file).time == last  # no beat after the stop
    assert main(cmd) == 1
    assert "old" in capsys.readouterr().err
