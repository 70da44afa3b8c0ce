"""MQTT publisher shared by every ingest source (BLE, replay, simulator).

Policy lives here: ``seq`` per (device, stream), QoS 1 for data, retained per-device ``status``,
a last-will that marks the publisher's device ``lost``, and back-pressure so that a replay at
``max`` speed never holds more than ``max_pending`` unacknowledged messages in memory.
While the broker is away paho keeps QoS 1 messages queued in memory and sends them on
reconnect. With a ``spool`` file, messages published while the broker is away go to that file
instead (JSON Lines of topic, payload and retain flag) and are sent first once the broker is back,
also by a later process that opens the same spool: a restart of the ingest laptop while the
broker is unreachable loses nothing that had been spooled.

End-to-end acknowledgement (``ack_window``): a broker acknowledgement only says the broker has
the message, and a broker that crashes, or drops messages for a slow subscriber (mosquitto's
``max_queued_messages``), loses messages it had acknowledged. With ``ack_window=N`` the
publisher subscribes to the analysis service's retained ``out/ack`` of its session and keeps
every message until the analysis reports it durably handled; it resends what is unconfirmed
after a reconnect and when the acknowledgements stop advancing for ``resend_after_s`` (then
twice as long after each resend without progress, up to ``MAX_RESEND_AFTER_S``), and it
never has more than N messages unconfirmed (so a replay at ``max`` cannot outrun the consumer
on any broker configuration). The analysis drops the resent duplicates by ``seq``. When no
analysis acknowledges anything within ``first_ack_timeout_s``, the publisher says so in the log
and goes on with broker acknowledgements only. On close, what is still unconfirmed goes to the
spool, so a later process resends it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import paho.mqtt.client as mqtt

from rekindle import contract
from rekindle.contract import DeviceState, Message, SampleStream
from rekindle.ingest.errors import PublishError
from rekindle.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)

#: Longest wait between resends while the acknowledgements do not advance (the wait starts at
#: ``resend_after_s`` and doubles after each resend without progress).
MAX_RESEND_AFTER_S = 30.0

_M = TypeVar("_M", bound=Message)


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
        ack_window: int | None = None,
        resend_after_s: float = 3.0,
        first_ack_timeout_s: float = 10.0,
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
        self._n = 0  # position of the next message of this run among all its streams
        self._unacked: set[int] = set()
        self._early_acks: set[int] = set()
        self._acked = threading.Condition()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.sent = 0
        # end-to-end acknowledgement by the analysis service (see the module docstring)
        if ack_window is not None and ack_window < 1:
            raise ValueError(f"ack_window must be at least 1, not {ack_window}")
        self.ack_window = ack_window
        self.resend_after_s = resend_after_s
        self.first_ack_timeout_s = first_ack_timeout_s
        self.resent = 0
        self._e2e = ack_window is not None
        self._ack_topic = contract.output_topic(site, session, "ack")
        self._ack_cond = threading.Condition()
        self._unconfirmed: OrderedDict[tuple[str, str, int], tuple[str, bytes]] = OrderedDict()
        self._stream_seqs: dict[tuple[str, str], deque[int]] = {}
        self._statuses: dict[str, tuple[str, bytes, str]] = {}
        self._analysis_states: dict[str, tuple[str, str | None]] = {}
        self._acks_seen = 0
        self._last_progress = time.monotonic()
        #: The wait before the next resend while acknowledgements do not advance: doubles
        #: after each such resend up to MAX_RESEND_AFTER_S, back to resend_after_s on progress.
        self._resend_wait = resend_after_s
        self._resend_wanted = False
        self._ever_connected = False
        self._first_ack_due = time.monotonic() + first_ack_timeout_s  # reset by start()
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
        self._client.on_message = self._on_ack

    # paho callbacks: only record state
    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if reason_ok(reason):
            if self._e2e:
                _c.subscribe(self._ack_topic, qos=1)
                with self._ack_cond:
                    self._resend_wanted = self._ever_connected  # the broker may have lost some
                    self._ever_connected = True
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

    def _on_ack(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            ack = contract.decode_ack(msg.topic, bytes(msg.payload))
        except contract.ContractError as exc:
            log.warning("ignored an end-to-end acknowledgement on %s: %s", msg.topic, exc)
            return
        with self._ack_cond:
            self._acks_seen += 1
            self._analysis_states.update(ack.devices)
            progress = False
            for pos in ack.positions:
                if pos.run != self.run:
                    continue
                seqs = self._stream_seqs.get((pos.device, pos.stream))
                while seqs and seqs[0] <= pos.seq:
                    self._unconfirmed.pop((pos.device, pos.stream, seqs.popleft()), None)
                    progress = True
            if progress:
                self._last_progress = time.monotonic()
                self._resend_wait = self.resend_after_s
            self._ack_cond.notify_all()

    @property
    def unconfirmed(self) -> int:
        """Messages the analysis service has not acknowledged end to end yet."""
        with self._ack_cond:
            return len(self._unconfirmed)

    def start(self) -> Publisher:
        """Connect. Without a spool an unreachable broker is an error; with one, publishing
        starts into the spool and the client keeps trying to connect in the background."""
        self._first_ack_due = time.monotonic() + self.first_ack_timeout_s
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
        """Publish an already-built message (its ``seq`` is the caller's; a message of this
        run gets its ``n``, the order in which the run published it across all streams)."""
        msg = self._stamp(msg)
        topic, payload = contract.encode(msg)
        retain = isinstance(msg, contract.StatusMessage)
        if self._e2e:
            with self._ack_cond:
                if isinstance(msg, contract.StatusMessage):
                    self._statuses[msg.device] = (topic, payload, msg.state)
                else:
                    self._unconfirmed[(msg.device, msg.stream, msg.seq)] = (topic, payload)
                    self._stream_seqs.setdefault((msg.device, msg.stream), deque()).append(msg.seq)
        if self.spool is not None and not self._connected.is_set():
            self._spool_append(topic, payload, retain)
        else:
            if self.spool is not None:
                self._send_spool()
            self._send(topic, payload, retain)
        if self._e2e:
            self._await_window()

    def _stamp(self, msg: _M) -> _M:
        """``msg`` with its ``n`` when it is of this run and has none yet."""
        if isinstance(msg, contract.StatusMessage) or msg.run != self.run or msg.n is not None:
            return msg
        with self._lock:
            stamped = dataclasses.replace(msg, n=self._n)
            self._n += 1
        return stamped

    # ---------------------------------------------------------- end-to-end acknowledgement
    def _give_up_e2e(self) -> None:
        """No analysis service answers: go on with broker acknowledgements only."""
        log.warning(
            "no analysis service acknowledged session %s/%s end to end within %.0f s "
            "(out/ack): publishing with broker acknowledgements only",
            self.site,
            self.session,
            self.first_ack_timeout_s,
        )
        self._e2e = False
        self._unconfirmed.clear()
        self._stream_seqs.clear()

    def _await_window(self) -> None:
        """Block while ``ack_window`` messages are unconfirmed (resending when due)."""
        while True:
            self._maybe_resend()
            with self._ack_cond:
                if not self._e2e or len(self._unconfirmed) < (self.ack_window or 0):
                    return
                if self._acks_seen == 0 and time.monotonic() > self._first_ack_due:
                    self._give_up_e2e()
                    return
                self._ack_cond.wait(0.2)

    def _statuses_confirmed(self) -> bool:
        return all(
            self._analysis_states.get(device) == (state, self.run)
            for device, (_t, _p, state) in self._statuses.items()
        )

    def _maybe_resend(self) -> None:
        """Resend everything unconfirmed after a reconnect, or when the acknowledgements have
        not advanced for ``resend_after_s`` (from the publishing thread)."""
        if not self._connected.is_set():
            return
        with self._ack_cond:
            now = time.monotonic()
            stalled = bool(self._unconfirmed) or not self._statuses_confirmed()
            due = self._resend_wanted or (
                stalled and self._acks_seen and now - self._last_progress > self._resend_wait
            )
            if not due:
                return
            if not self._resend_wanted:
                # an analysis that is behind (not one that lost our messages) would otherwise
                # get every publisher's whole window again every few seconds, fall further
                # behind and never catch up (seen at 500 sessions on a loaded machine)
                self._resend_wait = min(2 * self._resend_wait, MAX_RESEND_AFTER_S)
            self._resend_wanted = False
            self._last_progress = now
            items = list(self._unconfirmed.values())
            statuses = [
                (topic, payload)
                for device, (topic, payload, state) in self._statuses.items()
                if self._analysis_states.get(device) != (state, self.run)
            ]
        log.info(
            "resending %d message(s) and %d status(es) not yet acknowledged end to end",
            len(items),
            len(statuses),
        )
        for topic, payload in items:
            self._send(topic, payload, False)
        for topic, payload in statuses:
            self._send(topic, payload, True)
        self.resent += len(items)

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

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the broker acknowledged everything published so far, and with
        ``ack_window`` until the analysis service did (resending when due)."""
        deadline = time.monotonic() + timeout
        if self._connected.is_set():
            self._send_spool()
        self._drain(0, timeout)
        while self._e2e:
            self._maybe_resend()
            with self._ack_cond:
                if not self._unconfirmed and self._statuses_confirmed():
                    return
                if self._acks_seen == 0 and time.monotonic() > self._first_ack_due:
                    self._give_up_e2e()
                    return
                if time.monotonic() > deadline:
                    raise PublishError(
                        self.settings.url,
                        f"{len(self._unconfirmed)} message(s) not acknowledged end to end by "
                        f"the analysis service within {timeout:.0f} s",
                    )
                self._ack_cond.wait(0.2)

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
        msg = self._stamp(msg)
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
        msg = self._stamp(msg)
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
        with self._lock:
            sent = self._n
        msg = contract.StatusMessage(
            self.site, self.session, device, state, t, battery, rssi, detail, self.run, sent=sent
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
        msg = self._stamp(msg)
        self.publish(msg)
        return msg

    def close(self, timeout: float = 60.0) -> None:
        """Flush, disconnect cleanly (no last-will) and stop the network thread. With a spool,
        what the analysis has not acknowledged end to end is kept there for a later process."""
        try:
            if self._connected.is_set():
                self.flush(timeout)
        finally:
            with self._ack_cond:
                left = list(self._unconfirmed.values()) if self._e2e else []
            if left and self.spool is not None:
                for topic, payload in left:
                    self._spool_append(topic, payload, False)
                log.warning(
                    "%d message(s) not acknowledged end to end: kept in %s", len(left), self.spool
                )
            self._client.disconnect()
            self._client.loop_stop()
