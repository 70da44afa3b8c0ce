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
every message until the analysis reports it durably handled, and it never has more than N
messages unconfirmed (so a replay at ``max`` cannot outrun the consumer on any broker
configuration). It resends, as TCP retransmits, on evidence of loss, so that an analysis that
is merely behind is not sent its backlog again (at 500 live sessions a timer that resent every
window after a few seconds without progress doubled the input, and the analysis never caught
up):

* after a reconnect, everything unconfirmed (a broker that went away may have lost any of it);
* *shown lost*: an acknowledgement that covers a message sent once only shows that the
  analysis has handled it, so it has also handled everything this connection sent before it:
  MQTT keeps one client's QoS 1 messages in order through the broker, and the analysis handles
  one session in arrival order. What is still unconfirmed and was last sent before it was lost
  (a broker that dropped it for a slow subscriber, an analysis restarted without its session),
  and is resent at once, in its order. A live session's next messages are the evidence;
* *tail*: when nothing newer is sent or acknowledged for the retransmission timeout (the end of
  a replay or a session), everything unconfirmed. The timeout follows the measured end-to-end
  acknowledgement time (RFC 6298: smoothed round trip plus four times its variation, from
  messages sent once only (Karn), at least ``resend_after_s``) and doubles after each such
  resend without progress, up to ``MAX_RESEND_AFTER_S``.

The analysis drops the resent duplicates by ``seq``. When no
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

#: Longest retransmission timeout (it follows the measured acknowledgement time, at least
#: ``resend_after_s``, and doubles after each resend without progress).
MAX_RESEND_AFTER_S = 60.0


@dataclasses.dataclass(slots=True)
class _Unconfirmed:
    """A message kept until the analysis acknowledges it end to end."""

    topic: str
    payload: bytes
    #: place of its last send among this publisher's sends (``Publisher._sends``)
    order: int
    #: monotonic time of its first send
    sent: float
    #: monotonic time of its last send
    last: float
    #: its ``n`` when it is of this publisher's run (else None)
    n: int | None = None
    #: sent again since: its acknowledgement then says neither how long the round trip took
    #: nor which copy arrived (Karn)
    resent: bool = False


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
        self._unconfirmed: OrderedDict[tuple[str, str, int], _Unconfirmed] = OrderedDict()
        self._stream_seqs: dict[tuple[str, str], deque[int]] = {}
        #: every send of an unconfirmed message in order: (its place, key); an entry is stale
        #: once its message is confirmed or sent again
        self._send_log: deque[tuple[int, tuple[str, str, int]]] = deque()
        self._sends = 0
        #: messages shown lost by an acknowledgement, for the publishing thread to resend
        self._lost: list[tuple[str, str, int]] = []
        #: this run's unconfirmed messages by ``n``, and those the last ``out/ack`` says the
        #: analysis holds behind a gap (received: not lost)
        self._by_n: dict[int, tuple[str, str, int]] = {}
        self._held: set[tuple[str, str, int]] = set()
        self._statuses: dict[str, tuple[str, bytes, str]] = {}
        #: place of each device's status among the sends
        self._status_order: dict[str, int] = {}
        self._statuses_lost = False
        self._analysis_states: dict[str, tuple[str, str | None]] = {}
        self._acks_seen = 0
        #: monotonic time of the last new message, acknowledgement progress or resend
        self._last_activity = time.monotonic()
        #: RFC 6298 estimate of the end-to-end acknowledgement time (None before a sample)
        self._srtt: float | None = None
        self._rttvar = 0.0
        #: retransmission timeout from that estimate (at least resend_after_s)
        self._rto = resend_after_s
        #: the timeout in force: the RTO, doubled after each resend without progress up to
        #: MAX_RESEND_AFTER_S, back to the RTO on progress
        self._resend_wait = resend_after_s
        #: messages resent because an acknowledgement showed them lost / at a timeout
        self.resent_lost = 0
        self.resent_timeout = 0
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
        now = time.monotonic()
        with self._ack_cond:
            self._acks_seen += 1
            self._analysis_states.update(ack.devices)
            progress = False
            #: the latest send the analysis is shown to have handled (-1: none)
            handled = -1
            newest: _Unconfirmed | None = None
            for pos in ack.positions:
                if pos.run != self.run:
                    continue
                seqs = self._stream_seqs.get((pos.device, pos.stream))
                while seqs and seqs[0] <= pos.seq:
                    done = self._unconfirmed.pop((pos.device, pos.stream, seqs.popleft()), None)
                    if done is None:
                        continue
                    progress = True
                    if done.n is not None:
                        self._by_n.pop(done.n, None)
                    if not done.resent and done.order > handled:
                        handled, newest = done.order, done
            self._held = set()
            for rng in ack.held:
                if rng.run != self.run:
                    continue
                span = rng.last - rng.first + 1
                ns = (
                    range(rng.first, rng.last + 1)
                    if span <= len(self._by_n)
                    else [n for n in self._by_n if rng.first <= n <= rng.last]
                )
                for n in ns:
                    key = self._by_n.get(n)
                    entry = None if key is None else self._unconfirmed.get(key)
                    if key is None or entry is None:
                        continue
                    self._held.add(key)
                    if not entry.resent and entry.order > handled:
                        handled = entry.order  # received: what was sent before it was too
            if newest is not None:
                self._rtt_sample(now - newest.sent)
            if handled >= 0:
                self._find_lost(handled)
            if progress:
                self._last_activity = now
                self._resend_wait = self._rto
            self._ack_cond.notify_all()

    def _find_lost(self, handled: int) -> None:
        """What is unconfirmed and was last sent before send ``handled``, which the analysis
        handled: lost (see the module docstring)."""
        log_, now, again = self._send_log, time.monotonic(), []
        while log_ and log_[0][0] < handled:
            order, key = log_.popleft()
            entry = self._unconfirmed.get(key)
            if entry is None or entry.order != order:
                continue  # confirmed, or sent again since
            if key in self._held:
                again.append((order, key))  # received, waiting behind the gap
                continue
            if entry.resent and now - entry.last < self._rto:
                # its copy went missing too, or the analysis dead-lettered it (its position
                # moves once the analysis gives the gap up): not more than once a timeout
                again.append((order, key))
            else:
                self._lost.append(key)
        log_.extend(again)
        self._statuses_lost = self._statuses_lost or any(
            order < handled
            and self._analysis_states.get(device) != (self._statuses[device][2], self.run)
            for device, order in self._status_order.items()
        )

    def _rtt_sample(self, rtt: float) -> None:
        """RFC 6298 (2.2, 2.3): the smoothed acknowledgement time and its variation."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        rto = max(self.resend_after_s, self._srtt + 4 * self._rttvar)
        self._rto = min(rto, MAX_RESEND_AFTER_S)

    @property
    def retransmission_timeout(self) -> float:
        """Seconds without a new message or progress before what is unconfirmed is resent."""
        with self._ack_cond:
            return self._resend_wait

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
                order = self._sends
                self._sends += 1
                self._last_activity = time.monotonic()
                if isinstance(msg, contract.StatusMessage):
                    self._statuses[msg.device] = (topic, payload, msg.state)
                    self._status_order[msg.device] = order
                else:
                    key = (msg.device, msg.stream, msg.seq)
                    now = self._last_activity
                    n = msg.n if msg.run == self.run else None
                    self._unconfirmed[key] = _Unconfirmed(topic, payload, order, now, now, n)
                    if n is not None:
                        self._by_n[n] = key
                    self._send_log.append((order, key))
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
        self._send_log.clear()
        self._lost.clear()
        self._by_n.clear()
        self._held.clear()

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
        """Resend (from the publishing thread) everything unconfirmed after a reconnect or at
        a timeout, else what an acknowledgement showed lost (see the module docstring)."""
        if not self._connected.is_set():
            return
        with self._ack_cond:
            now = time.monotonic()
            waiting = bool(self._unconfirmed) or not self._statuses_confirmed()
            timeout = waiting and self._acks_seen and now - self._last_activity > self._resend_wait
            if self._resend_wanted or timeout:
                keys = list(self._unconfirmed)
                statuses_due = True
                if self._resend_wanted:
                    why = "after a reconnect"
                else:
                    why = f"nothing sent or acknowledged for {self._resend_wait:.1f} s"
                    self.resent_timeout += len(keys)
                    # no progress for a whole timeout: wait twice as long for the next one
                    self._resend_wait = min(2 * self._resend_wait, MAX_RESEND_AFTER_S)
                self._resend_wanted = False
                self._lost.clear()
                self._statuses_lost = False
            elif self._lost or self._statuses_lost:
                keys = [
                    k
                    for k in dict.fromkeys(self._lost)
                    if k in self._unconfirmed and k not in self._held
                ]
                statuses_due = self._statuses_lost
                self._lost.clear()
                self._statuses_lost = False
                self.resent_lost += len(keys)
                why = "shown lost by the acknowledgement of a later message"
            else:
                return
            self._last_activity = now
            items = []
            for key in keys:
                entry = self._unconfirmed[key]
                entry.resent = True
                entry.last = now
                entry.order = self._sends
                self._sends += 1
                self._send_log.append((entry.order, key))
                items.append((entry.topic, entry.payload))
            statuses = []
            for device, (topic, payload, state) in self._statuses.items():
                if statuses_due and self._analysis_states.get(device) != (state, self.run):
                    self._status_order[device] = self._sends
                    self._sends += 1
                    statuses.append((topic, payload))
        if not items and not statuses:
            return
        log.info(
            "resending %d message(s) and %d status(es) not yet acknowledged end to end (%s)",
            len(items),
            len(statuses),
            why,
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
                for entry in left:
                    self._spool_append(entry.topic, entry.payload, False)
                log.warning(
                    "%d message(s) not acknowledged end to end: kept in %s", len(left), self.spool
                )
            self._client.disconnect()
            self._client.loop_stop()
