"""`llmbio replicate` on the tiny config, in a temporary copy of the repo."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from llmbio.config import load_config
from llmbio.figures import check_figure
from llmbio.replication import SeedRun

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "Snakefile", d)
    for sub in ("workflow", "config", "studies"):
        shutil.copytree(ROOT / sub, d / sub)
    return d


def _run(workdir, *command):
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_a_seed_run_override_reaches_snakemake_as_its_own_run(workdir):
    override = workdir / "override.yaml"
    override.write_text(yaml.safe_dump(SeedRun("tiny", 3, 2).overrides()))
    out = _run(workdir, sys.executable, "-m", "snakemake", "-n", "--cores", "1",
               "--configfile", "config/tiny.yaml", "override.yaml")  # fmt: skip
    assert "results/tiny-s3-t2/model" in out and "results/tiny/" not in out


@pytest.mark.slow
def test_two_organism_seeds_on_the_tiny_config(workdir):
    replicate = [sys.executable, "-m", "llmbio.cli", "replicate", "--configfile",
                 "config/tiny.yaml", "--train-seeds", "0", "1", "--cores", "2"]  # fmt: skip
    _run(workdir, *replicate)
    runs = [workdir / "results" / name for name in ("tiny-s0-t0", "tiny-s1-t0")]
    for seed, run in enumerate(runs):
        cfg = load_config(run / "config.yaml")
        assert (cfg.train.seed, cfg.transcoder.seed, cfg.model.d_model) == (seed, 0, 32)
    models = [(run / "model" / "model.safetensors").read_bytes() for run in runs]
    assert models[0] != models[1]  # the seed reached training
    out = workdir / "results" / "tiny-replication"
    table = pd.read_parquet(out / "replication.parquet")
    claims = table[table["level"] == "claim"]
    audit = pd.read_parquet(runs[0] / "audit.parquet")
    assert len(claims) == (audit["kind"] == "claim").sum()
    assert claims["n_runs"].between(0, 2).all() and (claims["n_passed"] <= claims["n_runs"]).all()
    assert (table["level"] == "central").sum() >= 1
    assert check_figure(out / "figures" / "replication.png").status == "ok"
    # a second call finds both runs complete and only aggregates again, to the same table
    assert "Nothing to be done" in _run(workdir, *replicate)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "replication.parquet"), table)
