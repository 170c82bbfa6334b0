"""What released transcoder sets need beyond llmbio's own layout: input hooks and hf:// paths.

circuit-tracer's ``config.yaml`` names the hook a transcoder reads (``feature_input_hook``) and
writes (``feature_output_hook``), in TransformerLens names. llmbio always reads
``blocks.{l}.hook_resid_mid`` (the input of the MLP's norm) and writes ``hook_mlp_out``; the other
inputs are functions of it that the replacement model can freeze:

=========================  =========  ================================================
feature_input_hook          mode       what the encoder reads, from ``x = hook_resid_mid``
=========================  =========  ================================================
``hook_resid_mid``          raw        ``x`` (llmbio, the Gemma and Llama CLTs, Llama PLTs)
``ln2.hook_normalized``     normalized ``x / rms(x)``: the norm before its gain (GemmaScope)
``mlp.hook_in``             mlp_in     ``gain * x / rms(x)`` (Qwen3 PLTs): gain folded into W_enc
=========================  =========  ================================================

``rms(x) = sqrt(mean(x^2) + eps)`` with the model's norm epsilon. ``hook_mlp_out`` is the MLP
block's contribution to the residual stream (for Gemma-2, after ``post_feedforward_layernorm``),
as in TransformerLens and in :mod:`llmbio.adapters`. ``mlp.hook_out`` (the MLP module's own
output, TransformerLens 3's name, written by the Llama-3.2-1B and Qwen3 releases) is the same
tensor wherever no norm follows the MLP; for Gemma-2 it is not, and :func:`check_output_hook`
refuses it.

Activations: ``activation: relu`` or none (JumpReLU when the files hold a threshold, else ReLU);
circuit-tracer's ``topk`` transcoders are refused.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmbio.adapters import get_adapter

HF_PREFIX = "hf://"
DEFAULT_EPS = 1e-6  # Gemma-2, Llama-3.2 and Qwen3 all use 1e-6 (used when no model is given)
INPUT_HOOKS = {
    "hook_resid_mid": "raw",
    "ln2.hook_normalized": "normalized",
    "mlp.hook_in": "mlp_in",
}
OUTPUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")
ACTIVATIONS = (None, "relu", "jumprelu")


def _hook_name(hook: str) -> str:
    """``blocks.{l}.ln2.hook_normalized`` -> ``ln2.hook_normalized``."""
    parts = hook.split(".")
    return ".".join(parts[2:]) if parts[0] == "blocks" and len(parts) > 2 else hook


def input_mode(config: dict, where: object = "") -> str:
    """``raw``, ``normalized`` or ``mlp_in`` (table above); raises on hooks llmbio cannot read."""
    hook = _hook_name(str(config.get("feature_input_hook", "hook_resid_mid")))
    out = _hook_name(str(config.get("feature_output_hook", "hook_mlp_out")))
    if hook not in INPUT_HOOKS:
        supported = sorted(INPUT_HOOKS)
        raise ValueError(f"{where}: feature_input_hook {hook!r} is not one of {supported}")
    if out not in OUTPUT_HOOKS:
        supported = list(OUTPUT_HOOKS)
        raise ValueError(f"{where}: feature_output_hook {out!r} is not one of {supported}")
    activation = config.get("activation")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{where}: activation {activation!r} is not supported (relu or JumpReLU); "
            "use a ReLU or JumpReLU transcoder set"
        )
    return INPUT_HOOKS[hook]


def check_output_hook(config: dict, model: nn.Module, where: object = "") -> None:
    """Raise if the transcoder writes ``mlp.hook_out`` on a model whose MLP a norm follows:
    there it is not the block's contribution to the residual stream that llmbio replaces."""
    out = _hook_name(str(config.get("feature_output_hook", "hook_mlp_out")))
    adapter = get_adapter(model)
    if out == "mlp.hook_out" and adapter.mlp_inner is not None:
        raise ValueError(
            f"{where}: feature_output_hook mlp.hook_out is the {adapter.family} MLP's output "
            f"before {adapter.mlp_out}; use a transcoder set that writes hook_mlp_out"
        )


def norm_eps(model: nn.Module) -> float:
    """Epsilon of layer 0's MLP input norm."""
    adapter = get_adapter(model)
    norm = adapter.layer_module(model, 0, adapter.mlp_in_norm)
    for name in ("variance_epsilon", "eps", "epsilon"):
        if hasattr(norm, name):
            return float(getattr(norm, name))
    return DEFAULT_EPS


@torch.no_grad()
def fold_input_gain(clt, model: nn.Module) -> None:
    """``mlp.hook_in`` transcoders: ``W_enc . (g * x_hat) = (W_enc * g) . x_hat``, per layer."""
    adapter = get_adapter(model)
    for layer in range(clt.n_layers):
        norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
        gain = norm.weight.to(clt.W_enc.device, torch.float32)
        if adapter.norm_kind == "rms_one_plus":
            gain = 1.0 + gain
        clt.W_enc[layer] = (clt.W_enc[layer].float() * gain).to(clt.W_enc.dtype)
        if clt.W_skip is not None:
            clt.W_skip[layer] = (clt.W_skip[layer].float() * gain).to(clt.W_skip.dtype)


def parse_hf_uri(uri: str) -> tuple[str, str, str | None]:
    """``hf://owner/name[@rev]/path[?revision=rev]`` -> (repo id, file path, revision)."""
    body, _, query = uri.removeprefix(HF_PREFIX).partition("?")
    owner, name, *rest = body.split("/")
    name, _, revision = name.partition("@")
    if query.startswith("revision="):
        revision = query.removeprefix("revision=")
    if not rest:
        raise ValueError(f"{uri}: expected hf://<owner>/<name>/<path to a file>")
    return f"{owner}/{name}", "/".join(rest), revision or None


def hf_uri_path(directory: str | Path, uri: str) -> Path:
    """Where the download rule puts the file of ``hf://owner/name/path``:
    ``<directory>/hf/<owner>--<name>/<path>``."""
    repo, path, _ = parse_hf_uri(uri)
    return Path(directory) / "hf" / repo.replace("/", "--") / path
