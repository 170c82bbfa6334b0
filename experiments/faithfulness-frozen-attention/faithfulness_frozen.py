"""Does freezing attention make the graphs' predicted ablation effects more faithful?

The `faithfulness` rule compares each showcase graph's predicted effect of zeroing a feature on
the top logit (`predicted_total`, every path, features linear) with the real ablation on the
model with live attention. The graph itself is built with attention frozen, so one suspect for
a low Spearman correlation is attention moving under the ablation. This script repeats the
pruned-graph sample of the rule with attention live and frozen and prints both, per graph:

    python experiments/faithfulness-frozen-attention/faithfulness_frozen.py results/organism

It reads the graphs, model and transcoder of a finished run and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from llmbio.attribution.graph import Graph
from llmbio.features.faithfulness import faithfulness
from llmbio.run import Run
from llmbio.stages.attribution import kept_feature_nodes


def main(run: Path) -> None:
    graphs = run / "graphs" / "showcase"
    if not graphs.is_dir():
        sys.exit(f"{graphs} is missing: run `snakemake --cores all` for that run first")
    torch.set_num_threads(1)
    opened = Run(run)
    model, clt = opened.model, opened.clt
    rows = []
    for path in sorted(graphs.glob("*.graph.safetensors")):
        graph = Graph.load(path)
        name = path.name.removesuffix(".graph.safetensors")
        nodes = kept_feature_nodes(path.with_name(f"{name}.nodes.parquet"), 50)
        for frozen in (False, True):
            table, rho = faithfulness(
                model, clt, graph, nodes=nodes, freeze_attention=frozen, show_progress=False
            )
            rows.append({"graph": name[:40], "attention": "frozen" if frozen else "live",
                         "n": len(table), "spearman": round(rho, 3)})  # fmt: skip
    table = pd.DataFrame(rows).pivot(index="graph", columns="attention", values="spearman")
    print(table.to_string())
    print("median:", table.median().round(3).to_dict())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(
            "usage: python experiments/faithfulness-frozen-attention/faithfulness_frozen.py "
            "results/<run>"
        )
    main(Path(sys.argv[1]))
