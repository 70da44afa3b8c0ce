"""Run in a subprocess against a given build of the core (``PYTHONPATH`` = that build).

Run with the repository root on ``PYTHONPATH`` after the build (for ``tests`` helpers). Writes,
to the pickle file named by ``argv[1]``: where the core was imported from, the events of
Stress-Predict S02 and of a simulated session, a pickle of the S02 analyzer halfway through (as a
checkpoint holds it), and the events of the analyzer pickled by the *other* build (file
``argv[2]``) continued to the end, and the events of a session with a registered detector
(``extended``). Used by ``tests/test_compiled_core.py``.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from collections.abc import Iterable
from pathlib import Path

import rekindle.analysis.core.analyzer as analyzer_module
from rekindle.analysis.core import AnalyzerInput, Event, SessionAnalyzer, is_compiled
from rekindle.analysis.core.extensions import register, unregister
from rekindle.analysis.evaluate import analyzer_inputs
from rekindle.analysis.params import build_config
from rekindle.ingest.sources.base import Chunk, open_source
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.analysis_core.helpers import run

S02 = Path(__file__).resolve().parents[1] / "fixtures" / "stress_predict_e4" / "Raw_data" / "S02"


def inputs(chunks: Iterable[Chunk]) -> list[AnalyzerInput]:
    return [item for _, items in analyzer_inputs(chunks) for item in items]


def extended() -> tuple[list[Event], list[Event]]:
    """The session of ``tests/test_extending.py`` (simulated, plus skin temperature) with its
    registered detector (``tests/extra_detector.py``, plain Python driven by this build's core):
    the events, and those of an analyzer pickled halfway and continued."""
    from tests.test_extending import MODULE, PARAMS, session  # noqa: PLC0415

    module = importlib.import_module(MODULE)
    register(module.SPEC)
    try:
        config = build_config(PARAMS)
        items = inputs(session())
        whole = run(items, config)
        half = len(items) // 2
        a = SessionAnalyzer(config)
        first: list[Event] = []
        for item in items[:half]:
            first.extend(a.update(item))
        return whole, first + run(items[half:], analyzer=pickle.loads(pickle.dumps(a)))
    finally:
        unregister(module.SPEC.name)


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
        "continued": run(s02[half:], analyzer=other),
        "extended": extended(),
    }
    Path(sys.argv[1]).write_bytes(pickle.dumps(result))


if __name__ == "__main__":
    main()
