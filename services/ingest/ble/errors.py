"""Errors of the BLE ingest. Every one derives from :class:`BleError`."""

from __future__ import annotations

from pathlib import Path

from rekindle.ingest.errors import IngestError


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


class AdapterError(BleError):
    """BlueZ (the Bluetooth service), its D-Bus or the adapter cannot be used; says what to do."""

    def __init__(self, reason: str, adapter: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.adapter = adapter

    @classmethod
    def explain(cls, exc: BaseException, adapter: str | None = None) -> AdapterError:
        """Translate what bleak or the D-Bus socket raised into what the user should do."""
        text = str(exc)
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError) or (
            "ServiceUnknown" in text or "org.bluez was not provided" in text
        ):
            where = "no D-Bus system bus" if isinstance(exc, OSError) else "org.bluez not on D-Bus"
            return cls(
                f"BlueZ is not running ({where}): start bluetoothd (systemctl start bluetooth) "
                "or check D-Bus (systemctl status dbus; in a container mount "
                "/run/dbus/system_bus_socket)",
                adapter,
            )
        if isinstance(exc, PermissionError) or "AccessDenied" in text:
            return cls(
                f"BlueZ refused access ({exc}): run as a user in the 'bluetooth' group or as root",
                adapter,
            )
        if "adapter" in text.lower() or "No Bluetooth adapters found" in text:
            name = adapter or "the default adapter"
            return cls(
                f"Bluetooth adapter problem with {name} ({exc}): check `bluetoothctl list` and "
                "`bluetoothctl power on`, or pass --adapter hciN",
                adapter,
            )
        return cls(
            f"BLE scan failed ({type(exc).__name__}: {exc}): check `bluetoothctl show`", adapter
        )
