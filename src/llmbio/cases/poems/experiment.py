"""The ``poems`` study's experiments on the organism (see ``studies/poems/analysis.py``).

:class:`PoemExperiment` writes every couplet's line 2 greedily, finds the supernodes by
contrast (:func:`llmbio.cases.poems.planning.contrast`) on the discovery prompts, and runs the
experiments on the held-out line form. Each method returns one tidy table (columns below).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from llmbio.cases.poems.planning import (
    Couplets,
    as_supernode,
    contrast,
    features_at,
    generate_lines,
    outcome,
    plan_swap,
    prompt_activations,
    role,
    transplant,
)
from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit

PLANNED, TRANSPLANT = "planned-word features", "all features (transplant)"
SUPPRESSION_COLUMNS = [
    "first_word",
    "form",
    "planned",
    "line_before",
    "line_after",
    "end_after",
    "other_family_word",
    "still_planned",
    "repeats_line1",
    "outcome",
    "p_planned_before",
    "p_planned_after",
]
INJECTION_COLUMNS = [
    "first_word",
    "form",
    "planned",
    "injected",
    "multiplier",
    "line_before",
    "line_after",
    "end_after",
    "success",
    "lead_rewritten",
    "outcome",
    "p_injected_end",
]
SWEEP_COLUMNS = [
    "first_word",
    "injected",
    "variant",
    "position",
    "token",
    "role",
    "end_after",
    "success",
    "p_injected_end",
]
EXAMPLE_COLUMNS = ["line1", "planned", "condition", "edit", "line2", "end_word"]


@dataclass(frozen=True)
class Settings:
    top_k: int = 8  # features per supernode
    ablate: float = -2.0  # scale of the couplet's own plan
    inject: float = 2.0  # injected plan = inject x donor activation at the newline
    line_tokens: int = 6  # tokens generated for line 2 (the world's longest line)


class PoemExperiment:
    """Couplets, their greedy lines, activations, supernodes and donors."""

    def __init__(self, model, clt, tok, poetry, cp: Couplets, settings: Settings):
        self.model, self.clt, self.tok, self.poetry, self.cp = model, clt, tok, poetry, cp
        self.s, self.F = settings, clt.n_features
        self.base = generate_lines(model, clt, tok, cp.ids, None, settings.line_tokens)
        planned = [e if e in poetry.plan else None for e in self.base.end]
        family = [poetry.family_of(p) if p else None for p in planned]
        first = cp.table["first_word"].tolist()
        self.table = cp.table.assign(
            line2=[self.base.text(i) for i in range(len(cp.ids))],
            planned=planned,
            rhymes=[
                f is not None and f == poetry.family_of(w) and p != w
                for f, p, w in zip(family, planned, first, strict=True)
            ],
        )
        self.all_acts = prompt_activations(model, clt, cp.ids)  # (L * F, n_pos) per prompt
        at = {k: [a[:, k] for a in self.all_acts] for k in (-1, -3)}  # newline, line-1 end
        self.acts = _stack(at[-1], clt)
        disc = [i for i, s in enumerate(cp.table["split"]) if s == "discovery" and planned[i]]
        self.discovery = disc  # couplets the supernodes and the swap calibration are found on
        top_k = settings.top_k
        self.words = contrast(self.acts[disc], [planned[i] for i in disc], self.F, top_k)
        self.families = contrast(self.acts[disc], [family[i] for i in disc], self.F, top_k)
        ends = _stack(at[-3], clt)[disc]
        self.first_words = contrast(ends, [first[i] for i in disc], self.F, top_k)
        self.word_node = {
            w: as_supernode(f"{w}_word", [k for k, _ in m]) for w, m in self.words.items()
        }
        self.plan_node = plan_supernodes(self.words, self.families, poetry)
        self.donor = {w: next(i for i in disc if planned[i] == w) for w in self.words}

    @property
    def evaluation(self) -> list[int]:
        return [i for i, s in enumerate(self.cp.table["split"]) if s == "evaluation"]

    def lines(self, rows: list[int], edits: list[list[Edit]]):
        ids = [self.cp.ids[i] for i in rows]
        return generate_lines(self.model, self.clt, self.tok, ids, edits, self.s.line_tokens)

    def supernode_table(self, scores: pd.DataFrame) -> pd.DataFrame:
        """Every supernode member with its margin and best ground-truth label."""
        best = scores[scores["rank"] == 0].set_index(["layer", "feature"])
        rows = []
        groups = (
            ("word", self.words),
            ("family", self.families),
            ("line-1 end word", self.first_words),
        )
        for kind, found in groups:
            for name, members in found.items():
                for (la, f), margin in members:
                    lab = best.loc[(la, f)] if (la, f) in best.index else None
                    rows.append(
                        dict(
                            kind=kind,
                            name=name,
                            layer=la,
                            feature=f,
                            margin=margin,
                            label=None if lab is None else lab["label"],
                            label_f1=None if lab is None else float(lab["f1"]),
                        )
                    )
        cols = ["kind", "name", "layer", "feature", "margin", "label", "label_f1"]
        return pd.DataFrame(rows, columns=cols)

    def suppression(self) -> pd.DataFrame:
        """The planned word's supernode x ``ablate`` at the newline, per held-out couplet."""
        t = self.table
        rows = [i for i in self.evaluation if self.word_node.get(t["planned"][i])]
        edits = [
            [
                Edit.scale_by(
                    self.word_node[t["planned"][i]], self.s.ablate, positions=(self.cp.newline[i],)
                )
            ]
            for i in rows
        ]
        after = self.lines(rows, edits)
        out = []
        for j, i in enumerate(rows):
            planned, end, first = t["planned"][i], after.end[j], t["first_word"][i]
            pid = self.tok.convert_tokens_to_ids(planned)
            same = self.poetry.family_of(end) == self.poetry.family_of(planned)
            out.append(
                dict(
                    first_word=first,
                    form=int(t["form"][i]),
                    planned=planned,
                    line_before=t["line2"][i],
                    line_after=after.text(j),
                    end_after=end,
                    other_family_word=same and end != planned,
                    still_planned=end == planned,
                    repeats_line1=end == first,
                    outcome=outcome(self.poetry, end, planned, None),
                    p_planned_before=self.base.p_end(i, pid),
                    p_planned_after=after.p_end(j, pid),
                )
            )
        return pd.DataFrame(out, columns=SUPPRESSION_COLUMNS)

    def pairs(self, rows: list[int] | None = None, nodes: dict | None = None):
        """(couplet, a planned word of another family to inject, whose donor is another
        couplet), one per couplet of ``rows`` (default: the held-out ones) that has a plan in
        ``nodes`` (default: ``plan_node``)."""
        rows = self.evaluation if rows is None else rows
        nodes = self.plan_node if nodes is None else nodes
        out = []
        for k, i in enumerate(rows):
            planned = self.table["planned"][i]
            fam = self.poetry.family_of(planned) if planned else None
            cands = sorted(
                w for w in nodes if self.poetry.family_of(w) != fam and self.donor[w] != i
            )
            if planned in nodes and cands:
                out.append((i, cands[(7 * k) % len(cands)]))  # spread over the candidates
        return out

    def swap_edits(self, i: int, q: str, multiplier: float, position: int) -> list[Edit]:
        node = self.plan_node[q]
        values = features_at(self.acts[self.donor[q]], node, self.F)
        own = self.plan_node[self.table["planned"][i]]
        return plan_swap(own, node, values, multiplier, position, self.s.ablate)

    def injection(self, strengths) -> pd.DataFrame:
        """Own plan x ``ablate``, the injected word's plan at each multiplier, at the newline."""
        jobs = [(i, q, m) for m in strengths for i, q in self.pairs()]
        edits = [self.swap_edits(i, q, m, self.cp.newline[i]) for i, q, m in jobs]
        after = self.lines([i for i, _, _ in jobs], edits)
        t, out = self.table, []
        for j, (i, q, m) in enumerate(jobs):
            lead = after.tokens[j][0] if after.tokens[j] else ""
            out.append(
                dict(
                    first_word=t["first_word"][i],
                    form=int(t["form"][i]),
                    planned=t["planned"][i],
                    injected=q,
                    multiplier=m,
                    line_before=t["line2"][i],
                    line_after=after.text(j),
                    end_after=after.end[j],
                    success=after.end[j] == q,
                    lead_rewritten=lead in self.poetry.leads[q],
                    outcome=outcome(self.poetry, after.end[j], t["planned"][i], q),
                    p_injected_end=after.p_end(j, self.tok.convert_tokens_to_ids(q)),
                )
            )
        return pd.DataFrame(out, columns=INJECTION_COLUMNS)

    def position_sweep(self, pairs: pd.DataFrame, first_position: int) -> pd.DataFrame:
        """The injection at one position at a time (from ``first_position`` to the newline),
        and, as a control, every feature of the donor at that position transplanted."""
        index = {(r.first_word, r.form): i for i, r in enumerate(self.cp.table.itertuples())}
        jobs = [(index[(r.first_word, r.form)], r.injected) for r in pairs.itertuples()]
        rows, edits = [], []
        for i, q in jobs:
            own, donor = self.all_acts[i], self.all_acts[self.donor[q]]  # (L * F, n_pos)
            for pos in range(first_position, len(self.cp.ids[i])):
                rows += [(i, q, pos, PLANNED), (i, q, pos, TRANSPLANT)]
                edits.append(self.swap_edits(i, q, self.s.inject, pos))
                edits.append(transplant(own[:, pos], donor[:, pos], pos, self.F))
        after = self.lines([r[0] for r in rows], edits)
        out = []
        for j, (i, q, pos, variant) in enumerate(rows):
            out.append(
                dict(
                    first_word=self.table["first_word"][i],
                    injected=q,
                    variant=variant,
                    position=pos,
                    token=self.tok.convert_ids_to_tokens(self.cp.ids[i][pos]),
                    role=role(pos, len(self.cp.ids[i])),
                    end_after=after.end[j],
                    success=after.end[j] == q,
                    p_injected_end=after.p_end(j, self.tok.convert_tokens_to_ids(q)),
                )
            )
        return pd.DataFrame(out, columns=SWEEP_COLUMNS)

    def examples(self, words, inject: str) -> pd.DataFrame:
        """Baseline, suppressed and injected line 2 of the form-0 couplets of ``words``."""
        t, rows = self.table, []
        for word in words:
            hits = t.index[(t["first_word"] == word) & (t["form"] == 0)]
            if not len(hits):
                continue
            i = int(hits[0])
            planned, nl = t["planned"][i], self.cp.newline[i]
            conds = [("baseline", "", [])]
            if self.word_node.get(planned):
                edit = Edit.scale_by(self.word_node[planned], self.s.ablate, positions=(nl,))
                conds.append(("suppress planned word", f"{planned} x{self.s.ablate:g}", [edit]))
            other = self.poetry.family_of(inject) != t["family"][i]
            if inject in self.plan_node and planned in self.plan_node and other:
                edits = self.swap_edits(i, inject, self.s.inject, nl)
                conds.append(("inject another word", f"{planned} -> {inject}", edits))
            lines = self.lines([i] * len(conds), [c[2] for c in conds])
            for j, (cond, edit, _) in enumerate(conds):
                rows.append(
                    dict(
                        line1=t["text"][i].split("\n")[1],
                        planned=planned,
                        condition=cond,
                        edit=edit,
                        line2=lines.text(j),
                        end_word=lines.end[j],
                    )
                )
        return pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)

    def named_nodes(self, names: dict[str, tuple[str, str]]) -> dict[str, Supernode]:
        """``{name: (kind, word)}`` -> supernodes (``kind``: ``word`` or ``plan``) that exist."""
        out = {}
        for name, (kind, word) in names.items():
            node = (self.word_node if kind == "word" else self.plan_node).get(word)
            if node is not None:
                out[name] = Supernode(name, node.features)
        return out


def plan_supernodes(words: dict, families: dict, poetry) -> dict[str, Supernode]:
    """Each planned word's plan: its own contrast features and its rhyme family's (``words`` /
    ``families``: :func:`llmbio.cases.poems.planning.contrast` results); words without any left
    out."""
    out = {}
    for w, members in words.items():
        keys = [k for k, _ in [*members, *families.get(poetry.family_of(w), [])]]
        if (node := as_supernode(f"{w}_plan", keys)) is not None:
            out[w] = node
    return out


def _stack(rows: list, clt) -> torch.Tensor:
    if not rows:
        return torch.zeros(0, clt.n_layers * clt.n_features)
    return torch.stack(rows)
