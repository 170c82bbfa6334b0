"""Two or more audits side by side: which claims a change of config, transcoder or seed moved.

The same study can pass with one transcoder and fail with another comparably good one; a
reader should see that rather than one run's verdict. :func:`compare_audits` reads each run's
``audit.parquet`` (written by :func:`llmbio.audit.run_audit`) and returns the pass counts per
study and run, and every claim whose status differs between the runs, with the measured values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from llmbio.studies.claims import NOT_APPLICABLE

AUDIT_COLUMNS = ("kind", "study", "item", "measured", "status", "passed")
"""The columns of ``audit.parquet`` a comparison reads."""


def load_audit(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / "audit.parquet"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: run the pipeline (its `audit` rule) for {run_dir} first"
        )
    try:
        audit = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a file that is not Parquet
        raise ValueError(
            f"{path} is not a readable Parquet table ({type(err).__name__}); rerun the `audit` "
            "rule for that run"
        ) from None
    missing = [c for c in AUDIT_COLUMNS if c not in audit.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the audit columns {missing}: it is not an audit table of this version "
            "of llmbio; rerun the `audit` rule for that run"
        )
    return audit


def run_labels(runs: Sequence[str | Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [Path(r).name for r in runs]
    return names if len(set(names)) == len(names) else [str(r) for r in runs]


def compare_audits(runs: Sequence[str | Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary, changed)`` for two or more run folders.

    ``summary``: one row per study, one column per run, ``"passed/applicable"`` claims (the
    ``all`` row sums them). ``changed``: one row per claim measured in every run whose status
    is not the same in all of them, with ``<run>: measured`` and ``<run>: status`` columns.
    """
    if len(runs) < 2:
        raise ValueError(f"compare at least two runs, got {len(runs)}")
    if len({Path(r).resolve() for r in runs}) < len(runs):
        raise ValueError(f"a run is listed twice: {[str(r) for r in runs]}")
    labels = run_labels(runs)
    claims = {}
    for label, run in zip(labels, runs, strict=True):
        audit = load_audit(run)
        claims[label] = audit[audit["kind"] == "claim"].set_index(["study", "item"])
    summary = pd.DataFrame({name: _passed(c.groupby(level="study")) for name, c in claims.items()})
    summary.loc["all"] = [_passed(c.groupby(lambda _: "all")).iloc[0] for c in claims.values()]
    # a claim that became not_applicable (another prompt family) also counts as moved
    joined = pd.concat(
        {label: c[["measured", "status"]] for label, c in claims.items()}, axis=1, join="inner"
    )
    statuses = joined.xs("status", axis=1, level=1)
    changed = joined[statuses.nunique(axis=1) > 1]
    changed.columns = [f"{label}: {col}" for label, col in changed.columns]
    return summary.rename_axis("study").fillna("-"), changed.reset_index()


def _passed(groups) -> pd.Series:
    """``"passed/applicable"`` per group of claims (not_applicable claims are neither)."""
    return groups.apply(lambda c: f"{c['passed'][c['status'] != NOT_APPLICABLE].sum()}/"
                                  f"{(c['status'] != NOT_APPLICABLE).sum()}")  # fmt: skip
