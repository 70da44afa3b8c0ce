"""`rekindle demo` on embedded defaults, and `rekindle record` -> replay bit-exactness."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from services.ingest.publisher import Publisher
from services.ingest.record import Recorder
from services.ingest.replay import replay
from services.ingest.sources.recording import read_recording
from services.ingest.sources.simulator import SimulationScript, simulate
from services.mqtturl import MqttSettings
from tests.servers import Mosquitto


def test_demo_runs_and_finds_the_scripted_episodes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "--log-level",
            "WARNING",
            "demo",
            "--speed",
            "max",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "embedded MQTT broker" in proc.stdout
    assert "arousal" in proc.stdout  # the live view prints the index
    with (out / "sim-1" / "episodes.csv").open() as fh:
        episodes = list(csv.DictReader(fh))
    kinds = [e["kind"] for e in episodes]
    assert "arousal" in kinds, proc.stdout[-3000:]
    summary = json.loads((out / "sim-1" / "summary.json").read_text())
    assert summary["episodes"]["arousal"] == kinds.count("arousal")
    points = (out / "points.lp").read_text().splitlines()
    assert any(p.startswith("episode,") for p in points)
    assert sum(p.startswith("signal,") for p in points) > 10_000


def test_record_then_replay_is_bit_exact(mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    settings = MqttSettings.from_url(mqtt_broker.url)
    script = SimulationScript(duration=300.0)
    path = tmp_path / "rec.jsonl"
    recorder = Recorder(settings, "rec", "r1", path).start()
    try:
        with Publisher(settings, "rec", "r1", device="sim") as pub:
            stats = replay(simulate(script, seed=9), pub, speed=None)
        assert recorder.done.wait(30), "recorder never saw the end status"
    finally:
        count = recorder.stop()
    assert count == stats.chunks
    assert list(read_recording(path)) == list(simulate(script, seed=9))


def test_record_cli_stops_at_session_end(mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl.gz"
    rec = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "record",
            "--session",
            "c1",
            "--site",
            "rec",
            "--mqtt",
            mqtt_broker.url,
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert rec.stdout is not None
        assert rec.stdout.readline().startswith("recording rec/c1")  # subscribed
        replayed = subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "replay",
                "sim:4",
                "--session",
                "c1",
                "--site",
                "rec",
                "--speed",
                "max",
                "--mqtt",
                mqtt_broker.url,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert replayed.returncode == 0, replayed.stderr
        stdout, stderr = rec.communicate(timeout=60)
    finally:
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == 0, stderr
    assert "recorded" in stdout
    assert len(list(read_recording(out))) > 1000
