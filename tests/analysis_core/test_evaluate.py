"""``rekindle evaluate`` on the three shared Stress-Predict subjects, end to end: the replayed
episodes are rescored here independently of services/analysis/scoring.py (hits, latency, relax
onsets) and must give the same figures; the table, JSON and episode listing must be produced
and consistent. The scores themselves are reported, not asserted, so nothing is tuned to these
subjects. The scoring's own known answers are in test_scoring.py."""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import statistics
from functools import cache
from pathlib import Path

import pytest

from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.evaluate import (
    MIN_DRAWS,
    EvaluationError,
    Recording,
    analyze_recording,
    detections,
    evaluate,
    format_episodes,
    format_table,
    read_labels,
    read_phases,
    recording_path,
    register,
    scorable_range,
    warmup_s,
)
from rekindle.analysis.scoring import SubjectScore, pool
from rekindle.cliconfig import run_command

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "stress_predict_e4"
LABELS = DATA / "labels_stress_intervals.csv"
PHASES = DATA / "time_log_phases.csv"
SUBJECTS = ("S02", "S05", "S06")


@cache
def recording(subject: str) -> Recording:
    return analyze_recording(DATA / "Raw_data" / subject)


@cache
def shared_scores() -> tuple[SubjectScore, ...]:
    return tuple(evaluate(LABELS, DATA))  # the dataset root: Raw_data/ is found


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="rekindle")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate", *argv])
    return run_command(args)  # the CLI's error and exit-code policy


def test_readers() -> None:
    labels = read_labels(LABELS)
    assert len(labels) == 9
    assert {r.subject for r in labels} == set(SUBJECTS)
    phases = read_phases(PHASES)
    assert len(phases) == 30
    assert {p.phase for p in phases if p.phase.startswith("relax_after_")} == {
        "relax_after_stroop",
        "relax_after_interview",
        "relax_after_hyperventilation",
    }


def test_bad_rows_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("subject,task,start_unix,end_unix\nS02,stroop,10,oops\n")
    with pytest.raises(EvaluationError, match="line 2"):
        read_labels(bad)
    bad.write_text("subject,task,start_unix,end_unix\nS02,stroop,10,5\n")
    with pytest.raises(EvaluationError, match="end_unix must be after"):
        read_labels(bad)


def test_evaluate_gives_the_independently_rescored_figures() -> None:
    scores = shared_scores()
    assert [s.subject for s in scores] == list(SUBJECTS)
    labels, phases = read_labels(LABELS), read_phases(PHASES)
    cfg = AnalysisConfig()
    for s in scores:
        rec = recording(s.subject)
        assert s.scorable == (rec.span[0] + warmup_s(cfg), rec.span[1])
        onsets = sorted(e.onset for e in rec.episodes if e.kind == "arousal")
        assert list(s.onsets) == onsets
        for t in s.tasks:
            (iv,) = [x for x in labels if x.subject == s.subject and x.task == t.task]
            inside = [o for o in onsets if iv.start - 90.0 <= o < iv.end]
            assert t.hit == bool(inside)
            assert t.latency_s == (max(0.0, inside[0] - iv.start) if inside else None)
        relax = [
            (p.start + 120.0 if p.phase.startswith("relax_after_") else p.start, p.end)
            for p in phases
            if p.subject == s.subject
            and (p.phase.startswith("relax_after_") or p.phase == "final_relax_baseline")
        ]
        windows = [(x.start - 90.0, x.end) for x in labels if x.subject == s.subject]
        in_relax = [
            o
            for o in onsets
            if s.scorable[0] <= o < s.scorable[1]
            and any(a <= o < b for a, b in relax)
            and not any(a <= o < b for a, b in windows)
        ]
        assert s.relax_onsets == len(in_relax)
        releases = [d for d in detections(rec) if d.kind == "release"]
        assert s.releases_good + s.releases_false + s.releases_other == len(releases)
        assert all(d.confirmed >= d.onset for d in releases)

    o = pool(scores)
    hit_tasks = [t for s in scores for t in s.tasks if t.group == "hit"]
    assert o.tasks == 6
    assert o.hits == sum(t.hit for t in hit_tasks)
    lat = [t.latency_s for t in hit_tasks if t.latency_s is not None]
    if lat:
        assert o.latency_median_s == statistics.median(lat)
    else:
        assert math.isnan(o.latency_median_s)
    assert o.hyperventilation_tasks == 3
    assert 0.0 <= o.chance <= 1.0
    assert math.isfinite(o.relax_fa_per_h)
    assert 0.0 < o.relax_hours < o.hours
    assert o.release_windows + o.windows_hr_not_fell + o.windows_hr_unknown == 6


def test_scorable_range_follows_the_configured_warm_up() -> None:
    cfg = AnalysisConfig(settle_s=60.0)
    span = recording("S06").span
    assert scorable_range(span, cfg) == (span[0] + 60.0 + cfg.rise_window_s, span[1])
    assert scorable_range((0.0, 100.0), cfg) == (100.0, 100.0)  # shorter than the warm-up


def test_table_has_every_subject_task_and_chance() -> None:
    table = format_table(shared_scores())
    for name in (*SUBJECTS, "overall", "stroop", "interview", "hyperventilation", "chance"):
        assert name in table
    assert "onsets from 90 s before" in table
    listing = format_episodes(shared_scores())
    assert len(listing.splitlines()) == 2 + sum(len(s.verdicts) for s in shared_scores())


def test_cli_json_per_subject_and_overall(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(
            "--labels",
            str(LABELS),
            "--recordings",
            str(DATA / "Raw_data"),
            "--json",
            "--subject",
            "S06",
            "--episodes",
            "--seed",
            "3",
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    (expected,) = [s for s in shared_scores() if s.subject == "S06"]
    want = pool([expected], draws=MIN_DRAWS, seed=3).to_dict()
    assert out["overall"] == want
    (subject,) = out["subjects"]
    assert subject["subject"] == "S06"
    assert {k: subject[k] for k in want} == want  # a subject carries its own chance
    assert [t["task"] for t in subject["task_scores"]] == [t.task for t in expected.tasks]
    assert len(out["episodes"]) == len(expected.verdicts)
    assert out["params"]["pre_s"] == 90.0


def test_cli_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run_cli("--labels", str(LABELS), "--recordings", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("rekindle evaluate: error: ")
    assert "no recording" in err
    assert run_cli("--labels", str(LABELS), "--recordings", str(DATA), "--draws", "50") == 2
    assert "--draws must be >= 200" in capsys.readouterr().err
    labels = tmp_path / "labels.csv"
    shutil.copy(LABELS, labels)
    assert run_cli("--labels", str(labels), "--recordings", str(DATA)) == 2
    assert "--phases" in capsys.readouterr().err


def test_dev_set_layout_with_gzipped_e4_files(tmp_path: Path) -> None:
    """The dev set's layout: Raw_data/SXX/*.csv.gz, labels and phases at the root."""
    root = tmp_path / "dev"
    folder = root / "Raw_data" / "S05"
    folder.mkdir(parents=True)
    for src in (DATA / "Raw_data" / "S05").iterdir():
        with src.open("rb") as fin, gzip.open(folder / f"{src.name}.gz", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    shutil.copy(LABELS, root / LABELS.name)
    shutil.copy(PHASES, root / PHASES.name)
    assert recording_path(root, "S05") == folder
    (s,) = evaluate(root / LABELS.name, root, subjects=["S05"])
    (expected,) = [x for x in shared_scores() if x.subject == "S05"]
    assert s == expected
