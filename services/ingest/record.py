"""``rekindle record``: capture a session's wire messages into a replayable recording file.

The recorder knows what it missed: ``seq`` starts at 0 per (device, stream, run) and goes up by
one, and a publisher's ``end`` status says how many messages (``sent``) its run published, so
after ``end`` every seq and ``n`` below are accounted for. Resent duplicates are recorded once.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from rekindle import contract
from rekindle.ingest.errors import PublishError
from rekindle.ingest.sources.recording import RecordingWriter
from rekindle.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)

SeqKey = tuple[str, str, str | None]  # device, stream, run


@dataclass(frozen=True, slots=True)
class Missing:
    """Messages the recorder knows it did not get."""

    #: (device, stream, run) -> how many seqs below the highest one received never came
    seq_gaps: dict[SeqKey, int]
    #: run -> how many of the messages its ``end`` announced never came
    tail: dict[str | None, int]

    @property
    def total(self) -> int:
        return max(sum(self.seq_gaps.values()), sum(self.tail.values()))

    def __bool__(self) -> bool:
        return bool(self.seq_gaps or self.tail)

    def describe(self) -> str:
        parts = [
            f"{device}/{stream}: {count} message(s) missing"
            for (device, stream, _run), count in sorted(
                self.seq_gaps.items(), key=lambda kv: (kv[0][0], kv[0][1])
            )
        ]
        parts += [
            f"run {run}: {count} of its messages never arrived" for run, count in self.tail.items()
        ]
        return "; ".join(parts)


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
        self.duplicates = 0
        self._seqs: dict[SeqKey, set[int]] = {}
        self._ns: dict[str | None, set[int]] = {}
        self._announced: dict[str | None, int] = {}
        self._online: set[str] = set()
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._inbox: queue.SimpleQueue[tuple[str, bytes, bool] | None] = queue.SimpleQueue()
        self._writer_thread = threading.Thread(
            target=self._drain, name=f"record-{session}", daemon=True
        )
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
        # The transport callback only enqueues (paho acknowledges the message when it returns):
        # decoding and writing happen on the writer thread, so the broker never queues for a
        # recorder that is busy writing, and a default broker (1,000 queued messages per client)
        # drops nothing for it while the publisher's window paces the session for the analysis.
        self._inbox.put((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def _drain(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            self._handle(*item)

    def _handle(self, topic: str, payload: bytes, retain: bool) -> None:
        try:
            decoded = contract.decode(topic, payload)
        except contract.ContractError as exc:
            self.rejected += 1
            log.warning("not recorded, invalid message on %s: %s", topic, exc)
            return
        with self._lock:
            if isinstance(decoded, contract.StatusMessage):
                if decoded.sent is not None and not retain:
                    self._announced[decoded.run] = decoded.sent
                if decoded.state == "online":
                    self._online.add(decoded.device)
                elif decoded.state == "end" and decoded.device in self._online:
                    self._online.discard(decoded.device)
                    if not self._online:
                        self.done.set()
                return
            seqs = self._seqs.setdefault((decoded.device, decoded.stream, decoded.run), set())
            if decoded.seq in seqs:
                self.duplicates += 1  # a resend: recorded once
                return
            seqs.add(decoded.seq)
            if decoded.n is not None:
                self._ns.setdefault(decoded.run, set()).add(decoded.n)
            self.writer.write(decoded.stream, payload)

    def missing(self) -> Missing:
        """What the recorder knows it missed so far (complete once ``done`` is set)."""
        with self._lock:
            gaps = {k: max(s) + 1 - len(s) for k, s in self._seqs.items() if max(s) + 1 > len(s)}
            tail = {}
            for run, sent in self._announced.items():
                got = sum(1 for n in self._ns.get(run, ()) if n < sent)
                if got < sent:
                    tail[run] = sent - got
        return Missing(gaps, tail)

    def start(self, timeout: float = 10.0) -> Recorder:
        try:
            self._client.connect(self.settings.host, self.settings.port, self.settings.keepalive)
        except OSError as exc:
            raise PublishError(self.settings.url, f"cannot connect: {exc}") from exc
        self._writer_thread.start()
        self._client.loop_start()
        if not self._subscribed.wait(timeout):
            self._client.loop_stop()
            self._inbox.put(None)
            raise PublishError(self.settings.url, "subscription not acknowledged in time")
        return self

    def stop(self) -> int:
        self._client.disconnect()
        self._client.loop_stop()
        self._inbox.put(None)  # after everything received: written before the file is closed
        self._writer_thread.join()
        with self._lock:
            self.writer.close()
        log.info("recorded %d messages to %s", self.writer.count, self.writer.path)
        return self.writer.count
