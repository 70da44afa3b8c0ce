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

Run: ``.venv/bin/python -m benchmarks.detection_cv`` (``--folds K``, ``--json``, ``--quick``:
the small grid and 2 folds of 4 subjects the test suite uses).
"""

from __future__ import annotations

import argparse
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
#: Release stage: the HR fall it needs (bpm), chosen on the training folds by release F1 with the
#: default arousal design (releases never change arousal episodes).
RELEASE_DROPS = (5.0, 8.0, 10.0, 12.0)
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
    roots: Sequence[Path], cache: Path | None = DEFAULT_CACHE, only: Sequence[str] = ()
) -> list[Subject]:
    """Every labelled subject of each root (labels, phases and ``Raw_data/``)."""
    out = []
    for root in roots:
        tasks = read_labels(root / "labels_stress_intervals.csv")
        phases = read_phases(root / "time_log_phases.csv")
        for name in sorted({iv.subject for iv in tasks}):
            if only and name not in only:
                continue
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
    retrospective onset of the arousal episodes)."""
    d = pool(scores, draws=draws).to_dict()
    delays = [v.confirmed - v.onset for s in scores for v in s.verdicts if v.kind == "arousal"]
    out = {k: d[k] for k in FIGURES}
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
) -> dict[str, Any]:
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
    if ablations:
        chosen_fixed, other = _design_of_defaults(base)
        out["ablations"] = {
            name: cross_validate(
                grid_scores({**chosen_fixed, **change}, own or other), fold_list, draws
            )["pooled"]
            for name, (change, own) in ABLATIONS.items()
        }
    releases = {
        f"release_hr_drop_bpm={d}": scored(replace(base, release_hr_drop_bpm=d))
        for d in RELEASE_DROPS
    }
    out["releases"] = cross_validate(releases, fold_list, draws, select_release)
    out["releases_on_all"] = select_release(releases, names, draws)
    out["sweep"] = [
        {
            "eda_rise_ln": th,
            **figures(list(scored(replace(base, eda_rise_ln=th)).values()), draws),
        }
        for th in sweep
    ]
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
    for name, cv in res["designs"].items():
        lines.append(_line(name, cv["pooled"], w))
    lines.append(_line("whole procedure (design chosen too)", res["selected"]["pooled"], w))
    lines += ["", "Per fold (whole procedure):", head]
    for f in res["selected"]["folds"]:
        lines.append(_line(f"fold {f['fold']} ({','.join(f['test'])})", f, w))
        lines.append(f"{'':<{w}}   chose {f['chosen']}")
    lines += [
        "",
        f"Chosen on all subjects by the same rule: {res['selected_on_all']}",
        "",
        "Shipped defaults (in-sample for the chosen values):",
        head,
    ]
    for g, figs in res["defaults"].items():
        lines.append(_line(f"defaults, {g}", figs, w))
    rel = res["releases"]
    lines += [
        "",
        "Release stage (release_hr_drop_bpm chosen by release F1 on the training folds; "
        "held-out, pooled):",
        head,
        _line("releases", rel["pooled"], w),
    ]
    for f in rel["folds"]:
        lines.append(_line(f"fold {f['fold']}: chose {f['chosen']}", f, w))
    lines.append(f"Chosen on all subjects by the same rule: {res['releases_on_all']}")
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
        subjects = load_subjects(roots, cache)[:4]
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
            subjects, args.folds, args.seed, args.draws, sweep=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
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
