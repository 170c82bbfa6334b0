"""The model organism: a small ``LlamaForCausalLM`` trained from scratch on the world's corpus.

Training is seeded and resumable: every ``checkpoint_every`` steps the model, the optimiser
state and the loss curve are written (safetensors / Parquet) under ``<out>/checkpoint``; rerunning
with the same config continues from there. The data order depends only on the seed and step.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from llmbio.config import ModelConfig, TrainConfig


def build_model(
    cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_position,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        # eager attention: as fast as sdpa for these short sequences on CPU (2026-11-26,
        # benchmarks/train_step.py prints both)
        attn_implementation="eager",
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``lr * min_lr_frac``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * cosine)


def batch_indices(n_seq: int, step: int, cfg: TrainConfig) -> torch.Tensor:
    """Row indices of the batch at ``step``: a fresh seeded permutation every epoch."""
    per_epoch = n_seq // cfg.batch_size
    epoch, i = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = torch.randperm(n_seq, generator=gen)
    return perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]


def train_model(
    model: LlamaForCausalLM,
    sequences: torch.Tensor,
    cfg: TrainConfig,
    checkpoint_dir: str | Path,
    progress: bool = True,
    fingerprint: dict | None = None,
) -> pd.DataFrame:
    """Train ``model`` on packed ``sequences`` ``(n_seq, seq_len)``; returns the loss curve.

    Resumes from ``checkpoint_dir`` when it holds a checkpoint with the same ``fingerprint``
    (the config that produced it); a checkpoint of another config is ignored.
    """
    torch.set_num_threads(cfg.threads)
    ckpt = Path(checkpoint_dir)
    fingerprint = fingerprint or {}
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay
    )
    start, curve = _resume(model, opt, ckpt, fingerprint)
    model.train()
    device = next(model.parameters()).device  # the sequences stay on the CPU; batches move
    t0 = time.perf_counter() - (curve[-1]["seconds"] if curve else 0.0)
    bar = tqdm(
        range(start, cfg.steps),
        desc="train",
        disable=not progress,
        initial=start,
        total=cfg.steps,
        mininterval=2,
    )
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = sequences[batch_indices(len(sequences), step, cfg)].to(device)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == cfg.steps - 1:
            elapsed = time.perf_counter() - t0
            curve.append(
                {"step": step, "loss": loss.item(), "lr": lr_at(step, cfg), "seconds": elapsed}
            )
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
            _checkpoint(model, opt, ckpt, step + 1, curve, fingerprint)
    model.eval()
    return pd.DataFrame(curve)


def _checkpoint(model, opt, ckpt: Path, step: int, curve: list[dict], fingerprint: dict) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp / "model.safetensors")
    state = opt.state_dict()
    tensors = {
        f"{pid}.{name}": t.reshape(-1) if t.dim() == 0 else t
        for pid, s in state["state"].items()
        for name, t in s.items()
    }
    save_file(tensors, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(
        json.dumps({"step": step, "curve": curve, "fingerprint": fingerprint})
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    tmp.replace(ckpt)


def _resume(model, opt, ckpt: Path, fingerprint: dict) -> tuple[int, list[dict]]:
    if not (ckpt / "state.json").exists():
        return 0, []
    state = json.loads((ckpt / "state.json").read_text())
    if state.get("fingerprint") != fingerprint:
        print(f"ignoring checkpoint {ckpt}: it was made with another config")
        return 0, []
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    tensors = load_file(ckpt / "optimizer.safetensors")
    opt_state = opt.state_dict()
    for key, t in tensors.items():
        pid, name = key.split(".")
        opt_state["state"].setdefault(int(pid), {})[name] = t.reshape(()) if name == "step" else t
    opt.load_state_dict(opt_state)
    print(f"resuming training from step {state['step']} ({ckpt})")
    return state["step"], state["curve"]


def save_model(model, tokenizer, out_dir: str | Path) -> None:
    """Write a Hugging Face model directory (safetensors) atomically."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)


def plot_training_curve(curve: pd.DataFrame):
    """Loss vs step, drawn from the training-curve table."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(curve["step"], curve["loss"], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (nats/token)")
    # no wall-clock time here: the same run must draw the same bytes (the time is in the table)
    ax.set_title(f"Organism training ({int(curve['step'].iloc[-1]) + 1} steps)")
    fig.tight_layout()
    return fig
