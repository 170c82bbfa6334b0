"""``llmbio intervene``: edit features of a run's model on one prompt and print the results table.

Example::

    llmbio intervene --run organism \
        --prompt "Fact : the capital of the state containing Dallas is" \
        --feature 2/117@-1=x-2 --feature 1/40=zero --generate 3
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml

from llmbio.arguments import (
    Parser,
    at_least,
    input_file,
    one_line,
    output_file,
    run_name,
    text,
)
from llmbio.errors import UsageError
from llmbio.features.supernodes import resolve, supernodes_from_dict
from llmbio.interventions.edits import parse_edit
from llmbio.interventions.run import donor_activations, intervene
from llmbio.tokenizer import check_prompt_length, encode

if TYPE_CHECKING:
    from llmbio.run import Run


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="llmbio intervene", description=__doc__.splitlines()[0])
    p.add_argument("--run", default="organism", help="results/<run>/ holds model and transcoder")
    p.add_argument("--results", default="results", help="the results root folder")
    p.add_argument(
        "--transcoder", choices=("clt", "plt"), default="clt",
        help="the organism's transcoder (a released model's run uses its own)",
    )  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="default: the run's trace.threads")
    p.add_argument("--prompt", required=True, help="the prompt text")
    p.add_argument(
        "--feature", action="append", required=True, metavar="SPEC",
        help="an edit TARGET[@POSITIONS]=OP, e.g. 2/117@5=x-2, 2/117=5.0, Texas@-1=zero, "
        "2/9@-1=dx3 (inject 3x the donor's activation); repeatable",
    )  # fmt: skip
    p.add_argument("--supernodes", help="YAML {name: {features, rule, positions}} for targets")
    p.add_argument("--labels", help="label table for supernode rules (default: the run's)")
    p.add_argument("--donor-prompt", help="prompt whose activations dx edits inject")
    p.add_argument("--donor-position", type=int, default=-1, help="donor token position")
    p.add_argument("--freeze-attention", action="store_true", help="keep clean attention")
    p.add_argument(
        "--freeze-final-norm", action="store_true",
        help="divide by the clean final-norm denominator, as the attribution graph does",
    )  # fmt: skip
    p.add_argument("--constrained", help="constrained layers: 'a:b' (a..b-1) or '0,1,2'")
    p.add_argument("--top-k", type=int, default=10, help="top tokens to report")
    p.add_argument("--generate", type=int, default=0, help="greedy tokens to generate")
    p.add_argument("--out", help="also write the table to this Parquet file")
    return p


def parse_layers(text: str | None) -> list[int] | None:
    """``"1:3"`` -> ``[1, 2]``; ``"0,2"`` -> ``[0, 2]``."""
    if not text:
        return None
    try:
        if ":" in text:
            start, stop = text.split(":")
            return list(range(int(start), int(stop)))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UsageError(
            f"--constrained {text!r}: use 'a:b' (layers a..b-1) or a comma-separated list"
        ) from None


def read_supernodes(path: str | None) -> list:
    """The ``--supernodes`` file's supernodes (unresolved); one line naming a bad file."""
    if not path:
        return []
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UsageError(f"--supernodes {path}: not valid YAML ({one_line(err)})") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(
            f"--supernodes {path}: must map names to {{features, rule, positions}}, e.g. "
            "'Texas: {features: [1/5, 2/7]}'"
        )
    try:
        return supernodes_from_dict(data)
    except (AttributeError, TypeError, ValueError, KeyError) as err:
        raise UsageError(f"--supernodes {path}: {one_line(err)}") from None


def check_arguments(args: argparse.Namespace) -> None:
    """Every argument that can be checked without the run: raises :class:`UsageError`."""
    run_name(args.run)
    text("--prompt", args.prompt)
    if args.donor_prompt is not None:
        text("--donor-prompt", args.donor_prompt)
    at_least("--top-k", args.top_k, 1)
    at_least("--generate", args.generate, 0)
    at_least("--threads", args.threads, 1)
    input_file("--supernodes", args.supernodes)
    input_file("--labels", args.labels)
    output_file("--out", args.out, ".parquet")
    layers = parse_layers(args.constrained)
    if layers is not None and (not layers or min(layers) < 0):
        raise UsageError(f"--constrained {args.constrained!r}: give layers >= 0 (e.g. '0:2')")
    names = {node.name: node for node in read_supernodes(args.supernodes)}
    for spec in args.feature:
        try:  # the syntax only: supernode members and ids are checked against the run
            edit = parse_edit(spec, {name: _placeholder(name) for name in names})
        except ValueError as err:
            raise UsageError(f"--feature {spec!r}: {one_line(err)}") from None
        if edit.kind == "inject" and not args.donor_prompt:
            raise UsageError(
                f"--feature {spec!r} injects a donor's activations (dx): pass --donor-prompt"
            )


def _placeholder(name: str):
    from llmbio.features.supernodes import Supernode

    return Supernode(name, ((0, 0),))


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """``llmbio intervene``'s arguments, parsed and checked; nothing is loaded."""
    args = _parser().parse_args(argv)
    check_arguments(args)
    return args


def _supernodes(args, run: Run) -> dict:
    nodes = read_supernodes(args.supernodes)
    if not nodes:
        return {}
    if args.labels:
        try:
            labels = pd.read_parquet(args.labels)
        except Exception as err:  # pyarrow raises several types for a file that is not Parquet
            raise UsageError(
                f"--labels {args.labels}: not a readable Parquet table ({one_line(err)}); give "
                "a features/labels.parquet of a run"
            ) from None
    elif run.path("features/labels.parquet").exists():
        labels = run.table("features/labels.parquet")
    else:
        labels = None
    return {n.name: n for n in resolve(nodes, labels)}


def intervene_cli(argv: Sequence[str] | None = None, run: Run | None = None) -> int:
    """Parse ``argv``, run the intervention, print the results table; returns the exit code.

    ``run``: the run already opened (by ``llmbio intervene``); else ``--results``/``--run``.
    """
    args = parse_arguments(argv)
    if run is None:
        from llmbio.run import Run

        run = Run(Path(args.results) / args.run, transcoder=args.transcoder)
    return run_intervention(args, run)


def run_intervention(args: argparse.Namespace, run: Run) -> int:
    """The intervention of checked ``args`` (:func:`parse_arguments`) on ``run``."""
    import torch

    torch.set_num_threads(args.threads or run.config.trace.threads)
    named = _supernodes(args, run)
    edits = [parse_edit(spec, named) for spec in args.feature]
    model, clt, tokenizer = run.model, run.clt, run.tokenizer
    for prompt in filter(None, (args.prompt, args.donor_prompt)):  # before any forward pass
        check_prompt_length(model, len(encode(tokenizer, prompt)))
    edits = [
        e.with_donor(donor_activations(model, clt, args.donor_prompt, e.features,
                                       args.donor_position, tokenizer))
        if e.kind == "inject" else e
        for e in edits
    ]  # fmt: skip
    result = intervene(
        model, clt, args.prompt, edits, freeze_attention=args.freeze_attention,
        constrained_layers=parse_layers(args.constrained),
        freeze_final_norm=args.freeze_final_norm, top_k=args.top_k,
        supernodes=named.values(), tokenizer=tokenizer, max_new_tokens=args.generate,
    )  # fmt: skip
    table = result.table(experiment=args.prompt)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(table.drop(columns=["experiment", "edits"]).to_string(index=False))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")
        table.to_parquet(partial, index=False)
        partial.replace(out)
    return 0
