"""``rekindle analyze --jobs N``: a batch on worker processes gives the outputs one process
gives, reports every file as it finishes (plain lines, so it reads the same off a terminal),
and a bad file fails alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rekindle.cli import main
from tests.conftest import REPO, S02, fixture_path

OUTPUTS = ("episodes.csv", "features.csv", "summary.json", "report.md")


def test_jobs_2_equals_jobs_1_and_reports_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = [str(fixture_path(S02)), str(fixture_path("empatica_e4_flirt_sample"))]
    missing = str(tmp_path / "missing")
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        argv = ["analyze", *sources, missing, "--out", str(out), "--no-plots", "--jobs", str(jobs)]
        assert main(argv) == 1  # one source failed; the others were analysed
        captured = capsys.readouterr()
        lines = captured.out.splitlines()
        progress = [ln for ln in lines if ln.startswith("[")]
        assert len(progress) == 3
        assert [re.match(r"\[[#.]{20}\] (\d)/3 ", ln).group(1) for ln in progress] == [  # type: ignore[union-attr]
            "1",
            "2",
            "3",
        ]
        assert progress[-1].startswith("[" + "#" * 20 + "]")
        s02 = next(ln for ln in progress if " S02: " in ln)
        assert re.search(r"S02: \d+ episodes, 0\.99 h in \d+\.\d s -> .*S02$", s02), s02
        failed = next(ln for ln in progress if "missing" in ln)
        assert "FAILED: " in failed
        assert "no such file or folder" in failed
        assert lines[-1] == f"analyzed 2 of 3 sources -> {out}"
        assert "missing" in captured.err
        assert "Traceback" not in captured.err
        runs[jobs] = out
    for name in ("S02", "empatica_e4_flirt_sample"):
        for output in OUTPUTS:
            one = (runs[1] / name / output).read_bytes()
            assert one == (runs[2] / name / output).read_bytes(), f"{name}/{output}"
            assert one


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", "a", "b", "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_analyze_does_not_import_the_plugins(tmp_path: Path) -> None:
    """Each analyze start skips BLE and dashboards (they cost more than reading a recording)."""
    code = (
        "import sys; from rekindle.cli import main; "
        f"rc = main(['analyze', {str(fixture_path('empatica_e4_flirt_sample'))!r}, "
        f"'--out', {str(tmp_path)!r}, '--no-plots']); "
        "loaded = [m for m in ('rekindle.dashboards.generate', 'rekindle.ingest.ble.manager', "
        "'rekindle.ingest.publisher') if m in sys.modules]; "
        "print(rc, loaded)"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stdout + proc.stderr
