"""Run the supernodes and interventions a study file declares, on the real forward pass.

``resolve_supernodes`` turns the study's supernode specs into feature groups (explicit ids
and/or rules over the run's ``features/label_scores.parquet``); ``run_interventions``
executes every declared intervention and returns one tidy table (the columns of
:meth:`llmbio.interventions.InterventionResult.table`, plus ``experiment`` = the id).
Donor injection sets each member to ``value x`` its largest activation on the donor prompt.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from llmbio.features.supernodes import Supernode, select_features
from llmbio.figures import FIGURE_SEED
from llmbio.interventions import Edit, Intervener, intervene
from llmbio.interventions.run import InterventionResult
from llmbio.studies.spec import Study
from llmbio.tokenizer import encode


def load_label_scores(run_dir: str | Path) -> pd.DataFrame:
    """Every (feature, variable, value) score kept by the labeller (not only the best)."""
    path = Path(run_dir) / "features" / "label_scores.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run the feature_atlas rule first.")
    return pd.read_parquet(path)


def resolve_supernodes(study: Study, label_scores: pd.DataFrame) -> dict[str, Supernode]:
    out = {}
    for spec in study.supernodes:
        if not spec.applies_to("organism"):
            continue
        members = list(spec.features)
        if isinstance(spec.rule, dict) and "prompt" in spec.rule:
            pass  # a prompt rule (released models) needs the model: llmbio.studies.generic
        elif spec.rule is not None:
            members += [f"{la}/{f}" for la, f in select_features(label_scores, spec.rule)]
        if not members:
            print(f"supernode {spec.name}: no feature matches its rule")
            continue
        out[spec.name] = Supernode.make(spec.name, members)
    return out


def donor_max(model, clt, donor_ids: torch.Tensor, node: Supernode) -> torch.Tensor:
    """Each member's largest activation over the donor prompt (BOS excluded)."""
    acts = Intervener(model, clt, donor_ids).baseline.activations  # (L, n, F)
    return torch.stack([acts[la, 1:, f].max() for la, f in node.features]).detach()


def _positions(position, ids: list[int], tokenizer) -> tuple[int, ...] | None:
    if position == "all":
        return None
    if isinstance(position, int):
        return (position % len(ids),)
    token = tokenizer.convert_tokens_to_ids(str(position))
    found = tuple(i for i, t in enumerate(ids) if t == token)
    if not found:  # released tokenizers spell " Dallas" as "▁Dallas" / "ĠDallas": match decoded
        want = str(position).strip()
        found = tuple(i for i, t in enumerate(ids) if i and tokenizer.decode([t]).strip() == want)
    if not found:
        raise ValueError(f"position {position!r}: token not in the prompt")
    return found


def build_edits(study: Study, intervention, nodes, model, clt, tokenizer, family: str):
    prompts = {p.id: p for p in study.prompts.get(family, ())}
    ids = encode(tokenizer, prompts[intervention.prompt].text)
    edits = []
    for e in intervention.edits:
        target = nodes.get(e.supernode) if e.supernode else e.feature
        if target is None:
            raise ValueError(f"{study.name}/{intervention.id}: supernode {e.supernode!r} is empty")
        pos = _positions(e.position, ids, tokenizer)
        if e.op == "scale":
            edits.append(Edit.scale_by(target, e.value, pos))
        elif e.op in ("set", "zero"):
            edits.append(Edit.set_to(target, 0.0 if e.op == "zero" else e.value, pos))
        else:
            donor = torch.tensor(encode(tokenizer, prompts[e.donor_prompt].text))
            node = target if isinstance(target, Supernode) else Supernode.make(e.feature, [target])
            edits.append(Edit.inject(node, donor_max(model, clt, donor, node), e.value, pos))
    return torch.tensor(ids), edits


def run_interventions(
    study: Study, nodes: dict[str, Supernode], model, clt, tokenizer, family: str = "organism"
) -> tuple[pd.DataFrame, dict[str, InterventionResult]]:
    frames, results = [], {}
    for iv in study.interventions:
        if iv.families is not None and family not in iv.families:
            continue
        try:
            ids, edits = build_edits(study, iv, nodes, model, clt, tokenizer, family)
        except (ValueError, KeyError) as err:
            print(f"intervention {iv.id} skipped: {err}")
            continue
        res = run_intervention(iv, ids, edits, nodes, model, clt, tokenizer)
        results[iv.id] = res
        frames.append(res.table(iv.id))
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), results


def run_intervention(iv, ids, edits, nodes, model, clt, tokenizer) -> InterventionResult:
    """One declared intervention's edits on the real forward pass, configured as study.yaml says
    (frozen attention, constrained layers); every supernode's activity is reported."""
    layers = range(*iv.constrained_layers) if iv.constrained_layers else None
    return intervene(
        model,
        clt,
        ids,
        edits,
        freeze_attention=iv.freeze_attention,
        constrained_layers=layers,
        supernodes=list(nodes.values()),
        tokenizer=tokenizer,
    )


def plot_panel(panel: pd.DataFrame, palette=None, figsize=(10, 3.6)):
    """The declared interventions' table (:func:`run_interventions`) as two panels: each
    supernode's activity as % of baseline, and the top-3 tokens before and after."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=figsize)
    if panel.empty:
        fig.text(0.5, 0.5, "no declared intervention could run (empty supernodes)", ha="center")
        for ax in axes:
            ax.set_axis_off()
        return fig
    act = panel[(panel["kind"] == "supernode") & (panel["condition"] == "intervened")]
    sns.barplot(data=act, x="experiment", y="percent_of_baseline", hue="name", ax=axes[0],
                palette=palette, seed=FIGURE_SEED)  # fmt: skip
    axes[0].set(ylabel="activity, % of baseline", xlabel="")
    axes[0].axhline(100, color="grey", lw=0.8, ls="--")
    toks = panel[(panel["kind"] == "token") & (panel["rank"] <= 3)]
    toks = toks.assign(label=toks["condition"] + ": " + toks["name"].astype(str))
    sns.barplot(data=toks, x="probability", y="experiment", hue="label", ax=axes[1], orient="h",
                seed=FIGURE_SEED)  # fmt: skip
    axes[1].set(xlabel="probability (top-3 tokens)", ylabel="")
    axes[1].legend(fontsize=6, loc="lower right")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    fig.tight_layout()
    return fig
