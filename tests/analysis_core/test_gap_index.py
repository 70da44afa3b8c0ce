"""The analyzer's gap index answers "is second k in a gap?" exactly as checking every gap, in
O(log n): a publisher that sends thousands of gaps cannot make each feature second slow."""

from __future__ import annotations

import pickle

from hypothesis import given
from hypothesis import strategies as st

from rekindle.analysis.core import GapInput, SessionAnalyzer

_EDGE = st.one_of(st.integers(0, 20).map(float), st.floats(0.0, 20.0))
_GAP = st.builds(
    GapInput, st.sampled_from(["eda", "hr"]), st.sampled_from(["a", "b"]), _EDGE, _EDGE
)


def _brute(gaps: list[GapInput], stream: str, device: str, k: int) -> bool:
    return any(
        g.stream == stream and g.device == device and g.start < k and g.end > k - 1 for g in gaps
    )


def _check(an: SessionAnalyzer) -> None:
    for stream in ("eda", "hr"):
        for device in ("a", "b"):
            for k in range(-1, 23):
                expected = _brute(an._gaps, stream, device, k)
                assert an._in_gap(stream, device, k) == expected, (stream, device, k)


@given(first=st.lists(_GAP, max_size=25), more=st.lists(_GAP, max_size=10), cut=_EDGE)
def test_gap_index_answers_as_every_gap_would(
    first: list[GapInput], more: list[GapInput], cut: float
) -> None:
    an = SessionAnalyzer()
    for gap in first:
        an.update(gap)
        _check(an)
    # what the analyzer's hourly pruning does: fewer gaps, a new version, a rebuilt index
    an._gaps = [g for g in an._gaps if g.end > cut]
    an._gaps_version += 1
    _check(an)
    for gap in more:
        an.update(gap)
    _check(an)
    _check(pickle.loads(pickle.dumps(an)))


def test_analyzer_pickled_without_the_index_rebuilds_it() -> None:
    an = SessionAnalyzer()
    for i in range(50):
        an.update(GapInput("eda", "a", 2.0 * i, 2.0 * i + 0.5))
    restored = pickle.loads(pickle.dumps(an))
    restored._gap_index, restored._gaps_version, restored._gaps_built = {}, 0, -1  # as of old
    assert restored._in_gap("eda", "a", 11) is True
    assert restored._in_gap("eda", "a", 12) is False
