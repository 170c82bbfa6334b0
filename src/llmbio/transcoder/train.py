"""Training a JumpReLU (cross-layer) transcoder on an activation cache.

Training happens in normalised units: layer ``l``'s inputs are divided by ``s_in[l]`` and its
targets by ``s_out[l]``, scalars chosen so that the mean squared norm is ``d_model``. The loss is

    sum_l mean_tokens ||y_hat_l - y_l||^2
    + lambda(t) * sum_i tanh(c * ||W_dec_i|| * a_i)
    + pre_act_coef * sum_i ReLU(theta_i - h_i) * ||W_dec_i||

with lambda ramped linearly from 0 and JumpReLU thresholds ``theta = exp(log_theta)`` trained
through a straight-through estimator (:mod:`llmbio.transcoder.fused`). The scales are folded
into the saved weights, so the returned transcoder acts on raw activations.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from llmbio.activations import ActivationReader
from llmbio.transcoder.checkpoint import load_checkpoint, save_checkpoint
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.config import TranscoderConfig
from llmbio.transcoder.fused import Code, decode, encode
from llmbio.transcoder.io import load_transcoder, save_transcoder

__all__ = ["TranscoderConfig", "train_transcoder"]


class _Trainable(nn.Module):
    """A CLT in normalised units with thresholds parameterised as ``log_threshold`` ``(L, F)``."""

    def __init__(self, n_layers: int, d_model: int, cfg: TranscoderConfig):
        super().__init__()
        self.clt = CrossLayerTranscoder(n_layers, d_model, cfg.n_features, cfg.cross_layer)
        self.clt.threshold.requires_grad_(False)  # trained through log_threshold instead
        self.log_threshold = nn.Parameter(torch.zeros(n_layers, cfg.n_features))

    def forward(self, x: torch.Tensor, cfg: TranscoderConfig):
        """``x`` ``(L, B, D)`` -> recon ``(L, B, D)``, codes, sparsity, pre-act."""
        clt = self.clt
        code, sparsity, pre_act = encode(
            x, clt.W_enc, clt.b_enc, self.log_threshold, clt.decoder_norms(),
            cfg.tanh_scale, cfg.ste_bandwidth,
        )  # fmt: skip
        recon = decode(code, list(clt.W_dec)) + clt.b_dec.unsqueeze(1)
        return recon, code, sparsity, pre_act


def _init(model: _Trainable, cfg: TranscoderConfig, y_mean: torch.Tensor) -> None:
    """Anthropic's CLT init: U(+-1/sqrt(F)) encoders, U(+-1/sqrt(L*D)) decoders, zero b_enc
    (with threshold 0.03 about half the features fire at first: none start dead)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    clt = model.clt
    n_out = clt.n_layers if cfg.cross_layer else 1
    with torch.no_grad():
        bound = 1 / math.sqrt(cfg.n_features)
        clt.W_enc.copy_(torch.rand(clt.W_enc.shape, generator=gen) * 2 * bound - bound)
        bound = 1 / math.sqrt(n_out * clt.d_model)
        for w in clt.W_dec:
            w.copy_(torch.rand(w.shape, generator=gen) * 2 * bound - bound)
        clt.b_dec.copy_(y_mean)
        model.log_threshold.fill_(math.log(cfg.initial_threshold))


def _losses(model: _Trainable, x: torch.Tensor, y: torch.Tensor, cfg: TranscoderConfig):
    """Loss terms on a normalised batch ``x, y`` ``(L, B, D)``: mse ``(L,)``, sparsity, pre-act."""
    recon, code, sparsity, pre_act = model(x, cfg)
    mse = (recon - y).pow(2).sum(-1).mean(-1)
    return mse, sparsity, pre_act, code


def _schedules(step: int, cfg: TranscoderConfig) -> tuple[float, float]:
    """Learning rate and lambda at ``step`` (0-based)."""
    n = cfg.n_steps
    warm = cfg.lr_warmup_fraction * n
    decay = cfg.lr_decay_fraction * n
    lr_factor = min(1.0, (step + 1) / warm if warm else 1.0, (n - step) / decay if decay else 1.0)
    ramp = cfg.lambda_ramp_fraction * n
    lam = cfg.sparsity_coefficient * min(1.0, (step + 1) / ramp if ramp else 1.0)
    return cfg.lr * lr_factor, lam


def _scales(reader: ActivationReader) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer scalars ``(L,)`` giving inputs and targets a mean squared norm of ``d_model``."""
    d = reader.d_model
    s_in = (reader.mean_sq_norm("resid_mid") / d).sqrt()
    s_out = (reader.mean_sq_norm("mlp_out") / d).sqrt()
    if (s_in == 0).any() or (s_out == 0).any():
        raise ValueError(f"{reader.cache_dir}: a layer has all-zero activations; cannot normalise")
    return s_in, s_out


def _fold_normalisation(
    model: _Trainable, s_in: torch.Tensor, s_out: torch.Tensor
) -> CrossLayerTranscoder:
    """A CLT on raw activations equivalent to ``model`` on normalised ones.

    Features read ``x / s_in[l]`` (so ``W_enc[l] /= s_in[l]``; activations are unchanged) and the
    reconstruction of target ``t`` is multiplied by ``s_out[t]``.
    """
    src = model.clt
    clt = CrossLayerTranscoder(src.n_layers, src.d_model, src.n_features, src.cross_layer)
    with torch.no_grad():
        clt.W_enc.copy_(src.W_enc / s_in[:, None, None])
        clt.b_enc.copy_(src.b_enc)
        clt.threshold.copy_(model.log_threshold.exp())
        clt.b_dec.copy_(src.b_dec * s_out[:, None])
        for s, (w_dst, w_src) in enumerate(zip(clt.W_dec, src.W_dec, strict=True)):
            targets = list(clt.target_layers(s))
            w_dst.copy_(w_src * s_out[targets][None, :, None])
    return clt


def _batches(reader: ActivationReader, cfg: TranscoderConfig, start_step: int, s_in, s_out):
    """Endless normalised training batches ``(L, B, D)``, resumable at ``start_step``."""
    stream = reader.iter_batches(
        cfg.batch_size, shuffle=True, seed=cfg.seed, epochs=None, start_batch=start_step
    )
    for resid_mid, mlp_out in stream:  # (B, L, D)
        resid_mid, mlp_out = resid_mid.to(s_in.device), mlp_out.to(s_in.device)
        x = (resid_mid / s_in[:, None]).transpose(0, 1).contiguous()
        y = (mlp_out / s_out[:, None]).transpose(0, 1).contiguous()
        yield x, y


def _metrics(step, seconds, lr, lam, mse, sparsity, pre_act, code: Code, y, dead) -> dict:
    var = (y - y.mean(1, keepdim=True)).pow(2).sum(-1).mean(-1)  # (L,)
    return {
        "step": step,
        "seconds": seconds,
        "lr": lr,
        "lambda": lam,
        "mse": mse.sum().item(),
        "nmse": (mse.sum() / var.sum()).item(),
        "sparsity": sparsity.item(),
        "pre_act": pre_act.item(),
        "l0": code.l0(),  # per layer and token
        "dead_fraction": dead.float().mean().item(),
    }


def train_transcoder(
    reader: ActivationReader,
    cfg: TranscoderConfig,
    out_dir: str | Path,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> CrossLayerTranscoder:
    """Train a transcoder on ``reader``'s train split; return it (acting on raw activations).

    Writes to ``out_dir``: ``transcoder/`` (:func:`llmbio.transcoder.io.save_transcoder` layout),
    ``config.json`` and ``train_log.parquet`` (one row per ``cfg.log_every`` steps: losses,
    batch NMSE, L0 per layer, dead fraction, learning rate, lambda, seconds). A checkpoint
    is kept every ``cfg.checkpoint_every`` steps; re-running on the same ``out_dir`` resumes from
    it (or returns the finished transcoder). ``dead_fraction`` in the log counts features that
    did not fire in the last 100k training tokens. Training runs on ``device`` (batches move
    there from the cache); the returned transcoder is on the CPU.
    """
    out_dir = Path(out_dir)
    if (out_dir / "transcoder").is_dir() and (out_dir / "config.json").is_file():
        _check_same_config(out_dir / "config.json", cfg)
        return load_transcoder(out_dir / "transcoder")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    s_in, s_out = (s.to(device) for s in _scales(reader))
    model = _Trainable(reader.n_layers, reader.d_model, cfg).to(device)
    weights = [p for n, p in model.named_parameters() if p.requires_grad and n != "log_threshold"]
    optimizer = torch.optim.Adam(
        [
            {"params": weights},
            {"params": [model.log_threshold], "lr_scale": cfg.threshold_lr_multiplier},
        ]
    )
    ckpt = out_dir / "checkpoint.safetensors"
    if ckpt.is_file():
        step, log = load_checkpoint(ckpt, model, optimizer, cfg)
    else:
        step, log = 0, []
        _, y0 = next(_batches(reader, cfg, 0, s_in, s_out))
        _init(model, cfg, y0.mean(1))
    _train_loop(model, optimizer, reader, cfg, (s_in, s_out), step, log, ckpt, progress)
    clt = _fold_normalisation(model.cpu(), s_in.cpu(), s_out.cpu())
    save_transcoder(clt, out_dir / "transcoder", model_name=reader.manifest.get("model"))
    pd.DataFrame(log).to_parquet(out_dir / "train_log.parquet", index=False)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    ckpt.unlink(missing_ok=True)
    return clt


def _train_loop(model, optimizer, reader, cfg, scales, step, log, ckpt, progress) -> None:
    """Optimise ``model`` from ``step`` to ``cfg.n_steps``, appending metric rows to ``log``."""
    window = -(-100_000 // cfg.batch_size)
    start = time.perf_counter() - (log[-1]["seconds"] if log else 0.0)
    since_fired = torch.zeros_like(model.log_threshold, dtype=torch.long)
    batches = _batches(reader, cfg, step, *scales)
    bar = tqdm(range(step, cfg.n_steps), desc="training transcoder", disable=not progress)
    for step in bar:
        lr, lam = _schedules(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x, y = next(batches)
        mse, sparsity, pre_act, code = _losses(model, x, y, cfg)
        loss = mse.sum() + lam * sparsity + cfg.pre_act_loss_coefficient * pre_act
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        fired = code.fired()
        since_fired = torch.where(fired, 0, since_fired + 1).clamp_max(window)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.n_steps:
            dead = since_fired >= window
            seconds = time.perf_counter() - start
            log.append(_metrics(step + 1, seconds, lr, lam, mse, sparsity, pre_act, code, y, dead))
            bar.set_postfix(nmse=f"{log[-1]['nmse']:.3f}", l0=f"{log[-1]['l0']:.1f}")
        done = step + 1
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.n_steps:
            save_checkpoint(ckpt, model, optimizer, cfg, step + 1, log)


def _check_same_config(path: Path, cfg: TranscoderConfig) -> None:
    saved = json.loads(path.read_text())
    if saved != cfg.to_dict():
        diff = sorted(
            k for k in saved.keys() | cfg.to_dict().keys() if saved.get(k) != cfg.to_dict().get(k)
        )
        raise ValueError(
            f"{path.parent} holds a transcoder trained with a different config (differs in "
            f"{diff}); delete it or choose another out_dir"
        )
