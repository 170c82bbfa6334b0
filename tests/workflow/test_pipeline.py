"""End-to-end runs of the Snakemake DAG on the tiny config, in a temporary copy of the repo."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from llmbio.config import load_config
from llmbio.numerics import cpu_kernel_env

NATIVE_CAPABILITY = torch.backends.cpu.get_cpu_capability()

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "Snakefile", d)
    for sub in ("workflow", "config", "studies"):
        if (ROOT / sub).exists():
            shutil.copytree(ROOT / sub, d / sub)
    return d


def _snakemake(workdir, *args, check=True):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-4000:] + proc.stderr[-4000:])
    return proc


def test_dry_run_lists_the_organism_rules(workdir):
    out = _snakemake(workdir, "-n", "--quiet", "rules").stdout
    for rule in ("world", "corpus", "tokenizer", "train_model", "behaviour"):
        assert rule in out


def test_wrong_config_key_fails_at_start_naming_it(workdir):
    (workdir / "bad.yaml").write_text("model:\n  d_modle: 12\n")
    proc = _snakemake(workdir, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0
    assert "d_modle" in proc.stdout + proc.stderr


def test_tiny_pipeline_runs_end_to_end(workdir):
    _snakemake(workdir, "--cores", "2", "--configfile", "config/tiny.yaml")
    out = workdir / "results" / "tiny"
    summary = pd.read_parquet(out / "behaviour.parquet")
    assert {"task", "split", "n", "accuracy"} <= set(summary.columns)
    assert {"two_hop", "rhyme", "addition", "refusal"} <= set(summary["task"])
    assert (out / "figures" / "behaviour.png").stat().st_size > 10_000
    assert (out / "model" / "model.safetensors").exists()
    for log in ("world", "corpus", "tokenizer", "train_model", "behaviour"):
        assert (out / "logs" / f"{log}.log").exists()
    if cpu_kernel_env("avx2") and NATIVE_CAPABILITY != "DEFAULT":
        # the default cpu_kernels (avx2) reached the training job, whatever this CPU has
        assert "torch CPU kernels: AVX2" in (out / "logs" / "train_model.log").read_text()
    # the run recorded its merged config, and the library's log lines reached the rule logs
    recorded = load_config(out / "config.yaml")
    assert recorded.run == "tiny" and recorded.model.d_model == 32
    assert recorded.cpu_kernels == "avx2" and recorded.world.seed == 0  # from config/config.yaml
    assert (
        "INFO llmbio.attribution.trace: Tracing" in (out / "logs" / "trace_graphs.log").read_text()
    )
    # nothing left to do: a second run is a no-op, also when only a comment of the config moved
    commented = workdir / "config" / "tiny-commented.yaml"
    commented.write_text("# a comment\n" + (workdir / "config" / "tiny.yaml").read_text())
    for configfile in ("config/tiny.yaml", "config/tiny-commented.yaml"):
        proc = _snakemake(workdir, "-n", "--configfile", configfile)
        assert "Nothing to be done" in proc.stdout + proc.stderr
    # a changed value rewrites the recorded config
    proc = _snakemake(workdir, "-n", "--configfile", configfile, "--config", "audit_strict=True")
    assert "rule run_config" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_second_tiny_run_gives_the_same_tables_and_figures(workdir):
    """Every PNG of a second run (another run name) is byte for byte the same (figures are drawn
    from the tables with seeded jitter and no version in their metadata), and so is every
    table's content but its wall-clock times."""
    first = workdir / "results" / "tiny"
    if not (first / "audit.parquet").exists():
        pytest.skip("needs the tiny pipeline's outputs")
    _snakemake(workdir, "--cores", "2", "--configfile", "config/tiny.yaml", "--config", "run=tiny2")
    second = workdir / "results" / "tiny2"
    pngs = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(pngs) >= 10
    differ = [str(p) for p in pngs if (first / p).read_bytes() != (second / p).read_bytes()]
    assert not differ, f"figures that differ between identical runs: {differ}"
    for table in sorted(p.relative_to(first) for p in first.rglob("*.parquet")):
        a, b = pd.read_parquet(first / table), pd.read_parquet(second / table)
        clock = [c for c in a.columns if any(w in str(c) for w in ("second", "elapsed", "time"))]
        pd.testing.assert_frame_equal(a.drop(columns=clock), b.drop(columns=clock), obj=str(table))


def _cli(workdir, *args):
    if not (workdir / "results" / "tiny" / "transcoder" / "clt").exists():
        pytest.skip("needs the tiny pipeline's outputs")
    cmd = [sys.executable, "-m", "llmbio.cli", "--results", str(workdir / "results"), "trace",
           "--run", "tiny", "--threads", "1", *args]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True)


def test_cli_traces_a_prompt_of_the_tiny_run(workdir):
    out = workdir / "cli_graphs"
    proc = _cli(workdir, "--prompt", "calc: 3+5=", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = pd.read_parquet(out / "scores.parquet")
    assert scores["n_tokens"].iloc[0] == 7
    assert (out / "00-calc-3-5.html").exists()


def test_cli_rejects_an_unknown_word_and_writes_nothing(workdir):
    out = workdir / "never_written"
    proc = _cli(workdir, "--prompt", "calc: Zanzibar+5=", "--out", str(out))
    assert proc.returncode != 0
    assert "Zanzibar" in proc.stderr
    assert not out.exists()


def test_findings_of_the_tiny_run_match_its_audit(workdir):
    out = workdir / "results" / "tiny"
    if not (out / "audit.parquet").exists():
        pytest.skip("needs the tiny pipeline's outputs")
    cmd = [sys.executable, "-m", "llmbio.cli", "findings", "results/tiny"]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = pd.read_parquet(out / "audit.parquet")
    claims = audit[(audit["kind"] == "claim") & (audit["status"] != "not_applicable")]
    assert f"**claims: {claims['passed'].sum()} of {len(claims)} pass**" in proc.stdout
    torch_version = json.loads((out / "environment.json").read_text())["torch"]
    assert f"- torch: {torch_version}\n" in proc.stdout
    for study in claims["study"].unique():
        assert f"## `{study}`" in proc.stdout
