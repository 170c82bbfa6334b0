"""Released models and transcoder sets: where they are downloaded, and how they are loaded.

A run config with a ``pretrained:`` section (config/gemma-2-2b.yaml, ...) names a Hugging Face
model and a released transcoder repo in circuit-tracer's layouts. :func:`download_model` and
:func:`download_transcoder` are the only functions of llmbio that use the network; the Snakemake
rules ``download_model`` / ``download_transcoder`` call them. They write plain directories::

    resources/huggingface/<owner>--<name>/          # the snapshot (safetensors, config, tokenizer)
    resources/huggingface/<owner>--<name>/hf/<owner>--<name>/<path>
        # files a transcoder config.yaml lists as hf://<owner>/<name>/<path> (GemmaScope PLTs)

Only safetensors, NumPy ``.npz`` (read without pickle) and YAML/JSON/tokenizer files are fetched;
``trust_remote_code`` stays off unless the config asks for it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from llmbio.config import PretrainedConfig
from llmbio.devices import pick_device, pick_dtype
from llmbio.transcoder.released import HF_PREFIX, parse_hf_uri

MODEL_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
TRANSCODER_FILES = ["config.yaml", "*.safetensors", "*.npz"]  # not features/*.bin (dashboards)


def repo_dir(cfg: PretrainedConfig, repo: str) -> Path:
    """``<cache_dir>/<owner>--<name>``: one flat directory per downloaded repo."""
    return Path(cfg.cache_dir) / repo.replace("/", "--")


def model_dir(cfg: PretrainedConfig) -> Path:
    return repo_dir(cfg, cfg.model)


def transcoder_dir(cfg: PretrainedConfig) -> Path:
    return repo_dir(cfg, cfg.transcoder)


def download_model(cfg: PretrainedConfig, out_dir: str | Path) -> Path:
    """NETWORK: snapshot the model repo (weights, config, tokenizer) into ``out_dir``."""
    from huggingface_hub import snapshot_download

    snapshot_download(
        cfg.model, revision=cfg.model_revision, local_dir=out_dir, allow_patterns=MODEL_FILES
    )
    return Path(out_dir)


def download_transcoder(cfg: PretrainedConfig, out_dir: str | Path) -> Path:
    """NETWORK: snapshot the transcoder repo, then every ``hf://`` file its config.yaml lists."""
    from huggingface_hub import hf_hub_download, snapshot_download

    out_dir = Path(out_dir)
    snapshot_download(
        cfg.transcoder,
        revision=cfg.transcoder_revision,
        local_dir=out_dir,
        allow_patterns=TRANSCODER_FILES,
    )
    for uri in listed_transcoders(out_dir):
        if not uri.startswith(HF_PREFIX):
            continue
        repo, path, revision = parse_hf_uri(uri)
        local = out_dir / "hf" / repo.replace("/", "--")
        hf_hub_download(repo, path, revision=revision, local_dir=local)
    return out_dir


def listed_transcoders(directory: str | Path) -> list[str]:
    """The ``transcoders:`` list of a transcoder directory's config.yaml (empty if none)."""
    path = Path(directory) / "config.yaml"
    if not path.is_file():
        return []
    return list((yaml.safe_load(path.read_text()) or {}).get("transcoders") or [])


def load_pretrained(cfg: PretrainedConfig, device: str | torch.device | None = None):
    """``(model, tokenizer, transcoder)`` of a run config, on its device and in its dtype.

    Reads only the downloaded directories (no network). The tokenizer gets a BOS token when
    it has none (Qwen): position 0 is left out of every graph, as in circuit-tracer.
    """
    from transformers import AutoTokenizer

    from llmbio import artefacts

    device = pick_device(cfg.device) if device is None else torch.device(device)
    dtype = pick_dtype(cfg.dtype, device)
    path = model_dir(cfg)
    model = artefacts.load_model(
        path, "download_model", dtype=dtype, trust_remote_code=cfg.trust_remote_code
    )
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token or tokenizer.pad_token
    clt = artefacts.load_transcoder(
        transcoder_dir(cfg),
        "download_transcoder",
        model=model,
        dtype=dtype,
        device=device,
        offload_decoders=cfg.offload_decoders,
    )
    return model, tokenizer, clt
