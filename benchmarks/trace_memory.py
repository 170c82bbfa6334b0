"""Tracing time and peak memory against prompt length, on a finished run's organism.

Each length runs in a fresh subprocess, so its peak memory (max RSS) is its own. A prompt of
``n`` tokens is BOS plus corpus documents joined until ``n`` tokens are reached (cut at ``n``).
One prompt is traced, pruned, scored and exported exactly as the ``trace_graphs`` rule does
(:func:`llmbio.attribution.outputs.trace_prompt`, files into a temporary folder).

Printed per length: active features, feature nodes, the trace time, the whole prompt's time
(trace, prune, scores, exports), peak RSS, RSS before the trace (model, transcoder, imports) and
the graph file's size; ratios: peak RSS per 1k nodes and the peak growth over the idle RSS.

    python benchmarks/trace_memory.py results/organism --lengths 32 64 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch


def corpus_prompt(run: Path, tokenizer, n_tokens: int) -> list[int]:
    """BOS plus the run's corpus documents, joined, cut to ``n_tokens`` ids."""
    texts = pd.read_parquet(run / "corpus.parquet", columns=["text"])["text"]
    ids = [tokenizer.bos_token_id]
    for text in texts:
        ids += tokenizer.encode(text + " .", add_special_tokens=False)
        if len(ids) >= n_tokens:
            return ids[:n_tokens]
    raise ValueError(f"{run}/corpus.parquet holds fewer than {n_tokens} tokens")


def run_one(run: Path, n_tokens: int, threads: int, max_feature_nodes: int | None) -> dict:
    from llmbio import artefacts
    from llmbio.attribution.outputs import trace_prompt

    torch.set_num_threads(threads)
    model = artefacts.load_model(run / "model")
    tokenizer = artefacts.load_tokenizer(run / "model")
    clt = artefacts.load_transcoder(run / "transcoder" / "clt", model=model)
    ids = corpus_prompt(run, tokenizer, n_tokens)
    prompt = tokenizer.decode(ids[1:])
    idle_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        kwargs = {} if max_feature_nodes is None else {"max_feature_nodes": max_feature_nodes}
        row = trace_prompt(model, clt, tokenizer, prompt, out, "p", scan="./features/x", **kwargs)
        total = time.perf_counter() - start
        graph_mb = (Path(out) / "p.graph.safetensors").stat().st_size / 2**20
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "tokens": row["n_tokens"],
        "nodes": row["n_nodes"],
        "features": row["n_features"],
        "trace_s": round(row["seconds"], 3),
        "total_s": round(total, 3),
        "peak_rss_mb": round(peak_mb),
        "idle_rss_mb": round(idle_mb),
        "graph_file_mb": round(graph_mb, 1),
        "peak_mb_per_1k_nodes": round(peak_mb / row["n_nodes"] * 1000, 1),
        "peak_over_idle": round(peak_mb / idle_mb, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder, e.g. results/organism")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-feature-nodes", type=int, help="feature budget (default: trace's)")
    parser.add_argument("--single", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.single is not None:
        print(json.dumps(run_one(args.run, args.single, args.threads, args.max_feature_nodes)))
        return
    if not (args.run / "model").is_dir():
        sys.exit(f"{args.run} has no model/: give a finished run folder (e.g. results/organism)")
    for n in args.lengths:
        cmd = [sys.executable, __file__, str(args.run), "--single", str(n)]
        cmd += ["--threads", str(args.threads)]
        if args.max_feature_nodes is not None:
            cmd += ["--max-feature-nodes", str(args.max_feature_nodes)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{n} tokens: failed: {done.stderr.strip().splitlines()[-1]}", flush=True)
            continue
        print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
