"""Stages of a run on a released model (config ``pretrained:``): trace and faithfulness.

The organism's stages read ``results/<run>/model`` and ``transcoder/clt``; these read the
downloaded directories of :mod:`llmbio.pretrained` and place the model and the transcoder on the
config's device (a GPU when there is one), in its dtype, with decoders offloaded when asked.
Prompts default to the paper's wording of every study for the run's prompt family.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from llmbio.attribution.outputs import trace_prompts
from llmbio.config import RunConfig
from llmbio.devices import peak_memory_mb, reset_peak_memory
from llmbio.pretrained import load_pretrained
from llmbio.stages.attribution import faithfulness_graphs, graph_scan
from llmbio.studies import discover_studies, load_study


def family_prompts(family: str, studies_root: str | Path = "studies") -> list[str]:
    """Every study's prompts for ``family``, in study order, without repeats."""
    texts: list[str] = []
    for name in discover_studies(studies_root):
        study = load_study(Path(studies_root) / name)
        texts += [p.text for p in (study.prompts or {}).get(family, ())]
    return list(dict.fromkeys(texts))


def trace_pretrained_stage(
    cfg: RunConfig, out_dir: str | Path, studies_root: str | Path = "studies"
) -> pd.DataFrame:
    """Trace ``trace.prompts`` (default: the family's study prompts) into ``out_dir``."""
    if cfg.pretrained is None:
        raise ValueError("trace_pretrained_stage needs a config with a 'pretrained' section")
    torch.set_num_threads(cfg.trace.threads)
    prompts = list(cfg.trace.prompts) or family_prompts(cfg.family, studies_root)
    if not prompts:
        raise ValueError(f"no prompts: set trace.prompts or add {cfg.family} prompts to a study")
    model, tokenizer, clt = load_pretrained(cfg.pretrained)
    device = next(model.parameters()).device
    print(f"{cfg.pretrained.model} on {device} ({cfg.pretrained.dtype}), {len(prompts)} prompts")
    reset_peak_memory(device)
    scores = trace_prompts(
        model,
        clt,
        tokenizer,
        prompts,
        out_dir,
        max_feature_nodes=cfg.trace.max_feature_nodes,
        batch_size=cfg.trace.batch_size,
        scan=graph_scan(cfg),
    )
    scores["device"] = str(device)
    scores["peak_gpu_mb"] = peak_memory_mb(device)
    scores.to_parquet(Path(out_dir) / "scores.parquet", index=False)
    print(f"peak GPU memory {peak_memory_mb(device):.0f} MiB")
    return scores


def faithfulness_pretrained_stage(
    cfg: RunConfig, graphs_dir, out_table, out_figure, n_features: int = 50
) -> pd.DataFrame:
    """Predicted vs real ablation effects for every traced graph of a released model."""
    torch.set_num_threads(cfg.trace.threads)
    model, _, clt = load_pretrained(cfg.pretrained)
    return faithfulness_graphs(model, clt, graphs_dir, out_table, out_figure, n_features)
