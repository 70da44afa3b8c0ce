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
from pathlib import Path

from setuptools import setup

# through the ``rekindle`` link, so that mypyc names the modules ``rekindle.analysis.core.*``
CORE = Path("rekindle") / "analysis" / "core"


def core_modules() -> list[str]:
    """Every module of the core except the package ``__init__`` (which registers pickling)."""
    return sorted(str(p) for p in CORE.glob("*.py") if p.name != "__init__.py")


def ext_modules() -> list[object]:
    if os.environ.get("REKINDLE_COMPILE", "") != "1":
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 (only a compiling build needs mypy)

    return list(mypycify(core_modules(), opt_level="3"))


setup(ext_modules=ext_modules())
