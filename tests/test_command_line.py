"""The ``llmbio`` command line reads the run's recorded config.yaml; flags override it."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import write_tiny_run

from llmbio.cli import main
from llmbio.numerics import AVX2_ENV, cpu_kernel_env

PROMPT = "the capital of Texas is"


@pytest.fixture
def results(tmp_path, monkeypatch):
    for key in AVX2_ENV:  # start unpinned: the CLI alone decides
        monkeypatch.delenv(key, raising=False)
    write_tiny_run(tmp_path / "r", config={"cpu_kernels": "native", "trace": {"threads": 3}})
    return tmp_path


def _pinned() -> dict:
    return {key: os.environ.get(key) for key in AVX2_ENV}


def _trace(results, *flags):
    out = results / "graphs"
    main(["--results", str(results), *flags[:2], "trace", "--run", "r", "--prompt", PROMPT,
          "--out", str(out), *flags[2:]])  # fmt: skip
    return pd.read_parquet(out / "scores.parquet")


def test_trace_takes_kernels_and_threads_from_the_run(results, capsys):
    scores = _trace(results)
    assert _pinned() == dict.fromkeys(AVX2_ENV)  # the run's cpu_kernels: native
    assert torch.get_num_threads() == 3  # the run's trace.threads
    assert scores["n_tokens"].iloc[0] == 6
    assert "INFO llmbio.attribution.trace: Tracing 6 tokens" in capsys.readouterr().err


@pytest.mark.skipif(not cpu_kernel_env("avx2"), reason="nothing to pin off x86-64")
def test_flags_override_the_recorded_config(results):
    _trace(results, "--cpu-kernels", "avx2", "--threads", "1")
    assert _pinned() == AVX2_ENV
    assert torch.get_num_threads() == 1


def test_intervene_reads_the_global_results_option(results, capsys):
    out = results / "table.parquet"
    main(["--results", str(results), "intervene", "--run", "r", "--prompt", PROMPT,
          "--feature", "0/3=5.0", "--out", str(out)])  # fmt: skip
    assert set(pd.read_parquet(out)["condition"]) >= {"baseline", "intervened"}
    assert torch.get_num_threads() == 3


def test_a_missing_run_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^llmbio: error: \S+/none does not exist; make the run"):
        main(["--results", str(tmp_path), "trace", "--run", "none", "--prompt", "x"])


def test_trace_refuses_a_planted_pickle_naming_the_fix(results):
    model = results / "r" / "model"
    weights = load_file(model / "model.safetensors")
    (model / "model.safetensors").unlink()
    torch.save(weights, model / "pytorch_model.bin")
    with pytest.raises(SystemExit) as info:
        _trace(results)
    assert str(info.value) == (
        f"llmbio: error: {model / 'pytorch_model.bin'} is a pickle, which llmbio never loads "
        "(unpickling can run code); remake it with `snakemake --cores all --forcerun "
        "train_model`, or convert the weights to model.safetensors"
    )
    assert not (results / "graphs").exists()


def test_the_run_config_is_read_without_importing_torch():
    """The kernels are pinned after the config is read, and torch must not have started."""
    code = (
        "import sys, llmbio.cli, llmbio.run\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
