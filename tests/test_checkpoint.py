"""Restarting the analysis service mid-session loses nothing: the checkpoint restores open
sessions and the broker queues what arrives meanwhile (persistent MQTT session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rekindle.analysis import service as service_module
from rekindle.analysis import snapshot
from rekindle.analysis.core import Episode, Event
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.waiting import wait_until


def test_restart_mid_session_gives_the_uninterrupted_episodes(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    influxd.create_database("ckpt")
    settings = MqttSettings.from_url(mqtt_broker.url)
    state = tmp_path / "analysis.state"
    episodes: list[Episode] = []

    def collect(_site: str, _session: str, events: list[Event]) -> None:
        episodes.extend(e for e in events if isinstance(e, Episode))

    def service() -> AnalysisService:
        writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="ckpt")))
        return AnalysisService(
            settings,
            writer,
            site="ckpt",
            client_id="rekindle-analysis-ckpt-test",
            persistent_session=True,
            state_path=state,
            on_events=collect,
        )

    chunks = list(simulate(SimulationScript(), seed=4))
    cut = len(chunks) * 2 // 3  # inside the second scripted episode
    first = service().start()
    with Publisher(settings, "ckpt", "s1", device="sim") as pub:
        pub.send_status("sim", "online", chunks[0].start)
        for chunk in chunks[:cut]:
            pub.publish(
                chunk.to_message("ckpt", "s1", pub.next_seq(chunk.device, chunk.stream), pub.run)
            )
        pub.flush()
        assert first.wait_idle(quiet_s=0.5)
        first.stop()  # checkpoint written; the broker keeps the subscription
        assert state.exists()
        assert first.stats.sessions_finished == 0
        # published while no analysis service runs: queued by mosquitto for our session
        for chunk in chunks[cut:]:
            pub.publish(
                chunk.to_message("ckpt", "s1", pub.next_seq(chunk.device, chunk.stream), pub.run)
            )
        pub.send_status("sim", "end", chunks[-1].end)
        pub.flush()
    second = service().start()
    try:
        assert second.wait_sessions_finished(1, timeout=60)
        assert second.stats.sessions_finished == 1
        assert second.stats.duplicates == 0
    finally:
        second.stop()
    offline = run_pipeline(iter(chunks), "sim", site="ckpt", session="s1").episodes
    assert offline
    assert sorted(episodes, key=lambda e: (e.onset, e.kind)) == sorted(
        offline, key=lambda e: (e.onset, e.kind)
    )


def test_unreadable_checkpoint_is_ignored_with_a_log(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    state = tmp_path / "broken.state"
    state.write_bytes(b"not a pickle")
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="ckpt")))
    svc = AnalysisService(
        MqttSettings.from_url(mqtt_broker.url), writer, site="ckpt2", state_path=state
    ).start()
    svc.stop()
    assert svc.pipelines == {}


def test_put_off_snapshots_hold_the_acks_that_need_them_and_lose_nothing(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snapshot waits SNAPSHOT_COST_FACTOR times its last cost. With a checkpoint at every
    commit (``checkpoint_every_s`` 0) a PUBACK promises a checkpoint, so while snapshots are
    put off the PUBACKs wait for the next one; once it is taken they go out, and every sample
    is stored once."""
    influxd.create_database("ckptoff")
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="ckptoff")))
    monkeypatch.setattr(service_module, "SNAPSHOT_COST_FACTOR", 1e9)  # after the first: none
    service = AnalysisService(
        settings,
        writer,
        site="ckptoff",
        client_id="rekindle-analysis-ckptoff-test",
        persistent_session=True,
        state_path=tmp_path / "analysis.state",
        checkpoint_every_s=0.0,
    ).start()
    chunks = list(simulate(SimulationScript(duration=300.0, episodes=()), seed=9))
    try:
        with Publisher(settings, "ckptoff", "s1", device="sim") as pub:
            pub.send_status("sim", "online", chunks[0].start)
            for chunk in chunks:
                pub.publish(
                    chunk.to_message(
                        "ckptoff", "s1", pub.next_seq(chunk.device, chunk.stream), pub.run
                    )
                )
            pub.send_status("sim", "end", chunks[-1].end)
            wait_until(
                lambda: service.snapshots_put_off > 0 and service.acks_awaiting_snapshot > 0,
                "a snapshot put off with PUBACKs waiting for the next one",
                every_s=0.02,
            )
            assert service.snapshots == 1  # the first one; the PUBACKs since wait for the next
            monkeypatch.setattr(service_module, "SNAPSHOT_COST_FACTOR", 0.0)
            assert service.wait_sessions_finished(1, timeout=120)
            pub.flush()
            # (the last snapshot's child may still be writing: its PUBACKs go out when it ends)
            wait_until(lambda: service.acks_awaiting_snapshot == 0, "the held PUBACKs sent")
        assert service.snapshots > 1
    finally:
        service.stop()
    samples = sum(len(c.values) for c in chunks if c.stream in ("eda", "hr", "rr"))
    stored = influxd.count(
        "SELECT count(value) FROM signal WHERE session = 's1' AND stream != 'acc'", "ckptoff"
    )
    assert stored == samples
    assert service.stats.duplicates == 0


def test_a_failed_snapshot_child_holds_its_acks_until_a_snapshot_covers_them(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The checkpoint is pickled and written by a forked child (snapshot.py). A child that
    fails (here: a directory where its file goes, for the first snapshots) is logged with its
    reason, nothing is installed, and the PUBACKs that promised its checkpoint wait (the broker
    keeps their messages); the first snapshot that succeeds covers and releases them, and
    every sample is stored once."""
    influxd.create_database("ckptfail")
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="ckptfail")))
    state = tmp_path / "analysis.state"
    blocked = [snapshot.snapshot_path(state, n) for n in range(100)]
    for path in blocked:
        path.mkdir()
    service = AnalysisService(
        settings,
        writer,
        site="ckptfail",
        client_id="rekindle-analysis-ckptfail-test",
        persistent_session=True,
        state_path=state,
        checkpoint_every_s=0.0,
    ).start()
    assert service.fork_snapshots
    chunks = list(simulate(SimulationScript(duration=300.0, episodes=()), seed=9))
    try:
        with Publisher(settings, "ckptfail", "s1", device="sim") as pub:
            pub.send_status("sim", "online", chunks[0].start)
            for chunk in chunks:
                pub.publish(
                    chunk.to_message(
                        "ckptfail", "s1", pub.next_seq(chunk.device, chunk.stream), pub.run
                    )
                )
            pub.send_status("sim", "end", chunks[-1].end)
            wait_until(
                lambda: service.snapshot_failures > 0 and service.acks_awaiting_snapshot > 0,
                "a failed snapshot with PUBACKs waiting for the next one",
                every_s=0.01,
            )
            assert not state.exists()  # (no snapshot has succeeded: nothing was installed)
            for path in blocked:
                path.rmdir()
            assert service.wait_sessions_finished(1, timeout=120)
            pub.flush()
            wait_until(lambda: service.acks_awaiting_snapshot == 0, "the held PUBACKs sent")
        assert state.exists()
    finally:
        service.stop()
    assert "the checkpoint snapshot's child failed: IsADirectoryError" in caplog.text
    samples = sum(len(c.values) for c in chunks if c.stream in ("eda", "hr", "rr"))
    stored = influxd.count(
        "SELECT count(value) FROM signal WHERE session = 's1' AND stream != 'acc'", "ckptfail"
    )
    assert stored == samples
    assert service.stats.duplicates == 0
    assert not list(tmp_path.glob("*.snap-*"))  # (no child's file left behind)
