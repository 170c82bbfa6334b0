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


@pytest.fixture
def cells(tmp_path):
    """Swap cells: 11 of 12 successes, 0 of 12 and 0 of 40 control flips, 40 drops."""
    (tmp_path / "tables").mkdir()
    pd.DataFrame(
        {
            "cell": ["small"] * 12 + ["large"] * 40,
            "success": [True] * 11 + [False] + [True] * 40,
            "flipped": [False] * 52,
            "drop": [0.55, 0.45] * 6 + [0.9] * 40,
        }
    ).to_parquet(tmp_path / "tables" / "swap.parquet")
    return tmp_path


def rate(kind: str, column: str = "success", cell: str = "small", **overrides) -> Claim:
    fields = {"kind": kind, "column": column, "where": {"cell": cell}, "aggregate": "share_true"}
    return claim(**{**fields, "op": ">=", "threshold": 0.9, **overrides})


def test_a_mechanism_passes_only_when_its_lower_bound_clears_the_bar(cells):
    out = evaluate(
        cells,
        rate("mechanism", id="small_cell"),
        rate("mechanism", id="large_cell", cell="large"),
        rate("behaviour", id="as_behaviour"),
        rate("existence", id="as_existence"),
    )
    small = out.loc["small_cell"]
    assert small["measured"] == pytest.approx(11 / 12) and small["n"] == 12
    assert (small["ci_low"], small["ci_high"]) == pytest.approx((0.6461, 0.9851), abs=5e-5)
    assert (small["interval"], small["rule"], small["status"]) == ("wilson", "interval", "fail")
    assert "the interval's lower bound not" in small["detail"]
    assert out.loc["large_cell", ["status", "rule"]].tolist() == ["pass", "interval"]
    for point_rule in ("as_behaviour", "as_existence"):  # same numbers, judged on the point
        assert out.loc[point_rule, ["status", "rule"]].tolist() == ["pass", "point"]
        assert out.loc[point_rule, "ci_low"] == small["ci_low"]  # reported all the same


def test_a_control_passes_only_when_its_upper_bound_stays_under_the_bar(cells):
    control = {"column": "flipped", "op": "<=", "threshold": 0.1}
    out = evaluate(
        cells,
        rate("control", id="small_cell", **control),
        rate("control", id="large_cell", cell="large", **control),
    )
    assert out.loc["small_cell", "measured"] == 0 and out.loc["small_cell", "status"] == "fail"
    assert out.loc["small_cell", "ci_high"] == pytest.approx(0.2425, abs=5e-5)
    assert "upper bound not" in out.loc["small_cell", "detail"]
    assert out.loc["large_cell", "ci_high"] == pytest.approx(0.0876, abs=5e-5)
    assert out.loc["large_cell", "status"] == "pass"


def test_the_interval_rule_applies_to_averages_and_mirrors_for_upper_bars(cells):
    median = {"column": "drop", "aggregate": "median", "threshold": 0.5}
    out = evaluate(
        cells,
        rate("mechanism", id="noisy_median", **median),  # 0.5, between 0.45 and 0.55
        rate("mechanism", id="steady_median", cell="large", **median),
        rate("mechanism", id="below", cell="large", column="drop", aggregate="mean", op="<",
             threshold=0.95),
        rate("mechanism", id="failing_point", op="<=", threshold=0.5),
    )  # fmt: skip
    assert out.loc["noisy_median", "interval"] == "bootstrap"
    assert out.loc["noisy_median", "ci_low"] < 0.5 and out.loc["noisy_median", "status"] == "fail"
    steady = out.loc["steady_median"]
    assert (steady["ci_low"], steady["ci_high"], steady["status"]) == (0.9, 0.9, "pass")
    assert out.loc["below", "status"] == "pass" and out.loc["below", "rule"] == "interval"
    assert out.loc["failing_point", "status"] == "fail"  # the point itself misses the bar
    assert "interval's" not in out.loc["failing_point", "detail"]


def test_claims_without_an_interval_keep_the_point_rule(cells):
    out = evaluate(
        cells,
        rate("mechanism", id="max", column="drop", aggregate="max", threshold=0.5),
        rate("control", id="first", column="drop", aggregate="first", op="<=", threshold=0.6),
        rate("mechanism", id="equal", op="==", threshold=11 / 12),
    )
    assert out["rule"].tolist() == ["point"] * 3 and out["status"].tolist() == ["pass"] * 3
    assert out.loc["max", "interval"] == "none" and math.isnan(out.loc["max", "ci_low"])
    assert out.loc["max", "n"] == 12 and out.loc["first", "n"] == 1
    assert out.loc["equal", "interval"] == "wilson"  # reported, but == has no side to judge


def test_an_unmeasured_claim_names_the_rule_it_would_be_judged_on(cells):
    out = evaluate(cells, rate("control", id="absent", table="tables/absent.parquet"))
    row = out.loc["absent"]
    assert (row["status"], row["rule"], row["interval"]) == ("missing_table", "interval", "none")
    assert pd.isna(row["n"])
