"""Replication over seeds: the aggregation, on small hand-made audit tables."""

import math
from pathlib import Path

import pandas as pd
import pytest

from llmbio.config import load_config
from llmbio.errors import LlmbioError
from llmbio.figures import check_figure
from llmbio.replication import (
    SeedRun,
    base_config,
    replication_table,
    run_claims,
    seed_runs,
    write_replication,
)
from llmbio.studies.intervals import wilson


def _claim(study, item, status, central=False, kind="mechanism"):
    return {
        "kind": "claim",
        "study": study,
        "item": item,
        "claim_kind": kind,
        "central": central,
        "measured": 0.5,
        "status": status,
        "passed": status == "pass",
    }


def _audit(path, rows):
    path.mkdir(parents=True)
    figure = {"kind": "figure", "study": "", "item": "figures/x.png", "claim_kind": None,
              "central": False, "measured": math.nan, "status": "ok", "passed": True}  # fmt: skip
    pd.DataFrame([*rows, figure]).to_parquet(path / "audit.parquet", index=False)
    return path


@pytest.fixture
def three_runs(tmp_path):
    """poems: two central claims; swap passes in runs 0 and 1, its control in 0 and 2.
    refusals: its only central claim is another family's (not applicable) everywhere."""
    runs = []
    outcomes = [
        ("pass", "pass", "pass"),
        ("pass", "fail", "not_applicable"),
        ("fail", "pass", "fail"),
    ]
    for seed, (swap, control, rate) in enumerate(outcomes):
        run = SeedRun("toy", seed, 0)
        rows = [
            _claim("poems", "swap", swap, central=True),
            _claim("poems", "control", control, central=True, kind="control"),
            _claim("poems", "rate", rate, kind="behaviour"),
            _claim("refusals", "circuit", "not_applicable", central=True),
        ]
        runs.append((run, _audit(tmp_path / run.name, rows)))
    return runs


def test_each_claim_gets_its_pass_rate_over_the_runs_where_it_applied(three_runs):
    table = replication_table(run_claims(three_runs)).set_index(["level", "study", "item"])
    swap = table.loc[("claim", "poems", "swap")]
    assert (swap["n_runs"], swap["n_passed"]) == (3, 2)
    assert swap["pass_rate"] == pytest.approx(2 / 3)
    assert (swap["ci_low"], swap["ci_high"]) == pytest.approx(wilson(2, 3))
    assert swap["central"] and swap["claim_kind"] == "mechanism"
    rate = table.loc[("claim", "poems", "rate")]  # not applicable in run 1: two runs count
    assert (rate["n_runs"], rate["n_passed"]) == (2, 1)
    assert ("claim", "", "figures/x.png") not in table.index  # figures are no claims


def test_a_study_holds_in_a_run_only_when_all_its_central_claims_pass(three_runs):
    table = replication_table(run_claims(three_runs)).set_index(["level", "study"])
    poems = table.loc[("central", "poems")]
    assert (poems["n_runs"], poems["n_passed"]) == (3, 1)  # only run 0 passes swap and control
    assert (poems["ci_low"], poems["ci_high"]) == pytest.approx(wilson(1, 3))
    refusals = table.loc[("central", "refusals")]  # applicable in no run: no rate
    assert refusals["n_runs"] == 0 and math.isnan(refusals["pass_rate"])
    assert math.isnan(refusals["ci_low"])


def test_tables_and_figure_are_written_with_provenance(three_runs, tmp_path):
    out = tmp_path / "toy-replication"
    write_replication(three_runs, out)
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 12 and set(runs["run"]) == {"toy-s0-t0", "toy-s1-t0", "toy-s2-t0"}
    assert set(runs["train_seed"]) == {0, 1, 2}
    table = pd.read_parquet(out / "replication.parquet")
    assert list(table["level"]) == ["claim"] * 4 + ["central"] * 2
    assert check_figure(out / "figures" / "replication.png").status == "ok"


def test_an_audit_of_an_older_version_is_refused_in_one_line(tmp_path):
    run = SeedRun("toy", 0, 0)
    path = _audit(tmp_path / run.name, [_claim("poems", "swap", "pass")])
    pd.read_parquet(path / "audit.parquet").drop(columns=["claim_kind"]).to_parquet(
        path / "audit.parquet"
    )
    with pytest.raises(LlmbioError, match=r"lacks the columns \['claim_kind'\].*rerun"):
        run_claims([(run, path)])


def test_seed_runs_pair_every_organism_with_every_transcoder_seed():
    runs = seed_runs("organism", [0, 1], [0, 3])
    assert [r.name for r in runs] == [
        "organism-s0-t0", "organism-s0-t3", "organism-s1-t0", "organism-s1-t3",
    ]  # fmt: skip
    for bad in ([], [1, 1], [-1]):
        with pytest.raises(LlmbioError, match="train seeds"):
            seed_runs("organism", bad, [0])


def test_a_run_is_the_base_config_with_its_name_and_two_seeds(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("run: organism\ntrain: {steps: 50}\n")
    (tmp_path / "small.yaml").write_text("run: small\ntrain: {batch_size: 4}\n")
    merged = base_config("small.yaml", tmp_path)
    run = seed_runs(load_config(merged).run, [2], [1])[0]
    merged["train"].update(run.overrides()["train"])
    merged["transcoder"] = run.overrides()["transcoder"]
    cfg = load_config({**merged, "run": run.overrides()["run"]})
    assert cfg.run == "small-s2-t1" and cfg.train.seed == 2 and cfg.transcoder.seed == 1
    assert (cfg.train.steps, cfg.train.batch_size) == (50, 4)  # both files, as Snakemake merges


def test_a_released_model_config_is_refused(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("run: organism\n")
    (tmp_path / "gemma.yaml").write_text(
        "run: gemma\npretrained: {family: g, model: google/g, transcoder: t/t}\n"
    )
    with pytest.raises(LlmbioError, match="released model.*organism config"):
        base_config("gemma.yaml", tmp_path)


def test_the_command_refuses_repeated_seeds_in_one_line(monkeypatch):
    from llmbio.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the repository root
    with pytest.raises(SystemExit, match=r"^llmbio: error: transcoder seeds \[1, 1\]: give"):
        main(["replicate", "--configfile", "config/tiny.yaml", "--transcoder-seeds", "1", "1"])
