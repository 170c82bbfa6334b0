"""Saving and loading transcoders in circuit-tracer's on-disk layouts.

Cross-layer transcoder (``L`` layers, ``F`` features per layer, ``D = d_model``)::

    W_enc_{i}.safetensors   W_enc_{i} (F, D), b_enc_{i} (F), b_dec_{i} (D), threshold_{i} (F)
    W_dec_{i}.safetensors   W_dec_{i} (F, L - i, D)
    config.yaml             model_kind: cross_layer_transcoder, feature_input_hook, ...

Per-layer transcoder (circuit-tracer's ``transcoder_set`` cache layout)::

    layer_{i}.safetensors   W_enc (F, D), W_dec (F, D), b_enc (F), b_dec (D),
                            activation_function.threshold (F)
    config.yaml             model_kind: transcoder_set, ...

``load_transcoder`` also reads per-layer files as released elsewhere: GemmaScope ``.npz``
(``W_enc`` stored ``(D, F)``, ``threshold``) and GemmaScope-2 safetensors (``w_enc (D, F)``,
``w_dec``, ``threshold``), found as ``layer_{i}.*`` or listed under ``transcoders:`` in
``config.yaml`` (local paths, relative to the directory). A missing threshold means ReLU.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from llmbio.adapters import get_adapter
from llmbio.transcoder import released
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.released import input_mode

_HOOKS = {"feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out"}
_UNSUPPORTED = ("W_skip", "affine_skip_connection")  # in a CLT


def save_transcoder(
    clt: CrossLayerTranscoder, directory: str | Path, model_name: str | None = None
) -> Path:
    """Write ``clt`` to ``directory`` (replacing it) in circuit-tracer's layout, atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_weights(clt, tmp)
        kind = "cross_layer_transcoder" if clt.cross_layer else "transcoder_set"
        config = {"model_kind": kind, **_HOOKS, "model_name": model_name or ""}
        config["llmbio"] = {"n_layers": clt.n_layers, "d_model": clt.d_model}
        config["llmbio"]["n_features"] = clt.n_features
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _write_weights(clt: CrossLayerTranscoder, directory: Path) -> None:
    def cpu(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to("cpu").contiguous()

    for i in range(clt.n_layers):
        if clt.cross_layer:
            enc = {f"W_enc_{i}": clt.W_enc[i], f"b_enc_{i}": clt.b_enc[i]}
            enc |= {f"b_dec_{i}": clt.b_dec[i], f"threshold_{i}": clt.threshold[i]}
            save_file(
                {k: cpu(v) for k, v in enc.items()}, str(directory / f"W_enc_{i}.safetensors")
            )
            dec = {f"W_dec_{i}": cpu(clt.W_dec[i])}
            save_file(dec, str(directory / f"W_dec_{i}.safetensors"))
        else:
            tensors = {"W_enc": clt.W_enc[i], "W_dec": clt.W_dec[i][:, 0], "b_enc": clt.b_enc[i]}
            tensors |= {"b_dec": clt.b_dec[i], "activation_function.threshold": clt.threshold[i]}
            tensors = {k: cpu(v) for k, v in tensors.items()}
            save_file(tensors, str(directory / f"layer_{i}.safetensors"))


def load_transcoder(
    directory: str | Path,
    model: nn.Module | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    offload_decoders: bool = False,
) -> CrossLayerTranscoder:
    """Load a CLT or per-layer transcoder directory (layout detected from its files).

    Each layer is converted to ``dtype`` and moved as it is read, so a float32 release never
    sits whole in memory. ``offload_decoders`` keeps the decoders in host memory (the 426k
    Gemma CLT's are 26 GB in bfloat16); only the rows of active features travel to ``device``.
    The input hook of config.yaml is honoured (see :mod:`llmbio.transcoder.released`). When
    ``model`` is given, its layer count and ``d_model`` must match the transcoder's.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"transcoder directory {directory} does not exist")
    config = read_config(directory)
    mode = input_mode(config, directory)  # before reading weights: a bad config fails at once
    if model is not None:
        released.check_output_hook(config, model, directory)
    elif mode == "mlp_in":
        raise ValueError(f"{directory}: reads mlp.hook_in; pass the model to fold its norm gains")
    dec_device = "cpu" if offload_decoders else device

    def place(t: torch.Tensor, decoder: bool = False) -> torch.Tensor:
        return t.to(device=dec_device if decoder else device, dtype=dtype)

    if _numbered(directory, "W_enc", ("safetensors",)):
        state, cross_layer = _read_clt(directory, place), True
    else:
        state, cross_layer = _read_per_layer(directory, place), False
    if config.get("activation") == "relu":  # circuit-tracer then ignores stored thresholds
        state["threshold"] = torch.zeros_like(state["threshold"])
    n_layers, n_features, d_model = state["W_enc"].shape
    eps = released.norm_eps(model) if model is not None else released.DEFAULT_EPS
    with torch.device("meta"):
        clt = CrossLayerTranscoder(
            n_layers,
            d_model,
            n_features,
            cross_layer,
            skip="W_skip" in state,
            input_norm_eps=None if mode == "raw" else eps,
        )
    clt.load_state_dict(state, assign=True)
    if model is not None:
        check_compatible(clt, model, directory)
    if mode == "mlp_in":
        released.fold_input_gain(clt, model)
    return clt


def check_compatible(clt: CrossLayerTranscoder, model: nn.Module, where: object = "") -> None:
    """Raise if ``clt`` was not made for ``model`` (different layer count or ``d_model``)."""
    adapter = get_adapter(model)
    n_layers, d_model = adapter.n_layers(model), adapter.d_model(model)
    if (clt.n_layers, clt.d_model) != (n_layers, d_model):
        raise ValueError(
            f"transcoder {where} has n_layers={clt.n_layers}, d_model={clt.d_model} but the "
            f"{model.config.model_type} model has n_layers={n_layers}, d_model={d_model}; "
            "use a transcoder trained on this model"
        )


def _numbered(directory: Path, prefix: str, suffixes: tuple[str, ...]) -> list[Path]:
    """Files ``{prefix}_{i}.{suffix}`` ordered by ``i``; raises if the numbers have gaps."""
    pattern = re.compile(rf"{prefix}_(\d+)\.({'|'.join(suffixes)})")
    found = {int(m.group(1)): p for p in directory.iterdir() if (m := pattern.fullmatch(p.name))}
    if found and sorted(found) != list(range(len(found))):
        missing = sorted(set(range(max(found) + 1)) - set(found))
        raise FileNotFoundError(f"{directory}: missing {prefix} files for layers {missing}")
    return [found[i] for i in sorted(found)]


def read_config(directory: Path) -> dict:
    path = directory / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def _read_clt(directory: Path, place) -> dict[str, torch.Tensor]:
    """CLT state dict (``W_dec.{i}`` ``(F, L - i, D)``) from circuit-tracer's CLT layout."""
    enc_files = _numbered(directory, "W_enc", ("safetensors",))
    n_layers = len(enc_files)
    layers = []
    for i, path in enumerate(enc_files):
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            if any(k.startswith(_UNSUPPORTED) for k in keys):
                raise ValueError(f"{path}: CLTs with skip connections are not supported")
            t = {k: place(f.get_tensor(f"{k}_{i}")) for k in ("W_enc", "b_enc", "b_dec")}
            has_threshold = f"threshold_{i}" in keys
            t["threshold"] = place(f.get_tensor(f"threshold_{i}")) if has_threshold else None
        dec_path = directory / f"W_dec_{i}.safetensors"
        if not dec_path.is_file():
            raise FileNotFoundError(f"{dec_path} is missing (every W_enc_i needs its W_dec_i)")
        with safe_open(str(dec_path), framework="pt") as f:
            t["W_dec"] = place(f.get_tensor(f"W_dec_{i}"), decoder=True)
        n_features, d_model = t["W_enc"].shape
        expected = (n_features, n_layers - i, d_model)
        if tuple(t["W_dec"].shape) != expected:
            raise ValueError(
                f"{dec_path}: W_dec_{i} has shape {tuple(t['W_dec'].shape)}, expected {expected}"
            )
        layers.append(t)
    return _stack(layers, directory)


def _read_per_layer(directory: Path, place) -> dict[str, torch.Tensor]:
    paths = _numbered(directory, "layer", ("safetensors", "npz")) or _config_paths(directory)
    if not paths:
        raise FileNotFoundError(
            f"{directory} holds no transcoder: expected W_enc_{{i}}.safetensors (CLT), "
            "layer_{i}.safetensors / layer_{i}.npz, or a config.yaml listing 'transcoders'"
        )
    return _stack([_read_layer_file(p, place) for p in paths], directory)


def _config_paths(directory: Path) -> list[Path]:
    """Files listed under ``transcoders:``: local paths, or ``hf://`` ones as downloaded."""
    listed = read_config(directory).get("transcoders") or []
    paths = [released.hf_uri_path(directory, p) if "://" in p else directory / p for p in listed]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory}/config.yaml lists {len(missing)} files that are not there "
            f"({missing[0]}, ...); run the download_transcoder rule (llmbio.pretrained)"
        )
    return paths


def _read_layer_file(path: Path, place) -> dict[str, torch.Tensor | None]:
    """One per-layer transcoder file -> W_enc (F, D), W_dec (F, D), b_enc, b_dec, threshold,
    and W_skip (D, D) when it has a skip path."""
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            raw = {k: torch.from_numpy(f[k]) for k in f.files}
    else:
        with safe_open(str(path), framework="pt") as f:
            raw = {k: f.get_tensor(k) for k in f.keys()}
    if "affine_skip_connection" in raw:
        raise ValueError(f"{path}: GemmaScope-2 affine skip connections are not supported")
    # GemmaScope (.npz) and GemmaScope-2 (lower-case keys) store encoders as (D, F)
    lower = "w_enc" in raw
    enc_transposed = lower or path.suffix == ".npz"
    b_enc, b_dec = raw["b_enc"], raw["b_dec"]
    threshold = next(
        (raw[k] for k in ("activation_function.threshold", "threshold") if k in raw), None
    )
    if "log_threshold" in raw:
        threshold = raw["log_threshold"].exp()
    shape = (len(b_enc), len(b_dec))
    out = {
        "W_enc": place(_orient(raw["w_enc" if lower else "W_enc"], shape, enc_transposed, path)),
        "W_dec": place(_orient(raw["w_dec" if lower else "W_dec"], shape, False, path), True),
        "b_enc": place(b_enc),
        "b_dec": place(b_dec),
        "threshold": None if threshold is None else place(threshold),
    }
    if "W_skip" in raw:  # circuit-tracer: skip = input @ W_skip.T, W_skip (D_out, D_in)
        out["W_skip"] = place(raw["W_skip"])
    return out


def _orient(w: torch.Tensor, shape: tuple[int, int], transposed: bool, path: Path) -> torch.Tensor:
    """``w`` as ``(F, D)``: the file's convention decides when ``F == D``."""
    if tuple(w.shape) == shape[::-1] and (transposed or shape[0] != shape[1]):
        return w.T.contiguous()
    if tuple(w.shape) != shape:
        raise ValueError(
            f"{path}: weight of shape {tuple(w.shape)} fits neither (F, D) = {shape} nor (D, F)"
        )
    return w


def _stack(layers: list[dict], directory: Path) -> dict[str, torch.Tensor]:
    """Per-layer tensors (already in their dtype and device) -> a CLT state dict."""
    widths = {tuple(t["W_enc"].shape) for t in layers}
    if len(widths) != 1:
        raise ValueError(f"{directory}: layers differ in (n_features, d_model): {sorted(widths)}")
    skips = sum("W_skip" in t for t in layers)
    if skips not in (0, len(layers)):
        raise ValueError(f"{directory}: only {skips} of {len(layers)} layers have W_skip")
    for t in layers:
        if t["threshold"] is None:  # a ReLU transcoder is a JumpReLU with threshold 0
            t["threshold"] = torch.zeros_like(t["b_enc"])
    keys = ("W_enc", "b_enc", "threshold", "b_dec") + (("W_skip",) if skips else ())
    state = {}
    for k in keys:
        state[k] = torch.stack([t.pop(k) for t in layers])  # pop: free each part once copied
    for i, t in enumerate(layers):
        w = t["W_dec"]
        state[f"W_dec.{i}"] = w if w.dim() == 3 else w.unsqueeze(1)
    return state
