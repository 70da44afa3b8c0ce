"""The analysis image's core: compiled with mypyc through ``setup.py`` (``REKINDLE_COMPILE=1``),
exactly as services/analysis/Dockerfile builds it, then checked against the pure-Python core:
same events bit for bit on a real recording and a simulated session, and checkpoints that move
between the two builds in both directions."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from rekindle.analysis.core import EdaDecomposition, Event, FeatureRow, SessionAnalyzer, is_compiled
from rekindle.ingest.sources.base import open_source
from rekindle.ingest.sources.simulator import SimulationScript, simulate
from tests.analysis_core.helpers import run
from tests.compiled.build import BackgroundBuild
from tests.compiled.run_core import S02, extended, inputs

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "services" / "analysis" / "core"


@pytest.fixture(scope="module")
def compiled(compiled_build: BackgroundBuild) -> Path:
    """The compiled wheel installed into a folder of its own (returned): built as the Dockerfile
    does by tests/compiled/build.py, in the background since collection."""
    return compiled_build.wait()


def _key(events: list[Event]) -> list[tuple[str, object]]:
    """Events comparable bit for bit: repr (shortest round-trip floats) and raw array bytes."""
    out: list[tuple[str, object]] = []
    for e in events:
        if isinstance(e, EdaDecomposition):
            arrays = (e.times.tobytes(), e.tonic.tobytes(), e.phasic.tobytes())
            out.append(("eda", (e.device, *arrays)))
        else:
            out.append((type(e).__name__, repr(e)))
    return out


def test_every_core_module_is_compiled(compiled: Path) -> None:
    core = compiled / "rekindle" / "analysis" / "core"
    extensions = {p.name.split(".")[0] for p in core.glob("*.so")}
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    assert extensions == modules


def test_compiled_core_gives_the_same_events_and_portable_checkpoints(
    compiled: Path, tmp_path: Path
) -> None:
    s02 = inputs(list(open_source(S02)))
    half = len(s02) // 2
    pure = SessionAnalyzer()
    first: list[Event] = []
    for item in s02[:half]:
        first.extend(pure.update(item))
    pure_checkpoint = tmp_path / "pure.pickle"
    pure_checkpoint.write_bytes(pickle.dumps(pure))
    rest = run(s02[half:], analyzer=pure)

    out = tmp_path / "compiled.pickle"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests" / "compiled" / "run_core.py"),
            str(out),
            str(pure_checkpoint),
        ],
        env={**os.environ, "PYTHONPATH": os.pathsep.join((str(compiled), str(REPO)))},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = pickle.loads(out.read_bytes())
    assert str(result["core"]).endswith(".so"), result["core"]
    assert result["is_compiled"]
    assert not is_compiled()  # this process: the editable, pure-Python core

    assert _key(result["s02"]) == _key(first + rest)
    sim = inputs(list(simulate(SimulationScript(), seed=3)))
    assert _key(result["sim"]) == _key(run(sim))
    assert any(type(e).__name__ == "Episode" for e in result["sim"])
    # pure checkpoint continued by the compiled core, and the other way round
    assert _key(result["continued"]) == _key(rest)
    from_compiled = pickle.loads(result["checkpoint"])
    assert _key(run(s02[half:], analyzer=from_compiled)) == _key(rest)
    # a registered detector (plain Python) driven by the compiled core: the same events, also
    # across a checkpoint, as with the pure core
    whole, continued = result["extended"]
    pure_whole, pure_continued = extended()
    assert _key(whole) == _key(pure_whole) == _key(continued) == _key(pure_continued)
    assert any(e.extra.get("skin_temp_c") is not None for e in whole if isinstance(e, FeatureRow))
