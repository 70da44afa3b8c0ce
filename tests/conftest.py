"""Shared fixtures: a real mosquitto and a real influxd per test session."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rekindle.analysis.core import Event
from rekindle.analysis.evaluate import read_phases
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.live_metrics import MetricsRunner
from rekindle.analysis.service import AnalysisService, ServiceStats
from rekindle.ingest.coalesce import MAX_SPEED_MESSAGE_S, coalesce
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import ReplayStats, replay
from rekindle.ingest.sources.base import Chunk, open_source
from rekindle.mqtturl import MqttSettings
from tests.compiled.build import BackgroundBuild
from tests.servers import InfluxD, Mosquitto

REPO = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures" / "external"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


#: Fixtures that replay a whole recording through the real servers, or build the compiled
#: core: a test using one is end-to-end and gets the ``slow`` mark, so ``pytest -m "not slow"``
#: is the fast loop. (Tests that are slow for another reason carry ``@pytest.mark.slow``.)
SLOW_FIXTURES = frozenset(
    {
        "s02_in_influx",
        "s02_eda_off_skin_in_influx",
        "dashboard_data",
        "off_skin_data",
        "lost_wearable_data",
        "gap_session",
        "gap_data",
        "compiled",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


#: The compiled core's build, started once the run is known to need it (see ``compiled_build``).
COMPILED_BUILD = pytest.StashKey[BackgroundBuild]()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building the compiled core now if a selected test needs it: the build (one core,
    ~40 s) then runs beside the tests before it (the fixture ``compiled`` waits for it)."""
    if session.config.option.collectonly:
        return
    if any("compiled" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[COMPILED_BUILD] = BackgroundBuild()


def pytest_unconfigure(config: pytest.Config) -> None:
    build = config.stash.get(COMPILED_BUILD, None)
    if build is not None:
        build.close()


@pytest.fixture(scope="session")
def compiled_build(request: pytest.FixtureRequest) -> BackgroundBuild:
    """The compiled core's build in the background (started here if collection did not)."""
    stash = request.config.stash
    if COMPILED_BUILD not in stash:
        stash[COMPILED_BUILD] = BackgroundBuild()
    return stash[COMPILED_BUILD]


@pytest.fixture(scope="session")
def mqtt_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    server = Mosquitto.start(tmp_path_factory.mktemp("mosquitto"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxD]:
    server = InfluxD.start(tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


def fixture_path(relative: str) -> Path:
    """A copied fixture under tests/fixtures (with its PROVENANCE.md)."""
    path = FIXTURES / relative
    if not path.exists():
        msg = f"fixture {relative} missing under {FIXTURES}"
        raise FileNotFoundError(msg)
    return path


S02 = "stress_predict_e4/Raw_data/S02"
S02_PHASES = "stress_predict_e4/time_log_phases.csv"


@dataclass
class ReplayedSession:
    """A recording replayed through mosquitto and the analysis service into influxd."""

    db: str
    site: str
    session: str
    replay: ReplayStats
    service: ServiceStats
    lines_written: int
    wall_s: float


def replay_into_influx(
    broker: Mosquitto,
    influx: InfluxD,
    source: Path | Iterable[Chunk],
    *,
    db: str,
    site: str,
    session: str,
    metrics: MetricsRunner | None = None,
    on_events: Callable[[str, str, list[Event]], None] | None = None,
) -> ReplayedSession:
    """Run the real analysis service and replay ``source`` at max speed into it (with
    ``metrics``, also until every NeuroKit2 metrics job is handed to the writer)."""
    influx.create_database(db)
    settings = MqttSettings.from_url(broker.url)
    writer = BufferedWriter(V1Transport(InfluxSettings(influx.url, database=db)))
    started = time.monotonic()
    service = AnalysisService(
        settings, writer, site=site, metrics=metrics, on_events=on_events
    ).start()
    try:
        with Publisher(settings, site, session, device="replay") as pub:
            chunks = open_source(source) if isinstance(source, Path) else source
            stats = replay(chunks, pub, speed=None)
        assert service.wait_sessions_finished(1, timeout=300), "analysis never saw the session end"
        assert service.stats.sessions_finished == 1
        assert service.wait_metrics(timeout=300), "NeuroKit2 metrics jobs never finished"
    finally:
        service.stop()
    return ReplayedSession(
        db, site, session, stats, service.stats, writer.written, time.monotonic() - started
    )


@pytest.fixture(scope="session")
def s02_in_influx(mqtt_broker: Mosquitto, influxd: InfluxD) -> ReplayedSession:
    """Stress-Predict S02 replayed once per test session into database ``rekindle``, with the
    NeuroKit2 metrics of its episodes, its segments between markers and its labelled phases."""
    phases = [
        (p.phase, p.start, p.end)
        for p in read_phases(fixture_path(S02_PHASES))
        if p.subject == "S02"
    ]
    return replay_into_influx(
        mqtt_broker,
        influxd,
        fixture_path(S02),
        db="rekindle",
        site="galway",
        session="S02",
        metrics=MetricsRunner(phases={"S02": phases}),
    )


def recording_start(chunks: Iterable[Chunk]) -> float:
    """Time of the first sample of a recording."""
    return min(c.start for c in chunks if c.stream != "marker")


#: Where (s after the recording's start) and how long S02's wristband is "taken off" below.
EDA_OFF_SKIN = (1500.0, 90.0)


def eda_off_skin(
    chunks: Iterable[Chunk], start: float, off: tuple[float, float]
) -> Iterator[Chunk]:
    """``chunks`` with the EDA samples in ``[start + off[0], + off[1])`` at 0 µS, as a wristband
    off the skin reads (open electrodes); every other sample unchanged."""
    lo, hi = start + off[0], start + off[0] + off[1]
    for c in chunks:
        if c.stream != "eda" or c.end < lo or c.start >= hi:
            yield c
            continue
        assert c.t0 is not None
        assert c.fs is not None
        t0, fs = c.t0, c.fs
        values = tuple(
            0.0 if lo <= t0 + i / fs < hi else v
            for i, v in enumerate(c.values)
            if isinstance(v, float)
        )
        assert len(values) == len(c.values)
        yield dataclasses.replace(c, values=values)


@pytest.fixture(scope="session")
def s02_eda_off_skin_in_influx(mqtt_broker: Mosquitto, influxd: InfluxD) -> ReplayedSession:
    """S02 with its wristband off the skin for 90 s (``EDA_OFF_SKIN``), into ``rekindle_off``,
    in the messages of ``rekindle replay --speed max`` (30 s of data each; ``s02_in_influx``
    replays 1-s messages, and the analysis stores the same lines for both: tests/test_coalesce.py
    and tests/test_e2e.py::test_replaying_again_duplicates_nothing), half the wall time."""
    chunks = list(open_source(fixture_path(S02)))
    return replay_into_influx(
        mqtt_broker,
        influxd,
        coalesce(eda_off_skin(chunks, recording_start(chunks), EDA_OFF_SKIN), MAX_SPEED_MESSAGE_S),
        db="rekindle_off",
        site="galway",
        session="S02-off-skin",
    )
