"""Train organism variants side by side and compare what they learn against what they cost.

The default organism must train in minutes on 2 CPU cores, and on such a machine the step time
is set by the matrix products (measured: ~67% of a step is ``aten::mm``), so a variant's CPU
cost is proportional to its training FLOPs. This script trains several variants of the
default config (one process each, on a GPU when there is one, where a sweep takes minutes
instead of hours), evaluates every behaviour of the world, and prints accuracy beside the
FLOPs relative to the default::

    python experiments/organism-size-sweep/organism_sweep.py --run-dir results/organism \
        --out sweep.csv

It reads the run's ``world.json``, ``corpus.parquet`` and ``tokenizer/`` (built by the
pipeline's first rules). GPU numbers choose a variant; the CPU run of the chosen config is
the one to report, since GPU and CPU kernels round differently.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

# name -> (model overrides, train overrides) of config/config.yaml; "default" is that config
# itself (the table records each variant's resulting sizes: the default has changed over time)
VARIANTS: dict[str, tuple[dict, dict]] = {
    "default": ({}, {}),
    "steps3000": ({}, {"steps": 3000}),
    "d128_mlp512_steps3000": ({"d_model": 128, "d_mlp": 512}, {"steps": 3000}),
    "steps1300": ({}, {"steps": 1300}),
    "steps1700": ({}, {"steps": 1700}),
    "steps1300_lr6e-3": ({}, {"steps": 1300, "lr": 6e-3}),
    "batch16_steps2600": ({}, {"batch_size": 16, "steps": 2600}),
    "mlp256_steps1900": ({"d_mlp": 256}, {"steps": 1900}),
    "mlp256_batch16_steps3800": ({"d_mlp": 256}, {"batch_size": 16, "steps": 3800}),
    "d96_mlp384_steps2200": ({"d_model": 96, "d_mlp": 384}, {"steps": 2200}),
    "layers3_steps1700": ({"n_layers": 3}, {"steps": 1700}),
}


def train_flops(model_cfg, train_cfg, vocab: int) -> float:
    """Forward + backward FLOPs of a run: 6 x (weights used per token) x tokens, plus attention."""
    d, f, n = model_cfg.d_model, model_cfg.d_mlp, model_cfg.n_layers
    per_token = n * (4 * d * d + 3 * d * f) + vocab * d
    tokens = train_cfg.steps * train_cfg.batch_size * train_cfg.seq_len
    attention = n * 2 * train_cfg.seq_len * d  # QK^T and AV per token (causal: half, x2 flops)
    return 6 * (per_token + attention) * tokens


def run_variant(
    name: str, run_dir: str, seqs_path: str, device: str, threads: int, max_steps: int | None
) -> dict:
    import torch
    from safetensors.torch import load_file

    from llmbio.behaviour import evaluate_behaviour, summarise
    from llmbio.config import load_config
    from llmbio.organism import build_model, train_model
    from llmbio.tokenizer import load_tokenizer
    from llmbio.world import World

    torch.set_num_threads(threads)
    model_over, train_over = VARIANTS[name]
    cfg = load_config("config/config.yaml")
    model_cfg = replace(cfg.model, **model_over)
    train_cfg = replace(cfg.train, threads=threads, checkpoint_every=10**9, **train_over)
    if max_steps is not None:  # a smoke test of the script, not a measurement
        train_cfg = replace(train_cfg, steps=min(max_steps, train_cfg.steps), warmup_steps=1)
    tok = load_tokenizer(Path(run_dir) / "tokenizer")
    seqs = load_file(seqs_path)[f"seq{train_cfg.seq_len}"]
    model = build_model(model_cfg, tok, train_cfg.seed).to(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        curve = train_model(model, seqs, train_cfg, ckpt, progress=False)
    seconds = time.perf_counter() - t0
    items = evaluate_behaviour(model.cpu(), tok, World.load(Path(run_dir) / "world.json"))
    summary = summarise(items)
    row = {
        "variant": name,
        "device": device,
        "d_model": model_cfg.d_model,
        "d_mlp": model_cfg.d_mlp,
        "n_layers": model_cfg.n_layers,
        "steps": train_cfg.steps,
        "batch_size": train_cfg.batch_size,
        "train_seconds": round(seconds, 1),
        "final_loss": float(curve["loss"].tail(8).mean()),
        "flops": train_flops(model_cfg, train_cfg, len(tok)),
    }
    for r in summary.itertuples():
        row[f"{r.task}/{r.split}"] = round(float(r.accuracy), 3)
    print(f"{name}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", default="results/organism")
    parser.add_argument("--out", default="organism_sweep.csv")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per variant")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--max-steps", type=int, help="cap every variant's steps (smoke test)")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    from llmbio.corpus import load_corpus, packed_sequences
    from llmbio.tokenizer import load_tokenizer

    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    run_dir = Path(args.run_dir)
    tok = load_tokenizer(run_dir / "tokenizer")
    corpus = load_corpus(run_dir / "corpus.parquet")
    with tempfile.TemporaryDirectory() as tmp:
        seqs_path = str(Path(tmp) / "seqs.safetensors")
        save_file({"seq64": packed_sequences(tok, corpus["text"], 64)}, seqs_path)
        jobs = [
            (v, str(run_dir), seqs_path, device, args.threads, args.max_steps)
            for v in args.variants
        ]
        with mp.get_context("spawn").Pool(args.parallel) as pool:
            rows = pool.starmap(run_variant, jobs)
    table = pd.DataFrame(rows)
    base = table.loc[table["variant"] == "default", "flops"]
    if len(base):
        table.insert(4, "flops_vs_default", (table["flops"] / base.iloc[0]).round(3))
    table.to_csv(args.out, index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table.drop(columns=["flops"]).to_string(index=False))


if __name__ == "__main__":
    main()
