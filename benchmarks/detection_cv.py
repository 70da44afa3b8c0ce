"""Subject-level cross-validation of the arousal/release detector (issue 9).

Leave-subjects-out folds over the labelled Stress-Predict subjects (the 16-subject development set
in ``shared/fixtures/external/stress_predict_e4_dev`` plus the 3 test fixtures): every parameter
that is chosen from data (each design's candidate grid below) is chosen on the training folds
only, by one rule (:func:`select`: the largest pooled margin over chance, ties to fewer relax
false alarms), and the figures are those of the held-out folds, per fold and pooled. Beside them:
the shipped defaults' figures (dev set, fixtures, all), each design ingredient's ablation (the same
selection with one ingredient removed), and a sweep of the EDA threshold that maps the trade-off
between hits and relax false alarms, with the chance level of every point.

The signal processors run once per recording (``detection_features.py`` caches their per-second
output in ``.cache/``); every candidate replays those rows through the real
:class:`~rekindle.analysis.core.arousal.ArousalDetector`, and the episodes are scored by
``rekindle.analysis.scoring`` exactly as ``rekindle evaluate`` scores them.

The release stage is cross-validated the same way: each release design (``RELEASE_DESIGNS``, one
principled change each) chooses its one parameter on the training folds by release F1, with the
whole release procedure (design chosen too) and ablations of the shipped release design.

Run: ``.venv/bin/python -m benchmarks.detection_cv`` (``--folds K``, ``--json``, ``--releases``:
the release stage only, ``--quick``: the small grid and 2 folds of 4 subjects the test suite
uses).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.detection_features import DEFAULT_CACHE, Features, load
from rekindle.analysis.core import AnalysisConfig, Episode
from rekindle.analysis.core.arousal import ArousalDetector
from rekindle.analysis.evaluate import (
    Recording,
    read_labels,
    read_phases,
    recording_path,
    score_recording,
)
from rekindle.analysis.scoring import Interval, Phase, PooledScore, SubjectScore, pool

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "stress_predict_e4"
DEV_NAME = Path("shared") / "fixtures" / "external" / "stress_predict_e4_dev"
#: Issue 9's targets, printed beside the figures (never used to choose anything).
TARGETS = {
    "hit": 0.70,
    "margin": 0.40,
    "latency_median_s": 60.0,
    "relax_fa_per_h": 0.5,
    "release_recall": 0.70,
    "release_precision": 0.80,
}

#: The EDA threshold grid every design chooses from (ln units: 0.1 = +10.5 %).
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
#: Designs: fixed settings, and the reference parameter each chooses on the training folds
#: besides the threshold (the trough design: its window; the median designs: the gap that keeps
#: the current rise out of the reference, at least half the 60-s averaging window, since without
#: a gap the simulator's scripted second surge is missed: tests/analysis_core).
DESIGNS: dict[str, tuple[dict[str, float], tuple[str, tuple[float, ...]]]] = {
    # A: EDA rise above its trough of the last minutes (a running minimum reference)
    "A trough reference, EDA only": (
        {"eda_ref_quantile": 0.0, "cardiac_weight": 0.0},
        ("rise_window_s", (120.0, 240.0)),
    ),
    # B: EDA change against the median of the preceding minutes (robust to single dips)
    "B median reference, EDA only": (
        {"eda_ref_quantile": 0.5, "cardiac_weight": 0.0},
        ("ref_gap_s", (30.0, 60.0)),
    ),
    # C: B with HR and ln RMSSD supporting the index (EDA still opens)
    "C median reference + cardiac support": (
        {"eda_ref_quantile": 0.5, "cardiac_weight": 0.5},
        ("ref_gap_s", (30.0, 60.0)),
    ),
}
#: Ablations of the chosen design: one ingredient removed (or HR allowed to open), the
#: threshold and the design's reference parameter still chosen on the training folds (an
#: ablation may name its own grid instead: the absolute-rise variant chooses its µS scale).
ABLATIONS: dict[str, tuple[dict[str, float], tuple[str, tuple[float, ...]] | None]] = {
    "no motion gate (degraded EDA averaged)": ({"eda_skip_degraded": 0.0}, None),
    "no minutes-long averaging (5 s)": ({"eda_avg_s": 5.0}, None),
    "no sustained rise (min_episode_s 0)": ({"min_episode_s": 0.0}, None),
    "HR may open (cardiac weight 1, eda_open_min 0)": (
        {"cardiac_weight": 1.0, "eda_open_min": 0.0},
        None,
    ),
    "no absolute floor (relative rise only)": ({"eda_rise_min_us": 1e-9}, None),
    "absolute rise only (uS scale chosen)": (
        {"eda_rise_ln": 1e-9},
        ("eda_rise_min_us", (0.02, 0.05, 0.1, 0.2, 0.4)),
    ),
}
#: Release designs (docs/method.md section 8), each one principled change to the previous release
#: stage (R0: judged while the episode's index is falling or once it has closed, 30-s hold), with
#: the parameters it chooses on the training folds by one rule (:func:`select_release`: the
#: largest pooled release F1), always on the default arousal design (releases never change arousal
#: episodes). Each grid is a tuple of (parameter, values); a design chooses among their product.
#: ``release_fall_s`` stays within 0 < x <= 180 s: longer windows (or none) report a release after
#: the simulator's slow 15-min fade (tests/analysis_core/test_simulated_sessions.py).
ReleaseGrid = tuple[tuple[str, tuple[float, ...]], ...]
_R0 = {"release_needs_close": 0.0, "recovery_hold_s": 30.0}
_HOLDS = ("recovery_hold_s", (30.0, 60.0, 90.0, 120.0))
RELEASE_DESIGNS: dict[str, tuple[dict[str, float], ReleaseGrid]] = {
    # the previous stage; its HR fall (bpm) chosen
    "R0 falling or closed, 30-s hold (previous)": (
        _R0,
        (("release_hr_drop_bpm", (5.0, 8.0, 10.0, 12.0)),),
    ),
    # HR recovery measured from the surge's HR peak instead of its mean over the episode
    "R1 fall from the surge's HR peak": (
        {**_R0, "release_hr_ref_peak": 1.0},
        (("release_hr_drop_bpm", (5.0, 8.0, 10.0, 12.0, 15.0)),),
    ),
    # sympathetic withdrawal: tonic EDA must be falling, not only not rising
    "R2 tonic EDA falling": (
        _R0,
        (("release_eda_fall_ln", (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)),),
    ),
    # timing relative to the surge's peak: no release within the first minutes after it
    "R3 not before N s after the surge's peak": (
        _R0,
        (("release_after_peak_s", (0.0, 120.0, 240.0, 360.0)),),
    ),
    # the surge's episode must have closed, and the recovery must hold (HR that stays down)
    "R4 episode closed, sustained recovery": ({"release_needs_close": 1.0}, (_HOLDS,)),
    # parasympathetic rebound: ln RMSSD must rise above its level during the surge where it is
    # measured (HR alone decides elsewhere)
    "R6 ln RMSSD rebound where measured": (
        _R0,
        (("release_rmssd_rise_ln", (0.0, 0.1, 0.2, 0.3)),),
    ),
    # R4 with the promptness of the fall chosen too
    "R5 R4 + prompt-fall window chosen": (
        {"release_needs_close": 1.0},
        (_HOLDS, ("release_fall_s", (60.0, 120.0, 180.0))),
    ),
}
#: The design the defaults ship (its ablations follow).
SHIPPED_RELEASE = "R4 episode closed, sustained recovery"
#: Ablations of the shipped release design (its hold still chosen on the training folds unless
#: the ablation fixes it) and two additions to it (the ingredients of R2 and R3).
RELEASE_ABLATIONS: dict[str, tuple[dict[str, float], bool]] = {
    "episode need not close (falling suffices)": ({"release_needs_close": 0.0}, True),
    "30-s hold (no sustained recovery)": ({"recovery_hold_s": 30.0}, False),
    "no prompt fall (release_fall_s 0)": ({"release_fall_s": 0.0}, True),
    "EDA may rise (release_eda_rise_ln 10)": ({"release_eda_rise_ln": 10.0}, True),
    "fall from the surge's HR peak (8 bpm)": (
        {"release_hr_ref_peak": 1.0, "release_hr_drop_bpm": 8.0},
        True,
    ),
    "plus tonic EDA falling (0.05)": ({"release_eda_fall_ln": 0.05}, True),
    "plus not before 240 s after the peak": ({"release_after_peak_s": 240.0}, True),
    "plus ln RMSSD rebound where measured (0.1)": ({"release_rmssd_rise_ln": 0.1}, True),
}
#: The counts behind release recall and precision (in the JSON and the release lines).
RELEASE_COUNTS = (
    "release_windows",
    "release_windows_found",
    "releases_good",
    "releases_false",
    "releases_other",
)
FIGURES = (
    "hit",
    "chance",
    "margin",
    "latency_median_s",
    "relax_fa_per_h",
    "contrast",
    "release_recall",
    "release_precision",
    "arousal_onsets",
    "hyperventilation_hit",
    "hyperventilation_chance",
)


@dataclass(frozen=True, slots=True)
class Subject:
    name: str
    features: Features
    tasks: tuple[Interval, ...]
    phases: tuple[Phase, ...]


def find_dev_set(start: Path = ROOT) -> Path | None:
    """The development set in ``shared/`` beside the checkout (or beside any parent of it)."""
    for base in (start, *start.parents):
        cand = base / DEV_NAME
        if cand.is_dir():
            return cand
    return None


def load_subjects(
    roots: Sequence[Path],
    cache: Path | None = DEFAULT_CACHE,
    only: Sequence[str] = (),
    limit: int | None = None,
) -> list[Subject]:
    """Every labelled subject of each root (labels, phases and ``Raw_data/``); with ``limit``
    the first ``limit`` of them (the others are not read)."""
    out: list[Subject] = []
    for root in roots:
        tasks = read_labels(root / "labels_stress_intervals.csv")
        phases = read_phases(root / "time_log_phases.csv")
        for name in sorted({iv.subject for iv in tasks}):
            if only and name not in only:
                continue
            if limit is not None and len(out) >= limit:
                return out
            feats = load(name, recording_path(root, name), cache=cache)
            out.append(
                Subject(
                    name,
                    feats,
                    tuple(iv for iv in tasks if iv.subject == name),
                    tuple(ph for ph in phases if ph.subject == name),
                )
            )
    return out


def replay(cfg: AnalysisConfig, feats: Features) -> Recording:
    """The detector over one subject's cached per-second inputs, as the analyzer runs it."""
    det = ArousalDetector(cfg)
    episodes: list[Episode] = []
    rows = feats.rows()
    for k, values, degraded in rows:
        episodes.extend(e for e in det.step(k, values, degraded).events if isinstance(e, Episode))
    if math.isfinite(feats.final):
        episodes.extend(det.finish(feats.final))
    return Recording(tuple(episodes), feats.time, feats.hr, (feats.start, feats.end))


def score_all(cfg: AnalysisConfig, subjects: Sequence[Subject]) -> dict[str, SubjectScore]:
    return {
        s.name: score_recording(s.name, replay(cfg, s.features), s.tasks, s.phases, cfg)
        for s in subjects
    }


def figures(scores: Sequence[SubjectScore], draws: int) -> dict[str, Any]:
    """The pooled figures of ``scores``, with the median alert delay (confirmation minus
    retrospective onset of the arousal episodes) and the counts behind the release figures."""
    d = pool(scores, draws=draws).to_dict()
    delays = [v.confirmed - v.onset for s in scores for v in s.verdicts if v.kind == "arousal"]
    out = {k: d[k] for k in (*FIGURES, *RELEASE_COUNTS)}
    out["alert_delay_median_s"] = statistics.median(delays) if delays else None
    return out


def _key(p: PooledScore) -> tuple[float, float]:
    margin = p.margin if math.isfinite(p.margin) else -math.inf
    fa = p.relax_fa_per_h if math.isfinite(p.relax_fa_per_h) else math.inf
    return (round(margin, 6), -fa)


def select(
    candidates: Mapping[str, Mapping[str, SubjectScore]], train: Sequence[str], draws: int
) -> str:
    """The candidate with the largest pooled margin over chance on ``train`` (ties: fewer relax
    false alarms per hour, then the first listed)."""
    best, best_key = next(iter(candidates)), (-math.inf, -math.inf)
    for name, scores in candidates.items():
        k = _key(pool([scores[s] for s in train], draws=draws))
        if k > best_key:
            best, best_key = name, k
    return best


def folds(names: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """``k`` leave-subjects-out folds (a seeded shuffle dealt round-robin)."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


def cross_validate(
    candidates: Mapping[str, Mapping[str, SubjectScore]],
    fold_list: Sequence[Sequence[str]],
    draws: int,
    rule: Any = select,
) -> dict[str, Any]:
    """Choose on the training folds (by ``rule``), score the held-out fold; pooled = all
    held-out subjects, each scored with its own fold's choice."""
    everyone = [s for f in fold_list for s in f]
    per_fold = []
    held: list[SubjectScore] = []
    for i, test in enumerate(fold_list):
        train = [s for s in everyone if s not in test]
        chosen = rule(candidates, train, draws)
        scores = [candidates[chosen][s] for s in test]
        held.extend(scores)
        per_fold.append({"fold": i, "test": list(test), "chosen": chosen, **figures(scores, draws)})
    return {"folds": per_fold, "pooled": figures(held, draws)}


def candidate_grid(
    base: AnalysisConfig,
    fixed: Mapping[str, float],
    thresholds: Sequence[float],
    other: tuple[str, Sequence[float]],
) -> dict[str, AnalysisConfig]:
    """Every threshold x value of the design's other parameter, with ``fixed`` applied last (an
    ablation that fixes a grid parameter keeps it fixed)."""
    name, values = other
    out = {}
    for v in values:
        for th in thresholds:
            changes: dict[str, Any] = {"eda_rise_ln": th, name: v, **fixed}
            cfg = replace(base, **changes)
            out[f"eda_rise_ln={cfg.eda_rise_ln} {name}={getattr(cfg, name)}"] = cfg
    return out


def _release_f1(p: PooledScore) -> float:
    r, q = p.release_recall, p.release_precision
    if not (math.isfinite(r) and math.isfinite(q)) or r + q == 0:
        return -math.inf
    return 2 * r * q / (r + q)


def select_release(
    candidates: Mapping[str, Mapping[str, SubjectScore]], train: Sequence[str], draws: int
) -> str:
    """The release candidate with the largest pooled F1 of release recall and precision (none
    defined: the first listed, the smallest fall)."""
    best, best_f1 = next(iter(candidates)), -math.inf
    for name, scores in candidates.items():
        f1 = _release_f1(pool([scores[s] for s in train], draws=draws))
        if f1 > best_f1:
            best, best_f1 = name, f1
    return best


def run(
    subjects: Sequence[Subject],
    k: int,
    seed: int,
    draws: int,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    small: bool = False,
    ablations: bool = True,
    sweep: Sequence[float] = (),
    arousal: bool = True,
) -> dict[str, Any]:
    """The whole cross-validation (``arousal`` False: the release stage and the defaults only,
    as ``--releases`` runs it)."""
    names = [s.name for s in subjects]
    fold_list = folds(names, k, seed)
    base = AnalysisConfig()
    memo: dict[AnalysisConfig, dict[str, SubjectScore]] = {}

    def scored(cfg: AnalysisConfig) -> dict[str, SubjectScore]:
        if cfg not in memo:
            memo[cfg] = score_all(cfg, subjects)
        return memo[cfg]

    def grid_scores(
        fixed: Mapping[str, float], other: tuple[str, Sequence[float]]
    ) -> dict[str, dict[str, SubjectScore]]:
        if small:  # (the suite's check: one value of the other parameter)
            other = (other[0], other[1][:1])
        grid = candidate_grid(base, fixed, thresholds, other)
        return {name: scored(cfg) for name, cfg in grid.items()}

    out: dict[str, Any] = {"subjects": names, "folds": fold_list, "draws": draws, "seed": seed}
    if arousal:
        designs: dict[str, Any] = {}
        every: dict[str, dict[str, SubjectScore]] = {}
        for dname, (fixed, other) in DESIGNS.items():
            cands = grid_scores(fixed, other)
            designs[dname] = cross_validate(cands, fold_list, draws)
            every.update({f"{dname}: {c}": v for c, v in cands.items()})
        out["designs"] = designs
        # the whole procedure (design and parameters chosen on the training folds)
        out["selected"] = cross_validate(every, fold_list, draws)
        out["selected_on_all"] = select(every, names, draws)
    # the shipped defaults (no data-driven choice at run time: their figures on each group)
    default = scored(base)
    groups = {
        "all": names,
        "dev": [n for n in names if n not in FIXTURE_NAMES],
        "fixtures": [n for n in names if n in FIXTURE_NAMES],
    }
    out["defaults"] = {
        g: figures([default[n] for n in ns], draws) for g, ns in groups.items() if ns
    }
    if ablations and arousal:
        chosen_fixed, other = _design_of_defaults(base)
        out["ablations"] = {
            name: cross_validate(
                grid_scores({**chosen_fixed, **change}, own or other), fold_list, draws
            )["pooled"]
            for name, (change, own) in ABLATIONS.items()
        }
    out.update(release_stage(base, scored, fold_list, names, draws, small=small))
    out["sweep"] = [
        {
            "eda_rise_ln": th,
            **figures(list(scored(replace(base, eda_rise_ln=th)).values()), draws),
        }
        for th in sweep
    ]
    return out


def release_candidates(
    base: AnalysisConfig, fixed: Mapping[str, float], grid: ReleaseGrid
) -> dict[str, AnalysisConfig]:
    """Every combination of the grid's values, with ``fixed`` applied first (a grid parameter
    overrides it)."""
    out = {}
    for combo in itertools.product(*(values for _, values in grid)):
        changes: dict[str, Any] = dict(zip((n for n, _ in grid), combo, strict=True))
        name = " ".join(f"{k}={v}" for k, v in changes.items())
        out[name] = replace(base, **{**fixed, **changes})
    return out


def release_stage(
    base: AnalysisConfig,
    scored: Any,
    fold_list: Sequence[Sequence[str]],
    names: Sequence[str],
    draws: int,
    *,
    small: bool = False,
) -> dict[str, Any]:
    """Each release design cross-validated (its parameters chosen on the training folds by
    release F1), the whole procedure (design chosen in-fold too), the choice on all subjects, and
    the ablations of the shipped design (:data:`SHIPPED_RELEASE`; the defaults must be in its
    grid)."""
    designs: dict[str, Any] = {}
    on_all: dict[str, str] = {}
    every: dict[str, dict[str, SubjectScore]] = {}
    for dname, (fixed, full) in RELEASE_DESIGNS.items():
        # (the suite's check: the first two values of each parameter)
        grid = tuple((n, v[:2]) for n, v in full) if small else full
        cands = {c: scored(cfg) for c, cfg in release_candidates(base, fixed, grid).items()}
        designs[dname] = cross_validate(cands, fold_list, draws, select_release)
        on_all[dname] = select_release(cands, names, draws)
        every.update({f"{dname}: {c}": v for c, v in cands.items()})
    out: dict[str, Any] = {
        "release_designs": designs,
        "release_designs_on_all": on_all,
        "releases": cross_validate(every, fold_list, draws, select_release),
        "releases_on_all": select_release(every, names, draws),
    }
    fixed, grid = RELEASE_DESIGNS[SHIPPED_RELEASE]
    if base not in release_candidates(base, fixed, grid).values():
        raise ValueError(f"the defaults are not in the grid of {SHIPPED_RELEASE!r}")
    ablations = {}
    for aname, (change, chosen) in RELEASE_ABLATIONS.items():
        if small:
            break
        # a parameter the ablation fixes is taken out of the grid (held at the ablation's value)
        own = tuple((n, v) for n, v in grid if chosen and n not in change)
        cands = {
            c: scored(cfg) for c, cfg in release_candidates(base, {**fixed, **change}, own).items()
        }
        ablations[aname] = cross_validate(cands, fold_list, draws, select_release)["pooled"]
    out["release_ablations"] = ablations
    return out


#: The three shipped fixture subjects (the rest are the development set).
FIXTURE_NAMES = frozenset({"S02", "S05", "S06"})


def _design_of_defaults(
    base: AnalysisConfig,
) -> tuple[dict[str, float], tuple[str, tuple[float, ...]]]:
    """The design whose fixed settings the defaults have."""
    for fixed, other in DESIGNS.values():
        if all(getattr(base, k) == v for k, v in fixed.items()):
            return dict(fixed), other
    raise ValueError("the defaults match no design of DESIGNS")


# --- printing -------------------------------------------------------------------------------


def _fmt(name: str, v: object) -> str:
    if v is None:
        return "  -  "
    if name in ("latency_median_s", "alert_delay_median_s"):
        return f"{v:5.0f}"
    if name in ("arousal_onsets",):
        return f"{v:5d}"
    assert isinstance(v, float | int)
    return f"{v:5.2f}"


#: The printed columns: the pooled figures with the alert delay after the onsets.
HEAD = (*FIGURES[:9], "alert_delay_median_s", *FIGURES[9:])
SHORT = (
    "hit",
    "chance",
    "margin",
    "lat_s",
    "fa/h",
    "contr",
    "r_rec",
    "r_prec",
    "onsets",
    "alert",
    "hv_hit",
    "hv_ch",
)


def _line(label: str, figs: Mapping[str, Any], width: int = 44) -> str:
    return f"{label[:width]:<{width}} " + " ".join(_fmt(k, figs.get(k)) for k in HEAD)


def _release_line(label: str, figs: Mapping[str, Any], width: int = 44) -> str:
    """:func:`_line` with the release counts: windows found of windows, good/false/other."""
    return _line(label, figs, width) + (
        f"  found {figs['release_windows_found']}/{figs['release_windows']}"
        f" good {figs['releases_good']} false {figs['releases_false']}"
        f" other {figs['releases_other']}"
    )


def release_lines(res: Mapping[str, Any], head: str, w: int = 44) -> list[str]:
    """The release stage's part of the report."""
    lines = [
        "",
        "Release designs (each chooses its parameter by release F1 on the training folds; "
        "held-out, pooled):",
        head,
    ]
    for name, cv in res["release_designs"].items():
        lines.append(_release_line(name, cv["pooled"], w))
    rel = res["releases"]
    lines.append(_release_line("whole procedure (design chosen too)", rel["pooled"], w))
    for name, cv in res["release_designs"].items():
        lines += ["", f"Per fold, {name}:"]
        for f in cv["folds"]:
            lines.append(_release_line(f"fold {f['fold']}", f, w))
            lines.append(f"{'':<{w}}   chose {f['chosen']}")
        lines.append(f"{'':<{w}}   on all subjects: {res['release_designs_on_all'][name]}")
    lines += ["", "Per fold, whole release procedure:"]
    for f in rel["folds"]:
        lines.append(_release_line(f"fold {f['fold']}", f, w))
        lines.append(f"{'':<{w}}   chose {f['chosen']}")
    lines.append(f"Chosen on all subjects by the same rule: {res['releases_on_all']}")
    if res.get("release_ablations"):
        lines += ["", "Ablations of the shipped release design (held-out, pooled):", head]
        for name, figs in res["release_ablations"].items():
            lines.append(_release_line(name, figs, w))
    return lines


def format_report(res: Mapping[str, Any]) -> str:
    w = 44
    head = f"{'':<{w}} " + " ".join(f"{h:>5}" for h in SHORT)
    lines = [
        f"{len(res['subjects'])} subjects, {len(res['folds'])} folds: "
        + "; ".join(",".join(f) for f in res["folds"]),
        f"chance: {res['draws']} circular shifts per subject (seed {res['seed']})",
        "",
        "Held-out folds, pooled (each design chooses eda_rise_ln and its reference parameter on "
        "the training folds; alert = median confirmation minus onset, hv = hyperventilation):",
        head,
    ]
    if "designs" in res:
        for name, cv in res["designs"].items():
            lines.append(_line(name, cv["pooled"], w))
        lines.append(_line("whole procedure (design chosen too)", res["selected"]["pooled"], w))
        lines += ["", "Per fold (whole procedure):", head]
        for f in res["selected"]["folds"]:
            lines.append(_line(f"fold {f['fold']} ({','.join(f['test'])})", f, w))
            lines.append(f"{'':<{w}}   chose {f['chosen']}")
        lines += ["", f"Chosen on all subjects by the same rule: {res['selected_on_all']}"]
    else:
        lines.append("(arousal designs not run: --releases)")
    lines += [
        "",
        "Shipped defaults (in-sample for the chosen values):",
        head,
    ]
    for g, figs in res["defaults"].items():
        lines.append(_line(f"defaults, {g}", figs, w))
    lines += release_lines(res, head, w)
    if res.get("ablations"):
        lines += ["", "Ablations of the default design (held-out, pooled):", head]
        for name, figs in res["ablations"].items():
            lines.append(_line(name, figs, w))
    if res.get("sweep"):
        lines += [
            "",
            "Trade-off sweep of eda_rise_ln at the other defaults (all subjects, "
            "in-sample; chance beside every hit rate):",
            head,
        ]
        for row in res["sweep"]:
            lines.append(_line(f"eda_rise_ln={row['eda_rise_ln']}", row, w))
    lines += [
        "",
        "Targets: "
        + ", ".join(
            f"{k} {'>=' if k not in ('latency_median_s', 'relax_fa_per_h') else '<='} {v}"
            for k, v in TARGETS.items()
        ),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--dev",
        type=Path,
        default=None,
        help="the 16-subject development set (default: shared/ beside the checkout)",
    )
    ap.add_argument("--folds", type=int, default=5, help="number of leave-subjects-out folds")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fold split and of chance")
    ap.add_argument("--draws", type=int, default=200, help="chance draws per subject (>= 200)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="2 folds of 4 subjects, a small grid, no ablations (the suite's check)",
    )
    ap.add_argument(
        "--releases",
        action="store_true",
        help="the release stage only (its designs, ablations and the defaults' figures)",
    )
    ap.add_argument("--no-cache", action="store_true", help="recompute the per-second features")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    roots = [FIXTURES]
    dev = args.dev or find_dev_set()
    if dev is not None:
        roots.insert(0, dev)
    elif not args.quick:
        print("development set not found (give --dev PATH)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    cache = None if args.no_cache else DEFAULT_CACHE
    if args.quick:
        subjects = load_subjects(roots, cache, limit=4)
        res = run(
            subjects,
            2,
            args.seed,
            args.draws,
            thresholds=(0.2, 0.3),
            small=True,
            ablations=False,
            sweep=(0.2, 0.3),
        )
    else:
        subjects = load_subjects(roots, cache)
        res = run(
            subjects,
            args.folds,
            args.seed,
            args.draws,
            sweep=() if args.releases else (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
            arousal=not args.releases,
        )
    res["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(
            json.dumps(
                res,
                indent=1,
                default=lambda o: None if isinstance(o, float) and not np.isfinite(o) else o,
            )
        )
    else:
        print(format_report(res))
        print(f"\n({res['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
