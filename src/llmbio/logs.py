"""Where a stage's output goes: its log file (what every Snakemake rule's ``log:`` holds) and
the terminal.

:func:`setup_logging` is the one place ``logging`` is configured: ``llmbio.*`` loggers write
INFO and above to whatever ``sys.stderr`` is at the time, so their lines land in the rule's
log while :func:`log_to` tees stderr there, and on the terminal from the CLI.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a record comes, not as it was when
    the handler was made (:func:`log_to` swaps it for a tee)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler assigns it; stderr is read live
        pass


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Send the ``llmbio`` loggers' records of ``level`` and above to stderr; idempotent."""
    logger = logging.getLogger("llmbio")
    logger.setLevel(level)
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        logger.addHandler(handler)
    return logger


@contextlib.contextmanager
def log_to(path: str | Path | None) -> Iterator[None]:
    """Tee stdout and stderr into ``path`` for the duration of the block; ``llmbio`` log
    records go there too (:func:`setup_logging`)."""
    setup_logging()
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as fh:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, fh), _Tee(err, fh)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = out, err


class _Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()

    def isatty(self) -> bool:
        return False
