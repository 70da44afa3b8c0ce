"""``rekindle record``: capture a session's wire messages into a replayable recording file."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import paho.mqtt.client as mqtt

from services import contract
from services.ingest.errors import PublishError
from services.ingest.sources.recording import RecordingWriter
from services.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)


class Recorder:
    """Subscribes to one session and appends every sample/marker payload to ``path``.

    ``done`` is set when every device that announced ``online`` has sent ``end``.
    """

    def __init__(self, settings: MqttSettings, site: str, session: str, path: Path) -> None:
        self.settings = settings
        self.site = site
        self.session = session
        self.writer = RecordingWriter(path, site, session)
        self.done = threading.Event()
        self.rejected = 0
        self._online: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = make_client(settings)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if reason_ok(reason):
            client.subscribe([(t, 1) for t in contract.subscriptions(self.site, self.session)])

    def _on_subscribe(self, *_args: object) -> None:
        self._subscribed.set()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            payload = bytes(msg.payload)
            decoded = contract.decode(msg.topic, payload)
        except contract.ContractError as exc:
            self.rejected += 1
            log.warning("not recorded, invalid message on %s: %s", msg.topic, exc)
            return
        with self._lock:
            if isinstance(decoded, contract.StatusMessage):
                if decoded.state == "online":
                    self._online.add(decoded.device)
                elif decoded.state == "end" and decoded.device in self._online:
                    self._online.discard(decoded.device)
                    if not self._online:
                        self.done.set()
                return
            self.writer.write(decoded.stream, payload)

    def start(self, timeout: float = 10.0) -> Recorder:
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as exc:
            raise PublishError(self.settings.url, f"cannot connect: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self._client.loop_stop()
            raise PublishError(self.settings.url, "subscription not acknowledged in time")
        return self

    def stop(self) -> int:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self.writer.close()
        log.info("recorded %d messages to %s", self.writer.count, self.writer.path)
        return self.writer.count
