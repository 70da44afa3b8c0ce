"""Analysis parameters from the command line and from files (an adapter: it reads files).

Every field of :class:`~rekindle.analysis.core.config.AnalysisConfig` can be set by name:

* ``--param NAME=VALUE`` (repeatable), e.g. ``--param enter_index=60``;
* ``--params FILE``: a TOML file with the names at the top level or in an ``[analysis]`` table,
  e.g. ``enter_index = 60``.

``--param`` overrides the file. Unknown names and unusable values are refused with a
:class:`~rekindle.analysis.core.errors.ConfigError` that names the parameter (and the closest
known name for a typo). The defaults and their reasons are in ``docs/method.md``.
"""

from __future__ import annotations

import argparse
import difflib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.errors import ConfigError

_FIELDS = {f.name: f for f in fields(AnalysisConfig)}
_DEFAULTS = asdict(AnalysisConfig())


def _check_name(name: str) -> None:
    if name not in _FIELDS:
        close = difflib.get_close_matches(name, list(_FIELDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(name, f"no such analysis parameter{hint}")


def _value(name: str, raw: object) -> float | int:
    """``raw`` (a TOML value or command-line text) as the type of field ``name``."""
    integral = isinstance(_DEFAULTS[name], int)
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigError(name, f"must be a number, got {raw!r}")
    try:
        number = float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if not math.isfinite(number):
        raise ConfigError(name, f"must be a finite number, got {raw!r}")
    if integral:
        if number != int(number):
            raise ConfigError(name, f"must be a whole number, got {raw!r}")
        return int(number)
    return number


def parse_pairs(pairs: Sequence[str]) -> dict[str, float | int]:
    """``["name=value", ...]`` as a mapping of checked parameter values."""
    out: dict[str, float | int] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(pair, "expected NAME=VALUE")
        _check_name(name)
        out[name] = _value(name, raw.strip())
    return out


def read_file(path: Path) -> dict[str, float | int]:
    """Parameters from a TOML file (top level, or an ``[analysis]`` table)."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    table = doc.get("analysis", doc)
    if not isinstance(table, Mapping):
        raise ConfigError(str(path), "[analysis] must be a table")
    out: dict[str, float | int] = {}
    for name, raw in table.items():
        _check_name(name)
        out[name] = _value(name, raw)
    return out


def build_config(
    pairs: Sequence[str] = (), path: Path | None = None, base: AnalysisConfig | None = None
) -> AnalysisConfig:
    """``base`` (default: the defaults) with the file's values, then the pairs, applied."""
    values: dict[str, Any] = {}  # (checked per field by _value and AnalysisConfig)
    if path is not None:
        values.update(read_file(path))
    values.update(parse_pairs(pairs))
    return replace(base or AnalysisConfig(), **values)


def changed(config: AnalysisConfig) -> dict[str, float | int]:
    """The parameters of ``config`` that differ from the defaults (for logs and reports)."""
    current = asdict(config)
    return {k: v for k, v in current.items() if v != _DEFAULTS[k]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--param NAME=VALUE`` and ``--params FILE`` on a sub-command."""
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an analysis parameter (repeatable; names and defaults in docs/method.md)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of analysis parameters (top level or [analysis]); --param wins",
    )


def from_args(args: argparse.Namespace) -> AnalysisConfig:
    """The configuration that ``--param``/``--params`` ask for."""
    return build_config(args.param, args.params)
