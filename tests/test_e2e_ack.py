"""End-to-end acknowledgement (out/ack): a replay at ``max`` through a mosquitto with its
default queue limits, and through a mosquitto SIGKILLed three times mid-replay, stores every
sample exactly once and gives the offline episodes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import ReplayStats, replay
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.recording import read_recording
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.test_durable import counts, expected, session_chunks, stored_episodes

SITE = "e2eack"
DEADLINE_S = 300.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


@pytest.fixture
def default_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto with its default max_queued_messages (1000) and max_inflight_messages."""
    server = Mosquitto.start(tmp_path / "mosquitto", default_queues=True)
    yield server
    server.stop()


def analysis(
    broker: Mosquitto, influx: InfluxD, db: str, tmp_path: Path, *, persistent: bool = True
) -> AnalysisService:
    """The service with a checkpoint and a write-ahead log in ``tmp_path``; with
    ``persistent`` (default) its MQTT session outlives it, so the broker keeps its queue."""
    writer = BufferedWriter(
        V1Transport(InfluxSettings(influx.url, database=db)), spool_path=tmp_path / "wal.lp"
    )
    return AnalysisService(
        MqttSettings.from_url(broker.url),
        writer,
        site=SITE,
        client_id=f"rekindle-analysis-{db}",
        persistent_session=persistent,
        state_path=tmp_path / "analysis.state",
    )


def replay_in_thread(
    broker: Mosquitto, session: str, chunks: list[Chunk], result: list[ReplayStats]
) -> tuple[threading.Thread, list[Publisher]]:
    publishers: list[Publisher] = []

    def run() -> None:
        pub = Publisher(MqttSettings.from_url(broker.url), SITE, session, ack_window=500)
        publishers.append(pub)
        with pub:
            result.append(replay(iter(chunks), pub, speed=None))
            pub.flush(timeout=DEADLINE_S)

    thread = threading.Thread(target=run, name=f"replay-{session}", daemon=True)
    thread.start()
    return thread, publishers


def test_replay_at_max_through_default_mosquitto_stores_everything_once(
    default_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    db, session = "e2e_default", "d1"
    influxd.create_database(db)
    chunks = session_chunks(seed=4, minutes=30)
    samples, features, episodes = expected(chunks)
    service = analysis(default_broker, influxd, db, tmp_path).start()
    recording = tmp_path / "d1.jsonl.gz"
    # `rekindle record` as its own process, as a clinic or lab runs it (in this process its
    # network thread would compete with the publisher and the analysis for the interpreter)
    record = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rekindle.cli",
            "record",
            "--site",
            SITE,
            "--session",
            session,
            "--mqtt",
            default_broker.url,
            "--out",
            str(recording),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    result: list[ReplayStats] = []
    try:
        assert record.stdout is not None
        assert record.stdout.readline().startswith(f"recording {SITE}/{session}")  # subscribed
        thread, publishers = replay_in_thread(default_broker, session, chunks, result)
        thread.join(DEADLINE_S)
        assert result, "the replay did not finish"
        assert service.wait_sessions_finished(1, timeout=DEADLINE_S)
        out, err = record.communicate(timeout=DEADLINE_S)  # it ends at the session's end
    finally:
        service.stop()
        if record.poll() is None:
            record.kill()
    assert record.returncode == 0, err  # exit 1 would name what it knows it missed
    assert "session complete" in out
    assert sum(1 for _ in read_recording(recording)) == len(chunks)  # the recording is complete
    assert counts(influxd, db, session) == (samples, features, 1)
    assert stored_episodes(influxd, db, session) == episodes
    assert (service.stats.gaps, service.stats.missing_seq) == (0, 0)
    assert publishers[0].unconfirmed == 0


def test_broker_sigkilled_three_times_mid_replay_loses_and_duplicates_nothing(
    influxd: InfluxD, tmp_path: Path
) -> None:
    db, session = "e2e_brokerkill", "b1"
    influxd.create_database(db)
    chunks = session_chunks(seed=6, minutes=30)
    samples, features, episodes = expected(chunks)
    broker_dir = tmp_path / "mosquitto"
    broker = Mosquitto.start(broker_dir, default_queues=True)  # persistence false
    port = broker.port
    service = analysis(broker, influxd, db, tmp_path).start()
    result: list[ReplayStats] = []
    recoveries: list[float] = []
    try:
        thread, publishers = replay_in_thread(broker, session, chunks, result)
        for fraction in (0.25, 0.5, 0.75):
            wait_for(
                lambda f=fraction: service.stats.accepted >= f * len(chunks),  # type: ignore[misc]
                f"{fraction:.0%} of the session handled",
            )
            broker.proc.send_signal(signal.SIGKILL)
            broker.proc.wait(30)
            killed_at = service.stats.accepted
            broker = Mosquitto.start(broker_dir, port=port, default_queues=True)
            restarted = time.monotonic()
            wait_for(
                lambda k=killed_at: service.stats.accepted > k + 50,  # type: ignore[misc]
                "the analysis receiving again after the broker restart",
            )
            recoveries.append(time.monotonic() - restarted)
        thread.join(DEADLINE_S)
        assert result, "the replay did not finish"
        assert service.wait_sessions_finished(1, timeout=DEADLINE_S)
    finally:
        service.stop()
        broker.stop()
    assert counts(influxd, db, session) == (samples, features, 1)
    assert stored_episodes(influxd, db, session) == episodes
    assert (service.stats.gaps, publishers[0].unconfirmed) == (0, 0)
    print(f"resent {publishers[0].resent}, recoveries {[round(r, 1) for r in recoveries]} s")
