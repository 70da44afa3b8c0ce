"""`rekindle analysis` as a process: writes to real influxd and exits 0 on SIGTERM.

(That stopping flushes what is still queued is shown in-process: the end-to-end fixture counts
points right after ``AnalysisService.stop()``.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.waiting import GENEROUS_S, WatchedProcess, wait_until


def test_analysis_process_writes_and_exits_0_on_sigterm(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    influxd.create_database("cli")
    proc = WatchedProcess(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analysis",
            "--mqtt",
            mqtt_broker.url,
            "--influx",
            influxd.url,
            "--influx-db",
            "cli",
            "--site",
            "sigterm",
        ]
    )
    try:
        proc.wait_for_line("subscribed")
        now = time.time()
        with Publisher(MqttSettings.from_url(mqtt_broker.url), "sigterm", "p1") as pub:
            pub.send_samples("hr", "strap", [61.0, 62.0, 63.0], t0=now - 10, fs=1.0)
        marked = subprocess.run(
            [
                sys.executable,
                "-m",
                "rekindle.cli",
                "mark",
                "music changed",
                "--session",
                "p1",
                "--site",
                "sigterm",
                "--mqtt",
                mqtt_broker.url,
                "--time",
                str(now - 5),
            ],
            capture_output=True,
            text=True,
            timeout=GENEROUS_S,
            check=False,
        )
        assert marked.returncode == 0, marked.stderr
        # under load the broker may still be delivering: wait until both are stored, so the
        # SIGTERM below tests a clean stop rather than racing the delivery
        wait_until(
            lambda: (
                influxd.series("SELECT value FROM signal WHERE session = 'p1'", "cli")
                and influxd.series("SELECT text FROM marker WHERE session = 'p1'", "cli")
            ),
            "the samples and the marker in InfluxDB",
        )
        proc.proc.send_signal(signal.SIGTERM)
        code = proc.finish()
    finally:
        proc.kill()
    err = proc.stderr
    assert code == 0, err
    assert "analysis stopped" in err
    hr = influxd.series("SELECT value FROM signal WHERE session = 'p1'", "cli")
    assert [row[1] for row in hr[0]["values"]] == [61.0, 62.0, 63.0]
    marks = influxd.series("SELECT text, device FROM marker WHERE session = 'p1'", "cli")
    assert marks[0]["values"] == [[round((now - 5) * 1e9), "music changed", "clinician"]]


def test_analysis_cli_reports_bad_settings() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analysis",
            "--mqtt",
            "http://x",
            "--influx",
            "http://127.0.0.1:1",
            "--influx-db",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "scheme must be mqtt or mqtts" in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "analysis",
            "--mqtt",
            "mqtt://127.0.0.1:1",
            "--influx",
            "http://127.0.0.1:1",
            "--influx-org",
            "o",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "needs org, bucket and token" in proc.stderr
