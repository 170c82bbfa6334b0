"""Rhyming couplets whose second line is written *towards* a planned end word.

Each end word belongs to a rhyme family and owns its own lead words: every line that ends in
``w`` starts with one of ``w``'s lead words. So the first word after the newline already
depends on which end word the second line is heading for, and a model that plans its rhyme by
the newline writes better couplets. Line 1 closes with a punctuation mark (``grab it ,`` as in
the paper's prompt), and line 2's end word is a seeded lookup of *both*: ``plan[end][mark]``,
another member of the first end word's family. Neither token alone gives the plan, so the model
has to compute it after reading the mark (at the mark or the newline), not copy it from one
earlier word with attention.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FAMILIES: dict[str, tuple[str, ...]] = {
    "abbit": ("rabbit", "habit"),
    "ight": ("night", "sight", "flight", "knight"),
    "ay": ("day", "play", "way", "gray"),
    "ain": ("rain", "train", "plain", "chain"),
    "een": ("green", "seen", "queen", "screen"),
    "ore": ("door", "floor", "shore", "roar"),
    "ing": ("king", "ring", "sing", "wing"),
    "ee": ("tree", "sea", "bee", "key"),
    "old": ("gold", "bold", "told", "fold"),
    "ake": ("lake", "cake", "snake", "bake"),
    "ell": ("bell", "well", "shell", "spell"),
}
LEADS = """apple arrow basket beach blanket bottle bridge brush bucket butter button candle canyon
carpet carrot castle cellar chimney cloud clover coat comet copper cottage crayon cradle crown
curtain daisy desert diamond dragon drum eagle engine falcon feather fence fiddle forest fountain
garden giant glove goose hammer harbor harvest helmet honey horse island jacket jungle kettle
kitten ladder lantern letter lion marble meadow mirror monkey mountain needle nest ocean orchard
otter paddle palace parrot pebble pencil pepper piano pillow pirate planet pocket pony puddle
puppet raven ribbon robin rocket saddle sailor shadow sheep shovel silver sister spider spoon
stable statue stone storm sugar sweater teacher thunder tiger timber tower tractor trumpet tunnel
turtle valley velvet village violin wagon walrus whistle willow window winter wizard wolf zebra
badger beetle biscuit bonnet cabin camel cobweb donkey farmer gravel hedge lizard mitten moose
muffin noodle oyster peanut pigeon poodle puffin quilt rooster sparrow squirrel thistle tulip
umbrella walnut weasel yarn""".split()
ADJECTIVES = """quiet gentle lonely hungry sleepy clever humble eager noble rusty dusty hollow
silent shiny wild brave calm proud curious lucky merry muddy fuzzy jolly sturdy fancy grumpy nimble
patient polite restless sandy scruffy shaggy sneaky spotted striped tender wooden woolly wrinkled
yellow crimson silky crooked dizzy""".split()
LINE_FORMS = (
    "{lead} was like a {adj} {end}",
    "{lead} went to see the {end}",
    "{lead} came along with the {end}",
)
PUNCTUATION = (",", ".", "!", ";")
PROMPT_HEADER = "A rhyming couplet :\n"


@dataclass(frozen=True)
class Poetry:
    families: dict[str, list[str]]
    leads: dict[str, list[str]]  # end word -> its lead words (one per line form)
    adjectives: dict[str, str]  # end word -> its adjective
    plan: dict[str, dict[str, str]]  # line 1's end word -> its closing mark -> line 2's end word

    @classmethod
    def build(cls, rng: random.Random) -> Poetry:
        ends = [w for fam in FAMILIES.values() for w in fam]
        n_forms = len(LINE_FORMS)
        if len(LEADS) < n_forms * len(ends) or len(ADJECTIVES) < len(ends):
            raise ValueError("not enough lead words / adjectives for the rhyme families")
        leads, adjs = rng.sample(LEADS, len(LEADS)), rng.sample(ADJECTIVES, len(ADJECTIVES))
        lead_map = {w: leads[i * n_forms : (i + 1) * n_forms] for i, w in enumerate(ends)}
        adj_map = {w: adjs[i] for i, w in enumerate(ends)}
        plan = {}
        for fam in FAMILIES.values():
            for w in fam:
                others = [o for o in fam if o != w]
                # every other member is planned after some mark, the rest drawn at random
                picks = others + [rng.choice(others) for _ in range(len(PUNCTUATION) - len(others))]
                rng.shuffle(picks)
                plan[w] = dict(zip(PUNCTUATION, picks, strict=True))
        return cls({k: list(v) for k, v in FAMILIES.items()}, lead_map, adj_map, plan)

    @property
    def end_words(self) -> list[str]:
        return sorted(self.plan)

    def family_of(self, word: str) -> str | None:
        return next((f for f, ws in self.families.items() if word in ws), None)

    def line(self, end: str, form: int) -> str:
        lead = self.leads[end][form]
        return LINE_FORMS[form].format(lead=lead, adj=self.adjectives[end], end=end)

    def document(self, rng: random.Random) -> str:
        first = rng.choice(self.end_words)
        mark = rng.choice(PUNCTUATION)
        line1 = self.line(first, rng.randrange(len(LINE_FORMS)))
        line2 = self.line(self.plan[first][mark], rng.randrange(len(LINE_FORMS)))
        return f"{PROMPT_HEADER}{line1} {mark}\n{line2}\n"

    def prompt(self, end: str, form: int, mark: str = ",") -> str:
        return f"{PROMPT_HEADER}{self.line(end, form)} {mark}\n"

    def eval_items(self) -> list[dict]:
        """Every (end word, mark) once, the line form rotating; ``planned_end`` is the truth."""
        return [
            {
                "task": "rhyme",
                "split": "seen",
                "prompt": self.prompt(w, (i + j) % len(LINE_FORMS), mark),
                "answer": self.family_of(w),
                "first_end": w,
                "mark": mark,
                "family": self.family_of(w),
                "planned_end": self.plan[w][mark],
            }
            for i, w in enumerate(self.end_words)
            for j, mark in enumerate(PUNCTUATION)
        ]

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("families", "leads", "adjectives", "plan")}

    @classmethod
    def from_json(cls, d: dict) -> Poetry:
        if "plan" not in d:
            raise ValueError(
                "world.json was written by an older llmbio (rhyme partners, no plan table); "
                "delete the run's results folder and rerun the pipeline"
            )
        return cls(d["families"], d["leads"], d["adjectives"], d["plan"])
