"""UUID helpers (pure): 16/32-bit SIG short forms expand onto the Bluetooth base UUID."""

from __future__ import annotations

import re
import uuid
from typing import Final

BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
_SHORT_RE: Final = re.compile(r"^(?:0x)?([0-9a-fA-F]{4}|[0-9a-fA-F]{8})$")


def normalize_uuid(text: str) -> str:
    """``"2a37"``, ``"0x2A37"`` or a full UUID -> lower-case 128-bit form."""
    text = text.strip()
    match = _SHORT_RE.match(text)
    if match:
        short = match.group(1).lower()
        return f"{short.zfill(8)}{BASE_SUFFIX}"
    try:
        return str(uuid.UUID(text))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a UUID (give 16-bit, 32-bit or 128-bit form)") from exc
