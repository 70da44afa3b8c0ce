"""The live analysis service: MQTT in, per-session pipelines, InfluxDB and MQTT out.

paho's network thread only timestamps and enqueues; one named worker thread validates and
routes, so messages of a session are processed in the order the broker delivered them, and a
committer thread (committer.py) writes and acknowledges what the worker hands it at each commit.
The inbox between them is bounded (``inbox_limit``): when the worker falls behind, the network
thread waits for room, reads nothing more, and the broker queues for us (back-pressure).
Rejected payloads are republished on the dead-letter topic with the reason and logged once.

Poison: every exception while handling one message dead-letters that message (field
``processing``, with the exception) and the worker goes on. A *retained* message that is
dead-lettered is remembered by a digest of its topic and payload, so the broker's redelivery on
every (re)subscription does not dead-letter it again; with ``state_path`` the memory is kept in
``<state>.rejects.json`` across restarts. If a message ever keeps the worker busy longer than a
limit anyway, :meth:`AnalysisService.check_stall` remembers it as *stalling* (the caller then
exits so the supervisor restarts the process, see ``rekindle analysis --stall-limit``); when that
message is delivered again it is dead-lettered without being handled.

Durability: messages are acknowledged to the broker by hand (paho ``manual_ack``), in *commits*
(completed by the committer, in order, from what the worker handed over). A commit first makes
every line produced so far durable (written to InfluxDB, or appended to the write-ahead log and
fsynced: :meth:`BufferedWriter.persist`), then writes the checkpoint (every
open session's state and the last applied ``seq`` per stream, fsynced), and only then sends the
PUBACKs of the messages processed since the previous commit. A process killed at any point
therefore either had a message acknowledged *and* covered by the checkpoint, or gets it again
from the broker (persistent session, same client id); a message resent although the checkpoint
covers it is dropped as a duplicate by its ``seq``. Replayed lines carry the same timestamps, so
InfluxDB overwrites rather than duplicates them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import pickle
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

from rekindle import __version__, contract
from rekindle.analysis import health, points, schema, snapshot
from rekindle.analysis.committer import (
    CHECKPOINT_EVERY_S,
    MAX_JOBS,
    CommitJob,
    Committer,
    write_atomic,
)
from rekindle.analysis.core import (
    AnalysisConfig,
    Episode,
    EpisodeStart,
    Event,
    FeatureRow,
    QualityChange,
)
from rekindle.analysis.errors import BrokerError
from rekindle.analysis.influx import BufferedWriter
from rekindle.analysis.live_metrics import MetricsRunner
from rekindle.analysis.partition import Partition
from rekindle.analysis.pipeline import PipelineOutput, SessionPipeline
from rekindle.analysis.reorder import (
    RUN_ORDER,
    Held,
    ReorderBuffer,
    SeqMessage,
    StreamKey,
    run_key,
    stream_key,
)
from rekindle.mqtturl import MqttSettings, make_client, reason_ok

log = logging.getLogger(__name__)

DEADLETTER_EXCERPT_BYTES = 2048
CHECKPOINT_FORMAT = "rekindle-analysis-checkpoint-1"
REJECTS_FORMAT = "rekindle-analysis-rejects-1"
#: Most digests remembered per kind (retained rejects, stalling messages); oldest go first.
MAX_REMEMBERED = 10_000
#: Most distinct field names counted in ``ServiceStats.rejected_by_field`` (then "other").
MAX_FIELD_STATS = 200
#: Most ended sessions remembered, so that their late markers do not reopen them.
MAX_ENDED_SESSIONS = 10_000
#: A session's out/ack goes out after this many of its messages or seconds (see _due_acks).
ACK_EVERY_MESSAGES = 100
ACK_EVERY_S = 1.0
#: Most received messages held for the worker (~1 s at 500 live sessions, ~1.5 MB); then the
#: network thread waits and the broker queues (the inbox once grew to 28.6k messages, 181 MB).
INBOX_LIMIT = 2000
#: The checkpoint's snapshot waits this many times its last cost after it (at most 20 % of
#: the worker's time; see ``AnalysisService._snapshot_too_soon``).
SNAPSHOT_COST_FACTOR = 4.0


@dataclass(slots=True)
class ServiceStats:
    received: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    missing_seq: int = 0
    seq_jumps: int = 0
    #: Messages that arrived after a seq gap and waited for it to be filled (see reorder.py).
    held: int = 0
    #: seq gaps given up (their messages never arrived); each is stored as a ``gap`` point.
    gaps: int = 0
    #: Messages whose handling raised an unexpected exception (dead-lettered, worker went on).
    internal_errors: int = 0
    #: Redeliveries of a retained message already dead-lettered (skipped, not dead-lettered).
    retained_repeats: int = 0
    #: Markers that arrived after their session ended (stored on it, session not reopened).
    markers_after_end: int = 0
    #: Longest time the worker spent on one message (s).
    longest_message_s: float = 0.0
    #: Times paho's network thread found the inbox full, and how long it waited for room (s):
    #: back-pressure.
    inbox_waits: int = 0
    inbox_full_s: float = 0.0
    #: Most messages the inbox held at once (``inbox_limit``, plus one per third of a
    #: keepalive that the worker took none: ``inbox_over_bound``).
    inbox_peak: int = 0
    #: Messages taken over the bound so that the MQTT connection stays alive.
    inbox_over_bound: int = 0
    sessions_finished: int = 0
    episodes: int = 0
    rejected_by_field: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Inbound:
    topic: str
    payload: bytes
    received: float
    retained: bool
    mid: int = 0
    qos: int = 0
    connection: int = 0  # which broker connection delivered it (a mid is only valid there)
    #: handling it left it waiting (behind a seq gap, or a status behind its run's data): its
    #: only durable copy is the checkpoint, which its PUBACK must wait for
    held: bool = False


def open_sessions(path: Path) -> list[tuple[str, str]]:
    """The open sessions (site, session) a checkpoint file would restore; [] when there is no
    usable checkpoint (missing, unreadable, another format or Rekindle version)."""
    try:
        state = pickle.loads(path.read_bytes())  # our own state file (see checkpoint)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return []
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        return []
    if state.get("version") != __version__:
        return []
    return sorted(state.get("pipelines", {}))


def _msg_start(msg: SeqMessage) -> float:
    if isinstance(msg, contract.GapMessage):
        return msg.start
    if msg.t is not None:
        return msg.t[0] if msg.t else 0.0
    assert isinstance(msg, contract.SampleMessage)
    assert msg.t0 is not None
    return msg.t0


def _msg_end(msg: SeqMessage) -> float:
    if isinstance(msg, contract.GapMessage):
        return msg.end
    if isinstance(msg, contract.MarkerMessage):
        return msg.t[-1] if msg.t else 0.0
    return msg.end


def _digest(topic: str, payload: bytes) -> str:
    """Identity of a message for the poison memory (topic and payload)."""
    return hashlib.sha256(topic.encode("utf-8", "replace") + b"\0" + payload).hexdigest()


def _json_value(value: object) -> object:
    """A schema value as JSON: a tuple of items as an array."""
    return list(value) if isinstance(value, tuple) else value


def episode_payload(site: str, session: str, ep: Episode | EpisodeStart) -> dict[str, object]:
    """``out/episode``: the schema's episode record (:mod:`rekindle.analysis.schema`), ``state``
    ``closed`` for an :class:`Episode`, ``open`` for an :class:`EpisodeStart`."""
    if isinstance(ep, EpisodeStart):
        state, rec = "open", schema.open_episode_record(ep)
    else:
        state, rec = "closed", schema.episode_record(ep)
    body: dict[str, object] = {
        "v": contract.PROTOCOL_VERSION,
        "site": site,
        "session": session,
        "state": state,
    }
    body.update((k, _json_value(v)) for k, v in rec.items())
    return body


def feature_payload(row: FeatureRow) -> dict[str, object]:
    """``out/features``: ``t``, the schema's per-second values, ``contributions``, ``quality``."""
    body: dict[str, object] = {"v": contract.PROTOCOL_VERSION, "t": row.time}
    body.update(schema.feature_values(row))
    body["contributions"] = dict(row.contributions)
    body["quality"] = dict(row.quality)
    return body


class AnalysisService:
    """Consumes every session under ``site`` (``+`` for all) until :meth:`stop`."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        writer: BufferedWriter,
        *,
        site: str = "+",
        config: AnalysisConfig | None = None,
        client_id: str | None = None,
        persistent_session: bool = False,
        publish_features: bool = True,
        clock: Callable[[], float] = time.time,
        on_events: Callable[[str, str, list[Event]], None] | None = None,
        state_path: Path | None = None,
        session_idle_s: float = 3600.0,
        heartbeat_path: Path | None = None,
        commit_interval_s: float = 0.25,
        ack_batch: int = 16,
        idle_commit_s: float = 0.005,
        gap_wait_s: float = 10.0,
        checkpoint_every_s: float = CHECKPOINT_EVERY_S,
        partition: Partition | None = None,
        metrics: MetricsRunner | None = None,
        inbox_limit: int = INBOX_LIMIT,
        commit_jobs: int = MAX_JOBS,
        fork_snapshots: bool = True,
    ) -> None:
        self.mqtt_settings = mqtt_settings
        if inbox_limit < 1:
            raise ValueError(f"inbox_limit must be at least 1, not {inbox_limit}")
        #: Most received messages waiting for the worker; then paho's network thread waits
        #: (back-pressure: the broker queues for us, see the module docstring).
        self.inbox_limit = inbox_limit
        #: Only the sessions of this partition are handled; the others' messages are
        #: acknowledged unprocessed (their own partition's service handles them: workers.py).
        self.partition = partition
        self.writer = writer
        self.site = site
        self.config = config
        self.publish_features = publish_features
        self.clock = clock
        self.on_events = on_events
        self.state_path = state_path
        self.session_idle_s = session_idle_s
        self.heartbeat_path = heartbeat_path
        self.commit_interval_s = commit_interval_s
        self.ack_batch = ack_batch
        self.idle_commit_s = idle_commit_s
        #: NeuroKit2's interval metrics of episodes and segments (None: not computed).
        self.metrics = metrics
        self._stalled = False  # the committer could not make its head job durable yet
        self._pending: list[_Inbound] = []
        #: Lines produced since the last commit point (handed to the committer with it).
        self._lines: list[str] = []
        #: Owns ``writer`` while the service runs: durable lines, checkpoint, then acks.
        self._committer = Committer(
            writer, checkpoint_path=state_path, deliver=self._deliver, max_jobs=commit_jobs
        )
        self._pending_since = 0.0
        self._connection = 0
        self._ack_lock = threading.Lock()
        self.commits = 0
        # seq gaps: later messages wait for a resend (only with a checkpoint, which makes the
        # waiting messages durable); statuses of a session wait behind its waiting messages
        self._reorder = ReorderBuffer(wait_s=gap_wait_s)
        self.checkpoint_every_s = checkpoint_every_s
        #: messages handled since the last checkpoint snapshot, and when that was taken
        self._unsnapshotted = 0
        self._last_snapshot = -math.inf
        self.snapshots = 0
        #: how long the last snapshot took the worker (s): the next one waits
        #: SNAPSHOT_COST_FACTOR times that (the checkpoint's share of the worker stays bounded)
        self._snapshot_cost_s = 0.0
        #: snapshots put off that way, and the PUBACKs that wait for the next one (messages
        #: whose only durable copy is the checkpoint: held behind a gap, or every message with
        #: ``checkpoint_every_s`` 0)
        self.snapshots_put_off = 0
        self._acks_awaiting_snapshot: list[tuple[int, int, int]] = []
        #: messages left waiting so far (held behind a gap, statuses deferred)
        self._holds = 0
        #: the snapshot is pickled by a forked child (snapshot.py) where the system can fork:
        #: the one in flight, how many were forked, how many failed (their acknowledgements
        #: then wait for the next one), the worker's time in the last fork (s)
        self.fork_snapshots = fork_snapshots and snapshot.available()
        self._forked: snapshot.ForkedSnapshot | None = None
        self.snapshots_forked = 0
        self.snapshot_failures = 0
        self.snapshot_fork_s = 0.0
        self._deferred: dict[tuple[str, str], list[tuple[str, bytes, float]]] = {}
        self._last_end: dict[StreamKey, float] = {}
        self._run_n: dict[StreamKey, int] = {}
        # end-to-end acknowledgement (out/ack): what is durably handled, per session
        self._positions: dict[tuple[str, str], dict[tuple[str, str, str | None], int]] = {}
        self._device_states: dict[tuple[str, str], dict[str, tuple[str, str | None]]] = {}
        self._session_gaps: dict[tuple[str, str], int] = {}
        #: every unrepaired gap of a session (seq gaps given up, publishers' gap records), per
        #: stream: (count, seconds); the session summary (:meth:`gap_summary`)
        self._gap_spans: dict[tuple[str, str], dict[str, tuple[int, float]]] = {}
        self._ack_dirty: set[tuple[str, str]] = set()
        # out/ack of a live session at most every ACK_EVERY_S (see _due_acks)
        self._ack_urgent: set[tuple[str, str]] = set()
        self._ack_unsent: dict[tuple[str, str], int] = {}
        self._ack_sent: dict[tuple[str, str], float] = {}
        self._republish_acks = False
        self._last_beat = -math.inf
        self._last_seen: dict[tuple[str, str], float] = {}
        self.persistent_session = persistent_session
        self.stats = ServiceStats()
        self.pipelines: dict[tuple[str, str], SessionPipeline] = {}
        self._seq = contract.SeqTracker()
        self._inbox: queue.Queue[_Inbound] = queue.Queue()
        self._stop = threading.Event()
        #: Stopping with a persistent session: what arrives now is left unacknowledged for the
        #: broker to resend after the restart (or to the partition's next owner), so that the
        #: worker's inbox drains even under a continuous stream.
        self._refusing = False
        self._working = threading.Event()  # the worker runs: the inbox bound applies
        self._idle = threading.Event()
        self._finished = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()  # the broker acknowledged every subscription
        self._pending_subs: set[int] = set()
        self._subs_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        #: (monotonic start, topic, payload) of the message the worker is handling, if any.
        self._busy: tuple[float, str, bytes] | None = None
        self._rejects_lock = threading.Lock()
        self._rejected_retained: OrderedDict[str, None] = OrderedDict()
        self._stalling: OrderedDict[str, None] = OrderedDict()
        self._rejects_path = (
            None if state_path is None else state_path.with_name(state_path.name + ".rejects.json")
        )
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._client = make_client(
            mqtt_settings, client_id, clean_session=not persistent_session, manual_ack=True
        )
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe

    # ---------------------------------------------------------------- paho callbacks (enqueue only)
    def _on_connect(
        self, client: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        if not reason_ok(reason):
            log.error("broker %s refused the connection: %s", self.mqtt_settings.url, reason)
            return
        with self._ack_lock:
            self._connection += 1
            self._connected.set()
        self._republish_acks = True  # a restarted broker may have lost the retained acks
        self._subscribed.clear()
        with self._subs_lock:
            for topic in contract.subscriptions(self.site):
                _rc, mid = client.subscribe(topic, qos=1)
                if mid is not None:
                    self._pending_subs.add(mid)
        log.info(
            "analysis connected to %s, subscribing to site %s", self.mqtt_settings.url, self.site
        )

    def _on_subscribe(
        self, _c: mqtt.Client, _u: object, mid: int, _codes: object, _p: object
    ) -> None:
        with self._subs_lock:
            self._pending_subs.discard(mid)
            done = not self._pending_subs
        if done:
            self._subscribed.set()
            part = "" if self.partition is None else f" (partition {self.partition})"
            log.info("analysis subscribed to site %s%s", self.site, part)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        with self._ack_lock:
            self._connected.clear()
        if not self._stop.is_set():
            log.warning(
                "analysis lost broker %s (%s); reconnecting", self.mqtt_settings.url, reason
            )

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # the broker should refuse these; never break the loop
            log.warning("dropped a message whose topic is not UTF-8: %r", msg._topic[:200])
            self._client.ack(msg.mid, msg.qos)
            return
        if self.partition is not None and not self.partition.owns(topic):
            self._client.ack(msg.mid, msg.qos)  # another partition's session
            return
        if self._refusing:
            return
        self._idle.clear()
        item = _Inbound(
            topic,
            bytes(msg.payload),
            self.clock(),
            bool(msg.retain),
            msg.mid,
            msg.qos,
            self._connection,
        )
        if self._inbox.qsize() >= self.inbox_limit and self._working.is_set():
            self._wait_for_room()
        self._inbox.put(item)
        self.stats.inbox_peak = max(self.stats.inbox_peak, self._inbox.qsize())

    @property
    def acks_awaiting_snapshot(self) -> int:
        """PUBACKs held until a checkpoint snapshot covers their messages (the next one, or
        the forked one in flight)."""
        forked = self._forked
        return len(self._acks_awaiting_snapshot) + (0 if forked is None else len(forked.acks))

    @property
    def connections(self) -> int:
        """How many times the service connected to the broker (1 unless it lost it)."""
        return self._connection

    def _wait_for_room(self) -> None:
        """Back-pressure (network thread): wait while the inbox is full. Reading nothing more
        from the socket makes the broker queue for us (mosquitto: up to max_queued_messages,
        beyond which it drops QoS 1 messages, which publishers resend as they are not
        acknowledged end to end). The bound holds only while the worker runs: before it starts
        (a persistent session's queue arrives before the subscription acknowledgement, which
        this thread must still read) and once stopping, nothing waits.

        The wait lasts at most a third of the MQTT keepalive: this thread alone writes to the
        broker (PUBACKs, ``out/*``, pings), and a broker that hears nothing from us for 1.5
        keepalives drops the connection (mosquitto: "exceeded timeout"), which a held-up worker
        then pays for with redeliveries. After that the message is taken over the bound
        (``stats.inbox_over_bound``), this thread writes what is due, and waits again at the
        next message: the inbox grows by at most one message per third of a keepalive while
        the worker takes none.
        """
        started = time.monotonic()
        deadline = started + max(0.5, self.mqtt_settings.keepalive / 3.0)
        self.stats.inbox_waits += 1
        while (
            self._inbox.qsize() >= self.inbox_limit
            and self._working.is_set()
            and not self._stop.is_set()
        ):
            if time.monotonic() >= deadline:
                self.stats.inbox_over_bound += 1
                break
            self._stop.wait(0.002)
        self.stats.inbox_full_s += time.monotonic() - started

    # ---------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 10.0) -> AnalysisService:
        if self.state_path is not None:
            snapshot.remove_leftovers(self.state_path)  # (a crash's, never installed)
            self._restore(self.state_path)
        self._load_rejects()
        try:
            self._connect(timeout)
        except BrokerError:
            if self.metrics is not None:
                self.metrics.close(0.0)
            raise
        self._committer.start()
        self._worker = threading.Thread(target=self._work, name="rekindle-analysis", daemon=True)
        self._worker.start()
        self._working.set()
        return self

    def _connect(self, timeout: float) -> None:
        try:
            self._client.connect(
                self.mqtt_settings.host, self.mqtt_settings.port, self.mqtt_settings.keepalive
            )
        except OSError as exc:
            raise BrokerError(self.mqtt_settings.url, f"cannot connect: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            raise BrokerError(self.mqtt_settings.url, "no connection acknowledgement in time")
        # until the broker acknowledged the subscriptions, what is published is not ours yet
        if not self._subscribed.wait(timeout):
            self._client.loop_stop()
            raise BrokerError(self.mqtt_settings.url, "no subscription acknowledgement in time")

    @property
    def inbox_size(self) -> int:
        """Messages received and not yet taken by the worker."""
        return self._inbox.qsize()

    def wait_idle(self, quiet_s: float = 1.0, timeout: float = 120.0) -> bool:
        """Block until nothing arrived for ``quiet_s`` and the inbox is empty (for tests/tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle.wait(0.1) and self._inbox.empty():
                time.sleep(quiet_s)
                if self._idle.is_set() and self._inbox.empty():
                    return True
        return False

    def wait_sessions_finished(
        self, count: int = 1, timeout: float = 120.0, stop: threading.Event | None = None
    ) -> bool:
        """Block until ``count`` sessions have finished (or ``timeout`` s, or ``stop`` is set);
        True when they have."""
        deadline = time.monotonic() + timeout
        with self._finished:
            while self.stats.sessions_finished < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._finished.wait(min(remaining, 0.1))
        return True

    def stop(self, timeout: float = 60.0) -> None:
        """Stop receiving, process what was already received, make it durable, acknowledge it,
        write the checkpoint and disconnect.

        With a persistent MQTT session the subscription is kept, so the broker queues what
        arrives while we are down (and resends what we received but did not acknowledge), and
        the restored sessions continue where they stopped.
        """
        if not self.persistent_session:
            self._client.unsubscribe(list(contract.subscriptions(self.site)))
        else:
            self._refusing = True
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
        if self.persistent_session:
            if self.metrics is not None:
                # the jobs still running: their lines; unfinished ones stay in the checkpoint
                self._lines.extend(self.metrics.close(timeout))
            self._commit(final=True, timeout_s=timeout)
            self._committer.close(timeout)
            self._client.disconnect()
            self._client.loop_stop()
        else:
            # the commits handed over complete first; from here this thread owns the writer
            self._committer.close(timeout)
            # without a persistent session nothing is resent: handle everything received
            self._client.disconnect()
            self._client.loop_stop()
            while not self._inbox.empty():
                item = self._inbox.get_nowait()
                self.process(item.topic, item.payload, item.received, retained=item.retained)
            if self.metrics is not None:
                self._lines.extend(self.metrics.close(timeout))
        self.writer.add(self._take_lines())
        self.writer.close(timeout_s=timeout)
        if self._forked is not None:
            self._forked.abandon()  # (the checkpoint written next covers it)
            self._forked = None
        if self.state_path is not None:
            self.checkpoint(self.state_path)
        log.info(
            "analysis stopped: %d received, %d accepted, %d rejected, %d duplicates",
            self.stats.received,
            self.stats.accepted,
            self.stats.rejected,
            self.stats.duplicates,
        )

    # ------------------------------------------------------------------------------ commits
    def _commit(self, *, final: bool = False, timeout_s: float = 60.0) -> bool:
        """Hand everything processed so far to the committer, which makes it durable, writes
        the checkpoint snapshot taken here, and only then acknowledges it (committer.py).

        Waits while the committer's queue is full (back-pressure). Returns False while the
        committer cannot make its oldest job durable (InfluxDB away and no write-ahead log):
        its messages stay unacknowledged, so the broker keeps them, and stops sending more once
        its in-flight window is full.
        """
        if self._republish_acks:
            self._republish_acks = False
            self._ack_dirty.update(self._positions)
            self._ack_urgent.update(self._positions)
        pending, self._pending = self._pending, []
        self._unsnapshotted += len(pending)
        # PUBACKs that promise a checkpoint: with one, every PUBACK with checkpoint_every_s 0;
        # otherwise those of messages left waiting while something still waits (their only
        # durable copy is the snapshot). The others' lines are durable when this job's PUBACKs
        # go out (until 2026-12-04 every PUBACK waited while any message waited: with two
        # workers, which see messages out of order often, the broker's in-flight window then
        # passed about one window of messages per snapshot)
        every = self.checkpoint_every_s <= 0
        waiting = len(self._reorder) > 0 or bool(self._deferred)
        acks: list[tuple[int, int, int]] = []
        promised: list[tuple[int, int, int]] = []
        for i in pending:
            if i.qos:
                promises = self.state_path is not None and (every or (i.held and waiting))
                (promised if promises else acks).append((i.mid, i.qos, i.connection))
        checkpoint: bytes | snapshot.SnapshotFile | None = None
        publishes: list[tuple[str, bytes]] = []
        if self._forked is not None and (final or self._forked.poll()):
            checkpoint, acks, publishes = self._forked_done(self._forked, acks, final)
            self._forked = None
        if self.state_path is not None and self._unsnapshotted and self._snapshot_due(final):
            if final or (self._forked is None and not self._snapshot_too_soon()):
                # the snapshot is taken now: later changes to the sessions must not leak into it
                forked = None if final or not self.fork_snapshots else self._fork_snapshot()
                self._unsnapshotted = 0
                self.snapshots += 1
                held, self._acks_awaiting_snapshot = self._acks_awaiting_snapshot, []
                if forked is not None:
                    # what it covers is acknowledged once the committer installs it; PUBACKs
                    # that promise no checkpoint go out with this commit's lines
                    forked.acks = held + promised
                    if self._ack_dirty:
                        forked.publishes = self._due_acks(force=False, keys=forked.keys)
                    self._forked = forked
                else:
                    started = time.monotonic()
                    if checkpoint is not None and not isinstance(checkpoint, bytes):
                        checkpoint.discard()  # (this newer one covers it)
                    checkpoint = self._checkpoint_bytes()
                    self._last_snapshot = time.monotonic()
                    self._snapshot_cost_s = self._last_snapshot - started
                    acks = held + promised + acks
            else:
                self.snapshots_put_off += 1
                # these PUBACKs wait for the next snapshot (the broker keeps the messages
                # meanwhile, and sends no more once its in-flight window is full: back-pressure)
                self._acks_awaiting_snapshot.extend(promised)
        else:
            self._acks_awaiting_snapshot.extend(promised)
        # out/ack promises that a restart needs none of what it covers: with a checkpoint, only
        # once one (this job's, or an earlier job's, written before this job completes) covers
        # everything handled (not while a forked one is in flight: it covers its own)
        acks_due = self._ack_dirty and (
            self.state_path is None or (self._unsnapshotted == 0 and self._forked is None)
        )
        if acks_due:
            publishes.extend(self._due_acks(force=final))
        job = CommitJob(
            self._take_lines(), checkpoint, acks, publishes, final=final, timeout_s=timeout_s
        )
        if job.lines or job.acks or job.publishes or job.checkpoint is not None or final:
            self._committer.submit(job, None if final else self._stop)
        if final:
            self._committer.wait_drained(timeout_s)
        if pending:
            self.commits += 1
        return not self._committer.stalled

    def _fork_snapshot(self) -> snapshot.ForkedSnapshot | None:
        """A child pickling the checkpoint as it is now (snapshot.py); None when the system
        cannot fork (then the worker pickles it, as without ``fork_snapshots``)."""
        assert self.state_path is not None
        started = time.monotonic()
        try:
            forked = snapshot.ForkedSnapshot.start(
                self._checkpoint_state(), snapshot.snapshot_path(self.state_path, self.snapshots)
            )
        except OSError as exc:
            log.warning("cannot fork the checkpoint snapshot (%s): pickling it here", exc)
            return None
        self._last_snapshot = time.monotonic()
        self.snapshot_fork_s = self._last_snapshot - started
        self.snapshots_forked += 1
        return forked

    def _forked_done(
        self, forked: snapshot.ForkedSnapshot, acks: list[tuple[int, int, int]], final: bool
    ) -> tuple[snapshot.SnapshotFile | None, list[tuple[int, int, int]], list[tuple[str, bytes]]]:
        """The checkpoint, PUBACKs and ``out/ack`` messages of this commit once ``forked`` has
        ended (or, with ``final``, been abandoned for the final snapshot, which covers it). A
        failed child is logged; what it covered waits for the next snapshot."""
        if final:
            forked.abandon()
            self._unsnapshotted += 1  # (the final snapshot is taken in any case)
            return None, forked.acks + acks, forked.publishes
        # the next snapshot waits for SNAPSHOT_COST_FACTOR times the CPU this one cost (not
        # its wall time, which a busy machine stretches while the PUBACKs wait): the
        # checkpoint's share of a core stays bounded, as on the worker
        self._snapshot_cost_s = forked.cpu_s
        try:
            written = forked.result()
        except snapshot.SnapshotError as exc:
            self.snapshot_failures += 1
            log.error("%s; its messages wait for the next snapshot", exc)
            self._acks_awaiting_snapshot = forked.acks + self._acks_awaiting_snapshot
            self._ack_dirty.update(forked.keys)
            self._ack_urgent.update(forked.keys)
            self._unsnapshotted += 1
            return None, acks, []
        return written, forked.acks + acks, forked.publishes

    def _snapshot_due(self, final: bool) -> bool:
        """Whether this commit writes the checkpoint.

        The PUBACKs of a commit go out once its lines are durable; the checkpoint, which costs
        ~0.3-0.8 ms per open session to pickle (``benchmarks/checkpoint_cost.py``: ~65 ms for 250
        sessions, and mosquitto's in-flight window makes a commit every ~100 messages; done by
        a forked child, snapshot.py, unless ``fork_snapshots`` is off), is
        written every ``checkpoint_every_s`` (0: at every commit), at once while messages wait
        behind a gap or statuses behind them (acknowledged, their only durable copy is the
        checkpoint), and when ``out/ack`` is urgent (a status: a publisher's ``end`` waits for
        it). Everything handled since the last checkpoint is stored in InfluxDB (or the
        write-ahead log) but not yet covered by ``out/ack``: after a crash its publishers resend
        it (they keep what ``out/ack`` does not cover; the restarted service lists what comes
        after the gap as ``held``), and it is analysed again. Only a publisher that relies on
        broker acknowledgements alone loses it from the analysis state (its samples are stored).
        """
        return (
            final
            or self.checkpoint_every_s <= 0
            or time.monotonic() - self._last_snapshot >= self.checkpoint_every_s
            or len(self._reorder) > 0
            or bool(self._deferred)
            or bool(self._acks_awaiting_snapshot)  # (PUBACKs wait for it)
            or bool(self._ack_urgent)  # a status, a gap, a reconnect: out/ack at once
        )

    def _snapshot_too_soon(self) -> bool:
        """Whether the next snapshot must wait: until SNAPSHOT_COST_FACTOR times the last one's
        cost (the worker's pickling, or the forked child's wall time) has passed since it was
        taken, so that the checkpoint takes at most 1 / (1 + SNAPSHOT_COST_FACTOR) of the worker
        (or of a core, forked) whatever the reasons it is due.
        Without this bound a worker that fell behind (its sessions out of order, resends held
        behind gaps: a checkpoint due at every commit) spent ever more of its time pickling
        the checkpoint and fell further behind (500 live sessions, 2 workers: 70 % of the
        worker's samples in the snapshot after 7 minutes, docs/scaling.md)."""
        wait = SNAPSHOT_COST_FACTOR * self._snapshot_cost_s
        return time.monotonic() - self._last_snapshot < wait

    def _take_lines(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines

    def _deliver(self, job: CommitJob) -> None:
        """Acknowledge a durable, checkpointed commit (the committer's thread)."""
        with self._ack_lock:
            if self._connected.is_set():
                for mid, qos, connection in job.acks:
                    # messages of an older connection are resent: their seq drops them
                    if connection == self._connection:
                        self._client.ack(mid, qos)
        for topic, payload in job.publishes:
            self._client.publish(topic, payload, qos=1, retain=True)

    def _due_acks(
        self, *, force: bool = False, keys: list[tuple[str, str]] | None = None
    ) -> list[tuple[str, bytes]]:
        """The (retained) ``out/ack`` messages saying how far each changed session is handled,
        for the committer to publish once the commit they are built at is durable.

        A session's data moves its position with every message; its ack goes out when
        ``ACK_EVERY_MESSAGES`` messages or ``ACK_EVERY_S`` passed since its last one (a live
        session: about once a second instead of at every commit, which at 500 sessions was
        ~2,000 retained publishes a second), and at once for a status, a gap, a reconnect or
        ``force``. Publishers resend only after 3 s without progress (publisher.py). ``keys``
        gets the sessions they are for.
        """
        now = time.monotonic()
        publishes: list[tuple[str, bytes]] = []
        due = [
            key
            for key in self._ack_dirty
            if force
            or key in self._ack_urgent
            or self._ack_unsent.get(key, 0) >= ACK_EVERY_MESSAGES
            or now - self._ack_sent.get(key, -math.inf) >= ACK_EVERY_S
        ]
        if keys is not None:
            keys.extend(due)
        for key in due:
            self._ack_dirty.discard(key)
            self._ack_urgent.discard(key)
            self._ack_unsent.pop(key, None)
            self._ack_sent[key] = now
            positions = self._positions.get(key, {})
            ack = contract.AckMessage(
                key[0],
                key[1],
                time.time(),
                tuple(
                    contract.AckPosition(device, stream, run, seq)
                    for (device, stream, run), seq in sorted(
                        positions.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
                    )
                ),
                dict(self._device_states.get(key, {})),
                self._session_gaps.get(key, 0),
                self._held_ranges(key),
            )
            publishes.append(contract.encode_ack(ack))
        if len(self._positions) > 2 * MAX_ENDED_SESSIONS:
            for key in [k for k in self._positions if k not in self.pipelines]:
                if key not in self._ended:
                    self._positions.pop(key, None)
                    self._device_states.pop(key, None)
                    self._session_gaps.pop(key, None)
                    self._gap_spans.pop(key, None)
                    self._ack_sent.pop(key, None)
        return publishes

    def _held_ranges(self, session: tuple[str, str]) -> tuple[contract.HeldRange, ...]:
        """The ``n`` ranges of each run of ``session`` waiting behind a gap, for ``out/ack``
        (its publisher resends what it sent before them and is not covered: lost)."""
        ranges: list[contract.HeldRange] = []
        for key in self._reorder.streams(*session):
            if key[3] != RUN_ORDER or key[4] is None:
                continue
            # consecutive positions share position - index
            for _, run in itertools.groupby(
                enumerate(self._reorder.orders(key)), lambda pair: pair[1] - pair[0]
            ):
                ns = [n for _, n in run]
                ranges.append(contract.HeldRange(key[4], ns[0], ns[-1]))
        return tuple(ranges[: contract.MAX_ACK_HELD])

    # ------------------------------------------------------------------------ checkpoints
    def checkpoint(self, path: Path) -> None:
        """Write every open session's state (and the seq trackers) to ``path`` atomically.

        The file is a pickle: it must be writable only by the service (as any state file).
        """
        write_atomic(path, self._checkpoint_bytes())
        log.debug("checkpoint: %d open session(s) to %s", len(self.pipelines), path)

    def _checkpoint_bytes(self) -> bytes:
        return pickle.dumps(self._checkpoint_state(), protocol=pickle.HIGHEST_PROTOCOL)

    def _checkpoint_state(self) -> dict[str, object]:
        return {
            "format": CHECKPOINT_FORMAT,
            "version": __version__,
            "pipelines": self.pipelines,
            "seq": self._seq,
            "ended": list(self._ended),
            "reorder": self._reorder,
            "deferred": self._deferred,
            "last_end": self._last_end,
            "run_n": self._run_n,
            "positions": self._positions,
            "device_states": self._device_states,
            "session_gaps": self._session_gaps,
            "gap_spans": self._gap_spans,
            "metrics": None if self.metrics is None else self.metrics.checkpoint_state(),
        }

    def _restore(self, path: Path) -> None:
        if not path.exists():
            return
        try:
            state = pickle.loads(path.read_bytes())  # our own state file (see checkpoint)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            log.error("cannot read checkpoint %s (%s): starting without it", path, exc)
            return
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            log.error("checkpoint %s has an unknown format: starting without it", path)
            return
        if state.get("version") != __version__:
            log.warning(
                "checkpoint %s was written by Rekindle %s, this is %s: starting without it",
                path,
                state.get("version"),
                __version__,
            )
            return
        self.pipelines = state["pipelines"]
        self._seq = state["seq"]
        self._ended = OrderedDict.fromkeys(tuple(k) for k in state.get("ended", ()))
        self._reorder = state.get("reorder", self._reorder)
        self._deferred = state.get("deferred", {})
        self._last_end = state.get("last_end", {})
        self._run_n = state.get("run_n", {})
        self._positions = state.get("positions", {})
        self._device_states = state.get("device_states", {})
        self._session_gaps = state.get("session_gaps", {})
        self._gap_spans = state.get("gap_spans", {})
        if self.metrics is not None and state.get("metrics") is not None:
            self.metrics.restore(state["metrics"])
        self._last_seen = dict.fromkeys(self.pipelines, time.monotonic())
        log.info("restored %d open session(s) from %s", len(self.pipelines), path)

    # ------------------------------------------------------------------- poison memory
    def _load_rejects(self) -> None:
        path = self._rejects_path
        if path is None or not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            known = isinstance(doc, dict) and doc.get("format") == REJECTS_FORMAT
            retained = [str(d) for d in doc["retained"]] if known else []
            stalling = [str(d) for d in doc["stalling"]] if known else []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read %s (%s): starting without it", path, exc)
            return
        if not known:
            log.error("%s has an unknown format: starting without it", path)
            return
        with self._rejects_lock:
            self._rejected_retained = OrderedDict.fromkeys(retained[-MAX_REMEMBERED:])
            self._stalling = OrderedDict.fromkeys(stalling[-MAX_REMEMBERED:])

    def _remember(self, table: OrderedDict[str, None], digest: str) -> None:
        """Add ``digest`` to ``table`` (bounded, oldest out) and save the memory."""
        with self._rejects_lock:
            table[digest] = None
            table.move_to_end(digest)
            while len(table) > MAX_REMEMBERED:
                table.popitem(last=False)
            doc = {
                "format": REJECTS_FORMAT,
                "retained": list(self._rejected_retained),
                "stalling": list(self._stalling),
            }
        path = self._rejects_path
        if path is None:
            return
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            log.error("cannot write %s: %s (rejects remembered in memory only)", path, exc)

    def check_stall(self, limit_s: float) -> bool:
        """True when the worker has been handling one message for more than ``limit_s``.

        That message is then remembered as stalling (on disk with ``state_path``): if it is
        delivered again, after the restart the caller should now cause, it is dead-lettered
        without being handled. Called from another thread than the worker.
        """
        busy = self._busy
        if busy is None:
            return False
        started, topic, payload = busy
        spent = time.monotonic() - started
        if spent <= limit_s:
            return False
        digest = _digest(topic, payload)
        with self._rejects_lock:
            known = digest in self._stalling
        if not known:
            self._remember(self._stalling, digest)
            log.critical(
                "the analysis worker has spent %.0f s on one message on %s (limit %g s); the "
                "message is remembered as stalling and will be dead-lettered if delivered again",
                spent,
                topic,
                limit_s,
            )
        return True

    # ------------------------------------------------------------------------------- worker
    def _beat(self) -> None:
        """Write the heartbeat file (at most every ``health.EVERY_S``; from the worker only)."""
        if self.heartbeat_path is None or time.monotonic() - self._last_beat < health.EVERY_S:
            return
        self._last_beat = time.monotonic()
        beat = health.Heartbeat(
            time.time(),
            self._connected.is_set(),
            len(self.pipelines),
            self._inbox.qsize(),
            self.writer.queued,
            self.stats.received,
            self.stats.rejected,
        )
        try:
            health.write(self.heartbeat_path, beat)
        except OSError as exc:
            log.error("cannot write heartbeat %s: %s", self.heartbeat_path, exc)

    def _work(self) -> None:
        while True:
            try:
                self._beat()
                # Holding unacknowledged messages, wait only briefly: the broker may be waiting
                # for our acknowledgements (mosquitto sends at most max_inflight_messages
                # unacknowledged ones, amqtt one at a time), so nothing arriving means commit.
                # (a forked snapshot in flight: its acknowledgements wait for it to end)
                waiting = bool(self._pending) or self._forked is not None
                wait = self.idle_commit_s if waiting and not self._stalled else 0.2
                try:
                    item = self._inbox.get(timeout=wait)
                except queue.Empty:
                    self._collect_metrics()
                    if waiting and not self._stalled:
                        self._stalled = not self._commit()
                        continue
                    self._expire_idle_sessions()
                    self._give_up_gaps()
                    self._stalled = not self._commit()
                    if not self._stalled and self._committer.drained() and self._forked is None:
                        self._idle.set()
                    if self._stop.is_set():
                        return
                    continue
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append(item)
                holds = self._holds
                self.process(item.topic, item.payload, item.received, retained=item.retained)
                item.held = self._holds != holds
                self._collect_metrics()
                # Commit at once when we hold ack_batch messages and either the broker has
                # nothing more for us right now or the committer is free (its write then
                # overlaps our work on the next messages, and the broker's in-flight window
                # does not run dry; not with a checkpoint, whose snapshot costs the worker
                # 0.3-0.7 ms and ~180 kB per open session: benchmarks/checkpoint_cost.py), or
                # when the oldest unacknowledged message waited
                # commit_interval_s (a continuous stream).
                if (
                    len(self._pending) >= self.ack_batch
                    and (
                        self._inbox.empty()
                        or (self.state_path is None and self._committer.drained())
                    )
                ) or time.monotonic() - self._pending_since >= self.commit_interval_s:
                    self._stalled = not self._commit()
            except Exception:
                # (process() never raises; this is flushing, checkpoints, expiry)
                log.exception("analysis worker: unexpected error between messages; going on")
                if self._stop.wait(1.0):
                    return

    def _deadletter(self, topic: str, payload: bytes, err: contract.ContractError) -> None:
        self.stats.rejected += 1
        by_field = self.stats.rejected_by_field
        name = err.field if err.field in by_field or len(by_field) < MAX_FIELD_STATS else "other"
        by_field[name] = by_field.get(name, 0) + 1
        log.warning("rejected message on %s: %s", topic[:300], err)
        body = {
            "v": contract.PROTOCOL_VERSION,
            "topic": topic,
            "field": err.field,
            "reason": err.reason,
            "bytes": len(payload),
            "excerpt": payload[:DEADLETTER_EXCERPT_BYTES].decode("utf-8", "replace"),
        }
        self._client.publish(contract.deadletter_topic(topic), json.dumps(body), qos=1)

    def process(
        self, topic: str, payload: bytes, received: float, *, retained: bool = False
    ) -> None:
        """Validate and handle one message (the worker calls this; public for tools).

        Never raises: a message whose handling fails in any way is dead-lettered with the
        reason (see the module docstring for retained and stalling messages).

        A retained status is the device's last known state, replayed by the broker when we
        subscribe: it is stored but never starts or ends a session.
        """
        if topic.startswith(contract.DEADLETTER_ROOT + "/"):
            return  # never re-process our own rejects
        self.stats.received += 1
        started = time.monotonic()
        self._busy = (started, topic, payload)
        try:
            self._process(topic, payload, received, retained)
        except Exception as exc:
            self.stats.internal_errors += 1
            log.error("error while handling a message on %s", topic[:300], exc_info=True)
            reason = f"{type(exc).__name__} while handling the message: {exc}"
            try:
                self._reject(topic, payload, contract.ContractError("processing", reason), retained)
            except Exception:
                log.exception("cannot dead-letter the message on %s", topic[:300])
        finally:
            self._busy = None
            spent = time.monotonic() - started
            self.stats.longest_message_s = max(self.stats.longest_message_s, spent)

    def _reject(
        self, topic: str, payload: bytes, err: contract.ContractError, retained: bool
    ) -> None:
        if retained:
            self._remember(self._rejected_retained, _digest(topic, payload))
        self._deadletter(topic, payload, err)

    def _behind(self, msg: contract.StatusMessage) -> bool:
        """True while messages its run published before ``msg`` (``sent``: n 0 .. sent-1) are
        not all handled yet. A broker may deliver a status before data published earlier
        (mosquitto does when its in-flight window frees and fills out of order), and an ``end``
        applied early would finish the session before its last seconds. Only with a checkpoint,
        which makes the deferred status durable (as the messages held for a gap)."""
        if self.state_path is None or msg.sent is None or msg.sent <= 0 or msg.run is None:
            return False
        last = self._run_n.get((msg.site, msg.session, "", RUN_ORDER, msg.run))
        return last is None or last < msg.sent - 1

    def _process(
        self,
        topic: str,
        payload: bytes,
        received: float,
        retained: bool,
        *,
        tail_given_up: bool = False,
    ) -> None:
        if retained or self._stalling:
            digest = _digest(topic, payload)
            with self._rejects_lock:
                stalling = digest in self._stalling
                repeat = retained and digest in self._rejected_retained
            if stalling:
                reason = "this message stalled the worker before a restart: not handled again"
                self._reject(topic, payload, contract.ContractError("processing", reason), retained)
                return
            if repeat:
                self.stats.retained_repeats += 1
                log.debug("retained message on %s was dead-lettered before: skipped", topic)
                return
        try:
            msg = contract.decode(topic, payload, now=received)
        except contract.ContractError as err:
            self._reject(topic, payload, err, retained)
            return
        if not isinstance(msg, contract.StatusMessage):
            if self._hold_if_early(msg, topic, payload, received):
                return
        elif not retained and (
            self._reorder.waiting(msg.site, msg.session)
            or (not tail_given_up and self._behind(msg))
        ):
            # the session's end (or any status) applies after the data published before it
            self._deferred.setdefault((msg.site, msg.session), []).append(
                (topic, payload, received)
            )
            self._holds += 1
            return
        if isinstance(msg, contract.StatusMessage):
            self._apply(msg, topic, retained)
        else:
            self._apply_in_order(msg, topic)
            self._release(self._order(msg)[0])

    # ------------------------------------------------------------------------------ seq gaps
    def _order(self, msg: SeqMessage) -> tuple[StreamKey, int, int | None]:
        """(key, position, last handled position) that orders ``msg``: its ``n`` among all
        messages of its publisher run when it has one, else its stream's ``seq``."""
        if msg.n is not None:
            key = run_key(msg)
            return key, msg.n, self._run_n.get(key)
        key = stream_key(msg)
        return key, msg.seq, self._seq.position(key)

    def _hold_if_early(self, msg: SeqMessage, topic: str, payload: bytes, received: float) -> bool:
        """Keep a message that comes after a gap until the gap is filled (True if kept).

        Only with a checkpoint (``state_path``), which makes the waiting messages durable, and
        not for an ended session (a marker after the end is stored on it at once). Positions
        start at 0 per publisher run, so a stream first seen at seq 5 waits for 0-4 as well.
        """
        if self.state_path is None or (msg.site, msg.session) in self._ended:
            return False
        key, order, last = self._order(msg)
        ahead = order - (0 if last is None else last + 1)
        if ahead <= 0 or ahead > contract.MAX_SEQ_JUMP or self._seq.jumped(stream_key(msg)):
            # in order, a duplicate, a jump, or just after one (whose message probably is the
            # missing one with a corrupt seq): the seq tracker's rules
            return False
        if self._reorder.hold(key, order, Held(msg, topic, payload, received, time.monotonic())):
            self.stats.held += 1
            self._holds += 1
            self._ack_dirty.add((msg.site, msg.session))  # out/ack lists it as held
            log.debug("%s %d on %s waits for its predecessors", key[3], order, topic)
        else:
            self.stats.duplicates += 1
        return True

    def _apply_in_order(self, msg: SeqMessage, topic: str) -> None:
        self._apply(msg, topic, False)
        if msg.n is not None:
            key, order, last = self._order(msg)
            if last is None or 0 < order - last <= contract.MAX_SEQ_JUMP:
                self._run_n[key] = order

    def _release(self, key: StreamKey) -> None:
        """Handle the waiting messages that now follow in order; then deferred statuses."""
        while True:
            last = self._run_n.get(key) if key[3] == RUN_ORDER else self._seq.position(key)
            item = None if last is None else self._reorder.take(key, last + 1)
            if item is None:
                break
            self._apply_in_order(item.msg, item.topic)
        session = (key[0], key[1])
        if session in self._deferred and not self._reorder.waiting(*session):
            for topic, payload, received in self._deferred.pop(session):
                self._process(topic, payload, received, False)

    def _give_up_tails(self, *, everything: bool = False) -> None:
        """Apply the statuses that waited ``gap_wait_s`` for messages published before them
        that never came (the run's tail; nothing after them waits, so no gap is given up)."""
        now = math.inf if everything else self.clock()
        for session in list(self._deferred):
            items = self._deferred[session]
            if self._reorder.waiting(*session) or now - items[0][2] <= self._reorder.wait_s:
                continue
            del self._deferred[session]
            log.warning(
                "session %s/%s: gave up waiting for messages published before its status %s",
                session[0],
                session[1],
                "(the run's last messages never came)",
            )
            for topic, payload, received in items:
                self._process(topic, payload, received, False, tail_given_up=True)

    def _give_up_gaps(self, *, everything: bool = False) -> None:
        """Give up gaps that waited too long (all of them with ``everything``), storing a
        ``gap`` point per stream, then handle the waiting messages in order; then the statuses
        that waited as long for the run's last messages."""
        self._give_up_held(everything=everything)
        self._give_up_tails(everything=everything)

    def _give_up_held(self, *, everything: bool = False) -> None:
        now = math.inf if everything else time.monotonic()
        while keys := self._reorder.overdue(now):
            for key in keys:
                if key not in self._reorder.streams():
                    continue
                order, item = self._reorder.take_first(key)
                if key[3] == RUN_ORDER:
                    log.warning(
                        "gave up waiting for messages %d-%d of run %s in %s/%s",
                        self._run_n.get(key, -1) + 1,
                        order - 1,
                        key[4],
                        key[0],
                        key[1],
                    )
                    self._run_n[key] = order - 1
                if self._seq.position(stream_key(item.msg)) is None and item.msg.seq > 0:
                    self.stats.missing_seq += item.msg.seq
                    self._record_gap(item.msg, 0, item.msg.seq)
                self._apply_in_order(item.msg, item.topic)
                self._release(key)

    def _record_gap(self, msg: SeqMessage, first_missing: int, missing: int) -> None:
        """Store a ``gap`` point: ``missing`` messages of the stream before ``msg`` never came."""
        key = stream_key(msg)
        start = _msg_start(msg)
        gap_start = min(self._last_end.get(key, start), start)
        session = (msg.site, msg.session)
        self.stats.gaps += 1
        self._session_gaps[session] = self._session_gaps.get(session, 0) + 1
        self._tally_gap(session, msg.stream, start - gap_start)
        self._ack_dirty.add(session)
        self._ack_urgent.add(session)
        line = points.line(
            "gap",
            {
                "site": msg.site,
                "session": msg.session,
                "device": msg.device,
                "stream": msg.stream,
                "source": "seq",
            },
            schema.gap_record(
                gap_start, start, messages=missing, first_seq=first_missing, last_seq=msg.seq - 1
            ),
            points.to_ns(gap_start),
        )
        if line is not None:
            self._lines.append(line)

    def _tally_gap(self, session: tuple[str, str], stream: str, seconds: float) -> None:
        spans = self._gap_spans.setdefault(session, {})
        count, total = spans.get(stream, (0, 0.0))
        spans[stream] = (count + 1, total + max(0.0, seconds))

    def gap_summary(self, site: str, session: str) -> dict[str, tuple[int, float]]:
        """The unrepaired gaps of a session so far, per stream: (count, seconds missing).

        Both kinds stored as ``gap`` points: seq gaps given up (messages that never came) and
        the gap records of publishers (``gap`` messages: a BLE link that dropped). Kept after
        the session ended (for the last ``MAX_ENDED_SESSIONS``) and in the checkpoint.
        """
        return dict(sorted(self._gap_spans.get((site, session), {}).items()))

    def _resent_after_end(self, msg: contract.Message) -> bool:
        """A message that the publisher run of an ended session had sent before its end: a
        resend (its publisher had not seen the acknowledgement yet, and resends what is
        unconfirmed after 3 s without progress), not new data. Its session's seq positions
        are forgotten at the end, so without this it would start the session again from the
        resent messages alone."""
        key = (msg.site, msg.session)
        if key not in self._ended or msg.run is None:
            return False
        if isinstance(msg, contract.StatusMessage):
            return self._device_states.get(key, {}).get(msg.device) == ("end", msg.run)
        last = self._positions.get(key, {}).get((msg.device, msg.stream, msg.run))
        return last is not None and msg.seq <= last

    def _apply(self, msg: contract.Message, topic: str, retained: bool) -> None:
        """Handle one decoded message whose turn it is."""
        if not retained and self._ended and self._resent_after_end(msg):
            self.stats.duplicates += 1
            session = (msg.site, msg.session)
            self._ack_dirty.add(session)  # its publisher waits for the acknowledgement
            self._ack_urgent.add(session)
            log.debug("message on %s resent after its session ended: dropped", topic)
            return
        if not isinstance(msg, contract.StatusMessage):
            jumps = self._seq.jumps
            accept, missing = self._seq.check(msg)
            if self._seq.jumps != jumps:
                self.stats.seq_jumps += 1
                log.warning(
                    "seq %d on %s jumps more than %d ahead: data kept, seq position not moved",
                    msg.seq,
                    topic,
                    contract.MAX_SEQ_JUMP,
                )
            if not accept:
                self.stats.duplicates += 1
                log.debug("duplicate seq %d on %s dropped", msg.seq, topic)
                return
            if missing:
                self.stats.missing_seq += missing
                log.warning("%d message(s) missing before seq %d on %s", missing, msg.seq, topic)
                self._record_gap(msg, msg.seq - missing, missing)
            session = (msg.site, msg.session)
            position = self._seq.last(msg)
            if position is not None:
                self._positions.setdefault(session, {})[(msg.device, msg.stream, msg.run)] = (
                    position
                )
                self._ack_dirty.add(session)
                self._ack_unsent[session] = self._ack_unsent.get(session, 0) + 1
            self._last_end[stream_key(msg)] = _msg_end(msg)
            if isinstance(msg, contract.GapMessage):
                self._tally_gap(session, msg.gap_stream, msg.end - msg.start)
        elif not retained:
            session = (msg.site, msg.session)
            self._device_states.setdefault(session, {})[msg.device] = (msg.state, msg.run)
            self._ack_dirty.add(session)
            self._ack_urgent.add(session)
        self.stats.accepted += 1
        if retained and isinstance(msg, contract.StatusMessage):
            self._lines.extend(points.message_lines(msg))
            return
        key = (msg.site, msg.session)
        pipeline = self.pipelines.get(key)
        if pipeline is None and key in self._ended:
            if isinstance(msg, contract.MarkerMessage):
                # a clinician's note after the end belongs to the ended session: store it there
                self.stats.markers_after_end += 1
                self._lines.extend(points.message_lines(msg))
                self._seq.forget_session(*key)
                log.info("marker after the end of session %s/%s stored on it", *key)
                return
            del self._ended[key]
            log.info("session %s/%s receives data again after its end: new run", *key)
        if pipeline is None:
            pipeline = self.pipelines[key] = SessionPipeline(msg.site, msg.session, self.config)
            log.info("session %s/%s started", msg.site, msg.session)
        self._last_seen[key] = time.monotonic()
        out = pipeline.handle(msg)
        if self.metrics is not None:
            self.metrics.message(msg)
            self.metrics.events(msg.site, msg.session, out.events)
        if isinstance(msg, contract.StatusMessage) and msg.state == "end" and pipeline.ended:
            out.extend(self._finish(key, "ended"))
            # the end mark follows the session's last feature row (finish() rounds the last
            # second up, past the end status): a "now" panel's latest value is then the end
            end_t = max([msg.t, *(ev.time + 0.001 for ev in out.events if type(ev) is FeatureRow)])
            out.lines.append(points.session_end_line(msg.site, msg.session, end_t))
        self._lines.extend(out.lines)
        if out.events:
            self._publish_events(msg.site, msg.session, out.events)

    def _finish(self, key: tuple[str, str], why: str) -> PipelineOutput:
        pipeline = self.pipelines.pop(key)
        self._last_seen.pop(key, None)
        self._seq.forget_session(*key)
        for stream in [k for k in self._last_end if k[0] == key[0] and k[1] == key[1]]:
            del self._last_end[stream]
        if gaps := self._session_gaps.get(key, 0):
            why += f", with {gaps} unrepaired seq gap(s) (stored as gap points)"
        if spans := self.gap_summary(*key):
            why += "; gaps per stream: " + ", ".join(
                f"{stream} {count} ({seconds:.1f} s)" for stream, (count, seconds) in spans.items()
            )
        self._ended[key] = None
        while len(self._ended) > MAX_ENDED_SESSIONS:
            self._ended.popitem(last=False)
        out = pipeline.finish()
        if self.metrics is not None:
            # (before the session counts as finished: wait_metrics() then sees its jobs)
            self.metrics.session_end(key[0], key[1], out.events)
        with self._finished:
            self.stats.sessions_finished += 1
            self._finished.notify_all()
        log.info("session %s/%s %s", key[0], key[1], why)
        return out

    def _collect_metrics(self) -> None:
        """Store the metrics the NeuroKit2 process has finished (from the worker only)."""
        if self.metrics is not None and (lines := self.metrics.collect()):
            self._lines.extend(lines)

    def wait_metrics(self, timeout: float = 120.0) -> bool:
        """Block until every NeuroKit2 metrics job submitted so far is handed to the writer
        (for tests/tools); True when none is left."""
        deadline = time.monotonic() + timeout
        while self.metrics is not None and self.metrics.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _expire_idle_sessions(self) -> None:
        """Finish sessions that sent nothing for ``session_idle_s`` (a publisher that died
        without ``end``), so their open episodes are written and their memory is freed."""
        now = time.monotonic()
        for key in [k for k, seen in self._last_seen.items() if now - seen > self.session_idle_s]:
            out = self._finish(key, f"closed after {self.session_idle_s:.0f} s without data")
            self._lines.extend(out.lines)
            if out.events:
                self._publish_events(key[0], key[1], out.events)

    def _publish_events(self, site: str, session: str, events: list[Event]) -> None:
        if self.on_events is not None:
            self.on_events(site, session, events)
        for ev in events:
            if isinstance(ev, Episode | EpisodeStart):
                if isinstance(ev, Episode):
                    self.stats.episodes += 1
                body: dict[str, object] = episode_payload(site, session, ev)
                kind: contract.OutputKind = "episode"
            elif isinstance(ev, QualityChange):
                body = {"v": 1, "t": ev.time, "stream": ev.stream, "state": ev.state}
                kind = "quality"
            elif isinstance(ev, FeatureRow) and self.publish_features:
                body = feature_payload(ev)
                kind = "features"
            else:
                continue
            self._client.publish(
                contract.output_topic(site, session, kind), json.dumps(body), qos=1
            )
