"""Secrets kept out of process arguments and logs.

* :func:`read_secret` takes a password or token from a file or an environment variable, so none
  is ever needed on a command line (where ``ps`` and ``/proc/*/cmdline`` show it to every user).
* :func:`redact` masks the password of every ``scheme://user:password@host`` URL in a text, and
  any registered secret wherever it appears; :class:`RedactingFilter` applies it to every log
  record (the command line installs it on its log handlers; library code never logs a password
  on purpose, this is the net under it).
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from pathlib import Path

from rekindle.errors import RekindleError

#: ``scheme://user:password@`` (the password is anything up to the ``@`` that ends userinfo)
_URL_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):(?P<pw>[^\s/@]*)@")

MASK = "***"


class SecretError(RekindleError, ValueError):
    """A secret could not be read; ``source`` names where it was looked for."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


def read_secret(
    file: Path | str | None, env_name: str, *, file_option: str, env: dict[str, str] | None = None
) -> str | None:
    """The secret in ``file`` (first line, stripped), else in environment variable ``env_name``,
    else None. ``file_option`` names the option in errors (e.g. ``--influx-password-file``)."""
    environ = os.environ if env is None else env
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretError(file_option, f"cannot read {file}: {exc.strerror or exc}") from exc
        value = text.strip()
        if not value:
            raise SecretError(file_option, f"{file} is empty: write the secret in it")
        return value
    from_env = environ.get(env_name)
    return from_env if from_env else None


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``(url without userinfo, user, password)``; user and password percent-decoded."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    clean = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return clean, user, password


_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever :func:`redact` sees it from now on (ignored if shorter than 4)."""
    if value and len(value) >= 4:
        _secrets.add(value)
        quoted = urllib.parse.quote(value, safe="")
        if quoted != value:
            _secrets.add(quoted)


def redact(text: str) -> str:
    """``text`` with URL passwords and registered secrets replaced by ``***``."""
    out = _URL_USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    for secret in sorted(_secrets, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) through :func:`redact`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True
