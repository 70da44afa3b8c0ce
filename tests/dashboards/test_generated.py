"""The committed dashboard JSON and alert rules are exactly what the code generates."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models import dashboard as dm

from rekindle.dashboards import GRAFANA_SCHEMA_VERSION, GRAFANA_VERSION, cli, generate
from rekindle.dashboards.errors import DriftError
from rekindle.dashboards.influxql import DATASOURCE_UID, load_dashboard

REPO = Path(__file__).resolve().parent.parent.parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rekindle")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_sdk_is_the_build_for_the_grafana_in_compose() -> None:
    assert version("grafana-foundation-sdk") == f"1769699379!{GRAFANA_VERSION}.0"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    image = compose["services"]["grafana"]["image"]
    assert image.startswith(f"grafana/grafana:{GRAFANA_VERSION}."), image


def test_schema_version_is_the_sdks_for_grafana_11_6() -> None:
    assert dm.Dashboard().schema_version == GRAFANA_SCHEMA_VERSION


def test_committed_files_equal_generated() -> None:
    assert generate.drifted() == []


@pytest.mark.parametrize("name", sorted(generate.DASHBOARDS))
def test_dashboard_loads_back_through_the_sdk(name: str) -> None:
    text = (generate.PACKAGE_DIR / generate.GENERATED_DIR / name).read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["schemaVersion"] == GRAFANA_SCHEMA_VERSION
    assert generate.dashboard_json(load_dashboard(data)) == text


@pytest.mark.parametrize("name", sorted(generate.DASHBOARDS))
def test_every_query_uses_the_provisioned_datasource(name: str) -> None:
    data = json.loads((generate.PACKAGE_DIR / generate.GENERATED_DIR / name).read_text("utf-8"))
    refs = [t["datasource"] for p in data["panels"] for t in p.get("targets", [])]
    refs += [v["datasource"] for v in data["templating"]["list"]]
    refs += [a["datasource"] for a in data["annotations"].get("list", [])]
    assert refs
    assert all(r == {"type": "influxdb", "uid": DATASOURCE_UID} for r in refs)


def test_panel_ids_are_unique_and_panels_fit_the_grid() -> None:
    for name in generate.DASHBOARDS:
        data = json.loads((generate.PACKAGE_DIR / generate.GENERATED_DIR / name).read_text())
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in data["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])


def test_check_detects_a_hand_edit(tmp_path: Path) -> None:
    generate.write_all(tmp_path)
    generate.check(tmp_path)
    target = tmp_path / generate.GENERATED_DIR / "live-session.json"
    target.write_text(target.read_text().replace("Arousal now", "Arousal"), encoding="utf-8")
    with pytest.raises(DriftError) as info:
        generate.check(tmp_path)
    assert info.value.paths == [target]


def test_cli_build_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = _parser()
    args = parser.parse_args(["dashboards", "build", "--check", "--out", str(tmp_path)])
    assert args.func(args) == 1
    assert "out of date" in capsys.readouterr().out
    args = parser.parse_args(["dashboards", "build", "--out", str(tmp_path)])
    assert args.func(args) == 0
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(generate.render_all())
    args = parser.parse_args(["dashboards", "build", "--check", "--out", str(tmp_path)])
    assert args.func(args) == 0


def test_cli_check_passes_on_the_repository() -> None:
    args = _parser().parse_args(["dashboards", "build", "--check"])
    assert args.func(args) == 0
