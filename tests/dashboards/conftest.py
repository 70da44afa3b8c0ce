"""Data for the dashboard query tests: the S02 recording replayed through the real pipeline.

``s02_in_influx`` (tests/conftest.py) replays Stress-Predict S02 through mosquitto and the real
analysis service into influxd; the dashboards are proven against what it wrote. The time range of
the tests is the span of its feature rows (and of the end mark that follows them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import open_source
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.conftest import S02, ReplayedSession, fixture_path, recording_start
from tests.dashboards.grafana import Dataset
from tests.servers import InfluxD, Mosquitto

#: How much of S02 the "lost wearable" session sends before its wristband's link drops (s).
LOST_AFTER_S = 600.0
#: The "gaps" session: S02's first GAPS_SESSION_S seconds; the wristband's link drops for
#: LINK_DROP[1] s from LINK_DROP[0] s, and the EDA message starting LOST_EDA_AT_S s in is lost
#: in transit (s after the recording's start).
GAPS_SESSION_S = 900.0
LINK_DROP = (300.0, 60.0)
LOST_EDA_AT_S = 500.0


def _dataset(influxd: InfluxD, db: str, site: str, session: str, lines: int) -> Dataset:
    where = f"WHERE \"site\" = '{site}' AND \"session\" = '{session}'"
    first = influxd.series(f'SELECT first("arousal_index") FROM "features" {where}', db)
    last = influxd.series(f'SELECT last("arousal_index") FROM "features" {where}', db)
    assert first, "the replay wrote no feature rows"
    # a normal end's mark (features.ended_code) comes just after the last feature row
    ended = influxd.series(f'SELECT last("ended_code") FROM "features" {where}', db)
    start_s = first[0]["values"][0][0] / 1e9
    end_s = max([last[0]["values"][0][0] / 1e9, *(s["values"][0][0] / 1e9 for s in ended)])
    return Dataset(db, site, session, start_s, end_s, lines)


def _replayed(influxd: InfluxD, s: ReplayedSession) -> Dataset:
    return _dataset(influxd, s.db, s.site, s.session, s.lines_written)


@pytest.fixture(scope="session")
def dashboard_data(influxd: InfluxD, s02_in_influx: ReplayedSession) -> Dataset:
    """S02 replayed whole; its publisher ends the session normally (``status: end``)."""
    return _replayed(influxd, s02_in_influx)


@pytest.fixture(scope="session")
def off_skin_data(influxd: InfluxD, s02_eda_off_skin_in_influx: ReplayedSession) -> Dataset:
    """S02 with the wristband off the skin for 90 s (``tests.conftest.EDA_OFF_SKIN``)."""
    return _replayed(influxd, s02_eda_off_skin_in_influx)


@pytest.fixture(scope="session")
def lost_wearable_data(mqtt_broker: Mosquitto, influxd: InfluxD) -> Dataset:
    """The first ``LOST_AFTER_S`` seconds of S02, then the wristband's link drops.

    As the BLE ingest does on a disconnect, a ``status: lost`` is published at the time of the
    last sample, and nothing after it: no ``end``. The analysis service closes the session after
    its idle time (1 s here), through the real broker, into database ``rekindle_lost``.
    """
    db, site, session, device = "rekindle_lost", "galway", "S02-lost", "e4"
    influxd.create_database(db)
    chunks = list(open_source(fixture_path(S02)))
    start = recording_start(chunks)
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
    service = AnalysisService(settings, writer, site=site, session_idle_s=1.0).start()
    try:
        with Publisher(settings, site, session, device=device) as pub:
            pub.send_status(device, "online", start, detail="connected")
            last = start
            for chunk in chunks:
                if chunk.end > start + LOST_AFTER_S:
                    continue
                seq = pub.next_seq(chunk.device, chunk.stream)
                pub.publish(chunk.to_message(site, session, seq, pub.run))
                last = max(last, chunk.end)
            pub.send_status(device, "lost", last, detail="link lost")
            pub.flush()
        assert service.wait_sessions_finished(1, timeout=120), "the session was never closed"
        assert service.wait_idle(quiet_s=0.5)
    finally:
        service.stop()
    return _dataset(influxd, db, site, session, writer.written)


@dataclass(frozen=True)
class GapSession:
    """The "gaps" session in influxd, the service's gap summary of it, and the gaps it was given
    (per stream: count, seconds between the last sample before and the first after)."""

    data: Dataset
    summary: dict[str, tuple[int, float]]
    expected: dict[str, tuple[int, float]]


@pytest.fixture(scope="session")
def gap_session(mqtt_broker: Mosquitto, influxd: InfluxD) -> GapSession:
    """S02's first ``GAPS_SESSION_S`` seconds with two kinds of unrepaired gap, made the way the
    pipeline makes them, through the real broker and analysis service into ``rekindle_gaps``:

    * the wristband's link drops for ``LINK_DROP[1]`` s: its samples then are never published,
      and on reconnecting the publisher sends a gap record per stream (``Publisher.send_gap``,
      as the BLE ingest does: from the last sample before to the first sample after);
    * one EDA message is lost in transit: its seq is taken but it is never published, so the
      analysis service stores a seq gap when the next one arrives.

    The session then ends normally.
    """
    db, site, session, device = "rekindle_gaps", "galway", "S02-gaps", "e4"
    influxd.create_database(db)
    chunks = list(open_source(fixture_path(S02)))
    start = recording_start(chunks)
    drop_lo, drop_hi = start + LINK_DROP[0], start + LINK_DROP[0] + LINK_DROP[1]
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
    service = AnalysisService(settings, writer, site=site).start()
    expected: dict[str, tuple[int, float]] = {}
    last_end: dict[str, float] = {}
    dropped: set[str] = set()
    lost_eda = False
    try:
        with Publisher(settings, site, session, device=device) as pub:
            pub.send_status(device, "online", start, detail="connected")
            last = start
            for chunk in chunks:
                if chunk.end > start + GAPS_SESSION_S:
                    continue
                stream = chunk.stream
                if chunk.end >= drop_lo and chunk.start < drop_hi:
                    dropped.add(stream)  # the link is down: never published
                    continue
                if stream in dropped and chunk.start >= drop_hi and stream != "marker":
                    dropped.discard(stream)
                    pub.send_gap(device, stream, last_end[stream], chunk.start)
                    count, seconds = expected.get(stream, (0, 0.0))
                    expected[stream] = (count + 1, seconds + chunk.start - last_end[stream])
                seq = pub.next_seq(chunk.device, stream)
                if stream == "eda" and not lost_eda and chunk.start >= start + LOST_EDA_AT_S:
                    lost_eda = True  # lost in transit: its seq is gone, the message never sent
                    continue
                if stream == "eda" and lost_eda and "eda-seq" not in expected:
                    expected["eda-seq"] = (1, chunk.start - last_end[stream])
                pub.publish(chunk.to_message(site, session, seq, pub.run))
                last_end[stream] = chunk.end
                last = max(last, chunk.end)
            pub.send_status(device, "end", last, detail="session over")
            pub.flush()
        assert service.wait_sessions_finished(1, timeout=120), "the session never ended"
    finally:
        service.stop()
    count, seconds = expected.pop("eda-seq")
    eda_count, eda_seconds = expected["eda"]
    expected["eda"] = (eda_count + count, eda_seconds + seconds)
    return GapSession(
        _dataset(influxd, db, site, session, writer.written),
        service.gap_summary(site, session),
        expected,
    )


@pytest.fixture(scope="session")
def gap_data(gap_session: GapSession) -> Dataset:
    """The "gaps" session (:func:`gap_session`) for the dashboards' gap queries."""
    return gap_session.data


@pytest.fixture(scope="session")
def release_data(mqtt_broker: Mosquitto, influxd: InfluxD) -> Dataset:
    """The simulated 30-min session (``sim:1``: a scripted surge with a rebound, then one without)
    through the real broker and analysis service into ``rekindle_release``, ended normally.

    S02 holds no emotional release under the release defaults (a 90-s recovery after the
    episode has closed), so the release queries are proven on a session that has one.
    """
    db, site, session = "rekindle_release", "galway", "sim-1"
    influxd.create_database(db)
    chunks = list(simulate(SimulationScript(), seed=1))
    devices = sorted({c.device for c in chunks})
    settings = MqttSettings.from_url(mqtt_broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
    service = AnalysisService(settings, writer, site=site).start()
    try:
        with Publisher(settings, site, session, device=devices[0]) as pub:
            start = min(c.start for c in chunks)
            for device in devices:
                pub.send_status(device, "online", start, detail="connected")
            for chunk in chunks:
                seq = pub.next_seq(chunk.device, chunk.stream)
                pub.publish(chunk.to_message(site, session, seq, pub.run))
            last = max(c.end for c in chunks)
            for device in devices:
                pub.send_status(device, "end", last, detail="session over")
            pub.flush()
        assert service.wait_sessions_finished(1, timeout=120), "the session never ended"
    finally:
        service.stop()
    data = _dataset(influxd, db, site, session, writer.written)
    where = f"WHERE \"site\" = '{site}' AND \"session\" = '{session}' AND \"kind\" = 'release'"
    assert influxd.series(f'SELECT * FROM "episode" {where}', db), "no release stored"
    return data
