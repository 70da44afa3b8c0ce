"""Replay a recording (or the simulator) through the live publishing path.

Chunks are published when their last sample would have arrived live: at ``speed`` times real
time, or as fast as the broker acknowledges with ``speed=None`` (``max``). The replay announces
itself with a retained ``online`` status and closes the session with ``end``, which tells the
analysis service to finalise the session exactly as ``rekindle analyze`` does at end of file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import Chunk

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayStats:
    chunks: int = 0
    samples: int = 0
    first: float | None = None
    last: float | None = None
    wall_s: float = 0.0


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible); otherwise a positive factor (``10``, ``60x``)."""
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text.strip().lower().removesuffix("x"))
    except ValueError as exc:
        raise ValueError(f"speed must be a positive number or 'max', not {text!r}") from exc
    if value <= 0:
        raise ValueError(f"speed must be positive, not {value}")
    return value


def replay(
    chunks: Iterable[Chunk],
    publisher: Publisher,
    *,
    speed: float | None,
    status_device: str = "replay",
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_chunk: Callable[[Chunk], None] | None = None,
) -> ReplayStats:
    stats = ReplayStats()
    wall0 = clock()
    t_ref: float | None = None
    online_sent = False
    for chunk in chunks:
        if stop is not None and stop.is_set():
            log.info("replay interrupted after %d chunks", stats.chunks)
            break
        if t_ref is None:
            t_ref = chunk.start
            stats.first = chunk.start
        if not online_sent:
            publisher.send_status(status_device, "online", chunk.start, detail="replay")
            online_sent = True
        if speed is not None:
            due = wall0 + (chunk.end - t_ref) / speed
            delay = due - clock()
            if delay > 0:
                if stop is not None:
                    stop.wait(delay)
                else:
                    time.sleep(delay)
        msg = chunk.to_message(
            publisher.site,
            publisher.session,
            publisher.next_seq(chunk.device, chunk.stream),
            publisher.run,
        )
        publisher.publish(msg)
        stats.chunks += 1
        stats.samples += len(chunk.values)
        stats.last = chunk.end if stats.last is None else max(stats.last, chunk.end)
        if on_chunk is not None:
            on_chunk(chunk)
    if online_sent and stats.last is not None:
        publisher.send_status(status_device, "end", stats.last, detail="replay finished")
    publisher.flush()
    stats.wall_s = clock() - wall0
    return stats
