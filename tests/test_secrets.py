"""Secrets never reach a log line or a process argument (issue 10, deliverable 7).

Real mosquitto with a password file, real influxd with authentication, real ``rekindle``
processes: the analysis service and ``rekindle mark`` run with credentials given by file and by
environment variable (and, discouraged, inside the URLs); no password shows in their output or
in ``/proc/<pid>/cmdline``, and the data still lands.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rekindle.analysis.errors import StorageError
from rekindle.analysis.influx import InfluxSettings
from rekindle.cli import CliError, build_parser, influx_settings, mqtt_settings
from rekindle.credentials import RedactingFilter, read_secret, redact, split_userinfo
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto, free_port
from tests.waiting import WatchedProcess, wait_until

MQTT_PW = "mq-S3cret-Pw"
INFLUX_PW = "ix-S3cret-Pw"
ADMIN_PW = "adm-S3cret-Pw"
SECRETS = (MQTT_PW, INFLUX_PW, ADMIN_PW)


def test_redact_masks_url_passwords_and_registered_secrets() -> None:
    text = "to http://admin:pw1@h:8086/write and mqtts://u:p%40ss@b:8883 (http://h, http://u@h)"
    assert redact(text) == (
        "to http://admin:***@h:8086/write and mqtts://u:***@b:8883 (http://h, http://u@h)"
    )
    assert split_userinfo("http://u:p%40ss@[::1]:8086/x?q=1") == (
        "http://[::1]:8086/x?q=1",
        "u",
        "p@ss",
    )


def _unreachable(url: str) -> None:
    msg = f"cannot reach {url}"
    raise OSError(msg)


def test_redacting_filter_masks_formatted_records_and_tracebacks() -> None:
    record = logging.LogRecord(
        "t", logging.WARNING, __file__, 1, "url %s", ("http://a:b12@h",), None
    )
    try:
        _unreachable("http://a:zz99@h")
    except OSError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "url http://a:***@h"
    assert record.exc_text is not None
    assert "zz99" not in record.exc_text


def test_influx_url_credentials_are_parsed_out(tmp_path: Path) -> None:
    settings = InfluxSettings("http://admin:p%40ss@db.local:8086", database="d")
    assert (settings.url, settings.username, settings.password) == (
        "http://db.local:8086",
        "admin",
        "p@ss",
    )
    assert "p@ss" not in repr(settings)
    assert "sec" not in repr(InfluxSettings("http://h", org="o", bucket="b", token="sec"))
    assert MQTT_PW not in repr(MqttSettings.from_url(f"mqtt://u:{MQTT_PW}@h"))
    with pytest.raises(StorageError, match="token") as info:
        InfluxSettings(f"http://u:{INFLUX_PW}@h", org="o", bucket="b", token="t")
    assert INFLUX_PW not in str(info.value)
    secret_file = tmp_path / "pw"
    secret_file.write_text(" s3 \n")
    assert read_secret(secret_file, "X", file_option="--f", env={"X": "env"}) == "s3"
    assert read_secret(None, "X", file_option="--f", env={"X": "env"}) == "env"
    assert read_secret(None, "X", file_option="--f", env={}) is None


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    for i, user in enumerate(("analysis", "ingest")):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(passwd), user, MQTT_PW],
            check=True,
            capture_output=True,
            timeout=60,
        )
    passwd.chmod(0o600)
    server = Mosquitto.start(tmp_path / "mosquitto", password_file=passwd)
    yield server
    server.stop()


@pytest.fixture
def auth_influxd(tmp_path: Path) -> Iterator[InfluxD]:
    server = InfluxD.start(tmp_path / "influxd", auth=True)
    server.create_admin("admin", ADMIN_PW)
    server.create_database("sec")
    yield server
    server.stop()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rekindle.cli", "--log-level", "DEBUG", *args]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REKINDLE_")}
    return {**env, **extra}


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def _marker_stored(influxd: InfluxD, session: str) -> bool:
    return bool(influxd.series(f"SELECT text FROM marker WHERE session = '{session}'", "sec"))


def _mark(session: str, mqtt: str, env: dict[str, str], *extra: str) -> str:
    argv = _cli("mark", "tears", "--site", "sec", "--session", session, "--mqtt", mqtt, *extra)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert not any(s in " ".join(argv) for s in SECRETS)
    return done.stdout + done.stderr


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


def test_no_password_in_logs_or_arguments_with_files_and_env(
    auth_broker: Mosquitto, auth_influxd: InfluxD, tmp_path: Path
) -> None:
    influx_pw = tmp_path / "influx.pw"
    influx_pw.write_text(INFLUX_PW + "\n")
    mqtt_pw = tmp_path / "mqtt.pw"
    mqtt_pw.write_text(MQTT_PW + "\n")
    host = f"{auth_broker.host}:{auth_broker.port}"
    analysis = WatchedProcess(
        _cli(
            "analysis",
            "--mqtt",
            f"mqtt://analysis@{host}",
            "--influx",
            auth_influxd.url,
            "--influx-db",
            "sec",
            "--influx-user",
            "writer",
            "--influx-password-file",
            str(influx_pw),
            "--site",
            "sec",
        ),
        env=_env(REKINDLE_MQTT_PASSWORD=MQTT_PW),
    )
    try:
        analysis.wait_for_line("subscribed")
        _assert_clean(_cmdline(analysis.pid))
        marked = _mark("s1", f"mqtt://ingest@{host}", _env(), "--mqtt-password-file", str(mqtt_pw))
        # the InfluxDB user is provisioned late: the writer logs its 401 retries, then writes
        analysis.wait_for_line("HTTP 401")
        auth_influxd.query(f"CREATE USER \"writer\" WITH PASSWORD '{INFLUX_PW}'", "sec")
        auth_influxd.query('GRANT WRITE ON "sec" TO "writer"', "sec")
        wait_until(lambda: _marker_stored(auth_influxd, "s1"), "the marker in InfluxDB")
        analysis.proc.send_signal(signal.SIGTERM)
        assert analysis.finish() == 0, analysis.stderr
    finally:
        analysis.kill()
    _assert_clean(analysis.stderr + analysis.stdout + marked)


def test_no_password_in_logs_when_urls_carry_them(
    auth_broker: Mosquitto, auth_influxd: InfluxD
) -> None:
    auth_influxd.query(f"CREATE USER \"writer\" WITH PASSWORD '{INFLUX_PW}'", "sec")
    host = f"{auth_broker.host}:{auth_broker.port}"
    port = auth_influxd.port
    analysis = WatchedProcess(
        _cli(
            "analysis",
            "--mqtt",
            f"mqtt://analysis:{MQTT_PW}@{host}",
            "--influx",
            f"http://writer:{INFLUX_PW}@127.0.0.1:{port}",
            "--influx-db",
            "sec",
            "--site",
            "sec",
        ),
        env=_env(),
    )
    try:
        analysis.wait_for_line("subscribed")
        marked = _mark("s2", f"mqtt://ingest@{host}", _env(REKINDLE_MQTT_PASSWORD=MQTT_PW))
        # no write permission yet: 403 retries name the server, never the password
        analysis.wait_for_line("HTTP 403")
        auth_influxd.query('GRANT WRITE ON "sec" TO "writer"', "sec")
        wait_until(lambda: _marker_stored(auth_influxd, "s2"), "the marker in InfluxDB")
        analysis.proc.send_signal(signal.SIGTERM)
        assert analysis.finish() == 0, analysis.stderr
    finally:
        analysis.kill()
    _assert_clean(analysis.stderr + analysis.stdout + marked)
    assert "carries a password" in analysis.stderr
    assert f"http://writer:***@127.0.0.1:{port}" in analysis.stderr


def _args(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *argv: str) -> Any:
    for key in list(os.environ):
        if key.startswith("REKINDLE_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return build_parser().parse_args(list(argv))


def test_cli_takes_secrets_from_files_and_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("tok-from-file\n")
    v2 = ["--influx", "http://db:8086", "--influx-org", "o", "--influx-bucket", "b"]
    args = _args(
        monkeypatch, {}, "analysis", "--mqtt", "mqtt://h", *v2, "--influx-token-file", str(token)
    )
    assert influx_settings(args).token == "tok-from-file"
    args = _args(
        monkeypatch, {"REKINDLE_INFLUX_TOKEN": "tok-env"}, "analysis", "--mqtt", "mqtt://h", *v2
    )
    assert influx_settings(args).token == "tok-env"
    v1 = ["--influx", "http://db:8086", "--influx-db", "r"]
    env = {"REKINDLE_INFLUX_USER": "w", "REKINDLE_INFLUX_PASSWORD": INFLUX_PW}
    settings = influx_settings(_args(monkeypatch, env, "analysis", "--mqtt", "mqtt://h", *v1))
    assert (settings.username, settings.password) == ("w", INFLUX_PW)
    env = {"REKINDLE_MQTT_PASSWORD": MQTT_PW}
    mqtt = mqtt_settings(
        _args(monkeypatch, env, "mark", "x", "--session", "s", "--mqtt", "mqtt://u@h")
    )
    assert (mqtt.username, mqtt.password) == ("u", MQTT_PW)


@pytest.mark.parametrize(
    ("env", "argv", "error"),
    [
        ({"REKINDLE_MQTT_PASSWORD": "p"}, ["--mqtt", "mqtt://u:q@h"], "given twice"),
        ({"REKINDLE_MQTT_PASSWORD": "p"}, ["--mqtt", "mqtt://h"], "no user"),
        (
            {"REKINDLE_MQTT_PASSWORD_FILE": "/nonexistent/pw"},
            ["--mqtt", "mqtt://u@h"],
            "cannot read",
        ),
    ],
)
def test_cli_refuses_ambiguous_or_missing_mqtt_secrets(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], argv: list[str], error: str
) -> None:
    args = _args(monkeypatch, env, "mark", "x", "--session", "s", *argv)
    with pytest.raises(CliError, match=error) as info:
        mqtt_settings(args)
    assert ":q@" not in str(info.value)


def test_cli_refuses_an_influx_password_twice_or_without_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"REKINDLE_INFLUX_PASSWORD": "p"}
    both = _args(
        monkeypatch,
        env,
        "analysis",
        "--mqtt",
        "mqtt://h",
        "--influx",
        "http://u:q@db",
        "--influx-db",
        "r",
    )
    with pytest.raises(CliError, match="given twice") as info:
        influx_settings(both)
    assert ":q@" not in str(info.value)
    nouser = _args(
        monkeypatch,
        env,
        "analysis",
        "--mqtt",
        "mqtt://h",
        "--influx",
        "http://db",
        "--influx-db",
        "r",
    )
    with pytest.raises(CliError, match="no user"):
        influx_settings(nouser)


def test_error_messages_of_the_cli_mask_passwords() -> None:
    """A command that fails (nothing listens on the broker port) says why, without the
    password of the URL it names."""
    dead = free_port()
    done = subprocess.run(
        _cli(
            "analysis",
            "--mqtt",
            f"mqtt://u:{MQTT_PW}@127.0.0.1:{dead}",
            "--influx",
            f"http://w:{INFLUX_PW}@127.0.0.1:{dead}",
            "--influx-db",
            "x",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "cannot connect" in done.stderr
    _assert_clean(done.stdout + done.stderr)
