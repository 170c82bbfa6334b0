"""Stages of the model organism: world -> corpus -> tokenizer -> model -> behaviour.

torch, transformers and the plotting libraries are imported inside the stages that use them:
importing them takes ~9 s on the 2-core machine, and the world, corpus and tokenizer stages,
which run one after another at the start of the pipeline, need none of them (or only the
tokenizer's part of transformers).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from llmbio.config import RunConfig
from llmbio.world import World, build_world

if TYPE_CHECKING:
    import pandas as pd


def world_stage(cfg: RunConfig, out: str | Path) -> None:
    build_world(cfg.world).save(out)
    print(f"world written to {out}")


def corpus_stage(cfg: RunConfig, world_path: str | Path, out: str | Path) -> None:
    from llmbio.corpus import build_corpus, save_corpus

    world = World.load(world_path)
    df = build_corpus(world, cfg.corpus)
    save_corpus(df, out)
    print(f"{len(df)} documents written to {out}; share per task:")
    print(df["task"].value_counts(normalize=True).round(3).to_string())


def tokenizer_stage(corpus_path: str | Path, world_path: str | Path, out_dir: str | Path) -> None:
    """Vocabulary from the corpus *and* every evaluation prompt, so held-out prompts encode."""
    from llmbio.corpus import load_corpus
    from llmbio.tokenizer import build_tokenizer

    world, corpus = World.load(world_path), load_corpus(corpus_path)
    texts = [*corpus["text"], *(it["prompt"] for it in world.eval_items())]
    tok = build_tokenizer(texts, max_number=2 * world.arithmetic.max_operand)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.replace(out_dir)
    print(f"vocabulary of {len(tok)} tokens written to {out_dir}")


def train_stage(
    cfg: RunConfig, corpus_path, tokenizer_dir, model_dir, curve_path, checkpoint_dir
) -> None:
    from llmbio import artefacts
    from llmbio.corpus import load_corpus, packed_sequences
    from llmbio.devices import pick_training_device
    from llmbio.numerics import describe_cpu_kernels
    from llmbio.organism import build_model, save_model, train_model

    device = pick_training_device(cfg.train.device)  # before any work: a missing GPU fails at once
    tok = artefacts.load_tokenizer(tokenizer_dir, "tokenizer")
    corpus = load_corpus(corpus_path)
    seqs = packed_sequences(tok, corpus["text"], cfg.train.seq_len)
    model = build_model(cfg.model, tok, cfg.train.seed).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"training {n_params / 1e6:.2f}M parameters on {seqs.numel() / 1e6:.1f}M packed tokens "
        f"({device})"
    )
    print(describe_cpu_kernels(), f"(cpu_kernels: {cfg.cpu_kernels})")
    t0 = time.perf_counter()
    curve = train_model(model, seqs, cfg.train, checkpoint_dir, fingerprint=_fingerprint(cfg))
    print(
        f"training took {time.perf_counter() - t0:.0f} s this session "
        f"({curve['seconds'].iloc[-1]:.0f} s in total); final loss {curve['loss'].iloc[-1]:.3f}"
    )
    save_model(model.cpu(), tok, model_dir)
    curve.to_parquet(curve_path, index=False)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)


def _fingerprint(cfg: RunConfig) -> dict:
    """What a checkpoint must match to be resumed."""
    return {
        "world": cfg.world.to_dict(),
        "corpus": repr(cfg.corpus),
        "model": repr(cfg.model),
        "train": repr(cfg.train),
        "cpu_kernels": cfg.cpu_kernels,
    }


def behaviour_stage(
    cfg: RunConfig, world_path, model_dir, out_summary, out_items, out_figure
) -> pd.DataFrame:
    import torch

    from llmbio import artefacts
    from llmbio.behaviour import evaluate_behaviour, plot_behaviour, summarise
    from llmbio.figures import draw_figure

    torch.set_num_threads(cfg.trace.threads)
    world = World.load(world_path)
    model = artefacts.load_model(model_dir)
    tok = artefacts.load_tokenizer(model_dir)
    items = evaluate_behaviour(model, tok, world, cfg.eval.n_seen_addition, cfg.eval.max_new_tokens)
    summary = summarise(items)
    items.to_parquet(out_items, index=False)
    summary.to_parquet(out_summary, index=False)
    draw_figure(plot_behaviour, out_figure, [out_summary])
    print(summary.to_string(index=False))
    return summary
