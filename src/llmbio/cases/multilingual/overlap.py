"""Feature overlap between languages by layer: parallel sentences against unrelated ones.

[B] (multilingual circuits, "how general are multilingual features") takes paragraphs and their
translations, records for each layer the set of features active anywhere in the context, and
measures the intersection over union (IoU) of those sets for each pair of languages, against
the same measure on unrelated paragraphs of the same language pair.

Here the parallel texts are the world's sentences (``SENTENCES``: "The dog is small ." /
"Le chien est petit ." / "狗 很 小 。") for every (noun, concept) item; the unrelated pair takes
the second language's sentence of another noun and another antonym pair's concept. BOS is left
out (its features are the same for every text).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import torch

from llmbio.cases.multilingual.prompts import concept_order, run_texts
from llmbio.world.lexicon import LANGUAGES, NOUNS, SENTENCES


def sentence(lexicon, lang: str, noun: int, concept: str) -> str:
    return SENTENCES[lang].format(
        n=NOUNS[noun][LANGUAGES.index(lang)], a=lexicon.words[concept][lang]
    )


def items(lexicon) -> list[tuple[int, str]]:
    """Every (noun, concept) pair of the world."""
    return [(n, c) for c in lexicon.words for n in range(len(NOUNS))]


def unrelated(lexicon, item: tuple[int, str]) -> tuple[int, str]:
    """Another noun and a concept two places on (another antonym pair)."""
    concepts = concept_order(lexicon)
    noun, concept = item
    return (noun + 1) % len(NOUNS), concepts[(concepts.index(concept) + 2) % len(concepts)]


def active_sets(model, clt, tokenizer, texts) -> torch.Tensor:
    """``(B, L, F)`` bool: the feature is active at some position of the text (BOS excluded)."""
    return torch.stack(
        [acts[:, 1:].gt(0).any(1) for _, acts, _ in run_texts(model, clt, tokenizer, texts)]
    )


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``(..., F)`` bool sets over the last axis (NaN where both are empty)."""
    inter = (a & b).sum(-1).double()
    union = (a | b).sum(-1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.nan)


def overlap_table(model, clt, tokenizer, lexicon, languages) -> pd.DataFrame:
    """One row per (language pair, kind: parallel | unrelated, item, layer) with its IoU."""
    its = items(lexicon)
    sets = {
        lang: active_sets(model, clt, tokenizer, [sentence(lexicon, lang, n, c) for n, c in its])
        for lang in languages
    }
    index = {item: i for i, item in enumerate(its)}
    other = torch.tensor([index[unrelated(lexicon, item)] for item in its])
    frames = []
    for a, b in combinations(languages, 2):
        for kind, rows in (("parallel", torch.arange(len(its))), ("unrelated", other)):
            values = iou(sets[a], sets[b][rows]).numpy()  # (items, L)
            n_items, n_layers = values.shape
            frames.append(pd.DataFrame({
                "pair": f"{a}-{b}", "kind": kind,
                "item": np.repeat(np.arange(n_items), n_layers),
                "layer": np.tile(np.arange(n_layers), n_items), "iou": values.ravel(),
            }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def overlap_by_layer(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of the IoU per (pair, kind, layer)."""
    g = table.groupby(["pair", "kind", "layer"])["iou"]
    out = g.agg(mean="mean", sd="std", n="count").reset_index()
    out["se"] = out["sd"] / np.sqrt(out["n"].clip(lower=1))
    return out


def overlap_summary(by_layer: pd.DataFrame, n_layers: int) -> pd.DataFrame:
    """Per pair and pooled (``all``): parallel IoU at the first, middle and last layers.

    ``middle_minus_edges`` = mean parallel IoU of the middle layers (all but the first and the
    last) minus the larger of the first and the last layer's (> 0: the overlap peaks in the
    middle); ``excess_middle`` = parallel minus unrelated IoU over the middle layers. NaN when
    the model has no middle layer.
    """
    middle = list(range(1, n_layers - 1))
    edges = sorted({0, n_layers - 1})
    pooled = by_layer.groupby(["kind", "layer"], as_index=False)["mean"].mean().assign(pair="all")
    rows = []
    for pair, part in pd.concat([by_layer, pooled]).groupby("pair", sort=False):
        par = part[part["kind"] == "parallel"].set_index("layer")["mean"]
        unr = part[part["kind"] == "unrelated"].set_index("layer")["mean"]
        mid = par.reindex(middle).mean() if middle else np.nan
        rows.append({
            "pair": pair, "iou_first": par.get(0, np.nan), "iou_middle": mid,
            "iou_last": par.get(n_layers - 1, np.nan),
            "middle_minus_edges": mid - par.reindex(edges).max(),
            "excess_middle": mid - unr.reindex(middle).mean() if middle else np.nan,
            "peak_layer": int(par.idxmax()) if par.notna().any() else -1,
        })  # fmt: skip
    return pd.DataFrame(rows)
