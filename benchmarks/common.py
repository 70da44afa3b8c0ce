"""Pieces several benchmarks share: a git revision's tree, and a simulated session as wire
messages.

Imports nothing of ``rekindle`` at module level: ``benchmarks/session_memory.py --before REV``
runs itself in a subprocess with REV's tree first on ``PYTHONPATH``, so what it calls from here
must use that tree's modules, imported when called.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rekindle.ingest.sources.base import Chunk
    from rekindle.ingest.sources.simulator import SimulationScript

REPO = Path(__file__).resolve().parent.parent
#: Data start of the simulated sessions (unix s).
START = 1.7e9


def export(rev: str, into: Path) -> Path:
    """``rev``'s tree (``services/``, ``dashboards/`` and the ``rekindle`` link, which revisions
    before the import name ``rekindle`` lack) extracted in ``into``."""
    has_link = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{rev}:rekindle"],
        check=False,
        capture_output=True,
    )
    paths = ["services", "dashboards", *(["rekindle"] if has_link.returncode == 0 else [])]
    blob = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev, *paths],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into


def simulated_wire(
    script: SimulationScript, acc_hz: float, site: str, session: str
) -> list[tuple[Chunk, str, bytes]]:
    """Every message of a simulated session (the project's simulator, seed 3, plus a quiet
    ``acc_hz`` wrist accelerometer when > 0) as (chunk, topic, payload), in publish order: each
    when its last sample is measured, ``seq`` per stream from 0, run ``run-1``."""
    from rekindle import contract  # noqa: PLC0415
    from rekindle.ingest.sources.base import merge_in_time, regular_chunks  # noqa: PLC0415
    from rekindle.ingest.sources.simulator import DEVICE_EDA, simulate  # noqa: PLC0415

    streams = [simulate(script, seed=3, start_time=START)]
    if acc_hz > 0:
        rng = np.random.default_rng(3)
        acc = np.array([0.0, 0.0, 1.0]) + rng.normal(0.0, 0.01, (int(script.duration * acc_hz), 3))
        streams.append(regular_chunks("acc", DEVICE_EDA, START, acc_hz, np.round(acc, 4)))
    seqs: dict[tuple[str, str], int] = {}
    out = []
    for chunk in sorted(merge_in_time(streams), key=lambda c: c.end):
        seq = seqs.get((chunk.device, chunk.stream), 0)
        seqs[(chunk.device, chunk.stream)] = seq + 1
        topic, payload = contract.encode(chunk.to_message(site, session, seq, "run-1"))
        out.append((chunk, topic, payload))
    return out
