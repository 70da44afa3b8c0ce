"""Rekindle wire contract, version 1: MQTT topics, payload schema, units and validation.

This is the only module that the ingest and analysis services share. Third parties may publish
into the same topics; ``docs/wire-contract.md`` is the human-readable form of this module.

Topics: ``rekindle/v1/{site}/{session}/{stream}``, except device status, which is retained per
device at ``rekindle/v1/{site}/{session}/status/{device}``; analysis output under
``rekindle/v1/{site}/{session}/out/{kind}``; rejected payloads under
``rekindle/v1/deadletter/{original topic without the rekindle/v1/ prefix}``.

Payloads are UTF-8 JSON objects. Sample streams come in two forms:

* regular:   ``{"v": 1, "device": "e4", "seq": 812, "t0": 1644227574.0, "fs": 4.0, "values": [..]}``
* irregular: ``{"v": 1, "device": "h10", "seq": 9, "t": [1644227574.2, ..], "values": [..]}``

``rr`` and ``marker`` only accept the irregular form. ``acc`` values are ``[x, y, z]`` triples.
Every payload may carry ``"run"``: an opaque id of the publishing process, so that a restarted
publisher whose ``seq`` starts again at 0 is not mistaken for duplicates.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final, Literal, TypeAlias, cast, get_args

from rekindle.errors import RekindleError

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = "rekindle/v1"
DEADLETTER_ROOT: Final = f"{TOPIC_ROOT}/deadletter"

#: Largest payload accepted, in bytes. A publisher sends at most ~1 s of data per message.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: Most samples in one message (1 s of 3-axis ACC at 1 kHz fits well below this).
MAX_VALUES: Final = 4096
#: How far in the future (relative to the receiver's clock) a sample time may lie.
MAX_FUTURE_S: Final = 300.0
#: Longest time one sample message may span, first to last sample (s); publishers send <= 1 s.
#: With the analysis' silence rule this bounds the feature seconds one message can close.
MAX_SPAN_S: Final = 300.0
#: Earliest plausible sample time (2000-01-01T00:00:00Z): catches devices whose clock is unset.
MIN_TIME_S: Final = 946_684_800.0
MAX_MARKER_CHARS: Final = 200
MAX_ID_CHARS: Final = 64
#: Deepest JSON nesting accepted (a valid payload needs 3: object, ``values``, an ACC triple).
#: Checked on the raw bytes before parsing, so a deeply nested payload costs linear time.
MAX_DEPTH: Final = 8
#: Largest ``seq`` (2^53 - 1, the largest integer every JSON implementation reads exactly).
MAX_SEQ: Final = 2**53 - 1
#: Accepted RSSI range (dBm).
RSSI_RANGE: Final = (-200, 50)

SampleStream: TypeAlias = Literal["hr", "rr", "eda", "acc", "ppg", "ecg", "temp"]
EventStream: TypeAlias = Literal["marker", "status", "gap"]
Stream: TypeAlias = Literal[
    "hr", "rr", "eda", "acc", "ppg", "ecg", "temp", "marker", "status", "gap"
]
OutputKind: TypeAlias = Literal["features", "episode", "quality", "alert", "ack"]
DeviceState: TypeAlias = Literal["online", "offline", "lost", "end"]

SAMPLE_STREAMS: Final[tuple[SampleStream, ...]] = get_args(SampleStream)
STREAMS: Final[tuple[Stream, ...]] = get_args(Stream)
OUTPUT_KINDS: Final[tuple[OutputKind, ...]] = get_args(OutputKind)
DEVICE_STATES: Final[tuple[DeviceState, ...]] = get_args(DeviceState)
IRREGULAR_ONLY: Final = frozenset({"rr", "marker"})

#: Units of each sample stream (fixed by the contract).
UNITS: Final[Mapping[SampleStream, str]] = {
    "hr": "bpm",
    "rr": "ms",
    "eda": "uS",
    "acc": "g",
    "ppg": "arbitrary",
    "ecg": "mV",
    "temp": "degC",
}

#: Physically possible range of each sample stream, inclusive; values outside are rejected.
PHYSICAL_RANGE: Final[Mapping[SampleStream, tuple[float, float]]] = {
    "hr": (20.0, 300.0),
    "rr": (150.0, 3000.0),
    "eda": (0.0, 100.0),
    "acc": (-32.0, 32.0),
    "ppg": (-1.0e6, 1.0e6),
    "ecg": (-50.0, 50.0),
    "temp": (0.0, 50.0),
}
#: Sampling-rate bounds for the regular form.
FS_RANGE: Final = (0.01, 10_000.0)

_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Longest field name and reason a ContractError carries (the rest is cut, marked with "...").
MAX_FIELD_CHARS: Final = 80
MAX_REASON_CHARS: Final = 300


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(obj: object) -> str:
    """``repr`` of a value taken from a payload, short enough for an error message."""
    return _clip(repr(obj), 60)


class ContractError(RekindleError, ValueError):
    """A topic or payload that violates the wire contract.

    ``field`` names the offending part (``"topic"``, ``"payload"``, ``"values[3]"``, ...) and
    ``reason`` says what was wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        field = _clip(field, MAX_FIELD_CHARS)
        reason = _clip(reason, MAX_REASON_CHARS)
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Topic:
    site: str
    session: str
    stream: Stream
    device: str | None = None

    def __str__(self) -> str:
        return topic_for(self.site, self.session, self.stream, self.device)


@dataclass(frozen=True, slots=True)
class SampleMessage:
    """A batch of samples of one stream from one device.

    Exactly one of (``t0`` and ``fs``) or ``t`` is set. ``values`` holds floats, or for ``acc``
    ``(x, y, z)`` triples in g.
    """

    site: str
    session: str
    stream: SampleStream
    device: str
    seq: int
    values: tuple[float, ...] | tuple[tuple[float, float, float], ...]
    t0: float | None = None
    fs: float | None = None
    t: tuple[float, ...] | None = None
    run: str | None = None
    #: the message's position among everything its publisher run sent (all streams), optional
    n: int | None = None

    def __post_init__(self) -> None:
        regular = self.t0 is not None and self.fs is not None and self.t is None
        irregular = self.t is not None and self.t0 is None and self.fs is None
        if not (regular or irregular):
            raise ContractError("t0/fs/t", "give either t0 and fs, or t")
        if self.t is not None and len(self.t) != len(self.values):
            raise ContractError("t", f"has {len(self.t)} entries but values has {len(self.values)}")

    def __len__(self) -> int:
        return len(self.values)

    def times_ns(self) -> list[int]:
        """Sample times as integer nanoseconds, identical wherever they are computed."""
        if self.t is not None:
            return [round(x * 1e9) for x in self.t]
        assert self.t0 is not None
        assert self.fs is not None
        base = round(self.t0 * 1e9)
        step = 1e9 / self.fs
        return [base + round(i * step) for i in range(len(self.values))]

    def times(self) -> list[float]:
        return [ns / 1e9 for ns in self.times_ns()]

    @property
    def start(self) -> float:
        """Time of the first sample (unix seconds); ``t0`` for a regular message."""
        if self.t is not None:
            return self.t[0] if self.t else 0.0
        assert self.t0 is not None
        return self.t0

    @property
    def end(self) -> float:
        """Time of the last sample (unix seconds); ``t0`` for an empty regular message."""
        if self.t is not None:
            return self.t[-1] if self.t else 0.0
        assert self.t0 is not None
        assert self.fs is not None
        return self.t0 + max(len(self.values) - 1, 0) / self.fs


@dataclass(frozen=True, slots=True)
class MarkerMessage:
    """Clinician or device event marks ("dose given", "tears", "music changed")."""

    site: str
    session: str
    device: str
    seq: int
    t: tuple[float, ...]
    values: tuple[str, ...]
    run: str | None = None
    stream: Literal["marker"] = "marker"
    n: int | None = None


@dataclass(frozen=True, slots=True)
class StatusMessage:
    """Device or publisher state; published retained. ``end`` closes a session's stream."""

    site: str
    session: str
    device: str
    state: DeviceState
    t: float
    battery: int | None = None
    rssi: int | None = None
    detail: str | None = None
    run: str | None = None
    stream: Literal["status"] = "status"
    #: how many sample/marker/gap messages (``n`` 0 .. sent-1) the run had published before
    #: this status: lets a receiver of ``end`` know what it missed at the tail
    sent: int | None = None


@dataclass(frozen=True, slots=True)
class GapMessage:
    """Data of ``gap_stream`` from ``device`` is missing between ``start`` and ``end``."""

    site: str
    session: str
    device: str
    seq: int
    gap_stream: SampleStream
    start: float
    end: float
    run: str | None = None
    stream: Literal["gap"] = "gap"
    n: int | None = None


Message: TypeAlias = SampleMessage | MarkerMessage | StatusMessage | GapMessage


# --------------------------------------------------------------------------------------- topics


def _check_id(value: str, what: str) -> str:
    if not _ID_RE.fullmatch(value):
        raise ContractError(
            what, f"{_show(value)} must be 1-{MAX_ID_CHARS} characters of A-Z a-z 0-9 _ . -"
        )
    return value


def topic_for(site: str, session: str, stream: Stream, device: str | None = None) -> str:
    """Topic of ``stream``; ``status`` topics end with the device id (one retained per device)."""
    _check_id(site, "site")
    _check_id(session, "session")
    if stream not in STREAMS:
        raise ContractError(
            "stream", f"unknown stream {_show(stream)}; valid: {', '.join(STREAMS)}"
        )
    if stream == "status":
        if device is None:
            raise ContractError("device", "status topics end with the device id")
        return f"{TOPIC_ROOT}/{site}/{session}/status/{_check_id(device, 'device')}"
    return f"{TOPIC_ROOT}/{site}/{session}/{stream}"


def output_topic(site: str, session: str, kind: OutputKind) -> str:
    return f"{TOPIC_ROOT}/{_check_id(site, 'site')}/{_check_id(session, 'session')}/out/{kind}"


def deadletter_topic(topic: str) -> str:
    """Dead-letter topic for a payload rejected on ``topic``."""
    prefix = TOPIC_ROOT + "/"
    rest = topic[len(prefix) :] if topic.startswith(prefix) else topic
    rest = rest.replace("+", "_").replace("#", "_").strip("/") or "unknown"
    return f"{DEADLETTER_ROOT}/{rest}"


def subscriptions(site: str = "+", session: str = "+") -> tuple[str, str]:
    """Subscription filters for every input stream (and device status) of a site/session."""
    return f"{TOPIC_ROOT}/{site}/{session}/+", f"{TOPIC_ROOT}/{site}/{session}/status/+"


def parse_topic(topic: str) -> Topic:
    parts = topic.split("/")
    status = len(parts) == 6 and parts[4] == "status"
    if not (len(parts) == 5 or status) or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT:
        raise ContractError("topic", f"{_show(topic)} is not rekindle/v1/<site>/<session>/<stream>")
    site, session, stream = parts[2], parts[3], parts[4]
    _check_id(site, "topic.site")
    _check_id(session, "topic.session")
    if stream not in STREAMS:
        raise ContractError(
            "topic.stream", f"unknown stream {_show(stream)}; valid: {', '.join(STREAMS)}"
        )
    if stream == "status" and not status:
        raise ContractError("topic", "status topics end with /status/<device>")
    device = _check_id(parts[5], "topic.device") if status else None
    return Topic(site, session, stream, device)


# ------------------------------------------------------------------------------------- decoding


def _reject_constant(name: str) -> float:
    raise ContractError("payload", f"non-finite number {name} is not allowed")


def _number(obj: object, where: str) -> float:
    if isinstance(obj, bool) or not isinstance(obj, int | float):
        raise ContractError(where, f"expected a number, got {type(obj).__name__}")
    try:
        value = float(obj)
    except OverflowError:  # an integer of more than ~308 digits
        raise ContractError(where, "number is too large to be a float") from None
    if not math.isfinite(value):
        raise ContractError(where, "must be finite")
    return value


def _integer(obj: object, where: str, low: int, high: int) -> int:
    if isinstance(obj, bool) or not isinstance(obj, int):
        raise ContractError(where, f"expected an integer, got {type(obj).__name__}")
    if not low <= obj <= high:
        shown = str(obj) if abs(obj) < 10**30 else f"an integer of {len(str(abs(obj)))} digits"
        raise ContractError(where, f"{shown} is outside [{low}, {high}]")
    return obj


def _seq(obj: object, where: str = "seq") -> int:
    return _integer(obj, where, 0, MAX_SEQ)


_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.?)*+(?:"|\Z)', re.DOTALL)
#: Maps ``{``/``}`` to ``[``/``]`` (depth only: the parser rejects mismatched brackets).
_AS_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET: Final = bytes(b for b in range(256) if b not in b"[]{}")


def check_nesting(payload: bytes, limit: int = MAX_DEPTH) -> None:
    """Reject ``payload`` if its JSON nests deeper than ``limit``, without parsing it.

    Linear in the payload size per level: strings are blanked out (a possessive scan, so an
    unterminated string cannot make it backtrack), everything but brackets is deleted (``{}``
    counted as ``[]``), and innermost ``[]`` pairs are removed ``limit`` times; anything left
    is too deep (or unbalanced, which the parser would reject anyway).
    """
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return
    brackets = _JSON_STRING.sub(b"", payload) if b'"' in payload else payload
    brackets = brackets.translate(_AS_SQUARE, _NOT_BRACKET)
    for _ in range(limit):
        if not brackets:
            return
        inner = brackets.replace(b"[]", b"")
        if len(inner) == len(brackets):
            break  # no pair left to remove: unbalanced
        brackets = inner
    if brackets:
        raise ContractError(
            "payload", f"JSON nested deeper than {limit} levels (or unbalanced brackets)"
        )


def _string(obj: object, where: str, max_chars: int) -> str:
    if not isinstance(obj, str):
        raise ContractError(where, f"expected a string, got {type(obj).__name__}")
    if not obj or len(obj) > max_chars:
        raise ContractError(where, f"must be 1-{max_chars} characters")
    if _CONTROL.search(obj):
        raise ContractError(where, "control characters (U+0000-U+001F, U+007F) are not allowed")
    if _SURROGATE.search(obj):
        raise ContractError(where, "contains a lone surrogate (\\ud800-\\udfff): not Unicode text")
    return obj


_CONTROL: Final = re.compile("[\x00-\x1f\x7f]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _time(obj: object, where: str, now: float) -> float:
    value = _number(obj, where)
    if value < MIN_TIME_S:
        raise ContractError(where, f"{value} is before 2000-01-01: is the device clock set?")
    if value > now + MAX_FUTURE_S:
        raise ContractError(
            where, f"{value} is {value - now:.0f} s in the future (limit {MAX_FUTURE_S:.0f} s)"
        )
    return value


def _span(span: float, where: str) -> None:
    if span > MAX_SPAN_S:
        raise ContractError(
            where, f"the samples span {span:.0f} s; one message may span at most {MAX_SPAN_S:g} s"
        )


def _keys(obj: Mapping[str, object], required: set[str], optional: set[str]) -> None:
    missing = sorted(required - obj.keys())
    if missing:
        raise ContractError(missing[0], "required field is missing")
    extra = sorted(obj.keys() - required - optional)
    if extra:
        raise ContractError(extra[0], "unknown field")


def _list(obj: object, where: str) -> list[object]:
    if not isinstance(obj, list):
        raise ContractError(where, f"expected a list, got {type(obj).__name__}")
    if len(obj) > MAX_VALUES:
        raise ContractError(where, f"{len(obj)} entries exceed the limit of {MAX_VALUES}")
    return obj


def _in_range(value: float, stream: SampleStream, where: str) -> float:
    low, high = PHYSICAL_RANGE[stream]
    if not low <= value <= high:
        raise ContractError(
            where, f"{value} {UNITS[stream]} is outside the physical range [{low}, {high}]"
        )
    return value


_NUMBER_TYPES: Final = frozenset({float, int})


def _fast_floats(raw: list[object], low: float, high: float) -> tuple[float, ...] | None:
    """``raw`` as floats when every entry is a JSON number within ``[low, high]``, else None.

    C-speed checks for the common case; on None the caller takes the per-entry path, which
    raises the precise error (so both paths accept and reject exactly the same inputs).
    """
    if not set(map(type, raw)) <= _NUMBER_TYPES:  # (bool is not int here: type() is exact)
        return None
    try:
        out = tuple(map(float, cast(list[float], raw)))
    except OverflowError:
        return None
    if out and not (low <= min(out) and max(out) <= high):  # also catches inf (1e400)
        return None
    return out


def _fast_triples(
    raw: list[object], low: float, high: float
) -> tuple[tuple[float, float, float], ...] | None:
    """ACC ``[x, y, z]`` triples at C speed, or None (see ``_fast_floats``)."""
    if not all(type(item) is list and len(item) == 3 for item in raw):
        return None
    flat = _fast_floats(list(chain.from_iterable(cast(list[list[object]], raw))), low, high)
    if flat is None:
        return None
    it = iter(flat)
    return tuple(zip(it, it, it, strict=True))


def _times(obj: object, where: str, now: float) -> tuple[float, ...]:
    raw = _list(obj, where)
    fast = _fast_floats(raw, MIN_TIME_S, now + MAX_FUTURE_S)
    if fast is not None and list(fast) == sorted(fast):
        return fast
    out = tuple(_time(x, f"{where}[{i}]", now) for i, x in enumerate(raw))
    for i in range(1, len(out)):
        if out[i] < out[i - 1]:
            raise ContractError(f"{where}[{i}]", "times must not decrease")
    return out


def decode(topic: str, payload: bytes, *, now: float | None = None) -> Message:
    """Validate and convert one MQTT message.

    Raises:
        ContractError: naming the field and what was wrong with it.
    """
    parsed = parse_topic(topic)
    now = time.time() if now is None else now
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(
            "payload", f"{len(payload)} bytes exceed the limit of {MAX_PAYLOAD_BYTES}"
        )
    check_nesting(payload)
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ContractError("payload", f"not UTF-8: {exc.reason} at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise ContractError("payload", f"not JSON: {exc.msg} at position {exc.pos}") from exc
    except ContractError:
        raise  # from _reject_constant
    except ValueError as exc:  # an integer longer than Python converts (sys.int_info)
        reason = "an integer literal is too long to convert (numbers must fit a float)"
        raise ContractError("payload", reason) from exc
    except RecursionError as exc:  # cannot happen below MAX_DEPTH; kept as a last guard
        raise ContractError("payload", "JSON nested too deeply") from exc
    if not isinstance(obj, dict):
        raise ContractError("payload", f"expected a JSON object, got {type(obj).__name__}")
    if "v" not in obj:
        raise ContractError("v", "required field is missing")
    if _integer(obj["v"], "v", 0, 2**31) != PROTOCOL_VERSION:
        raise ContractError("v", f"unsupported version {obj['v']}; this receiver speaks 1")
    run = _string(obj["run"], "run", MAX_ID_CHARS) if "run" in obj else None
    device = obj.get("device")
    site, session, stream = parsed.site, parsed.session, parsed.stream

    if stream == "status":
        _keys(obj, {"v", "device", "state", "t"}, {"run", "battery", "rssi", "detail", "sent"})
        state = obj["state"]
        if state not in DEVICE_STATES:
            raise ContractError("state", f"{_show(state)} is not one of {', '.join(DEVICE_STATES)}")
        battery = (
            _integer(obj["battery"], "battery", 0, 100) if obj.get("battery") is not None else None
        )
        rssi = _integer(obj["rssi"], "rssi", *RSSI_RANGE) if obj.get("rssi") is not None else None
        detail = _string(obj["detail"], "detail", 500) if obj.get("detail") is not None else None
        device_id = _check_id(_string(device, "device", MAX_ID_CHARS), "device")
        if device_id != parsed.device:
            raise ContractError(
                "device", f"{device_id!r} differs from the topic's {parsed.device!r}"
            )
        return StatusMessage(
            site,
            session,
            device_id,
            cast(DeviceState, state),
            _time(obj["t"], "t", now),
            battery,
            rssi,
            detail,
            run,
            sent=_seq(obj["sent"], "sent") if obj.get("sent") is not None else None,
        )

    if stream == "gap":
        _keys(obj, {"v", "device", "seq", "stream", "start", "end"}, {"run", "n"})
        gap_stream = obj["stream"]
        if gap_stream not in SAMPLE_STREAMS:
            raise ContractError("stream", f"{_show(gap_stream)} is not a sample stream")
        start = _time(obj["start"], "start", now)
        end = _time(obj["end"], "end", now)
        if end < start:
            raise ContractError("end", "is before start")
        seq = _seq(obj["seq"])
        return GapMessage(
            site,
            session,
            _check_id(_string(device, "device", MAX_ID_CHARS), "device"),
            seq,
            cast(SampleStream, gap_stream),
            start,
            end,
            run,
            n=_seq(obj["n"], "n") if "n" in obj else None,
        )

    regular = "t0" in obj or "fs" in obj
    if regular and stream in IRREGULAR_ONLY:
        raise ContractError("t0", f"stream {stream!r} takes per-sample times 't', not t0/fs")
    required = {"v", "device", "seq", "values"} | ({"t0", "fs"} if regular else {"t"})
    _keys(obj, required, {"run", "n"})
    device_id = _check_id(_string(device, "device", MAX_ID_CHARS), "device")
    seq = _seq(obj["seq"])
    n = _seq(obj["n"], "n") if "n" in obj else None
    raw_values = _list(obj["values"], "values")

    if stream == "marker":
        marker_t = _times(obj["t"], "t", now)
        texts = tuple(
            _string(x, f"values[{i}]", MAX_MARKER_CHARS) for i, x in enumerate(raw_values)
        )
        if len(marker_t) != len(texts):
            raise ContractError("t", f"has {len(marker_t)} entries but values has {len(texts)}")
        return MarkerMessage(site, session, device_id, seq, marker_t, texts, run, n=n)

    sample_stream: SampleStream = stream
    values: tuple[float, ...] | tuple[tuple[float, float, float], ...]
    low, high = PHYSICAL_RANGE[sample_stream]
    if sample_stream == "acc":
        fast_triples = _fast_triples(raw_values, low, high)
        if fast_triples is not None:
            values = fast_triples
        else:
            triples: list[tuple[float, float, float]] = []
            for i, item in enumerate(raw_values):
                if not isinstance(item, list) or len(item) != 3:
                    raise ContractError(f"values[{i}]", "acc samples are [x, y, z] triples")
                x, y, z = (
                    _in_range(_number(c, f"values[{i}]"), "acc", f"values[{i}]") for c in item
                )
                triples.append((x, y, z))
            values = tuple(triples)
    else:
        fast_values = _fast_floats(raw_values, low, high)
        values = (
            fast_values
            if fast_values is not None
            else tuple(
                _in_range(_number(x, f"values[{i}]"), sample_stream, f"values[{i}]")
                for i, x in enumerate(raw_values)
            )
        )
    if regular:
        t0 = _time(obj["t0"], "t0", now)
        fs = _number(obj["fs"], "fs")
        if not FS_RANGE[0] <= fs <= FS_RANGE[1]:
            raise ContractError("fs", f"{fs} Hz is outside [{FS_RANGE[0]}, {FS_RANGE[1]}]")
        last = t0 + max(len(values) - 1, 0) / fs
        _time(last, "t0", now)
        _span(last - t0, "fs")
        return SampleMessage(
            site, session, sample_stream, device_id, seq, values, t0, fs, None, run, n
        )
    t = _times(obj["t"], "t", now)
    if len(t) != len(values):
        raise ContractError("t", f"has {len(t)} entries but values has {len(values)}")
    if t:
        _span(t[-1] - t[0], "t")
    return SampleMessage(
        site, session, sample_stream, device_id, seq, values, None, None, t, run, n
    )


# ---------------------------------------------------------------------------------- JSON Schema

#: What the JSON Schema cannot express and only ``decode`` checks (see ``json_schema``).
SCHEMA_LIMITS: Final = (
    f"payload at most {MAX_PAYLOAD_BYTES} bytes and nested at most {MAX_DEPTH} levels",
    f"times at most {MAX_FUTURE_S:g} s ahead of the receiver's clock",
    "t non-decreasing, with as many entries as values",
    f"one sample message spans at most {MAX_SPAN_S:g} s",
    "status: device equals the topic's device level",
    "gap: end not before start",
    "integers written without a fraction or exponent (1, not 1.0)",
    "no lone surrogates in strings",
)


def json_schema() -> dict[str, object]:
    """JSON Schema (2020-12) of the payloads, one definition per topic stream.

    A payload published on ``rekindle/v1/<site>/<session>/<stream>`` (or ``status/<device>``)
    must validate against ``#/$defs/<stream>``. Every payload ``decode`` accepts validates;
    ``SCHEMA_LIMITS`` lists the checks only ``decode`` makes. Published as
    ``docs/wire-contract.schema.json`` (a test keeps the file equal to this function).
    """
    text = {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001f\\u007f]*$"}
    ident = {"type": "string", "pattern": f"^[A-Za-z0-9_.-]{{1,{MAX_ID_CHARS}}}$"}
    time_s = {"type": "number", "minimum": MIN_TIME_S}
    seq = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
    # (``run`` is opaque: any 1-64 characters without control characters)
    run = {**text, "maxLength": MAX_ID_CHARS}
    common = {"v": {"const": PROTOCOL_VERSION}, "device": ident, "run": run}

    def samples(stream: SampleStream) -> dict[str, object]:
        low, high = PHYSICAL_RANGE[stream]
        number = {"type": "number", "minimum": low, "maximum": high}
        value = (
            {"type": "array", "items": number, "minItems": 3, "maxItems": 3}
            if stream == "acc"
            else number
        )
        values = {"type": "array", "items": value, "maxItems": MAX_VALUES}
        irregular = {
            "type": "object",
            "properties": {
                **common,
                "seq": seq,
                "n": seq,
                "t": {"type": "array", "items": time_s, "maxItems": MAX_VALUES},
                "values": values,
            },
            "required": ["v", "device", "seq", "t", "values"],
            "additionalProperties": False,
        }
        if stream in IRREGULAR_ONLY:
            return {"description": f"{stream} in {UNITS[stream]}", **irregular}
        regular = {
            "type": "object",
            "properties": {
                **common,
                "seq": seq,
                "n": seq,
                "t0": time_s,
                "fs": {"type": "number", "minimum": FS_RANGE[0], "maximum": FS_RANGE[1]},
                "values": values,
            },
            "required": ["v", "device", "seq", "t0", "fs", "values"],
            "additionalProperties": False,
        }
        return {"description": f"{stream} in {UNITS[stream]}", "oneOf": [regular, irregular]}

    defs: dict[str, object] = {stream: samples(stream) for stream in SAMPLE_STREAMS}
    defs["marker"] = {
        "description": "clinician or device markers",
        "type": "object",
        "properties": {
            **common,
            "seq": seq,
            "n": seq,
            "t": {"type": "array", "items": time_s, "maxItems": MAX_VALUES},
            "values": {
                "type": "array",
                "items": {**text, "maxLength": MAX_MARKER_CHARS},
                "maxItems": MAX_VALUES,
            },
        },
        "required": ["v", "device", "seq", "t", "values"],
        "additionalProperties": False,
    }
    defs["status"] = {
        "description": "device state, retained on .../status/<device>",
        "type": "object",
        "properties": {
            **common,
            "state": {"enum": list(DEVICE_STATES)},
            "t": time_s,
            "battery": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
            "rssi": {
                "type": ["integer", "null"],
                "minimum": RSSI_RANGE[0],
                "maximum": RSSI_RANGE[1],
            },
            "detail": {"anyOf": [{**text, "maxLength": 500}, {"type": "null"}]},
            "sent": {"anyOf": [seq, {"type": "null"}]},
        },
        "required": ["v", "device", "state", "t"],
        "additionalProperties": False,
    }
    defs["gap"] = {
        "description": "data of one sample stream known to be missing",
        "type": "object",
        "properties": {
            **common,
            "seq": seq,
            "n": seq,
            "stream": {"enum": list(SAMPLE_STREAMS)},
            "start": time_s,
            "end": time_s,
        },
        "required": ["v", "device", "seq", "stream", "start", "end"],
        "additionalProperties": False,
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://rekindle.example/schemas/wire-contract-v1.json",
        "title": f"Rekindle wire contract v{PROTOCOL_VERSION} payloads",
        "description": (
            "Validate a payload against #/$defs/<stream>, the stream being the topic's level "
            "after the session (status for .../status/<device>). Checked only by the receiver: "
            + "; ".join(SCHEMA_LIMITS)
            + "."
        ),
        "$defs": defs,
    }


# ------------------------------------------------------------------------------------- encoding


def _payload_dict(msg: Message) -> dict[str, object]:
    out: dict[str, object] = {"v": PROTOCOL_VERSION, "device": msg.device}
    if isinstance(msg, StatusMessage):
        out.update(state=msg.state, t=msg.t)
        for key in ("battery", "rssi", "detail", "sent"):
            value = getattr(msg, key)
            if value is not None:
                out[key] = value
    elif isinstance(msg, GapMessage):
        out.update(seq=msg.seq, stream=msg.gap_stream, start=msg.start, end=msg.end)
    elif isinstance(msg, MarkerMessage):
        out.update(seq=msg.seq, t=list(msg.t), values=list(msg.values))
    else:
        out["seq"] = msg.seq
        if msg.t is not None:
            out["t"] = list(msg.t)
        else:
            out.update(t0=msg.t0, fs=msg.fs)
        out["values"] = [list(v) if isinstance(v, tuple) else v for v in msg.values]
    if msg.run is not None:
        out["run"] = msg.run
    if not isinstance(msg, StatusMessage) and msg.n is not None:
        out["n"] = msg.n
    return out


def encode(msg: Message) -> tuple[str, bytes]:
    """Topic and UTF-8 JSON payload for ``msg``; ``decode`` of the result gives ``msg`` back."""
    payload = json.dumps(_payload_dict(msg), separators=(",", ":"), allow_nan=False)
    device = msg.device if msg.stream == "status" else None
    return topic_for(msg.site, msg.session, msg.stream, device), payload.encode("utf-8")


#: A ``seq`` more than this many ahead of the last one seen is a *jump* (see ``SeqTracker``).
MAX_SEQ_JUMP: Final = 1_000_000


@dataclass(slots=True)
class SeqTracker:
    """Receiver side of ``seq``: drops duplicates and reports gaps per (device, stream, run).

    Jump rule: a message whose ``seq`` lies more than ``MAX_SEQ_JUMP`` ahead of the last one is
    accepted (its data is valid) but does not move the stream's position, so a single corrupt
    or hostile ``seq`` (say 2^62) cannot turn every later message into a "duplicate". If the
    next message continues from the jumped value (``jumped + 1``), the publisher really
    renumbered: the tracker follows it from there. Jumps are counted in ``jumps``, never as
    missing messages.
    """

    _last: dict[tuple[str, str, str, str, str | None], int] = field(default_factory=dict)
    _jumped: dict[tuple[str, str, str, str, str | None], int] = field(default_factory=dict)
    jumps: int = 0

    def check(self, msg: SampleMessage | MarkerMessage | GapMessage) -> tuple[bool, int]:
        """Return ``(accept, missing)``: ``accept`` is False for a duplicate or replayed seq;
        ``missing`` counts the sequence numbers skipped before this one."""
        key = (msg.site, msg.session, msg.device, msg.stream, msg.run)
        last = self._last.get(key)
        seq = msg.seq
        if last is not None and seq <= last:
            return False, 0
        if last is not None and seq - last - 1 > MAX_SEQ_JUMP:
            jumped = self._jumped.get(key)
            if jumped == seq:
                return False, 0  # the jumped message again
            if jumped is not None and seq == jumped + 1:
                self._last[key] = seq  # two in a row: the publisher renumbered
                del self._jumped[key]
                return True, 0
            self._jumped[key] = seq
            self.jumps += 1
            return True, 0
        self._last[key] = seq
        self._jumped.pop(key, None)
        missing = 0 if last is None else seq - last - 1
        return True, missing

    def __setstate__(self, state: object) -> None:
        """Unpickle, also a tracker pickled before a field existed (it gets the default)."""
        self._last, self._jumped, self.jumps = {}, {}, 0
        slots = state[1] if isinstance(state, tuple) else state
        for name, value in cast(dict[str, object], slots or {}).items():
            setattr(self, name, value)

    def last(self, msg: SampleMessage | MarkerMessage | GapMessage) -> int | None:
        """The stream's position: the last in-order ``seq`` accepted (None: none yet)."""
        return self._last.get((msg.site, msg.session, msg.device, msg.stream, msg.run))

    def position(self, key: tuple[str, str, str, str, str | None]) -> int | None:
        """:meth:`last` by (site, session, device, stream, run)."""
        return self._last.get(key)

    def jumped(self, key: tuple[str, str, str, str, str | None]) -> bool:
        """True while the stream's last message was a jump (see the jump rule)."""
        return key in self._jumped

    def forget_session(self, site: str, session: str) -> None:
        for table in (self._last, self._jumped):
            for key in [k for k in table if k[0] == site and k[1] == session]:
                del table[key]


def samples(
    site: str,
    session: str,
    stream: SampleStream,
    device: str,
    seq: int,
    values: Sequence[float] | Sequence[tuple[float, float, float]],
    *,
    t0: float | None = None,
    fs: float | None = None,
    t: Sequence[float] | None = None,
    run: str | None = None,
) -> SampleMessage:
    """Convenience constructor that converts sequences to the tuples the dataclass holds."""
    vals: tuple[float, ...] | tuple[tuple[float, float, float], ...]
    if stream == "acc":
        vals = tuple(
            (float(a), float(b), float(c)) for a, b, c in cast(Sequence[Sequence[float]], values)
        )
    else:
        vals = tuple(map(float, cast(Sequence[float], values)))
    return SampleMessage(
        site, session, stream, device, seq, vals, t0, fs, None if t is None else tuple(t), run
    )


# ------------------------------------------------------------------ end-to-end acknowledgement

#: Revision of the v1 contract. 2 added the retained ``out/ack`` (end-to-end acknowledgement),
#: the ``gap`` points of unrepaired ``seq`` gaps and the rule that ``seq`` starts at 0 per run;
#: 3 the ``held`` ranges of ``out/ack`` (optional: earlier publishers ignore them).
CONTRACT_REVISION: Final = 3


@dataclass(frozen=True, slots=True)
class AckPosition:
    """``seq`` of ``stream`` from ``device`` (publisher run ``run``) is durably handled up to
    and including ``seq``: stored in InfluxDB or in the analysis write-ahead log, or given up
    as an unrepaired gap (then also stored as a ``gap`` point)."""

    device: str
    stream: str
    run: str | None
    seq: int


@dataclass(frozen=True, slots=True)
class HeldRange:
    """Messages ``first``..``last`` (their ``n``) of publisher run ``run`` that the analysis
    has received and keeps durably while it waits for earlier ones of the run (a gap): not lost,
    and evidence that what the run sent before them and is not covered yet was."""

    run: str
    first: int
    last: int


#: Most held ranges an ``out/ack`` lists (the first ones, in order of ``n``).
MAX_ACK_HELD: Final = 64


@dataclass(frozen=True, slots=True)
class AckMessage:
    """The analysis service's retained ``out/ack`` of one session."""

    site: str
    session: str
    t: float
    positions: tuple[AckPosition, ...]
    #: (state, run) of the last status of each device that the analysis has durably handled
    devices: Mapping[str, tuple[str, str | None]]
    #: seq gaps given up so far in this session (messages that never arrived)
    gaps: int = 0
    #: messages received after a gap, waiting for it to be filled (contract revision 3)
    held: tuple[HeldRange, ...] = ()


def encode_ack(ack: AckMessage) -> tuple[str, bytes]:
    body = {
        "v": PROTOCOL_VERSION,
        "t": ack.t,
        "streams": [
            {"device": p.device, "stream": p.stream, "run": p.run, "seq": p.seq}
            for p in ack.positions
        ],
        "devices": {d: {"state": st, "run": run} for d, (st, run) in ack.devices.items()},
        "gaps": ack.gaps,
    }
    if ack.held:
        body["held"] = [{"run": h.run, "first": h.first, "last": h.last} for h in ack.held]
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return output_topic(ack.site, ack.session, "ack"), payload


def decode_ack(topic: str, payload: bytes) -> AckMessage:
    """Parse an ``out/ack`` message.

    Raises:
        ContractError: naming the field and what was wrong with it.
    """
    parts = topic.split("/")
    if len(parts) != 6 or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT or parts[4:] != ["out", "ack"]:
        raise ContractError("topic", f"{topic!r} is not rekindle/v1/<site>/<session>/out/ack")
    if len(payload) > MAX_PAYLOAD_BYTES * 4:
        raise ContractError("payload", f"{len(payload)} bytes is too large for an ack")
    try:
        obj = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ContractError("payload", f"not a JSON ack: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("v") != PROTOCOL_VERSION:
        raise ContractError("v", "an ack is a JSON object with v = 1")
    streams = obj.get("streams")
    devices = obj.get("devices", {})
    if not isinstance(streams, list) or not isinstance(devices, dict):
        raise ContractError("streams", "expected a list of positions and a devices object")
    positions = []
    for i, item in enumerate(streams):
        if not isinstance(item, dict):
            raise ContractError(f"streams[{i}]", "expected an object")
        run = item.get("run")
        seq = item.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(run, str | None):
            raise ContractError(f"streams[{i}]", "needs an integer seq and a string or null run")
        positions.append(AckPosition(str(item.get("device")), str(item.get("stream")), run, seq))
    states: dict[str, tuple[str, str | None]] = {}
    for name, item in devices.items():
        if not isinstance(item, dict) or not isinstance(item.get("run"), str | None):
            raise ContractError(f"devices.{name}", "expected {state, run}")
        states[str(name)] = (str(item.get("state")), item.get("run"))
    gaps = obj.get("gaps", 0)
    held_items = obj.get("held", [])
    if not isinstance(held_items, list):
        raise ContractError("held", "expected a list of {run, first, last}")
    held = []
    for i, item in enumerate(held_items[:MAX_ACK_HELD]):
        fields = item if isinstance(item, dict) else {}
        run, first, last = fields.get("run"), fields.get("first"), fields.get("last")
        if not (
            isinstance(run, str)
            and isinstance(first, int)
            and isinstance(last, int)
            and not isinstance(first, bool)
            and not isinstance(last, bool)
        ):
            raise ContractError(f"held[{i}]", "needs a string run and integer first and last")
        held.append(HeldRange(run, first, last))
    return AckMessage(
        parts[2],
        parts[3],
        float(obj.get("t", 0.0)),
        tuple(positions),
        states,
        gaps if isinstance(gaps, int) and not isinstance(gaps, bool) else 0,
        tuple(held),
    )
