"""Fixtures for the BLE tests: a private BlueZ emulation per test, an MQTT collector."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from bleak.backends.bluezdbus import manager

from rekindle import contract
from rekindle.mqtturl import MqttSettings, make_client
from tests.ble.collect import SITE, Collector
from tests.ble.emulation import BleEmulation
from tests.servers import Mosquitto


async def _close_bleak_bus() -> None:
    """Close the D-Bus connection bleak opened for this event loop (no leaked socket)."""
    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = getattr(instance, "_bus", None)
    if bus is not None:
        bus.disconnect()
        with contextlib.suppress(TimeoutError, EOFError, OSError):
            await asyncio.wait_for(bus.wait_for_disconnect(), 2)


@pytest.fixture
async def ble_emulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BleEmulation]:
    emulation = BleEmulation.start(tmp_path)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", emulation.bus_address)
    try:
        yield emulation
    finally:
        await _close_bleak_bus()
        emulation.stop()


@pytest.fixture
def collector(mqtt_broker: Mosquitto) -> Iterator[Collector]:
    """Every message under ``rekindle/v1/{SITE}/``, decoded with the wire contract."""
    got = Collector([], threading.Lock())
    client = make_client(MqttSettings.from_url(mqtt_broker.url))
    ready = threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe(f"rekindle/v1/{SITE}/#", qos=1)

    def on_subscribe(_c: mqtt.Client, _u: object, _m: object, _rc: object, _p: object) -> None:
        ready.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        decoded = contract.decode(msg.topic, bytes(msg.payload))
        with got.lock:
            got.messages.append(decoded)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    assert ready.wait(60)
    yield got
    client.disconnect()
    client.loop_stop()
