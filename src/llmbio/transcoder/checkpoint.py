"""Resumable training checkpoints: model and Adam state in one safetensors file.

Tensors: ``param.{name}`` for every parameter of the trainable module, and
``adam.{name}.{exp_avg,exp_avg_sq,step}`` for those the optimiser has state for. The metadata
holds ``step`` (steps done), ``config`` (the :class:`TranscoderConfig` as JSON) and ``log``
(metric rows so far, JSON).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llmbio.transcoder.config import TranscoderConfig

_ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TranscoderConfig,
    step: int,
    log: list[dict],
) -> None:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file."""
    tensors = {f"param.{n}": p.detach().contiguous() for n, p in model.named_parameters()}
    for name, param in model.named_parameters():
        for key, value in optimizer.state.get(param, {}).items():
            tensors[f"adam.{name}.{key}"] = torch.as_tensor(value).detach().contiguous()
    meta = {"step": str(step), "config": json.dumps(cfg.to_dict()), "log": json.dumps(log)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TranscoderConfig
) -> tuple[int, list[dict]]:
    """Restore ``model`` and ``optimizer`` in place; return (steps done, log rows)."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        saved = json.loads(meta["config"])
        if saved != cfg.to_dict():
            diff = sorted(k for k in saved if saved[k] != cfg.to_dict().get(k))
            raise ValueError(
                f"checkpoint {path} was written with a different config (differs in {diff}); "
                "delete it to start over or train with the same config to resume"
            )
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    params = dict(model.named_parameters())
    for name, param in params.items():
        saved_shape = tuple(tensors[f"param.{name}"].shape)
        if saved_shape != tuple(param.shape):
            raise ValueError(
                f"checkpoint {path}: {name} has shape {saved_shape}, the model {tuple(param.shape)}"
                " (was it trained on another activation cache?); delete it to start over"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[f"param.{name}"])
    for name, param in params.items():
        state = {
            # the moments go to the parameter's device; Adam keeps its step count on the CPU
            k: tensors[f"adam.{name}.{k}"].to("cpu" if k == "step" else param.device)
            for k in _ADAM_KEYS
            if f"adam.{name}.{k}" in tensors
        }
        if state:
            optimizer.state[param] = state
    return int(meta["step"]), json.loads(meta["log"])
