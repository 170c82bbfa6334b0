"""Device and dtype selection, in one place.

Every stage that loads a released model asks :func:`pick_device` and :func:`pick_dtype`, so a
run config's ``pretrained.device: auto`` means the same thing everywhere: the first CUDA GPU
when there is one, else Apple's MPS, else the CPU. Half precision on the CPU is slow and, for
some kernels, missing, so ``auto`` dtype falls back to float32 there.
"""

from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


def pick_training_device(name: str, key: str = "train.device") -> torch.device:
    """The device of the training rules (``train.device``): ``cpu``, ``auto`` (cuda when
    available, else cpu) or a CUDA device. Apple's ``mps`` is refused: the transcoder's training
    sums in float64, which it lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = pick_device(name)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"{key} {name!r}: the training rules run on 'cpu' or a CUDA device "
            f"('auto', 'cuda', 'cuda:1'); set {key} to one of those"
        )
    return device


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda when available, mps next, cpu otherwise; any other name as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"device {name!r} was asked for but CUDA is not available (torch "
                f"{torch.__version__}); set the config's device to 'auto' or 'cpu', or install "
                "a CUDA build of torch"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The torch dtype of a config name; ``auto`` is bfloat16 on GPUs, float32 on the CPU."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(DTYPES)} or 'auto'")
    return DTYPES[name]


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory since the last reset, in MiB (0 on the CPU)."""
    if device.type != "cuda":
        return 0.0
    return torch.cuda.max_memory_allocated(device) / 2**20


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
