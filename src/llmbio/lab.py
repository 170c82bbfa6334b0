"""What the scripts under ``experiments/`` share: open a finished run, measure the couplet plan.

The default DAG never imports this module. An experiment reads a run the pipeline finished
(``results/<run>/``: model, world, transcoder) and asks it one more question; the pieces that
several experiments need live here so that each script imports ``llmbio.lab`` instead of
another script.

:func:`plan_capture_table` splits, for every couplet prompt whose planned word has another
possible partner in its family, the newline's logit gap between the planned word's lead and the
best lead of another family member into the residual stream's parts (embedding, each layer's
attention and MLP output, read through the final norm with its scale frozen), beside the
transcoder's reconstruction of each MLP. :func:`plan_share` is the share of the MLPs' part the
transcoder reconstructs: what feature edits at the newline can move at most.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import torch

from llmbio import artefacts
from llmbio.adapters import hook_output
from llmbio.attribution.replacement import record
from llmbio.run import Run
from llmbio.tokenizer import encode


def load_run(run: Path, transcoder: Path | None = None, threads: int = 2):
    """A finished run's ``(model, tokenizer, poetry, clt)``, opened with :class:`llmbio.run.Run`
    (each file checked; a missing or damaged one raises one line naming the rule that remakes
    it); ``transcoder`` replaces the run's CLT directory."""
    torch.set_num_threads(threads)
    opened = Run(run)
    model = opened.model
    clt = opened.clt if transcoder is None else artefacts.load_transcoder(transcoder, model=model)
    return model, opened.tokenizer, opened.world.poetry, clt


def plan_capture_table(model, tok, poetry, clt) -> pd.DataFrame:
    """One row per couplet with a choice: the newline's logit gap split by residual part.

    Columns: ``top_is_planned_lead``, ``logit_gap``, ``embedding``, and per layer ``i``
    ``attn{i}``, ``mlp{i}`` and ``mlp{i}_transcoder`` (logit units; the parts sum to the gap
    up to the final norm's frozen scale)."""
    attn_out: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def fn(out: torch.Tensor) -> None:
            attn_out[i] = out[0, -1].detach()

        return fn

    with ExitStack() as stack:
        for i, layer in enumerate(model.model.layers):
            stack.enter_context(hook_output(layer.self_attn, keep(i)))
        return pd.DataFrame(_plan_rows(model, tok, poetry, clt, attn_out))


def plan_share(table: pd.DataFrame) -> float:
    """Share of the MLPs' contribution to the plan's logit gap that the transcoder reconstructs."""
    layers = [c for c in table.columns if c.startswith("mlp") and not c.endswith("_transcoder")]
    mlp = table[layers].sum(axis=1)
    tc = table[[f"{c}_transcoder" for c in layers]].sum(axis=1)
    return float(tc.mean() / mlp.mean())


def _plan_rows(model, tok, poetry, clt, attn_out: dict) -> list[dict]:
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
