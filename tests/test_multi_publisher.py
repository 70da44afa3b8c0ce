"""Several publishers of one session: a chest strap (HR, RR) and a wristband (EDA), each with its
own ingest process, publish one session concurrently through the real broker into the real
analysis service and influxd, paced like live devices (accelerated). Every sample is stored
once, the session ends when both devices sent ``end``, and the episodes and feature rows equal
the offline analysis of the same data.

The analysis orders a session's data by a watermark (the latest sample time seen minus
``lateness_s``, 10 s): devices of one session must stay within that of each other in data time,
which live devices (paced by the clock) do. Independent publishers of recorded data at ``max``
speed do not; a recording of several devices is replayed through one publisher (``rekindle
replay``), which keeps them in time order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.offline import run_pipeline
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.base import Chunk
from rekindle.ingest.sources.simulator import DEVICE_EDA, DEVICE_HR
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.test_durable import DEADLINE_S, session_chunks, stored_episodes

SITE = "multi"
#: 13 simulated minutes (the first scripted surge and its release) at 15x: 52 s of wall time,
#: so the two devices may drift ~0.6 s of wall time apart before the 10-s lateness allowance
#: is used up.
MINUTES, SPEED = 13.0, 15.0


def _stream_counts(influx: InfluxD, db: str, session: str) -> dict[str, int]:
    series = influx.series(
        f"SELECT count(value) FROM signal WHERE session = '{session}' GROUP BY stream", db
    )
    return {s["tags"]["stream"]: int(s["values"][0][1]) for s in series}


def _expected_counts(chunks: list[Chunk]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in chunks:
        if c.stream != "marker":
            out[c.stream] = out.get(c.stream, 0) + len(c.values)
    return out


@pytest.mark.slow
def test_two_devices_of_one_session_publishing_concurrently(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    db, session = "multi_publisher", "m1"
    influxd.create_database(db)
    chunks = session_chunks(seed=3, minutes=MINUTES)
    devices = [DEVICE_HR, DEVICE_EDA]
    # the clinician's marker ("tears") goes out through the wristband's ingest
    sends = {DEVICE_HR: {DEVICE_HR}, DEVICE_EDA: {c.device for c in chunks} - {DEVICE_HR}}
    assert sends[DEVICE_EDA] == {DEVICE_EDA, "clinician"}
    offline = run_pipeline(iter(chunks), "sim", site=SITE, session="x")
    offline_episodes = sorted((str(e.kind), e.onset, e.offset) for e in offline.episodes)
    assert {k for k, _, _ in offline_episodes} == {"arousal", "release"}
    offline_features = sum(1 for f in offline.features if f.arousal_index is not None)
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
    service = AnalysisService(
        settings, writer, site=SITE, state_path=tmp_path / "analysis.state"
    ).start()
    errors: list[BaseException] = []
    started = threading.Barrier(len(devices))

    def device(name: str) -> None:
        try:
            with Publisher(settings, SITE, session, device=name, ack_window=500) as pub:
                started.wait(30)
                replay(
                    (c for c in chunks if c.device in sends[name]),
                    pub,
                    speed=SPEED,
                    status_device=name,
                )
                pub.flush(timeout=DEADLINE_S)
        except Exception as exc:  # noqa: BLE001 (reported by the test thread)
            errors.append(exc)

    threads = [threading.Thread(target=device, args=(d,), name=f"pub-{d}") for d in devices]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join(DEADLINE_S)
        assert not errors, errors
        assert service.wait_sessions_finished(1, timeout=DEADLINE_S), "the session never ended"
        # ended once: by the second device's end, not by the first one's
        assert service.stats.sessions_finished == 1
    finally:
        service.stop()
    print(f"two publishers at {SPEED:g}x: {time.monotonic() - t0:.1f} s")
    assert _stream_counts(influxd, db, session) == _expected_counts(chunks)
    stored_features = influxd.count(
        f"SELECT count(arousal_index) FROM features WHERE session = '{session}'", db
    )
    assert stored_features == offline_features
    assert stored_episodes(influxd, db, session) == offline_episodes
    ended = influxd.count(f"SELECT count(ended) FROM features WHERE session = '{session}'", db)
    assert ended == 1, "one end mark, once both devices ended"
    # each device's samples in its own order: the HR values as the strap sent them
    hr = influxd.series(
        f"SELECT value FROM signal WHERE session = '{session}' AND stream = 'hr'", db
    )
    sent = [v for c in chunks if c.stream == "hr" for v in c.values]
    assert [row[1] for row in hr[0]["values"]] == sent
