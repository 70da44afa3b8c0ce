"""Analysis parameters from the command line and from files (an adapter: it reads files).

Every field of :class:`~rekindle.analysis.core.config.AnalysisConfig` can be set by name, and every
parameter of a registered detector (:mod:`rekindle.analysis.core.extensions`) as
``<section>.<name>``:

* ``--param NAME=VALUE`` (repeatable), e.g. ``--param enter_index=60`` or
  ``--param eda_slope.window_s=30``;
* ``--params FILE``: a TOML file with the names at the top level or in an ``[analysis]`` table,
  e.g. ``enter_index = 60``, and a detector's parameters in a table of its name
  (``[eda_slope]`` or ``[analysis.eda_slope]``).

``--param`` overrides the file. Unknown names and unusable values are refused with a
:class:`~rekindle.analysis.core.errors.ConfigError` that names the parameter (and the closest
known name for a typo). The defaults and their reasons are in ``docs/method.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from rekindle.analysis.core.config import AnalysisConfig
from rekindle.analysis.core.errors import ConfigError
from rekindle.analysis.core.extensions import registered, spec

#: The field that holds the detectors' sections (not a parameter itself).
SECTIONS = "sections"
_FIELDS = {f.name: f for f in fields(AnalysisConfig) if f.name != SECTIONS}
_DEFAULTS = {k: v for k, v in asdict(AnalysisConfig()).items() if k != SECTIONS}


def known_names() -> list[str]:
    """Every parameter name: the core's, then ``<section>.<name>`` of each registered detector."""
    names = list(_FIELDS)
    for s in registered():
        names += [f"{s.name}.{f.name}" for f in dataclasses.fields(s.config)]
    return names


def default(name: str) -> object:
    """The default value of parameter ``name`` (a core name or ``section.name``)."""
    _check_name(name)
    section, _, key = name.rpartition(".")
    if section:
        found = spec(section)
        assert found is not None
        return getattr(found.config, key)
    return _DEFAULTS[name]


def _check_name(name: str) -> None:
    section, dot, key = name.partition(".")
    if dot:
        found = spec(section)
        if found is None:
            sections = ", ".join(s.name for s in registered()) or "none is registered"
            raise ConfigError(name, f"no detector section {section!r} (registered: {sections})")
        keys = [f.name for f in dataclasses.fields(found.config)]
        if key not in keys:
            import difflib  # noqa: PLC0415 (errors only: every start skips its import)

            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean '{section}.{close[0]}'?)" if close else ""
            raise ConfigError(name, f"no such parameter of the {section!r} detector{hint}")
        return
    if name not in _FIELDS:
        import difflib  # noqa: PLC0415

        close = difflib.get_close_matches(name, known_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(name, f"no such analysis parameter{hint}")


def _value(name: str, raw: object) -> float | int:
    """``raw`` (a TOML value or command-line text) as the type of parameter ``name``."""
    integral = isinstance(default(name), int)
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


def _table_values(table: Mapping[str, object], prefix: str = "") -> dict[str, float | int]:
    out: dict[str, float | int] = {}
    for name, raw in table.items():
        full = f"{prefix}{name}"
        if isinstance(raw, Mapping) and not prefix:
            out.update(_table_values(raw, f"{full}."))
            continue
        _check_name(full)
        out[full] = _value(full, raw)
    return out


def read_file(path: Path) -> dict[str, float | int]:
    """Parameters from a TOML file (top level, or an ``[analysis]`` table; a detector's in a
    table of its name)."""
    import tomllib  # noqa: PLC0415 (only with a parameter file)

    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    table = doc.get("analysis", doc)
    if not isinstance(table, Mapping):
        raise ConfigError(str(path), "[analysis] must be a table")
    return _table_values(table)


def apply(values: Mapping[str, object], base: AnalysisConfig | None = None) -> AnalysisConfig:
    """``base`` (default: the defaults) with checked ``values`` (core names and
    ``section.name``) applied; each section is rebuilt through its dataclass (its checks run)."""
    cfg = base or AnalysisConfig()
    flat: dict[str, Any] = {}
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        _check_name(name)
        section, _, key = name.rpartition(".")
        if section:
            by_section.setdefault(section, {})[key] = _value(name, value)
        else:
            flat[name] = _value(name, value)
    if by_section:
        sections = dict(cfg.sections)
        for section, changes in by_section.items():
            try:
                sections[section] = replace(cfg.section(section), **changes)  # type: ignore[type-var]
            except (TypeError, ValueError) as exc:
                raise ConfigError(section, f"refused by the detector: {exc}") from exc
        flat[SECTIONS] = tuple(sorted(sections.items()))
    return replace(cfg, **flat)


def build_config(
    pairs: Sequence[str] = (), path: Path | None = None, base: AnalysisConfig | None = None
) -> AnalysisConfig:
    """``base`` (default: the defaults) with the file's values, then the pairs, applied."""
    values: dict[str, float | int] = {}
    if path is not None:
        values.update(read_file(path))
    values.update(parse_pairs(pairs))
    return apply(values, base)


def changed(config: AnalysisConfig) -> dict[str, float | int]:
    """The parameters of ``config`` that differ from the defaults (for logs and reports); a
    registered detector's as ``section.name``."""
    current = asdict(config)
    out = {k: v for k, v in current.items() if k != SECTIONS and v != _DEFAULTS[k]}
    for s in registered():
        now = asdict(config.section(s.name))  # type: ignore[call-overload]
        for key, value in asdict(s.config).items():
            if now[key] != value:
                out[f"{s.name}.{key}"] = now[key]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--param NAME=VALUE`` and ``--params FILE`` on a sub-command."""
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set an analysis parameter (repeatable; names and defaults in docs/method.md; "
        "a registered detector's as SECTION.NAME)",
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
