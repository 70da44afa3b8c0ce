"""Wire contract v1: encoding round-trips and precise rejection of bad payloads."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rekindle import contract
from rekindle.contract import ContractError, decode, encode

NOW = 1_700_000_000.0
EDA_TOPIC = "rekindle/v1/clinic/s1/eda"


def payload(**fields: object) -> bytes:
    base: dict[str, object] = {
        "v": 1,
        "device": "e4",
        "seq": 3,
        "t0": NOW - 10,
        "fs": 4.0,
        "values": [0.5, 0.6],
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_regular_round_trip() -> None:
    msg = contract.samples("clinic", "s1", "eda", "e4", 7, [0.25, 0.5], t0=NOW, fs=4.0, run="r1")
    topic, body = encode(msg)
    assert topic == EDA_TOPIC
    assert decode(topic, body, now=NOW) == msg
    assert msg.times_ns() == [round(NOW * 1e9), round(NOW * 1e9) + 250_000_000]


def test_irregular_acc_marker_status_gap_round_trip() -> None:
    msgs: list[contract.Message] = [
        contract.samples("c", "s", "rr", "h10", 0, [812.0, 790.5], t=[NOW, NOW + 0.8]),
        contract.samples("c", "s", "acc", "h10", 1, [(0.0, 0.1, 1.0)], t0=NOW, fs=25.0),
        contract.MarkerMessage("c", "s", "nurse", 2, (NOW,), ("tears",)),
        contract.StatusMessage("c", "s", "h10", "online", NOW, battery=80, rssi=-60),
        contract.GapMessage("c", "s", "h10", 4, "hr", NOW - 5, NOW),
    ]
    for msg in msgs:
        topic, body = encode(msg)
        assert decode(topic, body, now=NOW) == msg
    assert encode(msgs[3])[0] == "rekindle/v1/c/s/status/h10"


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        (b"not json", "payload", "not JSON"),
        (b"\xff\xfe", "payload", "not UTF-8"),
        (b"[1, 2]", "payload", "JSON object"),
        (payload(v=2), "v", "unsupported version"),
        (payload(v=...), "v", "missing"),
        (payload(seq=...), "seq", "missing"),
        (payload(extra=1), "extra", "unknown field"),
        (payload(seq="3"), "seq", "integer"),
        (payload(values="0.5"), "values", "list"),
        (payload(values=[0.5, "x"]), "values[1]", "number"),
        (payload(values=[0.5, True]), "values[1]", "number"),
        (
            b'{"v":1,"device":"e4","seq":1,"t0":1699999990,"fs":4,"values":[NaN]}',
            "payload",
            "non-finite",
        ),
        (
            b'{"v":1,"device":"e4","seq":1,"t0":1699999990,"fs":4,"values":[Infinity]}',
            "payload",
            "non-finite",
        ),
        (payload(values=[-1.0]), "values[0]", "physical range"),
        (payload(values=[150.0]), "values[0]", "physical range"),
        (payload(t0=NOW + 86400), "t0", "future"),
        (payload(t0=12.0), "t0", "before 2000"),
        (payload(fs=0), "fs", "outside"),
        (payload(device="bad device!"), "device", "characters"),
        (payload(values=[0.1] * 5000), "values", "limit"),
        (payload(t=[NOW]), "t", "unknown field"),
    ],
)
def test_rejections_name_the_field(body: bytes, field: str, reason_part: str) -> None:
    with pytest.raises(ContractError) as info:
        decode(EDA_TOPIC, body, now=NOW)
    assert info.value.field == field
    assert reason_part in info.value.reason


def test_rejects_huge_payload_before_parsing() -> None:
    with pytest.raises(ContractError, match="exceed the limit") as info:
        decode(EDA_TOPIC, b"[" + b"1," * 600_000 + b"1]", now=NOW)
    assert info.value.field == "payload"


@pytest.mark.parametrize(
    ("topic", "field"),
    [
        ("rekindle/v1/clinic/s1/heartbeat", "topic.stream"),
        ("rekindle/v2/clinic/s1/eda", "topic"),
        ("rekindle/v1/clinic/eda", "topic"),
        ("rekindle/v1/cl inic/s1/eda", "topic.site"),
        ("rekindle/v1/clinic/s1/status", "topic"),
    ],
)
def test_bad_topics(topic: str, field: str) -> None:
    with pytest.raises(ContractError) as info:
        decode(topic, payload(), now=NOW)
    assert info.value.field == field


def test_rr_refuses_regular_form() -> None:
    with pytest.raises(ContractError, match="per-sample times"):
        decode("rekindle/v1/c/s/rr", payload(values=[800.0]), now=NOW)


def test_status_device_must_match_topic() -> None:
    body = json.dumps({"v": 1, "device": "a", "state": "online", "t": NOW}).encode()
    with pytest.raises(ContractError, match="differs from the topic"):
        decode("rekindle/v1/c/s/status/b", body, now=NOW)


def test_seq_tracker_drops_duplicates_and_counts_gaps() -> None:
    tracker = contract.SeqTracker()

    def msg(seq: int, run: str | None = "a") -> contract.SampleMessage:
        return contract.samples("c", "s", "eda", "e4", seq, [1.0], t0=NOW, fs=4.0, run=run)

    assert tracker.check(msg(0)) == (True, 0)
    assert tracker.check(msg(0)) == (False, 0)
    assert tracker.check(msg(3)) == (True, 2)
    assert tracker.check(msg(2)) == (False, 0)
    assert tracker.check(msg(0, run="b")) == (True, 0)  # a restarted publisher


def test_deadletter_topic() -> None:
    assert contract.deadletter_topic(EDA_TOPIC) == "rekindle/v1/deadletter/clinic/s1/eda"
    assert contract.deadletter_topic("other/#") == "rekindle/v1/deadletter/other/_"


@given(
    values=st.lists(st.floats(0.0, 100.0, allow_nan=False), min_size=1, max_size=50),
    fs=st.floats(0.5, 1000.0),
    t0=st.floats(1.0e9, 1.7e9),
)
def test_any_valid_eda_message_round_trips(values: list[float], fs: float, t0: float) -> None:
    msg = contract.samples("c", "s", "eda", "d", 0, values, t0=t0, fs=fs)
    topic, body = encode(msg)
    assert decode(topic, body, now=NOW) == msg
