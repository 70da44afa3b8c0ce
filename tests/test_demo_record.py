"""`rekindle record` -> replay bit-exactness (the demo: tests/test_demo.py)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from rekindle.ingest.publisher import Publisher
from rekindle.ingest.record import Recorder
from rekindle.ingest.replay import replay
from rekindle.ingest.sources import open_spec
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.recording import read_recording
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import Mosquitto


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
            "rekindle.cli",
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
                "rekindle.cli",
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
    # every sample of the source, whatever the messages' spans (`replay --speed max` joins
    # each stream's chunks into messages of up to 30 s: rekindle.ingest.coalesce)
    _name, source = open_spec("sim:4", speed=None)
    assert _samples_per_stream(read_recording(out)) == _samples_per_stream(source)


def _samples_per_stream(chunks: Iterable[Chunk]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for chunk in chunks:
        counts[chunk.stream] += len(chunk.values)
    return counts
