"""The cross-validation harness (benchmarks/detection_cv.py) on a small scale: 2 folds of 4
subjects. Checks that the table is produced and consistent, not a score."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks import detection_cv as cv
from benchmarks.detection_features import extract, load
from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.evaluate import analyze_recording

FIXTURE_S06 = cv.FIXTURES / "Raw_data" / "S06"


def _roots() -> list[Path]:
    dev = cv.find_dev_set()
    return [dev, cv.FIXTURES] if dev is not None else [cv.FIXTURES]


def test_cached_rows_replay_to_the_analyzers_episodes(tmp_path: Path) -> None:
    # The harness replays cached per-second inputs through the detector; that must give exactly
    # the episodes of the full streaming analyzer on the recording (so CV scores what ships).
    cfg = AnalysisConfig()
    live = analyze_recording(FIXTURE_S06, cfg).episodes
    feats = load("S06", FIXTURE_S06, cfg, cache=tmp_path)
    assert list((tmp_path).glob("*/S06.npz"))  # cached ...
    again = load("S06", FIXTURE_S06, cfg, cache=tmp_path)  # ... and read back identically
    assert again.time.tolist() == feats.time.tolist()
    assert again.eda_degraded.tolist() == feats.eda_degraded.tolist()
    replayed = cv.replay(cfg, again).episodes
    assert live, "S06 has episodes under the defaults"
    assert replayed == live
    # a detector parameter changes the episodes but not the cached inputs
    other = AnalysisConfig(eda_rise_ln=0.4)
    assert cv.replay(other, feats).episodes == analyze_recording(FIXTURE_S06, other).episodes
    assert extract("S06", FIXTURE_S06, other).tonic.tolist() == feats.tonic.tolist()


@pytest.mark.slow
def test_two_folds_of_four_subjects(tmp_path: Path) -> None:
    subjects = cv.load_subjects(_roots(), cache=tmp_path, limit=4)
    if len(subjects) < 4:  # without the development set: the 3 fixtures only
        assert len(subjects) == 3
    names = [s.name for s in subjects]
    res = cv.run(
        subjects, 2, 0, 200, thresholds=(0.2, 0.3), small=True, ablations=False, sweep=(0.2, 0.3)
    )
    folds = res["folds"]
    assert len(folds) == 2
    assert sorted(n for f in folds for n in f) == sorted(names)  # a partition of the subjects
    grid = {
        f"{d}: eda_rise_ln={th} {other[0]}={other[1][0]}"
        for d, (_, other) in cv.DESIGNS.items()
        for th in (0.2, 0.3)
    }
    for name, design in {**res["designs"], "whole": res["selected"]}.items():
        per_fold = design["folds"]
        assert [f["test"] for f in per_fold] == folds
        pooled = design["pooled"]
        # pooled held-out onsets are the per-fold onsets added up
        assert pooled["arousal_onsets"] == sum(f["arousal_onsets"] for f in per_fold), name
        for figs in (*per_fold, pooled):
            if figs["hit"] is not None:
                assert 0.0 <= figs["chance"] <= 1.0
                assert figs["margin"] == pytest.approx(figs["hit"] - figs["chance"])
    for f in res["selected"]["folds"]:
        assert f["chosen"] in grid
    assert res["selected_on_all"] in grid
    assert set(res["defaults"]) <= {"all", "dev", "fixtures"}
    assert [row["eda_rise_ln"] for row in res["sweep"]] == [0.2, 0.3]
    # a higher threshold never opens more episodes
    assert res["sweep"][1]["arousal_onsets"] <= res["sweep"][0]["arousal_onsets"]
    # the release stage: every design cross-validated on the same folds, its choice from its own
    # grid (the first two values of each parameter in the quick run)
    assert list(res["release_designs"]) == list(cv.RELEASE_DESIGNS)
    release_grid = set()
    for dname, (fixed, full) in cv.RELEASE_DESIGNS.items():
        quick = tuple((n, v[:2]) for n, v in full)
        own = set(cv.release_candidates(AnalysisConfig(), fixed, quick))
        release_grid |= {f"{dname}: {c}" for c in own}
        design = res["release_designs"][dname]
        assert [f["test"] for f in design["folds"]] == folds
        assert all(f["chosen"] in own for f in design["folds"]), dname
        assert res["release_designs_on_all"][dname] in own
        pooled = design["pooled"]
        for figs in (*design["folds"], pooled):
            for k in ("release_recall", "release_precision"):
                assert figs[k] is None or 0.0 <= figs[k] <= 1.0
        # pooled held-out release counts are the per-fold counts added up, and give the figures
        for k in cv.RELEASE_COUNTS:
            assert pooled[k] == sum(f[k] for f in design["folds"]), (dname, k)
        if pooled["release_windows"]:
            found = pooled["release_windows_found"] / pooled["release_windows"]
            assert pooled["release_recall"] == pytest.approx(found)
        # releases never change the arousal episodes
        assert pooled["arousal_onsets"] == res["defaults"]["all"]["arousal_onsets"]
    assert res["releases_on_all"] in release_grid
    assert all(f["chosen"] in release_grid for f in res["releases"]["folds"])
    assert cv.SHIPPED_RELEASE in cv.RELEASE_DESIGNS
    text = cv.format_report(res)
    assert f"Per fold, {cv.SHIPPED_RELEASE}:" in text
    assert "Held-out folds, pooled" in text
    assert "chance" in text
    assert all(math.isfinite(res["defaults"]["all"][k]) for k in ("hit", "chance", "margin"))
