"""The faithfulness study summarises the rule's table; its claims read the real model's rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from llmbio.studies import run_study, write_claims

STUDY = Path(__file__).resolve().parents[2] / "studies" / "faithfulness"


def _rows(graph: str, sample: str, final_norm: str, spearman: float) -> list[dict]:
    return [
        dict(graph=graph, sample=sample, final_norm=final_norm, spearman=spearman,
             node_index=i, predicted_total=float(i - 1), actual=float(i - 1) * 0.5)
        for i in range(4)
    ]  # fmt: skip


def test_claims_ignore_the_frozen_final_norm_rows(tmp_path):
    rows = []
    for graph, live, frozen in (("g0", 0.2, 0.9), ("g1", 0.4, 0.8), ("g2", 0.6, 0.7)):
        rows += _rows(graph, "pruned_graph", "live", live)
        rows += _rows(graph, "all_active", "live", live / 2)
        rows += _rows(graph, "pruned_graph", "frozen", frozen)
    (tmp_path / "graphs").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "graphs" / "faithfulness.parquet")
    out = tmp_path / "studies" / "faithfulness"
    run_study(STUDY, tmp_path, out)
    summary = pd.read_parquet(out / "tables" / "spearman.parquet")
    assert len(summary) == 9 and set(summary["final_norm"]) == {"live", "frozen"}
    assert (out / "figures" / "spearman_by_graph.png").is_file()
    claims = write_claims(STUDY, out, tmp_path / "claims.parquet").set_index("claim_id")
    assert claims.loc["pruned_graph_features_faithful", "measured"] == pytest.approx(0.4)
    assert claims.loc["pruned_graph_features_faithful_worst", "measured"] == pytest.approx(0.2)
    assert claims.loc["all_active_features_faithful", "measured"] == pytest.approx(0.2)


def test_a_table_without_the_final_norm_column_reads_as_live(tmp_path):
    rows = _rows("g0", "pruned_graph", "live", 0.3)
    (tmp_path / "graphs").mkdir()
    pd.DataFrame(rows).drop(columns="final_norm").to_parquet(
        tmp_path / "graphs" / "faithfulness.parquet"
    )
    out = tmp_path / "studies" / "faithfulness"
    run_study(STUDY, tmp_path, out)
    summary = pd.read_parquet(out / "tables" / "spearman.parquet")
    assert summary[["sample", "final_norm", "n_features"]].values.tolist() == [
        ["pruned_graph", "live", 4]
    ]


def _analysis():
    import importlib.util

    spec = importlib.util.spec_from_file_location("faithfulness_analysis", STUDY / "analysis.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_prompts_are_a_fixed_list_of_at_least_twenty(tiny_world):
    analysis = _analysis()
    prompts = analysis.check_prompts(tiny_world)
    assert prompts == analysis.check_prompts(tiny_world)
    assert len(prompts) >= 20 and len(set(prompts)) == len(prompts)
    assert prompts[: len(tiny_world.showcase_prompts())] == tiny_world.showcase_prompts()


def test_checks_table_reports_medians_with_seeded_intervals():
    analysis = _analysis()
    per_prompt = pd.DataFrame({check: [0.1 * i for i in range(10)] for check in analysis.CHECKS})
    checks = analysis.summarise_checks(per_prompt).set_index("check")
    assert checks.loc["effect_spearman", "median"] == pytest.approx(0.45)
    assert checks.loc["effect_spearman", "ci_low"] < 0.45 < checks.loc["effect_spearman", "ci_high"]
    assert checks.loc["influence_spearman", "paper_value"] == 0.72
    again = analysis.summarise_checks(per_prompt)
    pd.testing.assert_frame_equal(checks.reset_index(), again)
