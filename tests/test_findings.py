"""llmbio findings: the findings page made from a run's audit, behaviour table and machine.

The whole tiny DAG's findings are checked in tests/workflow/test_pipeline.py; here the audit is
``run_audit`` over a small results folder, so that each part of the page can be checked.
"""

import json

import pandas as pd
import pytest

from llmbio.audit import run_audit
from llmbio.cli import main
from llmbio.environment import describe_environment, read_environment, write_environment
from llmbio.findings import render_findings

STUDY = """\
name: demo
title: Demo study
paper_section: Biology §4
claims:
  - {id: holds, statement: v reaches 2, table: tables/t.parquet, column: v, aggregate: max,
     kind: behaviour, op: ">=", threshold: 2, paper_value: "2.5", paper_ref: Fig. 1}
  - {id: fails, kind: behaviour, statement: "v | mean above 5", table: tables/t.parquet, column: v,
     aggregate: mean, op: ">", threshold: 5}
  - {id: absent, kind: behaviour, statement: no table, table: tables/absent.parquet, column: v,
     aggregate: mean, op: ">", threshold: 0}
  - {id: released_only, statement: on released models, table: tables/t.parquet, column: v,
     kind: behaviour, aggregate: max, op: ">=", threshold: 0, families: [gemma-2-2b]}
"""


@pytest.fixture
def run(tmp_path):
    (tmp_path / "studies" / "demo").mkdir(parents=True)
    (tmp_path / "studies" / "demo" / "study.yaml").write_text(STUDY)
    out = tmp_path / "results" / "demo-run"
    (out / "studies" / "demo" / "tables").mkdir(parents=True)
    pd.DataFrame({"v": [1.0, 2.0]}).to_parquet(out / "studies/demo/tables/t.parquet")
    pd.DataFrame(
        {
            "task": ["addition", "refusal"],
            "split": ["heldout", "seen"],
            "n": [40, 10],
            "accuracy": [0.975, 1.0],
        }
    ).to_parquet(out / "behaviour.parquet")
    run_audit(out, tmp_path / "studies")
    return tmp_path, out


def _findings(tmp_path, out) -> str:
    return render_findings(out, tmp_path / "studies")


def test_headline_and_claims_come_from_the_audit(run):
    tmp_path, out = run
    page = _findings(tmp_path, out)
    assert page.startswith("# Findings of `results/demo-run`")
    assert "**claims: 1 of 3 pass** (1 not applicable to this model)" in page
    assert "Claims: 1 of 3 pass (1 written for other models, not applicable here)" in page
    assert "released_only" not in page
    assert "central claims: not marked in this audit" in page
    assert "## `demo`: Demo study" in page and "Paper: Biology §4." in page
    lines = {line.split(" | ")[0]: line for line in page.splitlines() if line.startswith("| ")}
    assert "- claims by kind: behaviour 1 of 3 pass" in page
    assert lines["| holds"].endswith("| 2 (n = 2) | >= 2 | 2.5 (Fig. 1) | pass |")
    assert lines["| holds"].startswith("| holds | behaviour |")
    assert lines["| fails"].endswith("| 1.5 [1, 2] (n = 2) | > 5 |  | **fail** |")
    assert "v \\| mean above 5" in lines["| fails"]  # a table cell cannot break the row
    assert lines["| absent"].endswith("| — | > 0 |  | **fail** (missing_table) |")
    assert "| addition | heldout | 40 | 97.5% |" in page


def test_central_claims_are_counted_per_study_when_the_audit_marks_them(run):
    tmp_path, out = run
    audit = pd.read_parquet(out / "audit.parquet")
    audit["central"] = audit["item"].isin(["holds"])
    audit.to_parquet(out / "audit.parquet")
    page = _findings(tmp_path, out)
    assert "**central claims: 1 of 1 studies (demo)**" in page
    assert "| demo | 1 of 1 | yes |" in page
    assert "| holds | behaviour | yes | v reaches 2 |" in page

    audit["central"] = audit["item"].isin(["holds", "fails"])
    audit.to_parquet(out / "audit.parquet")
    page = _findings(tmp_path, out)
    assert "**central claims: 0 of 1 studies (none)**" in page
    assert "| demo | 1 of 2 | no |" in page


def test_an_audit_made_before_claims_had_kinds_still_reads(run):
    tmp_path, out = run
    audit = pd.read_parquet(out / "audit.parquet")
    old = ["claim_kind", "n", "ci_low", "ci_high", "interval", "rule"]
    audit.drop(columns=old).to_parquet(out / "audit.parquet")
    page = _findings(tmp_path, out)
    assert "claims by kind" not in page
    assert "| holds |  | v reaches 2 | 2 | >= 2 | 2.5 (Fig. 1) | pass |" in page


def test_the_machine_is_unknown_without_environment_json_and_stated_with_it(run):
    tmp_path, out = run
    assert read_environment(out) is None
    assert "unknown: the run has no `environment.json`" in _findings(tmp_path, out)

    env = write_environment(out / "environment.json")
    assert json.loads((out / "environment.json").read_text()) == env
    assert not list(out.glob("*.tmp"))
    page = _findings(tmp_path, out)
    assert f"- torch: {env['torch']}\n" in page
    assert f"- CPU: {env['cpu']}\n" in page
    assert f"- CPU cores: {env['cpu_cores_usable']} usable of {env['cpu_cores']}\n" in page
    assert "- CPU kernels: torch CPU kernels: " in page


def test_environment_names_the_software_versions():
    import torch

    env = describe_environment()
    assert env["torch"] == torch.__version__
    assert env["cpu_cores"] >= 1 and env["python"].count(".") == 2
    assert env["transformers"] and env["cpu"] and env["cpu_vector_units"]


def test_cli_prints_the_page_and_names_a_missing_audit(run, tmp_path, capsys):
    root, out = run
    main(["findings", str(out), "--studies", str(root / "studies")])
    assert capsys.readouterr().out == _findings(root, out)
    with pytest.raises(SystemExit, match="audit.parquet does not exist; run the pipeline"):
        main(["findings", str(tmp_path / "nowhere")])
