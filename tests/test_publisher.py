"""The ingest publisher on a real mosquitto: seq, retained status, last-will, broker outage."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings
from tests.servers import Mosquitto, free_port
from tests.waiting import GENEROUS_S, wait_until


class Collector:
    """A plain paho subscriber that decodes everything it receives with the contract."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[contract.Message, bool]] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(GENEROUS_S)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        decoded = contract.decode(msg.topic, bytes(msg.payload), now=time.time())
        self.messages.append((decoded, bool(msg.retain)))

    def wait_for(self, count: int) -> None:
        wait_until(lambda: len(self.messages) >= count, f"{count} messages")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_seq_per_stream_and_retained_status(mqtt_broker: Mosquitto) -> None:
    sink = Collector(mqtt_broker, "rekindle/v1/pub/p1/#")
    now = time.time()
    try:
        with Publisher(MqttSettings.from_url(mqtt_broker.url), "pub", "p1") as pub:
            pub.send_status("strap", "online", now, battery=90, rssi=-55)
            for i in range(3):
                pub.send_samples("hr", "strap", [60.0 + i], t0=now - 10 + i, fs=1.0)
                pub.send_samples("rr", "strap", [900.0 + i], t=[now - 10 + i])
            pub.send_gap("strap", "rr", now - 5, now - 2)
        sink.wait_for(8)
    finally:
        sink.close()
    by_stream: dict[str, list[int]] = {}
    for msg, _retained in sink.messages:
        if isinstance(msg, contract.SampleMessage | contract.GapMessage):
            by_stream.setdefault(msg.stream, []).append(msg.seq)
    assert by_stream == {"hr": [0, 1, 2], "rr": [0, 1, 2], "gap": [0]}
    # a late subscriber gets the device's last status, retained
    late = Collector(mqtt_broker, "rekindle/v1/pub/p1/status/+")
    try:
        late.wait_for(1)
    finally:
        late.close()
    status, retained = late.messages[0]
    assert retained
    assert isinstance(status, contract.StatusMessage)
    assert (status.state, status.battery, status.rssi) == ("online", 90, -55)


def test_last_will_marks_a_killed_publisher_lost(mqtt_broker: Mosquitto) -> None:
    script = (
        "import sys, time\n"
        "from rekindle.ingest.publisher import Publisher\n"
        "from rekindle.mqtturl import MqttSettings\n"
        f"p = Publisher(MqttSettings.from_url({mqtt_broker.url!r}), 'pub', 'will1',"
        " device='laptop').start()\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        sink = Collector(mqtt_broker, "rekindle/v1/pub/will1/status/+")
        proc.kill()
        proc.wait(GENEROUS_S)
        sink.wait_for(1)
        sink.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    status = sink.messages[-1][0]
    assert isinstance(status, contract.StatusMessage)
    assert (status.device, status.state) == ("laptop", "lost")


def test_nothing_is_lost_while_the_broker_is_away(tmp_path: Path) -> None:
    port = free_port()
    broker = Mosquitto.start(tmp_path / "mq1", port=port)
    before = Collector(broker, "rekindle/v1/pub/outage/hr")
    pub = Publisher(MqttSettings.from_url(broker.url), "pub", "outage").start()
    now = time.time()
    after: Collector | None = None
    try:
        for i in range(5):
            pub.send_samples("hr", "strap", [70.0 + i], t0=now - 100 + i, fs=1.0)
        pub.flush()
        before.wait_for(5)
        before.close()
        broker.stop()
        wait_until(lambda: not pub.connected, "the publisher to see the broker gone")
        for i in range(5, 10):  # published while the broker is down: queued by the client
            pub.send_samples("hr", "strap", [70.0 + i], t0=now - 100 + i, fs=1.0)
        assert pub.unacknowledged == 5
        broker = Mosquitto.start(tmp_path / "mq2", port=port)
        # subscribe before the publisher's reconnect (its minimum back-off is 1 s)
        after = Collector(broker, "rekindle/v1/pub/outage/hr")
        pub.flush(timeout=30)
        after.wait_for(5)
    finally:
        pub.close()
        if after is not None:
            after.close()
        broker.stop()
    values = sorted(
        m.values[0]
        for sink in (before, after)
        if sink is not None
        for m, _ in sink.messages
        if isinstance(m, contract.SampleMessage)
    )
    assert values == [70.0 + i for i in range(10)]


def test_spool_survives_a_publisher_restart_while_the_broker_is_down(tmp_path: Path) -> None:
    port = free_port()
    spool = tmp_path / "ingest.spool"
    settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{port}")
    now = time.time()
    first = Publisher(settings, "pub", "spool1", spool=spool).start()  # no broker yet
    sent = [
        first.send_samples("eda", "wrist", [0.5 + i / 100], t0=now - 60 + i, fs=1.0)
        for i in range(6)
    ]
    first.send_markers("nurse", [now - 30], ["tears"])
    first.close()  # the process ends with the broker still away
    assert first.spooled == 7
    assert len(spool.read_text().splitlines()) == 7

    broker = Mosquitto.start(tmp_path / "mq", port=port)
    sink = Collector(broker, "rekindle/v1/pub/spool1/+")
    try:
        second = Publisher(settings, "pub", "spool1", spool=spool).start()
        second.send_samples("eda", "wrist", [0.9], t0=now - 10, fs=1.0)
        second.close()
        sink.wait_for(8)
    finally:
        sink.close()
        broker.stop()
    assert not spool.exists()
    got = [m for m, _ in sink.messages]
    assert got[:6] == sent  # spooled first, unchanged (same seq and run), in order
    assert isinstance(got[6], contract.MarkerMessage)
    assert isinstance(got[7], contract.SampleMessage)
    assert got[7].values == (0.9,)
