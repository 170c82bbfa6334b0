"""Where is the couplet's plan at the newline, and does the transcoder capture it?

For every couplet prompt of the world (`Poetry.eval_items`) whose planned word has another
possible partner in its family, the organism's top token at the newline is a lead word of the
planned end word. This script splits the logit gap between that lead and the best lead of
another family member (the plan's direct effect on the next token) into the residual stream's
parts at the newline: embedding, each layer's attention output and MLP output, read through the
final norm with its scale frozen. Then it compares each MLP's share with the share of the
transcoder's reconstruction of that MLP (what features can carry; the rest is the error node,
which interventions hold fixed).

    python benchmarks/poems_plan_capture.py results/organism

Reads a finished run (model, world, transcoder/clt) and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForCausalLM

from llmbio.attribution.replacement import record
from llmbio.tokenizer import encode, load_tokenizer
from llmbio.transcoder.io import load_transcoder
from llmbio.world import World


def main(run: Path, transcoder: Path | None = None) -> None:
    report(plan_capture_table(*load_run(run, transcoder)))


def load_run(run: Path, transcoder: Path | None = None):
    """A finished run's ``(model, tokenizer, poetry, clt)`` (exits naming what is missing)."""
    for part in ("model", "world.json", "transcoder/clt"):
        if not (run / part).exists():
            sys.exit(f"{run / part} is missing: run `snakemake --cores all` for that run first")
    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(run / "model").eval()
    tok = load_tokenizer(run / "model")
    poetry = World.load(run / "world.json").poetry
    clt = load_transcoder(transcoder or run / "transcoder" / "clt", model=model)
    return model, tok, poetry, clt


def plan_capture_table(model, tok, poetry, clt) -> pd.DataFrame:
    """One row per couplet with a choice: the newline's logit gap split by residual part."""
    attn_out: dict[int, torch.Tensor] = {}
    hooks = [
        layer.self_attn.register_forward_hook(
            lambda mod, args, out, i=i: attn_out.__setitem__(i, out[0][0, -1].detach())
        )
        for i, layer in enumerate(model.model.layers)
    ]
    try:
        return pd.DataFrame(_rows(model, tok, poetry, clt, attn_out))
    finally:
        for hook in hooks:
            hook.remove()


def plan_share(table: pd.DataFrame) -> float:
    """Share of the MLPs' contribution to the plan's logit gap that the transcoder reconstructs."""
    layers = [c for c in table.columns if c.startswith("mlp") and not c.endswith("_transcoder")]
    mlp = table[layers].sum(axis=1)
    tc = table[[f"{c}_transcoder" for c in layers]].sum(axis=1)
    return float(tc.mean() / mlp.mean())


def _rows(model, tok, poetry, clt, attn_out: dict) -> list[dict]:
    unembed, gain = model.lm_head.weight.detach(), model.model.norm.weight.detach()
    rows = []
    for item in poetry.eval_items():
        planned = item["planned_end"]
        family = poetry.families[poetry.family_of(planned)]
        others = [w for w in family if w not in (planned, item["first_end"])]
        if not others:
            continue
        rec = record(model, torch.tensor([encode(tok, item["prompt"])]))
        with torch.no_grad():
            recon, _ = clt(rec.resid_mid.to(clt.b_dec[0].dtype))
        logits = rec.logits[-1]
        top = int(logits.argmax())
        alternatives = [tok.convert_tokens_to_ids(lead) for w in others for lead in poetry.leads[w]]
        alt = max(alternatives, key=lambda t: float(logits[t]))
        rms = rec.final_resid[-1].pow(2).mean().add(model.config.rms_norm_eps).sqrt()
        direction = (unembed[top] - unembed[alt]) * gain / rms
        row = {
            "top_is_planned_lead": tok.convert_ids_to_tokens(top) in poetry.leads[planned],
            "logit_gap": float(logits[top] - logits[alt]),
            "embedding": float(rec.embed[-1] @ direction),
        }
        for i in range(rec.n_layers):
            row[f"attn{i}"] = float(attn_out[i] @ direction)
            row[f"mlp{i}"] = float(rec.mlp_out[i, -1] @ direction)
            row[f"mlp{i}_transcoder"] = float(recon[i, -1].to(direction.dtype) @ direction)
        rows.append(row)
    return rows


def report(table: pd.DataFrame) -> None:
    print(f"{len(table)} couplets; top token is a lead of the planned word: "
          f"{table['top_is_planned_lead'].mean():.2f}")  # fmt: skip
    print("mean contribution to the planned-lead logit gap at the newline:")
    print(table.drop(columns="top_is_planned_lead").mean().round(2).to_string())
    n_layers = sum(c.startswith("attn") for c in table.columns)
    mlp = table[[f"mlp{i}" for i in range(n_layers)]].sum(axis=1)
    print(f"MLPs: {mlp.mean():.2f} of {table['logit_gap'].mean():.2f}; "
          f"their transcoder reconstruction: {plan_share(table):.0%}")  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python benchmarks/poems_plan_capture.py results/<run> [transcoder dir]")
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
