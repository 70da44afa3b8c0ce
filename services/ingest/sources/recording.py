"""Rekindle's own recording format, written by ``rekindle record`` and replayed bit-exact.

A recording is UTF-8 JSON Lines (optionally gzip-compressed, ``.jsonl.gz``):

* line 1, the header: ``{"format": "rekindle-recording", "version": 1, "site": ..., "session":
  ..., "created": <unix s>}``
* then one line per received message, in arrival order: ``{"stream": "<stream>", "payload":
  {<the wire payload as received>}}``. Only sample streams and markers are kept; ``seq`` and
  ``run`` are kept in the line but a replay assigns its own.

Replaying a recording republishes every payload's device, times and values unchanged.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from rekindle import contract
from rekindle.ingest.errors import SourceError
from rekindle.ingest.sources.base import Chunk

FORMAT = "rekindle-recording"
VERSION = 1
RECORDED_STREAMS = frozenset(contract.SAMPLE_STREAMS) | {"marker"}


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return path.open(mode, encoding="utf-8")


class RecordingWriter:
    """Appends received messages to a recording file."""

    def __init__(self, path: Path, site: str, session: str) -> None:
        self.path = path
        self._fh = _open(path, "w")
        header = {
            "format": FORMAT,
            "version": VERSION,
            "site": site,
            "session": session,
            "created": time.time(),
        }
        self._fh.write(json.dumps(header) + "\n")
        self.count = 0

    def write(self, stream: str, payload: bytes) -> bool:
        """Store one raw payload; returns False (and stores nothing) for other streams."""
        if stream not in RECORDED_STREAMS:
            return False
        obj = json.loads(payload)
        self._fh.write(json.dumps({"stream": stream, "payload": obj}, separators=(",", ":")))
        self._fh.write("\n")
        self.count += 1
        return True

    def close(self) -> None:
        self._fh.close()


def read_header(path: Path) -> dict[str, Any]:
    with _open(path, "r") as fh:
        first = fh.readline()
    try:
        header = json.loads(first)
    except json.JSONDecodeError as exc:
        raise SourceError(path, "first line is not a JSON header", 1) from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SourceError(path, f"not a {FORMAT} file", 1)
    if header.get("version") != VERSION:
        raise SourceError(path, f"unsupported recording version {header.get('version')}", 1)
    return header


def read_recording(path: Path) -> Iterator[Chunk]:
    """Chunks of a recording, in the order they were recorded."""
    header = read_header(path)
    site, session = str(header["site"]), str(header["session"])
    try:
        with _open(path, "r") as fh:
            fh.readline()
            for line_no, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    stream = entry["stream"]
                    payload = json.dumps(entry["payload"]).encode()
                    msg = contract.decode(
                        contract.topic_for(site, session, stream), payload, now=math.inf
                    )
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise SourceError(path, f"malformed line: {exc}", line_no) from exc
                except contract.ContractError as exc:
                    raise SourceError(path, str(exc), line_no) from exc
                if isinstance(msg, contract.SampleMessage | contract.MarkerMessage):
                    yield Chunk.from_message(msg)
    except (OSError, EOFError) as exc:
        raise SourceError(path, f"cannot read: {exc}") from exc
