"""The machine and software a run's numbers came from, as one JSON file beside its audit.

The organism's floats depend on the CPU's kernels and the torch build (see
:mod:`llmbio.numerics` and ``docs/reproducibility.md``), so a table of findings is only
meaningful with the machine it was measured on. :func:`describe_environment` collects that
description; :func:`write_environment` writes it atomically to ``results/<run>/environment.json``
(the audit rule does so), and ``llmbio findings`` prints it.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ENVIRONMENT_FILE = "environment.json"


def describe_environment() -> dict[str, str | int | None]:
    """CPU model and cores, OS, Python and library versions, torch's CPU kernels and GPU."""
    import torch

    from llmbio import __version__
    from llmbio.numerics import describe_cpu_kernels

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu": cpu_model(),
        "cpu_vector_units": _vector_units(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,  # a container or taskset may allow fewer than the CPU has
        "machine": platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": _version("transformers"),
        "llmbio": __version__,
        "cpu_kernels": describe_cpu_kernels(),
        "gpu": gpu,
    }


def write_environment(path: str | Path) -> dict:
    """Write :func:`describe_environment` to ``path`` (a temporary file renamed into place)."""
    path = Path(path)
    env = describe_environment()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(env, indent=2) + "\n")
    tmp.replace(path)
    return env


def read_environment(run_dir: str | Path) -> dict | None:
    """``results/<run>/environment.json``, or None when the run has none."""
    path = Path(run_dir) / ENVIRONMENT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def cpu_model() -> str:
    """The CPU's model name."""
    # /proc/cpuinfo names the model on Linux; platform.processor() is often empty there
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _vector_units() -> str:
    # what the CPU offers, which the pinned cpu_kernels may deliberately not use
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return "unknown"
    flags = next((ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("flags")), "")
    names = [
        name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512")) if flag in flags.split()
    ]
    return ", ".join(names) or "neither AVX2 nor AVX-512"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None
