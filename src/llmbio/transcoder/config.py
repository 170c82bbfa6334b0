"""Training configuration of a (cross-layer) transcoder."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

_TYPES = {"int": int, "float": (int, float), "bool": bool}


@dataclass(frozen=True)
class TranscoderConfig:
    """Hyper-parameters of :func:`llmbio.transcoder.train.train_transcoder`.

    Loss units: inputs and targets are divided by a per-layer scalar so that their mean squared
    norm is ``d_model``; the reconstruction loss is ``sum_l mean_tokens ||y_hat_l - y_l||^2`` in
    those units, so one layer predicted by its mean costs about ``d_model * NMSE``.
    """

    n_features: int = 512
    """Features per layer (the CLT has ``n_layers * n_features`` features)."""
    cross_layer: bool = True
    """True: cross-layer transcoder (a feature writes to its layer and all later ones);
    False: per-layer transcoder (a feature writes only to its own layer)."""
    n_steps: int = 200
    """Optimiser steps; tokens seen = ``n_steps * batch_size`` (the cache is repeated as needed)."""
    batch_size: int = 1024
    """Tokens per step, drawn from the token-level shuffled cache."""
    lr: float = 4e-3
    """Peak Adam learning rate."""
    lr_warmup_fraction: float = 0.02
    """Fraction of steps with a linear learning-rate warm-up from 0."""
    lr_decay_fraction: float = 0.2
    """Final fraction of steps with a linear learning-rate decay to 0."""
    sparsity_coefficient: float = 0.15
    """lambda of the sparsity penalty ``lambda * sum_i tanh(c * ||W_dec_i|| * a_i)``."""
    tanh_scale: float = 1.0
    """c in the sparsity penalty: larger values make it closer to an L0 count."""
    lambda_ramp_fraction: float = 0.5
    """lambda rises linearly from 0 to ``sparsity_coefficient`` over this fraction of steps."""
    pre_act_loss_coefficient: float = 3e-6
    """Coefficient of ``sum_i ReLU(theta_i - h_i) * ||W_dec_i||``, which pushes the
    pre-activations of features that never fire up towards their threshold (0 disables it)."""
    threshold_lr_multiplier: float = 10.0
    """The log-thresholds learn this many times faster than the other weights: Adam moves a
    parameter by about ``lr`` per step, and thresholds must travel ~e-fold in a short run."""
    initial_threshold: float = 0.03
    """Initial JumpReLU threshold (normalised units); thresholds are learnt in log space."""
    ste_bandwidth: float = 0.1
    """Width of the straight-through rectangle kernel of the threshold gradient."""
    seed: int = 0
    """Seeds the initialisation and the data order: same seed, same weights."""
    checkpoint_every: int = 100
    """Write a resumable checkpoint every this many steps (0 disables checkpoints)."""
    log_every: int = 25
    """Record training metrics every this many steps."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value, expected = getattr(self, field.name), _TYPES[field.type]
            if not isinstance(value, expected) or (
                field.type != "bool" and isinstance(value, bool)
            ):
                raise TypeError(
                    f"TranscoderConfig.{field.name} must be {field.type}, got {value!r}"
                )
        positive = (
            "n_features",
            "n_steps",
            "batch_size",
            "lr",
            "tanh_scale",
            "threshold_lr_multiplier",
        )
        positive += ("initial_threshold", "ste_bandwidth", "log_every")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"TranscoderConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("sparsity_coefficient", "pre_act_loss_coefficient", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"TranscoderConfig.{name} must be >= 0, got {getattr(self, name)}")
        fractions = ("lr_warmup_fraction", "lr_decay_fraction", "lambda_ramp_fraction")
        for name in fractions:
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"TranscoderConfig.{name} must be in [0, 1]")
        if self.lr_warmup_fraction + self.lr_decay_fraction > 1:
            raise ValueError(
                "TranscoderConfig: lr_warmup_fraction + lr_decay_fraction must be <= 1"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TranscoderConfig:
        """Build from a mapping, failing on unknown keys with their names."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TranscoderConfig keys {unknown}; known: {sorted(known)}")
        return cls(**values)
