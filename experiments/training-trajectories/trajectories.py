"""One config, several training trajectories: what the organism learns and what its audit says.

The default organism's training ends near the point where it learns held-out addition and the
Chinese lexicon, so the float path (CPU kernels, seed) decides which side it lands on. This
prints, per run, the behaviours that move, the claims passed and the central claims, as one
Markdown table. The runs' configs are in `configs/` beside this script (their world, corpus and
tokenizer are the default run's, byte for byte; the model and everything after it are their
own):

    for c in experiments/training-trajectories/configs/*.yaml; do
        snakemake --cores 2 --configfile $c
    done
    python experiments/training-trajectories/trajectories.py results/organism \
        results/organism-native ...

Central claims are those marked central in their study.yaml; the audit records the mark in its
``central`` column. An audit written before that column existed gets "n/a" there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def load_audit(run: Path) -> pd.DataFrame:
    path = run / "audit.parquet"
    if not path.exists():
        sys.exit(f"error: {path} is missing; run `snakemake --cores all` for that run first")
    return pd.read_parquet(path)


def central(audit: pd.DataFrame) -> str:
    """``"k of n (studies)"``: of the n studies with central claims, the k whose central claims
    all pass."""
    if "central" not in audit.columns:
        return "n/a"
    rows = audit[audit["central"].fillna(False).astype(bool)]
    passed = [s for s, group in rows.groupby("study") if group["passed"].astype(bool).all()]
    return f"{len(passed)} of {rows['study'].nunique()} ({', '.join(passed) or 'none'})"


def row(run: Path) -> dict:
    acc = pd.read_parquet(run / "behaviour.parquet").set_index(["task", "split"])["accuracy"]
    audit = load_audit(run)
    claims = audit[(audit["kind"] == "claim") & (audit["status"] != "not_applicable")]
    return {
        "run": run.name,
        "held-out addition": f"{acc['addition', 'heldout']:.1%}",
        "zh antonyms / synonyms": f"{acc['antonym_zh', 'seen']:.0%} / "
        f"{acc['synonym_zh', 'seen']:.0%}",
        "claims": f"{int(claims['passed'].sum())}/{len(claims)}",
        "central": central(audit),
    }


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(
            "usage: python experiments/training-trajectories/trajectories.py results/<run> ..."
        )
    rows = [row(Path(a)) for a in sys.argv[1:]]
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + " --- |" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(r.values()) + " |")
