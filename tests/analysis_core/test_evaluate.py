"""``rekindle evaluate``: the pure scoring on synthetic intervals, and the three shared
Stress-Predict subjects run end to end (the table must be produced and consistent; the scores
themselves are reported, not asserted, so nothing is tuned to these subjects)."""

from __future__ import annotations

import argparse
import json
import math
from functools import cache
from pathlib import Path

import pytest

from services.analysis.core import Episode
from services.analysis.evaluate import (
    Interval,
    ScoreParams,
    SubjectScore,
    evaluate,
    format_episodes,
    format_table,
    overall,
    read_labels,
    register,
    score_subject,
    with_phases,
)

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "stress_predict_e4"
LABELS = DATA / "labels_stress_intervals.csv"


def _ep(onset: float, offset: float, kind: str = "arousal") -> Episode:
    return Episode(kind, onset, onset + 1, offset, 60.0, ("hr",))  # type: ignore[arg-type]


def test_score_known_answer() -> None:
    intervals = [
        Interval("A", "stroop", 1000.0, 1300.0),
        Interval("A", "talk", 2000.0, 2600.0),
        Interval("B", "other", 0.0, 10.0),
    ]
    episodes = [
        _ep(1030.0, 1200.0),  # hit stroop, latency 30
        _ep(1050.0, 1100.0),  # second episode in stroop: not a false alarm
        _ep(1250.0, 1500.0, "release"),  # recovery after stroop
        _ep(1950.0, 2100.0),  # hit talk 50 s early (within --pre 60)
        _ep(3000.0, 3100.0),  # false alarm
        _ep(2640.0, 2700.0),  # within --post 60 s after talk: not a false alarm
    ]
    s = score_subject("A", episodes, intervals, (0.0, 3600.0), ScoreParams(60.0, 60.0, 300.0))
    assert [t.hit for t in s.tasks] == [True, True]
    assert [t.latency_s for t in s.tasks] == [30.0, -50.0]
    assert [t.recovery for t in s.tasks] == [True, False]
    assert s.false_alarms == 1
    # outside = 3600 - (1300+60 - 940) - (2600+60 - 1940) = 3600 - 420 - 720
    assert s.hours_outside == pytest.approx((3600 - 420 - 720) / 3600)
    assert s.median_latency_s == -10.0
    assert s.hit_rate == 1.0


def test_missed_interval_and_episode_started_long_before() -> None:
    intervals = [Interval("A", "t", 1000.0, 1200.0)]
    s = score_subject("A", [_ep(500.0, 1100.0)], intervals, (0.0, 2000.0))
    assert not s.tasks[0].hit  # began 500 s before: not caused by the task
    assert s.false_alarms == 1
    assert s.median_latency_s is None
    assert "miss" in format_table([s])


def test_labels_reader() -> None:
    rows = read_labels(LABELS)
    assert len(rows) == 9
    assert {r.subject for r in rows} == {"S02", "S05", "S06"}
    assert all(r.end > r.start for r in rows)


@cache
def shared_scores() -> tuple[SubjectScore, ...]:
    return tuple(evaluate(LABELS, DATA / "Raw_data"))


def test_shared_subjects_table_is_consistent() -> None:
    scores = shared_scores()
    assert [s.subject for s in scores] == ["S02", "S05", "S06"]
    for s in scores:
        assert s.intervals == 3
        assert 0 <= s.hits <= s.intervals
        assert 0.75 < s.hours < 0.9  # recording minus the 7-min warm-up
        assert 0 < s.hours_outside < s.hours
        assert s.false_alarms <= s.arousal_episodes
        assert s.recoveries <= s.intervals
        assert all((t.latency_s is not None) == t.hit for t in s.tasks)
        assert all(-60.0 <= t.latency_s < 700.0 for t in s.tasks if t.latency_s is not None)
    o = overall(scores)
    assert o.intervals == 9
    assert o.hits == sum(s.hits for s in scores)
    assert o.false_alarms == sum(s.false_alarms for s in scores)
    assert math.isfinite(o.false_alarms_per_hour)
    table = format_table(scores)
    for name in ("S02", "S05", "S06", "overall", "stroop", "interview", "hyperventilation"):
        assert name in table


def test_cli_register_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="rekindle")
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--labels", str(LABELS), "--recordings", str(DATA / "Raw_data"),
         "--subject", "S06", "--json"]
    )
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["subject"] for s in out["subjects"]] == ["S06"]
    expected = next(s for s in shared_scores() if s.subject == "S06")
    assert out["subjects"][0]["false_alarms"] == expected.false_alarms
    assert out["overall"]["hits"] == expected.hits


def test_cli_reports_missing_recording(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="rekindle")
    register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--labels", str(LABELS), "--recordings", str(tmp_path)])
    assert args.func(args) == 2
    assert "no recording" in capsys.readouterr().err


def test_each_episode_gets_a_verdict_and_its_phase() -> None:
    intervals = [Interval("A", "stroop", 1000.0, 1300.0), Interval("A", "talk", 2000.0, 2300.0)]
    eps = [
        _ep(1010.0, 1200.0),  # hit
        _ep(1330.0, 1400.0),  # in the --post margin of stroop, hits nothing
        _ep(1600.0, 1700.0),  # false alarm
        _ep(1990.0, 2100.0),  # hit (in the --pre margin)
    ]
    s = score_subject("A", eps, intervals, (0.0, 3000.0))
    assert [(v.verdict, v.task) for v in s.episodes] == [
        ("hit", "stroop"), ("allowance", "stroop"), ("false_alarm", None), ("hit", "talk")
    ]
    assert s.false_alarms == sum(v.verdict == "false_alarm" for v in s.episodes)
    phases = [Interval("A", "rest", 1300.0, 2000.0), Interval("B", "other", 0.0, 9999.0)]
    named = with_phases(s, phases)
    assert [v.phase for v in named.episodes] == ["-", "rest", "rest", "rest"]
    text = format_episodes([named])
    assert text.count("false_alarm") == 1
    assert "allowance" in text


def test_cli_lists_episodes_with_phases(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="rekindle")
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--labels", str(LABELS), "--recordings", str(DATA / "Raw_data"),
         "--subject", "S05", "--episodes", "--phases", str(DATA / "time_log_phases.csv")]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    expected = next(s for s in shared_scores() if s.subject == "S05")
    listed = [ln for ln in out.splitlines() if ln.startswith("S05 ") and ":" in ln.split()[1]]
    assert len(listed) == expected.arousal_episodes
    for line in listed:  # every S05 episode hits a task; its phase is that task
        verdict, task, phase = line.split()[-3:]
        assert (verdict, task) == ("hit", phase)
