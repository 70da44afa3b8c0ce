"""Run in a subprocess against a given build of the core (``PYTHONPATH`` = that build).

Writes, to the pickle file named by ``argv[1]``: where the core was imported from, the events of
Stress-Predict S02 and of a simulated session, a pickle of the S02 analyzer halfway through (as a
checkpoint holds it), and the events of the analyzer pickled by the *other* build (file
``argv[2]``) continued to the end. Used by ``tests/test_compiled_core.py``.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import services.analysis.core.analyzer as analyzer_module
from services.analysis.core import AnalyzerInput, Event, SessionAnalyzer, is_compiled
from services.analysis.pipeline import to_input
from services.ingest.sources.base import Chunk, open_source
from services.ingest.sources.simulator import SimulationScript, simulate

S02 = Path(__file__).resolve().parents[1] / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02"


def inputs(chunks: list[Chunk]) -> list[AnalyzerInput]:
    out: list[AnalyzerInput] = []
    seq: dict[tuple[str, str], int] = {}
    for chunk in chunks:
        key = (chunk.stream, chunk.device)
        seq[key] = seq.get(key, -1) + 1
        item = to_input(chunk.to_message("c", "c", seq[key], None))
        out.extend(item if isinstance(item, list) else [item] if item is not None else [])
    return out


def run(items: list[AnalyzerInput], analyzer: SessionAnalyzer | None = None) -> list[Event]:
    a = analyzer or SessionAnalyzer()
    events: list[Event] = []
    for item in items:
        events.extend(a.update(item))
    events.extend(a.finish())
    return events


def main() -> None:
    s02 = inputs(list(open_source(S02)))
    sim = inputs(list(simulate(SimulationScript(), seed=3)))
    half = len(s02) // 2
    a = SessionAnalyzer()
    for item in s02[:half]:
        a.update(item)
    other = pickle.loads(Path(sys.argv[2]).read_bytes())
    result = {
        "core": analyzer_module.__file__,
        "is_compiled": is_compiled(),
        "s02": run(s02),
        "sim": run(sim),
        "checkpoint": pickle.dumps(a),
        "continued": run(s02[half:], other),
    }
    Path(sys.argv[1]).write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main()
