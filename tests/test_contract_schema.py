"""The published JSON Schema of the wire contract: valid, up to date, and never stricter than
the decoder (every payload ``decode`` accepts validates), while refusing the usual mistakes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from rekindle import contract
from tests.fuzz_payloads import fuzz_cases, valid_dicts

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "wire-contract.schema.json"
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def validators() -> dict[str, Draft202012Validator]:
    schema = contract.json_schema()
    Draft202012Validator.check_schema(schema)
    return {
        name: Draft202012Validator({**schema, "$ref": f"#/$defs/{name}"})
        for name in (*contract.SAMPLE_STREAMS, "marker", "status", "gap")
    }


def test_published_schema_is_the_code_s() -> None:
    published = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert published == contract.json_schema(), (
        "docs/wire-contract.schema.json is stale: regenerate it with "
        "python -c 'import json; from services import contract; "
        "print(json.dumps(contract.json_schema(), indent=2, ensure_ascii=False))'"
    )


def test_everything_the_decoder_accepts_validates(
    validators: dict[str, Draft202012Validator],
) -> None:
    accepted = 0
    for _kind, topic, payload in fuzz_cases(4_000, seed=12, now=NOW):
        try:
            msg = contract.decode(topic, payload, now=NOW)
        except contract.ContractError:
            continue
        accepted += 1
        errors = list(validators[msg.stream].iter_errors(json.loads(payload)))
        assert not errors, (topic, payload[:200], errors[0].message)
    for stream, obj in valid_dicts(random.Random(1), NOW):
        name = stream.split("/")[0]
        assert validators[name].is_valid(obj), (stream, obj)
        accepted += 1
    assert accepted > 20


BASE = {"v": 1, "device": "e4", "seq": 3, "t0": NOW - 10, "fs": 4.0, "values": [0.5, 0.6]}


@pytest.mark.parametrize(
    ("stream", "changes"),
    [
        ("eda", {"v": 2}),
        ("eda", {"seq": -1}),
        ("eda", {"seq": 2**62}),
        ("eda", {"seq": "3"}),
        ("eda", {"values": [0.5, "NaN"]}),
        ("eda", {"values": [250.0]}),
        ("eda", {"values": [True]}),
        ("eda", {"fs": 0}),
        ("eda", {"t0": 12.0}),
        ("eda", {"colour": "red"}),
        ("eda", {"device": "bad device!"}),
        ("eda", {"device": None}),
        ("eda", {"values": [0.5] * 5000}),
        ("rr", {}),  # rr takes only the irregular form
        ("acc", {"values": [[0.0, 1.0]]}),
        ("hr", {"t": [NOW], "values": [60.0]}),  # both forms at once
    ],
)
def test_schema_refuses_the_usual_mistakes(
    validators: dict[str, Draft202012Validator], stream: str, changes: dict[str, object]
) -> None:
    body = {**BASE, **changes}
    with pytest.raises(contract.ContractError):
        contract.decode(f"rekindle/v1/a/b/{stream}", json.dumps(body).encode(), now=NOW)
    assert not validators[stream].is_valid(body)


@pytest.mark.parametrize(
    "body",
    [
        {"v": 1, "device": "h10", "state": "asleep", "t": NOW},
        {"v": 1, "device": "h10", "state": "online", "t": NOW, "rssi": 2**70},
        {"v": 1, "device": "h10", "state": "online", "t": NOW, "battery": 101},
        {"v": 1, "device": "h10", "state": "online"},
    ],
)
def test_schema_refuses_bad_status(
    validators: dict[str, Draft202012Validator], body: dict[str, object]
) -> None:
    assert not validators["status"].is_valid(body)
