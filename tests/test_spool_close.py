"""The write-ahead log when the analysis service is closed with InfluxDB away: what was not
written yet goes to the spool on ``close()``, and nothing is lost once a restarted service (or
writer) finds InfluxDB again. Real influxd (stopped and restarted on its port), real mosquitto.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rekindle.analysis import points
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.test_durable import DEADLINE_S, counts, expected, session_chunks, stored_episodes

SITE = "spool-close"
#: Most seconds a ``stop(timeout=2.0)`` with InfluxDB away may take (its steps each get 2 s).
STOP_BOUND_S = 20.0


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[InfluxD]:
    """An influxd of this test alone (it is stopped and restarted on the same port)."""
    server = InfluxD.start(tmp_path / "influxd")
    yield server
    server.stop()


def _wal_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:.0f} s")
        time.sleep(0.05)


def test_close_with_influxdb_away_spools_what_is_queued_and_a_new_writer_writes_it(
    own_influxd: InfluxD, tmp_path: Path
) -> None:
    """Lines only queued (never persisted) when the writer is closed go to the write-ahead log;
    the next writer on that log writes every one of them once InfluxDB answers."""
    db, wal = "spool_close_writer", tmp_path / "writer.wal"
    own_influxd.create_database(db)
    port, data_dir = own_influxd.port, tmp_path / "influxd"
    lines = [
        points.line(
            "signal",
            {"site": SITE, "session": "w", "device": "d", "stream": "eda"},
            {"value": 0.5 + i / 1000},
            points.to_ns(1_700_000_000 + i / 4),
        )
        for i in range(12_000)
    ]
    own_influxd.stop()
    writer = BufferedWriter(
        V1Transport(InfluxSettings(own_influxd.url, database=db)), spool_path=wal
    )
    writer.add([x for x in lines if x is not None])  # > batch_lines: one failed attempt
    assert not wal.exists(), "nothing persisted before close()"
    assert writer.queued == len(lines)
    writer.close(timeout_s=1.0)
    assert _wal_lines(wal) == len(lines) == writer.spooled
    restarted = InfluxD.start(data_dir, port=port)
    try:
        again = BufferedWriter(
            V1Transport(InfluxSettings(restarted.url, database=db)), spool_path=wal
        )
        assert again.flush(timeout_s=60.0), "the write-ahead log was not written"
        again.close()
        assert not wal.exists()
        stored = restarted.count(
            f"SELECT count(value) FROM signal WHERE session = 'w' AND site = '{SITE}'", db
        )
        assert stored == len(lines)
    finally:
        restarted.stop()


@pytest.mark.parametrize("persistent", [False, True], ids=["clean-session", "persistent"])
def test_stop_with_influxdb_away_keeps_to_its_timeout(
    mqtt_broker: Mosquitto, own_influxd: InfluxD, tmp_path: Path, persistent: bool
) -> None:
    """``stop(timeout=...)`` with InfluxDB away and a write-ahead log gives up on InfluxDB
    after its timeout and spools: the final commit of a persistent session once retried for
    the committer's 60-s default instead (it takes the job before ``close()`` passes the
    timeout on)."""
    db, session = f"spool_stop_{int(persistent)}", f"s{int(persistent)}"
    own_influxd.create_database(db)
    chunks = session_chunks(seed=7, minutes=2)
    own_influxd.stop()
    settings = MqttSettings.from_url(mqtt_broker.url)
    wal = tmp_path / "analysis.wal"
    service = AnalysisService(
        settings,
        BufferedWriter(V1Transport(InfluxSettings(own_influxd.url, database=db)), spool_path=wal),
        site=SITE,
        state_path=tmp_path / "analysis.state",
        client_id=f"rekindle-analysis-{db}" if persistent else None,
        persistent_session=persistent,
    ).start()
    with Publisher(settings, SITE, session, device="sim") as pub:
        for chunk in chunks[:200]:
            seq = pub.next_seq(chunk.device, chunk.stream)
            pub.publish(chunk.to_message(SITE, session, seq, pub.run))
        pub.flush(timeout=DEADLINE_S)
    _wait(lambda: service.stats.accepted >= 200, "200 messages handled")
    _wait(wal.exists, "lines in the write-ahead log")
    stopping = time.monotonic()
    service.stop(timeout=1.0)
    stop_s = time.monotonic() - stopping
    assert stop_s < STOP_BOUND_S, f"stop(timeout=1.0) took {stop_s:.1f} s"
    assert service.writer.queued == 0, "close() left lines in memory only"
    assert _wal_lines(wal) == service.writer.spooled > 0


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [False, True], ids=["clean-session", "persistent"])
def test_service_stopped_with_influxdb_away_loses_nothing_on_restart(
    mqtt_broker: Mosquitto, own_influxd: InfluxD, tmp_path: Path, persistent: bool
) -> None:
    """A session is streaming (the project's publisher, end-to-end acknowledgements) while
    InfluxDB is away; the service is stopped mid-session, so what it had processed is only in
    its write queue and write-ahead log; a new service on the same state and log, with InfluxDB
    back, finishes the session: every sample stored once, episodes equal offline."""
    db, session = f"spool_close_{int(persistent)}", f"c{int(persistent)}"
    port, data_dir = own_influxd.port, tmp_path / "influxd"
    own_influxd.create_database(db)
    chunks = session_chunks(seed=6, minutes=12)
    samples, features, episodes = expected(chunks)
    own_influxd.stop()
    settings = MqttSettings.from_url(mqtt_broker.url)
    wal, state = tmp_path / "analysis.wal", tmp_path / "analysis.state"

    def service(url: str) -> AnalysisService:
        return AnalysisService(
            settings,
            BufferedWriter(V1Transport(InfluxSettings(url, database=db)), spool_path=wal),
            site=SITE,
            state_path=state,
            client_id=f"rekindle-analysis-{db}" if persistent else None,
            persistent_session=persistent,
        ).start()

    first = service(own_influxd.url)
    published = threading.Event()

    def publish() -> None:
        with Publisher(settings, SITE, session, device="sim", ack_window=500) as pub:
            pub.send_status("sim", "online", chunks[0].start)
            for chunk in chunks:
                seq = pub.next_seq(chunk.device, chunk.stream)
                pub.publish(chunk.to_message(SITE, session, seq, pub.run))
            pub.send_status("sim", "end", chunks[-1].end)
            pub.flush(timeout=DEADLINE_S)
        published.set()

    publisher = threading.Thread(target=publish, name="publish-spool-close", daemon=True)
    publisher.start()
    _wait(lambda: first.stats.accepted >= len(chunks) // 3, "a third of the session handled")
    spooled_before = first.writer.spooled
    stopping = time.monotonic()
    first.stop(timeout=2.0)  # InfluxDB away: the flush gives up, the queue goes to the log
    stop_s = time.monotonic() - stopping
    # a few times the 2-s budget (worker, final commit, writer), far below the 60-s default
    assert stop_s < STOP_BOUND_S, f"stop(timeout=2.0) took {stop_s:.1f} s"
    assert not published.is_set(), "the session was over before the stop: nothing tested"
    assert first.writer.queued == 0, "close() left lines in memory only"
    assert _wal_lines(wal) == first.writer.spooled > 0
    print(
        f"stop with InfluxDB away: {first.writer.spooled} lines in the write-ahead log, "
        f"{first.writer.spooled - spooled_before} of them spooled by stop()/close()"
    )
    restarted = InfluxD.start(data_dir, port=port)
    try:
        second = service(restarted.url)
        try:
            _wait(published.is_set, "the publisher finished (resending what was unconfirmed)")
            publisher.join(30)
            _wait(lambda: counts(restarted, db, session)[2] == 1, "the session's end stored")
            _wait(lambda: not wal.exists(), "the write-ahead log written to InfluxDB")
        finally:
            second.stop()
        assert counts(restarted, db, session) == (samples, features, 1)
        assert stored_episodes(restarted, db, session) == episodes
    finally:
        restarted.stop()
