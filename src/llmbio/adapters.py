"""Per-architecture adapters: where the hook points of a Hugging Face causal LM live.

Everything that traces a model (activation caching, transcoders, attribution, interventions)
talks to the model only through an :class:`Adapter`, so that architecture differences stay here.

Hook names follow TransformerLens and are the same strings in code, files and plots:

- ``blocks.{l}.hook_resid_mid``: the residual stream entering layer ``l``'s MLP block, *before*
  its norm (the input of the transcoder). Captured as the input of ``mlp_in_norm``.
- ``blocks.{l}.hook_mlp_out``: what layer ``l``'s MLP block adds to the residual stream (the
  transcoder's target). Captured as the output of ``mlp_out``; for Gemma-2 that is the output of
  ``post_feedforward_layernorm``.
- ``hook_embed``: the residual stream entering block 0 (token embedding, scaled for Gemma-2, plus
  position embedding for GPT-2).
- ``ln_final.hook_in`` and ``ln_final.hook_normalized``: the residual stream entering the final
  norm and the norm's output (what the unembedding reads).

:func:`hooks` reads or replaces the activations at these names for the duration of a ``with``
block; :func:`hook_input`, :func:`hook_output` and :func:`replace_forward` do the same for any
module (the norms, say). Every hook of the package goes through them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

HookFn = Callable[[torch.Tensor], torch.Tensor | None]
"""Sees the activation at a hook point, ``(B, n, D)``; a tensor it returns replaces it."""


def resid_mid_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_mid"


def mlp_out_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


@dataclass(frozen=True)
class Adapter:
    """Attribute paths to the modules that matter for one architecture family.

    Attributes are dotted paths relative to the causal-LM object (``layers``, ``final_norm``,
    ``lm_head``) or to one decoder layer (``mlp_in_norm``, ``mlp_out``, ``attn``, ``norms``).
    """

    family: str
    layers: str  # ModuleList of decoder layers
    final_norm: str
    lm_head: str
    mlp_in_norm: str  # its input is hook_resid_mid
    mlp_out: str  # its output is hook_mlp_out
    attn: str  # the attention module of a layer
    norms: tuple[str, ...]  # every norm inside a layer, in forward order
    final_logit_softcap: bool = False
    norm_kind: str = "rms"  # how the norms compute (see NORM_KINDS); frozen norms mirror it
    # the MLP itself when ``mlp_out`` is a module after it (Gemma-2's post-norm): the frozen
    # model replaces ``mlp_out``'s output, so it skips this module's (unused) computation
    mlp_inner: str | None = None

    def get_layers(self, model: nn.Module) -> nn.ModuleList:
        return _get(model, self.layers)

    def n_layers(self, model: nn.Module) -> int:
        return len(self.get_layers(model))

    def d_model(self, model: nn.Module) -> int:
        return int(
            model.config.hidden_size
            if hasattr(model.config, "hidden_size")
            else model.config.n_embd
        )

    def layer_module(self, model: nn.Module, layer: int, path: str) -> nn.Module:
        return _get(self.get_layers(model)[layer], path)

    def unembed(self, model: nn.Module) -> torch.Tensor:
        """Unembedding matrix, shape ``(vocab, d_model)``."""
        return _get(model, self.lm_head).weight

    def get_final_norm(self, model: nn.Module) -> nn.Module:
        return _get(model, self.final_norm)

    def all_norms(self, model: nn.Module) -> list[nn.Module]:
        """Every normalisation module the residual stream passes through, final norm included."""
        mods = [_get(layer, n) for layer in self.get_layers(model) for n in self.norms]
        return [*mods, self.get_final_norm(model)]

    def norm_scale(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The norm's data-dependent factor on input ``x`` ``(..., D)``: ``(..., 1)``.

        ``1 / sqrt(mean(x^2) + eps)`` for RMSNorms, ``1 / sqrt(var(x) + eps)`` for LayerNorm;
        computed in at least float32, like the Hugging Face modules do.
        """
        xc = x.to(_compute_dtype(x.dtype))
        if self.norm_kind == "layernorm":
            var = xc.var(-1, keepdim=True, unbiased=False)
        else:
            var = xc.pow(2).mean(-1, keepdim=True)
        return torch.rsqrt(var + _norm_eps(norm))

    def frozen_norm(self, norm: nn.Module, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The norm's output on ``x`` ``(..., D)`` with its factor fixed to ``scale`` ``(..., 1)``.

        Linear in ``x``: with ``scale = norm_scale(norm, x)`` it equals ``norm(x)`` up to float
        rounding. The dtype order follows each family's module (see ``NORM_KINDS``).
        """
        xc = x.to(_compute_dtype(x.dtype))
        if self.norm_kind == "rms":  # Llama/Qwen: cast back before the weight
            return norm.weight * (xc * scale).to(x.dtype)
        if self.norm_kind == "rms_one_plus":  # Gemma: weight stored as an offset from 1
            return ((xc * scale) * (1.0 + norm.weight.to(xc.dtype))).to(x.dtype)
        if self.norm_kind == "layernorm":  # mean-centring is linear, so it stays live
            centred = xc - xc.mean(-1, keepdim=True)
            out = centred * scale
            if norm.weight is not None:
                out = out * norm.weight.to(xc.dtype)
            if norm.bias is not None:
                out = out + norm.bias.to(xc.dtype)
            return out.to(x.dtype)
        raise ValueError(f"Unknown norm_kind {self.norm_kind!r}; expected one of {NORM_KINDS}.")


NORM_KINDS = ("rms", "rms_one_plus", "layernorm")
"""``rms``: ``w * (x * r)`` (Llama, Qwen); ``rms_one_plus``: ``(1 + w) * x * r`` (Gemma);
``layernorm``: ``w * (x - mean(x)) * r + b`` (GPT-2)."""


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Norms compute in float32 for half-precision inputs, in float64 for float64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def _norm_eps(norm: nn.Module) -> float:
    for name in ("variance_epsilon", "eps", "epsilon"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    raise ValueError(f"Cannot find the epsilon of norm module {type(norm).__name__}.")


_DECODER_LLAMA = dict(
    layers="model.layers",
    final_norm="model.norm",
    lm_head="lm_head",
    mlp_in_norm="post_attention_layernorm",
    mlp_out="mlp",
    attn="self_attn",
    norms=("input_layernorm", "post_attention_layernorm"),
)

ADAPTERS: dict[str, Adapter] = {
    "llama": Adapter(family="llama", **_DECODER_LLAMA),
    "qwen3": Adapter(family="qwen3", **_DECODER_LLAMA),
    "qwen2": Adapter(family="qwen2", **_DECODER_LLAMA),
    "gemma2": Adapter(
        family="gemma2",
        layers="model.layers",
        final_norm="model.norm",
        lm_head="lm_head",
        mlp_in_norm="pre_feedforward_layernorm",
        mlp_out="post_feedforward_layernorm",
        attn="self_attn",
        norms=(
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ),
        final_logit_softcap=True,
        norm_kind="rms_one_plus",
        mlp_inner="mlp",
    ),
    "gpt2": Adapter(
        family="gpt2",
        layers="transformer.h",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        mlp_in_norm="ln_2",
        mlp_out="mlp",
        attn="attn",
        norms=("ln_1", "ln_2"),
        norm_kind="layernorm",
    ),
}


_LAYER_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_resid_mid|hook_mlp_out)$")


def hook_site(
    model: nn.Module, name: str, adapter: Adapter | None = None
) -> tuple[nn.Module, bool]:
    """The module behind hook point ``name`` and whether the point is its output (else its
    first input); raises on names the model does not have."""
    adapter = adapter or get_adapter(model)
    if name == "hook_embed":
        return adapter.get_layers(model)[0], False
    if name in ("ln_final.hook_in", "ln_final.hook_normalized"):
        return adapter.get_final_norm(model), name.endswith("normalized")
    match = _LAYER_HOOK.match(name)
    n_layers = adapter.n_layers(model)
    if match is None or int(match[1]) >= n_layers:
        raise ValueError(
            f"Unknown hook point {name!r}; expected hook_embed, blocks.{{l}}.hook_resid_mid or "
            f"blocks.{{l}}.hook_mlp_out (l < {n_layers}), ln_final.hook_in or "
            "ln_final.hook_normalized."
        )
    layer = int(match[1])
    if match[2] == "hook_resid_mid":
        return adapter.layer_module(model, layer, adapter.mlp_in_norm), False
    return adapter.layer_module(model, layer, adapter.mlp_out), True


@contextmanager
def hooks(
    model: nn.Module, fns: Mapping[str, HookFn], adapter: Adapter | None = None
) -> Iterator[None]:
    """Within the block, ``fns[name]`` sees (and may replace) the activation at each named hook
    point (see the module docstring), in every forward pass; the hooks go on exit."""
    adapter = adapter or get_adapter(model)
    with ExitStack() as stack:
        for name, fn in fns.items():
            module, is_output = hook_site(model, name, adapter)
            stack.enter_context((hook_output if is_output else hook_input)(module, fn))
        yield


@contextmanager
def hook_input(module: nn.Module, fn: HookFn) -> Iterator[None]:
    """Within the block, ``fn`` sees (and may replace) ``module``'s first input."""

    def hook(_module, args, kwargs):
        key = None if args else "hidden_states" if "hidden_states" in kwargs else next(iter(kwargs))
        new = fn(args[0] if args else kwargs[key])
        if new is None:
            return None
        if args:
            return (new, *args[1:]), kwargs
        return args, {**kwargs, key: new}

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def hook_output(module: nn.Module, fn: HookFn) -> Iterator[None]:
    """Within the block, ``fn`` sees (and may replace) ``module``'s output (the first element
    of a tuple output)."""

    def hook(_module, _args, output):
        is_tuple = isinstance(output, tuple)
        new = fn(output[0] if is_tuple else output)
        if new is None:
            return None
        return (new, *output[1:]) if is_tuple else new

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def replace_forward(module: nn.Module, fn: Callable) -> Iterator[None]:
    """Within the block, ``module(...)`` calls ``fn`` instead of its ``forward`` (hooks still
    run); nested replacements unwind in order."""
    had_own = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = fn
    try:
        yield
    finally:
        if had_own:
            module.forward = old
        else:
            del module.forward


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model`` (chosen by ``config.model_type``)."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ADAPTERS:
        raise ValueError(
            f"Unsupported architecture {model_type!r}; supported: {sorted(ADAPTERS)}. "
            "Add an Adapter to llmbio.adapters.ADAPTERS to support it."
        )
    return ADAPTERS[model_type]


def _get(obj: nn.Module, path: str) -> nn.Module:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj
