"""``rekindle evaluate``: chance-corrected scoring of detected episodes against a labelled protocol.

Inputs, in the Stress-Predict layout (``../shared/fixtures/external/stress_predict_e4_dev/`` and
``tests/fixtures/stress_predict_e4/``):

* ``--labels``: ``subject,task,start_unix,end_unix`` (extra columns ignored; end exclusive);
* ``--phases``: ``subject,phase,start_unix,end_unix`` (e.g. ``time_log_phases.csv``; default: that
  file beside the labels);
* ``--recordings``: a folder holding, per subject, an Empatica E4 export folder (``.csv`` or
  ``.csv.gz`` files) or a Rekindle recording ``SXX.jsonl[.gz]``, directly or under ``Raw_data/``.

Each recording is replayed through the same streaming analyzer the live service uses, in the same
1-s chunks (:func:`analyze_recording`); arousal onsets and release confirmation times, the
per-second HR of the analysis and the scorable range (from :func:`warmup_s` after the first
sample to the last data second) then go to the pure scoring of :mod:`rekindle.analysis.scoring`,
whose docstring defines every figure (hit, chance, margin, latency, relax false alarms, contrast,
release recall and precision). Per-subject figures carry their own chance level.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rekindle.analysis.core import (
    AnalysisConfig,
    AnalyzerInput,
    Episode,
    Event,
    FeatureRow,
    SessionAnalyzer,
)
from rekindle.analysis.core.arousal import warmup_s as detector_warmup_s
from rekindle.analysis.errors import AnalysisError
from rekindle.analysis.params import add_arguments as add_param_arguments
from rekindle.analysis.params import from_args
from rekindle.analysis.ppg import DerivedBeats
from rekindle.analysis.scoring import (
    Detection,
    Interval,
    Phase,
    PooledScore,
    ScoreParams,
    SubjectScore,
    TaskScore,
    pool,
    score_subject,
)

if TYPE_CHECKING:
    from rekindle.ingest.sources.base import Chunk

log = logging.getLogger(__name__)

#: The chance level is drawn at least this many times (issue 9).
MIN_DRAWS = 200


class EvaluationError(AnalysisError):
    """The labels, phases or a recording could not be used; ``path`` names the culprit."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def warmup_s(cfg: AnalysisConfig) -> float:
    """Seconds from the first sample before the detector can first declare an episode: the
    scorable range of a recording starts there (the detector defines it)."""
    return detector_warmup_s(cfg)


def read_labels(path: Path) -> list[Interval]:
    """Labelled tasks from a ``subject,task,start_unix,end_unix`` CSV."""
    return [Interval(*row) for row in _read_rows(path, "task")]


def read_phases(path: Path) -> list[Phase]:
    """Protocol phases from a ``subject,phase,start_unix,end_unix`` CSV (e.g. Stress-Predict's
    ``time_log_phases.csv``)."""
    return [Phase(*row) for row in _read_rows(path, "phase")]


def _read_rows(path: Path, name_column: str) -> list[tuple[str, str, float, float]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise EvaluationError(path, f"cannot read: {exc}") from exc
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            item = (
                row["subject"].strip(),
                row[name_column].strip(),
                float(row["start_unix"]),
                float(row["end_unix"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EvaluationError(
                path, f"line {i}: need subject,{name_column},start_unix,end_unix, got {row!r}"
            ) from exc
        if not item[3] > item[2]:
            raise EvaluationError(path, f"line {i}: end_unix must be after start_unix")
        out.append(item)
    return out


# --- running recordings (I/O edge) ----------------------------------------------------------


def _chunks(path: Path) -> Iterable[Chunk]:
    from rekindle.ingest.errors import IngestError  # noqa: PLC0415
    from rekindle.ingest.sources.base import open_source  # noqa: PLC0415

    try:
        yield from open_source(path)
    except IngestError as exc:
        raise EvaluationError(path, str(exc)) from exc


def analyzer_inputs(chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, list[AnalyzerInput]]]:
    """Each chunk with the analyzer inputs it becomes. Chunks go through the wire-contract
    message (with a per-stream sequence number) and the pipeline's conversion, so the analyzer
    sees exactly what ``rekindle analyze`` and the live service give it."""
    from rekindle.analysis.pipeline import to_input  # noqa: PLC0415

    seq: dict[tuple[str, str], int] = {}
    for chunk in chunks:
        key = (chunk.stream, chunk.device)
        seq[key] = seq.get(key, -1) + 1
        item = to_input(chunk.to_message("eval", "eval", seq[key], None))
        items: list[AnalyzerInput] = []
        if isinstance(item, list):
            items.extend(item)
        elif item is not None:
            items.append(item)
        yield chunk, items


@dataclass(frozen=True, slots=True)
class Recording:
    """What the scoring needs from one replayed recording: its episodes, the per-second HR of
    the analysis (``nan`` where none) and the span of its samples."""

    episodes: tuple[Episode, ...]
    hr_times: npt.NDArray[np.float64]
    hr_values: npt.NDArray[np.float64]
    span: tuple[float, float]


def replay_recording(
    path: Path, config: AnalysisConfig | None, take: Callable[[Event], None]
) -> tuple[tuple[float, float], float | None]:
    """Replay a recording through the streaming analyzer as the live service would (see
    :func:`analyzer_inputs`), handing every event to ``take``. Returns the span of its samples
    and the second at which the analyzer closed open episodes at the end of data."""
    analyzer = SessionAnalyzer(config)
    beats = DerivedBeats(analyzer.cfg)  # RR from PPG, as the pipeline derives it
    t_min, t_max = math.inf, -math.inf
    for chunk, items in analyzer_inputs(_chunks(path)):
        for it in items:
            for derived in beats.inputs(it):
                for e in analyzer.update(derived):
                    take(e)
        if chunk.stream != "marker":
            t_min, t_max = min(t_min, chunk.start), max(t_max, chunk.end)
    for derived in beats.finish():
        for e in analyzer.update(derived):
            take(e)
    for e in analyzer.finish():
        take(e)
    if not math.isfinite(t_min):
        raise EvaluationError(path, "no samples")
    return (t_min, t_max), analyzer.final_second


def analyze_recording(path: Path, config: AnalysisConfig | None = None) -> Recording:
    """The episodes, per-second HR and span of one replayed recording."""
    episodes: list[Episode] = []
    times: list[float] = []
    hr: list[float] = []

    def take(e: Event) -> None:
        if isinstance(e, FeatureRow):
            times.append(e.time)
            hr.append(math.nan if e.hr is None else e.hr)
        elif isinstance(e, Episode):
            episodes.append(e)

    span, _ = replay_recording(path, config, take)
    return Recording(
        tuple(episodes),
        np.asarray(times, dtype=np.float64),
        np.asarray(hr, dtype=np.float64),
        span,
    )


def detections(rec: Recording) -> list[Detection]:
    """Arousal onsets and release confirmation times of a recording's episodes. The
    confirmation is ``Episode.confirmed`` (the core sets it on every episode); for an episode
    built without it, an arousal's onset and a release's ``offset`` (its recovery was confirmed
    then)."""
    out = []
    for e in rec.episodes:
        if e.confirmed is not None:
            confirmed = e.confirmed
        else:
            confirmed = e.onset if e.kind == "arousal" else e.offset
        out.append(Detection(e.kind, e.onset, confirmed))
    return out


def scorable_range(span: tuple[float, float], cfg: AnalysisConfig) -> tuple[float, float]:
    """From :func:`warmup_s` after the first sample to the last data second."""
    t0, t1 = span
    return (min(t1, t0 + warmup_s(cfg)), t1)


def score_recording(
    subject: str,
    rec: Recording,
    tasks: Sequence[Interval],
    phases: Sequence[Phase],
    cfg: AnalysisConfig,
    params: ScoreParams | None = None,
) -> SubjectScore:
    """Score one replayed recording (pure): its detections, its per-second HR and its scorable
    range under ``cfg`` go to :func:`rekindle.analysis.scoring.score_subject`."""
    return score_subject(
        subject,
        detections(rec),
        tasks,
        phases,
        rec.hr_times,
        rec.hr_values,
        scorable_range(rec.span, cfg),
        params,
    )


def recording_path(root: Path, subject: str) -> Path:
    """The subject's E4 folder or recording file under ``root`` or ``root/Raw_data``."""
    for base in (root, root / "Raw_data"):
        for cand in (base / subject, base / f"{subject}.jsonl", base / f"{subject}.jsonl.gz"):
            if cand.exists():
                return cand
    raise EvaluationError(root, f"no recording for subject {subject!r} (nor under Raw_data/)")


def default_phases(labels: Path) -> Path:
    """``time_log_phases.csv`` beside the labels (the Stress-Predict layout)."""
    return labels.parent / "time_log_phases.csv"


def evaluate(
    labels: Path,
    recordings: Path,
    phases: Path | None = None,
    subjects: Sequence[str] | None = None,
    config: AnalysisConfig | None = None,
    params: ScoreParams | None = None,
) -> list[SubjectScore]:
    """Replay and score every labelled subject (or ``subjects``); pool with
    :func:`rekindle.analysis.scoring.pool`."""
    tasks = read_labels(labels)
    phases_path = phases if phases is not None else default_phases(labels)
    if phases is None and not phases_path.exists():
        raise EvaluationError(
            phases_path, "no protocol phases beside the labels: give --phases FILE"
        )
    protocol = read_phases(phases_path)
    cfg = config or AnalysisConfig()
    wanted = list(subjects) if subjects else sorted({iv.subject for iv in tasks})
    scores = []
    for subject in wanted:
        path = recording_path(recordings, subject)
        log.info("evaluating %s from %s", subject, path)
        rec = analyze_recording(path, cfg)
        scores.append(score_recording(subject, rec, tasks, protocol, cfg, params))
    return scores


# --- reporting ------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{100 * x:.0f}"


def _num(x: float | None, spec: str = ".0f") -> str:
    if x is None or not math.isfinite(x):
        return "inf" if x == math.inf else "-"
    return format(x, spec)


def _row(name: str, p: PooledScore) -> str:
    return (
        f"{name:<8} {p.hours:>5.2f} {f'{p.hits}/{p.tasks}':>6} {_pct(p.hit):>4} "
        f"{_pct(p.chance):>6} {_num(100 * p.margin):>6} {_num(p.latency_median_s):>5} "
        f"{f'{p.relax_onsets}/{p.relax_hours:.2f}h':>10} {_num(p.relax_fa_per_h, '.2f'):>6} "
        f"{_num(p.contrast, '.2f'):>8} "
        f"{f'{p.release_windows_found}/{p.release_windows}':>6} "
        f"{f'{p.releases_good}/{p.releases_good + p.releases_false}':>7} "
        f"{f'{p.hyperventilation_hits}/{p.hyperventilation_tasks}':>5} "
        f"{_pct(p.hyperventilation_chance):>6}"
    )


def format_table(
    scores: Sequence[SubjectScore],
    *,
    draws: int = MIN_DRAWS,
    seed: int = 0,
    params: ScoreParams | None = None,
) -> str:
    """Plain-text table: one row per subject (with its own chance), its tasks, and the pooled
    row. Percentages; margin in points; latency in s."""
    head = (
        f"{'subject':<8} {'hours':>5} {'hits':>6} {'hit%':>4} {'chance':>6} {'margin':>6} "
        f"{'lat_s':>5} {'relax_fa':>10} {'fa/h':>6} {'contrast':>8} {'recall':>6} "
        f"{'precis':>7} {'hv':>5} {'hv_ch%':>6}"
    )
    lines = [head, "-" * len(head)]
    for s in scores:
        lines.append(_row(s.subject, pool([s], draws=draws, seed=seed)))
        lines.append("         " + "; ".join(_task_text(t) for t in s.tasks))
    lines.append("-" * len(head))
    lines.append(_row("overall", pool(scores, draws=draws, seed=seed)))
    pre = (params or ScoreParams()).pre_s
    lines.append(
        f"hits: Stroop+interview onsets from {pre:.0f} s before the task to its "
        f"end; chance: {draws} circular shifts per subject (seed {seed}); recall: release windows "
        "found/HR-fall windows; precision: good/(good+false) releases; hv: hyperventilation"
    )
    return "\n".join(lines)


def _task_text(t: TaskScore) -> str:
    hit = f"hit {t.latency_s:.0f} s" if t.hit else "miss"
    fall = "HR -" if t.hr_fall_bpm is None else f"HR {-t.hr_fall_bpm:+.1f}"
    rel = {None: "", True: " release", False: " no release"}[t.release]
    return f"{t.task} {hit}, {fall}{rel}"


def format_episodes(scores: Sequence[SubjectScore]) -> str:
    """Plain-text list of every detection with its verdict, task and protocol phase."""
    head = (
        f"{'subject':<8} {'kind':<8} {'onset_utc':>9} {'confirmed':>9} {'verdict':<17} "
        f"{'task':<16} phase"
    )
    lines = [head, "-" * len(head)]
    for s in scores:
        for v in s.verdicts:
            onset = datetime.fromtimestamp(v.onset, UTC).strftime("%H:%M:%S")
            confirmed = datetime.fromtimestamp(v.confirmed, UTC).strftime("%H:%M:%S")
            lines.append(
                f"{s.subject:<8} {v.kind:<8} {onset:>9} {confirmed:>9} {v.verdict:<17} "
                f"{v.task or '-':<16} {v.phase or '-'}"
            )
    return "\n".join(lines)


def to_json(
    scores: Sequence[SubjectScore],
    *,
    draws: int = MIN_DRAWS,
    seed: int = 0,
    params: ScoreParams | None = None,
) -> dict[str, Any]:
    """The figures as a JSON-ready dict: ``overall`` and per subject (with its own chance and
    its tasks); ``None`` where a figure is undefined."""

    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {
            k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in d.items()
        }

    return {
        "params": {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(params or ScoreParams()).items()
        },
        "overall": pool(scores, draws=draws, seed=seed).to_dict(),
        "subjects": [
            {
                "subject": s.subject,
                "scorable": list(s.scorable),
                **pool([s], draws=draws, seed=seed).to_dict(),
                "task_scores": [clean(asdict(t)) for t in s.tasks],
            }
            for s in scores
        ],
    }


def _run(args: argparse.Namespace) -> int:
    """The command; errors follow the CLI's one policy (``rekindle.cliconfig.run_command``):
    unusable labels, phases, recordings or options are usage errors (exit 2)."""
    from rekindle.cliconfig import UsageError  # noqa: PLC0415

    if args.draws < MIN_DRAWS:
        raise UsageError(f"--draws must be >= {MIN_DRAWS}, got {args.draws}")
    try:
        params = ScoreParams(pre_s=args.pre, hr_fall_bpm=args.hr_fall)
        config = from_args(args)
        scores = evaluate(args.labels, args.recordings, args.phases, args.subject, config, params)
    except AnalysisError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        out = to_json(scores, draws=args.draws, seed=args.seed, params=params)
        if args.episodes:
            out["episodes"] = [
                {"subject": s.subject, **asdict(v)} for s in scores for v in s.verdicts
            ]
        print(json.dumps(out, indent=2, allow_nan=False))
    else:
        print(format_table(scores, draws=args.draws, seed=args.seed, params=params))
        if args.episodes:
            print()
            print(format_episodes(scores))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` to the ``rekindle`` command line."""
    p = subparsers.add_parser(
        "evaluate",
        help="score detected episodes against a labelled protocol, with chance levels",
        description="Replay labelled recordings through the analyzer and score the episodes: "
        "Stroop/interview hits with their chance level and margin, onset latency, relax false "
        "alarms per hour, contrast, release recall and precision (see docs/method.md).",
    )
    p.add_argument(
        "--labels", type=Path, required=True, help="CSV: subject,task,start_unix,end_unix"
    )
    p.add_argument(
        "--phases",
        type=Path,
        default=None,
        help="CSV: subject,phase,start_unix,end_unix (default: time_log_phases.csv beside "
        "the labels)",
    )
    p.add_argument(
        "--recordings",
        type=Path,
        required=True,
        help="folder with one E4 export folder (or recording file) per subject, named as in "
        "the labels, directly or under Raw_data/",
    )
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    p.add_argument(
        "--pre",
        type=float,
        default=ScoreParams().pre_s,
        help="s before a task's start from which an onset is a hit (instructions)",
    )
    p.add_argument(
        "--hr-fall",
        type=float,
        default=ScoreParams().hr_fall_bpm,
        help="bpm HR must fall after a task for its release window to count",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=MIN_DRAWS,
        help=f"circular-shift draws for the chance level (>= {MIN_DRAWS})",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the chance draws")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument(
        "--episodes",
        action="store_true",
        help="also list every arousal onset and release with its verdict and phase",
    )
    add_param_arguments(p)
    p.set_defaults(func=_run)
