"""Stage: the feature atlas of the run's CLT, and (organism) its ground-truth labels.

Writes ``results/<run>/features/``: ``features.parquet``, ``examples.parquet``,
``logits.parquet`` (see :mod:`llmbio.features.atlas`) and ``labels.parquet``,
``label_scores.parquet`` (see :mod:`llmbio.features.labels`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from llmbio import artefacts
from llmbio.activations import ActivationReader
from llmbio.features.atlas import build_atlas, save_atlas
from llmbio.features.labels import build_labels, save_labels
from llmbio.world import World


def features_stage(
    cache_dir, model_dir, transcoder_dir, world_path, out_dir, threads: int = 2
) -> None:
    torch.set_num_threads(threads)
    model = artefacts.load_model(model_dir)
    tokenizer = artefacts.load_tokenizer(model_dir)
    clt = artefacts.load_transcoder(transcoder_dir, model=model)
    reader = ActivationReader(cache_dir)
    start = time.perf_counter()
    save_atlas(build_atlas(clt, reader, tokenizer, model=model), out_dir)
    print(f"feature atlas built in {time.perf_counter() - start:.1f} s")
    if world_path is not None and Path(world_path).exists():
        start = time.perf_counter()
        tables = build_labels(clt, reader, World.load(world_path), tokenizer)
        save_labels(tables, out_dir)
        print(f"ground-truth labels scored in {time.perf_counter() - start:.1f} s")
        labels = tables["labels"]
        print(labels.sort_values("f1", ascending=False).head(20).to_string(index=False))
