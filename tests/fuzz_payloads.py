"""Hostile and malformed MQTT messages for the poison-proofing tests (seeded, reproducible).

``fuzz_cases`` yields ``(kind, topic, payload)``: random bytes, truncated and mutated JSON,
deep nesting, huge numbers, NaN strings, 1 MB strings, unicode and wrong topic levels, built
from valid messages of every stream. ``STALLING`` are the six payloads of issue 10 that used to
stop the analysis worker for good.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

from rekindle import contract

#: The six payloads that stopped the worker (issue 10), as (name, stream, payload).
STALLING: tuple[tuple[str, str, bytes], ...] = (
    ("nested 5k", "eda", b"[" * 5_000 + b"]" * 5_000),
    ("nested 100k", "eda", b"[" * 100_000),
    (
        "5000-digit integer",
        "eda",
        b'{"v":1,"device":"e4","seq":1,"t0":1700000000,"fs":4,"values":[1' + b"0" * 4_999 + b"]}",
    ),
    (
        "400-digit integer in values",
        "eda",
        b'{"v":1,"device":"e4","seq":1,"t0":1700000000,"fs":4,"values":[1' + b"0" * 399 + b"]}",
    ),
    (
        "400-digit integer in t0",
        "eda",
        b'{"v":1,"device":"e4","seq":1,"t0":1' + b"0" * 399 + b',"fs":4,"values":[1]}',
    ),
    (
        "400-digit integer in fs",
        "eda",
        b'{"v":1,"device":"e4","seq":1,"t0":1700000000,"fs":1' + b"0" * 399 + b',"values":[1]}',
    ),
)


def valid_dicts(rng: random.Random, now: float) -> list[tuple[str, dict[str, object]]]:
    """One valid payload (as a dict) of each form, with its stream (or ``status/<device>``)."""
    t0 = now - rng.uniform(10, 10_000)
    return [
        (
            "eda",
            {
                "v": 1,
                "device": "e4",
                "seq": rng.randrange(1000),
                "t0": t0,
                "fs": 4.0,
                "values": [round(rng.uniform(0.1, 5), 3) for _ in range(4)],
            },
        ),
        ("hr", {"v": 1, "device": "h10", "seq": 3, "t0": t0, "fs": 1.0, "values": [61.0]}),
        ("rr", {"v": 1, "device": "h10", "seq": 9, "t": [t0, t0 + 0.8], "values": [800.0, 790]}),
        (
            "acc",
            {
                "v": 1,
                "device": "e4",
                "seq": 2,
                "t0": t0,
                "fs": 32.0,
                "values": [[0.01, -0.2, 0.98], [0.0, 0.1, 1.0]],
            },
        ),
        ("marker", {"v": 1, "device": "nurse", "seq": 0, "t": [t0], "values": ["tears"]}),
        (
            "status/h10",
            {
                "v": 1,
                "device": "h10",
                "state": "online",
                "t": t0,
                "battery": 80,
                "rssi": -60,
                "detail": "connected",
            },
        ),
        ("gap", {"v": 1, "device": "h10", "seq": 4, "stream": "rr", "start": t0, "end": t0 + 5}),
    ]


_HUGE_NUMBERS = (
    lambda r: "1" + "0" * r.randrange(20, 5_000),
    lambda r: "-" + "9" * r.randrange(20, 400),
    lambda r: f"1e{r.randrange(309, 99_999)}",
    lambda r: f"-1e{r.randrange(309, 9_999)}",
    lambda r: "1" + "0" * r.randrange(300, 2_000) + ".5",
    lambda r: "0." + "0" * r.randrange(300, 2_000) + "1",
    lambda r: str(2 ** r.randrange(53, 400)),
    lambda _r: "NaN",
    lambda _r: "Infinity",
    lambda _r: "-Infinity",
)
_STRANGE_VALUES: tuple[object, ...] = (
    "NaN",
    "nan",
    "Infinity",
    "-inf",
    "1e999",
    "",
    None,
    True,
    [],
    {},
    [1, [2]],
    "\u00e9",
    "\ud800",
    "a\nb",
    "x" * 300,
    -1,
    2**64,
    1e308,
    -0.0,
    0.1,
)
_UNICODE = ("é", "séance", "😀", "\u202e", "\u0000", "\n", "\ud800", "ﾟ", "x" * 65, "a b", "a/b")


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8", "surrogatepass")


def _topic(site: str, session: str, stream: str) -> str:
    return f"{contract.TOPIC_ROOT}/{site}/{session}/{stream}"


def fuzz_cases(
    n: int, *, seed: int, now: float, site: str = "fz", session: str = "fuzz"
) -> Iterator[tuple[str, str, bytes]]:
    """``n`` cases ``(kind, topic, payload)``; topics stay under ``rekindle/v1/{site}/``."""
    rng = random.Random(seed)
    kinds = (
        "random bytes",
        "truncated",
        "mutated",
        "deep nesting",
        "huge number",
        "strange value",
        "big string",
        "unicode",
        "wrong topic",
        "field swap",
    )
    for i in range(n):
        kind = kinds[i % len(kinds)]
        stream, obj = rng.choice(valid_dicts(rng, now))
        topic = _topic(site, session, stream)
        good = _dumps(obj)
        if kind == "random bytes":
            payload = rng.randbytes(rng.randrange(0, 400))
        elif kind == "truncated":
            payload = good[: rng.randrange(0, len(good))]
        elif kind == "mutated":
            data = bytearray(good)
            for _ in range(rng.randrange(1, 6)):
                pos = rng.randrange(len(data))
                op = rng.randrange(3)
                if op == 0:
                    data[pos] = rng.choice(b'{}[]",:0123456789eE.-+ aNI\\')
                elif op == 1:
                    del data[pos]
                else:
                    data.insert(pos, rng.randrange(256))
            payload = bytes(data)
        elif kind == "deep nesting":
            depth = rng.choice((9, 10, 50, 1_000, 5_000, 20_000, 100_000))
            opener = rng.choice((b"[", b'{"a":', b'[{"v":'))
            closer = {b"[": b"]", b'{"a":': b"}", b'[{"v":': b"}]"}[opener]
            inner = opener * depth + b"1" + (closer * depth if rng.random() < 0.5 else b"")
            payload = good.replace(b'"values":[', b'"values":[' + inner + b",", 1)
            if rng.random() < 0.3:
                payload = inner
        elif kind == "huge number":
            key = rng.choice([k for k, v in obj.items() if isinstance(v, int | float | list)])
            number = rng.choice(_HUGE_NUMBERS)(rng)
            body = dict(obj)
            body[key] = "@@"
            payload = _dumps(body).replace(
                b'"@@"',
                b"[" + number.encode() + b"]" if key in ("values", "t") else number.encode(),
            )
        elif kind == "strange value":
            body = dict(obj)
            body[rng.choice(list(body))] = rng.choice(_STRANGE_VALUES)
            payload = _dumps(body)
        elif kind == "big string":
            body = dict(obj)
            size = rng.choice((300, 70_000, 300_000, 1_000_000))
            body[rng.choice(list(body))] = "x" * size
            payload = _dumps(body)
        elif kind == "unicode":
            body = dict(obj)
            key = rng.choice(["device", "run", "detail" if "state" in body else "device"])
            body[key] = rng.choice(_UNICODE)
            payload = _dumps(body)
            if rng.random() < 0.3:
                topic = _topic(site, rng.choice(("séance", "a b", "😀", "x" * 65)), stream)
        elif kind == "wrong topic":
            payload = good
            topic = rng.choice(
                (
                    _topic(site, session, "mood"),
                    _topic(site, session, "EDA"),
                    _topic(site, session, "status"),
                    _topic(site, session, "out"),
                    _topic(site, "", stream.split("/")[0]),
                    _topic(site, session, "status/" + "x" * 70),
                    _topic(site, session, "status/other"),
                    _topic(site, session + "!", "eda"),
                )
            )
        else:  # field swap: a valid payload on another stream's topic
            payload = good
            topic = _topic(site, session, rng.choice(("eda", "hr", "rr", "marker", "gap", "acc")))
        yield kind, topic, payload
