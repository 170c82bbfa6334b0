"""Which part of the residual stream at the newline carries the couplet plan, on the real model?

For the poems study's held-out injection pairs (couplet, planned word of another family, a
discovery couplet that plans it: `PoemExperiment.pairs` with the 8-feature plans), patch the
donor couplet's outputs at its newline into the recipient at its newline: every layer's
attention outputs, every layer's MLP outputs, both, or one layer's MLP output. No transcoder
is involved: the patched values are the real model's. The greedy line 2 then ends in the
injected word or not. Feature edits can move at most what the transcoder reconstructs of the
MLP outputs (``plan_capture.py``); this script shows what the MLP outputs themselves do.

    python experiments/poems-plan-selection/decompose.py results/organism

Reads a finished run (model, world, transcoder/clt for the study's pairs); writes nothing.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from llmbio.cases.poems.experiment import PoemExperiment, Settings
from llmbio.cases.poems.planning import couplets, line_end_slot, line_length
from llmbio.cases.poems.swaps import plan_nodes
from llmbio.lab import load_run

PARTS = ("self_attn", "mlp")


def main(run: Path) -> None:
    model, tok, poetry, clt = load_run(run)
    settings = Settings(8, -2.0, 2.0, line_length(poetry))  # the study's paper-form values
    exp = PoemExperiment(model, clt, tok, poetry, couplets(poetry, tok), settings)
    pairs = exp.pairs(exp.evaluation, plan_nodes(exp, settings.top_k))
    n_layers = len(model.model.layers)
    patches = {
        "attention, all layers": [(la, "self_attn") for la in range(n_layers)],
        "MLP, all layers": [(la, "mlp") for la in range(n_layers)],
        "both, all layers": [(la, p) for la in range(n_layers) for p in PARTS],
    }
    patches |= {f"MLP, layer {la} only": [(la, "mlp")] for la in range(n_layers)}
    donors = {exp.donor[q] for _, q in pairs}
    values = {d: outputs_at(model, exp.cp.ids[d], exp.cp.newline[d]) for d in donors}
    rows = []
    for name, sites in patches.items():
        hits = []
        for i, q in pairs:
            donor = values[exp.donor[q]]
            with patched(model, {s: donor[s] for s in sites}, exp.cp.newline[i]):
                tokens = greedy(model, tok, exp.cp.ids[i], settings.line_tokens)
            hits.append(tokens[line_end_slot(tokens)] == q)
        rows.append({"patch": name, "n_pairs": len(hits), "success": sum(hits) / len(hits)})
    print(pd.DataFrame(rows).to_string(index=False))


def _output(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def outputs_at(model, ids, position: int) -> dict[tuple[int, str], torch.Tensor]:
    """Every layer's attention and MLP output ``(d_model,)`` at ``position`` of ``ids``."""
    found: dict = {}
    hooks = [
        getattr(layer, part).register_forward_hook(
            lambda _m, _a, out, key=(la, part): found.__setitem__(key, _output(out)[0, position])
        )
        for la, layer in enumerate(model.model.layers)
        for part in PARTS
    ]
    try:
        with torch.no_grad():
            model(torch.tensor([list(ids)]))
    finally:
        for hook in hooks:
            hook.remove()
    return found


@contextmanager
def patched(model, values: dict[tuple[int, str], torch.Tensor], position: int):
    """Replace the outputs named in ``values`` at ``position`` on every forward pass."""

    def replace(out, value):
        y = _output(out).clone()
        y[:, position] = value
        return (y, *out[1:]) if isinstance(out, tuple) else y

    layers = model.model.layers
    hooks = [
        getattr(layers[la], part).register_forward_hook(
            lambda _m, _a, out, v=value: replace(out, v)
        )
        for (la, part), value in values.items()
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def greedy(model, tok, ids, n_tokens: int) -> list[str]:
    """``n_tokens`` greedy tokens after ``ids``, the whole sequence rerun at each step (the
    patch stays at its position)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n_tokens):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return tok.convert_ids_to_tokens(seq[len(ids) :])


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/organism"))
