"""Refusals on the organism: specific harm -> harmful request -> "I", checked by interventions.

Every evaluation dialogue of the world (``Human : <request> Assistant :``, the request naming a
pair of ingredients or a topic) is run once; dialogues of equal length share one batched pass
(:mod:`llmbio.interventions.batched`). Supernodes come from ground truth by contrast, on
dialogues shown in training only (held-out pairs never enter the selection):

- ``harmful_request`` / ``harmless_request``: the ``TOP_K`` features whose mean activation on
  the last token is furthest above (below) on harmful than on harmless dialogues;
- ``specific_harm``: the same on the token that reveals the harm (the second ingredient or the
  topic word).

Tables (``tables/``): ``supernode_members``; ``prompts`` (every dialogue: first token,
refusal margin = logit "I" - logit "Sure", supernode activities); ``study_prompts``; ``pairs``
(per ingredient pair / topic); ``separation`` (ROC AUC of each supernode's activity, harmful vs
harmless, seen vs held-out); ``experiments`` (one row per dialogue and intervention);
``global_effects`` (every feature's mean effect on the margin, activation x gradient over all
positions, on harmful and harmless dialogues) and ``global_check`` (the top ones zero-ablated
for real); ``supernode_nodes`` / ``supernode_edges`` (the bleach + ammonia graph); ``panel``
(the declared interventions); ``swap_calibration`` / ``swaps``: harmful-request edits whose size
and form are calibrated on one template's training pairs, with random-feature controls
(:mod:`llmbio.cases.refusals.swaps`).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch

from llmbio.attribution.export import graph_tables as export_tables
from llmbio.attribution.export import save_tables
from llmbio.attribution.prune import prune_graph
from llmbio.attribution.trace import trace
from llmbio.attribution.viewer import write_graph_html
from llmbio.cases.refusals import figures as rp
from llmbio.cases.refusals.swaps import run_swaps
from llmbio.cases.refusals.tables import (
    NODES,
    contrast_top,
    dialogue_table,
    graph_links,
    graph_supernodes,
    harm_position,
    pairs_table,
    position_groups,
    separation_table,
)
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.interventions.batched import (
    BatchPass,
    DenseEdits,
    feature_effects,
    logit_difference,
    run_batch,
)
from llmbio.studies import StudyContext
from llmbio.studies.experiments import run_interventions
from llmbio.studies.generic import run_declared
from llmbio.tokenizer import UnknownTokenError, encode
from llmbio.world import World
from llmbio.world.safety import COMPLIANCE, REFUSAL

TOP_K = 8  # features per contrast supernode
ABLATE = (0.0, -2.0, -3.0)  # harmful-request scale factors (the paper's -3x among them)
INJECT = (1.0, 2.0, 4.0, 8.0)  # multiples of the donor's activation
SPECIFIC_SCALE = -3.0
N_CHECK = 10  # global top features checked with real ablations


def run(context: StudyContext) -> None:
    if context.family != "organism":  # released models: no ground truth, declared experiments
        return run_declared(context)
    start = time.perf_counter()
    model, tok, clt, world = context.load_organism()
    lab = Lab(model, clt, tok, world)
    nodes = lab.contrast_supernodes()
    context.save_table(lab.members_table(nodes), "supernode_members")
    prompts = lab.prompts_table(nodes)
    context.save_table(prompts, "prompts")
    context.save_table(lab.study_prompts(context.prompts("organism")), "study_prompts")
    context.save_table(pairs_table(prompts), "pairs")
    context.save_table(separation_table(prompts), "separation")
    context.save_table(lab.experiments(nodes, context.prompts("organism")), "experiments")
    run_swaps(context, lab)  # calibrated supernode size and form, random-feature controls
    effects = with_labels(lab.global_effects(nodes), context.run_dir)
    context.save_table(effects, "global_effects")
    context.save_table(lab.global_check(effects), "global_check")
    graph_tables(context, lab, nodes)
    declared = {n: Supernode(n, f) for n, f in nodes.items() if f}
    panel, _ = run_interventions(context.study, declared, model, clt, tok)
    context.save_table(panel, "panel")
    context.draw_figure(
        "supernode_graph", rp.draw_supernode_graph, ["supernode_nodes", "supernode_edges"]
    )
    context.draw_figure("intervention_panel", rp.draw_panel, ["panel"])
    context.draw_figure("intervention_outcomes", rp.draw_outcomes, ["experiments"])
    context.draw_figure("steering_strength", rp.draw_steering, ["experiments"])
    context.draw_figure("heldout_pairs", rp.draw_pairs, ["pairs"])
    context.draw_figure("global_view", rp.draw_global, ["global_effects"])
    print(f"refusals: analysis took {time.perf_counter() - start:.1f} s")


class Lab:
    """The organism, its dialogues grouped by length, and their baseline passes."""

    def __init__(self, model, clt, tok, world: World):
        self.model, self.clt, self.tok = model, clt, tok
        self.refusal = tok.convert_tokens_to_ids(REFUSAL.split()[0])
        self.compliance = tok.convert_tokens_to_ids(COMPLIANCE.split()[0])
        self.items = dialogue_table(world, tok)
        self.harmful = self.items["harmful"].to_dict()  # row -> bool (pandas .at is slow)
        self.harm_pos = self.items["harm_pos"].to_dict()
        self.groups = [  # (row indices, ids (B, n)), one per prompt length
            (list(rows.index), torch.tensor(rows["ids"].tolist()))
            for _, rows in self.items.groupby("n_tokens")
        ]
        self.base = {i: self.pass_(ids) for i, (_, ids) in enumerate(self.groups)}

    def pass_(self, ids, edits: DenseEdits | None = None) -> BatchPass:
        """Last-position logits ``(B, V)`` and activations ``(B, L, n, F)`` of ``ids``."""
        out = run_batch(self.model, self.clt, ids, edits, record_activations=True)
        return out._replace(logits=out.logits[:, -1])

    def acts(self, rows: list[int], position: str) -> torch.Tensor:
        """Baseline activations ``(len(rows), L * F)`` on the last or the harm token."""
        out = []
        for g, (members, _) in enumerate(self.groups):
            acts = self.base[g].activations  # (B, L, n, F)
            for b, row in enumerate(members):
                if row in rows:
                    pos = -1 if position == "last" else self.harm_pos[row]
                    out.append(acts[b, :, pos].flatten())
        return torch.stack(out) if out else torch.zeros(0, self.clt.n_layers * self.clt.n_features)

    def contrast_supernodes(self) -> dict[str, list[tuple[int, int]]]:
        seen = self.items[~self.items["heldout"]]
        harmful = list(seen.index[seen["harmful"]])
        harmless = list(seen.index[~seen["harmful"]])
        last_h, last_n = self.acts(harmful, "last"), self.acts(harmless, "last")
        harm_h, harm_n = self.acts(harmful, "harm"), self.acts(harmless, "harm")
        f = self.clt.n_features
        return {
            "harmful_request": contrast_top(last_h, last_n, TOP_K, f),
            "harmless_request": contrast_top(last_n, last_h, TOP_K, f),
            "specific_harm": contrast_top(harm_h, harm_n, TOP_K, f),
        }

    def members_table(self, nodes: dict) -> pd.DataFrame:
        rows = [
            {"supernode": name, "layer": la, "feature": fe}
            for name, feats in nodes.items()
            for la, fe in feats
        ]
        return pd.DataFrame(rows, columns=["supernode", "layer", "feature"])

    def outcome(self, logits: torch.Tensor) -> pd.DataFrame:
        """First-token outcome of last-position logits ``(B, V)``."""
        top = logits.argmax(-1)
        probs = logits.softmax(-1)
        return pd.DataFrame({
            "top": self.tok.convert_ids_to_tokens(top.tolist()),
            "refused": (top == self.refusal).numpy(),
            "complied": (top == self.compliance).numpy(),
            "margin": (logits[:, self.refusal] - logits[:, self.compliance]).numpy(),
            "p_refusal": probs[:, self.refusal].numpy(),
            "p_compliance": probs[:, self.compliance].numpy(),
        })  # fmt: skip

    def activity(self, acts: torch.Tensor, feats: list, harm_pos: torch.Tensor) -> np.ndarray:
        """Summed members' activation ``(B,)``: request nodes on the last token, else harm token."""
        if not feats:
            return np.zeros(len(acts))
        la, fe = (torch.tensor(x) for x in zip(*feats, strict=True))
        if harm_pos is None:
            return acts[:, la, -1, fe].sum(-1).numpy()
        picked = acts[torch.arange(len(acts))[:, None], la[None], harm_pos[:, None], fe[None]]
        return picked.sum(-1).numpy()

    def activities(self, acts, rows, nodes) -> dict[str, np.ndarray]:
        harm_pos = torch.tensor([self.harm_pos[r] for r in rows])
        return {
            name: self.activity(acts, feats, harm_pos if name == "specific_harm" else None)
            for name, feats in nodes.items()
        }

    def prompts_table(self, nodes) -> pd.DataFrame:
        frames = []
        for g, (rows, _) in enumerate(self.groups):
            out = self.outcome(self.base[g].logits)
            act = self.activities(self.base[g].activations, rows, nodes)
            meta = self.items.loc[rows].drop(columns="ids").reset_index(drop=True)
            frames.append(pd.concat([meta, out, pd.DataFrame(act)], axis=1))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def study_prompts(self, prompts) -> pd.DataFrame:
        rows = []
        for p in prompts:
            try:
                ids = torch.tensor([encode(self.tok, p.text)])
            except UnknownTokenError as err:
                print(f"skip {p.id}: {err}")
                continue
            rows.append(
                {"prompt_id": p.id, "text": p.text, **self.outcome(self.pass_(ids).logits).iloc[0]}
            )
        return pd.DataFrame(rows)

    def experiments(self, nodes: dict, study_prompts) -> pd.DataFrame:
        donors = {p.id: p for p in study_prompts}
        hr, hl, sh = (nodes[n] for n in NODES)
        d_harm = self.donor(donors.get("donor_harmful"), hr)
        d_safe = self.donor(donors.get("donor_harmless"), hl)
        plans = [("ablate_harmful_request", s, True, scale_last(hr, s)) for s in ABLATE]
        plans.append(("ablate_specific_harm", SPECIFIC_SCALE, True, self.scale_from_harm(sh)))
        plans += [("inject_harmful_request", m, False, inject_last(hr, d_harm, m)) for m in INJECT]
        plans += [("inject_harmless_request", m, True, inject_last(hl, d_safe, m)) for m in INJECT]
        frames = [self.sweep(name, s, harmful, edit, nodes) for name, s, harmful, edit in plans]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def donor(self, prompt, feats) -> torch.Tensor | None:
        """The donor's activations of ``feats`` on its last token, ``(K,)``."""
        if prompt is None or not feats:
            return None
        try:
            ids = torch.tensor([encode(self.tok, prompt.text)])
        except UnknownTokenError as err:
            print(f"no donor {prompt.id}: {err}")
            return None
        la, fe = member_index(feats)
        return self.pass_(ids).activations[0, la, -1, fe]

    def scale_from_harm(self, feats):
        """Scale ``feats`` by SPECIFIC_SCALE from each dialogue's harm token to its end."""
        if not feats:
            return None
        la, fe = member_index(feats)

        def edit(scale, _offset, rows):
            for b, row in enumerate(rows):
                scale[b, la, self.harm_pos[row] :, fe] = SPECIFIC_SCALE

        return edit

    def sweep(self, name: str, strength: float, harmful: bool, edit, nodes) -> pd.DataFrame:
        """One edited pass per length group over the harmful (or harmless) dialogues."""
        frames = []
        for g, (rows, ids) in enumerate(self.groups):
            keep = [i for i, r in enumerate(rows) if self.harmful[r] == harmful]
            if edit is None or not keep:
                continue
            sub = [rows[i] for i in keep]
            edits = DenseEdits.identity(self.clt, len(keep), ids.shape[1])
            edit(*edits, sub)
            res, base = self.pass_(ids[keep], edits), self.base[g]
            before = self.outcome(base.logits[keep])
            after = self.activities(res.activations, sub, nodes)
            prior = self.activities(base.activations[keep], sub, nodes)
            meta = self.items.loc[sub, ["prompt", "split", "kind", "pair"]].reset_index(drop=True)
            df = pd.concat([meta, self.outcome(res.logits)], axis=1)
            df = df.assign(experiment=name, strength=strength, margin_before=before["margin"])
            for node in NODES:
                with np.errstate(divide="ignore", invalid="ignore"):
                    df[f"{node}_percent"] = np.where(
                        prior[node] > 0, 100 * after[node] / prior[node], np.nan
                    )
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def global_effects(self, nodes: dict) -> pd.DataFrame:
        """Every active feature's mean effect on the margin over harmful / harmless dialogues."""
        metric = logit_difference(self.refusal, self.compliance)
        effect, active = {}, {}
        for rows, ids in self.groups:
            eff, acts, _ = feature_effects(self.model, self.clt, ids, metric)
            for b, row in enumerate(rows):  # BOS excluded, as in the graphs
                effect[row] = eff[b, :, 1:].sum(1).flatten()  # (L * F,)
                active[row] = (acts[b, :, 1:] > 0).any(1).flatten()
        harmful = self.items["harmful"].to_numpy()
        order = list(self.items.index)
        e = torch.stack([effect[r] for r in order]).numpy()
        a = torch.stack([active[r] for r in order]).numpy()
        f = self.clt.n_features
        table = pd.DataFrame({
            "layer": np.arange(e.shape[1]) // f, "feature": np.arange(e.shape[1]) % f,
            "effect_harmful": e[harmful].mean(0), "effect_harmless": e[~harmful].mean(0),
            "active_harmful": a[harmful].mean(0), "active_harmless": a[~harmful].mean(0),
        })  # fmt: skip
        table = table[(table["active_harmful"] > 0) | (table["active_harmless"] > 0)]
        table = table.sort_values("effect_harmful", ascending=False, ignore_index=True)
        table["rank"] = np.arange(1, len(table) + 1)
        member = {k: n for n, feats in nodes.items() for k in feats}
        keys = zip(table["layer"], table["feature"], strict=True)
        table["supernode"] = [member.get((int(la), int(fe)), "") for la, fe in keys]
        table["harm_supernode"] = table["supernode"].isin(["harmful_request", "specific_harm"])
        return table

    def global_check(self, effects: pd.DataFrame) -> pd.DataFrame:
        """The top ``N_CHECK`` features zero-ablated (all positions) on every harmful dialogue."""
        rows = []
        for r in effects[effects["rank"] <= N_CHECK].itertuples():
            la, fe = int(r.layer), int(r.feature)

            def edit(scale, _offset, _rows, la=la, fe=fe):
                scale[:, la, 1:, fe] = 0.0

            res = self.sweep("zero", 0.0, True, edit, {n: [] for n in NODES})
            drop = float((res["margin_before"] - res["margin"]).mean())
            rows.append({"rank": r.rank, "layer": la, "feature": fe, "supernode": r.supernode,
                         "estimated_drop": r.effect_harmful, "measured_drop": drop,
                         "supports_refusal": drop > 0})  # fmt: skip
        columns = ["rank", "layer", "feature", "supernode", "estimated_drop", "measured_drop",
                   "supports_refusal"]  # fmt: skip
        return pd.DataFrame(rows, columns=columns)


def with_labels(effects: pd.DataFrame, run_dir) -> pd.DataFrame:
    """The atlas's ground-truth label of each feature, where the run has one."""
    path = run_dir / "features" / "labels.parquet"
    if not path.exists():
        return effects.assign(label="")
    labels = pd.read_parquet(path, columns=["layer", "feature", "label"])
    return effects.merge(labels, on=["layer", "feature"], how="left")


def member_index(feats: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    la, fe = zip(*feats, strict=True)
    return torch.tensor(la), torch.tensor(fe)


def scale_last(feats, factor: float):
    if not feats:
        return None
    la, fe = member_index(feats)

    def edit(scale, _offset, _rows):
        scale[:, la, -1, fe] = factor

    return edit


def inject_last(feats, donor: torch.Tensor | None, multiplier: float):
    """Set ``feats`` on the last token to ``multiplier`` x the donor's activations."""
    if not feats or donor is None:
        return None
    la, fe = member_index(feats)

    def edit(scale, offset, _rows):
        scale[:, la, -1, fe] = 0.0
        offset[:, la, -1, fe] = multiplier * donor

    return edit


def trace_tables(lab: Lab, prompt, folder) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace and prune the prompt; write its node / edge tables and the offline viewer."""
    graph = trace(lab.model, lab.clt, prompt.text, tokenizer=lab.tok, show_progress=False)
    nodes, edges = export_tables(graph, prune_graph(graph), tokenizer=lab.tok)
    save_tables(
        nodes, edges, folder / f"{prompt.id}.nodes.parquet", folder / f"{prompt.id}.edges.parquet"
    )
    write_graph_html(nodes, edges, folder / f"{prompt.id}.html", title=prompt.text)
    return nodes, edges


def graph_tables(context: StudyContext, lab: Lab, nodes: dict) -> None:
    """The bleach + ammonia graph collapsed into the contrast supernodes, and its summaries:
    ``graph_supernodes`` (members active in the graph and kept by pruning, per supernode) and
    ``graph_links`` (summed kept edge weight between supernodes and to the output, 0 if none)."""
    prompt = next((p for p in context.prompts("organism") if p.id == "bleach_ammonia"), None)
    try:
        ids = encode(lab.tok, prompt.text) if prompt else None
    except UnknownTokenError:
        ids = None
    groups = []
    if ids is not None:
        where = {"specific_harm": (harm_position(lab.tok.convert_ids_to_tokens(ids)),)}
        groups = [Supernode(n, tuple(nodes[n]), None, where.get(n, (len(ids) - 1,)))
                  for n in NODES if nodes[n]]  # fmt: skip
    g_nodes = g_edges = None
    if groups:
        folder = context.out_dir / "graphs"
        folder.mkdir(parents=True, exist_ok=True)
        g_nodes, g_edges = trace_tables(lab, prompt, folder)
        shown = groups + position_groups(g_nodes, groups, lab.tok.convert_ids_to_tokens(ids))
        sn_nodes, sn_edges = supernode_graph(g_nodes, g_edges, shown, keep_unassigned=False)
    else:
        sn_nodes = pd.DataFrame(columns=["name", "kind", "x", "y", "n_members"])
        sn_edges = pd.DataFrame(columns=["source", "target", "weight"])
    context.save_table(sn_nodes, "supernode_nodes")
    context.save_table(sn_edges, "supernode_edges")
    context.save_table(graph_supernodes(g_nodes, groups), "graph_supernodes")
    context.save_table(graph_links(sn_nodes, sn_edges), "graph_links")
