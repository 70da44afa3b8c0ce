"""The ``rekindle`` command line. The only place (with its plugins) that sets up logging.

Every command follows :mod:`rekindle.cliconfig` (docs/cli.md): settings (``--site``, ``--mqtt``,
``--influx*``, password files, ``--log-level``) resolve flag > ``REKINDLE_*`` environment
variable > ``--config FILE`` (TOML) > default; errors are one line, exit code 2 for
usage/configuration, 1 at run time. The secrets themselves can also come from
``REKINDLE_MQTT_PASSWORD``, ``REKINDLE_INFLUX_PASSWORD`` and ``REKINDLE_INFLUX_TOKEN``. No password
is ever needed in process arguments, and log lines mask URL passwords.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rekindle.analysis import params, plugins
from rekindle.cliconfig import (
    DEFAULT_SITE,
    RekindleParser,
    UsageError,
    add_config_option,
    add_setting,
    run_command,
    setting_source,
    stop_event_on_signals,
)
from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S

if TYPE_CHECKING:
    import threading
    from collections.abc import Iterator

    from rekindle.analysis.core import AnalysisConfig
    from rekindle.analysis.influx import InfluxSettings
    from rekindle.analysis.partition import Partition
    from rekindle.analysis.service import AnalysisService
    from rekindle.ingest.sources.base import Chunk, ReadOptions
    from rekindle.mqtturl import MqttSettings

log = logging.getLogger("rekindle")

#: Modules that contribute sub-commands through ``register(subparsers)``.
PLUGIN_MODULES = (
    "rekindle.ingest.ble.cli",
    "rekindle.analysis.evaluate",
    "rekindle.analysis.health",
    "rekindle.analysis.alert_relay",
    "rekindle.dashboards.cli",
)

#: A usage error (kept under its old name for plugins): see :class:`rekindle.cliconfig.UsageError`.
CliError = UsageError

__all__ = ["EXIT_STUCK", "CliError", "build_parser", "main", "run_analysis", "version"]


def version() -> str:
    """The installed Rekindle's version (``unknown`` when run from a tree never installed)."""
    from importlib import metadata  # noqa: PLC0415 (~60-190 ms: only for --version)

    try:
        return metadata.version("rekindle")
    except metadata.PackageNotFoundError:
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked for (reading the package metadata costs more
    than a whole ``analyze`` start otherwise)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:  # noqa: ARG002
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        _namespace: argparse.Namespace,
        _values: object,
        _option_string: str | None = None,
    ) -> None:
        print(f"rekindle {version()}")
        parser.exit()


def add_mqtt(parser: argparse.ArgumentParser) -> None:
    """``--mqtt`` and ``--mqtt-password-file``: every command that talks to a broker."""
    add_setting(parser, "mqtt_url")
    add_mqtt_password(parser)


def add_mqtt_password(parser: argparse.ArgumentParser, *, from_environment: bool = True) -> None:
    """``--mqtt-password-file`` (also used by the BLE ingest command)."""
    add_setting(parser, "mqtt_password_file", from_environment=from_environment)


def add_site(parser: argparse.ArgumentParser) -> None:
    add_setting(parser, "site")


INFLUX_SETTINGS = (
    "influx_db",
    "influx_rp",
    "influx_org",
    "influx_bucket",
    "influx_token_file",
    "influx_user",
    "influx_password_file",
)


def add_influx(
    parser: argparse.ArgumentParser, *, required: bool, from_environment: bool = True
) -> None:
    add_setting(parser, "influx_url", required=required, from_environment=from_environment)
    for key in INFLUX_SETTINGS:
        add_setting(parser, key, from_environment=from_environment)


def _secret(file: Path | None, env_name: str, option: str) -> str | None:
    from rekindle.credentials import SecretError, read_secret, register_secret  # noqa: PLC0415

    try:
        value = read_secret(file, env_name, file_option=option)
    except SecretError as exc:
        raise CliError(str(exc)) from exc
    register_secret(value)
    return value


def _warn_password_in_argv(args: argparse.Namespace, option: str, dest: str, better: str) -> None:
    from rekindle.credentials import redact, register_secret, split_userinfo  # noqa: PLC0415

    url = getattr(args, dest)
    password = split_userinfo(url)[2]
    register_secret(password)
    if password and setting_source(args, dest) in ("flag", None):
        log.warning(
            "the %s URL %s carries a password, which every user of this machine can read in "
            "the process list: put it in %s instead",
            option,
            redact(url),
            better,
        )


def influx_settings(args: argparse.Namespace) -> InfluxSettings:
    from rekindle.analysis.errors import StorageError  # noqa: PLC0415
    from rekindle.analysis.influx import InfluxSettings  # noqa: PLC0415
    from rekindle.credentials import redact, split_userinfo  # noqa: PLC0415

    token = _secret(args.influx_token_file, "REKINDLE_INFLUX_TOKEN", "--influx-token-file")
    password = _secret(
        args.influx_password_file, "REKINDLE_INFLUX_PASSWORD", "--influx-password-file"
    )
    _, url_user, url_password = split_userinfo(args.influx)
    _warn_password_in_argv(
        args, "--influx", "influx", "--influx-password-file or REKINDLE_INFLUX_PASSWORD"
    )
    if url_password is not None and password is not None:
        raise CliError(
            f"--influx {redact(args.influx)}: the password is given twice (URL and "
            "--influx-password-file/REKINDLE_INFLUX_PASSWORD): keep only the file or variable"
        )
    user = args.influx_user or url_user
    if password is not None and user is None:
        raise CliError("an InfluxDB password is given but no user: add --influx-user")
    try:
        return InfluxSettings(
            url=args.influx,
            database=args.influx_db,
            retention_policy=args.influx_rp,
            username=user,
            password=password if password is not None else url_password,
            org=args.influx_org,
            bucket=args.influx_bucket,
            token=token,
        )
    except StorageError as exc:
        raise CliError(str(exc)) from exc


def mqtt_settings(args: argparse.Namespace) -> MqttSettings:
    """The broker settings of ``--mqtt`` with the password from ``--mqtt-password-file`` or
    ``REKINDLE_MQTT_PASSWORD`` (or, discouraged, from the URL itself)."""
    import dataclasses  # noqa: PLC0415

    from rekindle.mqtturl import MqttSettings, MqttUrlError  # noqa: PLC0415

    try:
        settings = MqttSettings.from_url(args.mqtt)
    except MqttUrlError as exc:
        raise CliError(str(exc)) from exc
    password = _secret(args.mqtt_password_file, "REKINDLE_MQTT_PASSWORD", "--mqtt-password-file")
    _warn_password_in_argv(args, "--mqtt", "mqtt", "--mqtt-password-file or REKINDLE_MQTT_PASSWORD")
    if password is None:
        return settings
    if settings.password is not None:
        raise CliError(
            f"--mqtt {settings.url}: the password is given twice (URL and "
            "--mqtt-password-file/REKINDLE_MQTT_PASSWORD): keep only the file or variable"
        )
    if settings.username is None:
        raise CliError(f"--mqtt {settings.url}: a password is given but no user: mqtt://USER@host")
    return dataclasses.replace(settings, password=password)


def add_read_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="NAME=STREAM:UNIT",
        help="CSV/XDF: what a column holds (eda:uS, hr:bpm, rr:ms, acc_x:g, time, time:ms, "
        "marker, ignore); repeat for each column",
    )
    parser.add_argument(
        "--start",
        type=float,
        default=None,
        metavar="UNIX",
        help="unix time of time 0 for files with relative times (CSV seconds, XDF LSL clock)",
    )


def read_options(args: argparse.Namespace) -> ReadOptions:
    from rekindle.ingest.sources.base import ReadOptions  # noqa: PLC0415

    columns = {}
    for item in getattr(args, "column", []):
        name, sep, what = item.partition("=")
        if not sep or not name or not what:
            raise CliError(f"--column {item!r}: write NAME=STREAM:UNIT, e.g. 'EDA=eda:uS'")
        columns[name] = what
    return ReadOptions(columns, getattr(args, "start", None))


def open_chunks(
    source: str, *, speed: float | None = None, options: ReadOptions | None = None
) -> tuple[str, Iterator[Chunk]]:
    """:func:`rekindle.ingest.sources.open_spec`, with its errors as command-line errors."""
    from rekindle.ingest.errors import SourceError  # noqa: PLC0415
    from rekindle.ingest.sources import open_spec  # noqa: PLC0415

    try:
        return open_spec(source, speed=speed, options=options)
    except SourceError as exc:
        raise CliError(str(exc)) from exc


# ------------------------------------------------------------------------------- sub-commands


def cmd_replay(args: argparse.Namespace) -> int:
    from rekindle import contract  # noqa: PLC0415
    from rekindle.ingest.publisher import Publisher  # noqa: PLC0415
    from rekindle.ingest.replay import parse_speed, replay  # noqa: PLC0415

    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        raise CliError(f"--speed: {exc}") from exc
    settings = mqtt_settings(args)
    stop = stop_event_on_signals()
    if args.window < 0:
        raise CliError(f"--window must be 0 (off) or a positive number, not {args.window}")
    if args.message_s is not None and not 0 < args.message_s <= contract.MAX_SPAN_S:
        raise CliError(
            f"--message-s must be within (0, {contract.MAX_SPAN_S:g}], not {args.message_s:g}"
        )
    # Connect first: a broker that is down is reported at once, not after reading the recording.
    with Publisher(
        settings,
        args.site,
        args.session,
        device="replay",
        spool=args.spool,
        ack_window=args.window or None,
    ) as pub:
        _, chunks = open_chunks(args.source, speed=speed, options=read_options(args))
        message_s = args.message_s
        if message_s is None:
            message_s = MAX_SPEED_MESSAGE_S if speed is None else 1.0
        if message_s > 1.0:
            from rekindle.ingest.coalesce import coalesce  # noqa: PLC0415

            chunks = coalesce(chunks, message_s)
        stats = replay(chunks, pub, speed=speed, stop=stop)
    print(
        f"replayed {stats.samples} samples in {stats.chunks} messages "
        f"({(stats.last or 0) - (stats.first or 0):.0f} s of data) in {stats.wall_s:.1f} s"
    )
    return 0


def cmd_analysis(args: argparse.Namespace) -> int:
    from rekindle.analysis.core import is_compiled  # noqa: PLC0415

    partitions = _partitions(args)
    config = params.from_args(args)
    log.info("analysis core: %s", "compiled (mypyc)" if is_compiled() else "pure Python")
    if changed := params.changed(config):
        log.info("analysis parameters changed from the defaults: %s", changed)
    settings = mqtt_settings(args)
    influx = influx_settings(args)
    _check_state_layout(args, partitions)
    if partitions is not None and args.workers > 1:
        return _supervise_workers(args, partitions)
    stop = stop_event_on_signals()
    if partitions is not None:
        return _run_partition_worker(args, partitions, config, settings, influx, stop)
    service = _analysis_service(args, config, settings, influx).start()
    log.info("analysis running; send SIGTERM or SIGINT to stop")
    return run_analysis(service, stop, args.stall_limit)


def _analysis_service(
    args: argparse.Namespace,
    config: AnalysisConfig,
    settings: MqttSettings,
    influx: InfluxSettings,
    partition: Partition | None = None,
) -> AnalysisService:
    """The service ``rekindle analysis`` runs; with ``partition``, that partition's service:
    its own client id, checkpoint, write-ahead log, dead-letter file and heartbeat."""
    from rekindle.analysis.committer import CHECKPOINT_EVERY_S  # noqa: PLC0415
    from rekindle.analysis.influx import BufferedWriter, make_transport  # noqa: PLC0415
    from rekindle.analysis.service import AnalysisService  # noqa: PLC0415

    def own(path: Path | None) -> Path | None:
        if path is None or partition is None:
            return path
        return path.with_name(f"{path.name}.p{partition.index}")

    deadletter = args.influx_deadletter
    if deadletter is None and args.spool is not None:
        deadletter = args.spool.with_name(args.spool.name + ".rejected.jsonl")
    writer = BufferedWriter(
        make_transport(influx), spool_path=own(args.spool), deadletter_path=own(deadletter)
    )
    metrics = None
    if args.metrics or args.phases is not None:
        from rekindle.analysis.live_metrics import MetricsRunner  # noqa: PLC0415

        phases: dict[str, list[tuple[str, float, float]]] = {}
        if args.phases is not None:
            from rekindle.analysis.evaluate import read_phases  # noqa: PLC0415

            for p in read_phases(args.phases):
                phases.setdefault(p.subject, []).append((p.phase, p.start, p.end))
        metrics = MetricsRunner(config, phases=phases)
    client_id = args.client_id
    if partition is not None:
        client_id = f"{client_id}-p{partition.index}"
    return AnalysisService(
        settings,
        writer,
        site=args.site,
        config=config,
        client_id=client_id,
        persistent_session=client_id is not None,
        state_path=own(args.state),
        heartbeat_path=own(args.heartbeat),
        partition=partition,
        metrics=metrics,
        checkpoint_every_s=(
            CHECKPOINT_EVERY_S if args.checkpoint_every is None else args.checkpoint_every
        ),
        fork_snapshots=args.fork_snapshots,
    )


def _partitions(args: argparse.Namespace) -> int | None:
    """The number of partitions (None: the single-process service), checked."""
    if args.workers < 1:
        raise CliError(f"--workers must be 1 or more, not {args.workers}")
    partitions = args.partitions
    if partitions is None and args.workers > 1:
        partitions = args.workers
    if partitions is None:
        if args.worker_name is not None:
            raise CliError("--worker-name is for a partition worker: add --partitions P")
        return None
    if partitions < 1:
        raise CliError(f"--partitions must be 1 or more, not {partitions}")
    if args.client_id is None or args.state is None:
        raise CliError(
            "--workers/--partitions need --client-id and --state: a partition moves between "
            "workers with its checkpoint (--state) and its persistent MQTT session (--client-id)"
        )
    if args.workers > 1 and args.worker_name is not None:
        raise CliError("--worker-name names one worker: the --workers supervisor names its own")
    return int(partitions)


def _check_state_layout(args: argparse.Namespace, partitions: int | None) -> None:
    """Refuse to start when open sessions are checkpointed in the other layout (one process vs
    partitions): they would start again without their state, and the broker's queue for the
    other client id would not be read."""
    from rekindle.analysis.service import open_sessions  # noqa: PLC0415

    state: Path | None = args.state
    if state is None:
        return
    if partitions is not None:
        found = {state: open_sessions(state)}
        how = "the single-process service (no --workers/--partitions)"
    else:
        record = state.with_name(f"{state.name}.leases") / "partitions"
        try:
            count = int(record.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return
        paths = [state.with_name(f"{state.name}.p{i}") for i in range(count)]
        found = {path: open_sessions(path) for path in paths}
        how = f"workers (--partitions {count})"
    for path, sessions in found.items():
        if sessions:
            shown = ", ".join(f"{site}/{session}" for site, session in sessions[:5])
            raise CliError(
                f"{path} holds {len(sessions)} open session(s) ({shown}) of {how}: run it that "
                "way until they end, or remove the file to start them again without their state"
            )


def _worker_heartbeat(args: argparse.Namespace, name: str | None) -> Path | None:
    """The heartbeat file of one worker under the supervisor (``<heartbeat>.<name>``)."""
    path: Path | None = args.heartbeat
    if path is None or name is None:
        return path
    return path.with_name(f"{path.name}.{name}")


def _run_partition_worker(
    args: argparse.Namespace,
    partitions: int,
    config: AnalysisConfig,
    settings: MqttSettings,
    influx: InfluxSettings,
    stop: threading.Event,
) -> int:
    import socket  # noqa: PLC0415

    from rekindle.analysis.partition import Partition  # noqa: PLC0415
    from rekindle.analysis.workers import LeaseDir, PartitionWorker, WorkerError  # noqa: PLC0415

    name = args.worker_name or socket.gethostname()
    state: Path = args.state
    leases = LeaseDir(state.with_name(f"{state.name}.leases"), partitions, name)

    def make(index: int) -> AnalysisService:
        return _analysis_service(args, config, settings, influx, Partition(index, partitions))

    def partition_heartbeat(index: int) -> Path | None:
        path: Path | None = args.heartbeat
        return None if path is None else path.with_name(f"{path.name}.p{index}")

    worker = PartitionWorker(
        leases,
        make,
        stall_limit_s=args.stall_limit,
        heartbeat_path=_worker_heartbeat(args, getattr(args, "supervised_as", None)),
        partition_heartbeat=partition_heartbeat,
    )
    log.info("analysis worker %s running; send SIGTERM or SIGINT to stop", name)
    try:
        stuck = worker.run(stop)
    except WorkerError as exc:
        raise CliError(str(exc)) from exc
    if stuck:
        log.critical("analysis worker stuck: exiting with status %d to be restarted", EXIT_STUCK)
        return EXIT_STUCK
    return 0


def _worker_process(args: argparse.Namespace, name: str, supervisor: int) -> None:
    """Entry point of one worker process started by ``rekindle analysis --workers K``."""
    import os  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    vars(args).update(workers=1, worker_name=name, supervised_as=name)
    setup_logging(str(args.log_level).upper(), tag=name)

    def watch() -> None:
        # a supervisor that is SIGKILLed cannot stop its workers: they stop themselves
        while os.getppid() == supervisor:
            time.sleep(1.0)
        log.warning("the supervisor (pid %d) is gone: worker %s stops", supervisor, name)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="rekindle-supervisor-watch", daemon=True).start()
    sys.exit(run_command(args))


def _supervise_workers(args: argparse.Namespace, partitions: int) -> int:
    import multiprocessing  # noqa: PLC0415
    import os  # noqa: PLC0415

    from rekindle.analysis import health  # noqa: PLC0415
    from rekindle.analysis.workers import supervise, write_combined  # noqa: PLC0415

    names = [f"w{i}" for i in range(args.workers)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads
    vars(args).update(partitions=partitions)

    def spawn(name: str) -> multiprocessing.process.BaseProcess:
        return context.Process(
            target=_worker_process,
            args=(args, name, os.getpid()),
            name=f"rekindle-analysis-{name}",
        )

    def beat() -> None:
        """The service's heartbeat: fresh only while every worker's heartbeat is."""
        if args.heartbeat is None:
            return
        beats = []
        for name in names:
            path = _worker_heartbeat(args, name)
            assert path is not None
            try:
                beat = health.read(path)
            except health.HealthError:
                return
            if health.verdict(beat, time.time()) is not None:
                return
            beats.append(beat)
        write_combined(args.heartbeat, beats)

    stop = stop_event_on_signals()
    log.info(
        "analysis: %d workers share %d partitions; send SIGTERM or SIGINT to stop",
        args.workers,
        partitions,
    )
    return supervise(names, spawn, stop, on_tick=beat)


#: Exit status of ``rekindle analysis`` when its worker is stuck (EX_SOFTWARE).
EXIT_STUCK = 70


def run_analysis(service: AnalysisService, stop: threading.Event, stall_limit_s: float) -> int:
    """Wait for ``stop``, then stop ``service`` cleanly (0); or return ``EXIT_STUCK`` at once
    when the worker spends more than ``stall_limit_s`` on one message (0: never)."""
    poll_s = min(1.0, stall_limit_s / 2) if stall_limit_s > 0 else 1.0
    while not stop.wait(poll_s):
        if stall_limit_s > 0 and service.check_stall(stall_limit_s):
            # The stuck worker cannot be interrupted: exit so that the supervisor (compose
            # ``restart: unless-stopped``) starts a fresh process; the stalling message is
            # remembered and dead-lettered if the broker delivers it again.
            log.critical(
                "analysis worker stuck: exiting with status %d to be restarted", EXIT_STUCK
            )
            return EXIT_STUCK
    service.stop()
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from rekindle.analysis.batch import analyze_batch, analyze_file  # noqa: PLC0415
    from rekindle.analysis.report import write_index  # noqa: PLC0415

    config = params.from_args(args)
    out_dir = Path(args.out)
    formats = ("csv", *(args.format or ()))
    phases: list[tuple[str, str, float, float]] = []
    if args.phases is not None:
        from rekindle.analysis.evaluate import read_phases  # noqa: PLC0415

        phases = [(p.subject, p.phase, p.start, p.end) for p in read_phases(args.phases)]
    metrics = args.metrics or bool(phases)
    if args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, not {args.jobs}")
    options = read_options(args)
    if len(args.sources) == 1:
        result = analyze_file(
            args.sources[0],
            out_dir,
            config,
            plots=not args.no_plots,
            formats=formats,
            options=options,
            metrics=metrics,
            phases=phases,
            parallel_beats=True,
        )
        if result.error is not None:
            raise CliError(result.error)
        write_index([result.target] if result.target else [], out_dir / "index.html")
        print(f"{result.name}: {result.episodes} episodes -> {result.target}")
        return 0
    results = analyze_batch(
        args.sources,
        out_dir,
        config,
        plots=not args.no_plots,
        formats=formats,
        metrics=metrics,
        phases=phases,
        jobs=args.jobs,
        report=lambda line: print(line, flush=True),
        options=options,
    )
    failed = [r for r in results if r.error is not None]
    write_index([r.target for r in results if r.target is not None], out_dir / "index.html")
    print(f"analyzed {len(results) - len(failed)} of {len(results)} sources -> {out_dir}")
    if failed:
        print(f"failed: {', '.join(r.source for r in failed)}", file=sys.stderr)
        return 1
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from rekindle.ingest.errors import SourceError  # noqa: PLC0415
    from rekindle.ingest.sources.formats import detect, list_formats  # noqa: PLC0415

    if args.list_formats:
        print(list_formats())
        return 0
    if args.source is None:
        raise CliError("give a recording to read, or --list-formats")
    try:
        fmt = detect(Path(args.source))
    except SourceError as exc:
        raise CliError(str(exc)) from exc
    _, chunks = open_chunks(args.source, options=read_options(args))
    counts: dict[tuple[str, str], list[float]] = {}
    for chunk in chunks:
        entry = counts.setdefault((chunk.stream, chunk.device), [0, chunk.start, chunk.end])
        entry[0] += len(chunk.values)
        entry[1] = min(entry[1], chunk.start)
        entry[2] = max(entry[2], chunk.end)
    print(f"{args.source}: {fmt.name}")
    for (stream, device), (n, first, last) in sorted(counts.items()):
        print(f"  {stream:<7} {device:<10} {int(n):>9} samples  {first:.3f} .. {last:.3f}")
    return 0


RECORD_RESEND_GRACE_S = 10.0


def cmd_record(args: argparse.Namespace) -> int:
    from rekindle.ingest.record import Recorder  # noqa: PLC0415

    settings = mqtt_settings(args)
    stop = stop_event_on_signals()
    recorder = Recorder(settings, args.site, args.session, Path(args.out)).start()
    print(f"recording {args.site}/{args.session} to {args.out}", flush=True)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.is_set() and not recorder.done.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(0.2)
    if recorder.done.is_set():  # resends of what is missing may still be on their way
        grace = time.monotonic() + RECORD_RESEND_GRACE_S
        while recorder.missing() and time.monotonic() < grace and not stop.is_set():
            stop.wait(0.2)
    missing = recorder.missing()
    count = recorder.stop()
    state = "complete" if recorder.done.is_set() else "not ended (no 'end' from every device)"
    print(f"recorded {count} messages to {args.out}: session {state}")
    if recorder.duplicates:
        print(f"{recorder.duplicates} resent duplicate(s) recorded once")
    if missing:
        print(f"missed {missing.total} message(s): {missing.describe()}", file=sys.stderr)
        return 1
    return 0


def cmd_mark(args: argparse.Namespace) -> int:
    from rekindle.ingest.publisher import Publisher  # noqa: PLC0415

    settings = mqtt_settings(args)
    when = time.time() if args.time is None else args.time
    with Publisher(settings, args.site, args.session, device=args.device) as pub:
        pub.send_markers(args.device, [when], [args.text])
    print(f"marked {args.text!r} at {when:.3f} in {args.site}/{args.session}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rekindle.demo import DemoOptions, run_demo  # noqa: PLC0415
    from rekindle.ingest.replay import parse_speed  # noqa: PLC0415

    try:
        speed = parse_speed(args.speed)
    except ValueError as exc:
        raise CliError(f"--speed: {exc}") from exc
    influx = influx_settings(args) if args.influx else None
    mqtt = mqtt_settings(args) if args.mqtt else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "demo.log"
    log_to_file(log_path)  # the live view owns the terminal
    options = DemoOptions(
        mqtt=mqtt,
        influx=influx,
        source=args.source,
        speed=speed,
        out=out,
        seed=args.seed,
        session=args.session,
        site=args.site,
        log_path=log_path,
        report=not args.no_report,
    )
    return run_demo(options, stop_event_on_signals())


def log_to_file(path: Path) -> None:
    """Send the log to ``path`` instead of stderr (same format, passwords still masked)."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    for old in list(root.handlers):
        handler.setFormatter(old.formatter)
        for flt in old.filters:
            handler.addFilter(flt)
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)


#: Options of the root parser that take a value (skipped when finding the command word).
_ROOT_VALUE_OPTIONS = ("--log-level", "--config")


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is not an option or its value)."""
    words = iter(argv)
    for word in words:
        if word in _ROOT_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line. Given the ``argv`` to parse, a built-in command (``analyze``,
    ``replay``, ...) skips importing the plugin modules (BLE, dashboards): a batch analysis then
    does not pay for them at every start."""
    parser = RekindleParser(
        prog="rekindle",
        description="Streaming emotional-arousal tracking from consumer wearables.",
        epilog="Settings resolve flag > REKINDLE_* environment variable > --config FILE (TOML) "
        f"> default; the default site is {DEFAULT_SITE!r}. Exit codes: 0 ok, 1 runtime error, "
        "2 usage or configuration error. See docs/cli.md.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    add_setting(parser, "log_level")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
    )

    p = sub.add_parser("demo", help="the whole pipeline on embedded defaults (no servers)")
    add_setting(
        p,
        "mqtt_url",
        default=None,
        from_environment=False,
        help="use this broker instead of the embedded one",
    )
    add_mqtt_password(p, from_environment=False)
    add_influx(p, required=False, from_environment=False)
    p.add_argument("--source", default="sim", help="'sim', 'sim:SEED' or a recording path")
    p.add_argument("--speed", default="60", help="times real time, or 'max' (default 60)")
    p.add_argument("--out", default="rekindle-demo", help="output folder (default ./rekindle-demo)")
    p.add_argument("--seed", type=int, default=1, help="simulator seed")
    p.add_argument("--session", default="demo", help="session id (default demo)")
    p.add_argument(
        "--no-report", action="store_true", help="skip session.png and report.html (faster)"
    )
    add_site(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("replay", help="publish a recording (or 'sim') over MQTT")
    p.add_argument(
        "source", help="a recording (see 'rekindle read --list-formats'), 'sim' or 'sim:SEED'"
    )
    p.add_argument("--session", required=True, help="pseudonymous session id")
    add_read_options(p)
    add_site(p)
    p.add_argument("--speed", default="1", help="times real time, or 'max' (default 1)")
    add_mqtt(p)
    p.add_argument(
        "--spool",
        type=Path,
        default=None,
        help="file that keeps messages while the broker is away (default: memory)",
    )
    p.add_argument(
        "--window",
        type=int,
        default=500,
        metavar="N",
        help="at most N messages not yet acknowledged end to end by the analysis service "
        "(out/ack); they are resent after a broker restart. 0: broker acknowledgements only "
        "(default 500, below mosquitto's default max_queued_messages of 1000)",
    )
    p.add_argument(
        "--message-s",
        type=float,
        default=None,
        metavar="S",
        help="join each stream's samples into messages of up to S seconds of data (fewer "
        "messages; the analysis widens its lateness allowance to match). Default "
        f"{MAX_SPEED_MESSAGE_S:g} with --speed max, else 1 (as live publishers send)",
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("analysis", help="run the live analysis service until SIGTERM")
    add_mqtt(p)
    add_influx(p, required=True)
    add_setting(p, "site", default="+", help="only this site ('+': all sites)")
    p.add_argument(
        "--client-id",
        default=None,
        help="stable MQTT client id: the broker then queues messages while away",
    )
    p.add_argument(
        "--spool", type=Path, default=None, help="file for points that InfluxDB could not take yet"
    )
    p.add_argument(
        "--influx-deadletter",
        type=Path,
        default=None,
        metavar="FILE",
        help="JSON lines of points InfluxDB refuses to parse or store, with its reason "
        "(default: SPOOL.rejected.jsonl beside --spool; without either they are only logged)",
    )
    p.add_argument(
        "--state",
        type=Path,
        default=None,
        help="checkpoint file: open sessions are saved here every minute and on stop, and "
        "restored on start (use with --client-id so the broker queues messages meanwhile)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=float,
        default=None,
        metavar="S",
        help="with --state, write the checkpoint (and out/ack, which it covers) at most every "
        "S seconds instead of at every commit (default 0); e.g. 2 when every publisher keeps "
        "what out/ack does not cover, as rekindle ingest and replay do: with broker "
        "acknowledgements alone a crash would lose the last S seconds from the analysis state "
        "(docs/scaling.md)",
    )
    p.add_argument(
        "--heartbeat",
        type=Path,
        default=None,
        help="file the worker rewrites every 5 s (for 'rekindle health' and health checks)",
    )
    p.add_argument(
        "--stall-limit",
        type=float,
        default=120.0,
        metavar="S",
        help="exit (status 70, for the supervisor to restart) when the worker spends more than "
        "S seconds on one message; that message is then dead-lettered if delivered again "
        "(default 120; 0 disables)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="K",
        help="run K worker processes that share the sessions: each session is handled by one "
        "worker at a time and moves with its checkpoint when a worker dies or joins "
        "(needs --client-id and --state; docs/scaling.md). Default 1: one process",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        metavar="P",
        help="split the sessions into P partitions by a hash of site and session (default: "
        "K with --workers K). Without --workers, run one worker of a group: every worker "
        "started with the same --state and --partitions takes a fair share",
    )
    p.add_argument(
        "--worker-name",
        default=None,
        metavar="NAME",
        help="this worker's name in its group (default: the host name); unique per group",
    )
    p.add_argument(
        "--fork-snapshots",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="with --state, pickle and write each checkpoint snapshot in a forked child, so the "
        "worker stops only for the fork (~4 ms) instead of the pickling (~0.8 ms per open "
        "session); --no-fork-snapshots pickles it on the worker thread (default: on where the "
        "system can fork)",
    )
    p.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NeuroKit2 interval metrics (EDA, HRV time/frequency) of each closed episode and of "
        "each segment between markers (once the data passed the marker closing it), in a "
        "separate process: measurements episode_metrics and segment_metrics (default: on)",
    )
    p.add_argument(
        "--phases",
        type=Path,
        default=None,
        metavar="FILE",
        help="CSV subject,phase,start_unix,end_unix: at a session's end also the metrics of "
        "each labelled phase whose subject is the session id",
    )
    params.add_arguments(p)
    p.set_defaults(func=cmd_analysis)

    p = sub.add_parser("mark", help="put a clinician marker on a session's timeline")
    p.add_argument(
        "text",
        help="what happened: 'dose given', 'tears', 'music changed', ...",
    )
    p.add_argument("--session", required=True, help="pseudonymous session id")
    add_site(p)
    add_mqtt(p)
    p.add_argument("--device", default="clinician", help="who marks (default: clinician)")
    p.add_argument("--time", type=float, default=None, help="unix time of the event (default: now)")
    p.set_defaults(func=cmd_mark)

    p = sub.add_parser("analyze", help="analyze recordings offline with the live detectors")
    p.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="E4 folders, Rekindle recordings or 'sim'"
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder: one sub-folder per source (episodes.csv, features.csv, ...)",
    )
    p.add_argument(
        "--no-plots", action="store_true", help="skip session.png and the report's figure (faster)"
    )
    p.add_argument(
        "--format",
        action="append",
        choices=("csv", "parquet"),
        default=None,
        help="output tables as CSV (always) and also Parquet (--format parquet, needs pyarrow)",
    )
    p.add_argument(
        "--metrics",
        action="store_true",
        help="NeuroKit2 interval metrics (EDA, HRV time/frequency) per episode and per segment "
        "between markers: episodes.csv nk_* columns, segments.csv (slower, see docs/method.md)",
    )
    p.add_argument(
        "--phases",
        type=Path,
        default=None,
        metavar="FILE",
        help="CSV subject,phase,start_unix,end_unix: also metrics per labelled phase of each "
        "recording whose name is the subject (implies --metrics)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="analyse a batch on N processes (e.g. 2 for two cores); one line per finished file",
    )
    add_read_options(p)
    params.add_arguments(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("read", help="what a recording holds, or the formats Rekindle reads")
    p.add_argument(
        "source", nargs="?", metavar="SOURCE", help="a recording: prints its format and streams"
    )
    p.add_argument("--list-formats", action="store_true", help="list the supported formats")
    add_read_options(p)
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("record", help="record a session's MQTT streams to a file")
    p.add_argument("--session", required=True, help="pseudonymous session id")
    add_site(p)
    add_mqtt(p)
    p.add_argument(
        "--out", required=True, type=Path, help="recording file (.jsonl, or .jsonl.gz to compress)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds (default: at the session's end status)",
    )
    p.set_defaults(func=cmd_record)

    built_in = argv is not None and _command_of(argv) in sub.choices
    for name in () if built_in else PLUGIN_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                continue  # that part of Rekindle is not installed in this build
            raise
        module.register(sub)
    add_config_option(parser, root=True)
    return parser


def setup_logging(level: str, tag: str | None = None) -> None:
    """Logs go to stderr, passwords masked (the one place that configures logging); ``tag``
    (a worker's name) goes in ``[tag]`` before each logger name."""
    from rekindle.credentials import RedactingFilter  # noqa: PLC0415

    where = "%(name)s" if tag is None else f"[{tag}] %(name)s"
    logging.basicConfig(
        level=level, format=f"%(asctime)s %(levelname)s {where}: %(message)s", stream=sys.stderr
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    if logging.getLogger().level > logging.DEBUG:
        for noisy in ("amqtt", "transitions", "bleak", "dbus_fast"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    level = str(args.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        parser.exit(
            2,
            f"rekindle: error: --log-level {args.log_level!r}: use DEBUG, INFO, WARNING or ERROR\n",
        )
    setup_logging(level)
    detectors = plugins.names(os.environ.get(plugins.ENV, ""))
    if not detectors:
        return run_command(args)

    def with_detectors(parsed: argparse.Namespace) -> int:
        plugins.load(detectors)  # (a module that fails to import: a usage error, exit 2)
        return int(parsed.func(parsed))

    return run_command(args, with_detectors)


if __name__ == "__main__":
    sys.exit(main())
