"""The ``llmbio`` command line: what the pipeline's rules do, one prompt at a time.

``llmbio trace --run organism --prompt "calc: 36+59="`` traces a prompt with the run's model
and transcoder and writes the graph, its tables, viewer and figure to ``--out``;
``llmbio intervene --run organism --prompt ... --feature 2/117=x-2`` edits features on the
real forward pass; ``llmbio compare-audits results/a results/b`` shows which claims differ
between two runs; ``llmbio findings results/organism`` prints the run's findings as Markdown;
``llmbio replicate --train-seeds 0 1 2 3 4`` runs the whole DAG once per seed and writes how
often each claim holds across the runs (``results/<run>-replication/``).
trace and intervene read the run's recorded ``results/<run>/config.yaml`` (CPU kernels,
threads, transcoder) unless a flag says otherwise.

Every argument is checked before anything is loaded. An error is one line naming the problem
and the fix, with exit status 2 for a bad argument and 1 for a failure; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmbio.arguments import Parser, at_least, fail, output_folder, run_name, text
from llmbio.config import RunConfig
from llmbio.errors import LlmbioError, UsageError
from llmbio.logs import setup_logging
from llmbio.numerics import CPU_KERNELS, pin_cpu_kernels


def _open_run(args, config: RunConfig | None):
    from llmbio.run import Run

    run_dir = Path(args.results) / args.run
    if not run_dir.is_dir():
        raise LlmbioError(
            f"{run_dir} does not exist; make the run with `snakemake --cores all` "
            f"(with --configfile for run {args.run!r}) first"
        )
    return Run(run_dir, config=config, transcoder=args.transcoder or "clt")


def _trace(args, config: RunConfig | None) -> None:
    import torch

    from llmbio.attribution.outputs import trace_prompts
    from llmbio.stages.attribution import graph_scan
    from llmbio.tokenizer import encode

    run = _open_run(args, config)
    cfg = run.config
    torch.set_num_threads(args.threads or cfg.trace.threads)
    out = Path(args.out) if args.out else run.dir / "graphs" / "cli"
    for prompt in args.prompt:  # fail on an unknown word before loading the transcoder
        encode(run.tokenizer, prompt)
    budget = args.max_feature_nodes
    scores = trace_prompts(
        run.model,
        run.clt,
        run.tokenizer,
        args.prompt,
        out,
        max_feature_nodes=cfg.trace.max_feature_nodes if budget is None else budget,
        batch_size=cfg.trace.batch_size,
        scan=graph_scan(cfg),
        graph_file="pruned" if args.pruned_graph_file else "full",
    )
    print(scores.drop(columns=["prompt"]).to_string(index=False))
    print(f"graphs written to {out} (open the .html files in a browser)")


def _intervene(args, config: RunConfig | None, rest: list[str]) -> None:
    from llmbio.interventions.cli import parse_arguments, run_intervention

    argv = [*rest, "--run", args.run, "--results", args.results]
    if args.transcoder:
        argv += ["--transcoder", args.transcoder]
    checked = parse_arguments(argv)  # before the run is opened
    run_intervention(checked, _open_run(args, config))


def _compare(args, config: RunConfig | None) -> None:
    import pandas as pd

    from llmbio.audit_compare import compare_audits

    summary, changed = compare_audits(args.runs)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print("claims passed / applicable, per study and run:")
        print(summary.to_string())
        print(f"\n{len(changed)} claims whose status differs between the runs:")
        if len(changed):
            print(changed.to_string(index=False))


def _findings(args, config: RunConfig | None = None) -> None:
    from llmbio.findings import render_findings

    sys.stdout.write(render_findings(args.run_dir, args.studies))


def _replicate(args, config: RunConfig | None = None) -> None:
    from llmbio.replication import run_replication

    out = run_replication(
        args.configfile,
        args.train_seeds,
        args.transcoder_seeds,
        cores=args.cores,
        snakemake_args=args.snakemake_args,
    )
    print(f"replication tables and figure written to {out}")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llmbio", description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", help="results root (default: results)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--cpu-kernels",
        choices=CPU_KERNELS,
        default=None,
        help="torch's CPU kernels (default: the run's cpu_kernels, as recorded in "
        "results/<run>/config.yaml; avx2 for a run that recorded none)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    tr = sub.add_parser("trace", help="trace prompts into attribution graphs")
    _run_arguments(tr)
    tr.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    tr.add_argument("--out", help="output folder (default: results/<run>/graphs/cli)")
    tr.add_argument(
        "--max-feature-nodes", type=int, default=None, help="default: the run's trace config"
    )
    tr.add_argument("--threads", type=int, default=None, help="default: the run's trace.threads")
    tr.add_argument(
        "--pruned-graph-file",
        action="store_true",
        help="write <slug>.graph.safetensors with only the features pruning keeps (its size "
        "follows the pruned graph; the full one is what the faithfulness check reads)",
    )
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
    rp = sub.add_parser(
        "replicate",
        help="the whole DAG once per organism x transcoder seed, and claim pass rates across them",
    )
    rp.add_argument(
        "--configfile", default="config/config.yaml", help="base config (default: %(default)s)"
    )
    rp.add_argument(
        "--train-seeds",
        type=int,
        nargs="+",
        default=[0, 1, 2, 3, 4],
        help="train.seed values, one organism each (default: 0 1 2 3 4)",
    )
    rp.add_argument(
        "--transcoder-seeds",
        type=int,
        nargs="+",
        default=[0],
        help="transcoder.seed values, one transcoder set each (default: 0)",
    )
    rp.add_argument("--cores", default="all", help="snakemake --cores (default: all)")
    rp.add_argument("snakemake_args", nargs="*", help="further snakemake arguments, after --")
    rp.set_defaults(func=_replicate)
    # its own options are parsed by llmbio.interventions.cli; the run is known here, so that
    # its config (CPU kernels) is read before torch runs
    iv = sub.add_parser("intervene", help="edit features on the real forward pass", add_help=False)
    _run_arguments(iv)
    iv.add_argument("--results", dest="intervene_results", default=None, help=argparse.SUPPRESS)
    iv.set_defaults(func=None)
    return parser


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default="organism", help="run name (results/<run>/)")
    parser.add_argument(
        "--transcoder",
        choices=("clt", "plt"),
        default=None,
        help="the organism's transcoder (default: clt; a released model's run uses its own)",
    )


def _check_arguments(args, rest: list[str]) -> None:
    """Everything checkable before a file is read (intervene's own flags: its parser)."""
    if args.command == "compare-audits":
        if len(args.runs) < 2:
            raise UsageError(f"compare-audits needs two or more run folders, got {args.runs}")
        return
    if args.command in ("findings", "replicate"):
        if rest:
            raise UsageError(f"unrecognised arguments: {' '.join(rest)}")
        return
    run_name(args.run)
    if args.command == "trace":
        if rest:
            raise UsageError(f"unrecognised arguments: {' '.join(rest)}")
        for prompt in args.prompt:
            text("--prompt", prompt)
        at_least("--threads", args.threads, 1)
        at_least("--max-feature-nodes", args.max_feature_nodes, 0)
        output_folder("--out", args.out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging()
    try:
        _main(argv)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as err:  # one line for every error; the traceback only with --debug
        if "--debug" in argv:
            raise
        if not isinstance(err, (LlmbioError, ValueError, OSError)):
            err = LlmbioError(f"{type(err).__name__}: {err} (rerun with --debug for the traceback)")
        fail(err)


def _main(argv: list[str]) -> None:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--debug"]  # also accepted after the subcommand
    if getattr(args, "intervene_results", None):  # `llmbio intervene --results ...`
        args.results = args.intervene_results
    _check_arguments(args, rest)
    config = None
    if args.command not in ("compare-audits", "findings", "replicate"):
        from llmbio.run import read_run_config

        config = read_run_config(Path(args.results) / args.run)
    # torch reads these at its first operation, which comes after this (llmbio.numerics)
    kernels = args.cpu_kernels or (config.cpu_kernels if config else "avx2")
    pin_cpu_kernels(kernels)
    if args.command == "intervene":
        _intervene(args, config, rest)
        return
    args.func(args, config)


if __name__ == "__main__":
    main(sys.argv[1:])
