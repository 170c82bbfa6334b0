"""Rhyming couplets whose second line is written *towards* a planned end word.

Each end word belongs to a rhyme family and owns its own lead words: every line that ends in
``w`` starts with one of ``w``'s lead words. So the first word after the newline already
depends on which end word the second line is heading for, and a model that plans its rhyme at
the newline writes better couplets. The second line's end word is another member of the first
line's family: a seeded preferred partner half the time, any other member otherwise.
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
PROMPT_HEADER = "A rhyming couplet :\n"


@dataclass(frozen=True)
class Poetry:
    families: dict[str, list[str]]
    leads: dict[str, list[str]]  # end word -> its lead words (one per line form)
    adjectives: dict[str, str]  # end word -> its adjective
    partner: dict[str, str]  # end word -> preferred rhyming partner

    @classmethod
    def build(cls, rng: random.Random) -> Poetry:
        ends = [w for fam in FAMILIES.values() for w in fam]
        n_forms = len(LINE_FORMS)
        if len(LEADS) < n_forms * len(ends) or len(ADJECTIVES) < len(ends):
            raise ValueError("not enough lead words / adjectives for the rhyme families")
        leads, adjs = rng.sample(LEADS, len(LEADS)), rng.sample(ADJECTIVES, len(ADJECTIVES))
        lead_map = {w: leads[i * n_forms : (i + 1) * n_forms] for i, w in enumerate(ends)}
        adj_map = {w: adjs[i] for i, w in enumerate(ends)}
        partner = {}
        for fam in FAMILIES.values():
            for w in fam:
                partner[w] = rng.choice([o for o in fam if o != w])
        return cls({k: list(v) for k, v in FAMILIES.items()}, lead_map, adj_map, partner)

    def family_of(self, word: str) -> str | None:
        return next((f for f, ws in self.families.items() if word in ws), None)

    def line(self, end: str, form: int) -> str:
        lead = self.leads[end][form]
        return LINE_FORMS[form].format(lead=lead, adj=self.adjectives[end], end=end)

    def second_end(self, first: str, rng: random.Random) -> str:
        others = [w for w in self.families[self.family_of(first)] if w != first]
        return self.partner[first] if rng.random() < 0.5 else rng.choice(others)

    def document(self, rng: random.Random) -> str:
        first = rng.choice(sorted(self.partner))
        second = self.second_end(first, rng)
        line1 = self.line(first, rng.randrange(len(LINE_FORMS)))
        line2 = self.line(second, rng.randrange(len(LINE_FORMS)))
        return f"{PROMPT_HEADER}{line1}\n{line2}\n"

    def prompt(self, end: str, form: int) -> str:
        return f"{PROMPT_HEADER}{self.line(end, form)}\n"

    def eval_items(self) -> list[dict]:
        return [
            {
                "task": "rhyme",
                "split": "seen",
                "prompt": self.prompt(w, form),
                "answer": self.family_of(w),
                "first_end": w,
                "family": self.family_of(w),
            }
            for w in sorted(self.partner)
            for form in range(len(LINE_FORMS))
        ]

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("families", "leads", "adjectives", "partner")}

    @classmethod
    def from_json(cls, d: dict) -> Poetry:
        return cls(d["families"], d["leads"], d["adjectives"], d["partner"])
