"""Chance-corrected scoring of detected episodes against a labelled protocol (pure: numpy and the
standard library, no I/O, no clock).

One subject is scored by :func:`score_subject`; subjects are pooled (and a single subject given
its own chance level) by :func:`pool`. All times are unix seconds; every interval is half-open
``[start, end)``. The definitions (parameters in :class:`ScoreParams`, defaults in brackets):

* **hit**: a labelled Stroop or interview task (``hit_tasks``) is hit when an arousal *onset*
  lies from ``pre_s`` [90 s] before its start (the instructions are given then) to its end.
  Hyperventilation (``hyperventilation_tasks``) is scored the same way but reported apart: it is a
  respiratory challenge, not an emotional one. Other labelled tasks are ignored.
* **chance**: the hit rate when each subject's onsets are shifted by one random circular offset
  inside the subject's scorable range ``[lo, hi)`` (the part of the recording in which the
  detector can declare an episode): ``lo + (onset - lo + u) mod (hi - lo)``, ``u`` uniform in
  ``[0, hi - lo)``, one ``u`` per subject and draw (onsets outside the range wrap into it). The
  spacing of a subject's onsets is kept; only their alignment with the protocol is lost. Each
  subject's draws come from a generator seeded with ``(seed, crc32(subject))``, so a subject's
  chance is the same whichever subjects it is pooled with. **margin** = hit - chance;
  ``chance_p`` = (1 + draws with at least the observed pooled hits) / (1 + draws).
* **latency**: per hit task ``max(0, first onset in its window - task start)``; the median over
  hit tasks (pooled: over every hit task of every subject).
* **relax false alarms per hour**: arousal onsets in the later part of each relax phase
  (``relax_after_*`` phases from ``relax_skip_s`` [120 s] after their start to their end, and the
  whole ``final_relax_baseline``), per hour of those windows. Only the part inside the scorable
  range is exposure, and the hit windows of labelled tasks are taken out of it (an onset there is
  scored as a hit, never also as a false alarm; the instructions of the next task fall in the
  end of a relax phase; ``relax_minus_task_windows`` [True]).
* **contrast**: onset rate in the hit windows of Stroop/interview tasks (clipped to the scorable
  range) over the onset rate in the relax windows.
* **release recall**: a window after a Stroop or interview task counts when HR fell by at least
  ``hr_fall_bpm`` [5 bpm]: mean HR over the last ``hr_task_tail_s`` [120 s] of the task minus
  mean HR over the relax phase ``relax_after_<task>`` from ``hr_relax_skip_s`` [60 s] after its
  start to its end. Recall = share of those windows holding a release whose *confirmation* time
  lies from ``release_pre_s`` [60 s] before the task's end to the relax phase's end.
* **release precision**: good / (good + false). A release is *good* when confirmed inside such a
  window; otherwise *false* when confirmed inside a labelled task or inside a relax phase after a
  task in which HR did not fall (by the same measure); otherwise *other* (counted, not scored:
  e.g. in a relax phase whose HR could not be measured, or in the questionnaire).

Undefined figures are ``nan`` (in :meth:`PooledScore.to_dict`: ``None``): hit, chance and margin
without tasks, latency without hits, false alarms without relax exposure, recall without
HR-fall windows, precision without good or false releases, contrast without exposure on either
side or with no onset at all. Contrast is ``inf`` when relax windows have no onset but tasks
do (``None`` in ``to_dict``; the onset counts beside it tell which).
"""

from __future__ import annotations

import math
import statistics
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rekindle.analysis.errors import AnalysisError

__all__ = [
    "Detection",
    "Interval",
    "Phase",
    "PooledScore",
    "ScoreParams",
    "ScoringError",
    "SubjectScore",
    "TaskScore",
    "Verdict",
    "chance_hits",
    "circular_shift",
    "pool",
    "score_subject",
]

Span = tuple[float, float]


class ScoringError(AnalysisError):
    """Scoring inputs that cannot be scored; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"scoring {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Interval:
    """A labelled task (e.g. ``stroop``) of ``subject``."""

    subject: str
    task: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Phase:
    """A protocol phase (e.g. ``relax_after_stroop``) of ``subject``."""

    subject: str
    phase: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Detection:
    """An arousal episode (its retrospective ``onset``) or a release, with the time the detector
    confirmed (announced) it."""

    kind: Literal["arousal", "release"]
    onset: float
    confirmed: float


@dataclass(frozen=True, slots=True)
class ScoreParams:
    """Parameters of the definitions in the module docstring (seconds, bpm)."""

    pre_s: float = 90.0
    hit_tasks: tuple[str, ...] = ("stroop", "interview")
    hyperventilation_tasks: tuple[str, ...] = ("hyperventilation",)
    relax_prefix: str = "relax_after_"
    relax_skip_s: float = 120.0
    final_relax: str = "final_relax_baseline"
    hr_fall_bpm: float = 5.0
    hr_task_tail_s: float = 120.0
    hr_relax_skip_s: float = 60.0
    release_pre_s: float = 60.0
    #: Take the hit windows of labelled tasks out of the relax exposure (an onset in the next
    #: task's instructions is then a hit only). On the Stress-Predict protocol this removes
    #: about 17 % of the relax windows (the 90 s before the interview and hyperventilation).
    relax_minus_task_windows: bool = True

    def __post_init__(self) -> None:
        for name in ("pre_s", "relax_skip_s", "hr_task_tail_s", "hr_relax_skip_s", "release_pre_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ScoringError(name, f"must be a finite number >= 0, got {value!r}")
        if not math.isfinite(self.hr_fall_bpm):
            raise ScoringError("hr_fall_bpm", f"must be finite, got {self.hr_fall_bpm!r}")
        if set(self.hit_tasks) & set(self.hyperventilation_tasks):
            raise ScoringError("hit_tasks", "a task cannot be both a hit task and reported apart")


@dataclass(frozen=True, slots=True)
class TaskScore:
    """One labelled task: its hit window, whether it was hit, the latency, and its release
    window's HR fall (``None``: no relax phase after it or no HR in one of the two spans) and
    whether a release was confirmed in it (``None`` unless HR fell by ``hr_fall_bpm``)."""

    task: str
    group: Literal["hit", "hyperventilation"]
    start: float
    end: float
    window_start: float
    hit: bool
    latency_s: float | None
    hr_fall_bpm: float | None
    release: bool | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one detection was scored. Arousal: ``hit`` (``task`` names it), ``hyperventilation``,
    ``relax_false_alarm`` or ``other``. Release: ``good`` (``task``: the task before the window),
    ``false_task``, ``false_relax`` or ``other``. ``phase``: the protocol phase at the onset
    (arousal) or at the confirmation (release), ``None`` outside every phase."""

    kind: Literal["arousal", "release"]
    onset: float
    confirmed: float
    verdict: str
    task: str | None
    phase: str | None


@dataclass(frozen=True, slots=True)
class SubjectScore:
    """Everything one subject contributes to a pooled score (chance is drawn in :func:`pool`
    from ``onsets``, ``scorable`` and the tasks' windows)."""

    subject: str
    scorable: Span
    onsets: tuple[float, ...]
    tasks: tuple[TaskScore, ...]
    relax_onsets: int
    relax_s: float
    task_onsets: int
    task_s: float
    releases_good: int
    releases_false: int
    releases_other: int
    verdicts: tuple[Verdict, ...]

    @property
    def hours(self) -> float:
        return (self.scorable[1] - self.scorable[0]) / 3600.0


@dataclass(frozen=True, slots=True)
class PooledScore:
    """Pooled figures over one or more subjects (see the module docstring; ``nan`` where
    undefined). Counts: ``tasks``/``hits`` (Stroop + interview), ``release_windows`` (HR fell),
    ``windows_hr_not_fell`` and ``windows_hr_unknown`` (after Stroop/interview), hours of
    scorable recording, of relax and of task exposure."""

    subjects: int
    hours: float
    draws: int
    seed: int
    tasks: int
    hits: int
    hit: float
    chance: float
    margin: float
    chance_p: float
    latency_median_s: float
    hyperventilation_tasks: int
    hyperventilation_hits: int
    hyperventilation_hit: float
    hyperventilation_chance: float
    hyperventilation_margin: float
    arousal_onsets: int
    relax_onsets: int
    relax_hours: float
    relax_fa_per_h: float
    task_onsets: int
    task_hours: float
    contrast: float
    release_windows: int
    release_windows_found: int
    release_recall: float
    windows_hr_not_fell: int
    windows_hr_unknown: int
    releases_good: int
    releases_false: int
    releases_other: int
    release_precision: float

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON-ready values: ``nan`` and ``inf`` become ``None``."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


# --- one subject ----------------------------------------------------------------------------


def score_subject(
    subject: str,
    detections: Sequence[Detection],
    tasks: Sequence[Interval],
    phases: Sequence[Phase],
    hr_times: npt.ArrayLike,
    hr_values: npt.ArrayLike,
    scorable: Span,
    params: ScoreParams | None = None,
) -> SubjectScore:
    """Score one subject's detections (pure). ``tasks`` and ``phases`` may hold other subjects'
    rows (they are filtered); ``hr_times``/``hr_values`` are the subject's per-second HR (bpm,
    ``nan`` where unknown); ``scorable`` = ``(lo, hi)``, from the first second at which the
    detector can declare an episode to the last data second."""
    p = params or ScoreParams()
    lo, hi = float(scorable[0]), float(scorable[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and hi >= lo):
        raise ScoringError("scorable", f"needs finite lo <= hi, got {scorable!r}")
    times = np.asarray(hr_times, dtype=np.float64)
    values = np.asarray(hr_values, dtype=np.float64)
    if times.shape != values.shape or times.ndim != 1:
        raise ScoringError(
            "hr_values", f"need two 1-D arrays of one length, got {times.shape} and {values.shape}"
        )
    groups = {
        **dict.fromkeys(p.hit_tasks, "hit"),
        **dict.fromkeys(p.hyperventilation_tasks, "hyperventilation"),
    }
    mine = sorted(
        (iv for iv in tasks if iv.subject == subject and iv.task in groups), key=lambda t: t.start
    )
    my_phases = sorted((ph for ph in phases if ph.subject == subject), key=lambda ph: ph.start)
    arousal = sorted((d for d in detections if d.kind == "arousal"), key=lambda d: d.onset)
    onsets = [d.onset for d in arousal]
    releases = sorted((d for d in detections if d.kind == "release"), key=lambda d: d.confirmed)

    # Release windows: HR fall from the task's end into its relax phase.
    relax_of: dict[int, Phase] = {}
    falls: dict[int, float | None] = {}
    for i, iv in enumerate(mine):
        relax = _relax_after(iv, my_phases, p)
        if relax is None:
            falls[i] = None
            continue
        relax_of[i] = relax
        before = _mean_in(times, values, iv.end - p.hr_task_tail_s, iv.end)
        after = _mean_in(times, values, relax.start + p.hr_relax_skip_s, relax.end)
        falls[i] = None if before is None or after is None else before - after
    fell = {i for i, f in falls.items() if f is not None and f >= p.hr_fall_bpm}
    recall_windows = {
        i: (mine[i].end - p.release_pre_s, relax_of[i].end)
        for i in sorted(fell)
        if groups[mine[i].task] == "hit"
    }
    not_fell_relax = [
        (relax_of[i].start, relax_of[i].end)
        for i, f in falls.items()
        if f is not None and f < p.hr_fall_bpm
    ]
    task_spans = [(iv.start, iv.end) for iv in mine]

    verdicts: list[Verdict] = []
    good = false = other = 0
    task: str | None
    found: set[int] = set()
    for r in releases:
        where = next((i for i, (a, b) in recall_windows.items() if a <= r.confirmed < b), None)
        if where is not None:
            good += 1
            found.add(where)
            verdict, task = "good", mine[where].task
        elif _inside(r.confirmed, task_spans):
            false += 1
            verdict, task = "false_task", _task_at(r.confirmed, mine)
        elif _inside(r.confirmed, not_fell_relax):
            false += 1
            verdict, task = "false_relax", None
        else:
            other += 1
            verdict, task = "other", None
        verdicts.append(
            Verdict(
                "release", r.onset, r.confirmed, verdict, task, _phase_at(r.confirmed, my_phases)
            )
        )

    # Hits and latency.
    scored = []
    for i, iv in enumerate(mine):
        w0 = iv.start - p.pre_s
        inside = [t for t in onsets if w0 <= t < iv.end]
        scored.append(
            TaskScore(
                iv.task,
                "hit" if groups[iv.task] == "hit" else "hyperventilation",
                iv.start,
                iv.end,
                w0,
                bool(inside),
                max(0.0, inside[0] - iv.start) if inside else None,
                falls[i],
                (i in found) if i in recall_windows else None,
            )
        )

    # Exposure: hit windows of Stroop/interview, and the later parts of relax phases.
    windows_all = _union((t.window_start, t.end) for t in scored)
    task_exposure = _clip(
        _union((t.window_start, t.end) for t in scored if t.group == "hit"), lo, hi
    )
    relax_raw = [
        (ph.start + p.relax_skip_s, ph.end)
        if ph.phase.startswith(p.relax_prefix)
        else (ph.start, ph.end)
        for ph in my_phases
        if ph.phase.startswith(p.relax_prefix) or ph.phase == p.final_relax
    ]
    relax_exposure = _clip(_union(relax_raw), lo, hi)
    if p.relax_minus_task_windows:
        relax_exposure = _subtract(relax_exposure, windows_all)
    for d in arousal:
        t = d.onset
        if (task := _first_window(t, scored, "hit")) is not None:
            verdict, name = "hit", task
        elif (task := _first_window(t, scored, "hyperventilation")) is not None:
            verdict, name = "hyperventilation", task
        elif _inside(t, relax_exposure):
            verdict, name = "relax_false_alarm", None
        else:
            verdict, name = "other", None
        verdicts.append(Verdict("arousal", t, d.confirmed, verdict, name, _phase_at(t, my_phases)))
    verdicts.sort(key=lambda v: (v.onset if v.kind == "arousal" else v.confirmed, v.kind))
    return SubjectScore(
        subject,
        (lo, hi),
        tuple(onsets),
        tuple(scored),
        sum(_inside(t, relax_exposure) for t in onsets),
        _length(relax_exposure),
        sum(_inside(t, task_exposure) for t in onsets),
        _length(task_exposure),
        good,
        false,
        other,
        tuple(verdicts),
    )


def _relax_after(iv: Interval, phases: Sequence[Phase], p: ScoreParams) -> Phase | None:
    """The ``relax_after_<task>`` phase nearest to the task's end."""
    cands = [ph for ph in phases if ph.phase == p.relax_prefix + iv.task and ph.end > iv.start]
    return min(cands, key=lambda ph: abs(ph.start - iv.end), default=None)


def _mean_in(
    times: npt.NDArray[np.float64], values: npt.NDArray[np.float64], a: float, b: float
) -> float | None:
    sel = values[(times >= a) & (times < b) & np.isfinite(values)]
    return float(sel.mean()) if sel.size else None


def _first_window(t: float, tasks: Sequence[TaskScore], group: str) -> str | None:
    return next((s.task for s in tasks if s.group == group and s.window_start <= t < s.end), None)


def _task_at(t: float, tasks: Sequence[Interval]) -> str | None:
    return next((iv.task for iv in tasks if iv.start <= t < iv.end), None)


def _phase_at(t: float, phases: Sequence[Phase]) -> str | None:
    return next((ph.phase for ph in phases if ph.start <= t < ph.end), None)


def _union(spans: Iterable[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _clip(spans: Sequence[Span], lo: float, hi: float) -> list[Span]:
    return [(max(a, lo), min(b, hi)) for a, b in spans if min(b, hi) > max(a, lo)]


def _subtract(spans: Sequence[Span], minus: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    for a, b in spans:
        pieces = [(a, b)]
        for c, d in minus:
            pieces = [
                piece
                for x, y in pieces
                for piece in ((x, min(y, c)), (max(x, d), y))
                if piece[1] > piece[0]
            ]
        out.extend(pieces)
    return out


def _inside(t: float, spans: Sequence[Span]) -> bool:
    return any(a <= t < b for a, b in spans)


def _length(spans: Sequence[Span]) -> float:
    return float(sum(b - a for a, b in spans))


# --- chance and pooling ---------------------------------------------------------------------


def circular_shift(
    onsets: npt.ArrayLike, scorable: Span, offsets: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``(len(offsets), len(onsets))`` onsets shifted circularly inside ``[lo, hi)``, one offset
    per row: ``lo + (onset - lo + offset) mod (hi - lo)``. Empty rows when ``hi <= lo``."""
    on = np.asarray(onsets, dtype=np.float64).reshape(-1)
    off = np.asarray(offsets, dtype=np.float64).reshape(-1)
    lo, hi = float(scorable[0]), float(scorable[1])
    length = hi - lo
    if length <= 0:
        return np.empty((off.size, 0), dtype=np.float64)
    shifted = lo + np.mod(on[None, :] - lo + off[:, None], length)
    # Rounding in ``lo + r`` can land exactly on ``hi``; keep the range half-open.
    return np.minimum(shifted, np.nextafter(hi, lo))


def chance_hits(score: SubjectScore, *, draws: int, seed: int) -> npt.NDArray[np.bool_]:
    """``(draws, len(score.tasks))``: whether each task's window holds a shifted onset in each
    draw. The offsets come from ``default_rng((seed, crc32(subject)))``."""
    if draws < 1:
        raise ScoringError("draws", f"must be >= 1, got {draws}")
    lo, hi = score.scorable
    rng = np.random.default_rng((seed, zlib.crc32(score.subject.encode("utf-8"))))
    offsets = rng.uniform(0.0, hi - lo, size=draws) if hi > lo else np.zeros(draws)
    shifted = circular_shift(score.onsets, score.scorable, offsets)  # (draws, n)
    w0 = np.array([t.window_start for t in score.tasks], dtype=np.float64)
    w1 = np.array([t.end for t in score.tasks], dtype=np.float64)
    s = shifted[:, :, None]
    return np.asarray(((s >= w0) & (s < w1)).any(axis=1), dtype=np.bool_)


def pool(scores: Sequence[SubjectScore], *, draws: int = 200, seed: int = 0) -> PooledScore:
    """Pool subjects (one subject gives its own figures with its own chance). Chance: per draw,
    the hits of every subject's shifted onsets are summed, then averaged over draws."""
    if draws < 1:
        raise ScoringError("draws", f"must be >= 1, got {draws}")
    groups = {g: _Tally(draws) for g in ("hit", "hyperventilation")}
    for s in scores:
        if not s.tasks:
            continue
        drawn = chance_hits(s, draws=draws, seed=seed)  # one draw matrix for both groups
        for group, tally in groups.items():
            cols = [j for j, t in enumerate(s.tasks) if t.group == group]
            tally.n += len(cols)
            tally.hits += sum(s.tasks[j].hit for j in cols)
            tally.per_draw += drawn[:, cols].sum(axis=1)

    n, hits, per_draw = groups["hit"].n, groups["hit"].hits, groups["hit"].per_draw
    hit = hits / n if n else math.nan
    chance = float(per_draw.mean()) / n if n else math.nan
    chance_p = (1 + int((per_draw >= hits).sum())) / (1 + draws) if n else math.nan
    hn, hh, hdraw = (
        groups["hyperventilation"].n,
        groups["hyperventilation"].hits,
        groups["hyperventilation"].per_draw,
    )
    h_hit = hh / hn if hn else math.nan
    h_chance = float(hdraw.mean()) / hn if hn else math.nan

    hit_tasks = [t for s in scores for t in s.tasks if t.group == "hit"]
    latencies = [t.latency_s for t in hit_tasks if t.latency_s is not None]
    relax_onsets = sum(s.relax_onsets for s in scores)
    relax_h = sum(s.relax_s for s in scores) / 3600.0
    task_onsets = sum(s.task_onsets for s in scores)
    task_h = sum(s.task_s for s in scores) / 3600.0
    windows = [t for t in hit_tasks if t.release is not None]
    found = sum(bool(t.release) for t in windows)
    good = sum(s.releases_good for s in scores)
    false = sum(s.releases_false for s in scores)
    return PooledScore(
        subjects=len(scores),
        hours=sum(s.hours for s in scores),
        draws=draws,
        seed=seed,
        tasks=n,
        hits=hits,
        hit=hit,
        chance=chance,
        margin=hit - chance,
        chance_p=chance_p,
        latency_median_s=float(statistics.median(latencies)) if latencies else math.nan,
        hyperventilation_tasks=hn,
        hyperventilation_hits=hh,
        hyperventilation_hit=h_hit,
        hyperventilation_chance=h_chance,
        hyperventilation_margin=h_hit - h_chance,
        arousal_onsets=sum(len(s.onsets) for s in scores),
        relax_onsets=relax_onsets,
        relax_hours=relax_h,
        relax_fa_per_h=relax_onsets / relax_h if relax_h > 0 else math.nan,
        task_onsets=task_onsets,
        task_hours=task_h,
        contrast=_contrast(task_onsets, task_h, relax_onsets, relax_h),
        release_windows=len(windows),
        release_windows_found=found,
        release_recall=found / len(windows) if windows else math.nan,
        windows_hr_not_fell=sum(t.hr_fall_bpm is not None and t.release is None for t in hit_tasks),
        windows_hr_unknown=sum(t.hr_fall_bpm is None for t in hit_tasks),
        releases_good=good,
        releases_false=false,
        releases_other=sum(s.releases_other for s in scores),
        release_precision=good / (good + false) if good + false else math.nan,
    )


class _Tally:
    """Tasks, observed hits and hits per draw of one group while pooling."""

    __slots__ = ("hits", "n", "per_draw")

    def __init__(self, draws: int) -> None:
        self.n = 0
        self.hits = 0
        self.per_draw = np.zeros(draws, dtype=np.int64)


def _contrast(task_n: int, task_h: float, relax_n: int, relax_h: float) -> float:
    if task_h <= 0 or relax_h <= 0 or task_n + relax_n == 0:
        return math.nan
    if relax_n == 0:
        return math.inf
    return (task_n / task_h) / (relax_n / relax_h)
