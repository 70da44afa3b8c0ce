"""The pure scoring (services/analysis/scoring.py) on hand-made protocols and detection lists with
known answers: exact figures on a tiny case, the chance level of a detector that fires at random
and its analytic value, low precision for a release after every episode, the circular shift."""

from __future__ import annotations

import json
import math

import numpy as np
import numpy.typing as npt
import pytest

from rekindle.analysis.scoring import (
    Detection,
    Interval,
    Phase,
    ScoreParams,
    ScoringError,
    SubjectScore,
    chance_hits,
    circular_shift,
    pool,
    score_subject,
)

SCORABLE = (420.0, 3600.0)


def protocol(subject: str = "A") -> tuple[list[Interval], list[Phase]]:
    tasks = [
        Interval(subject, "stroop", 1000.0, 1300.0),
        Interval(subject, "interview", 2000.0, 2600.0),
        Interval(subject, "hyperventilation", 3000.0, 3120.0),
    ]
    phases = [
        Phase(subject, "baseline", 400.0, 1000.0),
        Phase(subject, "stroop", 1000.0, 1300.0),
        Phase(subject, "relax_after_stroop", 1300.0, 1600.0),
        Phase(subject, "interview", 2000.0, 2600.0),
        Phase(subject, "relax_after_interview", 2600.0, 2900.0),
        Phase(subject, "hyperventilation", 3000.0, 3120.0),
        Phase(subject, "relax_after_hyperventilation", 3120.0, 3420.0),
        Phase(subject, "final_relax_baseline", 3420.0, 3600.0),
    ]
    return tasks, phases


def heart_rate() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """HR falls 10 bpm after Stroop, 2 bpm after the interview, 20 after hyperventilation."""
    t = np.arange(0.0, 3600.0)
    hr = np.full(t.shape, 75.0)
    for a, b, v in [
        (1180, 1300, 90),
        (1300, 1600, 80),
        (2480, 2600, 85),
        (2600, 2900, 83),
        (3000, 3120, 100),
        (3120, 3420, 80),
    ]:
        hr[(t >= a) & (t < b)] = v
    hr[10:20] = np.nan  # lost signal is skipped
    return t, hr


def arousal(*onsets: float) -> list[Detection]:
    return [Detection("arousal", t, t + 60.0) for t in onsets]


def release(*confirmed: float) -> list[Detection]:
    return [Detection("release", t - 200.0, t) for t in confirmed]


def score(
    detections: list[Detection], subject: str = "A", params: ScoreParams | None = None
) -> SubjectScore:
    tasks, phases = protocol(subject)
    t, hr = heart_rate()
    return score_subject(subject, detections, tasks, phases, t, hr, SCORABLE, params)


def test_exact_figures_on_a_tiny_case() -> None:
    dets = arousal(950, 1100, 1200, 1350, 1500, 2030, 2950, 3500) + release(
        1280, 1550, 2300, 2800, 3300, 500
    )
    # Other subjects' rows are ignored.
    tasks, phases = protocol("A")
    other_tasks, other_phases = protocol("B")
    t, hr = heart_rate()
    s = score_subject("A", dets, tasks + other_tasks, phases + other_phases, t, hr, SCORABLE)
    assert [(x.task, x.hit, x.latency_s) for x in s.tasks] == [
        ("stroop", True, 0.0),  # 950 is in the 90 s before: latency max(0, -50)
        ("interview", True, 30.0),
        ("hyperventilation", True, 0.0),
    ]
    assert [x.hr_fall_bpm for x in s.tasks] == [10.0, 2.0, 20.0]
    assert [x.release for x in s.tasks] == [True, None, None]
    # Relax windows: [1420,1600) + [2720,2900) + [3240,3600) = 720 s; task windows 390 + 690 s.
    assert s.relax_s == 720.0
    assert s.task_s == 1080.0
    assert (s.relax_onsets, s.task_onsets) == (2, 4)  # 1350 is in the first 120 s of relax
    assert (s.releases_good, s.releases_false, s.releases_other) == (2, 2, 2)
    verdicts = {(v.kind, v.onset if v.kind == "arousal" else v.confirmed): v for v in s.verdicts}
    assert verdicts["arousal", 1350].verdict == "other"
    assert verdicts["arousal", 1350].phase == "relax_after_stroop"
    assert verdicts["arousal", 1500].verdict == "relax_false_alarm"
    assert verdicts["arousal", 2950].verdict == "hyperventilation"
    assert (verdicts["arousal", 2030].verdict, verdicts["arousal", 2030].task) == (
        "hit",
        "interview",
    )
    assert verdicts["release", 1280].verdict == "good"  # inside the task's last 60 s
    assert verdicts["release", 2300].verdict == "false_task"
    assert verdicts["release", 2800].verdict == "false_relax"  # HR fell only 2 bpm
    assert verdicts["release", 3300].verdict == "other"  # after hyperventilation: not scored
    assert verdicts["release", 500].phase == "baseline"

    p = pool([s], draws=200, seed=1)
    assert (p.tasks, p.hits, p.hit) == (2, 2, 1.0)
    assert p.latency_median_s == 15.0
    assert p.relax_hours == pytest.approx(0.2)
    assert p.relax_fa_per_h == pytest.approx(10.0)
    assert p.contrast == pytest.approx((4 / 0.3) / 10.0)
    assert (p.release_windows, p.release_windows_found, p.release_recall) == (1, 1, 1.0)
    assert (p.windows_hr_not_fell, p.windows_hr_unknown) == (1, 0)
    assert p.release_precision == 0.5
    assert (p.hyperventilation_tasks, p.hyperventilation_hits) == (1, 1)
    assert 0.0 <= p.chance <= 1.0
    assert p.margin == pytest.approx(p.hit - p.chance)
    assert p.arousal_onsets == 8


def test_chance_of_one_onset_is_the_window_share_of_the_scorable_range() -> None:
    s = score(arousal(500.0))
    p = pool([s], draws=20000, seed=3)
    # Each window lies inside the scorable range: P(hit) = window length / range length.
    length = SCORABLE[1] - SCORABLE[0]
    assert p.chance == pytest.approx((390.0 + 690.0) / 2 / length, abs=0.01)
    assert p.hyperventilation_chance == pytest.approx(210.0 / length, abs=0.01)
    assert p.hit == 0.0  # 500 is in none of the windows
    assert p.chance_p == 1.0


def random_subjects(n: int, rate_per_h: float, seed: int) -> list[SubjectScore]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = rng.poisson(rate_per_h * (SCORABLE[1] - SCORABLE[0]) / 3600.0)
        onsets = np.sort(rng.uniform(*SCORABLE, size=k))
        out.append(score(arousal(*onsets), subject=f"R{i}"))
    return out


def test_a_detector_firing_at_random_is_at_chance() -> None:
    p = pool(random_subjects(300, 5.0, seed=11), draws=200, seed=0)
    assert p.tasks == 600
    assert 0.3 < p.hit < 0.9  # 5 onsets per hour do hit 6-12-min windows often
    assert abs(p.margin) < 0.06
    assert p.chance_p > 0.05
    assert p.contrast == pytest.approx(1.0, abs=0.25)


def test_a_detector_firing_at_every_task_beats_chance() -> None:
    scores = [score(arousal(1010.0, 2010.0, 3010.0), subject=f"T{i}") for i in range(19)]
    p = pool(scores, draws=200, seed=0)
    assert p.hit == 1.0
    assert p.latency_median_s == 10.0
    # Onsets 1000 s apart, wider than any window: each window catches one with P = 3 w / L.
    assert p.chance == pytest.approx(3 * (390.0 + 690.0) / 2 / 3180.0, abs=0.03)
    assert p.margin > 0.45
    assert p.chance_p == 1 / 201  # no draw reaches every task
    assert p.relax_fa_per_h == 0.0
    assert p.contrast == math.inf
    assert p.to_dict()["contrast"] is None


def test_a_release_after_every_episode_gets_low_precision() -> None:
    onsets = (1000.0, 1500.0, 2100.0, 2700.0)
    s = score(arousal(*onsets) + release(*(t + 60.0 for t in onsets)))
    # 1060 in Stroop, 2160 in the interview: false; 1560 after Stroop (HR fell): good;
    # 2760 after the interview (HR did not fall): false.
    p = pool([s])
    assert (p.releases_good, p.releases_false) == (1, 3)
    assert p.release_precision == 0.25
    assert p.release_recall == 1.0

    scores = []
    rng = np.random.default_rng(5)
    for i in range(40):
        ons = rng.uniform(*SCORABLE, size=6)
        scores.append(score(arousal(*ons) + release(*(ons + 90.0)), subject=f"R{i}"))
    assert pool(scores).release_precision < 0.5
    recovering = pool([score(release(1350.0), subject=f"G{i}") for i in range(5)])
    assert (recovering.release_precision, recovering.release_recall) == (1.0, 1.0)


def test_release_window_needs_the_hr_fall_parameter() -> None:
    s = score(
        release(1350.0), params=ScoreParams(hr_fall_bpm=12.0)
    )  # Stroop's 10 bpm no longer counts
    p = pool([s])
    assert p.release_windows == 0
    assert math.isnan(p.release_recall)
    assert (p.releases_good, p.releases_false) == (0, 1)  # now in a relax without HR fall


def test_missing_heart_rate_leaves_the_window_unknown() -> None:
    tasks, phases = protocol()
    t = np.arange(0.0, 3600.0)
    s = score_subject("A", release(1350.0), tasks, phases, t, np.full(t.shape, np.nan), SCORABLE)
    p = pool([s])
    assert (p.release_windows, p.windows_hr_unknown, p.releases_other) == (0, 2, 1)
    assert math.isnan(p.release_precision)


def test_relax_exposure_is_only_inside_the_scorable_range() -> None:
    tasks, phases = protocol()
    t, hr = heart_rate()
    s = score_subject("A", arousal(1450.0), tasks, phases, t, hr, (1500.0, 3000.0))
    assert s.relax_s == 100.0 + 180.0  # [1500,1600) + [2720,2900)
    assert s.relax_onsets == 0  # 1450 lies before the scorable range
    assert s.task_s == 690.0  # Stroop's window [910,1300) lies before the range


def test_hit_windows_are_not_relax_exposure() -> None:
    tasks, phases = protocol()
    phases = [Phase("A", "relax_after_stroop", 1300.0, 2000.0), *phases[3:]]
    t, hr = heart_rate()
    s = score_subject("A", arousal(1950.0), tasks, phases, t, hr, SCORABLE)
    assert s.relax_s == (1910.0 - 1420.0) + 180.0 + 360.0
    assert s.relax_onsets == 0
    assert s.tasks[1].hit
    kept = score_subject(
        "A",
        arousal(1950.0),
        tasks,
        phases,
        t,
        hr,
        SCORABLE,
        ScoreParams(relax_minus_task_windows=False),
    )
    assert kept.relax_s == (2000.0 - 1420.0) + 180.0 + 360.0
    assert kept.relax_onsets == 1
    assert kept.tasks[1].hit


def test_circular_shift_stays_inside_the_scorable_range() -> None:
    rng = np.random.default_rng(7)
    onsets = rng.uniform(0.0, 4000.0, size=50)  # some lie outside [420, 3600)
    offsets = np.concatenate([[0.0, 3180.0 - 1e-9], rng.uniform(0.0, 3180.0, size=500)])
    shifted = circular_shift(onsets, SCORABLE, offsets)
    assert shifted.shape == (502, 50)
    assert (shifted >= SCORABLE[0]).all()
    assert (shifted < SCORABLE[1]).all()
    inside = (onsets >= SCORABLE[0]) & (onsets < SCORABLE[1])
    np.testing.assert_allclose(shifted[0, inside], onsets[inside])
    # The spacing of onsets is kept modulo the range length.
    gaps = np.mod(shifted - shifted[:, :1] - (onsets - onsets[0]), 3180.0)
    assert np.minimum(gaps, 3180.0 - gaps).max() < 1e-6
    assert circular_shift(onsets, (5.0, 5.0), offsets).shape == (502, 0)


def test_chance_per_subject_does_not_depend_on_the_pool() -> None:
    a = score(arousal(1500.0, 2500.0), subject="A")
    b = score(arousal(800.0), subject="B")
    np.testing.assert_array_equal(
        chance_hits(a, draws=50, seed=2), chance_hits(a, draws=50, seed=2)
    )
    both = pool([a, b], draws=300, seed=4)
    pa, pb = pool([a], draws=300, seed=4), pool([b], draws=300, seed=4)
    assert both.chance * 4 == pytest.approx(pa.chance * 2 + pb.chance * 2)
    assert both.hit == (pa.hits + pb.hits) / 4
    assert pool([a], draws=300, seed=5).chance != pa.chance or pa.chance in (0.0, 1.0)


def test_undefined_figures_are_nan_and_none_in_json() -> None:
    p = pool([])
    assert math.isnan(p.hit)
    assert math.isnan(p.chance)
    assert math.isnan(p.latency_median_s)
    d = p.to_dict()
    assert d["hit"] is None
    assert d["contrast"] is None
    assert d["tasks"] == 0
    json.dumps(d, allow_nan=False)
    full = pool([score(arousal(1010.0))]).to_dict()
    assert full["hit"] == 0.5
    json.dumps(full, allow_nan=False)


def test_bad_inputs_name_the_culprit() -> None:
    with pytest.raises(ScoringError, match="scorable"):
        score_subject("A", [], [], [], [], [], (10.0, 5.0))
    with pytest.raises(ScoringError, match="hr_values"):
        score_subject("A", [], [], [], [1.0, 2.0], [1.0], (0.0, 5.0))
    with pytest.raises(ScoringError, match="pre_s"):
        ScoreParams(pre_s=-1.0)
    with pytest.raises(ScoringError, match="draws"):
        pool([score([])], draws=0)
