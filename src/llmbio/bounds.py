"""Allowed ranges of config values, written into the dataclasses' type hints.

``n_layers: Positive[int] = 4`` is an ``int`` of at least 1: :func:`llmbio.config.load_config`
refuses other values with the key's dotted name, and :func:`llmbio.config.config_schema` writes
the same bounds into the JSON schema, so ``snakemake -n`` refuses them before any job starts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """``low <= value <= high`` (``None``: no bound), ``value > above``; ``pattern`` for strings."""

    low: float | None = None
    high: float | None = None
    above: float | None = None
    pattern: str | None = None
    why: str = ""  # what the value is for, when the range alone does not say it

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of range, or ``None`` when it is allowed."""
        if isinstance(value, str):
            if self.pattern is not None and not re.fullmatch(self.pattern, value):
                return f"must be {self.why or 'of the form ' + self.pattern}, got {value!r}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if (
            (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
            or (self.above is not None and value <= self.above)
        ):
            return f"must be {self.describe()}, got {value!r}"
        return None

    def describe(self) -> str:
        if self.above is not None:
            return f"> {_num(self.above)}"
        if self.low is not None and self.high is not None:
            return f"in {_num(self.low)}..{_num(self.high)}"
        if self.low is not None:
            return f">= {_num(self.low)}"
        return f"<= {_num(self.high)}"

    def schema(self) -> dict:
        """The JSON-schema keywords of this bound."""
        out: dict = {}
        if self.low is not None:
            out["minimum"] = self.low
        if self.high is not None:
            out["maximum"] = self.high
        if self.above is not None:
            out["exclusiveMinimum"] = self.above
        if self.pattern is not None:
            out["pattern"] = f"^(?:{self.pattern})$"
        return out


def _num(x: float) -> str:
    return f"{x:g}"


Positive = Annotated[T, Bound(low=1)]  # counts and sizes: at least one
NonNegative = Annotated[T, Bound(low=0)]  # seeds, optional counts (0: none)
Fraction = Annotated[float, Bound(0, 1)]  # shares and probabilities
PositiveFloat = Annotated[float, Bound(above=0)]  # rates and scales, strictly above 0
# a run's results folder: one path segment (no '/', '..' or leading dot) under results/
RunName = Annotated[
    str,
    Bound(
        pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}",
        why="a folder name under results/ (letters, digits, '_', '-', '.'; not starting "
        "with '.' or '-'; at most 100 characters)",
    ),
]
