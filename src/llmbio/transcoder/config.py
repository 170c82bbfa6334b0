"""Training configuration of a (cross-layer) transcoder."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from llmbio.bounds import Bound, Fraction, NonNegative, Positive, PositiveFloat

_TYPES = {int: int, float: (int, float), bool: bool}


@dataclass(frozen=True)
class TranscoderConfig:
    """Hyper-parameters of :func:`llmbio.transcoder.train.train_transcoder`.

    Loss units: inputs and targets are divided by a per-layer scalar so that their mean squared
    norm is ``d_model``; the reconstruction loss is ``sum_l mean_tokens ||y_hat_l - y_l||^2`` in
    those units, so one layer predicted by its mean costs about ``d_model * NMSE``.
    """

    n_features: Positive[int] = 512
    """Features per layer (the CLT has ``n_layers * n_features`` features)."""
    cross_layer: bool = True
    """True: cross-layer transcoder (a feature writes to its layer and all later ones);
    False: per-layer transcoder (a feature writes only to its own layer)."""
    n_steps: Positive[int] = 200
    """Optimiser steps; tokens seen = ``n_steps * batch_size`` (the cache is repeated as needed)."""
    batch_size: Positive[int] = 1024
    """Tokens per step, drawn from the token-level shuffled cache."""
    lr: PositiveFloat = 4e-3
    """Peak Adam learning rate."""
    lr_warmup_fraction: Fraction = 0.02
    """Fraction of steps with a linear learning-rate warm-up from 0."""
    lr_decay_fraction: Fraction = 0.2
    """Final fraction of steps with a linear learning-rate decay to 0."""
    sparsity_coefficient: NonNegative[float] = 0.15
    """lambda of the sparsity penalty ``lambda * sum_i tanh(c * ||W_dec_i|| * a_i)``."""
    tanh_scale: PositiveFloat = 1.0
    """c in the sparsity penalty: larger values make it closer to an L0 count."""
    lambda_ramp_fraction: Fraction = 0.5
    """lambda rises linearly from 0 to ``sparsity_coefficient`` over this fraction of steps."""
    pre_act_loss_coefficient: NonNegative[float] = 3e-6
    """Coefficient of ``sum_i ReLU(theta_i - h_i) * ||W_dec_i||``, which pushes the
    pre-activations of features that never fire up towards their threshold (0 disables it)."""
    threshold_lr_multiplier: PositiveFloat = 10.0
    """The log-thresholds learn this many times faster than the other weights: Adam moves a
    parameter by about ``lr`` per step, and thresholds must travel ~e-fold in a short run."""
    initial_threshold: PositiveFloat = 0.03
    """Initial JumpReLU threshold (normalised units); thresholds are learnt in log space."""
    ste_bandwidth: PositiveFloat = 0.1
    """Width of the straight-through rectangle kernel of the threshold gradient."""
    seed: NonNegative[int] = 0
    """Seeds the initialisation and the data order: same seed, same weights."""
    checkpoint_every: NonNegative[int] = 100
    """Write a resumable checkpoint every this many steps (0 disables checkpoints)."""
    log_every: Positive[int] = 25
    """Record training metrics every this many steps."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self), include_extras=True)
        for field in dataclasses.fields(self):
            value, hint = getattr(self, field.name), hints[field.name]
            annotated = typing.get_origin(hint) is typing.Annotated
            tp, *bounds = typing.get_args(hint) if annotated else (hint,)
            if not isinstance(value, _TYPES[tp]) or (tp is not bool and isinstance(value, bool)):
                raise TypeError(
                    f"TranscoderConfig.{field.name} must be {tp.__name__}, got {value!r}"
                )
            for bound in bounds:
                problem = bound.problem(value) if isinstance(bound, Bound) else None
                if problem:
                    raise ValueError(f"TranscoderConfig.{field.name} {problem}")
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
