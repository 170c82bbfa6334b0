"""How much of the donor's newline state does the poems study's random-feature control move?

The calibrated plan swap (`llmbio.cases.poems.swaps`) has a control: the donor's plan replaced
by as many random features active at the donor's newline, outside both plans, edited the same
way. With large plans that sample is most of its pool. For the run's chosen supernode size and
feature selection (contrast or effect), per held-out couplet pair, this prints the plan's size,
the donor's active features, the control's pool and sample, and the share of the donor's
newline activation (sum of feature activations) in the plan and in the control sample.

    python experiments/poems-plan-selection/control_pool.py results/organism

Reads a finished run (model, world, transcoder/clt, the poems study's calibration table) and
writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from llmbio.cases.poems.experiment import PoemExperiment, Settings
from llmbio.cases.poems.planning import active_node, couplets, line_length
from llmbio.cases.poems.swaps import discovery_effects, plan_nodes
from llmbio.lab import load_run


def control_pool(run: Path) -> tuple[int, pd.DataFrame]:
    """The chosen ``k`` and one row per held-out (couplet, injected word) pair."""
    calibration = run / "studies" / "poems" / "tables" / "swap_calibration.parquet"
    if not calibration.exists():
        sys.exit(f"{calibration} is missing: run `snakemake --cores all` for that run first")
    model, tok, poetry, clt = load_run(run)
    settings = Settings(8, -2.0, 2.0, line_length(poetry))
    exp = PoemExperiment(model, clt, tok, poetry, couplets(poetry, tok), settings)
    grid = pd.read_parquet(calibration)
    chosen = grid[grid["chosen"]].iloc[0]
    k, selection = int(chosen["k"]), str(chosen.get("selection", "contrast"))
    scores = discovery_effects(exp) if selection == "effect" else None
    nodes, n_features = plan_nodes(exp, k, selection, scores), exp.F
    rows = []
    for i, q in exp.pairs(exp.evaluation, nodes):
        acts = exp.acts[exp.donor[q]]
        active = set(active_node("donor", acts, n_features).features)
        plan, own = set(nodes[q].features), set(nodes[exp.table["planned"][i]].features)
        pool = active - plan - own
        sample = min(len(plan), len(pool))
        total = float(sum(acts[layer * n_features + f] for layer, f in active))

        def share(features, acts=acts, total=total):
            return float(sum(acts[layer * n_features + f] for layer, f in features)) / total

        rows.append(
            dict(
                n_plan=len(plan),
                n_active=len(active),
                n_pool=len(pool),
                n_sample=sample,
                sampled_share_of_pool=sample / max(len(pool), 1),
                plan_activation_share=share(plan & active),
                control_activation_share=sample / max(len(pool), 1) * share(pool),
            )
        )
    return k, pd.DataFrame(rows)


if __name__ == "__main__":
    run = Path(sys.argv[1] if len(sys.argv) > 1 else "results/organism")
    k, table = control_pool(run)
    print(f"{run}: chosen k = {k}, {len(table)} held-out pairs")
    print(table.describe().loc[["mean", "50%", "min", "max"]].round(3).T.to_string())
