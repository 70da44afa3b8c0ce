"""Known-answer tests of the building blocks: RR correction, RMSSD, SCRs, baselines, config."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from services.analysis.core import AnalysisConfig, ConfigError, InputError, SampleBatch, Scr
from services.analysis.core.baseline import Baselines, Input, arousal_index
from services.analysis.core.cardiac import RrProcessor
from services.analysis.core.eda import EdaProcessor
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


def test_baseline_median_mad_and_marker_range() -> None:
    cfg = AnalysisConfig(baseline_s=100.0, baseline_min_s=50.0, settle_s=0.0, adapt_window_s=0.0)
    b = Baselines(cfg)
    for k in range(100):
        b.update(k, {"hr": 60.0 + (k % 5), "tonic": None, "scr_rate": None, "ln_rmssd": None})
    ref = b.reference("hr")
    assert ref is not None
    assert ref.final
    assert ref.median == 62.0
    assert ref.scale == pytest.approx(max(1.4826 * 1.0, cfg.hr_scale_floor_bpm))
    # markers: a later baseline range replaces the automatic one once complete
    b.marker(200.0, "baseline_start")
    b.marker(300.0, "baseline_end")
    for k in range(100, 301):
        b.update(k, {"hr": 80.0 + (k % 3), "tonic": None, "scr_rate": None, "ln_rmssd": None})
    ref = b.reference("hr")
    assert ref is not None
    assert ref.median == 81.0
    assert b.source == "marker"
    res = arousal_index(cfg, b, {"hr": 81.0 + 2 * ref.scale})
    assert res.index == pytest.approx(2 * cfg.points_per_sd)  # one domain present
    assert res.contributions == {"hr": pytest.approx(2 * cfg.points_per_sd)}


def test_index_uses_both_domains_and_caps() -> None:
    cfg = AnalysisConfig(baseline_s=60.0, baseline_min_s=30.0, settle_s=0.0, adapt_window_s=0.0)
    b = Baselines(cfg)
    for k in range(60):
        b.update(k, {"hr": 60.0 + (k % 2), "tonic": 2.0 + 0.1 * (k % 2), "scr_rate": 1.0,
                     "ln_rmssd": 3.5})
    huge = arousal_index(cfg, b, {"hr": 300.0, "tonic": 50.0, "scr_rate": 60.0, "ln_rmssd": 0.0})
    assert huge.index == 100.0
    assert sum(huge.contributions.values()) == pytest.approx(100.0)
    calm = arousal_index(cfg, b, {"hr": 50.0, "tonic": 1.0, "scr_rate": 0.0, "ln_rmssd": 5.0})
    assert calm.index == 0.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("lateness_s", -1.0), ("eda_min_us", 100.0), ("exit_index", 90.0), ("baseline_s", 0.0),
     ("hr_window_s", math.nan)],
)
def test_config_validation(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as err:
        AnalysisConfig(**{field: value})  # type: ignore[arg-type]
    assert err.value.field in (field, "eda_min_us", "exit_index")


def test_malformed_batches_raise_input_error() -> None:
    from services.analysis.core import SessionAnalyzer  # noqa: PLC0415

    a = SessionAnalyzer()
    with pytest.raises(InputError):
        a.update(SampleBatch("eda", "d", np.arange(3.0), np.arange(4.0)))
    with pytest.raises(InputError):
        a.update(SampleBatch("acc", "d", np.arange(3.0), np.arange(3.0)))
    a.finish()
    with pytest.raises(InputError):
        a.update(SampleBatch("eda", "d", np.arange(3.0), np.arange(3.0)))


def _two_domain_baseline(cfg: AnalysisConfig) -> Baselines:
    b = Baselines(cfg)
    for k in range(60):
        b.update(k, {"hr": 60.0 + 2.0 * (k % 2), "tonic": 2.0 + 0.2 * (k % 2), "scr_rate": 1.0,
                     "ln_rmssd": None})
    return b


def test_a_clear_eda_response_is_not_diluted_by_a_calm_heart() -> None:
    cfg = AnalysisConfig(baseline_s=60.0, baseline_min_s=30.0, settle_s=0.0, adapt_window_s=0.0)
    b = _two_domain_baseline(cfg)
    t_ref, s_ref, h_ref = (b.reference(n) for n in ("tonic", "scr_rate", "hr"))
    assert t_ref is not None
    assert s_ref is not None
    assert h_ref is not None
    two_sd: dict[Input, float | None] = {
        "tonic": t_ref.median + 2 * t_ref.scale,
        "scr_rate": s_ref.median + 2 * s_ref.scale,
    }
    eda_only = arousal_index(cfg, b, {**two_sd, "hr": h_ref.median})
    # EDA 2 SD above baseline reads as on an EDA-only device (the enter threshold), ...
    assert eda_only.index == pytest.approx(2 * cfg.points_per_sd)
    assert eda_only.contributions["hr"] == 0.0
    # ... whereas the plain mean of the domains (the first rule) halved it
    mean_rule = replace(cfg, eda_alone=0.0)
    assert arousal_index(mean_rule, b, {**two_sd, "hr": h_ref.median}).index == pytest.approx(
        cfg.points_per_sd
    )
    # heart rate alone still counts half: 4 SD with EDA at baseline -> 2 SD worth of points
    at_rest: dict[Input, float | None] = {"tonic": t_ref.median, "scr_rate": s_ref.median}
    hr_only = arousal_index(cfg, b, {**at_rest, "hr": h_ref.median + 4 * h_ref.scale})
    assert hr_only.index == pytest.approx(2 * cfg.points_per_sd)
    # both up: the mean wins when the heart is further up than EDA; contributions add up
    both = arousal_index(cfg, b, {**two_sd, "hr": h_ref.median + 4 * h_ref.scale})
    assert both.index == pytest.approx(3 * cfg.points_per_sd)
    assert sum(both.contributions.values()) == pytest.approx(both.index)
    assert both.contributions["hr"] == pytest.approx(2 * both.contributions["eda"])


def test_reference_follows_a_calmer_level_when_the_baseline_was_aroused() -> None:
    cfg = AnalysisConfig(baseline_s=100.0, baseline_min_s=50.0, settle_s=0.0, adapt_window_s=200.0)
    b = Baselines(cfg)
    row: dict[Input, float | None] = {"tonic": None, "scr_rate": None, "ln_rmssd": None}
    for k in range(100):  # aroused arrival: HR 90 bpm
        b.update(k, {**row, "hr": 90.0 + (k % 3)})
    for k in range(100, 400):  # then settles at 70 bpm
        b.update(k, {**row, "hr": 70.0 + (k % 3)})
    ref = b.reference("hr")
    assert ref is not None
    assert ref.median == 91.0  # the baseline itself is kept ...
    assert b.center("hr") == 71.0  # ... but the reference is the calmer trailing median
    # back at the arrival level now reads as arousal (20 bpm = 10 scale units: capped)
    assert arousal_index(cfg, b, {"hr": 91.0}).index == 100.0
    assert arousal_index(cfg, b, {"hr": 71.0}).index == 0.0
    off = Baselines(replace(cfg, adapt_down=0.0))
    for k in range(400):
        off.update(k, {**row, "hr": (90.0 if k < 100 else 70.0) + (k % 3)})
    assert off.center("hr") == 91.0
