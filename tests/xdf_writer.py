"""A minimal XDF 1.0 writer for tests, after the format's specification
(https://github.com/sccn/xdf/wiki/Specifications): magic ``XDF:``, then chunks of
``[NumLengthBytes][Length][Tag uint16][Content]``: FileHeader (1), StreamHeader (2), Samples (3),
ClockOffset (4) and StreamFooter (6). Every sample carries its own timestamp."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape


@dataclass
class XdfStream:
    name: str
    type: str
    channel_format: str  # "double64", "float32" or "string"
    times: Sequence[float]
    #: one row per sample: numbers, or strings for a string stream
    rows: Sequence[Sequence[float | str]]
    nominal_srate: float = 0.0
    units: Sequence[str] = field(default_factory=list)


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + bytes([n])
    if n < 2**32:
        return b"\x04" + struct.pack("<I", n)
    return b"\x08" + struct.pack("<Q", n)


def _chunk(tag: int, content: bytes) -> bytes:
    return _varlen(len(content) + 2) + struct.pack("<H", tag) + content


def _header_xml(stream: XdfStream, channels: int) -> bytes:
    desc = ""
    if stream.units:
        chans = "".join(
            f"<channel><label>ch{i + 1}</label><unit>{escape(u)}</unit></channel>"
            for i, u in enumerate(stream.units)
        )
        desc = f"<channels>{chans}</channels>"
    xml = (
        '<?xml version="1.0"?><info>'
        f"<name>{escape(stream.name)}</name><type>{escape(stream.type)}</type>"
        f"<channel_count>{channels}</channel_count>"
        f"<nominal_srate>{stream.nominal_srate}</nominal_srate>"
        f"<channel_format>{stream.channel_format}</channel_format>"
        f"<source_id>{escape(stream.name)}</source_id><version>1.1</version>"
        f"<created_at>{stream.times[0] if stream.times else 0.0}</created_at>"
        f"<uid>{escape(stream.name)}-uid</uid><session_id>default</session_id>"
        f"<hostname>test</hostname><desc>{desc}</desc></info>"
    )
    return xml.encode()


def _samples(stream: XdfStream) -> bytes:
    body = bytearray(_varlen(len(stream.times)))
    pack = {"double64": "<d", "float32": "<f"}.get(stream.channel_format)
    for t, row in zip(stream.times, stream.rows, strict=True):
        body += b"\x08" + struct.pack("<d", t)
        for value in row:
            if pack is None:
                raw = str(value).encode()
                body += _varlen(len(raw)) + raw
            else:
                body += struct.pack(pack, float(value))
    return bytes(body)


def write_xdf(path: Path, streams: Sequence[XdfStream], *, datetime: str | None = None) -> Path:
    """Write ``streams`` (stream ids 1, 2, ...) with an optional header ``datetime``."""
    when = f"<datetime>{datetime}</datetime>" if datetime else ""
    out = bytearray(b"XDF:")
    out += _chunk(1, f'<?xml version="1.0"?><info><version>1.0</version>{when}</info>'.encode())
    for sid, stream in enumerate(streams, start=1):
        channels = len(stream.rows[0]) if stream.rows else 1
        out += _chunk(2, struct.pack("<I", sid) + _header_xml(stream, channels))
    for sid, stream in enumerate(streams, start=1):
        out += _chunk(3, struct.pack("<I", sid) + _samples(stream))
        out += _chunk(4, struct.pack("<I", sid) + struct.pack("<dd", stream.times[-1], 0.0))
    for sid, stream in enumerate(streams, start=1):
        footer = (
            '<?xml version="1.0"?><info>'
            f"<first_timestamp>{stream.times[0]}</first_timestamp>"
            f"<last_timestamp>{stream.times[-1]}</last_timestamp>"
            f"<sample_count>{len(stream.times)}</sample_count></info>"
        )
        out += _chunk(6, struct.pack("<I", sid) + footer.encode())
    path.write_bytes(bytes(out))
    return path
