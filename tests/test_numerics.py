"""cpu_kernels: which CPU kernels torch runs (llmbio.numerics)."""

import os
import subprocess
import sys

import pytest
import torch

from llmbio.cli import main
from llmbio.config import ConfigError, load_config
from llmbio.numerics import AVX2_ENV, cpu_kernel_env

NATIVE = torch.backends.cpu.get_cpu_capability()
ORIGINAL_ENV = {k: os.environ.get(k) for k in AVX2_ENV}


def test_avx2_sets_the_three_switches_on_x86_only():
    assert cpu_kernel_env("avx2", "x86_64") == AVX2_ENV
    assert cpu_kernel_env("avx2", "AMD64") == AVX2_ENV
    assert cpu_kernel_env("avx2", "arm64") == {}
    assert cpu_kernel_env("native", "x86_64") == {}


def test_unknown_choice_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"'avx512'.*\['avx2', 'native'\]"):
        cpu_kernel_env("avx512")
    with pytest.raises(ConfigError, match="cpu_kernels 'fast'"):
        load_config({"cpu_kernels": "fast"})
    assert load_config({}).cpu_kernels == "avx2"


def _capability(env: dict[str, str]) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    clean = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(not cpu_kernel_env("avx2") or NATIVE == "DEFAULT", reason="no AVX2 CPU")
def test_pinned_process_runs_avx2_kernels():
    assert _capability(cpu_kernel_env("avx2")) == "AVX2"


def test_cli_pins_before_its_command_runs(tmp_path):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["--results", str(tmp_path), "trace", "--run", "none", "--prompt", "x"])
    pinned = {k: os.environ.get(k) for k in AVX2_ENV}
    assert pinned == (cpu_kernel_env("avx2") or dict.fromkeys(AVX2_ENV))


def test_cli_refuses_an_unknown_kernel_choice(capsys):
    with pytest.raises(SystemExit):
        main(["--cpu-kernels", "fast", "compare-audits", "a", "b"])
    assert "invalid choice: 'fast'" in capsys.readouterr().err


def test_the_cli_pin_did_not_outlive_its_test():  # pytest runs it after the CLI tests above
    assert {k: os.environ.get(k) for k in AVX2_ENV} == ORIGINAL_ENV
