"""llmbio's own errors: each message is one line naming the problem and how to fix it.

The command line catches :class:`LlmbioError` and prints its message without a traceback;
Python callers can catch the subclasses they care about.
"""

from __future__ import annotations


class LlmbioError(Exception):
    """Base of every llmbio error; ``str(err)`` is one line: the problem, then the fix."""


class ArtefactError(LlmbioError):
    """A run's file (model, transcoder, table) is missing, truncated, unsafe or mismatched."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path} {problem}; {fix}")


class UsageError(LlmbioError):
    """A command-line argument is malformed or out of range; the CLI exits with status 2."""
