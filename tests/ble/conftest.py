"""Fixtures for the BLE tests: a private BlueZ emulation per test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bleak.backends.bluezdbus import manager

from tests.ble.emulation import BleEmulation


async def _close_bleak_bus() -> None:
    """Close the D-Bus connection bleak opened for this event loop (no leaked socket)."""
    instance = manager._global_instances.pop(asyncio.get_running_loop(), None)
    bus = getattr(instance, "_bus", None)
    if bus is not None:
        bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.wait_for_disconnect(), 2)


@pytest.fixture
async def ble_emulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[BleEmulation]:
    emulation = BleEmulation.start(tmp_path)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", emulation.bus_address)
    try:
        yield emulation
    finally:
        await _close_bleak_bus()
        emulation.stop()
