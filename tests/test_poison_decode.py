"""Poison-proof decoding: bounded work per payload, precise errors, no exception but ours.

The decoder is fuzzed directly (10,000 cases in a few seconds); ``test_poison_service.py`` sends
a representative share of the same cases through a real broker into the service.
"""

from __future__ import annotations

import json
import pickle
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle import contract
from rekindle.analysis import points
from rekindle.analysis.core import FeatureRow
from rekindle.analysis.pipeline import SessionPipeline
from rekindle.contract import ContractError, check_nesting, decode, encode
from tests.fuzz_payloads import STALLING, fuzz_cases

NOW = 1_700_000_000.0
EDA = "rekindle/v1/a/b/eda"


@pytest.mark.parametrize(("name", "stream", "payload"), STALLING, ids=[s[0] for s in STALLING])
def test_the_six_stalling_payloads_are_rejected_quickly(
    name: str, stream: str, payload: bytes
) -> None:
    started = time.perf_counter()
    with pytest.raises(ContractError) as info:
        decode(f"rekindle/v1/a/b/{stream}", payload, now=NOW)
    assert time.perf_counter() - started < 0.5, name
    assert info.value.reason
    assert len(str(info.value)) < 400


def test_nesting_limit_counts_only_structure() -> None:
    check_nesting(b"[" * 8 + b"]" * 8)
    check_nesting(b'{"values":["[[[[[[[[[[[[[[", "\\"[[[[[[[[[[[[["]}')  # brackets in strings
    check_nesting(json.dumps({"values": [[0.1, 0.2, 0.3]] * 4096}).encode())
    for deep in (b"[" * 9 + b"]" * 9, b"[" * 100_000, b'{"a":' * 20 + b"1" + b"}" * 20):
        with pytest.raises(ContractError, match="nested deeper than 8"):
            check_nesting(deep)


def test_unterminated_escaped_string_is_linear() -> None:
    # Each quote after a backslash would restart a naive string scan: quadratic without the
    # possessive pattern. 240 KB must take milliseconds.
    hostile = b'"' + b'\\"[' * 80_000
    started = time.perf_counter()
    with pytest.raises(ContractError):
        decode(EDA, hostile, now=NOW)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"seq": 2**62}, "seq", "outside [0, 9007199254740991]"),
        ({"seq": 10**400}, "seq", "an integer of 401 digits"),
        ({"t0": 10**400}, "t0", "too large"),
        ({"fs": 10**400}, "fs", "too large"),
        ({"values": [10**400]}, "values[0]", "too large"),
        ({"values": ["NaN"]}, "values[0]", "expected a number, got str"),
        ({"t0": "NaN"}, "t0", "expected a number, got str"),
        ({"device": "e4\n"}, "device", "control characters"),
        ({"device": "e\u00e9"}, "device", "must be 1-64 characters of A-Z"),
        ({"run": "r\u0000"}, "run", "control characters"),
        ({"t0": NOW - 1e4, "fs": 0.01, "values": [0.5] * 40}, "fs", "span at most 300 s"),
        ({"t0": ..., "fs": ..., "t": [NOW - 400, NOW], "values": [1, 2]}, "t", "span 400 s"),
    ],
)
def test_numbers_and_strings_are_bounded(
    fields: dict[str, object], field: str, reason: str
) -> None:
    body = {"v": 1, "device": "e4", "seq": 1, "t0": NOW - 10, "fs": 4.0, "values": [0.5]}
    body.update(fields)
    body = {k: v for k, v in body.items() if v is not ...}
    with pytest.raises(ContractError) as info:
        decode(EDA, json.dumps(body).encode(), now=NOW)
    assert info.value.field == field
    assert reason in info.value.reason


def test_topic_ids_match_whole_levels() -> None:
    with pytest.raises(ContractError) as info:  # ``$`` would have let a trailing newline in
        decode("rekindle/v1/a/b\n/eda", b"{}", now=NOW)
    assert info.value.field == "topic.session"


def test_status_rssi_and_marker_text_are_bounded() -> None:
    status = {"v": 1, "device": "h10", "state": "online", "t": NOW, "rssi": 2**70}
    with pytest.raises(ContractError, match="outside"):
        decode("rekindle/v1/a/b/status/h10", json.dumps(status).encode(), now=NOW)
    for text in ("two\nlines", "\ud800"):
        marker = {"v": 1, "device": "n", "seq": 0, "t": [NOW], "values": [text]}
        with pytest.raises(ContractError) as info:
            decode("rekindle/v1/a/b/marker", json.dumps(marker).encode(), now=NOW)
        assert info.value.field == "values[0]"


def test_error_text_is_bounded_even_for_huge_names() -> None:
    body = {"v": 1, "device": "e4", "seq": 1, "t0": NOW, "fs": 4.0, "values": [1.0]}
    body["k" * 100_000] = 1
    with pytest.raises(ContractError) as info:
        decode(EDA, json.dumps(body).encode(), now=NOW)
    assert len(info.value.field) <= contract.MAX_FIELD_CHARS
    assert info.value.reason == "unknown field"


def test_seq_jump_does_not_turn_later_messages_into_duplicates() -> None:
    tracker = contract.SeqTracker()

    def msg(seq: int) -> contract.SampleMessage:
        return contract.samples("c", "s", "hr", "h", seq, [60.0], t0=NOW, fs=1.0)

    assert tracker.check(msg(5)) == (True, 0)
    assert tracker.check(msg(2**52)) == (True, 0)  # accepted, position kept
    assert tracker.check(msg(2**52)) == (False, 0)  # the same jumped message again
    assert tracker.check(msg(6)) == (True, 0)  # the stream goes on
    assert tracker.check(msg(6)) == (False, 0)
    assert tracker.jumps == 1
    # a publisher that really renumbered: two messages in a row from the new value
    assert tracker.check(msg(10**12)) == (True, 0)
    assert tracker.check(msg(10**12 + 1)) == (True, 0)
    assert tracker.check(msg(7)) == (False, 0)
    assert tracker.check(msg(10**12 + 3)) == (True, 1)


def test_fuzzed_payloads_raise_only_contract_errors_quickly() -> None:
    """10,000 fuzzed messages: each decodes to a message that round-trips and gives clean line
    protocol, or raises ContractError with a field and a reason; none takes a second."""
    counts = {"valid": 0, "invalid": 0}
    slowest = 0.0
    errors: list[tuple[str, ContractError]] = []
    for kind, topic, payload in fuzz_cases(10_000, seed=10, now=NOW):
        started = time.perf_counter()
        try:
            msg = decode(topic, payload, now=NOW)
        except ContractError as err:
            counts["invalid"] += 1
            errors.append((kind, err))
        else:
            counts["valid"] += 1
            assert decode(*encode(msg), now=NOW) == msg, kind
            for line in points.message_lines(msg):
                assert "\n" not in line
                line.encode("utf-8")
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 1.0
    for kind, error in errors:
        assert error.field, kind
        assert error.reason, kind
        assert len(str(error)) < 400, (kind, str(error)[:200])
    assert counts["invalid"] > 8_000  # the generator mostly breaks things
    assert counts["valid"] > 50  # and sometimes produces valid messages by chance


def test_time_jump_splits_the_analysis_instead_of_materialising_the_silence() -> None:
    """200,000 s between two messages: bounded work, every raw sample stored, analysis goes on
    in a new segment (module docstring of services/analysis/pipeline.py)."""
    pipeline = SessionPipeline("c", "s")
    start = NOW - 300_000

    def eda(seq: int, t0: float) -> contract.SampleMessage:
        return contract.samples(
            "c", "s", "eda", "e4", seq, [1.0 + 0.01 * (seq % 7)] * 4, t0=t0, fs=4.0
        )

    lines = rows = 0
    slowest = 0.0
    times = [start + k for k in range(120)] + [start + 200_000 + k for k in range(120)]
    for seq, t0 in enumerate(times):
        began = time.perf_counter()
        out = pipeline.handle(eda(seq, t0))
        slowest = max(slowest, time.perf_counter() - began)
        lines += sum(line.startswith("signal,") for line in out.lines)
        rows += sum(isinstance(e, FeatureRow) for e in out.events)
    rows += sum(isinstance(e, FeatureRow) for e in pipeline.finish().events)
    assert slowest < 1.0
    assert lines == 240 * 4
    assert pipeline.segments_split == 1
    assert 200 <= rows <= 250  # about one per data second, none for the silence


def test_a_message_spanning_a_long_silence_is_split() -> None:
    pipeline = SessionPipeline("c", "s")
    t = [NOW - 100_000 + k for k in range(30)] + [NOW - 50 + k for k in range(30)]
    msg = contract.samples("c", "s", "hr", "h10", 0, [60.0] * 60, t=t)
    began = time.perf_counter()
    out = pipeline.handle(msg)
    out.extend(pipeline.finish())
    assert time.perf_counter() - began < 1.0
    assert pipeline.segments_split == 1
    assert sum(isinstance(e, FeatureRow) for e in out.events) < 100


_ENTRY = st.one_of(
    st.floats(allow_nan=False),
    st.integers(-(10**400), 10**400),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.lists(st.floats(-40, 40), max_size=4),
)


@given(raw=st.lists(_ENTRY, max_size=30), stream=st.sampled_from(["eda", "hr", "acc"]))
def test_fast_number_path_accepts_exactly_what_the_per_entry_path_accepts(
    raw: list[object], stream: contract.SampleStream
) -> None:
    """The C-speed path is only a shortcut: same values, same errors as entry by entry."""
    body = {"v": 1, "device": "e4", "seq": 1, "t0": NOW - 100, "fs": 4.0, "values": raw}
    payload = json.dumps(body).encode()
    topic = f"rekindle/v1/a/b/{stream}"
    low, high = contract.PHYSICAL_RANGE[stream]

    def slow() -> object:
        if stream == "acc":
            out = []
            for i, item in enumerate(raw):
                if not isinstance(item, list) or len(item) != 3:
                    raise ContractError(f"values[{i}]", "acc samples are [x, y, z] triples")
                out.append(
                    tuple(contract._in_range(contract._number(c, "v"), stream, "v") for c in item)
                )
            return tuple(out)
        return tuple(contract._in_range(contract._number(x, "v"), stream, "v") for x in raw)

    fast = (contract._fast_triples if stream == "acc" else contract._fast_floats)(raw, low, high)
    try:
        expected = slow()
    except ContractError:
        assert fast is None
        with pytest.raises(ContractError):
            decode(topic, payload, now=NOW)
    else:
        assert decode(topic, payload, now=NOW).values == expected  # type: ignore[union-attr]
        if fast is not None:
            assert fast == expected


def test_state_pickled_before_the_jump_rules_still_works() -> None:
    """A checkpoint from before these fields existed restores to working objects (otherwise
    every message of a restored session would fail)."""
    old_tracker = contract.SeqTracker.__new__(contract.SeqTracker)
    old_tracker.__setstate__((None, {"_last": {("c", "s", "h", "hr", None): 3}}))
    msg = contract.samples("c", "s", "hr", "h", 4, [60.0], t0=NOW, fs=1.0)
    assert old_tracker.check(msg) == (True, 0)
    assert pickle.loads(pickle.dumps(old_tracker)).check(msg) == (False, 0)

    pipeline = SessionPipeline("c", "s")
    for name in ("max_silence_s", "latest", "segments_split"):
        delattr(pipeline, name)  # as unpickled from an older checkpoint
    restored = pickle.loads(pickle.dumps(pipeline))
    restored.handle(contract.samples("c", "s", "eda", "e4", 0, [1.0] * 4, t0=NOW, fs=4.0))
    assert restored.latest == pytest.approx(NOW + 0.75)
