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

Every measured claim carries ``n`` (the values its aggregate reads) and, for a rate or an
average, a 95% interval (:mod:`llmbio.studies.intervals`: Wilson for ``share_true``, a seeded
percentile bootstrap for ``mean`` and ``median``). How it passes depends on its ``kind``
(:func:`judge`): a ``mechanism`` or ``control`` claim passes only when its whole interval lies
on the passing side of the threshold (for ``>=``: the lower bound clears it; for ``<=``: the
upper bound stays under it), so an effect cannot pass on the luck of a small cell; a
``behaviour`` or ``existence`` claim, and any claim without an interval, passes on its
measured value.
"""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path

import pandas as pd
from pandas.api.types import is_bool_dtype

from llmbio.figures import read_table
from llmbio.studies.intervals import NONE, Interval, interval, method_of
from llmbio.studies.spec import ORGANISM, Claim, Study, load_study

NOT_APPLICABLE = "not_applicable"
# the kinds judged on their interval; the others on the measured value
INTERVAL_KINDS = ("mechanism", "control")
POINT, INTERVAL = "point", "interval"

CLAIM_COLUMNS = [
    "study", "claim_id", "claim_kind", "central", "statement", "table", "measured", "n",
    "ci_low", "ci_high", "interval", "op", "threshold", "rule", "paper_value", "paper_ref",
    "n_rows", "passed", "status", "detail",
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
    intervals = {"n": "Int64", "ci_low": float, "ci_high": float}
    return table.astype({**types, **intervals, "passed": bool})


def _evaluate(study: str, claim: Claim, results_dir: Path, family: str = ORGANISM) -> dict:
    row = {
        "study": study,
        "claim_id": claim.id,
        "claim_kind": claim.kind,
        "central": claim.central,
        "statement": claim.statement,
        "table": claim.table,
        "measured": math.nan,
        "n": None,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "interval": NONE,
        "op": claim.op,
        "threshold": claim.threshold,
        "rule": judged_on(claim, Interval(method_of(claim.aggregate), 0)),
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
    ci = interval(values, claim.aggregate)
    passed, rule = judge(claim, measured, ci)
    detail = f"{claim.aggregate}({claim.column}) over {len(values)} rows"
    if rule == INTERVAL and not passed and _OPS[claim.op](measured, claim.threshold):
        bound = "lower" if claim.op in (">=", ">") else "upper"
        detail += f"; the measured value meets the threshold, the interval's {bound} bound not"
    return {
        **row,
        "measured": measured,
        "n": ci.n,
        "ci_low": ci.low,
        "ci_high": ci.high,
        "interval": ci.method,
        "rule": rule,
        "n_rows": len(values),
        "passed": passed,
        "status": "pass" if passed else "fail",
        "detail": detail,
    }


def judged_on(claim: Claim, ci: Interval) -> str:
    """``interval`` for a mechanism or control claim with an interval and a one-sided test."""
    one_sided = claim.op != "=="
    return INTERVAL if claim.kind in INTERVAL_KINDS and ci.method != NONE and one_sided else POINT


def judge(claim: Claim, measured: float, ci: Interval) -> tuple[bool, str]:
    """Whether the claim passes, and on what (``point`` or ``interval``, :func:`judged_on`).

    On its interval, the measured value and the bound on the far side of the threshold must
    both pass the claim's comparison: the lower bound for ``>=`` and ``>``, the upper bound for
    ``<=`` and ``<``. The threshold is the study's, unchanged.
    """
    compare = _OPS[claim.op]
    point = bool(compare(measured, claim.threshold))
    rule = judged_on(claim, ci)
    if rule == POINT:
        return point, rule
    bound = ci.low if claim.op in (">=", ">") else ci.high
    return point and bool(compare(bound, claim.threshold)), rule


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
        ci = "" if r.interval == NONE else f" [{r.ci_low:.3g}, {r.ci_high:.3g}] n={r.n}"
        test = f"{r.op} {r.threshold:g} ({r.claim_kind}, {r.rule})"
        print(f"{r.status:>13}  {r.claim_id}: {r.measured:.4g}{ci} {test}  {r.detail}")
    return table
