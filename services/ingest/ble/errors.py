"""Errors of the BLE ingest. Every one derives from :class:`BleError`."""

from __future__ import annotations

from pathlib import Path

from services.ingest.errors import IngestError


class BleError(IngestError):
    """Root of every BLE ingest error."""


class DecodeError(BleError, ValueError):
    """A GATT value that does not follow its characteristic's format.

    ``char`` names the characteristic (``"2a37"`` or a profile name), ``payload`` is the raw
    value and ``offset`` the byte where decoding failed (``None`` when not byte-specific).
    """

    def __init__(self, char: str, payload: bytes, reason: str, offset: int | None = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{char} value {payload.hex(' ') or '<empty>'}: {reason}{where}")
        self.char = char
        self.payload = payload
        self.reason = reason
        self.offset = offset


class ProfileError(BleError):
    """A device profile that cannot be used; ``source`` is its file or name, ``key`` the field."""

    def __init__(self, source: str | Path, key: str, reason: str) -> None:
        super().__init__(f"profile {source}: {key}: {reason}")
        self.source = str(source)
        self.key = key
        self.reason = reason


class DeviceSpecError(BleError):
    """A ``--device`` argument that cannot be parsed."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"device spec {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason


class DeviceIdKeyError(DeviceSpecError):
    """A device given by address, without ``@ID``, and no key to derive its pseudonym."""


class DeviceNotFoundError(BleError):
    """No advertising device matched ``target`` (name, address or service UUID) in time."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__(f"no BLE device matching {target!r} found within {timeout:g} s")
        self.target = target
        self.timeout = timeout


class DeviceConnectionError(BleError):
    """Connecting to, or subscribing on, the device at ``address`` failed."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"BLE device {address}: {reason}")
        self.address = address
        self.reason = reason
