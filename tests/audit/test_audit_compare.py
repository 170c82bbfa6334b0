"""compare_audits over hand-made audit tables, and its command line."""

import pandas as pd
import pytest

from llmbio.audit import AUDIT_COLUMNS
from llmbio.audit_compare import compare_audits
from llmbio.cli import main


def _audit(folder, rows):
    folder.mkdir(parents=True)
    table = pd.DataFrame(
        [
            dict.fromkeys(AUDIT_COLUMNS)
            | {
                "kind": kind,
                "study": study,
                "item": item,
                "measured": value,
                "status": status,
                "passed": status in ("pass", "ok"),
            }  # fmt: skip
            for kind, study, item, value, status in rows
        ],
        columns=AUDIT_COLUMNS,
    )
    table.to_parquet(folder / "audit.parquet", index=False)
    return folder


@pytest.fixture
def runs(tmp_path):
    a = _audit(tmp_path / "a" / "organism", [
        ("claim", "s1", "x", 0.9, "pass"), ("claim", "s1", "y", 0.1, "fail"),
        ("claim", "s2", "z", 1.0, "pass"), ("claim", "s2", "n", None, "not_applicable"),
        ("figure", "s1", "f.png", None, "ok"),
    ])  # fmt: skip
    b = _audit(tmp_path / "b" / "organism", [
        ("claim", "s1", "x", 0.2, "fail"), ("claim", "s1", "y", 0.15, "fail"),
        ("claim", "s2", "z", 1.0, "pass"), ("claim", "s2", "only_b", 1.0, "pass"),
    ])  # fmt: skip
    return a, b


def test_summary_counts_applicable_claims_and_changed_lists_moved_ones(runs):
    summary, changed = compare_audits(runs)
    labels = [str(r) for r in runs]  # both folders are named "organism"
    assert summary.loc["s1", labels].tolist() == ["1/2", "0/2"]
    assert summary.loc["s2", labels].tolist() == ["1/1", "2/2"]
    assert summary.loc["all", labels].tolist() == ["2/3", "2/4"]
    assert changed[["study", "item"]].values.tolist() == [["s1", "x"]]
    assert changed[f"{labels[0]}: measured"].tolist() == [0.9]
    assert changed[f"{labels[1]}: status"].tolist() == ["fail"]


def test_a_claim_becoming_not_applicable_counts_as_moved(tmp_path):
    a = _audit(tmp_path / "a", [("claim", "s", "x", 1.0, "pass"), ("claim", "s", "y", 1.0, "pass")])
    b = _audit(tmp_path / "b", [("claim", "s", "x", None, "not_applicable"),
                                ("claim", "s", "y", 1.0, "pass")])  # fmt: skip
    summary, changed = compare_audits([a, b])
    assert summary.loc["s"].tolist() == ["2/2", "1/1"]
    assert changed["item"].tolist() == ["x"] and changed["b: status"].tolist() == ["not_applicable"]


def test_missing_audit_and_single_run_fail_clearly(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"audit.parquet is missing.*audit"):
        compare_audits([runs[0], tmp_path / "nowhere"])
    with pytest.raises(ValueError, match="at least two runs"):
        compare_audits([runs[0]])
    with pytest.raises(ValueError, match="listed twice"):
        compare_audits([runs[0], runs[0]])


def test_command_line_prints_both_tables(runs, capsys):
    main(["compare-audits", *map(str, runs)])
    out = capsys.readouterr().out
    assert "claims passed / applicable" in out and "1 claims whose status differs" in out
    with pytest.raises(SystemExit, match="audit.parquet is missing"):
        main(["compare-audits", str(runs[0]), "missing-run"])
