"""``rekindle evaluate``: score detected episodes against labelled stress intervals.

Input: a labels CSV with ``subject,task,start_unix,end_unix`` (extra columns are ignored; the end
is exclusive), and a folder holding one recording per subject (an Empatica E4 export folder or a
Rekindle recording file named after the subject). Each recording is replayed through the same
streaming analyzer the live service uses, in the same 1-s chunks, and the episodes are scored by
:func:`score_subject`, a pure function.

Definitions (all parameters are flags, defaults in brackets):

* **hit**: an arousal episode overlaps the interval and starts no earlier than ``--pre`` [60 s]
  before it. Interval hit rate = hits / intervals.
* **onset latency**: onset of the first hitting episode minus the interval start (s; negative
  when the episode began in the ``--pre`` allowance). The table reports the median over hits.
* **false alarm**: an arousal episode whose onset lies outside every interval widened by
  ``--pre`` before and ``--post`` [60 s] after. Rate = false alarms / hours of recording outside
  the widened intervals, not counting the warm-up (``settle_s + baseline_s`` from the start of
  the recording) during which no episode can be declared.
* **recovery detected**: a release episode whose surge started no earlier than ``--pre`` before
  the interval and whose recovery was confirmed before the interval end plus
  ``--recovery-window`` [300 s].
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from services.analysis.core import AnalysisConfig, AnalyzerInput, Episode, SessionAnalyzer
from services.analysis.errors import AnalysisError
from services.analysis.params import add_arguments as add_param_arguments
from services.analysis.params import from_args

if TYPE_CHECKING:
    from services.ingest.sources.base import Chunk

log = logging.getLogger(__name__)


class EvaluationError(AnalysisError):
    """The labels or a recording could not be used; ``path`` names the culprit."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Interval:
    subject: str
    task: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class ScoreParams:
    pre_s: float = 60.0
    post_s: float = 60.0
    recovery_window_s: float = 300.0


@dataclass(frozen=True, slots=True)
class TaskResult:
    task: str
    hit: bool
    latency_s: float | None
    recovery: bool


@dataclass(frozen=True, slots=True)
class EpisodeVerdict:
    """One arousal episode and how it was scored: ``hit`` (of ``task``), ``allowance`` (starts in
    the --pre/--post margin of ``task`` without hitting it) or ``false_alarm``. ``phase``: the
    protocol phase at its onset, when a phases file was given."""

    onset: float
    offset: float
    peak_index: float
    signals: tuple[str, ...]
    verdict: str
    task: str | None
    phase: str | None = None


@dataclass(frozen=True, slots=True)
class SubjectScore:
    subject: str
    hours: float
    tasks: tuple[TaskResult, ...]
    arousal_episodes: int
    release_episodes: int
    false_alarms: int
    hours_outside: float
    episodes: tuple[EpisodeVerdict, ...] = ()

    @property
    def intervals(self) -> int:
        return len(self.tasks)

    @property
    def hits(self) -> int:
        return sum(t.hit for t in self.tasks)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.intervals if self.tasks else math.nan

    @property
    def latencies(self) -> list[float]:
        return [t.latency_s for t in self.tasks if t.latency_s is not None]

    @property
    def median_latency_s(self) -> float | None:
        return statistics.median(self.latencies) if self.latencies else None

    @property
    def false_alarms_per_hour(self) -> float:
        return self.false_alarms / self.hours_outside if self.hours_outside > 0 else math.nan

    @property
    def recoveries(self) -> int:
        return sum(t.recovery for t in self.tasks)


def read_labels(path: Path) -> list[Interval]:
    """Intervals from a ``subject,task,start_unix,end_unix`` CSV."""
    return _read_intervals(path, "task")


def read_phases(path: Path) -> list[Interval]:
    """Protocol phases from a ``subject,phase,start_unix,end_unix`` CSV (e.g. Stress-Predict's
    ``time_log_phases.csv``); the phase name goes into ``Interval.task``."""
    return _read_intervals(path, "phase")


def _read_intervals(path: Path, name_column: str) -> list[Interval]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise EvaluationError(path, f"cannot read: {exc}") from exc
    out = []
    for i, row in enumerate(rows, start=2):
        try:
            out.append(
                Interval(
                    row["subject"].strip(),
                    row[name_column].strip(),
                    float(row["start_unix"]),
                    float(row["end_unix"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise EvaluationError(path, f"line {i}: bad row {row!r}") from exc
    return out


def with_phases(score: SubjectScore, phases: Sequence[Interval]) -> SubjectScore:
    """``score`` with each episode's protocol phase at onset filled in (pure)."""
    mine = [ph for ph in phases if ph.subject == score.subject]
    episodes = tuple(
        replace(
            v,
            phase=next((ph.task for ph in mine if ph.start <= v.onset < ph.end), "-"),
        )
        for v in score.episodes
    )
    return replace(score, episodes=episodes)


def format_episodes(scores: Sequence[SubjectScore]) -> str:
    """Plain-text list of every arousal episode with its verdict (and phase)."""
    head = (
        f"{'subject':<8} {'onset_utc':>9} {'dur_s':>6} {'peak':>5} {'signals':<14} "
        f"{'verdict':<12} {'task':<18} phase"
    )
    lines = [head, "-" * len(head)]
    for s in scores:
        for v in s.episodes:
            clock = datetime.fromtimestamp(v.onset, UTC).strftime("%H:%M:%S")
            lines.append(
                f"{s.subject:<8} {clock:>9} {v.offset - v.onset:>6.0f} {v.peak_index:>5.0f} "
                f"{','.join(v.signals):<14} {v.verdict:<12} {v.task or '-':<18} {v.phase or '-'}"
            )
    return "\n".join(lines)


def score_subject(
    subject: str,
    episodes: Sequence[Episode],
    intervals: Sequence[Interval],
    span: tuple[float, float],
    params: ScoreParams | None = None,
) -> SubjectScore:
    """Score one subject's episodes against its labelled intervals (pure)."""
    p = params or ScoreParams()
    arousal = sorted((e for e in episodes if e.kind == "arousal"), key=lambda e: e.onset)
    release = [e for e in episodes if e.kind == "release"]
    mine = sorted((iv for iv in intervals if iv.subject == subject), key=lambda iv: iv.start)
    tasks = []
    for iv in mine:
        hitting = [e for e in arousal if _hits(e, iv, p)]
        latency = hitting[0].onset - iv.start if hitting else None
        recovered = any(
            r.onset >= iv.start - p.pre_s and r.offset <= iv.end + p.recovery_window_s
            and r.onset < iv.end
            for r in release
        )
        tasks.append(TaskResult(iv.task, bool(hitting), latency, recovered))
    widened = [(iv.start - p.pre_s, iv.end + p.post_s) for iv in mine]
    verdicts = []
    for e in arousal:
        hit = next((iv for iv in mine if _hits(e, iv, p)), None)
        near = next(
            (iv for iv, (lo, hi) in zip(mine, widened, strict=True) if lo <= e.onset < hi), None
        )
        if hit is not None:
            verdict, task = "hit", hit.task
        elif near is not None:
            verdict, task = "allowance", near.task
        else:
            verdict, task = "false_alarm", None
        verdicts.append(EpisodeVerdict(e.onset, e.offset, e.peak_index, e.signals, verdict, task))
    false_alarms = sum(v.verdict == "false_alarm" for v in verdicts)
    t0, t1 = span
    clipped = [(max(lo, t0), min(hi, t1)) for lo, hi in widened if hi > t0 and lo < t1]
    covered = _union_length(clipped)
    return SubjectScore(
        subject,
        (t1 - t0) / 3600.0,
        tuple(tasks),
        len(arousal),
        len(release),
        false_alarms,
        max(0.0, (t1 - t0 - covered) / 3600.0),
        tuple(verdicts),
    )


def _hits(e: Episode, iv: Interval, p: ScoreParams) -> bool:
    return iv.start - p.pre_s <= e.onset < iv.end and e.offset >= iv.start


def _union_length(ranges: Iterable[tuple[float, float]]) -> float:
    total = 0.0
    cur_lo = cur_hi = None
    for lo, hi in sorted(ranges):
        if cur_hi is None or lo > cur_hi:
            if cur_hi is not None and cur_lo is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = lo, hi
        else:
            cur_hi = max(cur_hi, hi)
    if cur_hi is not None and cur_lo is not None:
        total += cur_hi - cur_lo
    return total


@dataclass(frozen=True, slots=True)
class Overall:
    subjects: int
    hours: float
    intervals: int
    hits: int
    hit_rate: float
    median_latency_s: float | None
    false_alarms: int
    false_alarms_per_hour: float
    recoveries: int


def overall(scores: Sequence[SubjectScore]) -> Overall:
    """Pooled figures over subjects (latency: median of all hits; FA rate: pooled hours)."""
    lat = [x for s in scores for x in s.latencies]
    hours_out = sum(s.hours_outside for s in scores)
    intervals = sum(s.intervals for s in scores)
    hits = sum(s.hits for s in scores)
    fa = sum(s.false_alarms for s in scores)
    return Overall(
        len(scores),
        sum(s.hours for s in scores),
        intervals,
        hits,
        hits / intervals if intervals else math.nan,
        statistics.median(lat) if lat else None,
        fa,
        fa / hours_out if hours_out > 0 else math.nan,
        sum(s.recoveries for s in scores),
    )


def _fmt(x: float | None, spec: str = ".0f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def format_table(scores: Sequence[SubjectScore]) -> str:
    """Plain-text table: one row per subject, then the pooled row."""
    head = (
        f"{'subject':<8} {'hours':>5} {'hits':>6} {'hit_rate':>8} {'med_onset_s':>11} "
        f"{'false_alarms':>12} {'fa_per_h':>8} {'recovery':>8}  tasks (hit/latency s/recovery)"
    )
    lines = [head, "-" * len(head)]
    for s in scores:
        tasks = "; ".join(
            f"{t.task}: {'hit' if t.hit else 'miss'}/{_fmt(t.latency_s)}/"
            f"{'yes' if t.recovery else 'no'}"
            for t in s.tasks
        )
        lines.append(
            f"{s.subject:<8} {s.hours:>5.2f} {f'{s.hits}/{s.intervals}':>6} {s.hit_rate:>8.2f} "
            f"{_fmt(s.median_latency_s):>11} {s.false_alarms:>12} "
            f"{_fmt(s.false_alarms_per_hour, '.2f'):>8} {f'{s.recoveries}/{s.intervals}':>8}"
            f"  {tasks}"
        )
    o = overall(scores)
    lines.append("-" * len(head))
    lines.append(
        f"{'overall':<8} {o.hours:>5.2f} {f'{o.hits}/{o.intervals}':>6} {o.hit_rate:>8.2f} "
        f"{_fmt(o.median_latency_s):>11} {o.false_alarms:>12} "
        f"{_fmt(o.false_alarms_per_hour, '.2f'):>8} {f'{o.recoveries}/{o.intervals}':>8}"
    )
    return "\n".join(lines)


# --- running recordings (I/O edge) ----------------------------------------------------------


def _chunks(path: Path) -> Iterable[Chunk]:
    from services.ingest.errors import IngestError  # noqa: PLC0415
    from services.ingest.sources.base import open_source  # noqa: PLC0415

    try:
        yield from open_source(path)
    except IngestError as exc:
        raise EvaluationError(path, str(exc)) from exc


def analyzer_inputs(chunks: Iterable[Chunk]) -> Iterator[tuple[Chunk, list[AnalyzerInput]]]:
    """Each chunk with the analyzer inputs it becomes. Chunks go through the wire-contract
    message (with a per-stream sequence number) and the pipeline's conversion, so the analyzer
    sees exactly what ``rekindle analyze`` and the live service give it."""
    from services.analysis.pipeline import to_input  # noqa: PLC0415

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


def analyze_recording(
    path: Path, config: AnalysisConfig | None = None
) -> tuple[list[Episode], tuple[float, float]]:
    """Replay a recording through the streaming analyzer as the live service would (see
    :func:`analyzer_inputs`)."""
    analyzer = SessionAnalyzer(config)
    episodes: list[Episode] = []
    t_min, t_max = math.inf, -math.inf
    for chunk, items in analyzer_inputs(_chunks(path)):
        for it in items:
            episodes.extend(e for e in analyzer.update(it) if isinstance(e, Episode))
        if chunk.stream != "marker":
            t_min, t_max = min(t_min, chunk.start), max(t_max, chunk.end)
    episodes.extend(e for e in analyzer.finish() if isinstance(e, Episode))
    if not math.isfinite(t_min):
        raise EvaluationError(path, "no samples")
    return episodes, (t_min, t_max)


def _recording_path(root: Path, subject: str) -> Path:
    for cand in (root / subject, root / f"{subject}.jsonl", root / f"{subject}.jsonl.gz"):
        if cand.exists():
            return cand
    raise EvaluationError(root, f"no recording for subject {subject!r}")


def evaluate(
    labels: Path,
    recordings: Path,
    subjects: Sequence[str] | None = None,
    config: AnalysisConfig | None = None,
    params: ScoreParams | None = None,
) -> list[SubjectScore]:
    intervals = read_labels(labels)
    wanted = list(subjects) if subjects else sorted({iv.subject for iv in intervals})
    scores = []
    for subject in wanted:
        path = _recording_path(recordings, subject)
        log.info("evaluating %s from %s", subject, path)
        episodes, (t0, t1) = analyze_recording(path, config)
        # No episode can start before the baseline is complete: those minutes are not counted
        # in the false-alarm hours.
        cfg = config or AnalysisConfig()
        warmup = min(t1, t0 + cfg.settle_s + cfg.baseline_s)
        scores.append(score_subject(subject, episodes, intervals, (warmup, t1), params))
    return scores


def _run(args: argparse.Namespace) -> int:
    params = ScoreParams(args.pre, args.post, args.recovery_window)
    try:
        config = from_args(args)
        phases = read_phases(args.phases) if args.phases is not None else []
        scores = evaluate(args.labels, args.recordings, args.subject, config, params)
        scores = [with_phases(s, phases) for s in scores] if phases else scores
    except AnalysisError as exc:
        print(f"rekindle evaluate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "subjects": [
                {**asdict(s), "hit_rate": s.hit_rate, "median_latency_s": s.median_latency_s,
                 "false_alarms_per_hour": s.false_alarms_per_hour}
                for s in scores
            ],
            "overall": asdict(overall(scores)),
        }
        print(json.dumps(out, indent=2))
    else:
        print(format_table(scores))
        if args.episodes:
            print()
            print(format_episodes(scores))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``evaluate`` to the ``rekindle`` command line."""
    p = subparsers.add_parser(
        "evaluate",
        help="score detected episodes against labelled stress intervals",
        description="Score detected episodes against labelled stress intervals "
        "(see docs/method.md).",
    )
    p.add_argument(
        "--labels", type=Path, required=True, help="CSV: subject,task,start_unix,end_unix"
    )
    p.add_argument(
        "--recordings",
        type=Path,
        required=True,
        help="folder with one E4 export folder (or recording file) per subject, named as in labels",
    )
    p.add_argument("--subject", action="append", help="only this subject (repeatable)")
    p.add_argument("--pre", type=float, default=60.0, help="s before an interval still a hit")
    p.add_argument("--post", type=float, default=60.0, help="s after an interval not a false alarm")
    p.add_argument(
        "--recovery-window", type=float, default=300.0, help="s after an interval for recovery"
    )
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.add_argument(
        "--episodes",
        action="store_true",
        help="also list every arousal episode with its verdict (hit, allowance, false alarm)",
    )
    p.add_argument(
        "--phases",
        type=Path,
        default=None,
        help="CSV subject,phase,start_unix,end_unix: name the protocol phase of each episode",
    )
    add_param_arguments(p)
    p.set_defaults(func=_run)
