"""``rekindle devices scan``, ``rekindle ingest`` (BLE) and ``rekindle ble decode``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from bleak.exc import BleakError

from rekindle.cli import add_mqtt_password, mqtt_settings
from rekindle.cliconfig import UsageError, add_setting, async_stop_on_signals
from rekindle.ingest.ble import hrs
from rekindle.ingest.ble.errors import (
    AdapterError,
    BleError,
    DeviceIdKeyError,
    DeviceSpecError,
    ProfileError,
)
from rekindle.ingest.ble.manager import (
    DeviceManager,
    DeviceSpec,
    ManagerSettings,
    discover,
)
from rekindle.ingest.ble.pmd import PMD_SERVICE as POLAR_PMD_SERVICE
from rekindle.ingest.ble.profiles import load_profile, shipped_profiles
from rekindle.ingest.publisher import Publisher
from rekindle.mqtturl import MqttSettings

KNOWN_SERVICES = {
    hrs.HEART_RATE_SERVICE: "heart rate (hrs)",
    hrs.BATTERY_SERVICE: "battery",
    POLAR_PMD_SERVICE: "Polar PMD ECG/ACC (pmd)",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = subparsers.add_parser("devices", help="BLE devices nearby")
    devices_sub = devices.add_subparsers(dest="devices_command", required=True)
    scan = devices_sub.add_parser("scan", help="list nearby BLE devices and what they offer")
    scan.add_argument("--timeout", type=float, default=5.0, help="seconds to scan (default 5)")
    scan.add_argument("--adapter", default=None, help="BlueZ adapter, e.g. hci0")
    scan.set_defaults(func=cmd_scan)

    ingest = subparsers.add_parser(
        "ingest",
        help="stream BLE wearables to MQTT",
        description="Connect to BLE wearables and publish their samples to MQTT until "
        "interrupted. DEVICE is hrs:TARGET (Heart Rate Service), pmd:TARGET (Polar PMD: "
        "ECG 130 Hz and ACC 25 Hz) or eda:PROFILE:TARGET (a device profile, shipped name "
        "or .toml path); TARGET is an address, a name "
        "(pattern) or service=UUID; append @ID to set the device id. Shipped profiles: "
        + ", ".join(shipped_profiles()),
    )
    ingest.add_argument("--session", required=True, help="pseudonymous session id")
    add_setting(ingest, "site")
    ingest.add_argument(
        "--device", action="append", required=True, metavar="DEVICE", help="repeat for each device"
    )
    add_setting(ingest, "mqtt_url")
    add_mqtt_password(ingest)
    add_setting(
        ingest,
        "device_id_key_file",
        help="secret key for the pseudonymous device ids of devices given by address "
        f"without @ID (when unset: {_default_key_path()}, created when missing)",
    )
    ingest.add_argument("--adapter", default=None, help="BlueZ adapter, e.g. hci0")
    ingest.add_argument(
        "--scan-timeout",
        type=float,
        default=10.0,
        help="seconds to look for a device before retrying (default 10)",
    )
    ingest.add_argument(
        "--connect-timeout",
        type=float,
        default=15.0,
        help="seconds one connection attempt may take (default 15)",
    )
    ingest.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    ingest.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="file that keeps messages while the broker is away, also across "
        "restarts (default: memory only)",
    )
    ingest.add_argument(
        "--window",
        type=int,
        default=2000,
        metavar="N",
        help="keep up to N messages the analysis service has not acknowledged end to end "
        "(out/ack) and resend them after a broker restart; 0: broker acknowledgements only "
        "(default 2000)",
    )
    ingest.set_defaults(func=cmd_ingest)

    ble = subparsers.add_parser("ble", help="BLE debugging tools")
    ble_sub = ble.add_subparsers(dest="ble_command", required=True)
    decode = ble_sub.add_parser(
        "decode",
        help="decode a characteristic value and print JSON",
        description="Decode one GATT value, e.g. `rekindle ble decode --char 2a37 16 34 e4 04`.",
    )
    group = decode.add_mutually_exclusive_group(required=True)
    group.add_argument("--char", choices=["2a37", "2a38", "2a19"], help="standard characteristic")
    group.add_argument("--profile", help="device profile name or .toml path")
    decode.add_argument("hex", nargs="+", help="value bytes: '16 34 e4 04' or 1634e404")
    decode.set_defaults(func=cmd_decode)


def cmd_decode(args: argparse.Namespace) -> int:
    try:
        data = hrs.parse_hex(" ".join(args.hex))
    except ValueError as exc:
        raise UsageError(f"value bytes: {exc}") from exc
    decoders: dict[
        str, Callable[[bytes], hrs.HeartRateMeasurement | hrs.BodySensorLocation | hrs.BatteryLevel]
    ] = {
        "2a37": hrs.decode_heart_rate_measurement,
        "2a38": hrs.decode_body_sensor_location,
        "2a19": hrs.decode_battery_level,
    }
    if args.profile:  # a DecodeError or ProfileError is a runtime error (exit 1)
        profile = load_profile(args.profile)
        packet = profile.decode(data)
        out: dict[str, object] = {
            "profile": profile.name,
            "stream": profile.stream,
            "counter": packet.counter,
            "values": [round(v, 6) for v in packet.values],
        }
    else:
        out = decoders[args.char](data).to_json()
    print(json.dumps(out))
    return 0


def cmd_scan(args: argparse.Namespace) -> int:
    try:
        found = asyncio.run(discover(args.timeout, args.adapter))
    except (BleakError, OSError) as exc:
        raise AdapterError.explain(exc, args.adapter) from exc
    profiles = []
    for name in shipped_profiles():
        with contextlib.suppress(ProfileError):
            profiles.append(load_profile(name))
    print(f"{'ADDRESS':<18} {'RSSI':>5}  {'NAME':<24} OFFERS")
    for device, adv in found:
        offers = [KNOWN_SERVICES[u] for u in adv.service_uuids if u in KNOWN_SERVICES]
        offers += [
            f"{p.stream} (profile {p.name})" for p in profiles if p.service in adv.service_uuids
        ]
        unknown = [
            u
            for u in adv.service_uuids
            if u not in KNOWN_SERVICES and all(p.service != u for p in profiles)
        ]
        offers += unknown
        name = adv.local_name or device.name or "?"
        rssi = "" if adv.rssi is None else str(adv.rssi)
        print(f"{device.address:<18} {rssi:>5}  {name:<24} {', '.join(offers) or '-'}")
    print(f"{len(found)} device(s)")
    return 0


async def _ingest(
    args: argparse.Namespace, specs: list[DeviceSpec], settings: MqttSettings
) -> None:
    publisher = Publisher(
        settings,
        args.site,
        args.session,
        spool=args.spool,
        ack_window=max(args.window, 0) or None,
    )
    await asyncio.to_thread(publisher.start)
    manager = DeviceManager(
        publisher,
        specs,
        ManagerSettings(
            adapter=args.adapter,
            scan_timeout=args.scan_timeout,
            connect_timeout=args.connect_timeout,
        ),
    )
    stop = async_stop_on_signals()
    if args.duration is not None:
        asyncio.get_running_loop().call_later(args.duration, stop.set)
    try:
        await manager.run(stop)
    finally:
        await asyncio.to_thread(publisher.close)


def _default_key_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "rekindle" / "device-id.key"


def load_device_id_key(path: Path) -> bytes:
    """The key in ``path``; a new random one (mode 0600) when the file does not exist yet.
    Keep the file: the same key gives the same wearable the same id in every session."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another ingest created it meanwhile: use that one
            return load_device_id_key(path)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text + "\n")
        logging.getLogger(__name__).info("new device-id key in %s (keep it)", path)
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceSpecError(str(path), f"cannot read the device-id key: {exc}") from exc
    if len(text) < 32:
        raise DeviceSpecError(str(path), "device-id key shorter than 32 characters")
    return text.encode("ascii")


def parse_devices(texts: list[str], key_path: Path | None) -> list[DeviceSpec]:
    """The ``--device`` specs; the device-id key is read (or made) only if an address needs it."""
    key: bytes | None = None
    specs = []
    for text in texts:
        try:
            specs.append(DeviceSpec.parse(text, key))
        except DeviceIdKeyError:
            key = load_device_id_key(key_path or _default_key_path())
            specs.append(DeviceSpec.parse(text, key))
    return specs


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        specs = parse_devices(args.device, args.device_id_key_file)
    except BleError as exc:
        raise UsageError(str(exc)) from exc
    settings = mqtt_settings(args)  # a bad URL or password file is a usage error (exit 2)
    asyncio.run(_ingest(args, specs, settings))  # runtime errors: exit 1
    return 0
