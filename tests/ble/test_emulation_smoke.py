"""The emulation itself: stock bleak scans, connects and receives notifications."""

from __future__ import annotations

import asyncio

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice

from rekindle.ingest.ble import hrs
from tests.ble.emulation import CENTRAL, BleEmulation
from tests.waiting import wait_until


async def test_bleak_scans_connects_and_gets_notifications(ble_emulation: BleEmulation) -> None:
    strap = ble_emulation.add_wearable("RK-STRAP-A", "hci1")
    found: asyncio.Queue[BLEDevice] = asyncio.Queue()
    # A detection callback, registered before scanning starts: bluezoo announces a device
    # once, right at StartDiscovery, before BleakScanner.find_device_by_name() listens.
    async with BleakScanner(
        lambda d, ad: found.put_nowait(d) if ad.local_name == "RK-STRAP-A" else None,
        bluez={"adapter": CENTRAL},
    ):
        device = await asyncio.wait_for(found.get(), 60)
    assert device.address == strap.address
    got: list[bytes] = []
    async with BleakClient(device, timeout=60, bluez={"adapter": CENTRAL}) as client:
        uuids = {s.uuid for s in client.services}
        assert hrs.HEART_RATE_SERVICE in uuids
        assert await client.read_gatt_char(hrs.BATTERY_LEVEL) == bytearray([87])
        await client.start_notify(hrs.HEART_RATE_MEASUREMENT, lambda _c, d: got.append(bytes(d)))
        await asyncio.to_thread(wait_until, lambda: len(got) >= 2, "two notifications")
    for raw in got:
        assert hrs.decode_heart_rate_measurement(raw).contact is True
