"""Known-answer tests of the building blocks: RR correction, RMSSD, SCRs, baselines, config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from rekindle.analysis.core import (
    AnalysisConfig,
    ConfigError,
    Episode,
    EpisodeStart,
    InputError,
    SampleBatch,
    Scr,
)
from rekindle.analysis.core.arousal import ArousalDetector, warmup_s
from rekindle.analysis.core.cardiac import RrProcessor
from rekindle.analysis.core.eda import EdaProcessor
from tests.analysis_core.helpers import run

CFG = AnalysisConfig()


def _beats(rr: list[float], t0: float = 1000.0) -> tuple[list[float], list[float]]:
    times = list(t0 + np.cumsum(np.array(rr) / 1000.0))
    return times, rr


def _rr_run(rr: list[float]) -> RrProcessor:
    proc = RrProcessor(CFG, "s")
    times, values = _beats(rr)
    proc.feed(times, values)
    proc.tick(math.ceil(times[-1]) + 3, in_gap=False)
    return proc


def test_rr_clean_series_rmssd_known_answer() -> None:
    rr = [800.0, 820.0] * 40  # successive differences all 20 ms
    proc = _rr_run(rr)
    times, _ = _beats(rr)
    tick = proc.tick(math.ceil(times[-1]) + 3, in_gap=False)
    assert tick.rmssd == pytest.approx(20.0)
    assert tick.hr == pytest.approx(60000.0 / 810.0, rel=2e-2)
    assert proc.corrected == 0
    assert proc.rejected == 0


def test_rr_missed_beat_is_split() -> None:
    rr = [800.0] * 20 + [1600.0] + [800.0] * 20
    proc = _rr_run(rr)
    assert proc.corrected == 1
    assert all(abs(r - 800.0) < 1e-9 for _, r in proc._beats)


def test_rr_extra_beat_is_merged() -> None:
    rr = [800.0] * 20 + [300.0, 500.0] + [800.0] * 20
    proc = _rr_run(rr)
    assert proc.corrected == 1
    assert all(abs(r - 800.0) < 1e-9 for _, r in proc._beats)


def test_rr_ectopic_beat_is_interpolated() -> None:
    rr = [800.0] * 20 + [560.0, 1040.0] + [800.0] * 20
    proc = _rr_run(rr)
    assert proc.corrected == 1
    assert all(abs(r - 800.0) < 1e-9 for _, r in proc._beats)


def test_rr_real_rate_change_reseeds_reference() -> None:
    # An abrupt but genuine change (60 -> 86 bpm): after three consistent "artefacts" the
    # reference is re-seeded and the new rhythm is accepted.
    rr = [1000.0] * 20 + [700.0] * 30
    proc = _rr_run(rr)
    assert proc.rejected <= 3
    assert proc._beats[-1][1] == 700.0


def test_rr_gaps_never_form_successive_differences() -> None:
    proc = RrProcessor(CFG, "s")
    t = [1000.0, 1000.8, 1010.0, 1010.8]  # 9.2-s hole between the 2nd and 3rd beat
    proc.feed(t, [800.0, 800.0, 800.0, 800.0])
    proc.tick(1014, in_gap=False)
    assert len(proc._diffs) == 2


def test_scr_known_amplitude_and_onset() -> None:
    t = np.arange(0, 60, 0.25)
    x = 2.0 + np.where(t > 20, 0.3 * (1 - np.exp(-(t - 20) / 1.0)) * np.exp(-(t - 20) / 8.0), 0)
    events = run([SampleBatch("eda", "d", 1e9 + t, x)])
    scrs = [e for e in events if isinstance(e, Scr)]
    assert len(scrs) == 1
    assert 19.0 <= scrs[0].onset - 1e9 <= 21.0
    assert 20.5 <= scrs[0].peak - 1e9 <= 24.0
    assert 0.1 <= scrs[0].amplitude <= 0.3


def test_small_wiggles_below_threshold_are_not_scrs() -> None:
    t = np.arange(0, 120, 0.25)
    x = 1.0 + 0.005 * np.sin(2 * np.pi * t / 3.0)
    assert not [e for e in run([SampleBatch("eda", "d", 1e9 + t, x)]) if isinstance(e, Scr)]


def test_eda_out_of_range_and_steps_mark_quality() -> None:
    proc = EdaProcessor(CFG, "d")
    proc.feed([1.0, 1.25, 1.5], [2.0, 0.0, 2.0])  # 0 µS = no contact
    assert proc.tick(2, motion=False, in_gap=False).quality == "degraded"
    proc.feed([2.0 + i / 4 for i in range(40)], [2.0] * 20 + [9.0] * 20)  # 7 µS step in 0.25 s
    assert proc.last_bad_t > 5.0


# --- the detector (arousal.py): known answers on per-second inputs ----------------------------

DET = replace(CFG, settle_s=0.0)


def _drive(
    cfg: AnalysisConfig,
    tonic: Sequence[float | None],
    hr: Sequence[float | None] | None = None,
    degraded: Sequence[bool] | None = None,
) -> tuple[list[float | None], list[Episode | EpisodeStart]]:
    det = ArousalDetector(cfg)
    index: list[float | None] = []
    events: list[Episode | EpisodeStart] = []
    for k, v in enumerate(tonic):
        h = hr[k] if hr is not None else None
        res = det.step(k, [v, None, h, None], degraded[k] if degraded else False)
        index.append(res.index)
        events.extend(res.events)
    events.extend(det.finish(float(len(tonic) - 1)))
    return index, events


def test_index_is_the_eda_rise_against_the_preceding_minutes() -> None:
    # 0.5 uS for 5 min, then +35 % (ln 0.3, above the default scale): once the 60-s average has
    # taken the step in whole and the reference (median of the averages from 150 to 30 s ago) is
    # still the old level, the index reads 50 x 0.3 / eda_rise_ln; a level held longer than the
    # window is the new reference, and the index is back at 0.
    step = 300
    tonic = [0.5] * step + [0.5 * math.exp(0.3)] * 400
    index, events = _drive(DET, tonic)
    assert index[int(warmup_s(DET)) - 1] is None  # warming up
    assert all(i == 0.0 for i in index[int(warmup_s(DET)) : step])
    expected = 50.0 * 0.3 / DET.eda_rise_ln
    assert index[step + 59] == pytest.approx(expected)
    assert max(i or 0.0 for i in index) == pytest.approx(expected)
    assert index[-1] == 0.0
    # one episode, its onset set back to where the averaged level left the reference
    arousal = [e for e in events if isinstance(e, Episode) and e.kind == "arousal"]
    assert len(arousal) == 1
    ep = arousal[0]
    # the last second at which the rise was still within ONSET_CALM of the reference: the 60-s
    # average has moved 2/60 of the step by then
    assert step <= ep.onset <= step + 2
    assert ep.confirmed is not None
    assert ep.confirmed - ep.onset >= DET.min_episode_s
    assert ep.signals == ("eda",)
    starts = [e for e in events if isinstance(e, EpisodeStart)]
    assert [(s.onset, s.confirmed) for s in starts] == [(ep.onset, ep.confirmed)]


def test_absolute_floor_at_very_low_skin_conductance() -> None:
    # the same +35 % at 0.06 uS is 0.021 uS: below the 0.03-uS floor, so it scores pro rata
    tonic = [0.06] * 300 + [0.06 * math.exp(0.3)] * 200
    index, events = _drive(DET, tonic)
    expected = 50.0 * 0.06 * (math.exp(0.3) - 1) / DET.eda_rise_min_us
    assert max(i or 0.0 for i in index) == pytest.approx(expected)
    assert not events


def test_slow_drift_opens_no_episode() -> None:
    # wrist EDA doubling over 15 min (the warm-up drift of about half the people)
    tonic = [0.2 * 2 ** (k / 900) for k in range(1800)]
    index, events = _drive(DET, tonic)
    assert not events
    assert max(i or 0.0 for i in index) < DET.exit_index


def test_heart_rate_supports_but_cannot_open_while_eda_is_measured() -> None:
    cfg = replace(DET, cardiac_weight=1.0)
    hr = [70.0] * 300 + [100.0] * 300
    index, events = _drive(cfg, [0.5] * 600, hr)
    assert max(i or 0.0 for i in index) >= cfg.enter_index  # the heart is in the index ...
    assert not events  # ... but EDA did not rise
    # on a device without EDA the cardiac domain is the whole index and opens episodes
    index, events = _drive(cfg, [None] * 600, hr)
    assert any(isinstance(e, Episode) and e.kind == "arousal" for e in events)


def test_degraded_eda_seconds_are_left_out_of_the_average() -> None:
    # a 30-s motion artefact that doubles the reading, flagged degraded by the accelerometer
    tonic = [0.5] * 400 + [1.0] * 30 + [0.5] * 200
    degraded = [False] * 400 + [True] * 30 + [False] * 200
    index, events = _drive(DET, tonic, degraded=degraded)
    assert max(i or 0.0 for i in index) == pytest.approx(0.0, abs=1e-9)
    assert not events
    _, events = _drive(replace(DET, eda_skip_degraded=0.0), tonic, degraded=degraded)
    assert any(isinstance(e, Episode) for e in events)


def _surge(hr_after: float, tonic_after: float) -> list[Episode | EpisodeStart]:
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 200 + [tonic_after] * 400
    hr = [70.0] * 300 + [90.0] * 200 + [hr_after] * 400
    return _drive(DET, tonic, hr)[1]


def test_release_needs_the_heart_to_come_down_while_eda_is_not_rising() -> None:
    found = [e for e in _surge(70.0, 0.5 * math.exp(0.4)) if isinstance(e, Episode)]
    assert [e.kind for e in found] == ["arousal", "release"]
    arousal, release = found
    assert release.onset == arousal.onset
    assert release.confirmed is not None
    assert release.confirmed == release.offset
    assert release.confirmed >= arousal.offset  # judged once the episode has closed
    assert release.recovery_depth == pytest.approx(1.0, abs=0.05)
    # HR stays up: no release
    assert [e.kind for e in _surge(90.0, 0.5 * math.exp(0.4)) if isinstance(e, Episode)] == [
        "arousal"
    ]
    # HR comes down but EDA keeps rising (a second surge): no release
    kinds = [e.kind for e in _surge(70.0, 0.5 * math.exp(0.9)) if isinstance(e, Episode)]
    assert "release" not in kinds[:2]


def _releases(events: list[Episode | EpisodeStart]) -> list[Episode]:
    return [e for e in events if isinstance(e, Episode) and e.kind == "release"]


def test_a_dip_between_two_bursts_is_not_a_release() -> None:
    # the surge's episode closes at ~427 s; HR dips back to calm for 60 s at 700 s and rises
    # again: a recovery must hold recovery_hold_s (90 s), so only a 30-s hold takes the dip
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 900
    hr = [70.0] * 300 + [90.0] * 400 + [70.0] * 60 + [90.0] * 200 + [70.0] * 240
    assert DET.recovery_hold_s == 90.0
    assert _releases(_drive(DET, tonic, hr)[1]) == []
    dip = _releases(_drive(replace(DET, recovery_hold_s=30.0), tonic, hr)[1])
    assert len(dip) == 1
    assert 700.0 < dip[0].confirmed < 760.0  # type: ignore[operator]


def test_release_waits_for_the_episode_to_close() -> None:
    # EDA steps up and half back while HR falls: the index has fallen below 0.7 of its peak
    # while the episode is still open. By default the release waits until the episode has
    # closed; release_needs_close 0 confirms it while the episode is still open.
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 80 + [0.5 * math.exp(0.25)] * 620
    hr = [70.0] * 300 + [90.0] * 80 + [70.0] * 620
    cfg = replace(DET, recovery_hold_s=30.0)
    events = [e for e in _drive(cfg, tonic, hr)[1] if isinstance(e, Episode)]
    assert [e.kind for e in events] == ["arousal", "release"]
    arousal, release = events
    assert release.confirmed is not None
    assert release.confirmed >= arousal.offset + cfg.exit_hold_s + cfg.recovery_hold_s
    early = [e for e in _drive(replace(cfg, release_needs_close=0.0), tonic, hr)[1]]
    kinds = [e.kind for e in early if isinstance(e, Episode)]
    assert kinds == ["release", "arousal"]  # confirmed before the episode's close was known
    assert _releases(early)[0].confirmed < release.confirmed  # type: ignore[operator]


def test_release_from_the_surges_hr_peak_when_asked() -> None:
    # HR ramps to 100 bpm during the episode and settles at 90: 10 bpm below the peak, but not
    # 5 below the episode's mean HR (about 88)
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 900
    hr = [70.0] * 300 + [70.0 + 30.0 * k / 100 for k in range(100)] + [100.0] * 30 + [90.0] * 770
    assert _releases(_drive(DET, tonic, hr)[1]) == []
    peak = replace(DET, release_hr_ref_peak=1.0, release_hr_drop_bpm=8.0)
    assert len(_releases(_drive(peak, tonic, hr)[1])) == 1


def test_release_can_require_tonic_eda_to_fall() -> None:
    hr = [70.0] * 300 + [90.0] * 200 + [70.0] * 400
    held = [0.5] * 300 + [0.5 * math.exp(0.4)] * 600  # EDA stays up: HR alone recovers
    back = [0.5] * 300 + [0.5 * math.exp(0.4)] * 200 + [0.5] * 400  # EDA falls back too
    falling = replace(DET, release_eda_fall_ln=0.05)
    assert len(_releases(_drive(DET, held, hr)[1])) == 1
    assert _releases(_drive(falling, held, hr)[1]) == []
    assert len(_releases(_drive(falling, back, hr)[1])) == 1


def test_release_not_before_release_after_peak_s() -> None:
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 600
    hr = [70.0] * 300 + [90.0] * 200 + [70.0] * 400
    cfg = replace(DET, recovery_hold_s=30.0)
    (soon,) = _releases(_drive(cfg, tonic, hr)[1])
    (later,) = _releases(_drive(replace(cfg, release_after_peak_s=200.0), tonic, hr)[1])
    assert soon.confirmed < soon.peak + 200.0  # type: ignore[operator]
    assert later.confirmed >= later.peak + 200.0 + cfg.recovery_hold_s  # type: ignore[operator]


def test_release_can_require_a_vagal_rebound_where_rmssd_is_measured() -> None:
    tonic = [0.5] * 300 + [0.5 * math.exp(0.4)] * 600
    hr = [70.0] * 300 + [90.0] * 200 + [70.0] * 400

    def releases(cfg: AnalysisConfig, ln_after: float | None) -> list[Episode]:
        det = ArousalDetector(cfg)
        ln_rmssd = [3.5] * 300 + [3.0] * 200 + [ln_after] * 400
        events: list[Episode | EpisodeStart] = []
        for k, (v, h, r) in enumerate(zip(tonic, hr, ln_rmssd, strict=True)):
            events.extend(det.step(k, [v, None, h, r]).events)
        events.extend(det.finish(float(len(tonic) - 1)))
        return _releases(events)

    vagal = replace(DET, release_rmssd_rise_ln=0.2)
    assert len(releases(DET, 3.0)) == 1  # off by default: HR alone
    assert releases(vagal, 3.0) == []  # HR fell, but ln RMSSD stayed at its surge level
    assert len(releases(vagal, 3.5)) == 1  # ... and rebounded
    assert len(releases(vagal, None)) == 1  # not measured after the surge: HR alone decides


@pytest.mark.parametrize("field", ["release_needs_close", "release_hr_ref_peak"])
def test_switch_parameters_are_0_or_1(field: str) -> None:
    with pytest.raises(ConfigError) as err:
        AnalysisConfig(**{field: 0.5})  # type: ignore[arg-type]
    assert err.value.field == field
    assert "0 (off) or 1 (on)" in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lateness_s", -1.0),
        ("eda_min_us", 100.0),
        ("exit_index", 90.0),
        ("rise_window_s", 0.0),
        ("hr_window_s", math.nan),
    ],
)
def test_config_validation(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as err:
        AnalysisConfig(**{field: value})  # type: ignore[arg-type]
    assert err.value.field in (field, "eda_min_us", "exit_index")


def test_malformed_batches_raise_input_error() -> None:
    from rekindle.analysis.core import SessionAnalyzer  # noqa: PLC0415

    a = SessionAnalyzer()
    with pytest.raises(InputError):
        a.update(SampleBatch("eda", "d", np.arange(3.0), np.arange(4.0)))
    with pytest.raises(InputError):
        a.update(SampleBatch("acc", "d", np.arange(3.0), np.arange(3.0)))
    a.finish()
    with pytest.raises(InputError):
        a.update(SampleBatch("eda", "d", np.arange(3.0), np.arange(3.0)))
