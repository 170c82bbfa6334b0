"""The training corpus: documents sampled from the world, and packed token sequences.

Layout of ``corpus.parquet``: one row per document, columns ``doc_id`` (int64, order of
sampling), ``task`` (the world part that wrote it) and ``text``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llmbio.config import CorpusConfig
from llmbio.world import World
from llmbio.world.world import TASKS

if TYPE_CHECKING:
    import torch  # imported where used: the corpus stage runs without it


def build_corpus(world: World, cfg: CorpusConfig, progress: bool = True) -> pd.DataFrame:
    """Sample ``cfg.n_documents`` documents; the same world and config give the same corpus."""
    unknown = sorted(set(cfg.mixture) - set(TASKS))
    if unknown:
        raise ValueError(f"corpus.mixture has unknown task {unknown[0]!r}; tasks: {list(TASKS)}")
    tasks = [t for t in TASKS if cfg.mixture.get(t, 0) > 0]
    weights = [cfg.mixture[t] for t in tasks]
    rng = random.Random(cfg.seed)
    chosen = rng.choices(tasks, weights=weights, k=cfg.n_documents)
    texts = [
        world.part(t).document(rng)
        for t in tqdm(chosen, desc="corpus", disable=not progress, mininterval=2)
    ]
    return pd.DataFrame({"doc_id": np.arange(len(texts)), "task": chosen, "text": texts})


def save_corpus(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def load_corpus(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No corpus at {path}; run the `corpus` rule first.")
    return pd.read_parquet(path)


def pack_documents(token_lists: list[list[int]], seq_len: int) -> torch.Tensor:
    """Concatenate tokenised documents (each starting with BOS) into ``(n_seq, seq_len)`` rows.

    Packing many short documents per row gives each step many answer tokens to learn from;
    the tail that does not fill a row is dropped.
    """
    import torch

    flat = np.fromiter((t for doc in token_lists for t in doc), dtype=np.int64)
    n = len(flat) // seq_len
    if n == 0:
        raise ValueError(f"corpus has {len(flat)} tokens, fewer than one sequence of {seq_len}")
    return torch.from_numpy(flat[: n * seq_len].reshape(n, seq_len).copy())


def packed_sequences(tokenizer, texts, seq_len: int) -> torch.Tensor:
    """Tokenise ``texts`` (BOS per document) and pack them into ``(n_seq, seq_len)`` rows."""
    from llmbio.tokenizer import token_ids

    return pack_documents(token_ids(tokenizer, texts), seq_len)
