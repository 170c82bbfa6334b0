"""The study rules in a temporary copy of the repository: a new folder under studies/ is
scheduled, runs, and shows in the report. The organism itself is only dry-run here."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--configfile", "config/tiny.yaml"]

STUDY = """\
name: demo
title: Demo study
needs: []
figures:
  - {id: bars, kind: bar, table: tables/numbers.parquet, caption: "Demo bars, from numbers."}
claims:
  - {id: big, kind: behaviour, statement: x gets big, table: tables/numbers.parquet, column: x,
     aggregate: max, op: ">=", threshold: 3, paper_value: 3, paper_ref: none}
"""

ANALYSIS = """\
import matplotlib.pyplot as plt
import pandas as pd


def run(context):
    context.save_table(pd.DataFrame({"x": [1, 2, 3]}), "numbers")
    context.draw_figure("bars", draw, ["numbers"])


def draw(numbers):
    fig, ax = plt.subplots()
    ax.bar(range(len(numbers)), numbers["x"])
    return fig
"""


@pytest.fixture
def repo(tmp_path):
    """Snakefile, workflow/ and config/ of this repository, with no study yet."""
    shutil.copy(ROOT / "Snakefile", tmp_path)
    for sub in ("workflow", "config"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    shutil.copytree(ROOT / "studies" / "_template", tmp_path / "studies" / "_template")
    return tmp_path


def add_demo_study(repo: Path) -> None:
    folder = repo / "studies" / "demo"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(STUDY)
    (folder / "analysis.py").write_text(ANALYSIS)


def snakemake(repo: Path, *args: str, check: bool = True) -> str:
    cmd = [sys.executable, "-m", "snakemake", *args]
    env = os.environ.copy()
    if (repo / "src").exists():  # the repository's own library copy, so edits to it stay here
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(repo / "src"), env.get("PYTHONPATH")])
        )
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=env)
    output = proc.stdout + proc.stderr
    assert (proc.returncode == 0) == check, output[-6000:]
    return output


def test_dry_run_without_studies(repo):
    out = snakemake(repo, "-n", *TINY)
    assert "rule audit:" in out
    assert "study_analysis" not in out and "study_claims" not in out


def test_a_new_study_folder_is_scheduled(repo):
    add_demo_study(repo)
    out = snakemake(repo, "-n", *TINY)
    for rule in ("study_analysis", "study_claims"):
        block = out.split(f"rule {rule}:", 1)[1].split("\n\n")[0]
        assert "wildcards: study=demo" in block
    audit = out.split("rule audit:", 1)[1].split("\n\n")[0]
    assert "results/tiny/studies/demo/claims.parquet" in audit


def test_study_rules_run_and_reach_the_report(repo):
    add_demo_study(repo)
    claims = "results/tiny/studies/demo/claims.parquet"
    snakemake(repo, "--cores", "1", claims, *TINY)
    table = pd.read_parquet(repo / claims)
    assert table[["claim_id", "status"]].values.tolist() == [["big", "pass"]]
    assert (repo / "results/tiny/logs/studies/demo/analysis.log").read_text()
    snakemake(repo, "--report", "report.html", claims, *TINY)
    report = (repo / "report.html").read_text()
    assert "bars" in report and "Demo bars, from numbers." in report


@pytest.mark.slow
def test_full_tiny_run_audits_the_study(repo):
    add_demo_study(repo)
    snakemake(repo, "--cores", "2", *TINY)
    audit = pd.read_parquet(repo / "results/tiny/audit.parquet").set_index("item")
    assert audit.loc["big", "status"] == "pass"
    assert audit.loc["studies/demo/figures/bars.png", "status"] == "ok"
    (repo / "studies/demo/study.yaml").write_text(STUDY.replace("threshold: 3", "threshold: 4"))
    snakemake(repo, "--cores", "1", *TINY, "--config", "audit_strict=True", check=False)
    log = (repo / "results/tiny/logs/audit.log").read_text()
    assert "FAILED claim demo/big" in log


def job_block(out: str, rule: str) -> str:
    assert f"rule {rule}:" in out, out[-6000:]
    return out.split(f"rule {rule}:", 1)[1].split("\n\n")[0]


def copy_library(repo: Path) -> Path:
    shutil.copytree(ROOT / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__"))
    return repo / "src" / "llmbio" / "cases"


def test_a_study_analysis_reads_every_module_of_its_case_package(repo):
    cases = copy_library(repo)
    shutil.copytree(ROOT / "studies" / "poems", repo / "studies" / "poems")
    out = snakemake(repo, "-n", "results/tiny/studies/poems/tables.done", *TINY)
    inputs = job_block(out, "study_analysis").split("input:", 1)[1].split("\n", 1)[0]
    modules = sorted(p.name for p in (cases / "poems").glob("*.py"))
    assert "swaps.py" in modules
    for name in modules:
        assert str(cases / "poems" / name) in inputs
    assert str(cases / "multihop") not in inputs


def test_editing_a_case_module_reruns_its_study(repo):
    cases = copy_library(repo)
    add_demo_study(repo)
    (cases / "demo").mkdir()
    (cases / "demo" / "__init__.py").write_text("")
    (cases / "demo" / "numbers.py").write_text("X = [1, 2, 3]\n")
    analysis = repo / "studies" / "demo" / "analysis.py"
    analysis.write_text(
        ANALYSIS.replace('{"x": [1, 2, 3]}', '{"x": X}').replace(
            "import pandas as pd\n",
            "import pandas as pd\n\nfrom llmbio.cases.demo.numbers import X\n",
        )
    )
    claims = "results/tiny/studies/demo/claims.parquet"
    snakemake(repo, "--cores", "1", claims, *TINY)
    assert "Nothing to be done" in snakemake(repo, "-n", claims, *TINY)

    module = cases / "demo" / "numbers.py"
    module.write_text("X = [1, 2, 4]\n")
    stamp = (repo / claims).stat().st_mtime + 1  # no tie with the outputs on coarse clocks
    os.utime(module, (stamp, stamp))
    block = job_block(snakemake(repo, "-n", claims, *TINY), "study_analysis")
    assert "wildcards: study=demo" in block
    assert f"Updated input files: {module}" in block
