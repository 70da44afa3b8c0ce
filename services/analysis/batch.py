"""``rekindle analyze`` of one recording or a batch, optionally on several processes.

One function, :func:`analyze_file`, does a recording's whole job (read, analyse, write the
outputs); a batch runs it in worker processes (``--jobs N``) and reports each file as it
finishes. The outputs do not depend on ``jobs``: each recording is analysed on its own.
"""

from __future__ import annotations

import functools
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.errors import AnalysisError
from rekindle.ingest.errors import IngestError
from rekindle.ingest.sources.base import ReadOptions

if TYPE_CHECKING:
    from concurrent.futures import Future

    from rekindle.analysis.offline import AnalysisResult


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one recording gave: its outputs folder, or the error that stopped it."""

    source: str
    name: str
    target: Path | None = None
    episodes: int = 0
    hours: float = 0.0
    wall_s: float = 0.0
    error: str | None = None


def analyze_file(
    source: str,
    out_dir: Path,
    config: AnalysisConfig | None,
    *,
    plots: bool,
    formats: Sequence[str] = ("csv",),
    options: ReadOptions | None = None,
    metrics: bool = False,
    phases: Sequence[tuple[str, str, float, float]] = (),
    parallel_beats: bool = False,
) -> FileResult:
    """Read, analyse and write the outputs of one recording (the whole job of ``analyze``):
    the tables in ``formats``, ``summary.json``, ``report.md``, ``report.html`` and, with
    ``plots``, ``session.png`` (also embedded in the HTML report). With ``metrics``, NeuroKit2's
    interval metrics per episode, per segment between markers and per phase of ``phases``
    (``(subject, phase, start, end)``, the rows whose subject is this recording's name) go into
    ``episodes.csv``, ``segments.csv`` and the reports. ``parallel_beats``: the beats from PPG
    in a second process (``run_pipeline``), for a process that has the machine to itself."""
    from rekindle.analysis import parallel_beats as parallel  # noqa: PLC0415
    from rekindle.analysis.offline import add_metrics, run_pipeline  # noqa: PLC0415
    from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S  # noqa: PLC0415
    from rekindle.ingest.sources import open_spec  # noqa: PLC0415

    started = time.perf_counter()
    name = source
    try:
        with ExitStack() as stack:
            # (an E4 export: the child reads the PPG while this process reads the rest)
            beats = (
                parallel.start_before_reading(source, config, MAX_SPEED_MESSAGE_S)
                if parallel_beats
                else None
            )
            if beats is not None:
                stack.enter_context(beats)
            # (the regular series already in the messages run_pipeline coalesces them into)
            name, chunks = open_spec(source, options=options, message_s=MAX_SPEED_MESSAGE_S)
            result = run_pipeline(
                chunks,
                name,
                config=config,
                keep=("eda", "rr") if metrics else (),
                parallel_beats=parallel_beats,
                beats=beats,
            )
        if metrics:
            mine = [(p, a, b) for subject, p, a, b in phases if subject == name]
            add_metrics(result, config, mine)
        target = write_results(result, out_dir, formats=formats, plots=plots)
    except (IngestError, AnalysisError) as exc:
        return FileResult(source, name, error=str(exc), wall_s=time.perf_counter() - started)
    hours = ((result.end or 0.0) - (result.start or 0.0)) / 3600.0
    return FileResult(
        source, name, target, len(result.episodes), hours, time.perf_counter() - started
    )


def write_results(
    result: AnalysisResult, out_dir: Path, *, formats: Sequence[str] = ("csv",), plots: bool = True
) -> Path:
    """Everything ``rekindle analyze`` writes for one analysed recording, under
    ``out_dir/<name>``: the tables in ``formats``, ``summary.json``, ``report.md``,
    ``report.html`` and, with ``plots``, ``session.png``. Returns that folder."""
    from rekindle.analysis.offline import summary, write_outputs  # noqa: PLC0415
    from rekindle.analysis.report import (  # noqa: PLC0415
        feature_summary,
        write_html,
        write_plot,
        write_report,
    )

    info, features = summary(result), feature_summary(result)  # (once for all three files)
    target = write_outputs(result, out_dir, formats, info=info)
    plot = write_plot(result, target / "session.png") if plots else None
    plot_name = None if plot is None else plot.name
    write_report(result, target / "report.md", plot_name, info=info, features=features)
    write_html(result, target / "report.html", plot, info=info, features=features)
    return target


def run_batch(
    sources: Sequence[str],
    out_dir: Path,
    config: AnalysisConfig | None,
    *,
    plots: bool,
    jobs: int,
    formats: Sequence[str] = ("csv",),
    options: ReadOptions | None = None,
    metrics: bool = False,
    phases: Sequence[tuple[str, str, float, float]] = (),
) -> Iterator[tuple[int, FileResult]]:
    """``(index in sources, result)`` of each source as it finishes; ``jobs`` worker processes.

    Workers are started with ``spawn`` (no state of this process is inherited, which is safe
    whatever threads are running here).
    """
    job = functools.partial(
        analyze_file,
        out_dir=out_dir,
        config=config,
        plots=plots,
        formats=formats,
        metrics=metrics,
        phases=phases,
        options=options,
        # (one file at a time: its beats from PPG can use the other core)
        parallel_beats=jobs <= 1 or len(sources) <= 1,
    )
    if jobs <= 1 or len(sources) <= 1:
        for i, source in enumerate(sources):
            yield i, job(source)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait  # noqa: PLC0415

    from rekindle.analysis import plugins  # noqa: PLC0415

    context = multiprocessing.get_context("spawn")
    # (spawned workers start empty: each imports the registered detectors' modules again)
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(sources)),
        mp_context=context,
        initializer=plugins.load,
        initargs=(plugins.registered_modules(),),
    ) as pool:
        index: dict[Future[FileResult], int] = {
            pool.submit(job, source): i for i, source in enumerate(sources)
        }
        pending = set(index)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=index.__getitem__):
                yield index[future], future.result()


def progress_line(done: int, total: int, result: FileResult, width: int = 20) -> str:
    """One line per finished file: a bar, the count and that file's result. Plain text, so it
    reads the same in a terminal, a log file or a CI run."""
    filled = width * done // total
    bar = "#" * filled + "." * (width - filled)
    if result.error is not None:
        what = f"FAILED: {result.error}"
    else:
        what = (
            f"{result.episodes} episodes, {result.hours:.2f} h in {result.wall_s:.1f} s "
            f"-> {result.target}"
        )
    return f"[{bar}] {done:>{len(str(total))}}/{total} {result.name}: {what}"


def analyze_batch(
    sources: Sequence[str],
    out_dir: Path,
    config: AnalysisConfig | None,
    *,
    plots: bool,
    jobs: int,
    report: Callable[[str], None],
    formats: Sequence[str] = ("csv",),
    options: ReadOptions | None = None,
    metrics: bool = False,
    phases: Sequence[tuple[str, str, float, float]] = (),
) -> list[FileResult]:
    """Run a batch, calling ``report`` with a progress line as each file finishes; returns the
    results in the order of ``sources``."""
    results: list[FileResult | None] = [None] * len(sources)
    for done, (i, result) in enumerate(
        run_batch(
            sources,
            out_dir,
            config,
            plots=plots,
            jobs=jobs,
            formats=formats,
            metrics=metrics,
            phases=phases,
            options=options,
        ),
        start=1,
    ):
        results[i] = result
        report(progress_line(done, len(sources), result))
    return [r for r in results if r is not None]
