"""Analysis parameters from ``--param NAME=VALUE`` and ``--params FILE`` (TOML)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rekindle.analysis.core import AnalysisConfig
from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.params import build_config, changed, parse_pairs, read_file
from rekindle.cli import main

DATA = Path(__file__).parent / "fixtures" / "stress_predict_e4"


def test_pairs_are_typed_like_the_fields() -> None:
    assert parse_pairs(["enter_index=60", " exit_index = 25.5 ", "rr_reference_beats=7"]) == {
        "enter_index": 60.0,
        "exit_index": 25.5,
        "rr_reference_beats": 7,
    }
    assert isinstance(parse_pairs(["rr_reference_beats=7.0"])["rr_reference_beats"], int)


@pytest.mark.parametrize(
    ("pair", "field", "words"),
    [
        ("enter_indx=60", "enter_indx", "did you mean 'enter_index'"),
        ("zzz=1", "zzz", "no such analysis parameter"),
        ("enter_index", "enter_index", "expected NAME=VALUE"),
        ("=3", "=3", "expected NAME=VALUE"),
        ("enter_index=high", "enter_index", "must be a number"),
        ("enter_index=nan", "enter_index", "finite"),
        ("rr_reference_beats=2.5", "rr_reference_beats", "whole number"),
    ],
)
def test_bad_pairs_name_the_parameter(pair: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pairs([pair])
    assert info.value.field == field
    assert words in str(info.value)


def test_file_then_pairs_and_the_config_checks(tmp_path: Path) -> None:
    top = tmp_path / "top.toml"
    top.write_text("enter_index = 60\nmin_episode_s = 40\n")
    table = tmp_path / "table.toml"
    table.write_text("[analysis]\nenter_index = 70\n")
    assert read_file(top) == {"enter_index": 60.0, "min_episode_s": 40.0}
    assert read_file(table) == {"enter_index": 70.0}
    cfg = build_config(["enter_index=65"], top)
    assert (cfg.enter_index, cfg.min_episode_s, cfg.exit_index) == (65.0, 40.0, 30.0)
    assert changed(cfg) == {"enter_index": 65.0, "min_episode_s": 40.0}
    assert changed(AnalysisConfig()) == {}
    with pytest.raises(ConfigError, match="exit_index"):
        build_config(["enter_index=20"])  # below exit_index: AnalysisConfig refuses it
    bad = tmp_path / "bad.toml"
    bad.write_text("enter_index = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_file(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[analysis]\nbaseline = 200\n")
    with pytest.raises(ConfigError, match="no such analysis parameter"):
        read_file(typo)
    with pytest.raises(ConfigError, match="cannot read"):
        read_file(tmp_path / "missing.toml")


def test_evaluate_and_analyze_use_the_parameters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = str(DATA / "labels_stress_intervals.csv")
    recs = str(DATA / "Raw_data")
    base = ["evaluate", "--labels", labels, "--recordings", recs, "--subject", "S02", "--json"]
    assert main(base) == 0
    default = json.loads(capsys.readouterr().out)["overall"]
    assert default["hits"] > 0
    # an episode would have to last longer than the recording: nothing can be found
    assert main([*base, "--param", "min_episode_s=100000"]) == 0
    none = json.loads(capsys.readouterr().out)["overall"]
    assert (none["hits"], none["relax_onsets"], none["arousal_onsets"]) == (0, 0, 0)
    assert main([*base, "--param", "min_episod_s=1"]) == 2
    assert "did you mean 'min_episode_s'" in capsys.readouterr().err

    out = tmp_path / "out"
    params = tmp_path / "p.toml"
    params.write_text("[analysis]\nmin_episode_s = 100000\n")
    assert (
        main(
            [
                "analyze",
                str(DATA / "Raw_data" / "S02"),
                "--out",
                str(out),
                "--no-plots",
                "--params",
                str(params),
            ]
        )
        == 0
    )
    report = (out / "S02" / "report.md").read_text()
    assert "- analysis parameters: min_episode_s=100000.0 (others default)" in report
    assert "| arousal |" not in report
    summary = json.loads((out / "S02" / "summary.json").read_text())
    assert summary["params_changed"] == {"min_episode_s": 100000.0}
    assert summary["episodes"] == {"arousal": 0, "release": 0}
