"""How many of the four case studies reproduce their central claim, per run.

Which claim is central is the README's reading of the paper (Status): refusals, the calibrated
ablation and injection of harmful-request features; arithmetic, the two single-path
transplants in the organism's base (block and residue); multilingual, the three swaps on
held-out concepts in every language; poems, the calibrated injection. A study counts when all
of its central claims pass in the run's audit.

    python benchmarks/central_claims.py results/organism [results/other-run ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

SWAPS = ("operation", "operand", "language")
CENTRAL = {
    "refusals": ["ablate_harmful_request_complies", "inject_harmful_request_refuses"],
    "arithmetic": ["block_swap_changes_magnitude", "residue_swap_changes_residue"],
    "multilingual": [f"{s}_swap_heldout_{lang}" for s in SWAPS for lang in ("en", "fr", "zh")],
    "poems": ["injection_calibrated_success"],
}


def load_audit(run: Path) -> pd.DataFrame:
    path = run / "audit.parquet"
    if not path.exists():
        sys.exit(f"{path} is missing: run `snakemake --cores all` for that run first")
    return pd.read_parquet(path)


def central(run: Path, audit: pd.DataFrame | None = None) -> list[str]:
    """The studies whose central claims all pass in ``run``'s audit (read unless given)."""
    audit = load_audit(run) if audit is None else audit
    passed = []
    for study, ids in CENTRAL.items():
        rows = audit[(audit["study"] == study) & audit["item"].isin(ids)]
        if len(rows) != len(ids):
            sys.exit(f"{run}: the audit has {len(rows)} of {study}'s {len(ids)} central claims")
        if rows["passed"].astype(bool).all():
            passed.append(study)
    return passed


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python benchmarks/central_claims.py results/<run> [results/<run> ...]")
    for arg in sys.argv[1:]:
        studies = central(Path(arg))
        print(f"{arg}: {len(studies)} of {len(CENTRAL)} ({', '.join(studies) or 'none'})")
