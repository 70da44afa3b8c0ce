"""An arousal variant that was tried and not shipped: SCR rate supporting tonic EDA (issue 9).

Non-specific skin conductance responses become more frequent under sympathetic arousal (Boucsein
2012; Dawson et al. 2007), so the EDA part of the index could count the rise of the SCR rate
(per minute, averaged like tonic EDA over ``eda_avg_s`` and compared with its median over the
same reference window) beside the tonic rise: ``e = tonic rise / eda_rise_ln + SCR-rate rise /
scale``. This script cross-validates that variant exactly as ``detection_cv`` does design B (the
same folds, chance draws and rule: the largest pooled margin over chance on the training folds,
choosing the SCR scale and ``eda_rise_ln``), beside design B on the same threshold grid.

The variant is a subclass of the shipped :class:`ArousalDetector` (its ``_index`` adds the SCR
part to the EDA part and its rise); nothing of it is in the core. Held out it lowers the margin
(0.16 against 0.28 for design B on the same grid) and doubles the relax false alarms (1.59 against
0.80 per hour): the SCR rate also rises in calm stretches (docs/method.md, section 9).

Run: ``.venv/bin/python -m benchmarks.detection_scr_variant`` (a few minutes; uses the
per-second cache of ``detection_features``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from benchmarks import detection_cv as cv
from rekindle.analysis.core import AnalysisConfig, Episode
from rekindle.analysis.core.arousal import (
    POINTS_PER_SCALE,
    SCR_RATE,
    ArousalDetector,
    DetectorTick,
    _Input,
)
from rekindle.analysis.evaluate import Recording, score_recording
from rekindle.analysis.scoring import SubjectScore

#: SCR-rate rise (per minute) that counts as much as a full tonic rise (0: design B itself).
SCALES = (0.0, 2.0, 4.0, 8.0)
THRESHOLDS = (0.2, 0.25, 0.3, 0.4)


class ScrSupportedDetector(ArousalDetector):
    """Design B with the SCR rate's rise added to the EDA part of the index."""

    def __init__(self, config: AnalysisConfig, scale: float) -> None:
        super().__init__(config)
        self.scale = scale
        cfg = config
        self._scr = _Input(
            cfg.eda_avg_s, cfg.rise_window_s, 1.0, cfg.eda_ref_quantile, cfg.ref_gap_s
        )

    def step(self, k: int, values: list[float | None], eda_degraded: bool = False) -> DetectorTick:
        cfg = self.cfg
        settled = self.first_tick is not None and k - self.first_tick >= cfg.settle_s
        usable = settled and not (eda_degraded and cfg.eda_skip_degraded)
        self._scr.push(k, values[SCR_RATE] if usable else None)
        return super().step(k, values, eda_degraded)

    def _index(
        self, eda_now: bool, cardiac_now: bool
    ) -> tuple[float | None, dict[str, float], dict[str, float]]:
        total, parts, rises = super()._index(eda_now, cardiac_now)
        scr = self._scr
        if (
            total is None
            or "eda" not in rises
            or self.scale <= 0
            or scr.level is None
            or scr.ref_level is None
        ):
            return total, parts, rises
        add = max(0.0, (scr.level - scr.ref_level) / self.scale)
        rises = {**rises, "eda": rises["eda"] + add}
        parts = {**parts, "eda": parts["eda"] + POINTS_PER_SCALE * add}
        total = math.fsum(parts.values())
        if total > 100.0:
            parts = {n: v * 100.0 / total for n, v in parts.items()}
            total = 100.0
        return total, parts, rises


def replay(cfg: AnalysisConfig, scale: float, feats: Any) -> Recording:
    det = ScrSupportedDetector(cfg, scale)
    episodes: list[Episode] = []
    for k, values, degraded in feats.rows():
        episodes.extend(e for e in det.step(k, values, degraded).events if isinstance(e, Episode))
    if math.isfinite(feats.final):
        episodes.extend(det.finish(feats.final))
    return Recording(tuple(episodes), feats.time, feats.hr, (feats.start, feats.end))


def run(subjects: Sequence[cv.Subject], k: int = 5, seed: int = 0, draws: int = 200) -> str:
    fold_list = cv.folds([s.name for s in subjects], k, seed)
    cands: dict[str, dict[str, SubjectScore]] = {}
    for scale in SCALES:
        for th in THRESHOLDS:
            cfg = replace(AnalysisConfig(), eda_rise_ln=th)
            cands[f"scr_scale={scale} eda_rise_ln={th}"] = {
                s.name: score_recording(
                    s.name, replay(cfg, scale, s.features), s.tasks, s.phases, cfg
                )
                for s in subjects
            }
    w = 44
    head = f"{'':<{w}} " + " ".join(f"{h:>5}" for h in cv.SHORT)
    lines = [
        "Held-out folds, pooled (threshold and SCR scale chosen on the training folds by the "
        "largest margin over chance):",
        head,
    ]
    groups = {
        "B, tonic EDA only (scale 0)": [c for c in cands if c.startswith("scr_scale=0.0 ")],
        "B + SCR-rate support (scale chosen)": [
            c for c in cands if not c.startswith("scr_scale=0.0 ")
        ],
    }
    for label, names in groups.items():
        res = cv.cross_validate({c: cands[c] for c in names}, fold_list, draws)
        lines.append(cv._line(label, res["pooled"], w))
        lines.append(f"{'':<{w}}   chose {', '.join(f['chosen'] for f in res['folds'])}")
    lines += ["", "Every candidate on all subjects (in-sample):", head]
    for name, scores in cands.items():
        lines.append(cv._line(name, cv.figures(list(scores.values()), draws), w))
    return "\n".join(lines)


def main() -> int:
    dev = cv.find_dev_set()
    if dev is None:
        print("development set not found", file=sys.stderr)
        return 2
    print(run(cv.load_subjects([dev, cv.FIXTURES])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
