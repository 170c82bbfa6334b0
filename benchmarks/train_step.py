"""How fast is one organism training step on this machine, relative to its matmul throughput?

The default organism's training time is set by its steps (`config/config.yaml`) times the step
time, and the step time follows the machine: on the shared 2-core VM we develop on, a large
float32 GEMM ran at 64 GFLOP/s at one moment and 32 at another. So this script prints both, and
their ratio, for the default model shapes on random tokens (no data needed):

    python benchmarks/train_step.py --threads 2 --steps 40

`projected_train_s` = steps in the config x measured step time; compare runs by `step_x_gflops`
(seconds per step x GEMM GFLOP/s), which stays put when the machine speeds up or slows down.
"""

from __future__ import annotations

import argparse
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


def step_seconds(cfg, vocab: int, steps: int, attn: str) -> float:
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

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--vocab", type=int, default=881, help="the default organism's vocabulary")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.config) as f:
        cfg = load_config(yaml.safe_load(f))
    before = gemm_gflops()
    rows = {attn: step_seconds(cfg, args.vocab, args.steps, attn) for attn in ("eager", "sdpa")}
    after = gemm_gflops()
    gflops = (before + after) / 2
    print(f"GEMM 1024^3 float32: {before:.1f} GFLOP/s before, {after:.1f} after")
    for attn, seconds in rows.items():
        print(
            f"{attn:>5}: {seconds:.3f} s/step, step_x_gflops {seconds * gflops:.1f}, "
            f"projected_train_s {seconds * cfg.train.steps:.0f} ({cfg.train.steps} steps)"
        )
    print(f"sdpa / eager step time: {rows['sdpa'] / rows['eager']:.2f}")


if __name__ == "__main__":
    main()
