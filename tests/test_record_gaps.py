"""`rekindle record` knows what it missed: a seq gap inside a stream and messages lost at the
tail (the publisher's ``end`` says how many it sent) make it exit 1 naming them; a resent
duplicate is recorded once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from rekindle import contract
from rekindle.ingest.sources.recording import read_recording
from tests.servers import Mosquitto

SITE, SESSION, RUN = "recgap", "g1", "run1"


def test_record_exits_1_naming_what_it_missed(mqtt_broker: Mosquitto, tmp_path: Path) -> None:
    out = tmp_path / "gaps.jsonl.gz"
    rec = subprocess.Popen(
        [
            *(sys.executable, "-m", "rekindle.cli", "record"),
            *("--session", SESSION, "--site", SITE, "--mqtt", mqtt_broker.url),
            *("--out", str(out)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    client = Client(callback_api_version=CallbackAPIVersion.VERSION2)
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    now = time.time() - 100

    def send(msg: contract.Message) -> None:
        topic, payload = contract.encode(msg)
        retain = isinstance(msg, contract.StatusMessage)
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def eda(seq: int, n: int) -> contract.SampleMessage:
        return contract.SampleMessage(
            SITE, SESSION, "eda", "e4", seq, (1.0, 1.1), now + seq, 2.0, None, RUN, n
        )

    try:
        assert rec.stdout is not None
        assert rec.stdout.readline().startswith(f"recording {SITE}/{SESSION}")
        send(contract.StatusMessage(SITE, SESSION, "e4", "online", now, run=RUN, sent=0))
        send(eda(0, 0))
        send(eda(1, 1))
        send(eda(1, 1))  # resent: recorded once
        send(eda(3, 3))  # seq 2 (n 2) lost
        send(contract.SampleMessage(SITE, SESSION, "hr", "e4", 0, (60.0,), now, 1.0, None, RUN, 4))
        # n 5 (the last hr message) lost at the tail: only 'sent' tells
        send(contract.StatusMessage(SITE, SESSION, "e4", "end", now + 9, run=RUN, sent=6))
        stdout, stderr = rec.communicate(timeout=120)
    finally:
        client.loop_stop()
        client.disconnect()
        if rec.poll() is None:
            rec.kill()
    assert rec.returncode == 1, (stdout, stderr)
    assert "session complete" in stdout
    assert "1 resent duplicate(s) recorded once" in stdout
    assert "missed 2 message(s)" in stderr
    assert "e4/eda: 1 message(s) missing" in stderr
    assert f"run {RUN}: 2 of its messages never arrived" in stderr
    assert len(list(read_recording(out))) == 4
