"""Two-operand addition with single-token numbers, plus numbers in non-arithmetic contexts.

``calc : a + b = c`` with ``a, b`` in ``0..max_operand`` and every number (sums too) one token,
as in Claude's tokenizer. A seeded share of unordered operand pairs is held out: neither
``a+b`` nor ``b+a`` appears in training. Numbers also appear in counting runs (steps 1, 2,
5, 10) and citations, so that number features have contexts other than sums. A ``calc``
document chains one to four sums (``calc : 3 + 4 = 7 , 10 + 2 = 12``); the prompt is always
the first.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

PROMPT = "calc : {a} + {b} ="


@dataclass(frozen=True)
class Arithmetic:
    max_operand: int
    heldout_pairs: tuple[tuple[int, int], ...]  # unordered, a <= b

    @classmethod
    def build(cls, rng: random.Random, max_operand: int, heldout_frac: float) -> Arithmetic:
        if not 9 <= max_operand <= 99:
            raise ValueError(f"world.max_operand must be in 9..99, got {max_operand}")
        pairs = [(a, b) for a in range(max_operand + 1) for b in range(a, max_operand + 1)]
        held = rng.sample(pairs, round(heldout_frac * len(pairs)))
        return cls(max_operand, tuple(sorted(held)))

    def is_heldout(self, a: int, b: int) -> bool:
        return (min(a, b), max(a, b)) in self._held

    @functools.cached_property
    def _held(self) -> frozenset:
        return frozenset(self.heldout_pairs)

    def sample_train_pair(self, rng: random.Random) -> tuple[int, int]:
        held, n = self._held, self.max_operand
        while True:
            a, b = rng.randint(0, n), rng.randint(0, n)
            if (min(a, b), max(a, b)) not in held:
                return a, b

    def document(self, rng: random.Random) -> str:
        kind = rng.random()
        if kind < 0.65:
            # several sums per document: the answer is the only informative token of a sum,
            # so chaining them roughly doubles the arithmetic signal per training token
            sums = []
            for _ in range(rng.randint(1, 4)):
                a, b = self.sample_train_pair(rng)
                sums.append(f"{a} + {b} = {a + b}")
            return "calc : " + " , ".join(sums)
        n = self.max_operand
        if kind < 0.95:
            # counting in steps of 1, 2, 5 or 10 gives every number token a place on a number
            # line and a ones digit, from contexts that are not sums
            step = rng.choice([s for s in (1, 2, 5, 10) if 7 * s <= 2 * n])
            start = rng.randint(0, 2 * n - 7 * step)
            return "count : " + " ".join(str(start + i * step) for i in range(8))
        return f"see volume {rng.randint(0, n)} , page {rng.randint(0, n)} ."

    def eval_items(self, rng: random.Random, n_seen: int) -> list[dict]:
        """Every held-out ordered pair, and ``n_seen`` seeded training pairs."""
        n = self.max_operand
        held = [(a, b) for a in range(n + 1) for b in range(n + 1) if self.is_heldout(a, b)]
        seen = [self.sample_train_pair(rng) for _ in range(n_seen)]
        return [
            {
                "task": "addition",
                "split": split,
                "prompt": PROMPT.format(a=a, b=b),
                "answer": str(a + b),
                "a": a,
                "b": b,
            }
            for split, pairs in (("heldout", held), ("seen", seen))
            for a, b in pairs
        ]

    def to_json(self) -> dict:
        return {
            "max_operand": self.max_operand,
            "heldout_pairs": [list(p) for p in self.heldout_pairs],
        }

    @classmethod
    def from_json(cls, d: dict) -> Arithmetic:
        return cls(d["max_operand"], tuple(tuple(p) for p in d["heldout_pairs"]))
