"""Checks of command-line arguments, made before anything is loaded or written.

Each check raises :class:`~llmbio.errors.UsageError` with one line naming the flag, the value
and what to pass instead; :class:`Parser` makes argparse's own errors one line as well.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

from llmbio.bounds import RunName
from llmbio.errors import UsageError

_RUN_NAME = RunName.__metadata__[0]


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (and exit status 2, as argparse's)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def at_least(flag: str, value: int | None, low: int) -> None:
    """``value`` (when given) is an integer >= ``low``."""
    if value is not None and value < low:
        raise UsageError(f"{flag} {value}: must be an integer >= {low}")


def run_name(name: str) -> None:
    """``--run`` is one folder name under the results root (as the config's ``run`` key)."""
    if _RUN_NAME.problem(name):
        raise UsageError(f"--run {name!r}: {_RUN_NAME.problem(name)}")


def text(flag: str, value: str) -> None:
    """A prompt with at least one visible character."""
    if not value.strip():
        raise UsageError(f"{flag} is empty: give the prompt's text")


def input_file(flag: str, path: str | None) -> None:
    """``path`` (when given) is a readable file."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{flag} {path}: is a folder; give a file")
    if not p.is_file():
        raise UsageError(f"{flag} {path}: no such file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{flag} {path}: not readable (check its permissions)")


def output_file(flag: str, path: str | None, suffix: str | None = None) -> None:
    """``path`` (when given) can be written as a file: not a folder, in a writable place."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        raise UsageError(f"{flag} {path}: is a folder; give a file name (e.g. {p / 'table'}"
                         f"{suffix or ''})")  # fmt: skip
    if suffix and p.suffix != suffix:
        raise UsageError(f"{flag} {path}: give a {suffix} file name")
    _writable_parent(flag, p)


def output_folder(flag: str, path: str | None) -> None:
    """``path`` (when given) is an existing folder, or one that can be made in a writable place."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {path}: is a file; give a folder (it is made if missing)")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise UsageError(f"{flag} {path}: folder is not writable; give another folder")
        return
    _writable_parent(flag, p)


def _writable_parent(flag: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` is a writable folder."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: {parent} is a file, not a folder; give another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {parent} is not writable; give another path")


def one_line(err: BaseException) -> str:
    """An error's message on one line (multi-line messages joined with ' | ')."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    message = " | ".join(lines) or type(err).__name__
    return re.sub(r"\s+", " ", message)


def fail(err: BaseException, prog: str = "llmbio") -> NoReturn:
    """Exit with ``prog: error: <one line>``: status 2 for a usage error, 1 otherwise."""
    message = f"{prog}: error: {one_line(err)}"
    if isinstance(err, UsageError):
        print(message, file=sys.stderr)
        raise SystemExit(2)
    raise SystemExit(message)  # printed to stderr by Python; exit status 1
