"""Run bluezoo (BlueZ D-Bus emulator) on the bus in ``DBUS_SYSTEM_BUS_ADDRESS``.

Started as a subprocess by :mod:`tests.ble.emulation`; prints ``READY`` once every adapter is
exported. One patch is applied to the emulator (never to bleak): on disconnect bluezoo keeps
the GATT objects it exported under the central's device, so a second connection to the same
device fails with ``EEXIST`` from sd-bus. Real BlueZ removes a non-bonded device's GATT
objects when the link drops; the patch does the same (unexport the links, stop forwarding
their notifications, clear ``ServicesResolved``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from bluezoo import bluezoo
from bluezoo.device import Device

_original_disconnect = Device.disconnect


async def _disconnect_and_drop_gatt(self: Any, uuid: str | None = None) -> None:
    await _original_disconnect(self, uuid)
    for link in list(self.services.values()):
        subscription = getattr(link, "client_props_changed_subscription", None)
        if subscription is not None:
            subscription.unsubscribe()
        self.peer_adapter.mock.remove_object(link)
    self.services.clear()
    if self.services_resolved:
        await self.ServicesResolved.set_async(False)


Device.disconnect = _disconnect_and_drop_gatt


async def _main(adapters: list[str], scan_interval: int) -> None:
    await bluezoo.startup(
        bus="system", adapters=adapters, auto_enable=True, scan_interval=scan_interval
    )
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await bluezoo.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-a", "--adapter", action="append", required=True)
    parser.add_argument("--scan-interval", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(_main(args.adapter, args.scan_interval))


if __name__ == "__main__":
    main()
