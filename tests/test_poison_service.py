"""Poison through the real broker: fuzzed and stalling payloads (also retained) interleaved with
valid data, an exception inside handling, a stuck worker, and markers after a session's end.

Real mosquitto and influxd (tests/servers.py); the decoder itself is fuzzed in
``test_poison_decode.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import cli, contract
from rekindle.analysis import health
from rekindle.analysis.core import Event
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.live_metrics import MetricsRunner
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.fuzz_payloads import STALLING, fuzz_cases
from tests.servers import InfluxD, Mosquitto

SITE = "fz"
DB = "poison"


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached within {timeout} s"
        time.sleep(0.05)


class Client:
    """A plain paho client that publishes and collects the dead letters."""

    def __init__(self, broker: Mosquitto) -> None:
        self.letters: list[tuple[str, dict[str, object]]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.mqtt = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.mqtt.on_message = self._on_message
        self.mqtt.on_subscribe = lambda *_a: subscribed.set()
        self.mqtt.max_queued_messages_set(0)
        self.mqtt.max_inflight_messages_set(1000)
        self.mqtt.connect(broker.host, broker.port)
        self.mqtt.loop_start()
        self.mqtt.subscribe(f"{contract.DEADLETTER_ROOT}/#", qos=1)
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.letters.append((msg.topic, json.loads(msg.payload)))

    def count(self) -> int:
        with self._lock:
            return len(self.letters)

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, wait: bool = True
    ) -> mqtt.MQTTMessageInfo:
        info = self.mqtt.publish(topic, payload, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(30)
        return info

    def send(self, msg: contract.Message, *, wait: bool = True) -> mqtt.MQTTMessageInfo:
        topic, payload = contract.encode(msg)
        return self.publish(topic, payload, wait=wait)

    def close(self) -> None:
        self.mqtt.loop_stop()
        self.mqtt.disconnect()


def _service(broker: Mosquitto, influx: InfluxD, state: Path, **kwargs: object) -> AnalysisService:
    influx.create_database(DB)
    writer = BufferedWriter(V1Transport(InfluxSettings(influx.url, database=DB)))
    return AnalysisService(
        MqttSettings.from_url(broker.url),
        writer,
        site=SITE,
        state_path=state,
        **kwargs,  # type: ignore[arg-type]
    )


def _deliverable(topic: str) -> bool:
    """Can be published, and reaches a service subscribed to ``SITE``."""
    parts = topic.split("/")
    if "+" in topic or "#" in topic or "\0" in topic or len(topic.encode()) > 1000:
        return False
    under_site = parts[:3] == ["rekindle", "v1", SITE]
    return under_site and (len(parts) == 5 or (len(parts) == 6 and parts[4] == "status"))


def _has_received(service: AnalysisService, count: int) -> bool:
    return service.stats.received >= count


def _valid_stream(now: float) -> list[contract.SampleMessage]:
    """Valid EDA and HR with a 200,000-s time jump and a seq jump of 2^52 in the middle."""
    out: list[contract.SampleMessage] = []
    for part, start in enumerate((now - 260_000, now - 60_000)):
        for k in range(60):
            seq = 2**52 if (part, k) == (1, 30) else part * 60 + k
            out.append(
                contract.samples(
                    SITE, "valid", "eda", "e4", seq, [1.0 + 0.01 * k] * 4, t0=start + k, fs=4.0
                )
            )
            out.append(
                contract.samples(SITE, "valid", "hr", "h10", seq, [70.0], t0=start + k, fs=1.0)
            )
    return out


def test_fuzz_and_stalling_payloads_through_the_broker(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    now = time.time()
    state = tmp_path / "analysis.state"
    client = Client(mqtt_broker)
    retained_topics = [
        f"rekindle/v1/{SITE}/retained{i}/{s}" for i, (_n, s, _p) in enumerate(STALLING)
    ]
    for topic, (_name, _stream, payload) in zip(retained_topics, STALLING, strict=True):
        client.publish(topic, payload, retain=True)

    invalid: list[tuple[str, bytes]] = []
    for _kind, topic, payload in fuzz_cases(2_500, seed=11, now=now, site=SITE):
        if not _deliverable(topic):
            continue
        try:
            contract.decode(topic, payload, now=now)
        except contract.ContractError:
            invalid.append((topic, payload))
    invalid += [(f"rekindle/v1/{SITE}/live/{s}", p) for _n, s, p in STALLING]  # not retained
    valid = _valid_stream(now)
    assert len(invalid) > 2_000

    service = _service(mqtt_broker, influxd, state).start()
    try:
        _wait_for(lambda: service.stats.received >= len(STALLING), "retained delivered")
        sent = service.stats.received
        every = len(invalid) // len(valid) + 1
        infos: list[mqtt.MQTTMessageInfo] = []
        for i, msg in enumerate(valid):
            infos.append(client.send(msg, wait=False))
            for topic, payload in invalid[i * every : (i + 1) * every]:
                infos.append(client.publish(topic, payload, wait=False))
            if i % 20 == 19 or i == len(valid) - 1:  # keep the broker's queue short
                for info in infos:
                    info.wait_for_publish(30)
                sent += len(infos)
                infos.clear()
                _wait_for(partial(_has_received, service, sent), "service keeps up")
        expected_letters = len(invalid) + len(STALLING)
        _wait_for(lambda: client.count() >= expected_letters, "every dead letter")
        assert service.wait_idle(quiet_s=0.5)
    finally:
        service.stop()
    stats = service.stats
    assert stats.internal_errors == 0
    assert stats.rejected == expected_letters
    assert stats.accepted == len(valid)
    assert stats.duplicates == 0
    assert stats.seq_jumps == 2  # eda and hr
    assert stats.longest_message_s < 1.0, f"a message took {stats.longest_message_s:.2f} s"

    letters = client.letters
    assert len(letters) == expected_letters
    want = Counter(contract.deadletter_topic(t) for t, _p in invalid)
    want.update(contract.deadletter_topic(t) for t in retained_topics)
    assert Counter(t for t, _l in letters) == want
    for _topic, letter in letters:
        assert letter["field"]
        assert letter["reason"]
    samples = influxd.count(
        "SELECT count(value) FROM signal WHERE session = 'valid' AND stream = 'eda'", DB
    )
    assert samples == sum(len(m) for m in valid if m.stream == "eda")
    assert influxd.count("SELECT count(value) FROM signal WHERE session = 'valid'", DB) == sum(
        len(m) for m in valid
    )

    # a restart gets the retained poison again from the broker: not dead-lettered again
    again = _service(mqtt_broker, influxd, state).start()
    try:
        _wait_for(lambda: again.stats.received >= len(STALLING), "retained delivered again")
        assert again.wait_idle(quiet_s=0.5)
    finally:
        again.stop()
        for topic in retained_topics:
            client.publish(topic, b"", retain=True)
        client.close()
    assert again.stats.retained_repeats == len(STALLING)
    assert again.stats.rejected == 0
    assert len(client.letters) == expected_letters


def _eda(session: str, seq: int, t0: float, n: int = 4) -> contract.SampleMessage:
    return contract.samples(SITE, session, "eda", "e4", seq, [2.0] * n, t0=t0, fs=4.0)


def test_an_exception_while_handling_dead_letters_that_message_only(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    calls: list[int] = []

    def explode_once(_site: str, _session: str, _events: list[Event]) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("hook failed")

    client = Client(mqtt_broker)
    service = _service(mqtt_broker, influxd, tmp_path / "s", on_events=explode_once).start()
    t0 = time.time() - 100
    try:
        for k in range(40):  # 40 s of data: events once the 6-s lateness has passed
            client.send(_eda("boom", k, t0 + k))
        _wait_for(lambda: service.stats.received >= 40, "all received")
        _wait_for(lambda: client.count() >= 1, "the dead letter")
        assert service.wait_idle(quiet_s=0.3)
    finally:
        service.stop()
        client.close()
    assert service.stats.internal_errors == 1
    (topic, letter) = client.letters[0]
    assert topic == contract.deadletter_topic(f"rekindle/v1/{SITE}/boom/eda")
    assert letter["field"] == "processing"
    assert "RuntimeError while handling the message: hook failed" in str(letter["reason"])
    assert len(calls) > 10  # the worker went on with the next messages


def test_a_stuck_worker_goes_stale_and_its_message_is_dead_lettered_after_restart(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    release = threading.Event()

    class Hang(MetricsRunner):
        """Hangs the worker in its handling of the first message (the metrics hook: one
        20-s message alone gives no feature second, whose span widens the lateness)."""

        def message(self, msg: contract.Message) -> None:  # noqa: ARG002
            release.wait(60)

    beat = tmp_path / "heartbeat.json"
    state = tmp_path / "analysis.state"
    client = Client(mqtt_broker)
    topic, payload = contract.encode(_eda("stuck", 0, time.time() - 100, n=80))  # 20 s of data
    client.publish(topic, payload, retain=True)
    service = _service(mqtt_broker, influxd, state, metrics=Hang(), heartbeat_path=beat).start()
    try:
        # what 'rekindle analysis' runs: it returns (the process exits 70) on the stall
        assert cli.run_analysis(service, threading.Event(), 0.5) == cli.EXIT_STUCK
        _wait_for(
            lambda: (
                beat.exists()
                and health.verdict(health.read(beat), time.time(), max_age_s=2.0) is not None
            ),
            "the heartbeat goes stale",
            timeout=30,
        )
        assert cli.main(["health", "--heartbeat", str(beat), "--max-age", "2"]) == 1
    finally:
        release.set()
        service.stop()
    assert (tmp_path / "analysis.state.rejects.json").exists()

    again = _service(mqtt_broker, influxd, state).start()
    try:
        _wait_for(lambda: client.count() >= 1, "the stalling message dead-lettered")
        assert again.wait_idle(quiet_s=0.3)
    finally:
        again.stop()
        client.publish(topic, b"", retain=True)
        client.close()
    assert again.stats.rejected == 1
    assert "stalled the worker" in str(client.letters[0][1]["reason"])
    assert again.stats.accepted == 0


def test_marker_after_the_end_is_stored_on_the_ended_session(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    state = tmp_path / "analysis.state"
    client = Client(mqtt_broker)
    t0 = time.time() - 200
    service = _service(mqtt_broker, influxd, state).start()
    try:
        client.send(contract.StatusMessage(SITE, "ended", "e4", "online", t0))
        for k in range(30):
            client.send(_eda("ended", k, t0 + k))
        client.send(contract.StatusMessage(SITE, "ended", "e4", "end", t0 + 30))
        assert service.wait_sessions_finished(1, timeout=60)
        client.send(contract.MarkerMessage(SITE, "ended", "nurse", 0, (t0 + 40,), ("tears",)))
        _wait_for(lambda: service.stats.markers_after_end == 1, "the late marker")
    finally:
        service.stop()
    assert service.stats.sessions_finished == 1
    assert not service.pipelines  # not reopened

    # the ended session is in the checkpoint: a marker after a restart is stored on it too
    again = _service(mqtt_broker, influxd, state).start()
    try:
        client.send(contract.MarkerMessage(SITE, "ended", "nurse", 1, (t0 + 50,), ("calm",)))
        _wait_for(lambda: again.stats.markers_after_end == 1, "the marker after the restart")
    finally:
        again.stop()
        client.close()
    assert not again.pipelines
    assert again.stats.sessions_finished == 0
    rows = influxd.series("SELECT text FROM marker WHERE session = 'ended'", DB)
    assert [row[1] for row in rows[0]["values"]] == ["tears", "calm"]


def test_samples_after_the_end_start_a_new_run(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    """Only markers attach to an ended session; data after the end is a new run of it."""
    client = Client(mqtt_broker)
    t0 = time.time() - 200
    service = _service(mqtt_broker, influxd, tmp_path / "s").start()
    try:
        client.send(contract.StatusMessage(SITE, "rerun", "e4", "online", t0))
        client.send(_eda("rerun", 0, t0))
        client.send(contract.StatusMessage(SITE, "rerun", "e4", "end", t0 + 1))
        assert service.wait_sessions_finished(1, timeout=60)
        client.send(_eda("rerun", 0, t0 + 60))
        _wait_for(lambda: (SITE, "rerun") in service.pipelines, "a new run")
    finally:
        service.stop()
        client.close()
