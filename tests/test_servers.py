"""The test servers themselves: they start, answer, and are isolated."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.servers import InfluxD, Mosquitto


def test_mosquitto_round_trip(mqtt_broker: Mosquitto) -> None:
    got = threading.Event()
    received: list[bytes] = []

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(bytes(msg.payload))
        got.set()

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.on_message = on_message
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.subscribe("t/servers", qos=1)
    client.loop_start()
    try:
        client.publish("t/servers", b"hello", qos=1).wait_for_publish(60)
        assert got.wait(60)
    finally:
        client.loop_stop()
        client.disconnect()
    assert received == [b"hello"]


def test_influxd_write_and_query(influxd: InfluxD) -> None:
    influxd.create_database("t_servers")
    influxd._post("/write", {"db": "t_servers"}, b"m,tag=a value=1.5 1000000000\n")
    series = influxd.series('SELECT "value" FROM "m"', "t_servers")
    assert series[0]["values"] == [[1_000_000_000, 1.5]]
