"""Does fine-tuning the CLT on the spliced model's output capture more of the couplet plan?

The default CLT is trained on reconstruction error alone and reconstructs 59% of the couplet
plan's direct effect at the newline (`experiments/poems-plan-selection/plan_capture.py`),
which looked like the poems injection's cap. This script fine-tunes a finished run's CLT for a
few hundred steps on

    kl_coef * KL(model || model with every MLP replaced by the CLT) + sum_l NMSE_l

(next-token distributions at every position of sequences drawn like the activation cache; the
NMSE term is the training reconstruction loss on cached activations, per layer over its mean
squared norm), then prints the plan share, the spliced model's top-1 agreement and KL on fresh
text, and L0 / NMSE / dead fraction per layer, before and after.

    python experiments/wide-transcoder-poems/clt_kl_finetune.py results/organism \
        --steps 150 --kl-coef 10 --part all

``--part dec`` trains the decoders only (features keep what they read), ``all`` the encoders
too (thresholds stay fixed). ``--out DIR`` saves the fine-tuned transcoder. Reads a finished run
of the default config; writes nothing else.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmbio.activations import ActivationReader, is_eval_sequence
from llmbio.config import load_config
from llmbio.corpus import load_corpus
from llmbio.lab import load_run, plan_capture_table, plan_share
from llmbio.stages.transcoder import _eval_text, cache_sequences
from llmbio.transcoder.evaluate import evaluate_transcoder
from llmbio.transcoder.io import save_transcoder
from llmbio.transcoder.splice import splice_transcoder
from llmbio.world import World

METRICS = ("top1_agreement", "kl", "nmse", "l0", "dead_fraction")


def fine_tune(model, tok, clt, run: Path, cfg, args) -> float:
    """Fine-tune ``clt`` in place; returns the seconds it took."""
    seqs = cache_sequences(load_corpus(run / "corpus.parquet"), tok, cfg)
    held = torch.as_tensor(is_eval_sequence(np.arange(len(seqs)), cfg.cache.eval_fraction))
    train = seqs[~held]
    reader = ActivationReader(run / "activations")
    mean_sq = reader.mean_sq_norm("mlp_out")  # (L,)
    names = {"W_dec", "b_dec"} | ({"W_enc", "b_enc"} if args.part == "all" else set())
    for name, p in clt.named_parameters():
        p.requires_grad_(name.split(".")[0] in names)
    model.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in clt.parameters() if p.requires_grad], lr=args.lr)
    batches = reader.iter_batches(2048, shuffle=True, seed=1, epochs=None)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for step in range(args.steps):
        # 20 warm-up steps, linear decay over the last 20%
        factor = min(1.0, (step + 1) / 20, (args.steps - step) / (0.2 * args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * factor
        ids = train[torch.randint(len(train), (args.batch,), generator=gen)]
        with torch.no_grad():
            ref = model(input_ids=ids, use_cache=False).logits[:, 1:].log_softmax(-1)
        with splice_transcoder(model, clt):
            spliced = model(input_ids=ids, use_cache=False).logits[:, 1:].log_softmax(-1)
        kl = (ref.exp() * (ref - spliced)).sum(-1).mean()
        resid_mid, mlp_out = next(batches)  # (B, L, D)
        recon, _ = clt(resid_mid.transpose(0, 1))
        nmse = ((recon - mlp_out.transpose(0, 1)).pow(2).sum(-1).mean(-1) / mean_sq).sum()
        optimizer.zero_grad()
        (args.kl_coef * kl + nmse).backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step}: KL {kl.item():.4f}, NMSE {nmse.item():.4f}", flush=True)
    clt.requires_grad_(False)
    return time.perf_counter() - start


def measure(model, tok, poetry, clt, run: Path, held_out) -> dict:
    table = evaluate_transcoder(clt, ActivationReader(run / "activations"), model, held_out)
    row = {"plan_share": round(plan_share(plan_capture_table(model, tok, poetry, clt)), 3)}
    for _, r in table[table["metric"].isin(METRICS)].iterrows():
        layer = "all" if pd.isna(r["layer"]) else int(r["layer"])
        row[f"{r['metric']}_{layer}"] = round(float(r["value"]), 4)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--kl-coef", type=float, default=10.0)
    parser.add_argument("--part", choices=("dec", "all"), default="all")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch", type=int, default=32, help="sequences per step")
    parser.add_argument("--out", type=Path, help="save the fine-tuned transcoder here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok, poetry, clt = load_run(args.run)
    cfg = load_config("config/config.yaml")
    held_out = _eval_text(cfg, World.load(args.run / "world.json"), tok).split(32)
    before = measure(model, tok, poetry, clt, args.run, held_out)
    seconds = fine_tune(model, tok, clt, args.run, cfg, args)
    after = measure(model, tok, poetry, clt, args.run, held_out)
    print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "seconds": seconds}))
    for key in before:
        print(f"{key:22s} {before[key]:>9} -> {after[key]}")
    if args.out:
        save_transcoder(clt, args.out)


if __name__ == "__main__":
    if not Path("config/config.yaml").is_file():
        sys.exit("run from the repository root (config/config.yaml is read)")
    main()
