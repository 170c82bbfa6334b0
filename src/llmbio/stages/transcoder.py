"""Stages of the transcoder: activation cache -> CLT (and PLT) training -> evaluation.

Outputs under ``results/<run>/``: ``activations/`` (the cache, see :mod:`llmbio.activations`),
``transcoder/clt/`` and ``transcoder/plt/`` (circuit-tracer on-disk layouts),
``transcoder/{clt,plt}_train_log.parquet``, ``transcoder/eval.parquet`` (see
:mod:`llmbio.transcoder.evaluate`; an extra column ``data`` says which text was evaluated).
Training works in ``results/<run>/.checkpoints/<name>/`` and resumes from there.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from llmbio import artefacts
from llmbio.activations import ActivationReader, cache_activations
from llmbio.config import RunConfig
from llmbio.corpus import build_corpus, load_corpus, packed_sequences
from llmbio.devices import pick_training_device
from llmbio.figures import draw_figure
from llmbio.tokenizer import encode
from llmbio.transcoder.evaluate import evaluate_transcoder, plot_transcoder_eval
from llmbio.transcoder.io import save_transcoder
from llmbio.transcoder.train import train_transcoder
from llmbio.world import World


def transcoder_device(cfg: RunConfig) -> torch.device:
    """The device of the activation cache and the transcoders (``train.transcoder_device``,
    else ``train.device``); a wrong name is reported under the key that set it."""
    key = "train.transcoder_device" if cfg.train.transcoder_device else "train.device"
    return pick_training_device(cfg.train.transcoder_device_name, key)


def cache_sequences(corpus: pd.DataFrame, tokenizer, cfg: RunConfig) -> torch.Tensor:
    """The packed sequences ``(cache.n_sequences, seq_len)`` whose activations are cached.

    A seeded random choice of the corpus packed as in training, plus, for each task of
    ``cache.task_sequences``, its share of sequences packed from that task's documents only.
    """
    gen = torch.Generator().manual_seed(cfg.cache.seed)
    shares = cfg.cache.task_sequences
    n_task = {task: round(share * cfg.cache.n_sequences) for task, share in shares.items()}
    tasks = sorted(set(corpus["task"]))
    unknown = sorted(set(n_task) - set(tasks))
    if unknown or sum(n_task.values()) >= cfg.cache.n_sequences:
        raise ValueError(
            f"cache.task_sequences {dict(shares)}: use corpus tasks ({tasks}; unknown: "
            f"{unknown}) with shares that sum to less than 1"
        )
    parts = []
    for task, n in [("", cfg.cache.n_sequences - sum(n_task.values())), *n_task.items()]:
        texts = corpus["text"] if not task else corpus.loc[corpus["task"] == task, "text"]
        seqs = packed_sequences(tokenizer, texts, cfg.train.seq_len)
        parts.append(seqs[torch.randperm(len(seqs), generator=gen)[:n]])
    picked = torch.cat(parts)
    if n_task:  # one seeded shuffle, so that the evaluation split holds every kind of sequence
        picked = picked[torch.randperm(len(picked), generator=gen)]
    return picked


def cache_stage(cfg: RunConfig, corpus_path, model_dir, out_dir) -> None:
    torch.set_num_threads(cfg.trace.threads)  # an analysis job's: its rule runs beside one
    device = transcoder_device(cfg)
    picked = cache_sequences(load_corpus(corpus_path), artefacts.load_tokenizer(model_dir), cfg)
    model = artefacts.load_model(model_dir).to(device)
    start = time.perf_counter()
    cache_activations(
        model,
        picked.split(64),
        out_dir,
        dtype=cfg.cache.dtype,
        eval_fraction=cfg.cache.eval_fraction,
        overwrite=True,
    )
    size = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    print(
        f"cached {len(picked)} sequences in {time.perf_counter() - start:.1f} s, "
        f"{size / 2**20:.0f} MiB on disk"
    )


def train_stage(
    cfg: RunConfig,
    cache_dir,
    out_dir,
    log_path,
    work_dir,
    cross_layer: bool = True,
) -> None:
    # the CLT gates everything downstream and gets the training threads; the PLT, only compared
    # with it, gets an analysis job's (its rule runs beside the studies). From the config, not
    # --cores: the thread count changes float rounding, and one config must give one transcoder
    torch.set_num_threads(cfg.train.threads if cross_layer else cfg.trace.threads)
    tc = dataclasses.replace(cfg.transcoder, cross_layer=cross_layer)
    start = time.perf_counter()
    device = transcoder_device(cfg)
    clt = train_transcoder(ActivationReader(cache_dir), tc, work_dir, device=device)
    print(
        f"trained {'CLT' if cross_layer else 'PLT'} ({clt.n_layers} x {clt.n_features} "
        f"features) in {time.perf_counter() - start:.1f} s on {device}"
    )
    save_transcoder(clt, out_dir)
    shutil.copy(Path(work_dir) / "train_log.parquet", log_path)
    shutil.rmtree(work_dir, ignore_errors=True)


def _eval_text(cfg: RunConfig, world: World, tok) -> torch.Tensor:
    """Fresh documents from the same world, sampled with a seed training never used."""
    corpus_cfg = dataclasses.replace(
        cfg.corpus, seed=cfg.corpus.seed + 7919, n_documents=cfg.transcoder_eval.n_eval_documents
    )
    docs = build_corpus(world, corpus_cfg, progress=False)
    return packed_sequences(tok, docs["text"], cfg.train.seq_len)


def evaluate_stage(
    cfg: RunConfig, cache_dir, model_dir, world_path, transcoder_dirs: dict, out_table, out_figure
) -> pd.DataFrame:
    torch.set_num_threads(cfg.trace.threads)
    # on the transcoders' device: with a GPU CLT of thousands of features the CPU would take
    # minutes here (the studies, after it, run on the CPU either way)
    device = transcoder_device(cfg)
    model = artefacts.load_model(model_dir).to(device)
    tok = artefacts.load_tokenizer(model_dir)
    world = World.load(world_path)
    reader = ActivationReader(cache_dir)
    held_out = _eval_text(cfg, world, tok).split(32)
    prompts = [torch.tensor([encode(tok, p)]) for p in world.showcase_prompts()]
    frames = []
    for name, path in transcoder_dirs.items():
        clt = artefacts.load_transcoder(path, model=model, device=device)
        df = evaluate_transcoder(clt, reader, model, held_out, name=name)
        frames.append(df.assign(data="heldout_text"))
        on_prompts = evaluate_transcoder(clt, reader, model, prompts, name=name)
        frames.append(on_prompts[on_prompts["scope"] == "model"].assign(data="study_prompts"))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(out_table, index=False)
    draw_figure(
        lambda t: plot_transcoder_eval(t[t["data"] == "heldout_text"]), out_figure, [out_table]
    )
    print(
        table.pivot_table(
            index=["transcoder", "data", "scope", "layer"],
            columns="metric",
            values="value",
        )
        .round(4)
        .to_string()
    )
    return table
