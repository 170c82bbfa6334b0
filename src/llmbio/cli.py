"""The ``llmbio`` command line: what the pipeline's rules do, one prompt at a time.

``llmbio trace --run organism --prompt "calc: 36+59="`` traces a prompt with the run's model
and transcoder and writes the graph, its tables, viewer and figure to ``--out``;
``llmbio compare-audits results/a results/b`` shows which claims differ between two runs;
``llmbio findings results/organism`` prints the run's findings as Markdown.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmbio.numerics import CPU_KERNELS, pin_cpu_kernels
from llmbio.tokenizer import UnknownTokenError


def _run_dir(args) -> Path:
    run_dir = Path(args.results) / args.run
    if not (run_dir / "model").is_dir():
        raise SystemExit(
            f"error: {run_dir / 'model'} does not exist; run `snakemake --cores all` "
            f"(or with --configfile for run {args.run!r}) first"
        )
    return run_dir


def _trace(args) -> None:
    from llmbio.stages.attribution import trace_stage

    run_dir = _run_dir(args)
    out = Path(args.out) if args.out else run_dir / "graphs" / "cli"
    scores = trace_stage(
        run_dir / "model",
        run_dir / "transcoder" / "clt",
        args.prompt,
        out,
        max_feature_nodes=args.max_feature_nodes,
        threads=args.threads,
    )
    print(scores.drop(columns=["prompt"]).to_string(index=False))
    print(f"graphs written to {out} (open the .html files in a browser)")


def _compare(args) -> None:
    import pandas as pd

    from llmbio.audit_compare import compare_audits

    summary, changed = compare_audits(args.runs)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print("claims passed / applicable, per study and run:")
        print(summary.to_string())
        print(f"\n{len(changed)} claims whose status differs between the runs:")
        if len(changed):
            print(changed.to_string(index=False))


def _findings(args) -> None:
    from llmbio.findings import render_findings

    sys.stdout.write(render_findings(args.run_dir, args.studies))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="llmbio", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument(
        "--cpu-kernels",
        choices=CPU_KERNELS,
        default="avx2",
        help="torch's CPU kernels, as the run's cpu_kernels config key (default: avx2, the "
        "default run's); native for a run made with cpu_kernels: native",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("trace", help="trace prompts into attribution graphs")
    tr.add_argument("--run", default="organism", help="run name (results/<run>/)")
    tr.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    tr.add_argument("--out", help="output folder (default: results/<run>/graphs/cli)")
    tr.add_argument("--max-feature-nodes", type=int, default=None)
    tr.add_argument("--threads", type=int, default=2)
    tr.set_defaults(func=_trace)
    cmp = sub.add_parser(
        "compare-audits", help="audits of several runs side by side (claims that moved)"
    )
    cmp.add_argument("runs", nargs="+", help="run folders holding audit.parquet (>= 2)")
    cmp.set_defaults(func=_compare)
    fi = sub.add_parser("findings", help="a run's findings as Markdown, from its audit")
    fi.add_argument("run_dir", help="run folder holding audit.parquet (e.g. results/organism)")
    fi.add_argument("--studies", default="studies", help="study folders, for their titles")
    fi.set_defaults(func=_findings)
    iv = sub.add_parser("intervene", help="edit features on the real forward pass", add_help=False)
    iv.set_defaults(func=None)
    args, rest = parser.parse_known_args(argv)
    # torch reads these at its first operation, which comes after this (llmbio.numerics)
    pin_cpu_kernels(args.cpu_kernels)
    if args.command == "intervene":
        from llmbio.interventions import intervene_cli

        intervene_cli(rest)
        return
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        args.func(args)
    except (UnknownTokenError, FileNotFoundError, ValueError) as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
