"""Device check: trace a Gemma-2-2B-sized model with a 426k-CLT-sized transcoder, no network.

Builds a random-weight Gemma-2 with google/gemma-2-2b's shapes (26 layers, d_model 2304, MLP
9216, 8 heads / 4 KV heads of 256, vocab 256000, softcaps, sliding window) and a random JumpReLU
CLT with mntss/clt-gemma-2-2b-426k's shapes (26 x 16384 features, decoders to every later
layer: 13.2e9 decoder weights), traces one prompt of random tokens, prunes and scores the graph,
and runs one intervention on the real forward pass. Prints wall time and peak GPU memory per
step as JSON (and writes it to ``--out``). Thresholds are set per layer so that ``--l0``
features fire per token, so the number of active features is that of a real transcoder.

    python experiments/real-model-gpu-budget/gpu_check.py            # a GPU machine (< 10 min)
    python experiments/real-model-gpu-budget/gpu_check.py --small    # reduced shapes, CPU, < 1 min

Needs torch, transformers, pandas, numpy, pyyaml, safetensors, tqdm and llmbio (installed, or
``PYTHONPATH=src`` as gpu_check.sh sets it); no snakemake. Random weights say nothing about
circuits; they fix time and memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from llmbio.devices import peak_memory_mb, pick_device, pick_dtype, reset_peak_memory, synchronize

GEMMA_2_2B = dict(
    vocab_size=256000,
    hidden_size=2304,
    intermediate_size=9216,
    num_hidden_layers=26,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    query_pre_attn_scalar=256,
    sliding_window=4096,
    attn_logit_softcapping=50.0,
    final_logit_softcapping=30.0,
    max_position_embeddings=8192,
)
SMALL = dict(
    GEMMA_2_2B,
    vocab_size=4096,
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    query_pre_attn_scalar=32,
    sliding_window=16,
)
CLT_FEATURES = {"full": 16384, "small": 512}  # per layer: 26 x 16384 = 425,984 ("426k")


def build_model(shapes: dict, dtype: torch.dtype, device: torch.device, seed: int):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(**shapes, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    with torch.device(device):
        model = Gemma2ForCausalLM._from_config(config, dtype=dtype)
    return model.eval()


@torch.no_grad()
def build_clt(model, n_features: int, dtype, device, offload: bool, seed: int):
    """A random CLT of the model's shapes; decoders made on ``device`` layer by layer."""
    from llmbio.transcoder.clt import CrossLayerTranscoder

    cfg = model.config
    L, D, F = cfg.num_hidden_layers, cfg.hidden_size, n_features
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.device("meta"):
        clt = CrossLayerTranscoder(L, D, F, cross_layer=True)

    def randn(*shape, std: float, home=device):
        return (torch.randn(*shape, generator=gen, device=device, dtype=dtype) * std).to(home)

    state = {
        "W_enc": randn(L, F, D, std=D**-0.5),
        "b_enc": torch.zeros(L, F, device=device, dtype=dtype),
        "threshold": torch.zeros(L, F, device=device, dtype=dtype),
        "b_dec": torch.zeros(L, D, device=device, dtype=dtype),
    }
    home = torch.device("cpu") if offload else device
    for i in range(L):
        state[f"W_dec.{i}"] = randn(F, L - i, D, std=0.02 * F**-0.5, home=home)
    clt.load_state_dict(state, assign=True)
    return clt


@torch.no_grad()
def calibrate_thresholds(model, clt, ids: torch.Tensor, l0: int) -> None:
    """Per-layer thresholds at which ``l0`` features per token fire on this prompt."""
    from llmbio.attribution.replacement import record

    rec = record(model, ids)
    for layer in range(clt.n_layers):
        h = clt.pre_activation(rec.resid_mid[layer, 1:].to(clt.W_enc.dtype), layer).float()
        k = max(1, h.numel() - l0 * h.shape[0])
        clt.threshold[layer] = h.flatten().kthvalue(k).values.to(clt.threshold.dtype)


def _timed(device, fn):
    synchronize(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, round(time.perf_counter() - start, 2), round(peak_memory_mb(device))


def run_check(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    shapes = SMALL if args.small else GEMMA_2_2B
    n_features = CLT_FEATURES["small" if args.small else "full"]
    report = _header(args, device, dtype, shapes, n_features)
    model, report["build_model_s"], _ = _timed(
        device, lambda: build_model(shapes, dtype, device, args.seed)
    )
    clt, report["build_clt_s"], _ = _timed(
        device, lambda: build_clt(model, n_features, dtype, device, args.offload, args.seed)
    )
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    report["resident_gpu_mb"] = round(resident / 2**20)  # model + encoders (+ decoders)
    report["prompts"] = [
        check_prompt(model, clt, device, shapes["vocab_size"], n, args) for n in args.tokens
    ]
    report["peak_gpu_mb"] = max(r["peak_gpu_mb"] for r in report["prompts"])
    return report


def check_prompt(model, clt, device, vocab: int, n_tokens: int, args) -> dict:
    """Trace, prune/score and intervene on one prompt of ``n_tokens`` random tokens."""
    from llmbio.attribution.prune import compute_graph_scores, prune_graph
    from llmbio.attribution.trace import trace
    from llmbio.interventions import Edit, Intervener

    gen = torch.Generator().manual_seed(args.seed + n_tokens)
    ids = torch.randint(3, vocab, (n_tokens,), generator=gen)
    ids[0] = 2  # BOS
    calibrate_thresholds(model, clt, ids, args.l0)
    out: dict = {"tokens": n_tokens}
    graph, out["trace_s"], out["trace_peak_gpu_mb"] = _timed(
        device,
        lambda: trace(
            model,
            clt,
            ids,
            max_feature_nodes=args.max_feature_nodes,
            batch_size=args.batch_size,
            show_progress=False,
        ),
    )
    out["n_active_features"] = int(graph.metadata["n_active_features"])
    out["n_feature_nodes"] = graph.n_features
    (_, scores), out["prune_score_s"], _ = _timed(
        device, lambda: (prune_graph(graph), compute_graph_scores(graph))
    )
    out["replacement_score"] = round(scores.replacement, 4)
    layer, pos, feat = (int(x) for x in graph.active_features[0])
    edit = Edit.scale_by(f"{layer}/{feat}", -2.0, (pos,))
    result, out["intervention_s"], out["intervention_peak_gpu_mb"] = _timed(
        device, lambda: Intervener(model, clt, ids).run([edit])
    )
    out["intervention_logits_finite"] = bool(torch.isfinite(result.logits).all())
    out["peak_gpu_mb"] = max(out["trace_peak_gpu_mb"], out["intervention_peak_gpu_mb"])
    print(json.dumps(out), flush=True)
    return out


def _header(args, device, dtype, shapes, n_features) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    n_layers = shapes["num_hidden_layers"]
    return {
        "check": "small" if args.small else "gemma-2-2b + clt-426k shapes",
        "device": str(device),
        "device_name": name or device.type,
        "torch": torch.__version__,
        "dtype": str(dtype).removeprefix("torch."),
        "n_layers": n_layers,
        "d_model": shapes["hidden_size"],
        "clt_features": n_layers * n_features,
        "offload_decoders": args.offload,
        "l0_per_layer": args.l0,
        "max_feature_nodes": args.max_feature_nodes,
        "batch_size": args.batch_size,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="reduced shapes (CPU test, < 1 min)")
    p.add_argument("--tokens", default="32", help="prompt lengths incl. BOS, comma-separated (32)")
    p.add_argument("--l0", type=int, help="active features per token and layer (100; small 16)")
    p.add_argument("--max-feature-nodes", type=int, default=8192, help="feature-node budget")
    p.add_argument("--batch-size", type=int, default=128, help="attribution targets/backward")
    p.add_argument("--no-offload", dest="offload", action="store_false", help="decoders on GPU")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu (llmbio.devices)")
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on GPUs, float32 on CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    args = p.parse_args(argv)
    args.tokens = [int(t) for t in str(args.tokens).split(",")]
    if args.l0 is None:
        args.l0 = 16 if args.small else 100
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    report = run_check(args)
    report["total_s"] = round(time.perf_counter() - start, 1)
    report["peak_host_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
