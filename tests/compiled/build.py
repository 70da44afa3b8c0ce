"""Build the compiled core's wheel as services/analysis/Dockerfile does (a copy of the sources,
``REKINDLE_COMPILE=1 pip wheel --no-deps --no-build-isolation``) and install it into a folder of
its own: ``python tests/compiled/build.py ROOT`` leaves it in ``ROOT/site``.

The suite starts this in a process of its own as soon as it has collected a test that needs the
compiled core (tests/conftest.py), so that the build (~40 s, one core) runs beside the tests that
come first instead of before the compiled-core tests; their fixture waits for it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
#: How long the build and the install may take together, even on a busy machine.
TIMEOUT_S = 900.0


def build(root: Path) -> Path:
    """The compiled wheel built in ``root`` and installed into ``root/site`` (returned)."""
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.c")
    for name in ("services", "dashboards"):  # with their links (services/dashboards)
        shutil.copytree(REPO / name, src / name, ignore=skip, symlinks=True)
    (src / "rekindle").symlink_to("services", target_is_directory=True)  # the import name
    env = {**os.environ, "REKINDLE_COMPILE": "1"}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    wheel = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)]
    subprocess.run(wheel, cwd=src, env=env, check=True)
    (built,) = (root / "dist").glob("rekindle-*.whl")
    target = root / "site"
    install = [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(built)]
    subprocess.run(install, check=True)
    return target


class BackgroundBuild:
    """``build`` running in its own process (output in a log file) in a temporary folder."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rekindle-compiled-"))
        self.log = self.root / "build.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), str(self.root / "build")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started = time.monotonic()

    def wait(self) -> Path:
        """The installed folder once the build has finished; fails with the log's end."""
        left = TIMEOUT_S - (time.monotonic() - self.started)
        try:
            code = self.proc.wait(timeout=max(left, 0.0))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            code = None
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-6000:]
        if code != 0:
            raise AssertionError(f"the compiled build failed (exit {code}):\n{tail}")
        return self.root / "build" / "site"

    def close(self) -> None:
        """Stop the build if it still runs and remove its folder."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


if __name__ == "__main__":
    root = Path(sys.argv[1])
    root.mkdir()
    print(build(root), flush=True)
