"""MQTT publisher shared by every ingest source (BLE, replay, simulator).

Policy lives here: ``seq`` per (device, stream), QoS 1 for data, retained per-device ``status``,
a last-will that marks the publisher's device ``lost``, and back-pressure so that a replay at
``max`` speed never holds more than ``max_pending`` unacknowledged messages in memory.
While the broker is away paho keeps QoS 1 messages queued in memory and sends them on
reconnect. With a ``spool`` file, messages published while the broker is away go to that file
instead (JSON Lines of topic, payload and retain flag) and are sent first once the broker is back,
also by a later process that opens the same spool: a restart of the ingest laptop while the
broker is unreachable loses nothing that had been spooled.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt

from services import contract
from services.contract import DeviceState, Message, SampleStream
from services.ingest.errors import PublishError
from services.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)


class Publisher:
    """Publishes contract messages for one site/session.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        settings: MqttSettings,
        site: str,
        session: str,
        *,
        device: str = "ingest",
        client_id: str | None = None,
        max_pending: int = 2000,
        connect_timeout: float = 10.0,
        spool: Path | None = None,
    ) -> None:
        contract.topic_for(site, session, "status", device)  # validates the ids early
        self.settings = settings
        self.site = site
        self.session = session
        self.device = device
        self.run = uuid.uuid4().hex[:12]
        self.max_pending = max_pending
        self.connect_timeout = connect_timeout
        self.spool = spool
        self.spooled = 0
        self._seq: dict[tuple[str, str], int] = {}
        self._unacked: set[int] = set()
        self._early_acks: set[int] = set()
        self._acked = threading.Condition()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.sent = 0
        self._client = make_client(settings, client_id)
        self._client.max_queued_messages_set(0)
        self._client.max_inflight_messages_set(100)
        will_topic, will_payload = contract.encode(
            contract.StatusMessage(
                site,
                session,
                device,
                "lost",
                time.time(),
                detail="publisher disconnected",
                run=self.run,
            )
        )
        self._client.will_set(will_topic, will_payload, qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    # paho callbacks: only record state
    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if reason_ok(reason):
            self._connected.set()
            log.info("publisher connected to %s", self.settings.url)
        else:
            log.warning("publisher connection to %s refused: %s", self.settings.url, reason)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self._connected.clear()
        if not reason_ok(reason):
            log.warning("publisher lost broker %s (%s); will reconnect", self.settings.url, reason)

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, _reason: object, _p: object
    ) -> None:
        with self._acked:
            if mid in self._unacked:
                self._unacked.discard(mid)
            else:  # the PUBACK beat publish() returning
                self._early_acks.add(mid)
            self._acked.notify_all()

    def start(self) -> Publisher:
        """Connect. Without a spool an unreachable broker is an error; with one, publishing
        starts into the spool and the client keeps trying to connect in the background."""
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as exc:
            if self.spool is None:
                raise PublishError(self.settings.url, f"cannot connect: {exc}") from exc
            log.warning(
                "broker %s unreachable (%s): spooling to %s", self.settings.url, exc, self.spool
            )
            self._client.connect_async(
                self.settings.host, self.settings.port, self.settings.keepalive
            )
            self._client.loop_start()
            return self
        self._client.loop_start()
        if not self._connected.wait(self.connect_timeout):
            self._client.loop_stop()
            raise PublishError(self.settings.url, "broker did not accept the connection in time")
        self._send_spool()
        return self

    def __enter__(self) -> Publisher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def next_seq(self, device: str, stream: str) -> int:
        with self._lock:
            seq = self._seq.get((device, stream), -1) + 1
            self._seq[(device, stream)] = seq
            return seq

    def publish(self, msg: Message) -> None:
        """Publish an already-built message (its ``seq`` is the caller's)."""
        topic, payload = contract.encode(msg)
        retain = isinstance(msg, contract.StatusMessage)
        if self.spool is not None:
            if not self._connected.is_set():
                self._spool_append(topic, payload, retain)
                return
            self._send_spool()
        self._send(topic, payload, retain)

    def _spool_append(self, topic: str, payload: bytes, retain: bool) -> None:
        assert self.spool is not None
        entry = {"topic": topic, "payload": payload.decode("utf-8"), "retain": retain}
        with self.spool.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.spooled += 1

    def _send_spool(self) -> None:
        """Send what an earlier outage (or process) spooled, before anything newer."""
        if self.spool is None or not self.spool.exists():
            return
        lines = self.spool.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if not self._connected.is_set():  # gone again: keep the rest for later
                rest = "\n".join(lines[i:]) + "\n"
                self.spool.write_text(rest, encoding="utf-8")
                return
            entry = json.loads(line)
            self._send(entry["topic"], entry["payload"].encode("utf-8"), bool(entry["retain"]))
        self.spool.unlink()
        log.info("sent %d spooled messages from %s", len(lines), self.spool)

    def _send(self, topic: str, payload: bytes, retain: bool) -> None:
        # paho keeps QoS 1 messages published while disconnected (rc NO_CONN) and sends them
        # after reconnecting; the PUBACK then arrives through on_publish. paho calls on_publish
        # under its own lock, so our lock is not held across publish().
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise PublishError(self.settings.url, f"publish to {topic} failed: rc={info.rc}")
        with self._acked:
            if info.mid in self._early_acks:
                self._early_acks.discard(info.mid)
            else:
                self._unacked.add(info.mid)
        self.sent += 1
        self._drain(self.max_pending)

    @property
    def connected(self) -> bool:
        """Whether the client is connected to the broker right now (else it spools/queues)."""
        return self._connected.is_set()

    @property
    def unacknowledged(self) -> int:
        with self._acked:
            return len(self._unacked)

    def _drain(self, limit: int, timeout: float | None = None) -> None:
        """Block while more than ``limit`` messages await their PUBACK (back-pressure)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._acked:
            while len(self._unacked) > limit:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise PublishError(
                        self.settings.url, f"{len(self._unacked)} messages still unacknowledged"
                    )
                self._acked.wait(1.0 if remaining is None else min(remaining, 1.0))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until the broker acknowledged everything published so far."""
        if self._connected.is_set():
            self._send_spool()
        self._drain(0, timeout)

    def send_samples(
        self,
        stream: SampleStream,
        device: str,
        values: Sequence[float] | Sequence[tuple[float, float, float]],
        *,
        t0: float | None = None,
        fs: float | None = None,
        t: Sequence[float] | None = None,
    ) -> contract.SampleMessage:
        msg = contract.samples(
            self.site,
            self.session,
            stream,
            device,
            self.next_seq(device, stream),
            values,
            t0=t0,
            fs=fs,
            t=t,
            run=self.run,
        )
        self.publish(msg)
        return msg

    def send_markers(
        self, device: str, t: Sequence[float], texts: Sequence[str]
    ) -> contract.MarkerMessage:
        msg = contract.MarkerMessage(
            self.site,
            self.session,
            device,
            self.next_seq(device, "marker"),
            tuple(t),
            tuple(texts),
            self.run,
        )
        self.publish(msg)
        return msg

    def send_status(
        self,
        device: str,
        state: DeviceState,
        t: float,
        *,
        battery: int | None = None,
        rssi: int | None = None,
        detail: str | None = None,
    ) -> contract.StatusMessage:
        msg = contract.StatusMessage(
            self.site, self.session, device, state, t, battery, rssi, detail, self.run
        )
        self.publish(msg)
        return msg

    def send_gap(
        self, device: str, stream: SampleStream, start: float, end: float
    ) -> contract.GapMessage:
        msg = contract.GapMessage(
            self.site,
            self.session,
            device,
            self.next_seq(device, "gap"),
            stream,
            start,
            end,
            self.run,
        )
        self.publish(msg)
        return msg

    def close(self, timeout: float = 30.0) -> None:
        """Flush, disconnect cleanly (no last-will) and stop the network thread."""
        try:
            if self._connected.is_set():
                self.flush(timeout)
        finally:
            self._client.disconnect()
            self._client.loop_stop()
