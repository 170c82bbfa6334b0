"""Benchmark attribution-graph tracing on an organism-sized random Llama and JumpReLU CLT.

Model: 4 layers, d_model 128, 4 heads, vocab 1024. CLT: 2048 features per layer, thresholds set
so that ~8.4k features are active on a 16-token prompt (the circuit-tracer reference measurement:
~30 s for that graph, i.e. ~3.6 ms per active feature). Each prompt length runs in a fresh
subprocess so that its peak memory (max RSS) is its own.

Budgeted graphs (``--max-feature-nodes``, for prompts longer than ``--full-up-to``) rank all active
features first, so their cost is reported per active feature as well as per node.

The naive baseline computes one row per backward pass (batch 1, full prompt, no position or layer
pruning) and contracts it with every source; it is timed on a subset of targets and extrapolated.

    python benchmarks/bench_attribution.py --threads 2 --lengths 16 64 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.attribution.replacement import build_replacement, frozen, output_layers, record
from llmbio.attribution.trace import trace
from llmbio.transcoder.clt import CrossLayerTranscoder

CIRCUIT_TRACER_MS_PER_FEATURE = 30_000 / 8_400
N_LAYERS, D_MODEL, N_FEATURES, VOCAB = 4, 128, 2048, 1024


def build(target_active: int) -> tuple[torch.nn.Module, CrossLayerTranscoder]:
    """The random model and CLT; thresholds are per-layer quantiles of the pre-activations on a
    16-token calibration prompt, giving ``target_active`` active features there."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D_MODEL,
        intermediate_size=4 * D_MODEL,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    model = LlamaForCausalLM(cfg).eval()
    clt = CrossLayerTranscoder(N_LAYERS, D_MODEL, N_FEATURES)
    with torch.no_grad():
        clt.W_enc.normal_(0, D_MODEL**-0.5)
        for w in clt.W_dec:
            w.normal_(0, 0.1 * N_FEATURES**-0.5)
        rec = record(model, _prompt(16, seed=123))
        per_layer_pos = target_active / (N_LAYERS * 15)
        for layer in range(N_LAYERS):
            h = clt.pre_activation(rec.resid_mid[layer, 1:], layer)
            clt.threshold[layer] = torch.quantile(h.flatten(), 1 - per_layer_pos / N_FEATURES)
    return model, clt


def _prompt(n: int, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(1, VOCAB, (n,), generator=torch.Generator().manual_seed(seed))
    ids[0] = 0  # BOS
    return ids


def naive_seconds_per_row(model, clt, ids: torch.Tensor, n_rows: int) -> float:
    """One backward per target through the full prompt, then a vectorised contraction."""
    rep = build_replacement(model, clt, ids)
    rec, feats = rep.recording, rep.active_features
    with frozen(model, rec) as fm:
        embed = rec.embed[None].clone().requires_grad_(True)
        mlp = [x[None].clone().requires_grad_(True) for x in rep.mlp_out()]
        with torch.enable_grad():
            out = fm(embed, mlp)
        decs = [
            torch.stack(
                [clt.decoder_to(s, t)[feats[feats[:, 0] == s, 2]] for t in output_layers(clt, s)], 1
            ).detach()
            for s in range(N_LAYERS)
        ]
        rows = feats[torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))]
        start = time.perf_counter()
        for layer, pos, fid in rows[:n_rows].tolist():
            seed = torch.zeros_like(out.resid_mid[layer])
            seed[0, pos] = clt.W_enc[layer, fid].detach()
            grads = torch.autograd.grad(
                out.resid_mid[layer],
                [embed, *mlp],
                seed,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            row = [(grads[0][0] * rec.embed).sum(-1), (torch.cat(grads[1:]) * rep.error).sum(-1)]
            for s in range(N_LAYERS):
                sel = feats[:, 0] == s
                g = torch.cat(grads[1 + s :])[:, feats[sel, 1]].transpose(0, 1)  # (K_s, L-s, D)
                row.append((g * decs[s] * rep.activation_values[sel, None, None]).sum((1, 2)))
        return (time.perf_counter() - start) / n_rows


def run_one(n: int, args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model, clt = build(args.target_active)
    ids = _prompt(n, seed=n)
    budget = None if n <= args.full_up_to else args.max_feature_nodes
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trace(model, clt, ids[:8], show_progress=False)  # warm-up (allocator, lazy imports)
    start = time.perf_counter()
    graph = trace(model, clt, ids, max_feature_nodes=budget, show_progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_rows = graph.n_features + graph.n_logits
    naive = naive_seconds_per_row(model, clt, ids, args.naive_rows) * n_rows
    active = graph.metadata["n_active_features"]
    return {
        "tokens": n,
        "active": active,
        "nodes": graph.n_features,
        "seconds": round(seconds, 3),
        "ms_per_node": round(1000 * seconds / graph.n_features, 4),
        "ms_per_active": round(1000 * seconds / active, 4),
        "peak_rss_mb": round(peak),
        "rss_before_mb": round(base_rss),
        "naive_seconds": round(naive, 2),
        "speedup_vs_naive": round(naive / seconds, 1),
        "speedup_vs_circuit_tracer": round(
            CIRCUIT_TRACER_MS_PER_FEATURE * active / 1000 / seconds, 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument(
        "--target-active",
        type=int,
        default=8400,
        help="active features on the 16-token calibration prompt",
    )
    parser.add_argument(
        "--full-up-to",
        type=int,
        default=16,
        help="longest prompt traced with every feature as a node",
    )
    parser.add_argument(
        "--max-feature-nodes",
        type=int,
        default=8192,
        help="feature budget for longer prompts (dense adjacency otherwise > 4 GB)",
    )
    parser.add_argument("--naive-rows", type=int, default=32)
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(run_one(args.single, args)))
        return
    for n in args.lengths:
        cmd = [sys.executable, __file__, "--single", str(n), *_forward_args(args)]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        print(line.strip().splitlines()[-1], flush=True)


def _forward_args(args: argparse.Namespace) -> list[str]:
    return [
        "--threads",
        str(args.threads),
        "--target-active",
        str(args.target_active),
        "--full-up-to",
        str(args.full_up_to),
        "--max-feature-nodes",
        str(args.max_feature_nodes),
        "--naive-rows",
        str(args.naive_rows),
    ]


if __name__ == "__main__":
    main()
