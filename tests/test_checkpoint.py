"""Restarting the analysis service mid-session loses nothing: the checkpoint restores open
sessions and the broker queues what arrives meanwhile (persistent MQTT session)."""

from __future__ import annotations

from pathlib import Path

from rekindle.analysis.core import Episode, Event
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto


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
