"""One CLI convention: settings precedence, the site default, help text, errors and exit codes."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from rekindle.cli import build_parser, version
from rekindle.cliconfig import (
    DEFAULT_MQTT_URL,
    DEFAULT_SITE,
    SETTINGS,
    missing_help,
)
from tests.servers import Mosquitto, free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("REKINDLE_"):
            monkeypatch.delenv(key)


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    return subprocess.run(
        [sys.executable, "-m", "rekindle.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(env or {})},
        cwd=REPO,
    )


# --- precedence: flag > environment > config file > default ---------------------------------


def test_each_layer_wins_over_the_ones_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mark = ("mark", "x", "--session", "s")
    assert _parse(*mark).site == DEFAULT_SITE
    assert _parse(*mark).mqtt == DEFAULT_MQTT_URL

    config = tmp_path / "rekindle.toml"
    config.write_text('site = "from-config"\nmqtt_url = "mqtt://config-host:1883"\n')
    args = _parse("--config", str(config), *mark)
    assert (args.site, args.mqtt) == ("from-config", "mqtt://config-host:1883")

    monkeypatch.setenv("REKINDLE_SITE", "from-env")
    args = _parse("--config", str(config), *mark)
    assert (args.site, args.mqtt) == ("from-env", "mqtt://config-host:1883")

    args = _parse("--config", str(config), *mark, "--site", "from-flag")
    assert (args.site, args.mqtt) == ("from-flag", "mqtt://config-host:1883")


def test_config_file_after_the_command_and_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('influx_url = "http://db:8086"\ninflux_db = "rk"\nsite = "room-2"\n')
    args = _parse("analysis", "--config", str(config))
    assert (args.influx, args.influx_db, args.site) == ("http://db:8086", "rk", "room-2")
    monkeypatch.setenv("REKINDLE_CONFIG", str(config))
    args = _parse("analysis")
    assert (args.influx, args.influx_db) == ("http://db:8086", "rk")
    other = tmp_path / "other.toml"
    other.write_text('influx_url = "http://db:8086"\ninflux_db = "flag-file"\n')
    assert _parse("--config", str(other), "analysis").influx_db == "flag-file"  # flag > env


def test_token_file_setting_is_a_path(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'influx_url = "http://db:8086"\ninflux_token_file = "{tmp_path}/t"\n')
    assert _parse("--config", str(config), "analysis").influx_token_file == tmp_path / "t"


def test_demo_reads_connection_settings_only_from_its_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REKINDLE_MQTT_URL", "mqtt://clinic-broker:1883")
    monkeypatch.setenv("REKINDLE_INFLUX_URL", "http://clinic-db:8086")
    args = _parse("demo")
    assert (args.mqtt, args.influx) == (None, None)  # the embedded broker, files
    assert args.site == DEFAULT_SITE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('bogus = "x"\n', "unknown key 'bogus' (known keys: "),
        ("site = 3\n", 'site must be a string, e.g. site = "...", not int'),
        ("site = \n", "is not valid TOML"),
    ],
)
def test_bad_config_file_is_a_usage_error(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    proc = _cli("--config", str(config), "mark", "x", "--session", "s")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"rekindle mark: error: config file {config}"), proc.stderr
    assert expected in proc.stderr


def test_missing_config_file_and_missing_setting_say_what_to_do(tmp_path: Path) -> None:
    proc = _cli("--config", str(tmp_path / "nope.toml"), "mark", "x", "--session", "s")
    assert proc.returncode == 2
    assert "does not exist: check --config/REKINDLE_CONFIG" in proc.stderr
    proc = _cli("analysis")
    assert proc.returncode == 2
    assert proc.stderr == (
        "rekindle analysis: error: no InfluxDB URL given: pass --influx URL, set "
        'REKINDLE_INFLUX_URL or put influx_url = "..." in the config file (--config)\n'
    )


# --- one site default, help everywhere, --version ---------------------------------------------


def test_one_site_default_for_every_command_that_writes() -> None:
    parser = build_parser()
    for argv in (
        ["mark", "x", "--session", "s"],
        ["replay", "sim", "--session", "s"],
        ["record", "--session", "s", "--out", "r.jsonl"],
        ["ingest", "--session", "s", "--device", "hrs:X"],
        ["demo"],
    ):
        assert parser.parse_args(argv).site == DEFAULT_SITE, argv
    assert parser.parse_args(["analysis", "--influx", "http://x"]).site == "+"  # a filter: all


def test_every_option_has_help_text() -> None:
    assert missing_help(build_parser()) == []


def test_every_setting_is_documented() -> None:
    doc = (REPO / "docs" / "cli.md").read_text("utf-8")
    for s in SETTINGS.values():
        assert s.env in doc, s.env
        assert f"`{s.key}`" in doc, s.key
    assert DEFAULT_SITE in doc


def test_version() -> None:
    proc = _cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"rekindle {version()}"
    assert version() != "unknown"


# --- errors and exit codes --------------------------------------------------------------------


def test_usage_errors_exit_2() -> None:
    proc = _cli("replay", "sim", "--session", "s", "--mqtt", "http://x")
    assert proc.returncode == 2
    assert proc.stderr.startswith("rekindle replay: error: ")
    assert "scheme must be mqtt or mqtts" in proc.stderr
    proc = _cli("mark", "x")  # argparse's own usage error
    assert proc.returncode == 2
    assert "the following arguments are required: --session" in proc.stderr
    proc = _cli("--log-level", "LOUD", "mark", "x", "--session", "s")
    assert proc.returncode == 2
    assert "--log-level 'LOUD': use DEBUG, INFO, WARNING or ERROR" in proc.stderr


def test_replay_connects_before_it_reads(tmp_path: Path) -> None:
    """A broker that is down is reported first (exit 1), before the recording is opened."""
    url = f"mqtt://127.0.0.1:{free_port()}"
    missing = tmp_path / "no-such-recording.jsonl"
    proc = _cli("replay", str(missing), "--session", "s", "--speed", "max", "--mqtt", url)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"rekindle replay: error: MQTT {url}: cannot connect")
    assert "is the broker running? check --mqtt or REKINDLE_MQTT_URL" in proc.stderr
    assert "no-such-recording" not in proc.stderr


def test_settings_from_a_config_file_reach_the_broker(
    mqtt_broker: Mosquitto, tmp_path: Path
) -> None:
    """``mark`` with no flags: the broker and the site come from the file named by the env."""
    import paho.mqtt.client as mqtt  # noqa: PLC0415

    from rekindle.mqtturl import MqttSettings, make_client  # noqa: PLC0415

    config = tmp_path / "rekindle.toml"
    config.write_text(f'mqtt_url = "{mqtt_broker.url}"\nsite = "conf-site"\n')
    subscribed, got = threading.Event(), threading.Event()
    topics: list[str] = []
    client = make_client(MqttSettings.from_url(mqtt_broker.url))

    def on_connect(c: mqtt.Client, _u: object, _f: object, _rc: object, _p: object) -> None:
        c.subscribe("rekindle/v1/conf-site/m1/#", qos=1)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        topics.append(msg.topic)
        if b"tears" in bytes(msg.payload):
            got.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(30), "test subscriber never subscribed"
        proc = _cli("mark", "tears", "--session", "m1", env={"REKINDLE_CONFIG": str(config)})
        assert proc.returncode == 0, proc.stderr
        assert "in conf-site/m1" in proc.stdout
        assert got.wait(30), f"no marker under conf-site/m1, saw {topics}"
    finally:
        client.loop_stop()
        client.disconnect()


# --- BLE errors that say what to do -------------------------------------------------------------


@pytest.fixture
def bus_without_bluez(tmp_path: Path) -> Iterator[str]:
    """A private D-Bus system bus on which no BlueZ runs."""
    if shutil.which("dbus-daemon") is None:
        pytest.fail("dbus-daemon not found: install Debian's dbus package (apt-get install dbus)")
    socket = tmp_path / "bus"
    config = tmp_path / "bus.conf"
    config.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" '
        '"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">'
        f"<busconfig><type>system</type><listen>unix:path={socket}</listen>"
        "<auth>EXTERNAL</auth><policy context='default'><allow user='*'/><allow own='*'/>"
        + "".join(
            f"<allow {way}_type='{kind}'/>"
            for way in ("send", "receive")
            for kind in ("method_call", "signal", "method_return", "error")
        )
        + "</policy></busconfig>"
    )
    daemon = subprocess.Popen(
        ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile", "--print-address"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert daemon.stdout is not None
        address = daemon.stdout.readline().strip()
        assert address, "dbus-daemon printed no address"
        yield address
    finally:
        daemon.terminate()
        daemon.wait(10)
        if daemon.stdout is not None:
            daemon.stdout.close()


BLUEZ_DOWN = (
    "rekindle devices scan: error: BlueZ is not running ({}): start bluetoothd "
    "(systemctl start bluetooth) or check D-Bus"
)


def test_scan_without_dbus_says_what_to_do(tmp_path: Path) -> None:
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path}/no-bus"}
    proc = _cli("devices", "scan", "--timeout", "1", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith(BLUEZ_DOWN.format("no D-Bus system bus")), proc.stderr
    assert "Errno" not in proc.stderr


def test_scan_without_bluez_says_what_to_do(bus_without_bluez: str) -> None:
    env = {"DBUS_SYSTEM_BUS_ADDRESS": bus_without_bluez}
    proc = _cli("devices", "scan", "--timeout", "1", env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith(BLUEZ_DOWN.format("org.bluez not on D-Bus")), proc.stderr
