"""How fast is one organism training step on this machine, relative to its matmul throughput?

The default organism's training time is set by its steps (`config/config.yaml`) times the step
time, and the step time follows the machine: on a shared 2-core VM (2026-11-26), a large float32
GEMM ran at 64 GFLOP/s at one moment and 32 at another. So this script prints both, and
their ratio, for the default model shapes on random tokens (no data needed):

    python benchmarks/train_step.py --threads 2 --steps 80 --rounds 8

Eager and SDPA attention are timed in alternating blocks: timed one after the other, the
machine's drift alone once made SDPA look 18% faster; interleaved, the two are the same (ratio
1.01).

`projected_train_s` = steps in the config x measured step time; compare runs by `step_x_gflops`
(seconds per step x GEMM GFLOP/s), which stays put when the machine speeds up or slows down.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.config import load_config


def gemm_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def training_step(cfg, vocab: int, attn: str):
    """One optimiser step of the default model shapes on a fixed random batch, as a closure."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=cfg.model.d_model,
            intermediate_size=cfg.model.d_mlp,
            num_hidden_layers=cfg.model.n_layers,
            num_attention_heads=cfg.model.n_heads,
            num_key_value_heads=cfg.model.n_kv_heads,
            attn_implementation=attn,
        )
    )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    batch = torch.randint(0, vocab, (cfg.train.batch_size, cfg.train.seq_len))

    def step():
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def interleaved_step_seconds(steps: dict, rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per step of each variant, measured in alternating blocks (the order flips every
    round) so that the machine's drifting speed hits every variant alike."""
    for step in steps.values():
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for _ in range(per_round):
                steps[name]()
            times[name].append((time.perf_counter() - start) / per_round)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=80, help="per variant, over all rounds")
    parser.add_argument("--rounds", type=int, default=8, help="alternating blocks per variant")
    parser.add_argument("--vocab", type=int, default=881, help="the default organism's vocabulary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = load_config(yaml.safe_load(f))
    before = gemm_gflops()
    variants = {attn: training_step(cfg, args.vocab, attn) for attn in ("eager", "sdpa")}
    times = interleaved_step_seconds(variants, args.rounds, max(1, args.steps // args.rounds))
    after = gemm_gflops()
    gflops = (before + after) / 2
    print(f"GEMM 1024^3 float32: {before:.1f} GFLOP/s before, {after:.1f} after")
    median = {attn: statistics.median(t) for attn, t in times.items()}
    for attn, seconds in median.items():
        print(
            f"{attn:>5}: {seconds:.3f} s/step (median of {args.rounds} blocks), step_x_gflops "
            f"{seconds * gflops:.1f}, projected_train_s {seconds * cfg.train.steps:.0f} "
            f"({cfg.train.steps} steps)"
        )
    paired = [s / e for s, e in zip(times["sdpa"], times["eager"], strict=True)]
    print(
        f"sdpa / eager step time: {statistics.median(paired):.2f} (median of paired blocks; "
        f"range {min(paired):.2f}-{max(paired):.2f})"
    )


if __name__ == "__main__":
    main()
