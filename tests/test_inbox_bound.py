"""Back-pressure: while the worker is held up the inbox never holds more than its bound, paho's
network thread waits (the broker queues), and once the worker goes on nothing is lost.

Real mosquitto and influxd (tests/servers.py)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

from rekindle.analysis.core import Event
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.waiting import wait_until

SITE = "bound"
DB = "bound"
LIMIT = 25
KA_SITE = "bound-keepalive"  # (no retained statuses of the other tests)


class HeldWorker:
    """A service whose worker is held up at its first events (``release`` lets it go on)
    while a publisher streams ``session`` (240 s of the simulator) at broker speed."""

    def __init__(
        self, settings: MqttSettings, influxd: InfluxD, site: str, session: str, seed: int
    ) -> None:
        influxd.create_database(DB)
        self.held, self.release = threading.Event(), threading.Event()
        writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=DB)))
        self.service = AnalysisService(
            settings,
            writer,
            site=site,
            publish_features=False,
            on_events=self._hold_once,
            inbox_limit=LIMIT,
        ).start()
        self.result: dict[str, int] = {}

        def publish() -> None:
            with Publisher(settings, site, session, device="sim") as pub:
                script = SimulationScript(duration=240.0, episodes=())
                stats = replay(simulate(script, seed=seed), pub, speed=None)
                self.result["samples"] = stats.samples
                self.result["chunks"] = stats.chunks

        self.publisher = threading.Thread(target=publish, name="test-publisher")
        self.publisher.start()

    def _hold_once(self, _site: str, _session: str, _events: list[Event]) -> None:
        if not self.release.is_set():
            self.held.set()
            self.release.wait(120)  # the worker is busy: messages keep arriving

    def finish(self) -> None:
        """Let the worker go on; the publisher ends and the session is finished."""
        try:
            self.release.set()
            self.publisher.join(120)
            assert not self.publisher.is_alive()
            assert self.service.wait_sessions_finished(1, timeout=120)
        finally:
            self.release.set()
            self.service.stop()


def test_a_held_up_worker_fills_the_inbox_to_its_bound_only(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    run = HeldWorker(MqttSettings.from_url(mqtt_broker.url), influxd, SITE, "S1", seed=5)
    service = run.service
    try:
        wait_until(run.held.is_set, "the worker handling its first events")
        wait_until(lambda: service.stats.inbox_waits > 0, "the network thread waiting for room")
        wait_until(lambda: service.inbox_size == LIMIT, "a full inbox behind the held worker")
        assert service.stats.inbox_peak == LIMIT
    finally:
        run.finish()
    assert service.stats.inbox_peak == LIMIT
    assert service.stats.inbox_full_s > 0
    assert service.stats.accepted == run.result["chunks"] + 2  # + the online and end statuses
    stored = influxd.count("SELECT count(value) FROM signal WHERE session = 'S1'", DB)
    assert stored == run.result["samples"]


def test_a_queue_larger_than_the_bound_waiting_at_start_up_is_taken(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    """A persistent session's queue reaches us before the subscription acknowledgement: the
    network thread must not wait for the worker, which starts only after that."""
    influxd.create_database(DB)
    settings = MqttSettings.from_url(mqtt_broker.url)

    def service() -> AnalysisService:
        writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=DB)))
        return AnalysisService(
            settings,
            writer,
            site=SITE,
            client_id="bound-persistent",
            persistent_session=True,
            publish_features=False,
            state_path=tmp_path / "state",
            inbox_limit=5,
        )

    first = service().start()  # subscribes with a persistent session, then goes away
    first.stop()
    with Publisher(settings, SITE, "S2", device="sim") as pub:  # queued at the broker for us
        stats = replay(
            simulate(SimulationScript(duration=60.0, episodes=()), seed=6), pub, speed=None
        )
    second = service().start()
    try:
        assert second.wait_sessions_finished(1, timeout=120)
    finally:
        second.stop()
    assert second.stats.inbox_peak > 5  # the queue arrived before the worker ran
    stored = influxd.count("SELECT count(value) FROM signal WHERE session = 'S2'", DB)
    assert stored == stats.samples


def test_a_worker_held_up_longer_than_the_keepalive_keeps_its_connection(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    """The network thread waits for room at most a third of the keepalive, then takes the
    message over the bound and writes what is due (a ping): the broker, which drops a client
    it hears nothing from for 1.5 keepalives, keeps the connection however long the worker
    is held up, and nothing is lost."""
    settings = dataclasses.replace(MqttSettings.from_url(mqtt_broker.url), keepalive=2)
    run = HeldWorker(settings, influxd, KA_SITE, "S3", seed=7)
    service = run.service
    try:
        wait_until(run.held.is_set, "the worker handling its first events")
        held_at = time.monotonic()
        # held for over 3 keepalives (each over-bound message is a third of one; at most 8 s):
        # without the bound on the wait, mosquitto drops the connection after 1.5 (3 s), and
        # the service reconnects once the worker goes on
        wait_until(
            lambda: service.stats.inbox_over_bound >= 10 or time.monotonic() - held_at > 8.0,
            "messages over the bound",
        )
        assert service.inbox_size <= LIMIT + service.stats.inbox_over_bound
    finally:
        run.finish()
    assert service.connections == 1  # never dropped, never reconnected
    assert service.stats.accepted == run.result["chunks"] + 2  # + the online and end statuses
    stored = influxd.count("SELECT count(value) FROM signal WHERE session = 'S3'", DB)
    assert stored == run.result["samples"]
