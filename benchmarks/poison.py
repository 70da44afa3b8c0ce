"""Cost of poison-proofing: the decoder's guards on ordinary messages, hostile payloads, and the
time-jump rule against materialising every second of a silence.

* **decode**: microseconds per ``contract.decode`` of ordinary 1-s messages (EDA 4 Hz, HR, RR,
  ACC 32 Hz and 1 kHz), and how much of it is the nesting check on the raw bytes
  (``contract.check_nesting``), which runs before ``json.loads``; and the same decode with the
  C-speed number checks switched off (every value checked entry by entry, as before), with
  the ratio.
* **hostile**: milliseconds to reject each of the six payloads that used to stop the worker
  (issue 10) and a few other hostile ones (1 MB, deep nesting inside a valid message).
* **time jump**: one session with 2 min of EDA, a 200,000-s silence, and 2 min more, through
  :class:`SessionPipeline` with the silence rule (``MAX_SILENCE_S``) and the naive way (no
  rule: every second in between is closed), with the feature rows each produces and the ratio.
* **gap flood**: an hour of EDA with 20 ``gap`` messages per second (72,000 gaps, valid but
  hostile), with the analyzer's gap index and with the naive check of every gap per second.

Run: ``.venv/bin/python benchmarks/poison.py``
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from functools import partial

from rekindle import contract
from rekindle.analysis.core import FeatureRow, SessionAnalyzer
from rekindle.analysis.pipeline import MAX_SILENCE_S, SessionPipeline
from tests.fuzz_payloads import STALLING

NOW = 1_700_000_000.0


def _per_call(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best


def _ordinary() -> list[tuple[str, str, bytes]]:
    t0 = NOW - 100
    msgs: list[tuple[str, contract.Message]] = [
        ("eda 4 Hz", contract.samples("c", "s", "eda", "e4", 1, [0.4] * 4, t0=t0, fs=4.0)),
        ("hr 1 Hz", contract.samples("c", "s", "hr", "h10", 1, [61.0], t0=t0, fs=1.0)),
        ("rr 1 beat", contract.samples("c", "s", "rr", "h10", 1, [812.0], t=[t0])),
        (
            "acc 32 Hz",
            contract.samples("c", "s", "acc", "e4", 1, [(0.01, -0.2, 0.98)] * 32, t0=t0, fs=32.0),
        ),
        (
            "acc 1 kHz",
            contract.samples(
                "c", "s", "acc", "h", 1, [(0.01, -0.2, 0.98)] * 1000, t0=t0, fs=1000.0
            ),
        ),
    ]
    return [(name, *contract.encode(msg)) for name, msg in msgs]


def _hostile() -> list[tuple[str, bytes]]:
    good = json.loads(_ordinary()[0][2])
    out = [(name, payload) for name, _stream, payload in STALLING]
    out.append(("1 MB string", json.dumps({**good, "device": "x" * 1_000_000}).encode()))
    out.append(("200 KB string", json.dumps({**good, "device": "x" * 200_000}).encode()))
    nested = json.dumps(good).replace('"values": [', '"values": [' + "[" * 50_000 + "1,", 1)
    out.append(("nested 50k in values", nested.encode()))
    out.append(("unterminated escapes", b'"' + b'\\"[' * 80_000))
    return out


def _jump(max_silence_s: float) -> tuple[float, int]:
    pipeline = SessionPipeline("c", "s", max_silence_s=max_silence_s)
    start = NOW - 300_000
    times = [start + k for k in range(120)] + [start + 200_000 + k for k in range(120)]
    rows = 0
    started = time.perf_counter()
    for seq, t0 in enumerate(times):
        msg = contract.samples(
            "c", "s", "eda", "e4", seq, [1.0 + 0.01 * (seq % 7)] * 4, t0=t0, fs=4.0
        )
        out = pipeline.handle(msg)
        rows += sum(isinstance(e, FeatureRow) for e in out.events)
    rows += sum(isinstance(e, FeatureRow) for e in pipeline.finish().events)
    return time.perf_counter() - started, rows


class _LinearGaps(SessionAnalyzer):
    """The naive gap check: every gap, every feature second."""

    def _in_gap(self, stream: str, device: str, k: int) -> bool:
        return any(
            g.stream == stream and g.device == device and g.start < k and g.end > k - 1
            for g in self._gaps
        )


def _gap_flood(naive: bool, seconds: int = 3600, per_s: int = 20) -> tuple[float, float]:
    pipeline = SessionPipeline("c", "s")
    if naive:
        pipeline.analyzer = _LinearGaps()
    t0 = NOW - 20_000
    worst = total = 0.0
    for k in range(seconds):
        for j in range(per_s):
            start = t0 + k - 0.5 + j * 0.01
            pipeline.handle(
                contract.GapMessage("c", "s", "e4", k * per_s + j, "hr", start, start + 0.005)
            )
        msg = contract.samples("c", "s", "eda", "e4", k, [1.0] * 4, t0=t0 + k, fs=4.0)
        started = time.perf_counter()
        pipeline.handle(msg)
        took = time.perf_counter() - started
        worst, total = max(worst, took), total + took
    return worst, total


def main() -> None:
    print("decode of ordinary messages (best of 5):")
    fast_floats, fast_triples = contract._fast_floats, contract._fast_triples
    for name, topic, payload in _ordinary():
        total = _per_call(partial(contract.decode, topic, payload, now=NOW), 1000)
        guard = _per_call(partial(contract.check_nesting, payload), 1000)
        contract._fast_floats = contract._fast_triples = lambda *_a: None
        try:
            per_entry = _per_call(partial(contract.decode, topic, payload, now=NOW), 1000)
        finally:
            contract._fast_floats, contract._fast_triples = fast_floats, fast_triples
        print(
            f"  {name:<10} {len(payload):>6} B  decode {total * 1e6:7.1f} us "
            f"(entry by entry {per_entry * 1e6:7.1f} us, {per_entry / total:4.1f}x)  "
            f"nesting check {guard * 1e6:6.2f} us ({guard / total:.1%})"
        )
    print("hostile payloads, time to reject:")
    for name, payload in _hostile():
        started = time.perf_counter()
        try:
            contract.decode("rekindle/v1/c/s/eda", payload, now=NOW)
        except contract.ContractError as err:
            reason = err.reason
        else:
            reason = "ACCEPTED"
        took = time.perf_counter() - started
        print(f"  {name:<28} {len(payload):>8} B  {took * 1e3:7.2f} ms  {reason[:60]}")
    rule_s, rule_rows = _jump(MAX_SILENCE_S)
    naive_s, naive_rows = _jump(math.inf)
    print("200,000-s time jump through SessionPipeline (no InfluxDB):")
    print(f"  silence rule: {rule_s:7.3f} s, {rule_rows:>7} feature rows")
    print(f"  naive:        {naive_s:7.3f} s, {naive_rows:>7} feature rows")
    print(f"time_jump_speedup_vs_naive: {naive_s / rule_s:.0f}x")
    print("gap flood: 1 h of EDA with 20 gap messages per second, per EDA message:")
    index_worst, index_total = _gap_flood(naive=False)
    naive_worst, naive_total = _gap_flood(naive=True)
    print(f"  gap index:  worst {index_worst * 1e3:8.2f} ms, total {index_total:7.2f} s")
    print(f"  every gap:  worst {naive_worst * 1e3:8.2f} ms, total {naive_total:7.2f} s")
    print(f"gap_flood_speedup_vs_naive: {naive_total / index_total:.0f}x")


if __name__ == "__main__":
    main()
