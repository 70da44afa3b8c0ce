"""The committer: the thread that owns the InfluxDB writer and completes the service's commits.

At each commit point the analysis worker hands over a :class:`CommitJob`: the lines produced
since the previous one, a snapshot of the checkpoint (already pickled, so later changes to the
sessions do not leak into it) and what to acknowledge (the PUBACKs and the ``out/ack``
payloads, built from the positions at that point). The committer completes the jobs one at a
time, in the order they were handed over, each in the same order as the worker did before it
had a thread of its own:

1. make the job's lines durable (written to InfluxDB, or appended to the write-ahead log and
   fsynced: :meth:`BufferedWriter.persist`); a job that cannot be made durable yet (InfluxDB
   away and no write-ahead log) is retried every ``retry_s`` and nothing after it proceeds;
2. write the job's checkpoint snapshot (atomically, fsynced), or move the file a forked child
   wrote it to into place (:mod:`rekindle.analysis.snapshot`);
3. acknowledge (``deliver``: PUBACKs, then the ``out/ack`` publishes).

Jobs queued behind each other while the committer was busy are merged into one before it
starts on them (one write, the newest checkpoint, every acknowledgement), so the number of
writes adapts to how fast InfluxDB answers. The hand-off queue is bounded (``max_jobs``): a
worker that gets ahead of the committer waits in :meth:`Committer.submit`, stops taking
messages from its inbox, and the inbox bound passes the back-pressure on to the broker.
While the committer has nothing to do it retries the write-ahead log (InfluxDB back after an
outage).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rekindle.analysis.influx import BufferedWriter
from rekindle.analysis.snapshot import SnapshotFile, fsync_dir

log = logging.getLogger(__name__)

#: With a checkpoint, it is written at most this often (``--checkpoint-every``; and at once
#: while messages wait behind a gap, whose only durable copy it is); PUBACKs go out at every
#: commit once its lines are durable, ``out/ack`` only with the checkpoint that covers it
#: (``AnalysisService._snapshot_due``). 0, the default: at every commit, which publishers that
#: rely on broker acknowledgements alone need; when every publisher keeps what ``out/ack`` does
#: not cover (``rekindle ingest``/``replay`` do), 2 s carries 500 sessions (docs/scaling.md).
CHECKPOINT_EVERY_S = 0.0

#: Most commit jobs waiting for the committer; then the worker waits (back-pressure).
MAX_JOBS = 4

#: How long a stop retries InfluxDB for its last lines unless it says otherwise (s): the
#: default of :meth:`Committer.close` and of a final :class:`CommitJob`.
STOP_TIMEOUT_S = 60.0


@dataclass(slots=True)
class CommitJob:
    """One commit point of the worker (see the module docstring)."""

    lines: list[str]
    #: The checkpoint: pickled at the commit point, or written to a file by a forked child
    #: (None: none is written for this job).
    checkpoint: bytes | SnapshotFile | None = None
    #: (mid, qos, connection) of every message processed since the previous commit.
    acks: list[tuple[int, int, int]] = field(default_factory=list)
    #: ``out/ack`` messages (topic, payload) to publish, retained, once durable.
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    #: The last commit before stopping: retry writing to InfluxDB for up to ``timeout_s``
    #: (the stop's own budget: the committer may take the job before :meth:`Committer.close`
    #: tells it one), then append to the write-ahead log.
    final: bool = False
    timeout_s: float = STOP_TIMEOUT_S
    added: bool = False


def merge(jobs: list[CommitJob]) -> CommitJob:
    """One job doing what ``jobs`` (in order) would: all their lines, the newest checkpoint
    (taken after the others, so it covers their messages), all their acknowledgements."""
    checkpoints = [job.checkpoint for job in jobs if job.checkpoint is not None]
    for older in checkpoints[:-1]:
        if isinstance(older, SnapshotFile):
            older.discard()
    return CommitJob(
        [line for job in jobs for line in job.lines],
        checkpoints[-1] if checkpoints else None,
        [ack for job in jobs for ack in job.acks],
        [pub for job in jobs for pub in job.publishes],
        final=any(job.final for job in jobs),
        timeout_s=min((job.timeout_s for job in jobs if job.final), default=STOP_TIMEOUT_S),
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one (fsynced)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


class Committer:
    """Completes :class:`CommitJob` s in order on a named thread of its own (module docstring).

    Only this thread uses ``writer`` between :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        writer: BufferedWriter,
        *,
        checkpoint_path: Path | None,
        deliver: Callable[[CommitJob], None],
        max_jobs: int = MAX_JOBS,
        retry_s: float = 0.2,
    ) -> None:
        if max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
        self.writer = writer
        self.checkpoint_path = checkpoint_path
        self.deliver = deliver
        self.max_jobs = max_jobs
        self.retry_s = retry_s
        #: Commits completed (durable, checkpointed and acknowledged) and waits in submit().
        self.completed = 0
        self.submit_waits = 0
        #: Times queued jobs were merged into one (the committer was the slower side).
        self.merged = 0
        self.submit_wait_s = 0.0
        self._jobs: deque[CommitJob] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._close_timeout_s = STOP_TIMEOUT_S
        #: The job at the head could not be made durable at its last attempt.
        self.stalled = False
        self._thread: threading.Thread | None = None

    def start(self) -> Committer:
        self._thread = threading.Thread(target=self._run, name="rekindle-committer", daemon=True)
        self._thread.start()
        return self

    @property
    def backlog(self) -> int:
        """Jobs handed over and not completed yet (the one in progress included)."""
        return len(self._jobs)

    def drained(self) -> bool:
        """True when every job handed over is completed."""
        return not self._jobs

    def submit(self, job: CommitJob, stop: threading.Event | None = None) -> None:
        """Hand ``job`` over; waits while ``max_jobs`` are queued, unless ``stop`` is set or the
        committer is closing (then the bound no longer applies: nothing may be dropped)."""
        with self._cond:
            if len(self._jobs) >= self.max_jobs:
                started = time.monotonic()
                self.submit_waits += 1
                while (
                    len(self._jobs) >= self.max_jobs
                    and not self._closing
                    and not (stop is not None and stop.is_set())
                ):
                    self._cond.wait(0.05)
                self.submit_wait_s += time.monotonic() - started
            self._jobs.append(job)
            self._cond.notify_all()

    def wait_drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
        return True

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Complete every job handed over (a job that cannot be made durable is retried for
        up to ``timeout_s``, then left unacknowledged), then end the thread."""
        with self._cond:
            self._closing = True
            self._close_timeout_s = timeout_s
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # ------------------------------------------------------------------------- the thread
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._jobs and not self._closing:
                    self._cond.wait(self.retry_s)
                if not self._jobs:
                    if self._closing:
                        return
                    job = None
                else:
                    if len(self._jobs) > 1 and not self._jobs[0].added:
                        # one write, one checkpoint (the latest covers the others) for them all
                        merged = merge(list(self._jobs))
                        self._jobs.clear()
                        self._jobs.append(merged)
                        self.merged += 1
                        self._cond.notify_all()
                    job = self._jobs[0]  # stays queued until completed: drained() is exact
            try:
                if job is None:
                    self.writer.flush(block=False)  # the write-ahead log, once InfluxDB is back
                    continue
                self._complete(job)
            except Exception:
                log.exception("committer: unexpected error; retrying")
                time.sleep(self.retry_s)
                continue
            with self._cond:
                self._jobs.popleft()
                self._cond.notify_all()

    def _complete(self, job: CommitJob) -> None:
        if not job.added:
            self.writer.add(job.lines)
            job.added = True
        while True:
            final = job.final or self._closing
            if final:
                timeout_s = self._close_timeout_s
                if job.final:
                    timeout_s = min(timeout_s, job.timeout_s)
                durable = (
                    self.writer.flush(block=True, timeout_s=timeout_s) or self.writer.persist()
                )
            else:
                durable = self.writer.persist()
            self.stalled = not durable
            if durable:
                break
            if final:
                log.error(
                    "stopping: %d line(s) could not be made durable (InfluxDB away and no "
                    "write-ahead log); their messages stay unacknowledged at the broker",
                    self.writer.queued,
                )
                return
            with self._cond:
                self._cond.wait(self.retry_s)
        if isinstance(job.checkpoint, SnapshotFile) and self.checkpoint_path is not None:
            job.checkpoint.install(self.checkpoint_path)
        elif isinstance(job.checkpoint, bytes) and self.checkpoint_path is not None:
            write_atomic(self.checkpoint_path, job.checkpoint)
        self.deliver(job)
        self.completed += 1
