"""Every speed benchmark, one after the other, with one command.

1. `train_step.py`: one organism training step against the machine's GEMM throughput;
2. `pipeline_times.py`: a finished run's jobs, its DAG's wall time and critical path;
3. `trace_memory.py`: tracing time and peak memory against prompt length, on the run's organism;
4. `bench_attribution.py`: the tracer against one autograd backward per row (and circuit-tracer's
   rate), on an organism-sized random model.

Steps 2 and 3 need a finished run (``--run``, default ``results/organism``) and are skipped,
saying so, without one. ``--quick`` runs each on small sizes (the tiny config's training step,
16- and 32-token prompts, a few hundred active features) in about a minute: a check that the
suite works and a first look, not numbers to compare.

    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --run results/organism
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def steps(run: Path, quick: bool, threads: int) -> list[tuple[str, list[str], bool]]:
    """``(title, script and arguments, needs the run)`` per benchmark."""
    t = ["--threads", str(threads)]
    if quick:
        train = [
            "train_step.py",
            *t,
            "--config",
            "config/tiny.yaml",
            "--steps",
            "4",
            "--rounds",
            "2",
        ]
        memory = [["trace_memory.py", str(run), *t, "--lengths", "16", "32"]]
        attribution = ["--lengths", "8", "--target-active", "1000", "--naive-rows", "4"]
    else:
        train = ["train_step.py", *t]
        memory = [
            ["trace_memory.py", str(run), *t, "--lengths", "32", "64"],
            ["trace_memory.py", str(run), *t, "--lengths", "120", "--max-feature-nodes", "8192"],
        ]
        attribution = ["--lengths", "16", "64"]
    return [
        ("training step vs GEMM", train, False),
        ("DAG wall time and critical path", ["pipeline_times.py", str(run)], True),
        *[("tracing time and peak memory vs prompt length", m, True) for m in memory],
        ("tracer vs naive autograd", ["bench_attribution.py", *t, *attribution], False),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("results/organism"))
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    has_run = (args.run / "model").is_dir() and (args.run / "benchmarks").is_dir()
    failed = []
    for title, (script, *rest), needs_run in steps(args.run, args.quick, args.threads):
        print(f"\n=== {title}: {script} {' '.join(rest)}", flush=True)
        if needs_run and not has_run:
            print(f"skipped: {args.run} is not a finished run (run the DAG, or pass --run)")
            continue
        start = time.perf_counter()
        done = subprocess.run([sys.executable, str(HERE / script), *rest], cwd=HERE.parent)
        print(f"({time.perf_counter() - start:.0f} s)", flush=True)
        if done.returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
