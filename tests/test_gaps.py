"""seq gaps at the analysis service (with a checkpoint): a late resend is put back in order, a
message that never comes is given up after ``gap_wait_s`` and stored as a ``gap`` point; a
session's end waits behind its waiting messages."""

from __future__ import annotations

import time
from pathlib import Path

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.service import AnalysisService
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto

SITE, RUN = "gaps", "r1"


def test_late_resend_is_reordered_and_a_lost_message_becomes_a_gap_point(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    influxd.create_database("gaps")
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="gaps")))
    service = AnalysisService(
        MqttSettings.from_url(mqtt_broker.url),
        writer,
        site=SITE,
        state_path=tmp_path / "state",
        gap_wait_s=1.0,
    ).start()
    client = Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    now = time.time() - 100

    def send(msg: contract.Message) -> None:
        topic, payload = contract.encode(msg)
        client.publish(topic, payload, qos=1).wait_for_publish(10)

    def hr(seq: int) -> contract.SampleMessage:
        return contract.samples(
            SITE, "s", "hr", "strap", seq, [60.0 + seq], t0=now + seq, fs=1.0, run=RUN
        )

    try:
        send(contract.StatusMessage(SITE, "s", "strap", "online", now, run=RUN))
        for seq in (0, 2, 1, 3, 5, 6):  # 2 overtakes 1 (a resend); 4 never comes
            send(hr(seq))
        send(contract.StatusMessage(SITE, "s", "strap", "end", now + 7, run=RUN))
        assert service.wait_sessions_finished(1, timeout=120)
    finally:
        service.stop()
        client.loop_stop()
        client.disconnect()
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
