"""Session-affine analysis workers: partitions, leases, take-over and rebalancing.

The sessions are split into ``P`` fixed **partitions** by a stable hash of ``(site, session)``
(:mod:`partition`). A partition is the unit that moves: it is one :class:`AnalysisService`
with its own persistent MQTT session (client id ``<client-id>-p<i>``), checkpoint
(``<state>.p<i>``) and write-ahead log (``<spool>.p<i>``). Its client subscribes to every
session and acknowledges at once, unprocessed, what belongs to other partitions; what is its
own goes through the service's durable path (acknowledged only once durable and checkpointed).

A **worker** process (:class:`PartitionWorker`) owns some partitions. Ownership is a lease: an
exclusive ``flock(2)`` on ``<leases>/p<i>.lock``, which the kernel releases the moment the owner
dies, however it dies. Membership is a lease too (``<leases>/members/<name>.lock``). Every
``poll_s`` a worker counts the live members ``n`` and holds ``ceil(P / n)`` partitions:

- a worker that **dies** (SIGKILL, crash, out of memory) frees its leases; a survivor below its
  share takes the partition, restores its checkpoint and connects with its client id, so the
  broker resends everything not acknowledged and what queued meanwhile: the sessions continue
  where the checkpoint left them, and what was processed after it is processed again (the
  checkpoint and the acknowledgements are consistent, see :mod:`service`);
- a worker that **joins** raises ``n``; a worker above its share stops one partition cleanly
  (final commit, checkpoint, disconnect, the broker queues meanwhile) and frees its lease, and
  the newcomer takes it the same way.

So a session is handled by exactly one worker at a time (the lease), and moves with its
checkpoint. :func:`supervise` is ``rekindle analysis --workers K``: it starts ``K`` worker
processes and starts a worker again when one exits while the service is not stopping.
docs/scaling.md explains the choice (mosquitto shares subscriptions round-robin per message,
which would split a session over workers) and how it carries to a clustered broker.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rekindle.analysis import health
from rekindle.analysis.errors import AnalysisError
from rekindle.analysis.service import AnalysisService

log = logging.getLogger(__name__)

PARTITIONS_FILE = "partitions"


class WorkerError(AnalysisError):
    """The partition leases under ``path`` cannot be used as asked; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path`` (created), or None if taken."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class LeaseDir:
    """Membership and partition leases as ``flock(2)`` locks on files under ``path``.

    Works between processes of one machine (and containers sharing a volume on it); across
    machines use a lease service instead (docs/scaling.md). Files are never removed: a lock
    file whose lock can be taken belongs to nobody.
    """

    def __init__(self, path: Path, partitions: int, member: str) -> None:
        if partitions < 1:
            raise WorkerError(
                path, f"the number of partitions must be at least 1, not {partitions}"
            )
        if not member or "/" in member or member.startswith("."):
            raise WorkerError(path, f"worker name {member!r}: use letters, digits, '-' or '_'")
        self.path = path
        self.partitions = partitions
        self.member = member
        self._member_fd: int | None = None
        self._held: dict[int, int] = {}

    def join(self, timeout_s: float = 10.0) -> None:
        """Create the directory, check the partition count, and become a live member."""
        members = self.path / "members"
        try:
            members.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkerError(self.path, f"cannot create the lease directory: {exc}") from exc
        self._check_partitions()
        deadline = time.monotonic() + timeout_s
        while (fd := _try_lock(members / f"{self.member}.lock")) is None:
            if time.monotonic() > deadline:
                raise WorkerError(
                    self.path,
                    f"a worker named {self.member!r} is already running: give each worker its "
                    "own --worker-name",
                )
            time.sleep(0.05)  # another member probing our file for liveness (microseconds)
        self._member_fd = fd

    def _check_partitions(self) -> None:
        record = self.path / PARTITIONS_FILE
        try:
            known = int(record.read_text(encoding="ascii").strip())
        except FileNotFoundError:
            tmp = record.with_name(f"{PARTITIONS_FILE}.{os.getpid()}.tmp")
            tmp.write_text(f"{self.partitions}\n", encoding="ascii")
            os.replace(tmp, record)
            return
        except (OSError, ValueError) as exc:
            raise WorkerError(self.path, f"unreadable {PARTITIONS_FILE} file: {exc}") from exc
        if known != self.partitions:
            raise WorkerError(
                self.path,
                f"the sessions' state is split into {known} partitions, not {self.partitions}: "
                f"run with --partitions {known} (a session's checkpoint belongs to its "
                "partition; another count would start its sessions again without their state)",
            )

    def live_members(self) -> list[str]:
        """Names of the members alive now (this one included), sorted."""
        live = {self.member}
        for lock in (self.path / "members").glob("*.lock"):
            name = lock.name.removesuffix(".lock")
            if name == self.member:
                continue
            fd = _try_lock(lock)
            if fd is None:
                live.add(name)
            else:
                _unlock(fd)
        return sorted(live)

    def try_acquire(self, partition: int) -> bool:
        if partition in self._held:
            return True
        fd = _try_lock(self.path / f"p{partition}.lock")
        if fd is None:
            return False
        self._held[partition] = fd
        return True

    def release(self, partition: int) -> None:
        fd = self._held.pop(partition, None)
        if fd is not None:
            _unlock(fd)

    def held(self) -> set[int]:
        return set(self._held)

    def close(self) -> None:
        for partition in list(self._held):
            self.release(partition)
        if self._member_fd is not None:
            _unlock(self._member_fd)
            self._member_fd = None


def share(partitions: int, members: int) -> int:
    """How many partitions each of ``members`` live workers holds at most."""
    return math.ceil(partitions / max(1, members))


def preferred(partitions: int, members: Sequence[str], member: str) -> list[int]:
    """Partitions in the order ``member`` tries them: its own residue class first (so that
    workers spread without contending), then the rest."""
    rank, n = members.index(member), len(members)
    own = [p for p in range(partitions) if p % n == rank]
    return own + [p for p in range(partitions) if p % n != rank]


class PartitionWorker:
    """Holds a fair share of the partitions' leases and runs one service per held partition.

    ``make_service(p)`` builds (not starts) the service of partition ``p``. The worker is the
    only place that starts and stops those services.
    """

    def __init__(
        self,
        leases: LeaseDir,
        make_service: Callable[[int], AnalysisService],
        *,
        poll_s: float = 0.5,
        stall_limit_s: float = 120.0,
        heartbeat_path: Path | None = None,
        partition_heartbeat: Callable[[int], Path | None] | None = None,
    ) -> None:
        self.leases = leases
        self.make_service = make_service
        self.poll_s = poll_s
        self.stall_limit_s = stall_limit_s
        self.heartbeat_path = heartbeat_path
        self.partition_heartbeat = partition_heartbeat
        self.services: dict[int, AnalysisService] = {}
        self.moves = 0  # partitions taken or given up after the first ones

    def run(self, stop: threading.Event) -> bool:
        """Until ``stop``: keep the share of partitions; then stop every service cleanly.

        Returns True, without stopping anything, when a service is stuck on one message (the
        caller exits, which frees the leases: the other workers take the partitions)."""
        self.leases.join()
        log.info(
            "worker %s joined %s (%d partitions)",
            self.leases.member,
            self.leases.path,
            self.leases.partitions,
        )
        stuck = False
        try:
            while True:
                if self.step():
                    stuck = True
                    return True
                if stop.wait(self.poll_s):
                    return False
        finally:
            if not stuck:
                for partition in sorted(self.services):
                    self._give_up(partition, "stopping")
            self.leases.close()

    def step(self) -> bool:
        """One round of leases; True when a service is stuck (the caller then exits)."""
        members = self.leases.live_members()
        fair = share(self.leases.partitions, len(members))
        order = preferred(self.leases.partitions, members, self.leases.member)
        while len(self.services) > fair:
            # give up the one least ours (last in our order): a joining worker takes it
            partition = max(self.services, key=order.index)
            self._give_up(partition, f"{len(members)} workers now share {self.leases.partitions}")
        for partition in order:
            if len(self.services) >= fair:
                break
            if partition not in self.services and self.leases.try_acquire(partition):
                self._take(partition)
        if self.stall_limit_s > 0:
            for partition, service in self.services.items():
                if service.check_stall(self.stall_limit_s):
                    log.critical(
                        "partition %d stuck: worker %s exits, its partitions move to the "
                        "other workers",
                        partition,
                        self.leases.member,
                    )
                    return True
        self._beat()
        return False

    def _take(self, partition: int) -> None:
        try:
            service = self.make_service(partition).start()
        except AnalysisError as exc:
            log.error(
                "worker %s cannot start partition %d: %s (retrying)",
                self.leases.member,
                partition,
                exc,
            )
            self.leases.release(partition)
            return
        self.services[partition] = service
        log.info(
            "worker %s took partition %d/%d (%d open session(s) restored)",
            self.leases.member,
            partition,
            self.leases.partitions,
            len(service.pipelines),
        )

    def _give_up(self, partition: int, why: str) -> None:
        service = self.services.pop(partition)
        try:
            service.stop()
        finally:
            self.leases.release(partition)
        log.info(
            "worker %s gave up partition %d/%d (%s)",
            self.leases.member,
            partition,
            self.leases.partitions,
            why,
        )

    def _beat(self) -> None:
        """Write this worker's heartbeat from its partitions' heartbeats, only while every one
        is fresh (a stuck partition makes the worker's heartbeat go stale)."""
        if self.heartbeat_path is None:
            return
        beats = []
        for partition in self.services:
            path = None if self.partition_heartbeat is None else self.partition_heartbeat(partition)
            if path is None:
                continue
            try:
                beat = health.read(path)
            except health.HealthError:
                continue  # just started: its first beat comes within a loop
            if health.verdict(beat, time.time()) is not None:
                return
            beats.append(beat)
        write_combined(self.heartbeat_path, beats)


def write_combined(path: Path, beats: Sequence[health.Heartbeat]) -> None:
    """One heartbeat summing ``beats`` (connected when every one is), written now."""
    combined = health.Heartbeat(
        time.time(),
        all(b.connected for b in beats),
        sum(b.sessions_open for b in beats),
        sum(b.inbox for b in beats),
        sum(b.write_queue for b in beats),
        sum(b.received for b in beats),
        sum(b.rejected for b in beats),
    )
    try:
        health.write(path, combined)
    except OSError as exc:
        log.error("cannot write heartbeat %s: %s", path, exc)


class Child(Protocol):
    """What :func:`supervise` needs of a worker process (``multiprocessing.Process``)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def exitcode(self) -> int | None: ...

    def start(self) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...


@dataclass
class _Slot:
    name: str
    child: Child | None = None
    started: float = 0.0
    delay_s: float = 1.0
    due: float = 0.0


def supervise(
    names: Sequence[str],
    spawn: Callable[[str], Child],
    stop: threading.Event,
    *,
    restart_s: float = 1.0,
    max_restart_s: float = 30.0,
    stop_timeout_s: float = 120.0,
    on_tick: Callable[[], None] | None = None,
) -> int:
    """Run a worker process per name until ``stop``; start one again ``restart_s`` after it
    exits (doubling up to ``max_restart_s`` while it keeps dying within a minute). Then stop
    them with SIGTERM and return 0 when every one stopped cleanly, else 1."""
    slots = [_Slot(name, delay_s=restart_s) for name in names]
    while not stop.is_set():
        now = time.monotonic()
        for slot in slots:
            if slot.child is not None and not slot.child.is_alive():
                code = slot.child.exitcode
                slot.child.join()
                slot.child = None
                quick = now - slot.started < 60.0
                slot.delay_s = min(max_restart_s, slot.delay_s * 2) if quick else restart_s
                slot.due = now + slot.delay_s
                log.warning(
                    "worker %s exited with status %s: starting it again in %.0f s",
                    slot.name,
                    code,
                    slot.delay_s,
                )
            if slot.child is None and now >= slot.due:
                slot.child = spawn(slot.name)
                slot.child.start()
                slot.started = now
                log.info("worker %s started (pid %s)", slot.name, slot.child.pid)
        if on_tick is not None:
            on_tick()
        stop.wait(0.2)
    running = [s for s in slots if s.child is not None]
    for slot in running:
        assert slot.child is not None
        slot.child.terminate()
    clean = True
    deadline = time.monotonic() + stop_timeout_s
    for slot in running:
        assert slot.child is not None
        slot.child.join(max(0.0, deadline - time.monotonic()))
        if slot.child.is_alive():
            log.error("worker %s did not stop within %.0f s: killing it", slot.name, stop_timeout_s)
            slot.child.kill()
            slot.child.join()
            clean = False
        elif slot.child.exitcode != 0:
            log.error("worker %s stopped with status %s", slot.name, slot.child.exitcode)
            clean = False
    return 0 if clean else 1
