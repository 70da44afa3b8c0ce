"""The BLE sub-commands, through an argparse parser built with register()."""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from rekindle import contract
from rekindle.cliconfig import RekindleParser, run_command
from rekindle.ingest.ble.cli import load_device_id_key, parse_devices, register
from rekindle.ingest.ble.manager import pseudonymous_id
from rekindle.mqtturl import MqttSettings, make_client
from tests.ble.collect import SITE, Collector
from tests.ble.emulation import CENTRAL, REPO, BleEmulation
from tests.servers import Mosquitto
from tests.waiting import wait_until


def _parser() -> argparse.ArgumentParser:
    parser = RekindleParser(prog="rekindle")
    register(
        parser.add_subparsers(dest="command", required=True, parser_class=argparse.ArgumentParser)
    )
    return parser


def _run(argv: list[str]) -> int:
    """The sub-command under the CLI's error and exit-code policy."""
    return run_command(_parser().parse_args(argv))


@pytest.mark.parametrize("hex_args", [["16 34 e4 04"], ["1634e404"], ["16", "34", "e4", "04"]])
def test_ble_decode_2a37(hex_args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ble", "decode", "--char", "2a37", *hex_args]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hr_bpm"] == 52
    assert out["rr_raw_1024ths"] == [1252]
    assert out["rr_ms"] == [1222.656]
    assert out["contact"] is True


def test_ble_decode_garbage_is_an_error_not_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ble", "decode", "--char", "2a37", "55 04 00 38 00 15 af"]) == 1
    assert "reserved flag bits" in capsys.readouterr().err
    assert _run(["ble", "decode", "--char", "2a37", "zz"]) == 2


def test_ble_decode_profile_and_battery(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ble", "decode", "--profile", "rekindle-eda-ref", "05 e8 03 d0 07"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "profile": "rekindle-eda-ref",
        "stream": "eda",
        "counter": 5,
        "values": [1.0, 2.0],
    }
    assert _run(["ble", "decode", "--char", "2a19", "57"]) == 0
    assert json.loads(capsys.readouterr().out)["percent"] == 87


def test_ingest_rejects_a_bad_device_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["ingest", "--session", "s1", "--device", "heart:x"]) == 2
    assert "rekindle ingest: error: device spec 'heart:x'" in capsys.readouterr().err


_MAIN = "import sys\nfrom rekindle.cli import main\nsys.exit(main(sys.argv[1:]))\n"


async def _cli(emulation: BleEmulation, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the sub-commands in their own process (signal handlers need a main thread)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _MAIN, *argv],
        capture_output=True,
        text=True,
        env=emulation.env,
        cwd=REPO,
        timeout=60,
        check=False,
    )


async def test_devices_scan_prints_the_wearable(ble_emulation: BleEmulation) -> None:
    ble_emulation.add_wearable("RK-WRIST-B", "hci2", "--no-hrs", "--eda-first")
    proc = await _cli(ble_emulation, "devices", "scan", "--timeout", "2", "--adapter", CENTRAL)
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "RK-WRIST-B" in x)
    assert line.startswith("D0:00:00:00:00:02")
    assert "eda (profile rekindle-eda-ref)" in line


async def test_ingest_streams_to_mqtt_and_stops_cleanly(
    ble_emulation: BleEmulation, mqtt_broker: Mosquitto, collector: Collector
) -> None:
    ble_emulation.add_wearable("RK-STRAP-A", "hci1")
    proc = await _cli(
        ble_emulation,
        "ingest",
        "--session",
        "cli-run",
        "--site",
        SITE,
        "--mqtt",
        mqtt_broker.url,
        "--adapter",
        CENTRAL,
        "--device",
        "hrs:RK-STRAP-A@strap",
        "--device",
        "eda:rekindle-eda-ref:RK-STRAP-A@strap",
        "--duration",
        "6",
    )
    assert proc.returncode == 0, proc.stderr
    # the ingest process is gone; wait for its last messages to reach our subscriber
    await asyncio.to_thread(
        wait_until,
        lambda: any(
            isinstance(m, contract.StatusMessage) and m.state == "end"
            for m in collector.session("cli-run")
        ),
        "the strap's end status",
    )
    msgs = collector.session("cli-run")
    states = [
        m.state for m in msgs if isinstance(m, contract.StatusMessage) and m.device == "strap"
    ]
    assert states == ["online", "end"]
    for stream in ("hr", "rr", "eda"):
        seqs = [m.seq for m in msgs if isinstance(m, contract.SampleMessage) and m.stream == stream]
        assert len(seqs) >= 3, stream
        assert seqs == list(range(len(seqs)))


class _Raw:
    """Every topic and payload under ``rekindle/v1/`` exactly as the broker delivers them."""

    def __init__(self, broker: Mosquitto) -> None:
        self.got: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = make_client(MqttSettings.from_url(broker.url))
        self.client.on_connect = lambda c, *_: c.subscribe("rekindle/v1/#", qos=1)
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._ready.wait(30)

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append((msg.topic, bytes(msg.payload)))

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.got)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_ingest_by_address_publishes_a_keyed_pseudonym_never_the_address(
    ble_emulation: BleEmulation, mqtt_broker: Mosquitto, tmp_path: Path
) -> None:
    strap = ble_emulation.add_wearable("RK-STRAP-P", "hci1")
    key_file = tmp_path / "device-id.key"
    raw = _Raw(mqtt_broker)
    try:
        proc = await _cli(
            ble_emulation,
            "ingest",
            "--session",
            "pseudo",
            "--site",
            SITE,
            "--mqtt",
            mqtt_broker.url,
            "--adapter",
            CENTRAL,
            "--device",
            f"hrs:{strap.address.lower()}",
            "--device-id-key-file",
            str(key_file),
            "--duration",
            "6",
        )
        assert proc.returncode == 0, proc.stderr
        await asyncio.to_thread(
            wait_until,
            lambda: any(b'"end"' in p for t, p in raw.messages() if "/pseudo/" in t),
            "the end status of the session",
        )
    finally:
        raw.close()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    device = pseudonymous_id(strap.address, key_file.read_text().strip().encode())
    mine = [(t, p) for t, p in raw.messages() if "/pseudo/" in t]
    samples = [contract.decode(t, p) for t, p in mine]
    assert {m.device for m in samples} == {device}
    assert any(isinstance(m, contract.SampleMessage) and m.stream == "hr" for m in samples)
    mac = strap.address.upper()
    forms = {
        mac,
        mac.lower(),
        mac.replace(":", "-"),
        mac.replace(":", ""),
        mac.replace(":", "").lower(),
        mac.replace(":", "-").lower(),
    }
    for topic, payload in mine:
        text = topic + payload.decode()
        assert not [f for f in forms if f in text], (topic, payload[:200])


def test_device_id_key_is_made_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "device-id.key"
    first = load_device_id_key(path)
    assert load_device_id_key(path) == first
    assert len(first) >= 32
    specs = parse_devices(["hrs:A0:9E:1A:12:34:56", "pmd:A0:9E:1A:12:34:56"], path)
    assert specs[0].device_id == specs[1].device_id == pseudonymous_id("A0:9E:1A:12:34:56", first)
    assert pseudonymous_id("A0:9E:1A:12:34:56", b"another key" * 4) != specs[0].device_id
    named = parse_devices(["hrs:A0:9E:1A:12:34:56@strap"], tmp_path / "never-made.key")
    assert named[0].device_id == "strap"
    assert not (tmp_path / "never-made.key").exists()
