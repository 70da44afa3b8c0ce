"""seq gaps at the analysis service (with a checkpoint): a late resend is put back in order, a
message that never comes is given up after ``gap_wait_s`` and stored as a ``gap`` point; a
session's end waits behind its waiting messages.

A status delivered before data its run published earlier (mosquitto does that when its in-flight
window frees and fills out of order, as it does for the partitioned workers) waits for that data,
counted by the status's ``sent``: an ``end`` never finishes a session before its last messages,
which would then start a new run of it. Data that never comes is waited for ``gap_wait_s``, then
the status applies."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

SITE, RUN = "gaps", "r1"
ORDER_SITE, ORDER_DB = "order", "status_order"
Send = Callable[[contract.Message], None]


@contextmanager
def _service(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path, site: str, db: str
) -> Iterator[tuple[AnalysisService, Send]]:
    """A checkpointed service with ``gap_wait_s`` 1 s for ``site`` writing to ``db``, and a
    QoS 1 publisher's ``send`` that returns once the broker has the message; stopped on exit."""
    influxd.create_database(db)
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database=db)))
    service = AnalysisService(
        MqttSettings.from_url(mqtt_broker.url),
        writer,
        site=site,
        state_path=tmp_path / "state",
        gap_wait_s=1.0,
    ).start()
    client = Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()

    def send(msg: contract.Message) -> None:
        topic, payload = contract.encode(msg)
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    try:
        yield service, send
    finally:
        service.stop()
        client.loop_stop()
        client.disconnect()


def test_late_resend_is_reordered_and_a_lost_message_becomes_a_gap_point(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    now = time.time() - 100

    def hr(seq: int) -> contract.SampleMessage:
        return contract.samples(
            SITE, "s", "hr", "strap", seq, [60.0 + seq], t0=now + seq, fs=1.0, run=RUN
        )

    with _service(mqtt_broker, influxd, tmp_path, SITE, "gaps") as (service, send):
        send(contract.StatusMessage(SITE, "s", "strap", "online", now, run=RUN))
        for seq in (0, 2, 1, 3, 5, 6):  # 2 overtakes 1 (a resend); 4 never comes
            send(hr(seq))
        send(contract.StatusMessage(SITE, "s", "strap", "end", now + 7, run=RUN))
        assert service.wait_sessions_finished(1, timeout=120)
    stored = influxd.series("SELECT value FROM signal WHERE session = 's'", "gaps")
    assert [row[1] for row in stored[0]["values"]] == [60.0, 61.0, 62.0, 63.0, 65.0, 66.0]
    gaps = influxd.series(
        'SELECT "messages", "first_seq", "last_seq", "start", "end" FROM gap '
        "WHERE session = 's' AND source = 'seq'",
        "gaps",
    )
    assert [row[1:] for row in gaps[0]["values"]] == [[1, 4, 4, now + 3, now + 5]]
    assert (service.stats.gaps, service.stats.held) == (1, 3)  # 2 waited for 1; 5, 6 for 4
    assert service.stats.duplicates == 0
    # the end waited behind 5 and 6: they did not reopen the session after its end
    assert (service.stats.sessions_finished, len(service.pipelines)) == (1, 0)


def test_end_waits_for_the_data_published_before_it(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    now = time.time() - 100

    def hr(session: str, seq: int) -> contract.SampleMessage:
        msg = contract.samples(
            ORDER_SITE, session, "hr", "strap", seq, [60.0 + seq], t0=now + seq, fs=1.0, run=RUN
        )
        return dataclasses.replace(msg, n=seq)

    def end(session: str, sent: int) -> contract.StatusMessage:
        return contract.StatusMessage(
            ORDER_SITE, session, "strap", "end", now + 6, run=RUN, sent=sent
        )

    with _service(mqtt_broker, influxd, tmp_path, ORDER_SITE, ORDER_DB) as (service, send):
        # "late": the end (after 6 messages) arrives before the last two
        send(contract.StatusMessage(ORDER_SITE, "late", "strap", "online", now, run=RUN, sent=0))
        for seq in (0, 1, 2, 3):
            send(hr("late", seq))
        send(end("late", 6))
        for seq in (4, 5):
            send(hr("late", seq))
        assert service.wait_sessions_finished(1, timeout=120)
        # "lost": the end counts 6 messages, the last two never come
        send(contract.StatusMessage(ORDER_SITE, "lost", "strap", "online", now, run=RUN, sent=0))
        for seq in (0, 1, 2, 3):
            send(hr("lost", seq))
        send(end("lost", 6))
        assert service.wait_sessions_finished(2, timeout=120)
    for session, values in (("late", [60.0, 61, 62, 63, 64, 65]), ("lost", [60.0, 61, 62, 63])):
        stored = influxd.series(f"SELECT value FROM signal WHERE session = '{session}'", ORDER_DB)
        assert [row[1] for row in stored[0]["values"]] == values, session
        ends = influxd.count(
            f"SELECT count(state) FROM status WHERE session = '{session}' AND state = 'end'",
            ORDER_DB,
        )
        assert ends == 1, session
    # the late data did not reopen the ended session as a new run
    assert (service.stats.sessions_finished, len(service.pipelines)) == (2, 0)
    assert service.stats.duplicates == 0


def test_a_run_gap_given_up_is_logged_with_the_missing_range(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages ordered by their run's ``n``: ``n`` 4 never comes; the warning names 4-4."""
    site, now = "rungap", time.time() - 100

    def hr(seq: int) -> contract.SampleMessage:
        msg = contract.samples(
            site, "s", "hr", "strap", seq, [60.0 + seq], t0=now + seq, fs=1.0, run=RUN
        )
        return dataclasses.replace(msg, n=seq)

    caplog.set_level(logging.WARNING, logger="rekindle.analysis.service")
    with _service(mqtt_broker, influxd, tmp_path, site, "run_gap") as (service, send):
        send(contract.StatusMessage(site, "s", "strap", "online", now, run=RUN, sent=0))
        for seq in (0, 1, 2, 3, 5, 6):
            send(hr(seq))
        send(contract.StatusMessage(site, "s", "strap", "end", now + 7, run=RUN, sent=7))
        assert service.wait_sessions_finished(1, timeout=120)
    gave_up = [r.getMessage() for r in caplog.records if "gave up waiting" in r.getMessage()]
    assert gave_up == [f"gave up waiting for messages 4-4 of run {RUN} in {site}/s"]
