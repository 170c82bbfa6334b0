import os

import pytest
import torch

from llmbio.config import load_config
from llmbio.corpus import build_corpus
from llmbio.numerics import AVX2_ENV
from llmbio.tokenizer import build_tokenizer
from llmbio.world import build_world

TINY = {
    "world": {"n_states": 4, "cities_per_state": 3, "n_concepts": 4, "max_operand": 9},
    "corpus": {"n_documents": 3000},
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "d_mlp": 64},
    "train": {
        "steps": 12,
        "batch_size": 8,
        "seq_len": 32,
        "warmup_steps": 2,
        "checkpoint_every": 5,
        "threads": 1,
    },
    "eval": {"n_seen_addition": 10, "max_new_tokens": 4},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _cpu_kernel_env_restored():
    """The CLI's in-process calls pin the CPU kernels in os.environ; undo that after each test."""
    saved = {key: os.environ.get(key) for key in AVX2_ENV}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config(TINY)


@pytest.fixture(scope="session")
def tiny_world(tiny_cfg):
    return build_world(tiny_cfg.world)


@pytest.fixture(scope="session")
def tiny_corpus(tiny_world, tiny_cfg):
    return build_corpus(tiny_world, tiny_cfg.corpus, progress=False)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_world, tiny_corpus):
    texts = [*tiny_corpus["text"], *(it["prompt"] for it in tiny_world.eval_items())]
    return build_tokenizer(texts, max_number=2 * tiny_world.arithmetic.max_operand)
