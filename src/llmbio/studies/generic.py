"""A study's declared experiments on any run, for models without ground truth (released models).

Analyses written for the organism use its ground truth (the world, label scores). On a run of a
released model (config ``pretrained:``) they start with::

    if context.family != "organism":
        return run_declared(context)

:func:`run_declared` then does what study.yaml declares, for the run's prompt family:

1. traces every prompt of the family (``graphs/<prompt id>.*``; pruned tables, viewer, figure)
   and measures the answer: ``tables/declared_prompts`` (top token, P(target), target rank,
   replacement / completeness scores, trace time);
2. resolves the supernodes that apply to the family (and transcoder): explicit feature ids and
   prompt rules (:mod:`llmbio.studies.rules`); label rules need ground truth and are skipped on
   released models. ``tables/declared_supernodes`` lists members, ``declared_supernode_status``
   every supernode with what became of it;
3. runs every declared intervention whose prompt and supernodes exist for the family:
   ``tables/declared_interventions`` (the tidy intervention table) and
   ``tables/declared_effects`` (P(target) and top token before and after, or why it was skipped);
4. draws ``figures/declared_targets``, ``figures/declared_effects`` and, per prompt with
   supernode members in its graph, ``figures/declared_graph_<prompt id>``.

It also runs on the organism (label rules then use ``features/label_scores.parquet``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

from llmbio.attribution.plot import plot_supernode_graph
from llmbio.features.supernodes import Supernode, select_features, supernode_graph
from llmbio.stages.attribution import trace_prompt
from llmbio.studies.experiments import build_edits, load_label_scores, run_intervention
from llmbio.studies.rules import is_prompt_rule, select_by_prompt, target_id
from llmbio.studies.runner import StudyContext
from llmbio.studies.spec import ORGANISM, Prompt, Study
from llmbio.tokenizer import encode

EFFECT_COLUMNS = [
    "experiment", "prompt", "target", "status", "detail", "top_baseline", "top_intervened",
    "top_changed", "p_target_baseline", "p_target_intervened", "relative_change",
    "donor_target", "p_donor_target_intervened", "donor_target_is_top",
]  # fmt: skip
STATUS_COLUMNS = ["supernode", "source", "n_members", "detail"]
MEMBER_COLUMNS = ["supernode", "layer", "feature", "source", "score"]


def run_declared(context: StudyContext) -> None:
    """Trace the family's prompts, resolve supernodes, run interventions; save tables/figures."""
    prompts = {p.id: p for p in context.prompts()}
    if not prompts:
        _save_empty(context, f"no prompts for family {context.family} in study.yaml")
        return
    model, tokenizer, clt = load_run_model(context)
    prompt_rows = [trace_row(context, model, clt, tokenizer, p) for p in prompts.values()]
    context.save_table(pd.DataFrame(prompt_rows), "declared_prompts")
    nodes, members, status = resolve_family_supernodes(context, prompts, model, clt, tokenizer)
    context.save_table(members, "declared_supernodes")
    context.save_table(status, "declared_supernode_status")
    panel, effects = run_family_interventions(context, prompts, nodes, model, clt, tokenizer)
    context.save_table(panel, "declared_interventions")
    context.save_table(effects, "declared_effects")
    for prompt in prompts.values():
        graph_figure(context, prompt, list(nodes.values()))
    context.draw_figure("declared_targets", draw_targets, ["declared_prompts"], _TARGETS)
    context.draw_figure("declared_effects", draw_effects, ["declared_effects"], _EFFECTS)


_TARGETS = "Each prompt's expected answer: its probability and the model's top token."
_EFFECTS = "Declared interventions: P(expected answer) before and after the edits."


def load_run_model(context: StudyContext):
    """``(model, tokenizer, transcoder)``: the released model of the run, or the organism's."""
    if context.run.config.pretrained is not None:
        return context.run.model, context.run.tokenizer, context.run.clt
    organism = context.load_organism()
    return organism.model, organism.tokenizer, organism.clt


def _transcoder_repo(context: StudyContext) -> str | None:
    cfg = context.config
    return cfg.pretrained.transcoder if cfg is not None and cfg.pretrained else None


def trace_row(context: StudyContext, model, clt, tokenizer, prompt: Prompt) -> dict:
    """Trace one prompt into ``graphs/`` and measure its expected answer."""
    trace = context.config.trace if context.config else None
    row = trace_prompt(
        model,
        clt,
        tokenizer,
        prompt.text,
        context.out_dir / "graphs",
        prompt.id,
        max_feature_nodes=trace.max_feature_nodes if trace else None,
        batch_size=trace.batch_size if trace else None,
        save_graph=False,  # a full adjacency is ~0.4 GB on a real model; the tables suffice
    )
    row = {"prompt_id": prompt.id, "family": context.family, "target": prompt.target, **row}
    probs = _next_token_probs(model, tokenizer, prompt.text)
    if prompt.target:
        tid = target_id(tokenizer, prompt.target)
        row["p_target"] = float(probs[tid])
        row["target_rank"] = int((probs > probs[tid]).sum()) + 1
        row["target_is_top"] = row["target_rank"] == 1
    return row


@torch.no_grad()
def _next_token_probs(model, tokenizer, text: str) -> torch.Tensor:
    ids = torch.tensor([encode(tokenizer, text)], device=next(model.parameters()).device)
    return model(input_ids=ids, use_cache=False).logits[0, -1].float().softmax(-1).cpu()


def resolve_family_supernodes(context: StudyContext, prompts: dict, model, clt, tokenizer):
    """Supernodes of the run's family: ``(name -> Supernode, members table, status table)``."""
    study, family = context.study, context.family
    nodes, members, status = {}, [], []
    for spec in study.supernodes:
        if not spec.applies_to(family, _transcoder_repo(context)):
            continue
        found, source, detail = _members(context, study, spec, prompts, model, clt, tokenizer)
        status.append(
            {"supernode": spec.name, "source": source, "n_members": len(found), "detail": detail}
        )
        members += [{"supernode": spec.name, **m} for m in found]
        if found:
            keys = list(dict.fromkeys(f"{m['layer']}/{m['feature']}" for m in found))
            nodes[spec.name] = Supernode.make(spec.name, keys)
    return (
        nodes,
        pd.DataFrame(members, columns=MEMBER_COLUMNS),
        pd.DataFrame(status, columns=STATUS_COLUMNS),
    )


def _members(context, study: Study, spec, prompts, model, clt, tokenizer):
    found, sources, notes = [], [], []
    for fid in spec.features:
        layer, feature = (int(x) for x in fid.split("/"))
        if layer < clt.n_layers and feature < clt.n_features:
            found.append({"layer": layer, "feature": feature, "source": "explicit", "score": None})
        else:
            notes.append(f"{fid} is outside the transcoder ({clt.n_layers} x {clt.n_features})")
    if spec.features:
        sources.append("explicit")
    if is_prompt_rule(spec.rule):
        sources.append("prompt_rule")
        try:
            chosen = select_by_prompt(spec.name, spec.rule, prompts, model, clt, tokenizer)
        except (KeyError, ValueError) as err:
            notes.append(str(err))
        else:
            found += [
                {"layer": r.layer, "feature": r.feature, "source": "prompt_rule", "score": r.score}
                for r in chosen.itertuples()
            ]
    elif spec.rule is not None:
        sources.append("label_rule")
        found += _label_members(context, spec, notes)
    return found, "+".join(sources) or "none", "; ".join(notes)


def _label_members(context: StudyContext, spec, notes: list[str]) -> list[dict]:
    if context.family != ORGANISM:
        notes.append("label rules need ground truth; skipped on a released model")
        return []
    try:
        scores = load_label_scores(context.run_dir)
    except FileNotFoundError as err:
        notes.append(str(err))
        return []
    return [
        {"layer": la, "feature": f, "source": "label_rule", "score": None}
        for la, f in select_features(scores, spec.rule)
    ]


def run_family_interventions(context, prompts: dict, nodes: dict, model, clt, tokenizer):
    """Every declared intervention that can run on the family: (tidy table, effects table)."""
    frames, effects = [], []
    for iv in context.study.interventions:
        prompt = prompts.get(iv.prompt)
        row = {"experiment": iv.id, "prompt": iv.prompt, "target": prompt and prompt.target}
        reason = _skip_reason(context.family, iv, prompt)
        if reason is None:
            try:
                ids, edits = build_edits(
                    context.study, iv, nodes, model, clt, tokenizer, context.family
                )
            except (ValueError, KeyError) as err:
                reason = str(err)
        if reason is not None:
            effects.append({**row, "status": "skipped", "detail": reason})
            continue
        res = run_intervention(iv, ids, edits, nodes, model, clt, tokenizer)
        frames.append(res.table(iv.id))
        donor = next((prompts[e.donor_prompt] for e in iv.edits if e.donor_prompt), None)
        effects.append({**row, **_effect(res, tokenizer, prompt, donor)})
    panel = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return panel, pd.DataFrame(effects).reindex(columns=EFFECT_COLUMNS)


def _skip_reason(family: str, iv, prompt: Prompt | None) -> str | None:
    if iv.families is not None and family not in iv.families:
        return f"declared for {', '.join(iv.families)} only"
    if prompt is None:
        return f"family {family} has no prompt {iv.prompt!r}"
    return None


def _effect(res, tokenizer, prompt: Prompt, donor: Prompt | None) -> dict:
    before, after = res.probabilities("baseline"), res.probabilities("intervened")
    top_b = tokenizer.decode([int(before.argmax())])
    top_a = tokenizer.decode([int(after.argmax())])
    out = {"status": "run", "detail": "", "top_baseline": top_b, "top_intervened": top_a}
    out["top_changed"] = top_b != top_a
    if prompt.target:
        tid = target_id(tokenizer, prompt.target)
        p0, p1 = float(before[tid]), float(after[tid])
        out |= {"p_target_baseline": p0, "p_target_intervened": p1}
        out["relative_change"] = (p1 - p0) / p0 if p0 > 0 else float("nan")
    if donor is not None and donor.target:  # a swap: does the donor's answer win?
        did = target_id(tokenizer, donor.target)
        out |= {"donor_target": donor.target, "p_donor_target_intervened": float(after[did])}
        out["donor_target_is_top"] = int(after.argmax()) == did
    return out


def graph_figure(context: StudyContext, prompt: Prompt, groups: list[Supernode]) -> None:
    """The prompt's pruned graph collapsed into the resolved supernodes, when any is in it."""
    folder = context.out_dir / "graphs"
    g_nodes = pd.read_parquet(folder / f"{prompt.id}.nodes.parquet")
    g_edges = pd.read_parquet(folder / f"{prompt.id}.edges.parquet")
    if not groups:
        return
    sn_nodes, sn_edges = supernode_graph(g_nodes, g_edges, groups, keep_unassigned=False)
    if not (sn_nodes["kind"] == "feature").any():
        return
    names = [f"declared_graph_{prompt.id}_nodes", f"declared_graph_{prompt.id}_edges"]
    context.save_table(sn_nodes, names[0])
    context.save_table(sn_edges, names[1])
    title = f"{prompt.text!r} ({context.family})"
    caption = f"Supernode graph of prompt {prompt.id} on {context.family}."
    context.draw_figure(
        f"declared_graph_{prompt.id}",
        lambda n, e: plot_supernode_graph(n, e, title=title),
        names,
        caption,
    )


def _save_empty(context: StudyContext, why: str) -> None:
    print(f"study {context.study.name}: {why}")
    context.save_table(pd.DataFrame({"note": [why]}), "declared_prompts")


def draw_targets(prompts: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * max(len(prompts), 1)))
    if "p_target" not in prompts or prompts["p_target"].isna().all():
        ax.text(0.5, 0.5, "no prompt has an expected answer", ha="center")
        ax.set_axis_off()
        return fig
    labels = prompts["prompt_id"] + ": " + prompts["target"].fillna("").astype(str)
    ax.barh(labels, prompts["p_target"].fillna(0))
    for i, r in enumerate(prompts.itertuples()):
        ax.text(0.01, i, f"top: {r.top_token!r}", va="center", fontsize=7, color="white")
    ax.set(xlabel="P(expected answer)", xlim=(0, 1))
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def draw_effects(effects: pd.DataFrame):
    ran = effects[effects["status"] == "run"].dropna(subset=["p_target_baseline"])
    fig, ax = plt.subplots(figsize=(6, 0.6 + 0.5 * max(len(ran), 1)))
    if ran.empty:
        ax.text(0.5, 0.5, "no declared intervention ran on this model", ha="center")
        ax.set_axis_off()
        return fig
    y = range(len(ran))
    ax.barh([i - 0.2 for i in y], ran["p_target_baseline"], height=0.4, label="baseline")
    ax.barh([i + 0.2 for i in y], ran["p_target_intervened"], height=0.4, label="intervened")
    ax.set_yticks(list(y), ran["experiment"] + " (" + ran["target"].astype(str) + ")")
    ax.set(xlabel="P(expected answer)", xlim=(0, 1))
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def declared_paths(out_dir: str | Path) -> list[Path]:
    """The tables :func:`run_declared` always writes (for tests and rules)."""
    names = ["declared_prompts", "declared_supernodes", "declared_supernode_status"]
    names += ["declared_interventions", "declared_effects"]
    return [Path(out_dir) / "tables" / f"{n}.parquet" for n in names]
