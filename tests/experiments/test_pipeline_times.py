"""The critical path that benchmarks/pipeline_times.py prints, on a small job graph."""

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline_times.py"
spec = importlib.util.spec_from_file_location("pipeline_times", SCRIPT)
pipeline_times = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pipeline_times)

# `snakemake --dag` output, trimmed: a study's claims job carries no wildcard in its label
DOT = r"""digraph snakemake_dag {
	0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
	1[label = "train_model", color = "0.51 0.6 0.85", style="rounded"];
	2[label = "train_transcoder\nkind: clt", color = "0.55 0.6 0.85", style="rounded"];
	3[label = "train_transcoder\nkind: plt", color = "0.55 0.6 0.85", style="rounded"];
	4[label = "study_analysis\nstudy: poems", color = "0.35 0.6 0.85", style="rounded"];
	5[label = "study_claims", color = "0.39 0.6 0.85", style="rounded"];
	1 -> 2
	2 -> 3
	2 -> 4
	4 -> 5
	3 -> 0
	5 -> 0
}
"""


def test_job_names_follow_the_benchmark_files():
    edges = set(pipeline_times.job_edges(DOT))
    assert ("train_model", "train_transcoder_clt") in edges
    assert ("studies/poems/analysis", "studies/poems/claims") in edges
    assert ("studies/poems/claims", "all") in edges


def test_critical_path_is_the_longest_chain():
    seconds = {
        "train_model": 10.0,
        "train_transcoder_clt": 5.0,
        "train_transcoder_plt": 3.0,
        "studies/poems/analysis": 4.0,
        "studies/poems/claims": 1.0,
    }
    jobs = pd.DataFrame({"job": list(seconds), "wall_s": list(seconds.values())})
    path = pipeline_times.critical_path(jobs, pipeline_times.job_edges(DOT))
    assert path == ["train_model", "train_transcoder_clt", "studies/poems/analysis",
                    "studies/poems/claims", "all"]  # fmt: skip
    jobs.loc[jobs["job"] == "train_transcoder_plt", "wall_s"] = 6.0
    path = pipeline_times.critical_path(jobs, pipeline_times.job_edges(DOT))
    assert path == ["train_model", "train_transcoder_clt", "train_transcoder_plt", "all"]
