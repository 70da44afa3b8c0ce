"""The raw-sample fast path of the line-protocol encoder writes exactly what the general
encoder (``points.line``, one field dict per sample) writes, byte for byte."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from rekindle import contract
from rekindle.analysis import points

IDS = st.text(alphabet="ab,= \\\"'z09._-", min_size=1, max_size=8)
#: finite and not (NaN, +-inf), Python floats, ints and bools: the fast path takes the
#: first, the general path the others
VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e3, max_value=1e3),
    st.integers(-5, 5),
    st.booleans(),
)
COMPONENTS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-16, 16))


def general(msg: contract.SampleMessage) -> list[str]:
    """What ``message_lines`` wrote before the fast path: one ``points.line`` per sample."""
    tags = {"site": msg.site, "session": msg.session, "device": msg.device, "stream": msg.stream}
    out = []
    values: Sequence[float | tuple[float, float, float]] = msg.values
    for ns, value in zip(msg.times_ns(), values, strict=True):
        if isinstance(value, tuple):
            x, y, z = value
            fields: dict[str, points.FieldValue | None] = {
                "value": math.sqrt(x * x + y * y + z * z),
                "x": x,
                "y": y,
                "z": z,
            }
        else:
            fields = {"value": value}
        line = points.line("signal", tags, fields, ns)
        if line is not None:
            out.append(line)
    return out


@settings(max_examples=300, deadline=None)
@given(
    site=IDS,
    session=IDS,
    device=IDS,
    values=st.lists(VALUES, max_size=12),
    t0=st.floats(1e9, 2e9),
    fs=st.sampled_from([1.0, 4.0, 32.0, 64.0, 0.5]),
    irregular=st.booleans(),
)
def test_scalar_samples_equal_the_general_encoder(
    site: str,
    session: str,
    device: str,
    values: list[float],
    t0: float,
    fs: float,
    irregular: bool,
) -> None:
    times = tuple(t0 + i * 0.37 for i in range(len(values))) if irregular else None
    msg = contract.SampleMessage(
        site,
        session,
        "eda",
        device,
        0,
        tuple(values),
        None if irregular else t0,
        None if irregular else fs,
        times,
    )
    assert points.message_lines(msg) == general(msg)


@settings(max_examples=300, deadline=None)
@given(
    device=IDS,
    values=st.lists(st.tuples(COMPONENTS, COMPONENTS, COMPONENTS), max_size=10),
    huge=st.booleans(),
)
def test_acc_samples_equal_the_general_encoder(
    device: str, values: list[tuple[float, float, float]], huge: bool
) -> None:
    if huge and values:  # a magnitude that overflows although every component is finite
        values[0] = (1e200, 1.0, -1e200)
    msg = contract.SampleMessage(
        "clinic", "S1", "acc", device, 3, tuple(values), 1.7e9 + 0.123, 32.0, None
    )
    assert points.message_lines(msg) == general(msg)


def test_a_typical_message_takes_the_fast_path_and_reads_as_before() -> None:
    msg = contract.samples(
        "clinic", "S 1", "eda", "wrist,1", 7, [0.5, 1.25, 2.0], t0=1_700_000_000.0, fs=4.0
    )
    tags = "signal,device=wrist\\,1,session=S\\ 1,site=clinic,stream=eda"
    assert points.message_lines(msg) == [
        f"{tags} value=0.5 1700000000000000000",
        f"{tags} value=1.25 1700000000250000000",
        f"{tags} value=2.0 1700000000500000000",
    ]
