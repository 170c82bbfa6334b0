"""Where is the couplet's plan at the newline, and does the transcoder capture it?

For every couplet prompt of the world (`Poetry.eval_items`) whose planned word has another
possible partner in its family, the organism's top token at the newline is a lead word of the
planned end word. This script splits the logit gap between that lead and the best lead of
another family member (the plan's direct effect on the next token) into the residual stream's
parts at the newline: embedding, each layer's attention output and MLP output, read through the
final norm with its scale frozen. Then it compares each MLP's share with the share of the
transcoder's reconstruction of that MLP (what features can carry; the rest is the error node,
which interventions hold fixed).

    python experiments/poems-plan-selection/plan_capture.py results/organism [transcoder dir]

Reads a finished run (model, world, transcoder/clt) and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from llmbio.lab import load_run, plan_capture_table, plan_share


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
        sys.exit(
            "usage: python experiments/poems-plan-selection/plan_capture.py results/<run> "
            "[transcoder dir]"
        )
    transcoder = Path(sys.argv[2]) if len(sys.argv) == 3 else None
    report(plan_capture_table(*load_run(Path(sys.argv[1]), transcoder)))
