"""run_study: imports a study's analysis.py, hands it a context, records what it wrote."""

import json
import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from llmbio.figures import sidecar_path
from llmbio.organism import build_model, save_model
from llmbio.studies import evaluate_claims, load_study, run_study

ROOT = Path(__file__).resolve().parents[2]

STUDY = """\
name: demo
title: Demo
needs: []
prompts:
  organism: [{id: p1, text: "calc: 1+2=", target: "3"}]
figures:
  - {id: bars, kind: bar, table: tables/numbers.parquet, caption: Numbers as bars.}
claims:
  - {id: big, kind: behaviour, statement: x gets big, table: tables/numbers.parquet, column: x,
     aggregate: max, op: ">=", threshold: 2}
"""

ANALYSIS = """\
import matplotlib.pyplot as plt
import pandas as pd


def run(context):
    assert context.prompts("organism")[0].target == "3"
    assert context.model_dir == context.run_dir / "model"
    context.save_table(pd.DataFrame({"x": [1, 2, 3]}), "numbers")
    context.draw_figure("bars", draw, ["numbers"])


def draw(numbers):
    fig, ax = plt.subplots()
    ax.bar(range(len(numbers)), numbers["x"])
    return fig
"""


def make_study(root: Path, analysis: str | None = ANALYSIS) -> Path:
    folder = root / "demo"
    folder.mkdir(parents=True)
    (folder / "study.yaml").write_text(STUDY)
    if analysis is not None:
        (folder / "analysis.py").write_text(textwrap.dedent(analysis))
    return folder


def test_run_study_writes_tables_figures_and_marker(tmp_path):
    make_study(tmp_path / "studies")
    marker = run_study("demo", tmp_path / "results", studies_root=tmp_path / "studies")
    out = tmp_path / "results" / "studies" / "demo"
    assert marker == out / "tables.done"
    assert pd.read_parquet(out / "tables" / "numbers.parquet")["x"].tolist() == [1, 2, 3]
    provenance = json.loads(sidecar_path(out / "figures" / "bars.png").read_text())
    assert provenance["caption"] == "Numbers as bars."  # from study.yaml
    assert provenance["tables"][0]["path"] == "../tables/numbers.parquet"
    written = json.loads(marker.read_text())
    assert list(written["tables"]) == ["tables/numbers.parquet"]
    assert "figures/bars.png" in written["figures"]
    claims = evaluate_claims(load_study(tmp_path / "studies" / "demo"), out)
    assert claims["status"].tolist() == ["pass"]


def test_a_study_without_analysis_runs_nothing(tmp_path):
    folder = make_study(tmp_path / "studies", analysis=None)
    marker = run_study(folder / "study.yaml", tmp_path / "results", tmp_path / "out")
    assert json.loads(marker.read_text())["tables"] == {}
    claims = evaluate_claims(load_study(folder), tmp_path / "out")
    assert claims["status"].tolist() == ["missing_table"]


def test_an_analysis_without_run_is_an_error(tmp_path):
    folder = make_study(tmp_path / "studies", analysis="X = 1\n")
    with pytest.raises(AttributeError, match="must define run"):
        run_study(folder, tmp_path / "results")


def test_the_template_analysis_runs_on_a_model(tmp_path, tiny_cfg, tiny_tokenizer):
    save_model(build_model(tiny_cfg.model, tiny_tokenizer, 0), tiny_tokenizer, tmp_path / "model")
    folder = tmp_path / "my_study"
    shutil.copytree(ROOT / "studies" / "_template", folder)
    run_study(folder, tmp_path, tmp_path / "out")
    predictions = pd.read_parquet(tmp_path / "out" / "tables" / "predictions.parquet")
    assert predictions["prompt_id"].tolist() == ["dallas", "oakland"]
    assert (tmp_path / "out" / "figures" / "target_probability.png").is_file()
    claims = evaluate_claims(load_study(folder), tmp_path / "out")
    assert claims["status"].isin(["pass", "fail"]).all()  # measured, whatever the model says
