"""The one command-line convention of every ``rekindle`` command (``services/cli.py`` and plugins).

**Settings.** Connection settings and the site are *settings*: each one has a flag, an environment
variable ``REKINDLE_<KEY>`` and a key in the config file, and resolves in this order (the first
one that gives a value wins)::

    1. the flag on the command line          --mqtt mqtt://host:1883
    2. the environment variable              REKINDLE_MQTT_URL=mqtt://host:1883
    3. the config file (TOML, top-level keys) mqtt_url = "mqtt://host:1883"
    4. the default in :data:`SETTINGS`        mqtt://localhost:1883

The config file is named by ``--config FILE`` (before or after the command) or by
``REKINDLE_CONFIG``; an unknown key in it is an error. :data:`SETTINGS` is the one place where
every setting, its default and its help text are declared. ``DEFAULT_SITE`` is the site every
command uses when none is given, so a marker and the ingested data land on the same session.

**Errors and exit codes.** ``rekindle COMMAND: error: WHAT WAS WRONG[: what to do]`` on stderr, no
traceback. Exit code 2 for usage and configuration errors (a bad flag, a malformed URL or config
file, a missing setting), 1 for runtime errors (a broker, InfluxDB, BlueZ or a file that cannot be
used), 130 when interrupted, 0 otherwise. Commands raise :class:`UsageError` or one of the
packages' errors; :func:`run_command` turns them into the message and the exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rekindle.credentials import redact
from rekindle.errors import RekindleError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("rekindle")

ENV_PREFIX = "REKINDLE_"
#: The environment variable naming the config file (``--config`` wins over it).
CONFIG_ENV = "REKINDLE_CONFIG"
#: Secrets read from the environment by the commands (``rekindle.credentials.read_secret``), for
#: who prefers them to the ``*_password_file`` / ``influx_token_file`` settings; never from a flag.
SECRET_VARIABLES = ("REKINDLE_MQTT_PASSWORD", "REKINDLE_INFLUX_PASSWORD", "REKINDLE_INFLUX_TOKEN")
#: The site every command uses when none is given (flag, environment or config file).
DEFAULT_SITE = "clinic"
#: The broker every command uses when none is given (``demo`` starts its own instead).
DEFAULT_MQTT_URL = "mqtt://localhost:1883"

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(RekindleError):
    """A usage or configuration error: printed without a traceback, exit code 2."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: ``--flag``, ``REKINDLE_<KEY>`` and ``key`` in the config file."""

    key: str
    flag: str
    dest: str
    help: str
    metavar: str
    default: str | None = None
    path: bool = False  # the value is a file path

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


#: Every setting, its default and its help text: the one place they are declared.
SETTINGS: Mapping[str, Setting] = {
    s.key: s
    for s in (
        Setting("site", "--site", "site", "pseudonymous site id", "SITE", DEFAULT_SITE),
        Setting(
            "mqtt_url",
            "--mqtt",
            "mqtt",
            "broker URL, mqtt://user@host:port or mqtts://user@host:8883[?ca=FILE]; the password "
            "from --mqtt-password-file or REKINDLE_MQTT_PASSWORD",
            "URL",
            DEFAULT_MQTT_URL,
        ),
        Setting(
            "mqtt_password_file",
            "--mqtt-password-file",
            "mqtt_password_file",
            "file holding the broker password of the URL's user (or the password itself in "
            "REKINDLE_MQTT_PASSWORD)",
            "FILE",
            path=True,
        ),
        Setting("influx_url", "--influx", "influx", "InfluxDB URL, http://host:8086", "URL"),
        Setting("influx_db", "--influx-db", "influx_db", "InfluxDB 1.x database", "DB"),
        Setting("influx_rp", "--influx-rp", "influx_rp", "InfluxDB 1.x retention policy", "RP"),
        Setting("influx_org", "--influx-org", "influx_org", "InfluxDB 2.x/3.x organisation", "ORG"),
        Setting(
            "influx_bucket", "--influx-bucket", "influx_bucket", "InfluxDB 2.x/3.x bucket", "BUCKET"
        ),
        Setting(
            "influx_token_file",
            "--influx-token-file",
            "influx_token_file",
            "file holding the InfluxDB 2.x/3.x API token (or the token itself in "
            "REKINDLE_INFLUX_TOKEN)",
            "FILE",
            path=True,
        ),
        Setting(
            "influx_user",
            "--influx-user",
            "influx_user",
            "InfluxDB 1.x user (or http://user@host in the URL)",
            "USER",
        ),
        Setting(
            "influx_password_file",
            "--influx-password-file",
            "influx_password_file",
            "file holding the InfluxDB 1.x user's password (or the password itself in "
            "REKINDLE_INFLUX_PASSWORD)",
            "FILE",
            path=True,
        ),
        Setting(
            "device_id_key_file",
            "--device-id-key-file",
            "device_id_key_file",
            "secret key for the pseudonymous ids of BLE devices given by address",
            "FILE",
            path=True,
        ),
        Setting(
            "log_level",
            "--log-level",
            "log_level",
            "DEBUG, INFO, WARNING or ERROR (logs go to stderr)",
            "LEVEL",
            "INFO",
        ),
    )
}

_USE_PREFIX = "_rekindle_setting_"
_SOURCES = "_rekindle_setting_sources"


@dataclass(frozen=True, slots=True)
class _Use:
    """How one parser uses a setting (kept in the namespace until :func:`resolve`)."""

    key: str
    required: bool
    default: str | None
    from_environment: bool


_NO_DEFAULT = object()


def add_setting(
    parser: argparse.ArgumentParser,
    key: str,
    *,
    required: bool = False,
    default: Any = _NO_DEFAULT,
    help: str | None = None,
    from_environment: bool = True,
) -> None:
    """Add setting ``key``'s flag to ``parser``; its value resolves in the documented order.

    ``default`` overrides the setting's default for this command (``None``: no default);
    ``required`` makes a missing value a usage error; ``from_environment=False`` reads only the
    flag (``demo`` does not pick up a clinic's broker from the environment).
    """
    s = SETTINGS[key]
    value_default = s.default if default is _NO_DEFAULT else default
    sources = f"env {s.env}, config {s.key}" if from_environment else "flag only"
    shown = f"default {value_default}" if value_default is not None else "no default"
    if required and value_default is None:
        shown = "required"
    parser.add_argument(
        s.flag,
        dest=s.dest,
        default=None,
        metavar=s.metavar,
        help=f"{help or s.help} ({sources}; {shown})",
    )
    parser.set_defaults(
        **{_USE_PREFIX + s.dest: _Use(key, required, value_default, from_environment)}
    )


def load_config(path: Path) -> dict[str, str]:
    """The settings in TOML file ``path`` (top-level ``key = "value"``), checked."""
    import tomllib  # noqa: PLC0415 (only with a config file; every command starts faster)

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise UsageError(f"config file {path} does not exist: check --config/{CONFIG_ENV}") from exc
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {path} is not valid TOML: {exc}") from exc
    out: dict[str, str] = {}
    for key, value in data.items():
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise UsageError(f"config file {path}: unknown key {key!r} (known keys: {known})")
        if not isinstance(value, str):
            raise UsageError(
                f'config file {path}: {key} must be a string, e.g. {key} = "...", '
                f"not {type(value).__name__}"
            )
        out[key] = value
    return out


def resolve(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """Fill every setting still unset on the command line: environment, config file, default."""
    environ = os.environ if environ is None else environ
    uses = {
        name[len(_USE_PREFIX) :]: use
        for name, use in vars(args).items()
        if name.startswith(_USE_PREFIX)
    }
    if not uses:
        return args
    config_path = getattr(args, "config", None) or environ.get(CONFIG_ENV) or None
    config = load_config(Path(config_path)) if config_path else {}
    sources: dict[str, str] = getattr(args, _SOURCES, {})
    for dest, use in uses.items():
        delattr(args, _USE_PREFIX + dest)
        s = SETTINGS[use.key]
        value = getattr(args, dest, None)
        source = "flag"
        if value is None and use.from_environment:
            value, source = environ.get(s.env) or None, "env"
            if value is None:
                value, source = config.get(s.key), "config"
        if value is None:
            value, source = use.default, "default"
        sources[dest] = source
        if value is None and use.required:
            where = f', set {s.env} or put {s.key} = "..." in the config file (--config)'
            raise UsageError(
                f"no {s.help.split(',')[0]} given: pass {s.flag} {s.metavar}"
                + (where if use.from_environment else "")
            )
        setattr(args, dest, Path(value) if s.path and value is not None else value)
    setattr(args, _SOURCES, sources)
    return args


def setting_source(args: argparse.Namespace, dest: str) -> str | None:
    """Where setting ``dest`` came from: ``flag``, ``env``, ``config`` or ``default`` (None when
    ``args`` was not resolved by :func:`resolve`)."""
    sources: dict[str, str] = getattr(args, _SOURCES, {})
    return sources.get(dest)


class RekindleParser(argparse.ArgumentParser):
    """The root parser: resolves settings after parsing (so ``parse_args`` gives final values).

    Sub-command parsers are plain :class:`argparse.ArgumentParser` (they must not resolve before
    the root has seen ``--config``).
    """

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        try:
            resolve(ns)
        except UsageError as exc:
            command = getattr(ns, "command", None)
            self.exit(EXIT_USAGE, f"{self.prog}{' ' + command if command else ''}: error: {exc}\n")
        return ns, rest


def add_config_option(parser: argparse.ArgumentParser, *, root: bool) -> None:
    """``--config FILE`` on ``parser`` (and, for the root, on every sub-command below it)."""
    parser.add_argument(
        "--config",
        default=None if root else argparse.SUPPRESS,
        metavar="FILE",
        type=Path,
        help=f"TOML file with settings (env {CONFIG_ENV}); flags and REKINDLE_* variables "
        "win over it",
    )
    if root:
        for sub in _subparsers(parser):
            add_config_option(sub, root=False)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.append(sub)
                found.extend(_subparsers(sub))
    return found


def missing_help(parser: argparse.ArgumentParser) -> list[str]:
    """Every option (``command --flag``) in ``parser``'s tree without help text."""
    missing: list[str] = []

    def walk(p: argparse.ArgumentParser) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in dict.fromkeys(action.choices.values()):
                    walk(sub)
            elif action.help is None:
                name = action.option_strings[0] if action.option_strings else action.dest
                missing.append(f"{p.prog} {name}")

    walk(parser)
    return missing


# ----------------------------------------------------------------------------- running commands


def _error_kind(exc: BaseException) -> int | None:
    """The exit code for an error that gets a one-line message, or None for a real bug."""
    from rekindle import contract  # noqa: PLC0415
    from rekindle.analysis.core.errors import ConfigError  # noqa: PLC0415
    from rekindle.analysis.errors import AnalysisError  # noqa: PLC0415
    from rekindle.ingest.errors import IngestError  # noqa: PLC0415
    from rekindle.mqtturl import MqttUrlError  # noqa: PLC0415

    if isinstance(exc, UsageError | contract.ContractError | ConfigError | MqttUrlError):
        return EXIT_USAGE
    if isinstance(exc, IngestError | AnalysisError):
        return EXIT_RUNTIME
    return None


def _hint(exc: BaseException) -> str:
    """What to do, for errors whose message says only what went wrong."""
    from rekindle.analysis.errors import BrokerError, StorageError  # noqa: PLC0415
    from rekindle.ingest.errors import PublishError  # noqa: PLC0415

    if isinstance(exc, PublishError | BrokerError) and "connect" in str(exc):
        return ": is the broker running? check --mqtt or REKINDLE_MQTT_URL"
    if isinstance(exc, StorageError) and exc.status is None:
        return ": is InfluxDB running? check --influx or REKINDLE_INFLUX_URL"
    return ""


def run_command(
    args: argparse.Namespace, func: Callable[[argparse.Namespace], int] | None = None
) -> int:
    """Run ``args.func`` (or ``func``) under the error and exit-code policy above."""
    func = func or args.func
    command = " ".join(
        str(v) for v in (getattr(args, "command", None), *_nested_commands(args)) if v is not None
    )
    try:
        return int(func(args))
    except KeyboardInterrupt:
        sys.stderr.write(f"rekindle {command}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = _error_kind(exc)
        if code is None:
            raise
        # errors name URLs and settings: never with a password in them (as every log line)
        sys.stderr.write(redact(f"rekindle {command}: error: {exc}{_hint(exc)}\n"))
        return code


def _nested_commands(args: argparse.Namespace) -> list[object]:
    return [v for k, v in sorted(vars(args).items()) if k.endswith("_command")]


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT: every long-running command's way to stop cleanly."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def async_stop_on_signals() -> asyncio.Event:
    """:func:`stop_event_on_signals` for asyncio commands (call inside the running loop)."""
    import asyncio  # noqa: PLC0415 (~50 ms of imports that the other commands do not need)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(signum: int) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler, sig)
    return stop
