"""The import name: ``rekindle`` is the only top-level package, and every error is a RekindleError.

The folders of the design (``services/ingest``, ``services/analysis``, ``dashboards``) stay where
they are; ``rekindle`` is a link to ``services`` and ``services/dashboards`` a link to
``../dashboards`` (pyproject.toml explains why), so the wheel, an editable install and a bare
checkout all import the same modules under one name.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import zipfile
from pathlib import Path

import rekindle

REPO = Path(__file__).resolve().parent.parent


def _outside_env() -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing into a checkout."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_installed_venv_has_rekindle_and_no_services_or_dashboards(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, rekindle, rekindle.analysis.core\n"
        "import rekindle.dashboards.generate\n"
        "print(u.find_spec('services') is None, u.find_spec('dashboards') is None,"
        " issubclass(rekindle.analysis.core.ConfigError, rekindle.RekindleError))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_outside_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.split() == ["True", "True", "True"], out.stderr


def test_wheel_installs_only_the_rekindle_package(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("rekindle-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top == {"rekindle"}
    for module in ("analysis/core/arousal.py", "ingest/ble/cli.py", "dashboards/generate.py"):
        assert f"rekindle/{module}" in names
    # every source file of the design's folders is in the wheel, under rekindle/
    sources = {
        "rekindle/" + str(p.relative_to(REPO / "services"))
        for p in (REPO / "services").rglob("*.py")
        if "dashboards" not in p.relative_to(REPO / "services").parts
    } | {
        "rekindle/dashboards/" + str(p.relative_to(REPO / "dashboards"))
        for p in (REPO / "dashboards").rglob("*.py")
    }
    assert sources <= set(names)


def _our_modules() -> list[str]:
    return [
        m.name
        for m in pkgutil.walk_packages(rekindle.__path__, "rekindle.")
        if not m.name.endswith("__main__")
    ]


def test_every_error_of_ours_derives_from_rekindle_error() -> None:
    errors: list[type[BaseException]] = []
    for name in _our_modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if (
                obj.__module__ == name
                and issubclass(obj, BaseException)
                and not issubclass(obj, Warning)
            ):
                errors.append(obj)
    assert len(errors) >= 20, [e.__name__ for e in errors]
    assert [e for e in errors if not issubclass(e, rekindle.RekindleError)] == []
