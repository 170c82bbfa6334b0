"""Is the relation, or the output language, one direction in the organism's MLP outputs?

The multilingual study swaps the operation (antonym -> synonym) and the output language by
patching transcoder features from a donor prompt that names *another* concept, so that only
what is shared across concepts can move the answer. This script asks the same question of the
real model, with no transcoder:

- **steering**: a mean-difference vector per layer and recipient position, averaged over the
  study's calibration concepts: the target prompt's outputs (synonym prompt, or the antonym
  prompt in the target language, positions matched by role) minus the source prompt's. It is
  added to the outputs of every layer's MLP (or attention) at every position of the held-out
  concepts' antonym prompts. Success: the top token is the concept's synonym, or its antonym
  in the target language; ``in_target`` counts answers in the target language at all;
- **steering at the last position** (``steering_last``, MLP and attention parts): the same
  vector added at the last position only, where the answer is read;
- **same-concept patch** (the upper bound): every layer's MLP (or attention) outputs replaced
  by those of the same concept's target prompt, position by role.

Both are repeated in the transcoder's basis (``clt_features``): the mean difference of every
feature's activation added to the recipient's (a steering the transcoder can express), and
every feature set to the same-concept target's values (error nodes stay the recipient's).

If steering works on held-out concepts, the model carries the change as one concept-independent
direction in those outputs; if only the same-concept patch works, it is bound to the concept.

    python experiments/output-language-direction/steer.py results/organism [steer.csv]

Reads a finished run (model, world and, where it has one, transcoder/clt); with a second
argument, also writes the per-case table there as CSV. A run without a transcoder (an organism
trained only to be steered) gets the ``mlp`` and ``self_attn`` parts alone.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pandas as pd
import torch

from llmbio.cases.multilingual.prompts import (
    RELATIONS,
    PromptRun,
    by_role,
    concept_order,
    position_map,
    run_lexicon,
)
from llmbio.cases.multilingual.swaps import language_pairs
from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import run_batch
from llmbio.lab import load_run
from llmbio.run import Run
from llmbio.tokenizer import encode
from llmbio.world import World
from llmbio.world.lexicon import LANGUAGES

PARTS = ("mlp", "self_attn", "clt_features")


def main(run: Path, out: Path | None = None) -> None:
    if (run / "transcoder" / "clt").exists():
        model, tok, _, clt = load_run(run)
        parts = PARTS
    else:
        for part in ("model", "world.json"):
            if not (run / part).exists():
                sys.exit(f"{run / part} is missing: train that run's organism first")
        torch.set_num_threads(2)
        opened = Run(run)
        model, tok, clt, parts = opened.model, opened.tokenizer, None, PARTS[:2]
    lex = World.load(run / "world.json").lexicon
    languages, concepts = list(LANGUAGES), concept_order(lex)
    calib = [c for i, c in enumerate(concepts) if (i // 2) % 2 == 0]  # as the study splits
    held_out = [c for c in concepts if c not in calib]
    if clt is None:
        runs = model_runs(model, tok, lex, languages)
    else:
        runs = run_lexicon(model, clt, tok, lex, languages)
    swaps = [("operation", lang, ("antonym", lang), ("synonym", lang)) for lang in languages]
    swaps += [
        ("language", f"{src}->{dst}", ("antonym", src), ("antonym", dst))
        for src, dst in language_pairs(languages)
    ]
    rows = []
    for part in parts:
        for swap, name, (r0, l0), (r1, l1) in swaps:
            words = {lex.answer(c, r, l1) for c in concepts for r in ("antonym", "synonym")}
            words |= {lex.words[c][l1] for c in concepts}  # any word of the target language
            pairs = [(runs[(r0, l0, c)], runs[(r1, l1, c)]) for c in calib]
            if part == "clt_features":
                vector = mean_difference(pairs, lambda run: run.acts)
            else:
                vector = mean_difference(pairs, lambda run, pt=part: outputs(model, run.ids, pt))
            for c in held_out:
                rec, donor, target = runs[(r0, l0, c)], runs[(r1, l1, c)], lex.answer(c, r1, l1)
                if part == "clt_features":
                    steered = features_top(model, clt, tok, rec, rec.acts + vector)
                    target_acts = by_role(position_map(rec, donor), rec.acts, donor.acts)
                    patched = features_top(model, clt, tok, rec, target_acts)
                    last = None
                else:
                    steered = top_token(model, tok, rec.ids, part, add=vector)
                    at_last = torch.zeros_like(vector)
                    at_last[:, -1] = vector[:, -1]
                    last = top_token(model, tok, rec.ids, part, add=at_last) == target
                    full = outputs(model, donor.ids, part)
                    patch = by_role(position_map(rec, donor), torch.zeros_like(vector), full)
                    mask = torch.zeros(vector.shape[1], dtype=torch.bool)
                    mask[[p for p, _ in position_map(rec, donor)]] = True
                    patched = top_token(model, tok, rec.ids, part, replace=(patch, mask))
                rows.append({
                    "part": part, "swap": swap, "pair": name, "concept": c,
                    "steering": steered == target, "in_target": steered in words,
                    "steering_last": last,
                    "same_concept_patch": patched == target,
                })  # fmt: skip
    table = pd.DataFrame(rows)
    cols = ["steering", "in_target", "steering_last", "same_concept_patch"]
    print(f"held-out concepts: {len(held_out)}; steering vectors from {len(calib)} concepts")
    print(table.groupby(["part", "swap"])[cols].mean().round(3).to_string())
    print(table.groupby(["part", "swap", "pair"])["steering"].mean().round(2).unstack(0))
    if out is not None:
        table.to_csv(out, index=False)


def model_runs(model, tok, lex, languages) -> dict:
    """``run_lexicon`` without a transcoder: every lexicon prompt's ids, top token and concept
    position (``acts`` left empty)."""
    runs = {}
    for r in RELATIONS:
        for lang in languages:
            for c in lex.words:
                ids = encode(tok, lex.prompt(c, r, lang))
                with torch.no_grad():
                    logits = model(torch.tensor([ids])).logits[0, -1]
                word = tok.convert_tokens_to_ids(lex.words[c][lang])
                top = tok.convert_ids_to_tokens(int(logits.argmax()))
                runs[(r, lang, c)] = PromptRun(tuple(ids), torch.empty(0), top, ids.index(word, 1))
    return runs


def outputs(model, ids, part: str) -> torch.Tensor:
    """Every layer's ``part`` output ``(L, n, D)`` on ``ids``."""
    with hooked(model, part, lambda layer, y: y) as found, torch.no_grad():
        model(torch.tensor([list(ids)]))
    return torch.stack(found)


def mean_difference(pairs, read) -> torch.Tensor:
    """Mean over ``(source, target)`` prompt runs of ``read(target) - read(source)``, the
    target's values taken at the source's positions by role; ``(L, n, ...)``."""
    diffs = []
    for source, target in pairs:
        a = read(source)
        diffs.append(by_role(position_map(source, target), a, read(target)) - a)
    return torch.stack(diffs).mean(0)


@cache
def every_feature(n_layers: int, n_features: int) -> Supernode:
    return Supernode.make("all", [(la, f) for la in range(n_layers) for f in range(n_features)])


def features_top(model, clt, tok, recipient, values: torch.Tensor) -> str:
    """Top token with every transcoder feature set to ``values`` ``(L, n, F)`` at every
    position but BOS (real forward pass, error nodes and attention live)."""
    node = every_feature(clt.n_layers, clt.n_features)
    edits = [
        Edit.inject(node, values[:, p].reshape(-1), 1.0, positions=(p,))
        for p in range(1, len(recipient.ids))
    ]
    logits = run_batch(model, clt, torch.tensor([recipient.ids]), [edits]).logits[0, -1]
    return tok.convert_ids_to_tokens(int(logits.argmax()))


def top_token(model, tok, ids, part: str, add=None, replace=None) -> str:
    def edit(layer, y):
        if add is not None:
            return y + add[layer][None]
        values, mask = replace
        y = y.clone()
        y[:, mask] = values[layer][mask]
        return y

    with hooked(model, part, edit), torch.no_grad():
        logits = model(torch.tensor([list(ids)])).logits[0, -1]
    return tok.convert_ids_to_tokens(int(logits.argmax()))


@contextmanager
def hooked(model, part: str, edit):
    """Forward hooks on every layer's ``part``: its output becomes ``edit(layer, output)``;
    yields the list of the (edited) outputs of the first sequence, layer by layer."""
    found: list[torch.Tensor] = []

    def hook(layer):
        def run(_module, _args, out):
            y = edit(layer, out[0] if isinstance(out, tuple) else out)
            found.append(y[0].detach())
            return (y, *out[1:]) if isinstance(out, tuple) else y

        return run

    modules = [getattr(layer, part) for layer in model.model.layers]
    handles = [module.register_forward_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python experiments/output-language-direction/steer.py results/<run> [csv]")
    main(*map(Path, sys.argv[1:]))
