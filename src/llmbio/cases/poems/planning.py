"""Planning in poems on the organism: couplet prompts, planned-word supernodes, and batched
suppression / injection / position experiments (the ``poems`` study).

Every couplet prompt is ``A rhyming couplet :\\n<line 1> <mark>\\n``; the organism writes line 2
and the line's last word is the end word it planned by the newline (in the world, a line's lead
word belongs to its end word, so the plan must exist before the line starts, and the planned
word is a lookup of line 1's end word *and* its closing mark). Prompts of one length are run as
one batch (:mod:`llmbio.interventions.batched`).

Supernodes are found by contrast of the transcoder's activations at the newline (the last
prompt position) over *discovery* prompts, grouped by the end word the organism's greedy line
2 actually ends in (``word``) or by that word's rhyme family (``family``): a feature's margin
is its mean activation in the group minus its largest mean in any other group; the ``top_k``
features with a positive margin form the group's supernode. Nothing about which feature means
what is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from llmbio.features.supernodes import FeatureKey, Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import generate_batch, run_batch
from llmbio.tokenizer import UnknownTokenError, encode, split_words
from llmbio.world.poetry import PROMPT_HEADER, PUNCTUATION, Poetry

LINE1_START = len(split_words(PROMPT_HEADER)) + 1  # first line-1 position (after BOS)


@dataclass(frozen=True)
class Couplets:
    """The couplet prompts that the organism's vocabulary can encode, one per (word, form)."""

    table: pd.DataFrame  # first_word, form, mark, family, world_plan, split, text
    ids: list[list[int]]  # token ids with BOS, aligned with the table's rows

    @property
    def newline(self) -> list[int]:
        return [len(i) - 1 for i in self.ids]


def couplets(poetry: Poetry, tokenizer, eval_form: int | None = None) -> Couplets:
    """Every (line-1 end word, line form) prompt, closed by a mark that rotates with the word
    and the form (so one word's prompts plan different words); the last form is the
    evaluation split."""
    n_forms = len(next(iter(poetry.leads.values())))
    eval_form = n_forms - 1 if eval_form is None else eval_form
    rows, ids = [], []
    for i, word in enumerate(poetry.end_words):
        for form in range(n_forms):
            mark = PUNCTUATION[(i + form) % len(PUNCTUATION)]
            text = poetry.prompt(word, form, mark)
            try:
                ids.append(encode(tokenizer, text))
            except UnknownTokenError:
                continue  # a tiny run's vocabulary may lack some lead words
            split = "evaluation" if form == eval_form else "discovery"
            family = poetry.family_of(word)
            rows.append(
                dict(
                    first_word=word,
                    form=form,
                    mark=mark,
                    family=family,
                    world_plan=poetry.plan[word][mark],
                    split=split,
                    text=text,
                )
            )
    columns = ["first_word", "form", "mark", "family", "world_plan", "split", "text"]
    return Couplets(pd.DataFrame(rows, columns=columns), ids)


def line_length(poetry: Poetry) -> int:
    """Tokens in the longest line 2 the world writes (the end word is its last token)."""
    n_forms = len(next(iter(poetry.leads.values())))
    return max(len(split_words(poetry.line(w, f))) for w in poetry.leads for f in range(n_forms))


@dataclass(frozen=True)
class Lines:
    """Greedy second lines of ``B`` prompts: tokens, text, end word and P(word) at the end."""

    tokens: list[list[str]]
    end: list[str]
    end_slot: list[int]  # generation step that wrote the end word
    probs_at_end: torch.Tensor  # (B, vocab): the distribution the end word was chosen from

    def text(self, i: int) -> str:
        return " ".join(t for t in self.tokens[i] if t != "\n")

    def p_end(self, i: int, token_id: int) -> float:
        return float(self.probs_at_end[i, token_id]) if token_id is not None else 0.0


def generate_lines(
    model,
    clt,
    tokenizer,
    ids: Sequence[Sequence[int]],
    edits: Sequence[Sequence[Edit]] | None,
    n_tokens: int,
) -> Lines:
    """Greedy lines under per-prompt edits; prompts are batched by length."""
    edits = list(edits) if edits is not None else [[] for _ in ids]
    tokens: list = [None] * len(ids)
    probs: list = [None] * len(ids)
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(i)
    for rows in by_length.values():
        batch = torch.tensor([list(ids[i]) for i in rows])
        new, p = generate_batch(model, clt, batch, [edits[i] for i in rows], n_tokens)
        for j, i in enumerate(rows):
            tokens[i], probs[i] = tokenizer.convert_ids_to_tokens(new[j].tolist()), p[j]
    slots = [line_end_slot(t) for t in tokens]
    ends = [t[s] for t, s in zip(tokens, slots, strict=True)]
    at_end = torch.stack([p[s] for p, s in zip(probs, slots, strict=True)]) if ids else None
    return Lines(tokens, ends, slots, at_end)


def line_end_slot(tokens: Sequence[str]) -> int:
    """Index of a generated line's last word: the token before the first newline (the last
    token when the line does not end within the generated tokens)."""
    for i, t in enumerate(tokens):
        if t == "\n":
            return max(i - 1, 0)
    return len(tokens) - 1


def prompt_activations(model, clt, ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Transcoder activations of each prompt at every position: ``(L * F, n_pos)`` each
    (feature ``j`` = layer ``j // F``); prompts are batched by length."""
    out: list = [None] * len(ids)
    by_length: dict[int, list[int]] = {}
    for i, seq in enumerate(ids):
        by_length.setdefault(len(seq), []).append(i)
    for rows in by_length.values():
        batch = torch.tensor([list(ids[i]) for i in rows])
        acts = run_batch(model, clt, batch, record_activations=True).activations  # (b, L, n, F)
        for j, i in enumerate(rows):
            out[i] = acts[j].permute(0, 2, 1).flatten(0, 1).float()
    return out


def contrast(
    acts: torch.Tensor, labels: Sequence[str | None], n_features: int, top_k: int
) -> dict[str, list[tuple[FeatureKey, float]]]:
    """Per group (rows with one label; ``None`` rows are left out): the ``top_k`` features by
    margin = group mean - largest other group's mean, margins > 0 only.

    ``acts``: ``(B, L * F)`` with feature ``j`` = layer ``j // n_features``. Returns
    ``{label: [((layer, feature), margin), ...]}``, every label present (maybe empty).
    """
    names = sorted({lab for lab in labels if lab is not None})
    if not names:
        return {}
    means = torch.stack(
        [acts[[i for i, lab in enumerate(labels) if lab == n]].mean(0) for n in names]
    )  # (G, L * F)
    out = {}
    for g, name in enumerate(names):
        others = torch.cat([means[:g], means[g + 1 :]])
        margin = means[g] - (others.amax(0) if len(others) else torch.zeros_like(means[g]))
        top = margin.topk(min(top_k, margin.numel())).indices
        out[name] = [
            ((int(j) // n_features, int(j) % n_features), float(margin[j]))
            for j in top
            if margin[j] > 0
        ]
    return out


def as_supernode(name: str, members: Sequence[FeatureKey]) -> Supernode | None:
    if not members:
        return None
    return Supernode.make(name, dict.fromkeys(members))


def features_at(acts: torch.Tensor, node: Supernode, n_features: int) -> list[float]:
    """The supernode members' values in one prompt's ``(L * F,)`` activation row."""
    return [float(acts[la * n_features + f]) for la, f in node.features]


def active_node(name: str, acts: torch.Tensor, n_features: int) -> Supernode | None:
    """Every feature active in an ``(L * F,)`` row, as a supernode."""
    idx = acts.nonzero()[:, 0].tolist()
    return as_supernode(name, [(j // n_features, j % n_features) for j in idx])


def plan_swap(
    own: Supernode | None,
    donor: Supernode,
    donor_values: Sequence[float],
    multiplier: float,
    position: int,
    ablate: float = -2.0,
) -> list[Edit]:
    """Ablate the recipient's plan (``own`` x ``ablate``) and set the donor's plan features to
    ``multiplier`` x their donor activation, both at ``position``."""
    edits = [] if own is None else [Edit.scale_by(own, ablate, positions=(position,))]
    return [*edits, Edit.inject(donor, donor_values, multiplier, positions=(position,))]


def transplant(own: torch.Tensor, donor: torch.Tensor, position: int, n_features: int):
    """Edits that replace every feature active at ``position`` (``own``, ``(L * F,)``) by the
    donor's features there (``donor``): the largest feature-level change of one position."""
    edits = []
    if (node := active_node("own", own, n_features)) is not None:
        edits.append(Edit.zero(node, positions=(position,)))
    if (node := active_node("donor", donor, n_features)) is not None:
        values = features_at(donor, node, n_features)
        edits.append(Edit.inject(node, values, 1.0, positions=(position,)))
    return edits


def outcome(poetry: Poetry, end: str, planned: str | None, injected: str | None) -> str:
    """Where a line ended, relative to the planned (and injected) word."""
    if injected is not None and end == injected:
        return "injected word"
    if end == planned:
        return "planned word"
    family = poetry.family_of(end)
    if family is None:
        return "not an end word"
    if family == poetry.family_of(planned):
        return "other word, same rhyme"
    if injected is not None and family == poetry.family_of(injected):
        return "other word, injected rhyme"
    return "other rhyme family"


def role(position: int, n_pos: int) -> str:
    """A couplet prompt position's role: ``<bos> A rhyming couplet : \\n <line 1> <mark> \\n``."""
    if position == n_pos - 1:
        return "newline"
    if position == n_pos - 2:
        return "line-1 mark"
    if position == n_pos - 3:
        return "line-1 end word"
    return "line 1" if position >= LINE1_START else "header"


def position_summary(sweep: pd.DataFrame) -> pd.DataFrame:
    """Per variant and position: share of lines ending in the injected word, mean P."""
    cols = ["variant", "position", "role", "token", "n", "success_rate", "mean_p_injected"]
    if sweep.empty:
        return pd.DataFrame(columns=cols)
    g = sweep.groupby(["variant", "position"], sort=True)
    out = g.agg(
        role=("role", "first"),
        token=("token", lambda t: t.iloc[0] if t.nunique() == 1 else "/".join(sorted(set(t)))[:24]),
        n=("success", "size"),
        success_rate=("success", "mean"),
        mean_p_injected=("p_injected_end", "mean"),
    )
    return out.reset_index()[cols]


def position_contrast(summary: pd.DataFrame) -> pd.DataFrame:
    """Per variant: success at the newline, the best other position, and the margin."""
    rows = []
    for variant, df in summary.groupby("variant", sort=True):
        at_nl, rest = df[df["role"] == "newline"], df[df["role"] != "newline"]
        best = rest.loc[rest["success_rate"].idxmax()] if len(rest) else None
        nl = float(at_nl["success_rate"].iloc[0]) if len(at_nl) else float("nan")
        other = float(best["success_rate"]) if best is not None else float("nan")
        rows.append(
            dict(
                variant=variant,
                newline_success=nl,
                best_other_success=other,
                best_other_position=None if best is None else int(best["position"]),
                best_other_role=None if best is None else best["role"],
                newline_margin=nl - other,
            )
        )
    cols = [
        "variant",
        "newline_success",
        "best_other_success",
        "best_other_position",
        "best_other_role",
        "newline_margin",
    ]
    return pd.DataFrame(rows, columns=cols)
