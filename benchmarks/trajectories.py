"""One config, several training trajectories: what the organism learns and what its audit says.

The default organism's training ends near the point where it learns held-out addition and the
Chinese lexicon, so the float path (CPU kernels, seed) decides which side it lands on. This
prints, per run, the behaviours that move, the claims passed and the central claims
(`benchmarks/central_claims.py`), as one Markdown table. The configs of session 13's runs are in
`benchmarks/trajectories/` (their world, corpus and tokenizer are the default run's, byte for
byte; the model and everything after it are their own):

    for c in benchmarks/trajectories/*.yaml; do snakemake --cores 2 --configfile $c; done
    python benchmarks/trajectories.py results/organism results/organism-native ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from central_claims import CENTRAL, central, load_audit


def row(run: Path) -> dict:
    acc = pd.read_parquet(run / "behaviour.parquet").set_index(["task", "split"])["accuracy"]
    audit = load_audit(run)
    claims = audit[(audit["kind"] == "claim") & (audit["status"] != "not_applicable")]
    passed = central(run, audit)
    return {
        "run": run.name,
        "held-out addition": f"{acc['addition', 'heldout']:.1%}",
        "zh antonyms / synonyms": f"{acc['antonym_zh', 'seen']:.0%} / "
        f"{acc['synonym_zh', 'seen']:.0%}",
        "claims": f"{int(claims['passed'].sum())}/{len(claims)}",
        "central": f"{len(passed)} of {len(CENTRAL)} ({', '.join(passed) or 'none'})",
    }


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/trajectories.py results/<run> [results/<run> ...]")
    rows = [row(Path(a)) for a in sys.argv[1:]]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(r.values()) + " |")
