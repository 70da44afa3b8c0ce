"""A detector registered from a module of its own (tests/extra_detector.py: skin temperature from
the ``temp`` stream the core ignores, and "heart rate above a threshold") reaches every output
without a change to them: features.csv, the DataFrame, the report, ``--param`` (in process and on
the command line), the line protocol on a real influxd and the MQTT payload on a real mosquitto,
and a panel of the live and review dashboards whose queries return its values.
It changes nothing the core computes, is chunk-invariant and survives a checkpoint (pickle)."""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import paho.mqtt.client as mqtt
import pandas as pd
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from rekindle.analysis import schema
from rekindle.analysis.core import AnalysisConfig, Event, FeatureRow, SampleBatch, SessionAnalyzer
from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.extensions import (
    DetectorSpec,
    FeatureField,
    register,
    registered,
    unregister,
)
from rekindle.analysis.influx import BufferedWriter, InfluxSettings, V1Transport
from rekindle.analysis.offline import AnalysisResult, run_pipeline, write_outputs
from rekindle.analysis.params import build_config, changed
from rekindle.analysis.pipeline import to_input
from rekindle.analysis.points import event_lines
from rekindle.analysis.report import html_report, write_report
from rekindle.analysis.service import AnalysisService, feature_payload
from rekindle.dashboards.generate import render_all
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.replay import replay
from rekindle.ingest.sources.base import Chunk, regular_chunks
from rekindle.ingest.sources.simulator import ScriptedEpisode, SimulationScript, simulate
from rekindle.mqtturl import MqttSettings
from tests.conftest import REPO, S02, fixture_path
from tests.dashboards.grafana import queries as dashboard_queries
from tests.dashboards.grafana import render
from tests.servers import InfluxD, Mosquitto
from tests.waiting import GENEROUS_S, wait_until

MODULE = "tests.extra_detector"
START = 1.7e9
TEMP_FS = 4.0
PARAMS = ["skin_temp.window_s=5", "skin_temp.hr_threshold_bpm=70"]
WINDOW_S, THRESHOLD = 5.0, 70.0
FIELDS = ["skin_temp_c", "hr_above"]


@pytest.fixture
def detector() -> Iterator[ModuleType]:
    """The detector module, imported (which registers it) and unregistered afterwards."""
    module = importlib.import_module(MODULE)
    register(module.SPEC)
    yield module
    unregister(module.SPEC.name)
    sys.modules.pop(MODULE, None)


def temperature() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Seeded skin temperature at 4 Hz over the 10-min session (°C)."""
    rng = np.random.default_rng(7)
    n = int(600 * TEMP_FS)
    times = START + np.arange(n) / TEMP_FS
    values = 33.0 + 0.4 * np.sin(np.arange(n) / 400.0) + rng.normal(0.0, 0.02, n)
    return times, values


def session() -> list[Chunk]:
    """A 10-min simulated session (one surge with release) plus the skin temperature, in time
    order as a replay sends it."""
    script = SimulationScript(duration=600.0, episodes=(ScriptedEpisode(330.0, 150.0, 1.0),))
    chunks = list(simulate(script, seed=5, start_time=START))
    _, values = temperature()
    chunks += regular_chunks("temp", "e4", START, TEMP_FS, values.tolist())
    return sorted(chunks, key=lambda c: c.start)


Values = dict[float, tuple[float | None, float | None]]


def expected(rows: list[FeatureRow]) -> Values:
    """The two fields computed directly from the raw temperature and each row's heart rate."""
    times, values = temperature()
    out: Values = {}
    for r in rows:
        inside = values[(times >= r.time - WINDOW_S) & (times < r.time)]
        temp = float(inside.mean()) if len(inside) else None
        out[r.time] = (temp, None if r.hr is None else float(r.hr > THRESHOLD))
    return out


def check_values(got: Values, rows: list[FeatureRow]) -> None:
    want = expected(rows)
    assert got.keys() == want.keys()
    with_temp = 0
    for t, (temp, above) in want.items():
        g_temp, g_above = got[t]
        assert g_above == above, t
        if temp is None:
            assert g_temp is None, t
        else:
            with_temp += 1
            assert g_temp is not None
            assert math.isclose(g_temp, temp, rel_tol=1e-12), t
    assert with_temp > 500


def test_its_fields_reach_the_csv_dataframe_report_and_params(
    detector: ModuleType, tmp_path: Path
) -> None:
    config = build_config(PARAMS)
    assert changed(config) == {"skin_temp.window_s": 5.0, "skin_temp.hr_threshold_bpm": 70.0}
    result = run_pipeline(iter(session()), "sim", config=config)
    target = write_outputs(result, tmp_path)
    with (target / "features.csv").open() as fh:
        table = list(csv.DictReader(fh))
    header = (target / "features.csv").read_text().splitlines()[0].split(",")
    at = header.index("arousal_index")
    assert header[at + 1 : at + 4] == [*FIELDS, "quality"]
    assert len(table) == len(result.features)

    def num(text: str) -> float | None:
        return float(text) if text else None

    check_values(
        {float(r["time"]): (num(r["skin_temp_c"]), num(r["hr_above"])) for r in table},
        result.features,
    )
    # the DataFrame has the CSV's columns and values
    frame = schema.features_frame(result.features)
    from_csv = pd.read_csv(
        target / "features.csv",
        keep_default_na=False,
        na_values=[""],
        float_precision="round_trip",
    )
    assert list(frame.columns) == list(from_csv.columns)
    for name in ["time", *FIELDS, "hr", "arousal_index"]:
        np.testing.assert_array_equal(frame[name].to_numpy(), from_csv[name].to_numpy())
    # summary and report: the changed parameters with their defaults, the fields with units
    summary = json.loads((target / "summary.json").read_text())
    assert summary["params_changed"] == changed(config)
    page = html_report(result)
    assert "<td>skin_temp.window_s</td><td>5.0</td><td>10.0</td>" in page
    assert "<td>skin_temp_c</td><td>°C</td>" in page
    markdown = write_report(result, tmp_path / "report.md", None).read_text(encoding="utf-8")
    assert "| skin_temp_c | °C | " in markdown
    assert "skin_temp.hr_threshold_bpm=70.0" in markdown
    # it changes nothing the core computes
    unregister("skin_temp")
    try:
        plain = run_pipeline(iter(session()), "sim", config=config)
    finally:
        register(detector.SPEC)
    assert plain.episodes == result.episodes
    assert plain.episodes, "the scripted surge gives an arousal episode"
    core = [(r.time, r.hr, r.rmssd, r.eda_tonic, r.arousal_index) for r in result.features]
    assert core == [(r.time, r.hr, r.rmssd, r.eda_tonic, r.arousal_index) for r in plain.features]
    assert all(r.extra == {} for r in plain.features)


def _analyse(batches: list[list[Chunk]], config: AnalysisConfig) -> list[Event]:
    analyzer = SessionAnalyzer(config)
    events: list[Event] = []
    for i, group in enumerate(batches):
        if i == len(batches) // 2:  # a checkpoint in the middle
            analyzer = pickle.loads(pickle.dumps(analyzer))
        for chunk in group:
            item = to_input(chunk.to_message("s", "s", 0, None))
            if item is not None and not isinstance(item, list):
                events.extend(analyzer.update(item))
    events.extend(analyzer.finish())
    return events


@pytest.mark.usefixtures("detector")
def test_it_is_chunk_invariant_and_survives_a_checkpoint() -> None:
    # (the lateness allowance covers the 60-s groups below, as for the core's own streams)
    config = build_config([*PARAMS, "lateness_s=120"])
    chunks = [c for c in session() if c.stream != "marker"]
    one_by_one = _analyse([[c] for c in chunks], config)
    # the same data in 60-s groups, each stream's group in one message
    grouped: list[list[Chunk]] = []
    for minute in range(11):
        group = [c for c in chunks if minute * 60 <= c.start - START < (minute + 1) * 60]
        grouped.append(_merged(group))
    in_minutes = _analyse(grouped, config)
    rows_a = [e for e in one_by_one if isinstance(e, FeatureRow)]
    rows_b = [e for e in in_minutes if isinstance(e, FeatureRow)]
    assert [(r.time, dict(r.extra)) for r in rows_a] == [(r.time, dict(r.extra)) for r in rows_b]
    check_values({r.time: (r.extra["skin_temp_c"], r.extra["hr_above"]) for r in rows_a}, rows_a)


def _merged(group: list[Chunk]) -> list[Chunk]:
    """Each (stream, device)'s chunks of ``group`` as one irregular chunk."""
    out: list[Chunk] = []
    for key in sorted({(c.stream, c.device) for c in group}):
        times: list[float] = []
        values: list[float] = []
        for c in group:
            if (c.stream, c.device) == key:
                msg = c.to_message("s", "s", 0, None)
                item = to_input(msg)
                assert isinstance(item, SampleBatch)
                times += item.times.tolist()
                values += item.values.tolist()
        out.append(Chunk(key[0], key[1], tuple(values), t=tuple(times)))
    return out


@pytest.mark.usefixtures("detector")
def test_its_fields_reach_influxdb_and_the_mqtt_payload(
    mqtt_broker: Mosquitto, influxd: InfluxD
) -> None:
    config = build_config(PARAMS)
    offline = run_pipeline(iter(session()), "sim", config=config)
    influxd.create_database("extending")
    settings = MqttSettings.from_url(mqtt_broker.url)
    payloads: list[dict[str, object]] = []
    subscribed = threading.Event()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payloads.append(json.loads(msg.payload))

    watcher = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *_a: subscribed.set()
    watcher.connect(mqtt_broker.host, mqtt_broker.port)
    watcher.subscribe("rekindle/v1/ext/sim1/out/features", qos=1)
    watcher.loop_start()
    writer = BufferedWriter(V1Transport(InfluxSettings(influxd.url, database="extending")))
    service = AnalysisService(settings, writer, site="ext", config=config).start()
    try:
        assert subscribed.wait(GENEROUS_S)
        with Publisher(settings, "ext", "sim1", device="sim") as pub:
            replay(iter(session()), pub, speed=None)
        assert service.wait_sessions_finished(1, timeout=120)
        assert service.wait_idle(quiet_s=0.5)
        wait_until(lambda: len(payloads) >= len(offline.features), "every feature payload")
    finally:
        service.stop()
        watcher.loop_stop()
        watcher.disconnect()

    def field(p: dict[str, object], name: str) -> float | None:
        value = p[name]
        assert value is None or isinstance(value, float)
        return value

    check_values(
        {float(str(p["t"])): (field(p, "skin_temp_c"), field(p, "hr_above")) for p in payloads},
        offline.features,
    )
    stored = influxd.series(
        'SELECT "skin_temp_c", "hr_above", "arousal_index" FROM "features" '
        "WHERE session = 'sim1' AND streams >= 0",
        "extending",
    )
    points = {row[0]: (row[1], row[2]) for row in stored[0]["values"]}
    want = {round(r.time * 1e9): r.extra for r in offline.features}
    assert points.keys() == want.keys()
    for ns, extra in want.items():
        assert points[ns] == (extra["skin_temp_c"], extra["hr_above"])
    # the live and review dashboards generated now have a panel with one query per field, and
    # the queries, rendered as Grafana renders them, return the stored values (1-s buckets)
    start_ms = round(offline.features[0].time * 1000)
    end_ms = round(offline.features[-1].time * 1000)
    generated = {p.name: text for p, text in render_all().items()}
    for name in ("live-session.json", "session-review.json"):
        found = [
            q
            for q in dashboard_queries(json.loads(generated[name]))
            if q.name == "Registered detectors"
        ]
        assert [q.ref_id for q in found] == ["A", "B"], name
        for q, field_name in zip(found, FIELDS, strict=True):
            rendered = render(
                q.text,
                start_ms=start_ms,
                end_ms=end_ms,
                variables={"site": "ext", "session": "sim1"},
            )
            (series,) = influxd.series(rendered, "extending")
            got = {row[0]: row[1] for row in series["values"]}
            assert got == {ns: e[field_name] for ns, e in want.items() if e[field_name] is not None}


def test_the_command_line_loads_it_and_takes_its_params(tmp_path: Path) -> None:
    """``REKINDLE_DETECTORS`` names the module; ``--param skin_temp.window_s=...`` sets it."""
    env = {**os.environ, "REKINDLE_DETECTORS": MODULE, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "rekindle.cli", "analyze", str(fixture_path(S02)), "--no-plots"]
    ok = subprocess.run(
        [*cmd, "--out", str(tmp_path), *(f"--param={p}" for p in PARAMS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    frame = pd.read_csv(tmp_path / "S02" / "features.csv")
    assert {"skin_temp_c", "hr_above"} <= set(frame.columns)
    # S02's wrist temperature is around 30-35 °C; its heart rate is above 70 bpm at times
    assert frame["skin_temp_c"].notna().mean() > 0.95
    assert 25.0 < frame["skin_temp_c"].median() < 40.0
    assert 0 < frame["hr_above"].sum() < frame["hr_above"].notna().sum()
    summary = json.loads((tmp_path / "S02" / "summary.json").read_text())
    assert summary["params_changed"]["skin_temp.window_s"] == 5.0
    # mistakes are named, exit 2, no traceback
    for bad, words in [
        (["--param", "skin_temp.windw_s=3"], "did you mean 'skin_temp.window_s'"),
        (["--param", "skin_temp.window_s=-1"], "window_s must be positive"),
        (["--param", "nosuch.x=1"], "no detector section 'nosuch' (registered: skin_temp)"),
    ]:
        proc = subprocess.run(
            [*cmd, "--out", str(tmp_path / "bad"), *bad],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 2, proc.stderr
        assert words in proc.stderr
        assert "Traceback" not in proc.stderr
    missing = subprocess.run(
        [*cmd, "--out", str(tmp_path / "bad")],
        env={**env, "REKINDLE_DETECTORS": "tests.no_such_detector"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert missing.returncode == 2
    assert "cannot import the detector module 'tests.no_such_detector'" in missing.stderr


def test_registration_refuses_clashing_names(detector: ModuleType) -> None:
    spec = detector.SPEC
    from dataclasses import replace  # noqa: PLC0415

    from rekindle.analysis.core.extensions import FeatureField  # noqa: PLC0415

    for name, words in [
        ("hr", "a built-in output already uses this name"),
        ("contrib_x", "a built-in output already uses this name"),
    ]:
        with pytest.raises(ConfigError, match=words):
            register(replace(spec, name="other", fields=(FeatureField(name, "", ""),)))
    with pytest.raises(ConfigError, match="the 'skin_temp' detector already has this field"):
        register(replace(spec, name="other", fields=spec.fields[:1]))
    assert [s.name for s in registered()] == ["skin_temp"]
    assert [f.name for f in schema.extension_fields()] == FIELDS


@pytest.mark.usefixtures("detector")
def test_the_result_type_still_pickles_with_extra_fields() -> None:
    """Batch workers send results back pickled (``--jobs``)."""
    result = run_pipeline(iter(session()[:400]), "sim", config=build_config(PARAMS))
    again: AnalysisResult = pickle.loads(pickle.dumps(result))
    assert [r.extra for r in again.features] == [r.extra for r in result.features]


def test_the_example_of_docs_extending_runs() -> None:
    doc = (REPO / "docs" / "extending.md").read_text(encoding="utf-8")
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    module = ModuleType("docs_extending_example")  # (dataclasses look their module up)
    sys.modules[module.__name__] = module
    exec(compile(code, "docs/extending.md", "exec"), module.__dict__)
    try:
        assert [s.name for s in registered()] == ["hr_above"]
        config = build_config(["hr_above.threshold_bpm=72"])
        rows = run_pipeline(iter(session()), "sim", config=config).features
        flags = [(r.hr, r.extra["hr_above_threshold"]) for r in rows]
        assert {f for _, f in flags} == {None, 0.0, 1.0}
        assert all(f is None if hr is None else f == float(hr > 72) for hr, f in flags)
    finally:
        unregister("hr_above")
        del sys.modules[module.__name__]


@dataclass(frozen=True, slots=True)
class _OddConfig:
    every: int = 3


class _Odd:
    """Returns an int, NaN, a numpy float and infinity in turn (what a sloppy detector might)."""

    def __init__(self, config: _OddConfig) -> None:
        self.every = config.every

    def feed(self, stream: str, device: str, times: list[float], values: list[float]) -> None:
        """(reads no raw stream)"""

    def tick(self, k: int, row: FeatureRow) -> Mapping[str, float | None]:  # noqa: ARG002
        odd: list[float] = [1, math.nan, np.float64(2.5), math.inf]
        return {"odd": odd[k % len(odd)]}


def test_values_become_floats_or_none_in_every_output() -> None:
    spec = register(DetectorSpec("odd", (FeatureField("odd", "", "test"),), _OddConfig(), _Odd))
    try:
        rows = run_pipeline(iter(session()[:300]), "sim").features
    finally:
        unregister(spec.name)
    seen = {r.extra["odd"] for r in rows}
    assert seen == {1.0, 2.5, None}
    assert all(type(v) is float for v in seen if v is not None)
    one = next(r for r in rows if r.extra["odd"] == 1.0)
    assert ",odd=1.0," in event_lines("s", "s", [one])[0]
    payloads = [json.dumps(feature_payload(r), allow_nan=False) for r in rows]
    assert all('"odd": ' in p for p in payloads)
    # unregistered since: the rows still carry the field, the table still has its column
    assert "odd" in schema.feature_table(rows).columns


def test_batch_workers_run_it_too(tmp_path: Path) -> None:
    """``analyze --jobs 2`` starts spawned workers: each imports the registered modules again
    (without a changed parameter of the detector: a changed one would import its module on its
    own, when the worker unpickles the configuration)."""
    rng = np.random.default_rng(11)
    names = []
    for name in ("a", "b"):
        t = START + np.arange(0.0, 300.0, 0.25)
        eda = 2.0 + 0.01 * rng.normal(size=len(t)).cumsum() / 10
        temp = 33.0 + 0.05 * rng.normal(size=len(t))
        rows = ["time,eda_uS,hr_bpm,temp_degC"]
        for i, ti in enumerate(t):
            hr = f"{70 + 5 * math.sin(ti / 30):.2f}" if i % 4 == 0 else ""
            rows.append(f"{ti:.2f},{eda[i]:.4f},{hr},{temp[i]:.3f}")
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(rows) + "\n")
        names.append(str(path))
    env = {**os.environ, "REKINDLE_DETECTORS": MODULE, "PYTHONPATH": str(REPO)}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "rekindle.cli", "analyze", *names, "--out", str(out), "--jobs=2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("a", "b"):
        frame = pd.read_csv(out / name / "features.csv")
        assert frame["skin_temp_c"].notna().mean() > 0.95, name
        assert frame["hr_above"].notna().any(), name
        summary = json.loads((out / name / "summary.json").read_text())
        assert summary["params_changed"] == {}
