"""Would ranking the poems study's plan features by their effect help its calibrated swap?

The poems study finds each planned word's plan by activation contrast on the discovery
couplets. The multilingual study also ranks features by *effect* (attribution patching: the
gradient of a logit difference times the donor's change, through the real model), which took
its operation swap from <= 8% to 83%. Here the same ranking for the couplets: at the newline
(the prompt's last token, where the plan is swapped), the metric is ``logit(donor's first word
of line 2) - logit(the couplet's own first word)``, since a swap succeeds when line 2 starts
with a lead word of the injected end word. Each planned word's node is the ``k`` features with
the largest mean effect over the discovery swaps that inject it. The study's calibration now
tries both (:mod:`llmbio.studies.poem_swaps`); it stops at the first size that reaches 90%.

DISCOVERY COUPLETS ONLY: this prints the whole calibration grid (success by size, selection
and form) on the couplets the study calibrates on; no held-out couplet is run.

    python benchmarks/poems_effect_selection.py results/organism
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from poems_plan_capture import load_run  # noqa: E402

from llmbio.studies.planning import couplets, line_length  # noqa: E402
from llmbio.studies.poem_swaps import (  # noqa: E402
    CAL_FORMS,
    CAL_SIZES,
    SELECTIONS,
    discovery_effects,
    form_edits,
    plan_nodes,
)
from llmbio.studies.poems import PoemExperiment, Settings  # noqa: E402


def main(run: Path) -> None:
    model, tok, poetry, clt = load_run(run)
    start = time.perf_counter()
    settings = Settings(8, -2.0, 2.0, line_length(poetry))
    exp = PoemExperiment(model, clt, tok, poetry, couplets(poetry, tok), settings)
    scores = discovery_effects(exp)
    print(f"effect scores of {len(scores)} words in {time.perf_counter() - start:.1f} s")
    rows = []
    for k in CAL_SIZES:
        for selection in SELECTIONS:
            nodes = plan_nodes(exp, k, selection, scores)
            cases = exp.pairs(exp.discovery, nodes)
            for form in CAL_FORMS:
                edits = [form_edits(exp, i, q, nodes, form) for i, q in cases]
                after = exp.lines([i for i, _ in cases], edits)
                hits = [e == q for e, (_, q) in zip(after.end, cases, strict=True)]
                rows.append(dict(selection=selection, k=k, form=form, n_cases=len(cases),
                                 success=round(sum(hits) / max(len(hits), 1), 3)))  # fmt: skip
    grid = pd.DataFrame(rows)
    print(grid.pivot_table(index=["selection", "k"], columns="form", values="success").to_string())
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python benchmarks/poems_effect_selection.py results/<run>")
    main(Path(sys.argv[1]))
