"""Grafana alert notifications relayed to MQTT: ``rekindle alerts relay``.

Grafana's provisioned contact point (``dashboards/alerts.py``) is a webhook to this small HTTP
endpoint, which runs in the compose stack beside the analysis service. Every alert of a
notification is published, QoS 1, on ``rekindle/v1/{site}/{session}/out/alert``, where a nurse
station, a pager gateway or ``mosquitto_sub`` (user ``monitor``) picks it up; alerts that carry
no session (Grafana's own "DatasourceError"/"DatasourceNoData", a hand-made rule) go to
``rekindle/v1/_stack/_grafana/out/alert``. The payload is documented in docs/wire-contract.md.

HTTP: ``POST /grafana`` with Grafana's webhook JSON. ``200`` once every alert was acknowledged
by the broker; ``400`` (with the reason) for a body that is not such a notification, which
Grafana logs; ``503`` while the broker is unreachable, which Grafana retries, so no accepted
notification is lost. ``GET /health`` answers ``200`` while connected to the broker, else
``503`` (the container's health check).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as mqtt

from rekindle import contract
from rekindle.analysis.errors import AnalysisError
from rekindle.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)

PATH = "/grafana"
HEALTH_PATH = "/health"
DEFAULT_LISTEN = "0.0.0.0:9095"
#: Largest notification body taken (Grafana sends a few kB per alert).
MAX_BODY_BYTES = 1 << 20
#: Topic ids of alerts without a (valid) site and session.
STACK_SITE, STACK_SESSION = "_stack", "_grafana"
#: Seconds to wait for the broker's PUBACK of one alert before answering 503.
PUBLISH_TIMEOUT_S = 10.0
_STATES = ("firing", "resolved")


class NotificationError(AnalysisError, ValueError):
    """A webhook body that is not a Grafana notification; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"not a Grafana webhook notification: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class AlertNotice:
    """One alert of a notification, as published."""

    site: str
    session: str
    name: str
    state: str
    severity: str | None
    summary: str | None
    starts_at: float | None
    ends_at: float | None
    labels: Mapping[str, str]
    fingerprint: str | None

    @property
    def topic(self) -> str:
        return contract.output_topic(self.site, self.session, "alert")

    def payload(self) -> dict[str, object]:
        return {
            "v": contract.PROTOCOL_VERSION,
            "site": self.site,
            "session": self.session,
            "alert": self.name,
            "state": self.state,
            "severity": self.severity,
            "summary": self.summary,
            "starts_at": self.starts_at,
            "ends_at": self.ends_at,
            "labels": dict(self.labels),
            "fingerprint": self.fingerprint,
        }


def _time(value: object, what: str) -> float | None:
    """Unix seconds of an RFC 3339 time; None for Grafana's zero time (not ended)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise NotificationError(f"{what} is not a time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise NotificationError(f"{what} {value[:40]!r} is not an RFC 3339 time") from exc
    if parsed.year <= 1:
        return None
    return parsed.timestamp()


def _ids(labels: Mapping[str, str]) -> tuple[str, str]:
    """The alert's site and session labels, or the stack's ids when either is missing or not a
    valid topic id."""
    site, session = labels.get("site", ""), labels.get("session", "")
    try:
        contract.output_topic(site, session, "alert")
    except contract.ContractError:
        return STACK_SITE, STACK_SESSION
    return site, session


def _strings(obj: object, what: str) -> dict[str, str]:
    if obj is None:
        return {}
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise NotificationError(f"{what} is not an object of strings")
    return {str(k): v for k, v in obj.items()}


def parse_notification(body: bytes) -> list[AlertNotice]:
    """The alerts of one Grafana webhook notification (pure)."""
    try:
        doc: Any = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotificationError(f"invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("alerts"), list):
        raise NotificationError('no "alerts" list')
    out = []
    for i, alert in enumerate(doc["alerts"]):
        if not isinstance(alert, dict):
            raise NotificationError(f"alerts[{i}] is not an object")
        labels = _strings(alert.get("labels"), f"alerts[{i}].labels")
        annotations = _strings(alert.get("annotations"), f"alerts[{i}].annotations")
        state = alert.get("status")
        if state not in _STATES:
            raise NotificationError(f"alerts[{i}].status {state!r} is not firing or resolved")
        site, session = _ids(labels)
        out.append(
            AlertNotice(
                site=site,
                session=session,
                name=labels.get("alertname", "unnamed alert"),
                state=str(state),
                severity=labels.get("severity"),
                summary=annotations.get("summary"),
                starts_at=_time(alert.get("startsAt"), f"alerts[{i}].startsAt"),
                ends_at=_time(alert.get("endsAt"), f"alerts[{i}].endsAt"),
                labels=labels,
                fingerprint=alert.get("fingerprint")
                if isinstance(alert.get("fingerprint"), str)
                else None,
            )
        )
    return out


class AlertRelay:
    """The HTTP endpoint and its MQTT client; ``start()``, then ``stop()``."""

    def __init__(self, settings: MqttSettings, host: str, port: int) -> None:
        self.settings = settings
        self.connected = threading.Event()
        self.relayed = 0
        self._client = make_client(settings, None)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="alert-relay", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if reason_ok(reason):
            self.connected.set()
            log.info("alert relay connected to %s", self.settings.url)
        else:
            log.warning("broker %s refused the alert relay: %s", self.settings.url, reason)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self.connected.clear()
        log.warning("alert relay lost broker %s (%s); will reconnect", self.settings.url, reason)

    def start(self) -> AlertRelay:
        """Serve HTTP at once; connect to the broker in the background (and again after a loss)."""
        self._client.connect_async(self.settings.host, self.settings.port, self.settings.keepalive)
        self._client.loop_start()
        self._thread.start()
        log.info("alert relay listening on port %d (POST %s)", self.port, PATH)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, notices: list[AlertNotice]) -> bool:
        """Publish every notice with QoS 1; True once the broker acknowledged all of them."""
        if not self.connected.is_set():
            return False
        infos = [self._client.publish(n.topic, json.dumps(n.payload()), qos=1) for n in notices]
        for info in infos:
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return False
            try:
                info.wait_for_publish(PUBLISH_TIMEOUT_S)
            except (RuntimeError, ValueError):
                return False
            if not info.is_published():
                return False
        self.relayed += len(notices)
        return True


def _handler(relay: AlertRelay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "rekindle-alert-relay"

        def _answer(self, status: HTTPStatus, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path != HEALTH_PATH:
                self._answer(HTTPStatus.NOT_FOUND, f"GET {HEALTH_PATH} or POST {PATH}")
            elif relay.connected.is_set():
                self._answer(HTTPStatus.OK, "ok")
            else:
                self._answer(HTTPStatus.SERVICE_UNAVAILABLE, f"no broker ({relay.settings.url})")

        def do_POST(self) -> None:
            if self.path != PATH:
                self._answer(HTTPStatus.NOT_FOUND, f"POST Grafana notifications to {PATH}")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._answer(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
                return
            if length > MAX_BODY_BYTES:
                self._answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"over {MAX_BODY_BYTES} bytes")
                return
            body = self.rfile.read(length)
            try:
                notices = parse_notification(body)
            except NotificationError as exc:
                log.warning("alert relay refused a notification: %s", exc.reason)
                self._answer(HTTPStatus.BAD_REQUEST, str(exc))
                return
            if not relay.publish(notices):
                log.warning("alert relay: broker %s unavailable, 503 sent", relay.settings.url)
                self._answer(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"broker {relay.settings.url} unavailable: retry later",
                )
                return
            for n in notices:
                log.info("alert %s %s for %s/%s", n.name, n.state, n.site, n.session)
            self._answer(HTTPStatus.OK, f"relayed {len(notices)} alert(s)")

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        msg = f"--listen {text!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}"
        raise argparse.ArgumentTypeError(msg)
    return host or "0.0.0.0", int(port)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``alerts relay`` to the ``rekindle`` command line."""
    from rekindle.cli import add_mqtt  # noqa: PLC0415

    parser = subparsers.add_parser("alerts", help="Grafana alert notifications")
    sub = parser.add_subparsers(dest="alerts_command", required=True)
    relay = sub.add_parser(
        "relay",
        help="receive Grafana's webhook notifications and publish them on MQTT",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    add_mqtt(relay)
    relay.add_argument(
        "--listen",
        type=_listen,
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address of the webhook endpoint (default {DEFAULT_LISTEN})",
    )
    relay.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rekindle.cli import mqtt_settings  # noqa: PLC0415
    from rekindle.cliconfig import stop_event_on_signals  # noqa: PLC0415

    host, port = args.listen
    stop = stop_event_on_signals()
    relay = AlertRelay(mqtt_settings(args), host, port).start()
    try:
        stop.wait()
    finally:
        relay.stop()
    return 0
