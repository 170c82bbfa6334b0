"""Which CPU kernels torch runs, so that a run's floats do not depend on the machine's CPU.

torch picks its CPU kernels by the instruction set it finds: ATen's vectorised loops, MKL's
GEMM code path and oneDNN's all take AVX-512 where the CPU has it and AVX2 otherwise, and each
rounds differently. The organism's training amplifies the difference: on an AVX-512 machine
the default config trained a markedly weaker organism unpinned than pinned to AVX2 (measured
2026-11-27 on a 2-core AVX-512 VM; experiments/training-trajectories).

``cpu_kernels: avx2`` (the default) pins every job of a Snakemake run to the AVX2 code paths,
which every x86-64 CPU of the last decade has, through the switches each library reads at
start-up: ``ATEN_CPU_CAPABILITY`` (torch's own loops), ``MKL_CBWR`` (MKL's conditional
numerical reproducibility) and ``ONEDNN_MAX_CPU_ISA``. Together with the run's fixed thread
counts this is meant to give the same tables on any such machine; it has been checked on one
machine type only (experiments/cross-machine-fingerprints). ``native`` leaves torch's choice
alone (faster on AVX-512 CPUs). Outside x86-64 (an ARM Mac, a Graviton) there is nothing to pin
and the setting does nothing.

The variables must be set before torch starts, so the Snakefile sets them for its jobs; in your
own Python, call :func:`pin_cpu_kernels` before ``import torch``.
"""

from __future__ import annotations

import os
import platform

CPU_KERNELS = ("avx2", "native")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_kernel_env(choice: str, machine: str | None = None) -> dict[str, str]:
    """The environment variables that ``cpu_kernels: choice`` sets on ``machine``."""
    if choice not in CPU_KERNELS:
        raise ValueError(
            f"cpu_kernels {choice!r} is not known; set it to one of {list(CPU_KERNELS)} "
            "(avx2: torch's AVX2 code paths on every x86-64 machine; native: torch's own choice)"
        )
    machine = (machine or platform.machine()).lower()
    if choice == "native" or machine not in ("x86_64", "amd64"):
        return {}
    return dict(AVX2_ENV)


def pin_cpu_kernels(choice: str) -> dict[str, str]:
    """Set ``cpu_kernels: choice``'s variables in this process (inherited by its children)."""
    env = cpu_kernel_env(choice)
    os.environ.update(env)
    return env


def describe_cpu_kernels() -> str:
    """One line for a log: the kernels torch runs here and the switches that chose them."""
    import torch

    switches = ", ".join(f"{key}={os.environ.get(key, 'unset')}" for key in AVX2_ENV)
    return f"torch CPU kernels: {torch.backends.cpu.get_cpu_capability()} ({switches})"
