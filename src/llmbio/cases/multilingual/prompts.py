"""Multilingual circuits on the organism: the lexicon's prompts and their contrast supernodes.

Every ``(relation, language, concept)`` of the world's lexicon gives one prompt
(``Lexicon.prompt``, e.g. ``The opposite of " small " is "``). Prompts of one
``(relation, language)`` share a template and every concept word is one token, so their
positions align token by token. Supernodes are found from ground truth by contrast on the real
forward pass (CLT activations of the model's own residual stream), never from hand-picked ids:

- **operation**: ``|mean antonym - mean synonym|`` at each position (per language, over the
  given concepts), its largest value over positions, averaged over the languages;
- **operand** (one concept): its prompts minus the other concepts' prompts of the same
  template, largest positive value over positions, averaged over relations and languages;
- **output** (one answer concept): the last position of the prompts whose answer is that
  concept minus the other prompts', pooled over relations and languages;
- **language**: each prompt's largest activation over positions, the language's mean minus the
  largest mean of another language.

Scores are ``(L * F,)`` vectors (feature ``j`` is layer ``j // F``, feature ``j % F``); a
supernode is the ``k`` best-scoring features with a positive score.

Positions of prompts in different languages are matched by *role* (:func:`token_roles`): the
concept word, the tokens just before / after it, the last token and the one before it, and the
remaining template words in order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from llmbio.features.supernodes import FeatureKey
from llmbio.interventions.batched import run_batch
from llmbio.tokenizer import encode
from llmbio.world.lexicon import CONCEPTS

Key = tuple[str, str, str]  # (relation, language, concept)
RELATIONS = ("antonym", "synonym")


@dataclass(frozen=True)
class PromptRun:
    """One lexicon prompt on the real forward pass."""

    ids: tuple[int, ...]
    acts: torch.Tensor  # (L, n, F) transcoder activations
    top: str  # the model's top next token
    concept_pos: int  # position of the concept word


def batch_activations(model, clt, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLT activations ``(B, L, n, F)`` and last-position logits ``(B, V)`` of ``(B, n)`` ids,
    in one batched pass (:func:`llmbio.interventions.batched.run_batch`)."""
    out = run_batch(model, clt, ids, record_activations=True)
    return out.activations.float().cpu(), out.logits[:, -1].float().cpu()


def run_texts(model, clt, tokenizer, texts: Sequence[str]) -> list[tuple[list[int], ...]]:
    """``(ids, acts (L, n, F), logits (V,))`` of each text; texts of equal length share a pass."""
    encoded = [encode(tokenizer, t) for t in texts]
    out: list = [None] * len(texts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    for rows in by_len.values():
        acts, logits = batch_activations(model, clt, torch.tensor([encoded[i] for i in rows]))
        for j, i in enumerate(rows):
            out[i] = (encoded[i], acts[j], logits[j])
    return out


def run_lexicon(model, clt, tokenizer, lexicon, languages: Sequence[str]) -> dict[Key, PromptRun]:
    """Every ``(relation, language, concept)`` prompt of the lexicon, run once."""
    keys = [(r, lang, c) for r in RELATIONS for lang in languages for c in lexicon.words]
    results = run_texts(model, clt, tokenizer, [lexicon.prompt(c, r, lang) for r, lang, c in keys])
    runs = {}
    for (r, lang, c), (ids, acts, logits) in zip(keys, results, strict=True):
        word = tokenizer.convert_tokens_to_ids(lexicon.words[c][lang])
        top = tokenizer.convert_ids_to_tokens(int(logits.argmax()))
        runs[(r, lang, c)] = PromptRun(tuple(ids), acts, top, ids.index(word, 1))
    return runs


def concept_order(lexicon) -> list[str]:
    """The lexicon's concepts in world order: consecutive concepts are antonym pairs.

    (A world read back from JSON lists its concepts alphabetically.)
    """
    return [words[0] for words, _ in CONCEPTS if words[0] in lexicon.words]


def prompts_table(runs: dict[Key, PromptRun], lexicon, tokenizer) -> pd.DataFrame:
    rows = []
    for (r, lang, c), run in runs.items():
        answer = lexicon.answer(c, r, lang)
        rows.append({
            "relation": r, "language": lang, "concept": c,
            "prompt": lexicon.prompt(c, r, lang), "answer": answer, "top": run.top,
            "correct": run.top == answer,
        })  # fmt: skip
    return pd.DataFrame(rows)


def feature_keys(index: torch.Tensor, n_features: int) -> list[FeatureKey]:
    return [(int(j) // n_features, int(j) % n_features) for j in index]


def top_features(score: torch.Tensor, k: int, n_features: int) -> list[FeatureKey]:
    """The ``k`` best-scoring features with a positive score, best first."""
    top = score.topk(min(k, score.numel())).indices
    return feature_keys(top[score[top] > 0], n_features)


def _right_aligned(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, n, F)`` pair cut to their common last positions (BOS dropped)."""
    m = min(a.shape[1], b.shape[1]) - 1
    return a[:, -m:], b[:, -m:]


def relation_scores(runs, languages, concepts) -> torch.Tensor:
    """Operation score of every feature (see the module docstring)."""
    scores = []
    for lang in languages:
        ant = torch.stack([runs[("antonym", lang, c)].acts for c in concepts]).mean(0)
        syn = torch.stack([runs[("synonym", lang, c)].acts for c in concepts]).mean(0)
        ant, syn = _right_aligned(ant, syn)
        scores.append((ant - syn).abs().amax(1).flatten())  # (L * F,)
    return torch.stack(scores).mean(0)


def concept_scores(runs, languages, concepts, concept: str) -> torch.Tensor:
    """Operand score of every feature for ``concept`` (see the module docstring)."""
    per = []
    for r in RELATIONS:
        for lang in languages:
            acts = torch.stack([runs[(r, lang, c)].acts for c in concepts])  # (C, L, n, F)
            i = concepts.index(concept)
            others = torch.cat([acts[:i], acts[i + 1 :]]).mean(0)
            per.append((acts[i] - others)[:, 1:].amax(1).flatten())
    return torch.stack(per).mean(0)


def output_scores(runs, lexicon, output: str) -> torch.Tensor:
    """Output score of every feature for answer concept ``output`` (last position)."""
    hit, rest = [], []
    for (r, _lang, c), run in runs.items():
        answer = lexicon.antonym[c] if r == "antonym" else c
        (hit if answer == output else rest).append(run.acts[:, -1].flatten())
    if not hit or not rest:
        return torch.zeros_like(next(iter(runs.values())).acts[:, -1].flatten())
    return torch.stack(hit).mean(0) - torch.stack(rest).mean(0)


def language_scores(runs, languages, concepts) -> dict[str, torch.Tensor]:
    """Language score of every feature, per language (see the module docstring)."""
    means = {
        lang: torch.stack(
            [runs[(r, lang, c)].acts[:, 1:].amax(1).flatten() for r in RELATIONS for c in concepts]
        ).mean(0)
        for lang in languages
    }
    return {
        lang: means[lang] - torch.stack([means[o] for o in languages if o != lang]).amax(0)
        for lang in languages
    }


def token_roles(n_tokens: int, concept_pos: int) -> list[str]:
    """Role of each position of a lexicon prompt (see the module docstring)."""
    named = {0: "bos", n_tokens - 1: "last", concept_pos: "concept"}
    named.setdefault(concept_pos - 1, "before_concept")
    named.setdefault(concept_pos + 1, "after_concept")
    named.setdefault(n_tokens - 2, "before_last")
    roles, k = [], 0
    for i in range(n_tokens):
        if i in named:
            roles.append(named[i])
        else:
            roles.append(f"template{k}")
            k += 1
    return roles


def position_map(recipient: PromptRun, donor: PromptRun) -> list[tuple[int, tuple[int, ...]]]:
    """``(recipient position, donor positions)`` pairs by role, BOS excluded.

    A role the donor also has maps to its position; template words of a donor with another
    number of them map to all the donor's template words (their mean is used).
    """
    mine = token_roles(len(recipient.ids), recipient.concept_pos)
    theirs = token_roles(len(donor.ids), donor.concept_pos)
    templates = tuple(i for i, role in enumerate(theirs) if role.startswith("template"))
    same_count = len(templates) == sum(role.startswith("template") for role in mine)
    where = {role: i for i, role in enumerate(theirs) if same_count or i not in templates}
    pairs = []
    for p, role in enumerate(mine):
        if role == "bos":
            continue
        if role in where:
            pairs.append((p, (where[role],)))
        elif role.startswith("template") and templates:
            pairs.append((p, templates))
    return pairs


def by_role(pairs, base: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``base`` ``(L, n, ...)`` with each recipient position ``p`` of ``pairs`` (from
    :func:`position_map`) set to the mean of ``values`` at its donor positions; the others keep
    ``base``."""
    out = base.clone()
    for p, qs in pairs:
        out[:, p] = values[:, list(qs)].mean(1)
    return out


def mixed_prompts(model, clt, tokenizer, lexicon, languages) -> pd.DataFrame:
    """Antonym prompts whose template and concept word are in different languages.

    About 13% of the corpus's questions are mixed like this (:meth:`Lexicon.document`), always
    answered in the template's language; the answer's language shows which of the two the
    model takes its output language from (``other``: neither language's antonym).
    """
    keys = [(t, w, c) for t in languages for w in languages if w != t for c in lexicon.words]
    texts = [lexicon.template("antonym", t).format(w=lexicon.words[c][w]) for t, w, c in keys]
    rows = []
    for (t, w, c), (_, _, logits) in zip(
        keys, run_texts(model, clt, tokenizer, texts), strict=True
    ):
        top = tokenizer.convert_ids_to_tokens(int(logits.argmax()))
        found = [lang for lang in languages if lexicon.answer(c, "antonym", lang) == top]
        rows.append({"template_language": t, "word_language": w, "concept": c, "top": top,
                     "answer_language": found[0] if found else "other"})  # fmt: skip
    return pd.DataFrame(rows)
