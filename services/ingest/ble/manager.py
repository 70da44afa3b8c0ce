"""Device manager: find, connect, subscribe and keep BLE wearables streaming, on ``bleak``.

One :class:`DeviceManager` runs every device of a session concurrently (chest strap and
wristband); each device has its own task, so one that is away never blocks another.

* **Scan** by address, name (``fnmatch`` pattern) or advertised service UUID. One shared
  scanner per manager, with its detection callback registered *before* scanning starts (a
  device announced only once, at scan start, is not missed).
* **Connect** with a timeout, read battery, subscribe to every feed of the device (HRS
  0x2A37, Polar PMD ECG/ACC, declarative profile characteristics) and write their start
  commands.
* **Reconnect** forever: while the device is not advertising the shared scan keeps listening
  (passive, no backoff needed); connection attempts that fail, and reconnects after a drop,
  wait a capped, randomised exponential backoff. Every attempt is logged.
* **Notify callbacks** only stamp the host receive time and enqueue. A per-device consumer
  task passes the events to a pure :class:`.assembler.StreamAssembler` (decode, time-stamp,
  gap bookkeeping) and publishes its output in order from one worker thread.
* **Every disconnect** publishes a ``lost`` status at once and, per stream that had data, a
  gap record ``(start, end)`` = (time of the last sample before the drop, time of the first
  sample after it), sent just before that first sample. A profile packet-counter jump
  (notifications lost while connected) produces a gap the same way. A drop that lasts until
  shutdown gets a gap ending at the shutdown time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fnmatch
import hashlib
import hmac
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from rekindle.contract import ContractError, DeviceState, SampleStream
from rekindle.ingest.ble import hrs, pmd
from rekindle.ingest.ble.assembler import (
    BatteryChanged,
    Connected,
    Disconnected,
    Feed,
    LinkEvent,
    Notification,
    OutGap,
    Outgoing,
    OutSamples,
    OutStatus,
    ReconnectRecord,
    Shutdown,
    StreamAssembler,
)
from rekindle.ingest.ble.errors import (
    AdapterError,
    DecodeError,
    DeviceConnectionError,
    DeviceIdKeyError,
    DeviceNotFoundError,
    DeviceSpecError,
)
from rekindle.ingest.ble.pmd import PmdFeed
from rekindle.ingest.ble.profiles import DeviceProfile, load_profile
from rekindle.ingest.ble.timestamps import ClockSettings
from rekindle.ingest.ble.uuids import normalize_uuid
from rekindle.ingest.errors import IngestError

log = logging.getLogger(__name__)

_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class Target:
    """How to recognise a device in advertisements."""

    kind: Literal["address", "name", "service"]
    value: str

    @classmethod
    def parse(cls, text: str) -> Target:
        text = text.strip()
        if not text:
            raise DeviceSpecError(text, "empty device address or name")
        if _MAC_RE.match(text):
            return cls("address", text.upper())
        if text.lower().startswith("service="):
            try:
                return cls("service", normalize_uuid(text.split("=", 1)[1]))
            except ValueError as exc:
                raise DeviceSpecError(text, str(exc)) from exc
        return cls("name", text)

    def matches(self, device: BLEDevice, adv: AdvertisementData) -> bool:
        if self.kind == "address":
            return device.address.upper() == self.value
        if self.kind == "service":
            return self.value in {u.lower() for u in adv.service_uuids}
        name = adv.local_name or device.name or ""
        return fnmatch.fnmatchcase(name, self.value)

    def __str__(self) -> str:
        return self.value if self.kind != "service" else f"service={self.value}"


def pseudonymous_id(address: str, key: bytes) -> str:
    """The device id of a BLE ``address``: ``ble-`` and 12 hex digits of HMAC-SHA256(key,
    address). Stable for one key (the same wearable keeps its id across sessions), and without
    the key the address cannot be recovered from it (unlike any unkeyed hash: there are only
    2^48 addresses)."""
    digest = hmac.new(key, address.upper().encode("ascii"), hashlib.sha256).hexdigest()
    return f"ble-{digest[:12]}"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One ``--device`` argument: ``hrs:TARGET``, ``pmd:TARGET`` (Polar ECG 130 Hz + ACC
    25 Hz) or ``KIND:PROFILE:TARGET`` (e.g. ``eda:rekindle-eda-ref:TARGET``).

    ``TARGET`` is an address (``AA:BB:CC:DD:EE:FF``), a name or name pattern (``Polar H10*``)
    or ``service=UUID``. Add ``@ID`` to choose the device id used in MQTT (default: for an
    address its keyed pseudonym, :func:`pseudonymous_id`; else derived from the name or
    service). Specs with the same target share one connection.
    """

    feed: Literal["hrs", "profile", "pmd"]
    target: Target
    device_id: str
    profile: DeviceProfile | None = None
    pmd: PmdFeed | None = None

    @property
    def label(self) -> str:
        return self.profile.name if self.profile is not None else self.feed

    @classmethod
    def parse(cls, text: str, id_key: bytes | None = None) -> DeviceSpec:
        """Parse one ``--device``. An address target without ``@ID`` gets the device id
        :func:`pseudonymous_id` keyed by ``id_key`` (required then), so that no MAC address
        reaches a topic, tag or payload."""
        body, _, dev_id = text.partition("@")
        kind, sep, rest = body.partition(":")
        if not sep:
            raise DeviceSpecError(text, "expected hrs:TARGET, pmd:TARGET or eda:PROFILE:TARGET")
        kind = kind.lower()
        profile: DeviceProfile | None = None
        if kind in ("hrs", "pmd"):
            target_text = rest
        else:
            name, sep, target_text = (
                rest.partition(":") if not _MAC_RE.match(rest) else ("", "", rest)
            )
            if not sep:
                raise DeviceSpecError(text, f"expected {kind}:PROFILE:TARGET")
            profile = load_profile(name)
            if profile.stream != kind:
                raise DeviceSpecError(
                    text, f"profile {profile.name} streams {profile.stream}, not {kind}"
                )
        # an address contains ':'; everything after the kind (and profile) is the target
        target = Target.parse(target_text)
        if dev_id:
            device_id = dev_id
        elif target.kind == "address":
            if id_key is None:
                raise DeviceIdKeyError(
                    text,
                    "an address needs a device-id key for its pseudonym, or name the "
                    "device with @ID",
                )
            device_id = pseudonymous_id(target.value, id_key)
        else:
            device_id = _ID_BAD.sub("-", str(target)).strip("-")[:64] or "device"
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", device_id):
            raise DeviceSpecError(text, f"device id {device_id!r} must be A-Z a-z 0-9 _ . -")
        if kind == "pmd":
            return cls("pmd", target, device_id, pmd=PmdFeed())
        return cls("hrs" if kind == "hrs" else "profile", target, device_id, profile)

    @property
    def assembler_feed(self) -> Feed:
        return self.pmd if self.feed == "pmd" else self.profile


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``min(max_delay, initial * factor**attempt)``, then multiplied by a
    random factor in ``[1 - jitter, 1]`` so that devices do not retry in lock-step."""

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.max_delay, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """``adapter``: BlueZ adapter (None = bleak's default); ``scan_timeout``: one scan round
    while looking for a device; ``connect_timeout``: connect + service discovery;
    ``battery_interval``: seconds between battery re-reads on a connected device (each
    change is published as an ``online`` status with the new level)."""

    adapter: str | None = None
    scan_timeout: float = 10.0
    connect_timeout: float = 15.0
    battery_interval: float = 300.0
    backoff: Backoff = field(default_factory=Backoff)
    clock: ClockSettings = field(default_factory=ClockSettings)


class SamplePublisher(Protocol):
    """What the manager needs from :class:`rekindle.ingest.publisher.Publisher`."""

    def send_samples(
        self,
        stream: SampleStream,
        device: str,
        values: Sequence[float] | Sequence[tuple[float, float, float]],
        *,
        t0: float | None = None,
        fs: float | None = None,
        t: Sequence[float] | None = None,
    ) -> object: ...

    def send_status(
        self,
        device: str,
        state: DeviceState,
        t: float,
        *,
        battery: int | None = None,
        rssi: int | None = None,
        detail: str | None = None,
    ) -> object: ...

    def send_gap(self, device: str, stream: SampleStream, start: float, end: float) -> object: ...


# ------------------------------------------------------------------------------- scanning


class SharedScanner:
    """One BLE scan serving every device link that is looking for its device."""

    def __init__(self, adapter: str | None) -> None:
        self.adapter = adapter
        self._waiters: list[tuple[Target, asyncio.Future[tuple[BLEDevice, AdvertisementData]]]] = []
        self._seen: dict[str, tuple[BLEDevice, AdvertisementData, float]] = {}
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()

    def _kwargs(self) -> dict[str, object]:
        return {"bluez": {"adapter": self.adapter}} if self.adapter else {}

    def _on_advertisement(self, device: BLEDevice, adv: AdvertisementData) -> None:
        # transport callback: remember and hand over, nothing else
        self._seen[device.address.upper()] = (device, adv, time.monotonic())
        for target, fut in self._waiters:
            if not fut.done() and target.matches(device, adv):
                fut.set_result((device, adv))

    def forget(self, address: str) -> None:
        self._seen.pop(address.upper(), None)

    async def find(
        self, target: Target, timeout: float, max_age: float = 30.0
    ) -> tuple[BLEDevice, AdvertisementData] | None:
        now = time.monotonic()
        for device, adv, seen in list(self._seen.values()):
            if now - seen <= max_age and target.matches(device, adv):
                return device, adv
        fut: asyncio.Future[tuple[BLEDevice, AdvertisementData]] = (
            asyncio.get_running_loop().create_future()
        )
        entry = (target, fut)
        self._waiters.append(entry)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._scan(), name="ble-scan")
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.remove(entry)
            self._idle.set()

    async def _scan(self) -> None:
        # the outer loop restarts the scan when a link starts looking while it was stopping
        while self._waiters:
            log.debug("scanning started")
            try:
                async with BleakScanner(
                    self._on_advertisement,
                    **self._kwargs(),  # type: ignore[arg-type]
                ):
                    while self._waiters:
                        self._idle.clear()
                        await self._idle.wait()
            except (BleakError, OSError) as exc:
                log.warning("%s (retrying)", AdapterError.explain(exc, self.adapter))
                await asyncio.sleep(1.0)
            log.debug("scanning stopped")

    async def close(self) -> None:
        if self._task is not None:
            self._idle.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def discover(
    timeout: float, adapter: str | None = None
) -> list[tuple[BLEDevice, AdvertisementData]]:
    """Scan for ``timeout`` seconds; every device seen with its latest advertisement."""
    seen: dict[str, tuple[BLEDevice, AdvertisementData]] = {}

    def on_adv(device: BLEDevice, adv: AdvertisementData) -> None:
        seen[device.address] = (device, adv)

    kwargs: dict[str, object] = {"bluez": {"adapter": adapter}} if adapter else {}
    async with BleakScanner(on_adv, **kwargs):  # type: ignore[arg-type]
        await asyncio.sleep(timeout)
    return sorted(seen.values(), key=lambda x: -(x[1].rssi or -999))


# ---------------------------------------------------------------------------- device links


@dataclass(slots=True)
class LinkStats:
    connects: int = 0
    disconnects: int = 0
    attempts: int = 0


class DeviceLink:
    """One physical device (one connection) and its feeds.

    The connection task finds, connects and subscribes; notify callbacks stamp and enqueue;
    the consumer task hands events to a :class:`StreamAssembler` and publishes its output.
    """

    def __init__(
        self,
        specs: Sequence[DeviceSpec],
        publisher: SamplePublisher,
        scanner: SharedScanner,
        settings: ManagerSettings,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.specs = list(specs)
        self.target = specs[0].target
        self.device_id = specs[0].device_id
        self.publisher = publisher
        self.scanner = scanner
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.executor = executor
        self.stats = LinkStats()
        self.assembler = StreamAssembler(
            self.device_id, [s.assembler_feed for s in self.specs], settings.clock
        )
        self.connected = asyncio.Event()
        self._queue: asyncio.Queue[LinkEvent] = asyncio.Queue()
        self._battery: int | None = None

    @property
    def gaps(self) -> list[OutGap]:
        return self.assembler.gaps

    @property
    def reconnects(self) -> list[ReconnectRecord]:
        return self.assembler.reconnects

    # -- connection task ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        consumer = asyncio.create_task(self._consume(), name=f"ble-consume-{self.device_id}")
        attempt = 0
        try:
            while not stop.is_set():
                self.stats.attempts += 1
                try:
                    if await self._session(stop):
                        attempt = 0
                except DeviceNotFoundError as exc:
                    # scanning is passive listening: keep listening, no backoff needed
                    log.info("device %s: still looking: %s", self.device_id, exc)
                    continue
                except (BleakError, DeviceConnectionError, TimeoutError, OSError) as exc:
                    log.warning("device %s: connection attempt failed: %s", self.device_id, exc)
                if stop.is_set():
                    break
                delay = self.settings.backoff.delay(attempt, self.rng)
                attempt += 1
                log.info(
                    "device %s (%s): reconnect attempt %d in %.2f s",
                    self.device_id,
                    self.target,
                    attempt,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        finally:
            self._queue.put_nowait(Shutdown(self.clock()))
            await consumer

    async def _session(self, stop: asyncio.Event) -> bool:
        """Find, connect, stream until disconnected or stopped; True if it connected."""
        finding = asyncio.create_task(
            self.scanner.find(self.target, self.settings.scan_timeout),
            name=f"ble-find-{self.device_id}",
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({finding, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not finding.done():
            finding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await finding
            return False
        found = finding.result()
        if found is None:
            raise DeviceNotFoundError(str(self.target), self.settings.scan_timeout)
        device, adv = found
        disconnected = asyncio.Event()
        dropped_at: list[float] = []

        def on_disconnect(_client: BleakClient) -> None:
            # transport callback: note the time and wake the session, nothing else
            dropped_at.append(self.clock())
            disconnected.set()

        kwargs: dict[str, object] = (
            {"bluez": {"adapter": self.settings.adapter}} if self.settings.adapter else {}
        )
        client = BleakClient(
            device,
            disconnected_callback=on_disconnect,
            timeout=self.settings.connect_timeout,
            **kwargs,  # type: ignore[arg-type]
        )
        log.info("device %s: connecting to %s (%s)", self.device_id, device.address, adv.local_name)
        try:
            await asyncio.wait_for(client.connect(), self.settings.connect_timeout + 1)
        except (BleakError, TimeoutError) as exc:
            self.scanner.forget(device.address)
            raise DeviceConnectionError(device.address, f"connect failed: {exc}") from exc
        online = False
        try:
            self._check_feeds(client)  # a device without our characteristics is not "online"
            await self._read_battery(client)
            # queued before subscribing, so "online" precedes the first sample
            self._queue.put_nowait(Connected(self.clock(), device.address, self._battery, adv.rssi))
            online = True
            await self._subscribe(client)
            self.stats.connects += 1
            self.connected.set()
            await self._connected_until(client, stop, disconnected)
        except (BleakError, DeviceConnectionError, TimeoutError) as exc:
            log.warning("device %s: setting up the connection failed: %s", self.device_id, exc)
        finally:
            self.connected.clear()
            if online or dropped_at:
                # the device may be gone: find it advertising again before reconnecting
                self.scanner.forget(device.address)
            if client.is_connected and stop.is_set():
                await self._stop_commands(client)
            if client.is_connected:
                with contextlib.suppress(BleakError, TimeoutError, EOFError):
                    await client.disconnect()
            if online and not stop.is_set():
                self.stats.disconnects += 1
                t_lost = dropped_at[0] if dropped_at else self.clock()
                self._queue.put_nowait(Disconnected(t_lost, "link lost"))
        return online

    async def _connected_until(
        self, client: BleakClient, stop: asyncio.Event, disconnected: asyncio.Event
    ) -> None:
        """Wait for a stop or a drop; re-read the battery every ``battery_interval``."""
        stopped = asyncio.create_task(stop.wait())
        dropped = asyncio.create_task(disconnected.wait())
        try:
            while True:
                done, _ = await asyncio.wait(
                    {stopped, dropped},
                    timeout=self.settings.battery_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if done:
                    return
                previous = self._battery
                await self._read_battery(client)
                if self._battery is not None and self._battery != previous:
                    self._queue.put_nowait(BatteryChanged(self.clock(), self._battery))
        finally:
            stopped.cancel()
            dropped.cancel()

    async def _read_battery(self, client: BleakClient) -> None:
        self._battery = None
        char = client.services.get_characteristic(hrs.BATTERY_LEVEL)
        if char is None:
            return
        try:
            self._battery = hrs.decode_battery_level(
                bytes(await client.read_gatt_char(char))
            ).percent
        except (BleakError, DecodeError) as exc:
            log.warning("device %s: cannot read battery level: %s", self.device_id, exc)

    def _check_feeds(self, client: BleakClient) -> None:
        for spec in self.specs:
            if spec.pmd is not None:
                uuids = [pmd.PMD_CONTROL_POINT, pmd.PMD_DATA]
            elif spec.profile is not None:
                uuids = [spec.profile.characteristic]
                uuids += [c.characteristic for c in (spec.profile.start,) if c is not None]
            else:
                uuids = [hrs.HEART_RATE_MEASUREMENT]
            for uuid in uuids:
                if client.services.get_characteristic(uuid) is None:
                    raise DeviceConnectionError(
                        client.address, f"has no characteristic {uuid} for feed {spec.label}"
                    )

    async def _subscribe(self, client: BleakClient) -> None:
        for i, spec in enumerate(self.specs):
            if spec.pmd is not None:
                await client.start_notify(pmd.PMD_CONTROL_POINT, self._callback(i, control=True))
                await client.start_notify(pmd.PMD_DATA, self._callback(i))
                for command in spec.pmd.start_commands():
                    await client.write_gatt_char(pmd.PMD_CONTROL_POINT, command, response=True)
                continue
            uuid = (
                hrs.HEART_RATE_MEASUREMENT
                if spec.profile is None
                else (spec.profile.characteristic)
            )
            await client.start_notify(uuid, self._callback(i))
            if spec.profile is not None and spec.profile.start is not None:
                cmd = spec.profile.start
                await client.write_gatt_char(cmd.characteristic, cmd.value, response=cmd.response)
        log.info(
            "device %s: streaming (%s), battery %s%%",
            self.device_id,
            ", ".join(s.label for s in self.specs),
            self._battery,
        )

    async def _stop_commands(self, client: BleakClient) -> None:
        for spec in self.specs:
            commands: list[tuple[str, bytes, bool]] = []
            if spec.profile is not None and spec.profile.stop is not None:
                cmd = spec.profile.stop
                commands.append((cmd.characteristic, cmd.value, cmd.response))
            if spec.pmd is not None:
                commands += [(pmd.PMD_CONTROL_POINT, c, True) for c in spec.pmd.stop_commands()]
            for char, value, response in commands:
                try:
                    await client.write_gatt_char(char, value, response=response)
                except (BleakError, TimeoutError) as exc:
                    log.warning("device %s: stop command failed: %s", self.device_id, exc)

    def _callback(
        self, feed: int, *, control: bool = False
    ) -> Callable[[BleakGATTCharacteristic, bytearray], None]:
        def on_notify(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self._queue.put_nowait(Notification(feed, self.clock(), bytes(data), control))

        return on_notify

    # -- consumer: decode, stamp, publish ----------------------------------------------

    def _publish(self, out: Outgoing) -> None:
        if isinstance(out, OutSamples):
            self.publisher.send_samples(
                out.stream, self.device_id, out.values, t0=out.t0, fs=out.fs, t=out.t
            )
        elif isinstance(out, OutStatus):
            self.publisher.send_status(
                self.device_id,
                out.state,
                out.t,
                battery=out.battery,
                rssi=out.rssi,
                detail=out.detail,
            )
        else:
            self.publisher.send_gap(self.device_id, out.stream, out.start, out.end)

    async def _consume(self) -> None:
        """Publish in event order, off the event loop (the Publisher may block on
        back-pressure while the broker is away)."""
        loop = asyncio.get_running_loop()
        while True:
            event = await self._queue.get()
            for out in self.assembler.handle(event):
                try:
                    if self.executor is None:
                        self._publish(out)
                    else:
                        await loop.run_in_executor(self.executor, self._publish, out)
                except (IngestError, ContractError) as exc:
                    # never let one bad message stop the device's stream
                    log.error(
                        "device %s: could not publish %s: %s",
                        self.device_id,
                        type(out).__name__,
                        exc,
                    )
            if isinstance(event, Shutdown):
                return


class DeviceManager:
    """Runs every device of a session until :meth:`run`'s ``stop`` event is set."""

    def __init__(
        self,
        publisher: SamplePublisher,
        specs: Sequence[DeviceSpec],
        settings: ManagerSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not specs:
            raise ValueError("give at least one device")
        self.settings = settings or ManagerSettings()
        self.scanner = SharedScanner(self.settings.adapter)
        groups: dict[str, list[DeviceSpec]] = {}
        for spec in specs:
            group = groups.setdefault(f"{spec.target.kind}:{spec.target.value}", [])
            if group and group[0].device_id != spec.device_id:
                raise DeviceSpecError(
                    f"@{spec.device_id}",
                    f"{spec.target} is already device {group[0].device_id!r}; one id per device",
                )
            group.append(spec)
        ids = [g[0].device_id for g in groups.values()]
        if len(set(ids)) != len(ids):
            raise DeviceSpecError(",".join(ids), "two devices have the same id; add @ID")
        rng = rng or random.Random()
        # one publishing thread keeps the event loop free and the publish order intact
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "ble-publish")
        self.links = [
            DeviceLink(
                group,
                publisher,
                self.scanner,
                self.settings,
                clock=clock,
                rng=random.Random(rng.random()),
                executor=self.executor,
            )
            for group in groups.values()
        ]

    def link(self, device_id: str) -> DeviceLink:
        for link in self.links:
            if link.device_id == device_id:
                return link
        raise KeyError(device_id)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(link.run(stop), name=f"ble-link-{link.device_id}")
            for link in self.links
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await self.scanner.close()
            self.executor.shutdown(wait=True)
