"""Recorded and simulated sources. Each yields :class:`Chunk` objects in time order."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk, ReadOptions, open_source
from rekindle.ingest.sources.simulator import SimulationScript, simulate

__all__ = ["Chunk", "ReadOptions", "open_source", "open_spec"]


def open_spec(
    spec: str,
    *,
    speed: float | None = None,
    now: float | None = None,
    options: ReadOptions | None = None,
    message_s: float = 1.0,
) -> tuple[str, Iterator[Chunk]]:
    """A source named on the command line: ``sim`` / ``sim:SEED`` (the simulated wearable) or
    the path of a recording. Returns a display name and the chunks.

    A simulated session replayed at ``speed`` is placed in time so that its last sample is
    "now" when the replay ends (at 1x it runs in step with the wall clock); with ``speed=None``
    (offline or ``max``) it starts at a fixed time, so results are reproducible. ``message_s``:
    see :func:`rekindle.ingest.sources.formats.open_recording`.
    """
    if spec == "sim" or spec.startswith("sim:"):
        seed_text = spec.partition(":")[2] or "1"
        try:
            seed = int(seed_text)
        except ValueError as exc:
            raise SourceError(
                Path(spec), f"simulator seed must be an integer, not {seed_text!r}"
            ) from exc
        script = SimulationScript()
        if speed is None:
            start = 1.7e9
        else:
            wall = time.time() if now is None else now
            start = wall - script.duration * (1.0 - 1.0 / speed)
        return f"sim-{seed}", simulate(script, seed=seed, start_time=start)
    path = Path(spec)
    return display_name(path), open_source(path, options, message_s=message_s)


def display_name(path: Path) -> str:
    """A recording's name for outputs: the file or folder name without its format suffixes."""
    name = path.name
    for suffix in (".gz", ".jsonl", ".zip", ".csv", ".xdf"):
        name = name.removesuffix(suffix)
    return name
