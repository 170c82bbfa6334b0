"""Released models and transcoder sets: where they are downloaded, and how they are loaded.

A run config with a ``pretrained:`` section (config/gemma-2-2b.yaml, ...) names a Hugging Face
model and a released transcoder repo in circuit-tracer's layouts. :func:`download_model` and
:func:`download_transcoder` are the only functions of llmbio that use the network; the Snakemake
rules ``download_model`` / ``download_transcoder`` call them. They write plain directories::

    resources/huggingface/<owner>--<name>/          # the snapshot (safetensors, config, tokenizer)
    resources/huggingface/<owner>--<name>/hf/<owner>--<name>/<path>
        # files a transcoder config.yaml lists as hf://<owner>/<name>/<path> (GemmaScope PLTs)

Only safetensors, NumPy ``.npz`` (read without pickle) and YAML/JSON/tokenizer files are fetched;
``trust_remote_code`` stays off unless the config asks for it. Gated models (Gemma-2, Llama-3.2)
need a Hugging Face token: ``hf auth login`` once, or ``HF_TOKEN`` in the environment.
``model_revision`` / ``transcoder_revision`` pin the commits downloaded; a branch name follows the
repo, and the download prints the commit it resolved to so that it can be pinned.
"""

from __future__ import annotations

import re
import warnings
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


COMMIT = re.compile(r"[0-9a-f]{40}")


def resolve_revision(repo: str, revision: str, key: str) -> str:
    """The commit to download: ``revision`` if pinned (40 hex digits), else (NETWORK) the commit
    the branch or tag points at now, printed with the config line that pins it."""
    if COMMIT.fullmatch(revision):
        print(f"{repo}: pinned commit {revision}")
        return revision
    from huggingface_hub import HfApi

    commit = HfApi().model_info(repo, revision=revision).sha or revision
    print(f"{repo}: {revision!r} is commit {commit}; to pin it, set {key}: {commit}")
    return commit


def download_model(cfg: PretrainedConfig, out_dir: str | Path) -> Path:
    """NETWORK: snapshot the model repo (weights, config, tokenizer) into ``out_dir``."""
    from huggingface_hub import snapshot_download

    revision = resolve_revision(cfg.model, cfg.model_revision, "pretrained.model_revision")
    snapshot_download(cfg.model, revision=revision, local_dir=out_dir, allow_patterns=MODEL_FILES)
    return Path(out_dir)


def download_transcoder(cfg: PretrainedConfig, out_dir: str | Path) -> Path:
    """NETWORK: snapshot the transcoder repo, then every ``hf://`` file its config.yaml lists."""
    from huggingface_hub import hf_hub_download, snapshot_download

    out_dir = Path(out_dir)
    key = "pretrained.transcoder_revision"
    revision = resolve_revision(cfg.transcoder, cfg.transcoder_revision, key)
    snapshot_download(
        cfg.transcoder, revision=revision, local_dir=out_dir, allow_patterns=TRANSCODER_FILES
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


def transcoder_scan(cfg: PretrainedConfig) -> str:
    """The transcoder set's id as circuit-tracer writes it into a graph's ``metadata.scan``:
    ``owner/name`` or ``owner/name@revision``. Its frontend fetches feature pages from that
    repo's ``features/`` folder at that revision."""
    revision = cfg.transcoder_revision
    return cfg.transcoder if revision == "main" else f"{cfg.transcoder}@{revision}"


def pretrained_device(cfg: PretrainedConfig) -> torch.device:
    """The config's device; ``auto`` without a GPU refuses (or warns, with ``allow_cpu``)."""
    device = pick_device(cfg.device)
    if cfg.device != "auto" or device.type != "cpu":
        return device
    message = (
        f"no GPU found (torch {torch.__version__}, CUDA unavailable): {cfg.model} would run on "
        "the CPU, hours per graph"
    )
    if not cfg.allow_cpu:
        raise RuntimeError(
            f"{message}; run on a machine with a GPU, or set pretrained.allow_cpu: true"
        )
    warnings.warn(f"{message} (pretrained.allow_cpu: true)", stacklevel=2)
    return device


def start_token(tokenizer) -> str | None:
    """The token put before every prompt when the tokenizer has no BOS (Qwen): pad, else eos,
    as circuit-tracer picks it (Qwen3: ``<|endoftext|>``, not the chat turn's ``<|im_end|>``)."""
    return tokenizer.bos_token or tokenizer.pad_token or tokenizer.eos_token


def load_pretrained(cfg: PretrainedConfig, device: str | torch.device | None = None):
    """``(model, tokenizer, transcoder)`` of a run config, on its device and in its dtype.

    Reads only the downloaded directories (no network). The tokenizer gets a BOS token when
    it has none (Qwen, :func:`start_token`): position 0 is left out of every graph, as in
    circuit-tracer.
    """
    from transformers import AutoTokenizer

    from llmbio import artefacts

    device = pretrained_device(cfg) if device is None else torch.device(device)
    dtype = pick_dtype(cfg.dtype, device)
    path = model_dir(cfg)
    model = artefacts.load_model(
        path, "download_model", dtype=dtype, trust_remote_code=cfg.trust_remote_code
    )
    model = model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code)
    tokenizer.bos_token = start_token(tokenizer)
    clt = artefacts.load_transcoder(
        transcoder_dir(cfg),
        "download_transcoder",
        model=model,
        dtype=dtype,
        device=device,
        offload_decoders=cfg.offload_decoders,
    )
    return model, tokenizer, clt
