"""Claims on small hand-written tables: pass, fail, and the ways a claim cannot pass."""

import math

import pandas as pd
import pytest

from llmbio.studies import CLAIM_COLUMNS, Claim, Study, evaluate_claims, write_claims


def claim(**overrides) -> Claim:
    fields = {
        "id": "c",
        "kind": "behaviour",
        "statement": "Texas -2x lowers p(Austin).",
        "table": "tables/swap.parquet",
        "column": "p",
        "aggregate": "mean",
        "op": "<=",
        "threshold": 0.2,
        "paper_value": 0.06,
        "paper_ref": "Biology §4",
    }
    return Claim(**{**fields, **overrides})


@pytest.fixture
def results(tmp_path):
    (tmp_path / "tables").mkdir()
    pd.DataFrame(
        {
            "edit": ["texas_minus_2", "texas_minus_2", "none", "none"],
            "token": ["Austin", "Sacramento", "Austin", "Sacramento"],
            "p": [0.05, 0.10, 0.90, 0.01],
            "top1": [False, True, True, False],
            "label": ["a", "b", "c", "d"],
        }
    ).to_parquet(tmp_path / "tables" / "swap.parquet")
    (tmp_path / "tables" / "counts.csv").write_text("layer,iou\n0,0.1\n1,0.5\n2,0.2\n")
    return tmp_path


def evaluate(results, *claims) -> pd.DataFrame:
    study = Study(name="s", title="t", path=results, claims=claims)
    return evaluate_claims(study, results).set_index("claim_id")


def test_pass_and_fail_use_the_threshold_as_written(results):
    out = evaluate(
        results,
        claim(id="falls", where={"edit": "texas_minus_2", "token": "Austin"}),
        claim(id="too_strict", where={"edit": "texas_minus_2"}, threshold=0.05),
        claim(id="query", where="edit == 'none' and token == 'Austin'", op=">", threshold=0.5),
    )
    assert (
        out.index.name == "claim_id" and list(out.columns) == CLAIM_COLUMNS[:1] + CLAIM_COLUMNS[2:]
    )
    assert out.loc["falls", ["status", "passed", "measured"]].tolist() == ["pass", True, 0.05]
    assert out.loc["too_strict", "status"] == "fail"
    assert out.loc["too_strict", "measured"] == pytest.approx(0.075)
    assert out.loc["too_strict", "threshold"] == 0.05  # as in the study, never adjusted
    assert out.loc["too_strict", "paper_value"] == "0.06"
    assert out.loc["query", "status"] == "pass" and out.loc["query", "n_rows"] == 1


@pytest.mark.parametrize(
    "overrides, measured",
    [
        ({"aggregate": "max"}, 0.90),
        ({"aggregate": "min"}, 0.01),
        ({"aggregate": "median"}, 0.075),
        ({"aggregate": "sum"}, 1.06),
        ({"aggregate": "count", "where": {"edit": ["none", "texas_minus_2"]}}, 4),
        ({"aggregate": "first", "where": {"token": "Sacramento"}}, 0.10),
        ({"aggregate": "share_true", "column": "top1"}, 0.5),
        ({"aggregate": "max", "table": "tables/counts.csv", "column": "iou"}, 0.5),
    ],
)
def test_aggregates(results, overrides, measured):
    out = evaluate(results, claim(op=">=", threshold=-1, **overrides))
    assert out.loc["c", "measured"] == pytest.approx(measured)
    assert out.loc["c", "status"] == "pass"


def test_equality_tolerates_float_rounding(results):
    out = evaluate(results, claim(aggregate="sum", op="==", threshold=1.06))
    assert out.loc["c", "status"] == "pass"


@pytest.mark.parametrize(
    "overrides, status, detail",
    [
        ({"table": "tables/absent.parquet"}, "missing_table", "no table"),
        ({"where": {"edit": "california_plus_2"}}, "error", "matches no rows"),
        ({"where": "edit == 'nothing'"}, "error", "matches no rows"),
        ({"where": {"editt": "none"}}, "error", "no column 'editt'"),
        ({"column": "prob"}, "error", "no column 'prob'"),
        ({"where": "no_such_column > 1"}, "error", "no_such_column"),
        ({"column": "label"}, "error", "non-numeric"),
        ({"column": "p", "aggregate": "share_true"}, "error", "boolean"),
    ],
)
def test_what_cannot_be_measured_never_passes(results, overrides, status, detail):
    out = evaluate(results, claim(op=">=", threshold=-1, **overrides))
    row = out.loc["c"]
    assert (row["status"], row["passed"]) == (status, False)
    assert detail in row["detail"]
    assert math.isnan(row["measured"])


def test_a_study_without_claims_gives_an_empty_table(results):
    out = evaluate_claims(Study(name="s", title="t", path=results), results)
    assert out.empty and list(out.columns) == CLAIM_COLUMNS


def test_write_claims_reads_the_study_file(results, tmp_path_factory):
    folder = tmp_path_factory.mktemp("studies") / "swap"
    folder.mkdir()
    (folder / "study.yaml").write_text(
        "name: swap\ntitle: Swap\nclaims:\n"
        "  - {id: falls, kind: behaviour, statement: p falls, table: tables/swap.parquet,\n"
        "     where: {edit: texas_minus_2}, column: p, aggregate: max, op: '<=', threshold: 0.1}\n"
    )
    out = write_claims(folder / "study.yaml", results, results / "claims.parquet")
    assert pd.read_parquet(results / "claims.parquet").equals(out)
    assert out["status"].tolist() == ["pass"]
