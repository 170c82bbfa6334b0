"""Check a study's claims against its measured tables.

A claim selects rows of a results table (``where``), aggregates one column and compares the
result with the threshold written in study.yaml; the threshold is never touched here. Only a
measured number can pass: a missing table is ``missing_table``, an empty selection, a missing
column or a non-numeric aggregate is ``error``, and both count as not passed.

A claim names the prompt families whose runs can test it (``families``, default: the organism,
whose ground truth most tables need). On a run of another family (a released model) it is
``not_applicable``: not measured, so neither passed nor failed, and listed as such in the audit.

The claims marked ``central`` make up the study's central claim (the paper's finding it
reproduces); the audit counts a study's central claim as holding when all of them pass.
"""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path

import pandas as pd
from pandas.api.types import is_bool_dtype

from llmbio.figures import read_table
from llmbio.studies.spec import ORGANISM, Claim, Study, load_study

NOT_APPLICABLE = "not_applicable"

CLAIM_COLUMNS = [
    "study", "claim_id", "central", "statement", "table", "measured", "op", "threshold",
    "paper_value", "paper_ref", "n_rows", "passed", "status", "detail",
]  # fmt: skip

_OPS = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}


class ClaimError(ValueError):
    """The claim cannot be measured (no rows, no column, non-numeric values)."""


def run_family(results_dir: str | Path) -> str:
    """The prompt family the study's analysis ran for (its ``tables.done``; organism if none)."""
    marker = Path(results_dir) / "tables.done"
    if not marker.is_file():
        return ORGANISM
    return json.loads(marker.read_text()).get("family", ORGANISM)


def evaluate_claims(
    study: Study, results_dir: str | Path, family: str | None = None
) -> pd.DataFrame:
    """One row per claim of ``study`` (columns :data:`CLAIM_COLUMNS`).

    ``results_dir`` is the study's results folder (``results/<run>/studies/<name>``); each
    claim's ``table`` is relative to it. ``family`` defaults to :func:`run_family`.
    """
    family = family or run_family(results_dir)
    rows = [_evaluate(study.name, c, Path(results_dir), family) for c in study.claims]
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    types = {"central": bool, "measured": float, "threshold": float, "n_rows": "Int64"}
    return table.astype({**types, "passed": bool})


def _evaluate(study: str, claim: Claim, results_dir: Path, family: str = ORGANISM) -> dict:
    row = {
        "study": study,
        "claim_id": claim.id,
        "central": claim.central,
        "statement": claim.statement,
        "table": claim.table,
        "measured": math.nan,
        "op": claim.op,
        "threshold": claim.threshold,
        "paper_value": "" if claim.paper_value is None else str(claim.paper_value),
        "paper_ref": claim.paper_ref,
        "n_rows": None,
        "passed": False,
    }
    if family not in claim.families:
        runs = ", ".join(claim.families)
        detail = f"tested on {runs} runs only; this run's prompt family is {family}"
        return {**row, "status": NOT_APPLICABLE, "detail": detail}
    path = results_dir / claim.table
    if not path.is_file():
        return {**row, "status": "missing_table", "detail": f"no table {path}"}
    try:
        values = select(read_table(path), claim)
        measured = aggregate(values, claim.aggregate)
    except Exception as err:  # a bad query or table is the claim's error, not the audit's
        return {**row, "status": "error", "detail": f"{type(err).__name__}: {err}"}
    passed = bool(_OPS[claim.op](measured, claim.threshold))
    detail = f"{claim.aggregate}({claim.column}) over {len(values)} rows"
    return {
        **row,
        "measured": measured,
        "n_rows": len(values),
        "passed": passed,
        "status": "pass" if passed else "fail",
        "detail": detail,
    }


def select(table: pd.DataFrame, claim: Claim) -> pd.Series:
    """The claim's column on the rows its ``where`` selects (a query string or a mapping)."""
    rows = table
    if isinstance(claim.where, str):
        rows = table.query(claim.where)
    elif claim.where:
        for column, value in claim.where.items():
            if column not in table.columns:
                raise ClaimError(f"where: no column {column!r} in {claim.table}")
            wanted = value if isinstance(value, list) else [value]
            rows = rows[rows[column].isin(wanted)]
    if claim.column not in table.columns:
        raise ClaimError(f"no column {claim.column!r} in {claim.table}; has {list(table.columns)}")
    if rows.empty:
        raise ClaimError(f"where {claim.where!r} matches no rows of {claim.table}")
    return rows[claim.column]


def aggregate(values: pd.Series, how: str) -> float:
    """Reduce ``values`` to one number; ``share_true`` is the fraction of true booleans."""
    if how == "count":
        return float(values.notna().sum())
    if how == "share_true":
        if not is_bool_dtype(values) and not set(values.dropna().unique()) <= {0, 1}:
            raise ClaimError("share_true needs a boolean (or 0/1) column")
        return float(values.astype(float).mean())
    if how == "first":
        values = values.iloc[:1]
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().any():
        raise ClaimError(f"non-numeric or missing values in column {values.name!r}")
    result = float(numeric.agg("mean" if how == "first" else how))
    if math.isnan(result):
        raise ClaimError(f"{how} of column {values.name!r} is NaN")
    return result


def write_claims(study_path: str | Path, results_dir: str | Path, out: str | Path) -> pd.DataFrame:
    """Evaluate a study's claims and write them to ``out`` (Parquet); log one line per claim."""
    study = load_study(study_path)
    table = evaluate_claims(study, results_dir)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(out, index=False)
    for r in table.itertuples():
        print(f"{r.status:>13}  {r.claim_id}: {r.measured:.4g} {r.op} {r.threshold:g}  {r.detail}")
    return table
