"""Would ranking the poems study's plan features by their effect help its calibrated swap?

The poems study finds each planned word's plan by activation contrast on the discovery
couplets. The multilingual study also ranks features by *effect* (attribution patching: the
gradient of a logit difference times the donor's change, through the real model), which took
its operation swap from <= 8% to 83%. Here the same ranking for the couplets: at the newline
(the prompt's last token, where the plan is swapped), the metric is ``logit(donor's first word
of line 2) - logit(the couplet's own first word)``, since a swap succeeds when line 2 starts
with a lead word of the injected end word. Each planned word's node is the ``k`` features with
the largest mean effect over the discovery swaps that inject it. The study's calibration now
tries both (:mod:`llmbio.cases.poems.swaps`); it stops at the first size that reaches 90%.

DISCOVERY COUPLETS ONLY: this prints the whole calibration grid (success by size, selection
and form) on the couplets the study calibrates on; no held-out couplet is run.

    python experiments/poems-plan-selection/effect_selection.py results/organism
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from llmbio.cases.poems.experiment import PoemExperiment, Settings
from llmbio.cases.poems.planning import couplets, line_length
from llmbio.cases.poems.swaps import calibrate, discovery_effects
from llmbio.lab import load_run


def main(run: Path) -> None:
    model, tok, poetry, clt = load_run(run)
    start = time.perf_counter()
    settings = Settings(8, -2.0, 2.0, line_length(poetry))
    exp = PoemExperiment(model, clt, tok, poetry, couplets(poetry, tok), settings)
    scores = discovery_effects(exp)
    print(f"effect scores of {len(scores)} words in {time.perf_counter() - start:.1f} s")
    grid, chosen = calibrate(exp, scores, whole_grid=True)
    table = grid.pivot_table(index=["selection", "k"], columns="form", values="success_rate")
    print(table.round(3).to_string())
    print(f"the study's rule (stop at the first size reaching 90%) chooses {chosen}")
    print(f"total {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python experiments/poems-plan-selection/effect_selection.py results/<run>")
    main(Path(sys.argv[1]))
