"""CPU the live service spends per session-hour on its own work, before and after the cheaper
raw-sample line protocol, in the same run.

One simulated session-hour (the project's simulator: HR 1 Hz, RR, EDA 4 Hz, plus an 8-Hz
wrist accelerometer as in ``benchmarks/live_load.py``) is encoded as the wire messages a
publisher sends, then timed stage by stage, as the service's worker runs them:

* **decode**: ``contract.decode`` of every payload;
* **raw lines**: the ``signal`` lines of every sample, *before* = the general encoder
  (``points.line`` with one field dict per sample, what ``message_lines`` did), *after* =
  ``points.message_lines`` (tag set once per stream, ``repr`` per float; byte-identical,
  checked here and in ``tests/test_points_samples.py``);
* **pipeline**: ``SessionPipeline.handle`` (raw lines, the analysis core, the event lines).

Prints CPU-s per session-hour per stage and the totals before/after (decode + raw lines +
the rest of the pipeline), best of ``--repeat`` runs. The I/O around it (MQTT, HTTP, acks)
is what ``benchmarks/live_load.py`` measures. Run: ``.venv/bin/python -m benchmarks.service_cost``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks.common import START, simulated_wire
from rekindle import contract
from rekindle.analysis import points
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.ingest.sources.simulator import SimulationScript

HOUR = 3600.0


def session_hour(acc_hz: float) -> list[tuple[str, bytes]]:
    """The (topic, payload) of every message of one simulated session-hour, in publish order."""
    wire = simulated_wire(SimulationScript(duration=HOUR), acc_hz, "bench", "S1")
    return [(topic, payload) for _chunk, topic, payload in wire]


def general_lines(msg: contract.Message) -> list[str]:
    """The raw lines as ``message_lines`` wrote them before: ``points.line`` per sample."""
    if not isinstance(msg, contract.SampleMessage):
        return points.message_lines(msg)
    tags = {"site": msg.site, "session": msg.session, "device": msg.device, "stream": msg.stream}
    out = []
    values: Sequence[float | tuple[float, float, float]] = msg.values
    for ns, value in zip(msg.times_ns(), values, strict=True):
        fields: dict[str, points.FieldValue | None]
        if isinstance(value, tuple):
            x, y, z = value
            fields = {"value": math.sqrt(x * x + y * y + z * z), "x": x, "y": y, "z": z}
        else:
            fields = {"value": value}
        line = points.line("signal", tags, fields, ns)
        if line is not None:
            out.append(line)
    return out


def cpu(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        started = time.process_time()
        fn()
        best = min(best, time.process_time() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acc-hz", type=float, default=8.0, help="ACC rate (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N (default 3)")
    args = parser.parse_args(argv)
    wire = session_hour(args.acc_hz)
    now = START + HOUR + 60
    messages = [contract.decode(topic, payload, now=now) for topic, payload in wire]
    old = [line for m in messages for line in general_lines(m)]
    new = [line for m in messages for line in points.message_lines(m)]
    if old != new:
        print("raw lines differ between the general encoder and message_lines", file=sys.stderr)
        return 1
    decode = cpu(lambda: [contract.decode(t, p, now=now) for t, p in wire], args.repeat)
    lines_before = cpu(lambda: [general_lines(m) for m in messages], args.repeat)
    lines_after = cpu(lambda: [points.message_lines(m) for m in messages], args.repeat)

    def pipeline() -> None:
        p = SessionPipeline("bench", "S1")
        for m in messages:
            p.handle(m)
        p.finish()

    whole = cpu(pipeline, args.repeat)
    rest = whole - lines_after
    print(
        f"one session-hour: {len(wire)} messages, {len(new)} raw lines, ACC {args.acc_hz:g} Hz "
        f"(CPU-s per session-hour, best of {args.repeat})"
    )
    print(f"decode                      {decode:6.3f}")
    print(f"raw lines, general encoder  {lines_before:6.3f}  (before)")
    print(f"raw lines, message_lines    {lines_after:6.3f}  (after, byte-identical)")
    print(f"pipeline without raw lines  {rest:6.3f}  (core + event lines)")
    before = decode + lines_before + rest
    after = decode + lines_after + rest
    print(f"total before {before:.3f}  after {after:.3f}  ratio {before / after:.2f}x")
    print(f"raw_lines_speedup: {lines_before / lines_after:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
