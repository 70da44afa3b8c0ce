"""Build hook: with ``REKINDLE_COMPILE=1`` the analysis core (``services/analysis/core``, plain
type-checked Python) is compiled with mypyc into C extensions, as the analysis image does.

Every other build (``pip install -e .``, the ingest image, CI) installs the pure-Python core;
both give the same events bit for bit (``tests/test_compiled_core.py`` builds the compiled wheel
and checks it). Needs a C compiler, the Python headers and mypy in the build environment:

    pip install "mypy>=1.10" setuptools wheel
    REKINDLE_COMPILE=1 pip wheel --no-deps --no-build-isolation -w dist .

Metadata and packages are in ``pyproject.toml``; this file only adds the extension modules.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

# through the ``rekindle`` link, so that mypyc names the modules ``rekindle.analysis.core.*``
CORE = Path("rekindle") / "analysis" / "core"


def core_modules() -> list[str]:
    """Every module of the core except the package ``__init__`` (which registers pickling)."""
    return sorted(str(p) for p in CORE.glob("*.py") if p.name != "__init__.py")


# pip runs this file twice: ``dist_info`` for the metadata, then ``bdist_wheel``. The metadata does
# not depend on the extensions, and mypycify type-checks and translates the whole core each time
# it is called (~20 s with the interpreter's exit), so only a run that builds calls it.
METADATA_ONLY = frozenset({"dist_info", "egg_info"})
BUILDS = frozenset({"build", "build_ext", "bdist_wheel", "editable_wheel", "install", "develop"})


def metadata_only(argv: list[str]) -> bool:
    """Whether this run of setup.py only writes metadata (no command that builds extensions)."""
    args = set(argv[1:])
    return bool(args & METADATA_ONLY) and not args & BUILDS


def ext_modules() -> list[object]:
    if os.environ.get("REKINDLE_COMPILE", "") != "1" or metadata_only(sys.argv):
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 (only a compiling build needs mypy)

    return list(mypycify(core_modules(), opt_level="3"))


setup(ext_modules=ext_modules())
