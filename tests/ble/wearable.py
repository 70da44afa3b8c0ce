"""An emulated wearable served with ``bless`` on one bluezoo adapter (run as a subprocess).

Serves the Heart Rate Service (0x2A37 notify, 0x2A38 read), the Battery Service (0x2A19 read)
and the EDA service of a device profile (notify + start/stop command). Every sample it
generates is logged to ``--log`` (JSON lines, host wall-clock time) so tests know the truth:

* ``{"s": "rr", "b": beat, "raw": 1/1024 s, "t": beat time}``: one RR interval per beat,
  ``raw = 716 + (37 b mod 307)`` (unique for 307 beats, 700-999 ms).
* ``{"s": "hr", "n": notification, "hr": bpm, "t": send time}``
* ``{"s": "eda", "k": sample, "v": µS, "t": sample time}``: 4 Hz, ``v = 1 + 0.001 (k mod
  2000)`` (unique for 2000 samples), sent two per notification.

* with ``--pmd``, a Polar PMD service: ECG 130 Hz, ``{"s": "ecg", "k", "uv": k mod 20000,
  "t"}`` in uncompressed frames of 26 samples; ACC 25 Hz, ``{"s": "acc", "k", "mg": [k mod
  1000, -(k mod 500), 1000], "t"}`` in delta-compressed frames of 10 samples.

Events go to stdout as JSON lines (``advertising``, ``away``, ``back``, ``start``). Commands
come on stdin: ``away SECONDS`` (stop advertising and make the central's BlueZ forget the
device, as when a patient walks out of range; advertise again after SECONDS) and ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from bless import (  # type: ignore[attr-defined]
    BlessServer,
    GATTAttributePermissions,
    GATTCharacteristicProperties,
)
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType
from dbus_next.signature import Variant

from rekindle.ingest.ble import hrs, pmd
from rekindle.ingest.ble.profiles import load_profile
from tests.ble.pmd_encode import encode_deltas


def rr_raw(beat: int) -> int:
    return 716 + (37 * beat) % 307


def eda_value(k: int) -> float:
    return 1.0 + 0.001 * (k % 2000)


class Wearable:
    def __init__(self, args: argparse.Namespace, log: TextIO) -> None:
        self.args = args
        self.log = log
        self.profile = load_profile(args.profile)
        self.server: Any = None
        self.bus: Any = None
        self.eda_streaming = False
        self.pmd_on: dict[int, bool] = {pmd.MEASUREMENT_ECG: False, pmd.MEASUREMENT_ACC: False}

    def emit(self, event: str, **extra: object) -> None:
        print(json.dumps({"event": event, "t": time.time(), **extra}), flush=True)

    def record(self, **fields: object) -> None:
        self.log.write(json.dumps(fields) + "\n")
        self.log.flush()

    async def _adapter_props(self, adapter: str) -> Any:
        path = f"/org/bluez/{adapter}"
        intro = await self.bus.introspect("org.bluez", path)
        obj = self.bus.get_proxy_object("org.bluez", path, intro)
        return obj.get_interface("org.freedesktop.DBus.Properties")

    async def setup(self) -> None:
        a = self.args
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        server = BlessServer(name=a.name, adapter=a.adapter)
        self.server = server
        server.read_request_func = lambda char, **_kw: char.value
        server.write_request_func = self._on_write
        notify = GATTCharacteristicProperties.notify | GATTCharacteristicProperties.read
        readable = GATTAttributePermissions.readable
        services: list[tuple[str, list[tuple[str, Any, bytes]]]] = []
        hrs_chars = [
            (hrs.HEART_RATE_MEASUREMENT, notify, b"\x06\x3c"),
            (
                hrs.BODY_SENSOR_LOCATION,
                GATTCharacteristicProperties.read,
                bytes([2 if a.eda_first else 1]),
            ),
        ]
        p = self.profile
        start_char = p.start.characteristic if p.start else None
        eda_chars: list[tuple[str, Any, bytes]] = [(p.characteristic, notify, p.encode([1.0]))]
        if start_char is not None:
            eda_chars.append((start_char, GATTCharacteristicProperties.write, b"\x00"))
        battery = [(hrs.BATTERY_LEVEL, GATTCharacteristicProperties.read, bytes([a.battery]))]
        if a.hrs:
            services.append((hrs.HEART_RATE_SERVICE, hrs_chars))
        if a.pmd:
            cp_props = (
                GATTCharacteristicProperties.read
                | GATTCharacteristicProperties.write
                | GATTCharacteristicProperties.notify
            )
            services.append(
                (
                    pmd.PMD_SERVICE,
                    [
                        (pmd.PMD_CONTROL_POINT, cp_props, b"\x0f\x05"),
                        (pmd.PMD_DATA, GATTCharacteristicProperties.notify, b"\x00"),
                    ],
                )
            )
        if a.eda:
            services.insert(0 if a.eda_first else len(services), (p.service, eda_chars))
        services.append((hrs.BATTERY_SERVICE, battery))
        for service_uuid, chars in services:
            await server.add_new_service(service_uuid)
            for char_uuid, props, value in chars:
                perms = readable | GATTAttributePermissions.writeable
                await server.add_new_characteristic(
                    service_uuid, char_uuid, props, bytearray(value), perms
                )
        # bless reports Notifying=True from the start; bluezoo then takes the AcquireNotify
        # path, which bless does not implement. Clear it so StartNotify is used.
        for service in server.services.values():
            for char in service.characteristics:
                char.gatt._notifying = False
        props = await self._adapter_props(a.adapter)
        await props.call_set("org.bluez.Adapter1", "Discoverable", Variant("b", True))
        await props.call_set("org.bluez.Adapter1", "DiscoverableTimeout", Variant("u", 0))
        self.address = (await props.call_get("org.bluez.Adapter1", "Address")).value

    def _on_write(self, char: Any, value: Any, **_kw: object) -> None:
        char.value = value
        if str(char.uuid).lower() == pmd.PMD_CONTROL_POINT:
            data = bytes(value)
            op, kind = data[0], data[1]
            if kind in self.pmd_on and op in (pmd.PMD_OP_START, pmd.PMD_OP_STOP):
                self.pmd_on[kind] = op == pmd.PMD_OP_START
                self.emit("pmd", op=op, measurement=kind)
                status = 0
            else:
                status = 3
            self._notify(
                pmd.PMD_CONTROL_POINT, pmd.PMD_SERVICE, bytes([pmd.PMD_RESPONSE, op, kind, status])
            )
            return
        p = self.profile
        if p.start is not None and str(char.uuid).lower() == p.start.characteristic:
            self.eda_streaming = bytes(value) == p.start.value
            self.emit("start" if self.eda_streaming else "stop")

    async def advertise(self) -> None:
        await self.server.start()
        self.emit("advertising", address=self.address)

    async def away(self, seconds: float) -> None:
        self.emit("away")
        self.eda_streaming = False
        for kind in self.pmd_on:
            self.pmd_on[kind] = False
        await self.server.app.stop_advertising(self.server.adapter)
        central = self.args.central
        path = f"/org/bluez/{central}"
        intro = await self.bus.introspect("org.bluez", path)
        adapter = self.bus.get_proxy_object("org.bluez", path, intro).get_interface(
            "org.bluez.Adapter1"
        )
        await adapter.call_remove_device(f"{path}/dev_{self.address.replace(':', '_')}")
        self.emit("gone")
        await asyncio.sleep(seconds)
        # "back" is the moment before advertising resumes: the central can find the device
        # from then on (bluezoo may announce it before start_advertising returns here)
        back = time.time()
        await self.server.app.start_advertising(self.server.adapter)
        self.emit("back", t=back, advertising_t=time.time())

    def _notify(self, char_uuid: str, service_uuid: str, value: bytes) -> None:
        self.server.get_characteristic(char_uuid).value = bytearray(value)
        self.server.update_value(service_uuid, char_uuid)

    async def run_hrs(self, t_start: float) -> None:
        beat = 0
        next_beat = t_start + rr_raw(0) / 1024
        n = 0
        hr = 60
        while True:
            n += 1
            await _sleep_until(t_start + n * 1.0)
            now = time.time()
            raws: list[int] = []
            while next_beat <= now:
                raws.append(rr_raw(beat))
                self.record(s="rr", b=beat, raw=rr_raw(beat), t=next_beat)
                beat += 1
                next_beat += rr_raw(beat) / 1024
            if raws:
                hr = round(60 * 1024 / raws[-1])
            m = hrs.HeartRateMeasurement(
                hr_bpm=hr,
                contact_supported=True,
                contact_detected=True,
                rr_raw=tuple(raws),
                rr_present=bool(raws),
            )
            self.record(s="hr", n=n, hr=hr, t=now)
            self._notify(
                hrs.HEART_RATE_MEASUREMENT,
                hrs.HEART_RATE_SERVICE,
                hrs.encode_heart_rate_measurement(m),
            )

    async def run_eda(self, t_start: float) -> None:
        p = self.profile
        k = 0
        counter = 0
        per_packet = 2
        while True:
            await _sleep_until(t_start + (k + per_packet - 1) / p.rate_hz + 0.01)
            values = []
            for i in range(per_packet):
                values.append(eda_value(k + i))
                self.record(
                    s="eda",
                    k=k + i,
                    v=eda_value(k + i),
                    t=t_start + (k + i) / p.rate_hz,
                    sent=self.eda_streaming,
                )
            k += per_packet
            if self.eda_streaming or p.start is None:
                self._notify(p.characteristic, p.service, p.encode(values, counter))
                counter += 1

    async def run_ecg(self, t_start: float) -> None:
        k, per_frame, fs = 0, 26, 130.0
        while True:
            await _sleep_until(t_start + (k + per_frame - 1) / fs + 0.005)
            values = [(k + i) % 20000 for i in range(per_frame)]
            sent = self.pmd_on[pmd.MEASUREMENT_ECG]
            for i, v in enumerate(values):
                self.record(s="ecg", k=k + i, uv=v, t=t_start + (k + i) / fs, sent=sent)
            if sent:
                body = b"".join(v.to_bytes(3, "little", signed=True) for v in values)
                frame = bytes([pmd.MEASUREMENT_ECG]) + time.time_ns().to_bytes(8, "little")
                self._notify(pmd.PMD_DATA, pmd.PMD_SERVICE, frame + b"\x00" + body)
            k += per_frame

    async def run_acc(self, t_start: float) -> None:
        k, per_frame, fs = 0, 10, 25.0
        while True:
            await _sleep_until(t_start + (k + per_frame - 1) / fs + 0.005)
            triples = [[(k + i) % 1000, -((k + i) % 500), 1000] for i in range(per_frame)]
            sent = self.pmd_on[pmd.MEASUREMENT_ACC]
            for i, mg in enumerate(triples):
                self.record(s="acc", k=k + i, mg=mg, t=t_start + (k + i) / fs, sent=sent)
            if sent:
                deltas = [
                    abs(b[c] - a[c]) for a, b in itertools.pairwise(triples) for c in range(3)
                ]
                bits = max(max(deltas, default=0).bit_length() + 1, 2)
                frame = bytes([pmd.MEASUREMENT_ACC]) + time.time_ns().to_bytes(8, "little")
                self._notify(
                    pmd.PMD_DATA,
                    pmd.PMD_SERVICE,
                    frame + b"\x80" + encode_deltas(triples, 16, bits),
                )
            k += per_frame


async def _sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))


async def _commands(w: Wearable) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := (await reader.readline()).decode().strip():
        cmd, *rest = line.split()
        if cmd == "quit":
            return
        if cmd == "away":
            task = asyncio.create_task(w.away(float(rest[0])), name="away")
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def _main(args: argparse.Namespace) -> None:
    with Path(args.log).open("a", encoding="utf-8") as log:
        w = Wearable(args, log)
        await w.setup()
        await asyncio.sleep(args.delay)
        await w.advertise()
        t_start = time.time()
        streams = []
        if args.hrs:
            streams.append(asyncio.create_task(w.run_hrs(t_start), name="hrs"))
        if args.eda:
            streams.append(asyncio.create_task(w.run_eda(t_start), name="eda"))
        if args.pmd:
            streams.append(asyncio.create_task(w.run_ecg(t_start), name="ecg"))
            streams.append(asyncio.create_task(w.run_acc(t_start), name="acc"))
        await _commands(w)
        for task in streams:
            task.cancel()
        await w.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--central", default="hci0")
    parser.add_argument("--name", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--profile", default="rekindle-eda-ref")
    parser.add_argument("--no-hrs", dest="hrs", action="store_false")
    parser.add_argument("--no-eda", dest="eda", action="store_false")
    parser.add_argument("--eda-first", action="store_true")
    parser.add_argument("--pmd", action="store_true", help="also serve Polar PMD ECG/ACC")
    parser.add_argument("--battery", type=int, default=87)
    parser.add_argument("--delay", type=float, default=0.0)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
