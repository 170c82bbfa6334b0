"""Real-model configs on the CPU, without network: they validate and their DAG is the right one.

A config with ``pretrained:`` skips the organism and transcoder training; its only network
rules are the two downloads; the SLURM profile passes a dry-run when its plugin is installed.
"""

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from llmbio.config import ConfigError, load_config
from llmbio.pretrained import model_dir, transcoder_dir

ROOT = Path(__file__).resolve().parents[2]
REAL = ["gemma-2-2b", "gemma-2-2b-plt", "llama-3.2-1b", "qwen3-4b"]
REAL_RULES = {
    "run_config",  # released-model runs record their config too
    "download_model",
    "download_transcoder",
    "trace_graphs",
    "faithfulness",
    "study_analysis",
    "study_claims",
    "audit",
    "all",
}
ORGANISM_RULES = {"world", "corpus", "tokenizer", "train_model", "cache_activations"}
ORGANISM_RULES |= {"train_transcoder", "evaluate_transcoder", "feature_atlas", "behaviour"}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "Snakefile", d)
    for sub in ("workflow", "config", "studies"):
        shutil.copytree(ROOT / sub, d / sub)
    return d


def _dry_run(workdir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "-n", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(proc.stdout[-4000:] + proc.stderr[-4000:])
    return proc.stdout + proc.stderr


def _job_counts(out: str) -> dict[str, int]:
    table = out[out.index("Job stats:") :].split("total")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.parametrize("name", REAL)
def test_real_config_validates(name):
    data = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    schema = json.loads((ROOT / "workflow/schemas/config.schema.json").read_text())
    jsonschema.validate(data, schema)
    cfg = load_config(data)
    assert cfg.family == data["pretrained"]["family"] != "organism"
    assert cfg.pretrained.dtype == "bfloat16" and not cfg.pretrained.trust_remote_code
    assert model_dir(cfg.pretrained).parts[0] == "resources"
    assert transcoder_dir(cfg.pretrained).parts[0] == "resources"


def test_pretrained_section_needs_model_and_transcoder():
    with pytest.raises(ConfigError, match="pretrained.transcoder"):
        load_config({"pretrained": {"family": "gemma-2-2b", "model": "google/gemma-2-2b"}})


@pytest.mark.parametrize("name", ["gemma-2-2b", "llama-3.2-1b", "qwen3-4b"])
def test_dry_run_skips_the_organism_and_downloads(workdir, name):
    out = _dry_run(workdir, "--configfile", f"config/{name}.yaml")
    jobs = _job_counts(out)
    assert set(jobs) == REAL_RULES, jobs
    assert not ORGANISM_RULES & set(jobs)
    assert jobs["download_model"] == jobs["download_transcoder"] == 1
    cfg = load_config(workdir / "config" / f"{name}.yaml")
    assert str(transcoder_dir(cfg.pretrained)) in out
    assert re.search(r"rule trace_graphs:.*?resources:[^\n]*gpu=1", out, re.S)


def test_slurm_profile_dry_run(workdir):
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install .[cluster])")
    out = _dry_run(
        workdir, "--workflow-profile", "workflow/profiles/slurm", "--configfile",
        "config/gemma-2-2b.yaml",
    )  # fmt: skip
    assert set(_job_counts(out)) == REAL_RULES
    trace = re.search(r"rule trace_graphs:.*?resources: ([^\n]*)", out, re.S).group(1)
    assert "gpu=1" in trace and "slurm_partition=YOUR_GPU_PARTITION" in trace
    assert "slurm_account=YOUR_ACCOUNT" in trace
