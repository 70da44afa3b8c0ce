"""MQTT connection settings parsed from ``mqtt://user:pass@host:port`` URLs (``mqtts://`` for TLS).

For TLS the server certificate is verified against the system's trust store, or against the CA
bundle named by the ``ca`` query parameter: ``mqtts://host:8883?ca=/etc/rekindle/ca.pem``.

Both services connect to the broker the same way, so this small value object sits beside the
wire contract rather than inside either service.
"""

from __future__ import annotations

import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.errors import RekindleError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


class MqttUrlError(RekindleError, ValueError):
    """An MQTT URL that cannot be used; ``url`` is the text given (password masked)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"bad MQTT URL {url!r}: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MqttSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    keepalive: int = 30
    ca_file: Path | None = None

    @classmethod
    def from_url(cls, url: str) -> MqttSettings:
        parts = urlsplit(url)
        shown = url.replace(f":{parts.password}@", ":***@") if parts.password else url
        if parts.scheme not in DEFAULT_PORTS:
            raise MqttUrlError(shown, f"scheme must be mqtt or mqtts, not {parts.scheme!r}")
        if not parts.hostname:
            raise MqttUrlError(shown, "no host")
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError as exc:
            raise MqttUrlError(shown, "port is not a number in 1-65535") from exc
        if parts.path not in ("", "/"):
            raise MqttUrlError(shown, "a path is not allowed")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = sorted(set(query) - {"ca"})
        if unknown:
            raise MqttUrlError(shown, f"unknown parameter {unknown[0]!r} (only 'ca' is known)")
        ca_file = None
        if "ca" in query:
            if parts.scheme != "mqtts":
                raise MqttUrlError(shown, "'ca' only makes sense with mqtts://")
            ca_file = Path(query["ca"][-1])
            if not ca_file.is_file():
                raise MqttUrlError(shown, f"CA file {ca_file} does not exist")
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "mqtts",
            ca_file=ca_file,
        )

    @property
    def url(self) -> str:
        """The URL with the password masked (safe to log)."""
        scheme = "mqtts" if self.tls else "mqtt"
        auth = f"{self.username}:***@" if self.username else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"


def make_client(
    settings: MqttSettings,
    client_id: str | None = None,
    *,
    clean_session: bool = True,
    manual_ack: bool = False,
) -> mqtt.Client:
    """A paho client (callback API v2, MQTT 3.1.1) configured from ``settings``; not connected.

    ``clean_session=False`` (with a stable ``client_id``) lets the broker queue QoS 1 messages
    for a subscriber while it is away. ``manual_ack=True`` leaves the PUBACK of each received
    QoS 1 message to the caller (``client.ack(mid, qos)``), so the broker keeps and resends a
    message until the caller has made what it carries durable.
    """
    cid = client_id or f"rekindle-{uuid.uuid4().hex[:12]}"
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=cid,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        cafile = str(settings.ca_file) if settings.ca_file is not None else None
        client.tls_set_context(ssl.create_default_context(cafile=cafile))
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def reason_ok(reason_code: Any) -> bool:
    """True when a paho v2 reason code (or legacy int) means success."""
    is_failure = getattr(reason_code, "is_failure", None)
    if is_failure is not None:
        return not bool(is_failure)
    return int(reason_code) == 0
